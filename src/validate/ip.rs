//! Which addresses a server-side request may reach: only globally routable unicast ones.
//!
//! Feature-free and allocation-free, so the SSRF guard, the fuzz targets and any other caller
//! share one classification.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Why an address is not public, for the audit detail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum NonPublic {
    /// `0.0.0.0/8`, `::`.
    Unspecified,
    /// `127.0.0.0/8`, `::1`.
    Loopback,
    /// RFC 1918 `10/8`, `172.16/12`, `192.168/16`; IPv6 unique local `fc00::/7`.
    Private,
    /// `100.64.0.0/10` (carrier-grade NAT; also where some clouds put metadata services).
    SharedAddressSpace,
    /// `169.254.0.0/16` (cloud metadata at `169.254.169.254`), `fe80::/10`.
    LinkLocal,
    /// `224.0.0.0/4`, `ff00::/8`.
    Multicast,
    /// `255.255.255.255`.
    Broadcast,
    /// `192.0.2/24`, `198.51.100/24`, `203.0.113/24`, `2001:db8::/32`, `3fff::/20`.
    Documentation,
    /// `198.18.0.0/15`, `2001:2::/48`.
    Benchmarking,
    /// `240.0.0.0/4`, `192.0.0.0/24` (IETF protocol assignments, incl. `192.0.0.192`
    /// metadata), `192.88.99.0/24`, and IPv6 outside global unicast `2000::/3` or inside its
    /// special-purpose blocks (`2001::/23`, `2002::/16` 6to4, `5f00::/16`...).
    Reserved,
    /// IPv4 embedded in IPv6 (mapped `::ffff:a.b.c.d`, compatible `::a.b.c.d`, NAT64
    /// `64:ff9b::/96` and `64:ff9b:1::/48`): refused whatever the embedded address, since the
    /// path to it depends on the host's stack and translators.
    EmbeddedIpv4,
}

/// `Ok(())` for a globally routable unicast address, otherwise the reason it is not.
pub fn classify(ip: IpAddr) -> Result<(), NonPublic> {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

/// Whether `ip` is globally routable unicast (see [`classify`]).
pub fn is_public(ip: IpAddr) -> bool {
    classify(ip).is_ok()
}

fn in_v4(ip: u32, net: [u8; 4], prefix: u32) -> bool {
    let net = u32::from_be_bytes(net);
    let mask = if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - prefix)
    };
    ip & mask == net & mask
}

fn classify_v4(ip: Ipv4Addr) -> Result<(), NonPublic> {
    use NonPublic::*;
    let n = u32::from(ip);
    let table: &[([u8; 4], u32, NonPublic)] = &[
        ([0, 0, 0, 0], 8, Unspecified),
        ([10, 0, 0, 0], 8, Private),
        ([100, 64, 0, 0], 10, SharedAddressSpace),
        ([127, 0, 0, 0], 8, Loopback),
        ([169, 254, 0, 0], 16, LinkLocal),
        ([172, 16, 0, 0], 12, Private),
        ([192, 0, 0, 0], 24, Reserved),
        ([192, 0, 2, 0], 24, Documentation),
        ([192, 88, 99, 0], 24, Reserved),
        ([192, 168, 0, 0], 16, Private),
        ([198, 18, 0, 0], 15, Benchmarking),
        ([198, 51, 100, 0], 24, Documentation),
        ([203, 0, 113, 0], 24, Documentation),
        ([224, 0, 0, 0], 4, Multicast),
        ([255, 255, 255, 255], 32, Broadcast),
        ([240, 0, 0, 0], 4, Reserved),
    ];
    match table
        .iter()
        .find(|(net, prefix, _)| in_v4(n, *net, *prefix))
    {
        Some((_, _, why)) => Err(*why),
        None => Ok(()),
    }
}

fn in_v6(ip: u128, net: u128, prefix: u32) -> bool {
    let mask = if prefix == 0 {
        0
    } else {
        u128::MAX << (128 - prefix)
    };
    ip & mask == net & mask
}

