//! Which address is the client? One answer for rate limiting, lockout, IP rules and audit.
//!
//! By default the client is the socket peer. Forwarded headers (`X-Forwarded-For` or RFC 7239
//! `Forwarded`, one of them, chosen explicitly) are read only when the peer is a configured
//! trusted proxy, and then walked from right to left: each hop appended by a trusted proxy is
//! believed, and the first untrusted address wins. Each entry is parsed on its own: a malformed,
//! obfuscated or `unknown` entry that the walk reaches ends it at the last trusted proxy, while
//! entries left of the first untrusted hop (which the client wrote) are never looked at, so a
//! client cannot turn its address into the proxy's by sending garbage.
//!
//! ```
//! use std::net::IpAddr;
//! use http::HeaderMap;
//! use portcullis::client_ip::{ClientIpResolver, ForwardedHeader};
//!
//! let resolver = ClientIpResolver::builder()
//!     .trust_proxy("10.0.0.0/8").unwrap()
//!     .forwarded_header(ForwardedHeader::XForwardedFor)
//!     .build();
//! let mut headers = HeaderMap::new();
//! // A client-supplied left-most entry is never believed.
//! headers.insert("x-forwarded-for", "6.6.6.6, 203.0.113.9, 10.0.0.7".parse().unwrap());
//! let peer: IpAddr = "10.0.0.2".parse().unwrap();
//! assert_eq!(resolver.resolve(peer, &headers), "203.0.113.9".parse::<IpAddr>().unwrap());
//!
//! // From an untrusted peer, the headers are ignored.
//! let peer: IpAddr = "198.51.100.1".parse().unwrap();
//! assert_eq!(resolver.resolve(peer, &headers), peer);
//! ```
//!
//! # Deployment caveat
//! Trust only the proxies that overwrite or append to the forwarded header you configure. If a
//! load balancer passes client-supplied headers through untouched, trusting it lets any client
//! choose its own address.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use http::HeaderMap;

use crate::error::ConfigError;

/// An IP network (`10.0.0.0/8`, `2001:db8::/32`, or a single address).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

impl IpNet {
    /// The network containing `addr` with `prefix` leading bits (host bits are cleared).
    pub fn new(addr: IpAddr, prefix: u8) -> Result<Self, ConfigError> {
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if prefix > max {
            return Err(ConfigError::new(format!(
                "prefix /{prefix} too long for {addr}"
            )));
        }
        Ok(Self {
            addr: mask(addr, prefix),
            prefix,
        })
    }

    /// Whether `ip` is inside this network (IPv4-mapped IPv6 addresses count as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        ip.is_ipv4() == self.addr.is_ipv4() && mask(ip, self.prefix) == self.addr
    }
}

impl FromStr for IpNet {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, ConfigError> {
        let invalid = || ConfigError::new(format!("{s:?} is not an IP network"));
        match s.split_once('/') {
            Some((addr, prefix)) => {
                let addr: IpAddr = addr.parse().map_err(|_| invalid())?;
                let prefix: u8 = prefix.parse().map_err(|_| invalid())?;
                IpNet::new(canonical(addr), prefix)
            }
            None => {
                let addr = canonical(s.parse().map_err(|_| invalid())?);
                IpNet::new(addr, if addr.is_ipv4() { 32 } else { 128 })
            }
        }
    }
}

impl fmt::Display for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// IPv4-mapped IPv6 (`::ffff:1.2.3.4`) as plain IPv4; everything else unchanged.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

fn mask(ip: IpAddr, prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let bits = u32::from(v4);
            let m = if prefix == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(prefix))
            };
            IpAddr::V4(Ipv4Addr::from(bits & m))
        }
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            let m = if prefix == 0 {
                0
            } else {
                u128::MAX << (128 - u32::from(prefix))
            };
            IpAddr::V6(Ipv6Addr::from(bits & m))
        }
    }
}

/// Which forwarded header a trusted proxy maintains.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ForwardedHeader {
    /// `X-Forwarded-For: client, proxy1, proxy2`.
    XForwardedFor,
    /// RFC 7239 `Forwarded: for=client;proto=https, for=proxy1`.
    Forwarded,
}

/// Resolves the client address. See the [module docs](self).
#[derive(Debug, Clone)]
pub struct ClientIpResolver {
    trusted: Vec<IpNet>,
    header: Option<ForwardedHeader>,
    ipv6_prefix: u8,
}

impl Default for ClientIpResolver {
    fn default() -> Self {
        Self::builder().build()
    }
}

/// Builds a [`ClientIpResolver`].
#[derive(Debug, Clone)]
#[must_use]
pub struct ClientIpResolverBuilder {
    trusted: Vec<IpNet>,
    header: Option<ForwardedHeader>,
    ipv6_prefix: u8,
}

impl ClientIpResolverBuilder {
    /// Trusts the proxy or proxy network `cidr` (`10.0.0.0/8`, `::1`).
    pub fn trust_proxy(mut self, cidr: &str) -> Result<Self, ConfigError> {
        self.trusted.push(cidr.parse()?);
        Ok(self)
    }
    /// Trusts every network in `nets`.
    pub fn trust_proxies(mut self, nets: impl IntoIterator<Item = IpNet>) -> Self {
        self.trusted.extend(nets);
        self
    }
    /// The header trusted proxies maintain (default: none, the peer address is the client).
    pub fn forwarded_header(mut self, header: ForwardedHeader) -> Self {
        self.header = Some(header);
        self
    }
    /// The prefix IPv6 clients are grouped by for keying limits (default /56, a typical
    /// customer allocation; one host can otherwise rotate through 2^72 addresses).
    pub fn ipv6_prefix(mut self, prefix: u8) -> Self {
        self.ipv6_prefix = prefix.min(128);
        self
    }
    /// Finishes the resolver.
    pub fn build(self) -> ClientIpResolver {
        ClientIpResolver {
            trusted: self.trusted,
            header: self.header,
            ipv6_prefix: self.ipv6_prefix,
        }
    }
}

impl ClientIpResolver {
    /// Peer address only, no trusted proxies, IPv6 grouped by /56.
    pub fn builder() -> ClientIpResolverBuilder {
        ClientIpResolverBuilder {
            trusted: Vec::new(),
            header: None,
            ipv6_prefix: 56,
        }
    }

    fn is_trusted(&self, ip: IpAddr) -> bool {
        self.trusted.iter().any(|net| net.contains(ip))
    }

    /// Whether `peer` is one of the trusted proxies (whose forwarded headers are believed).
    pub fn is_trusted_proxy(&self, peer: IpAddr) -> bool {
        self.is_trusted(peer)
    }

    /// The forwarded header trusted proxies maintain, when one is configured.
    pub fn forwarded_header(&self) -> Option<ForwardedHeader> {
        self.header
    }

    /// The client address for a request from `peer` with `headers`.
    pub fn resolve(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = canonical(peer);
        let Some(header) = self.header else {
            return peer;
        };
        if !self.is_trusted(peer) {
            return peer;
        }
        let hops = match header {
            ForwardedHeader::XForwardedFor => parse_x_forwarded_for(headers),
            ForwardedHeader::Forwarded => parse_forwarded(headers),
        };
        let Some(hops) = hops else {
            return peer;
        };
        let mut client = peer;
        for hop in hops.iter().rev() {
            if !self.is_trusted(client) {
                break;
            }
            match hop {
                Hop::Ip(ip) => client = canonical(*ip),
                // An obfuscated or unknown hop ends the walk at the last trusted proxy.
                Hop::Opaque => break,
            }
        }
        client
    }