fn classify_v6(ip: Ipv6Addr) -> Result<(), NonPublic> {
    use NonPublic::*;
    let n = u128::from(ip);
    if n == 0 {
        return Err(Unspecified);
    }
    if n == 1 {
        return Err(Loopback);
    }
    let table: &[(u128, u32, NonPublic)] = &[
        // ::ffff:0:0/96 mapped, ::/96 compatible (after :: and ::1 above).
        (0xffff_0000_0000, 96, EmbeddedIpv4),
        (0, 96, EmbeddedIpv4),
        (0x0064_ff9b_0000_0000_0000_0000_0000_0000, 96, EmbeddedIpv4),
        (0x0064_ff9b_0001_0000_0000_0000_0000_0000, 48, EmbeddedIpv4),
        (0xfc00_0000_0000_0000_0000_0000_0000_0000, 7, Private),
        (0xfe80_0000_0000_0000_0000_0000_0000_0000, 10, LinkLocal),
        // Deprecated site-local.
        (0xfec0_0000_0000_0000_0000_0000_0000_0000, 10, Private),
        (0xff00_0000_0000_0000_0000_0000_0000_0000, 8, Multicast),
        (0x2001_0db8_0000_0000_0000_0000_0000_0000, 32, Documentation),
        (0x3fff_0000_0000_0000_0000_0000_0000_0000, 20, Documentation),
        (0x2001_0002_0000_0000_0000_0000_0000_0000, 48, Benchmarking),
        // IETF protocol assignments (Teredo 2001::/32, ORCHID...), 6to4, SRv6 SIDs.
        (0x2001_0000_0000_0000_0000_0000_0000_0000, 23, Reserved),
        (0x2002_0000_0000_0000_0000_0000_0000_0000, 16, EmbeddedIpv4),
        (0x5f00_0000_0000_0000_0000_0000_0000_0000, 16, Reserved),
    ];
    if let Some((_, _, why)) = table
        .iter()
        .find(|(net, prefix, _)| in_v6(n, *net, *prefix))
    {
        return Err(*why);
    }
    // Everything else outside global unicast 2000::/3 (discard 100::/64 included).
    if !in_v6(n, 0x2000_0000_0000_0000_0000_0000_0000_0000, 3) {
        return Err(Reserved);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        let refused = [
            "0.0.0.0",
            "0.1.2.3",
            "10.1.2.3",
            "100.64.0.1",
            "100.100.100.200",
            "127.0.0.1",
            "127.255.255.254",
            "169.254.169.254",
            "172.16.0.1",
            "172.31.255.255",
            "192.0.0.192",
            "192.0.2.1",
            "192.88.99.1",
            "192.168.1.1",
            "198.18.0.1",
            "198.19.255.255",
            "198.51.100.7",
            "203.0.113.9",
            "224.0.0.1",
            "239.255.255.250",
            "240.0.0.1",
            "255.255.255.255",
            "::",
            "::1",
            "::ffff:127.0.0.1",
            "::ffff:8.8.8.8",
            "::127.0.0.1",
            "64:ff9b::7f00:1",
            "64:ff9b:1::a00:1",
            "fc00::1",
            "fd00:ec2::254",
            "fe80::1",
            "fec0::1",
            "ff02::1",
            "2001:db8::1",
            "3fff::1",
            "2001:2::1",
            "2001::1",
            "2002:7f00:1::1",
            "100::1",
            "5f00::1",
            "4000::1",
        ];
        for ip in refused {
            assert!(!is_public(ip.parse().unwrap()), "{ip} must be refused");
        }
        for ip in [
            "8.8.8.8",
            "1.1.1.1",
            "93.184.216.34",
            "172.32.0.1",
            "100.128.0.1",
            "2606:4700:4700::1111",
            "2a00:1450:4001::200e",
        ] {
            assert!(is_public(ip.parse().unwrap()), "{ip} must be accepted");
        }
    }
}