    /// The key a limiter should use for `ip`: IPv4 as is, IPv6 truncated to the configured
    /// prefix.
    pub fn key(&self, ip: IpAddr) -> IpAddr {
        match canonical(ip) {
            v4 @ IpAddr::V4(_) => v4,
            v6 => mask(v6, self.ipv6_prefix),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hop {
    Ip(IpAddr),
    Opaque,
}

/// The comma-separated entries of every line of `name`, in order. Lines are split as bytes, so
/// a line with non-UTF-8 bytes keeps its other entries; the bad entry itself is `None`.
fn entries(
    headers: &HeaderMap,
    name: impl http::header::AsHeaderName,
) -> impl Iterator<Item = Option<&str>> {
    headers.get_all(name).into_iter().flat_map(|value| {
        value
            .as_bytes()
            .split(|b| *b == b',')
            .map(|entry| std::str::from_utf8(entry).ok().map(str::trim))
    })
}

/// Every hop of every `X-Forwarded-For` line, in order; a malformed entry is an opaque hop.
fn parse_x_forwarded_for(headers: &HeaderMap) -> Option<Vec<Hop>> {
    let hops: Vec<Hop> = entries(headers, "x-forwarded-for")
        .map(|entry| entry.and_then(parse_node).map_or(Hop::Opaque, Hop::Ip))
        .collect();
    (!hops.is_empty()).then_some(hops)
}

/// The `for=` of every element of every `Forwarded` line, in order; an element that is
/// malformed or names no `for=` is an opaque hop.
fn parse_forwarded(headers: &HeaderMap) -> Option<Vec<Hop>> {
    let hops: Vec<Hop> = entries(headers, http::header::FORWARDED)
        .map(|element| element.and_then(forwarded_for).unwrap_or(Hop::Opaque))
        .collect();
    (!hops.is_empty()).then_some(hops)
}

/// The `for=` node of one `Forwarded` element; `None` if the element is malformed, has no
/// `for=`, or has it twice.
fn forwarded_for(element: &str) -> Option<Hop> {
    let mut found = None;
    for pair in element.split(';') {
        let pair = pair.trim();
        if pair.is_empty() {
            continue;
        }
        let (name, value) = pair.split_once('=')?;
        if name.trim().eq_ignore_ascii_case("for") {
            if found.is_some() {
                return None;
            }
            let value = value.trim();
            let value = match value.strip_prefix('"') {
                Some(quoted) => quoted.strip_suffix('"')?,
                None => value,
            };
            found = Some(
                if value.eq_ignore_ascii_case("unknown") || value.starts_with('_') {
                    Hop::Opaque
                } else {
                    Hop::Ip(parse_node(value)?)
                },
            );
        }
    }
    found
}

/// `1.2.3.4`, `1.2.3.4:80`, `2001:db8::1`, `[2001:db8::1]`, `[2001:db8::1]:443`.
fn parse_node(text: &str) -> Option<IpAddr> {
    if let Some(rest) = text.strip_prefix('[') {
        let (addr, after) = rest.split_once(']')?;
        if !(after.is_empty() || after.strip_prefix(':').is_some_and(is_port)) {
            return None;
        }
        return addr.parse::<Ipv6Addr>().ok().map(IpAddr::V6);
    }
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Some(ip);
    }
    let (addr, port) = text.rsplit_once(':')?;
    if !is_port(port) {
        return None;
    }
    addr.parse::<Ipv4Addr>().ok().map(IpAddr::V4)
}

fn is_port(text: &str) -> bool {
    !text.is_empty() && text.len() <= 5 && text.bytes().all(|b| b.is_ascii_digit())
}

/// Fuzzing entry point: every line of `input` becomes one `X-Forwarded-For` and one
/// `Forwarded` header value; both parsers must not panic, and the resolved client must be the
/// peer or an address that a header named.
#[doc(hidden)]
pub fn __fuzz_forwarded(input: &[u8]) {
    let mut headers = HeaderMap::new();
    for line in input.split(|b| *b == b'\n').take(16) {
        if let Ok(value) = http::HeaderValue::from_bytes(line) {
            headers.append("x-forwarded-for", value.clone());
            headers.append(http::header::FORWARDED, value);
        }
    }
    let peer = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
    for header in [ForwardedHeader::XForwardedFor, ForwardedHeader::Forwarded] {
        let named = match header {
            ForwardedHeader::XForwardedFor => parse_x_forwarded_for(&headers),
            ForwardedHeader::Forwarded => parse_forwarded(&headers),
        };
        let resolver = ClientIpResolver {
            trusted: vec![IpNet {
                addr: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 0)),
                prefix: 8,
            }],
            header: Some(header),
            ipv6_prefix: 56,
        };
        let client = resolver.resolve(peer, &headers);
        let from_header = named.iter().flatten().any(|hop| match hop {
            Hop::Ip(ip) => canonical(*ip) == client,
            Hop::Opaque => false,
        });
        assert!(
            client == peer || from_header,
            "client {client} came from nowhere"
        );
        let _ = resolver.key(client);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn headers(name: &str, values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    fn xff() -> ClientIpResolver {
        ClientIpResolver::builder()
            .trust_proxy("10.0.0.0/8")
            .unwrap()
            .trust_proxy("::1")
            .unwrap()
            .forwarded_header(ForwardedHeader::XForwardedFor)
            .build()
    }

    #[test]
    fn x_forwarded_for_table() {
        let r = xff();
        let cases: &[(&str, &[&str], &str)] = &[
            ("10.0.0.1", &["203.0.113.5"], "203.0.113.5"),
            (
                "10.0.0.1",
                &["1.1.1.1, 203.0.113.5, 10.0.0.9"],
                "203.0.113.5",
            ),
            ("10.0.0.1", &["1.1.1.1", "203.0.113.5"], "203.0.113.5"),
            ("10.0.0.1", &["10.0.0.3, 10.0.0.2"], "10.0.0.3"),
            ("10.0.0.1", &["203.0.113.5:8080"], "203.0.113.5"),
            ("10.0.0.1", &["[2001:db8::1]:443"], "2001:db8::1"),
            // A malformed entry the walk reaches ends it at the last trusted proxy ...
            ("10.0.0.1", &["1.1.1.1, garbage"], "10.0.0.1"),
            ("10.0.0.1", &["1.1.1.1, garbage, 10.0.0.4"], "10.0.0.4"),
            // ... but garbage the client wrote left of its real address changes nothing.
            ("10.0.0.1", &["1.1.1.1,,2.2.2.2"], "2.2.2.2"),
            ("10.0.0.1", &["x, 203.0.113.7"], "203.0.113.7"),
            ("10.0.0.1", &["x", "203.0.113.7"], "203.0.113.7"),
            ("10.0.0.1", &["::ffff:203.0.113.5"], "203.0.113.5"),
            ("198.51.100.7", &["203.0.113.5"], "198.51.100.7"),
            ("::ffff:10.0.0.1", &["203.0.113.5"], "203.0.113.5"),
            ("::1", &["2001:db8::7"], "2001:db8::7"),
        ];
        for (peer, values, want) in cases {
            let got = r.resolve(ip(peer), &headers("x-forwarded-for", values));
            assert_eq!(got, ip(want), "peer {peer} headers {values:?}");
        }
        assert_eq!(r.resolve(ip("10.0.0.1"), &HeaderMap::new()), ip("10.0.0.1"));
    }

    #[test]
    fn forwarded_table() {
        let r = ClientIpResolver::builder()
            .trust_proxy("10.0.0.0/8")
            .unwrap()
            .forwarded_header(ForwardedHeader::Forwarded)
            .build();
        let cases: &[(&[&str], &str)] = &[
            (&["for=203.0.113.5"], "203.0.113.5"),
            (
                &["for=1.1.1.1, for=203.0.113.5;proto=https, for=10.0.0.4"],
                "203.0.113.5",
            ),
            (&["for=\"[2001:db8:cafe::17]:4711\""], "2001:db8:cafe::17"),
            (&["For=203.0.113.5;by=10.0.0.1"], "203.0.113.5"),
            (&["for=unknown"], "10.0.0.1"),
            (&["for=_hidden, for=10.0.0.5"], "10.0.0.5"),
            (&["for=203.0.113.5;for=1.1.1.1"], "10.0.0.1"),
            (&["proto=https"], "10.0.0.1"),
            // Client-written garbage left of the proxy-appended element is never reached.
            (&["proto=https, for=203.0.113.7"], "203.0.113.7"),
            (&["for=\"[bad, for=203.0.113.7;proto=https"], "203.0.113.7"),
            (&["for=\"[2001:db8::1\""], "10.0.0.1"),
            (&["for=not-an-ip"], "10.0.0.1"),
        ];
        for (values, want) in cases {
            let got = r.resolve(ip("10.0.0.1"), &headers("forwarded", values));
            assert_eq!(got, ip(want), "headers {values:?}");
        }
        // X-Forwarded-For is not consulted when Forwarded is configured.
        let got = r.resolve(
            ip("10.0.0.1"),
            &headers("x-forwarded-for", &["203.0.113.5"]),
        );
        assert_eq!(got, ip("10.0.0.1"));
    }

    #[test]
    fn networks_and_keys() {
        let net: IpNet = "192.168.0.0/16".parse().unwrap();
        assert!(net.contains(ip("192.168.44.1")));
        assert!(net.contains(ip("::ffff:192.168.44.1")));
        assert!(!net.contains(ip("192.169.0.1")));
        assert!(!net.contains(ip("::1")));
        for bad in ["10.0.0.0/33", "::/129", "nope", "10.0.0.0/x", ""] {
            assert!(bad.parse::<IpNet>().is_err(), "{bad}");
        }
        let r = ClientIpResolver::default();
        assert_eq!(r.key(ip("2001:db8:1:2ff::1")), ip("2001:db8:1:200::"));
        assert_eq!(r.key(ip("203.0.113.5")), ip("203.0.113.5"));
        assert_eq!(
            r.resolve(ip("10.0.0.1"), &headers("x-forwarded-for", &["1.1.1.1"])),
            ip("10.0.0.1")
        );
    }

    proptest! {
        #[test]
        fn never_panics_and_never_invents_addresses(
            peer in any::<[u8; 4]>(),
            raw in "[0-9a-f:.,\\[\\] ;=\"_A-Za-z]{0,80}",
        ) {
            let peer = IpAddr::from(peer);
            let mut h = HeaderMap::new();
            if let Ok(value) = raw.parse() {
                h.insert("x-forwarded-for", value);
            }
            if let Ok(value) = raw.parse() {
                h.insert("forwarded", value);
            }
            let trusting_everyone = ClientIpResolver::builder()
                .trust_proxy("0.0.0.0/0").unwrap()
                .forwarded_header(ForwardedHeader::XForwardedFor)
                .build();
            let got = trusting_everyone.resolve(peer, &h);
            let from_header = raw
                .split(',')
                .filter_map(|entry| parse_node(entry.trim()))
                .any(|hop| canonical(hop) == got);
            prop_assert!(got == peer || from_header, "invented {got} from {raw:?}");
            // An untrusted peer is always the answer.
            let trusting_nobody = ClientIpResolver::builder()
                .forwarded_header(ForwardedHeader::Forwarded)
                .build();
            prop_assert_eq!(trusting_nobody.resolve(peer, &h), peer);
        }
    }
}
