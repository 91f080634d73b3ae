//! Whether a request reached the service over TLS: a marker a TLS server sets, or the scheme a
//! trusted TLS-terminating proxy reports.

use std::net::IpAddr;

use http::{HeaderMap, Request};

use crate::client_ip::{ClientIpResolver, ForwardedHeader};

/// Request extension meaning "this request arrived over a TLS connection".
///
/// A server that terminates TLS itself inserts it into every request (for example from the
/// connection's accept loop or a `map_request` layer); [`SecureHeadersLayer`] then sends
/// `Strict-Transport-Security`. Plain-HTTP servers never insert it, so a response over
/// cleartext never carries HSTS.
///
/// [`SecureHeadersLayer`]: super::SecureHeadersLayer
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SecureTransport;

/// Decides whether a request came over TLS: the [`SecureTransport`] marker, or the forwarded
/// scheme when (and only when) the socket peer is a trusted proxy of `resolver`.
pub(crate) fn is_secure<B>(request: &Request<B>, resolver: Option<&ClientIpResolver>) -> bool {
    if request.extensions().get::<SecureTransport>().is_some() {
        return true;
    }
    let Some(resolver) = resolver else {
        return false;
    };
    let Some(peer) = crate::context::peer_ip(request.extensions()) else {
        return false;
    };
    forwarded_https(peer, request.headers(), resolver)
}

fn forwarded_https(peer: IpAddr, headers: &HeaderMap, resolver: &ClientIpResolver) -> bool {
    if !resolver.is_trusted_proxy(peer) {
        return false;
    }
    match resolver.forwarded_header() {
        Some(ForwardedHeader::XForwardedFor) => last_x_forwarded_proto(headers),
        Some(ForwardedHeader::Forwarded) => last_forwarded_proto(headers),
        _ => false,
    }
}

/// The right-most `X-Forwarded-Proto` entry, the one the nearest (trusted) proxy wrote.
fn last_x_forwarded_proto(headers: &HeaderMap) -> bool {
    headers
        .get_all("x-forwarded-proto")
        .iter()
        .next_back()
        .and_then(|v| v.to_str().ok())
        .and_then(|text| text.rsplit(',').next())
        .is_some_and(|proto| proto.trim().eq_ignore_ascii_case("https"))
}

/// The `proto=` of the right-most RFC 7239 `Forwarded` element; malformed elements (a pair
/// without `=`, two `proto` parameters) count as "not https".
fn last_forwarded_proto(headers: &HeaderMap) -> bool {
    let Some(text) = headers
        .get_all(http::header::FORWARDED)
        .iter()
        .next_back()
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let Some(element) = text.rsplit(',').next() else {
        return false;
    };
    let mut proto = None;
    for pair in element.split(';').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((name, value)) = pair.split_once('=') else {
            return false;
        };
        if name.trim().eq_ignore_ascii_case("proto") {
            if proto.is_some() {
                return false;
            }
            let value = value.trim();
            proto = Some(
                value
                    .strip_prefix('"')
                    .and_then(|v| v.strip_suffix('"'))
                    .unwrap_or(value)
                    .to_owned(),
            );
        }
    }
    proto.is_some_and(|p| p.eq_ignore_ascii_case("https"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    fn resolver(header: ForwardedHeader) -> ClientIpResolver {
        ClientIpResolver::builder()
            .trust_proxy("10.0.0.0/8")
            .unwrap()
            .forwarded_header(header)
            .build()
    }

    fn request(peer: &str, headers: &[(&str, &str)]) -> Request<()> {
        let mut builder = Request::builder();
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let mut req = builder.body(()).unwrap();
        req.extensions_mut()
            .insert(SocketAddr::new(peer.parse().unwrap(), 1234));
        req
    }

    proptest::proptest! {
        #[test]
        fn forwarded_parsers_never_panic(raw in "[a-zA-Z0-9=;,\" _-]{0,60}") {
            let mut h = HeaderMap::new();
            if let Ok(value) = raw.parse::<http::HeaderValue>() {
                h.insert("forwarded", value.clone());
                h.insert("x-forwarded-proto", value);
            }
            let _ = last_forwarded_proto(&h);
            let _ = last_x_forwarded_proto(&h);
            // Only an exact `https` (any case) in the last position counts.
            if !raw.to_ascii_lowercase().contains("https") {
                proptest::prop_assert!(!last_forwarded_proto(&h) && !last_x_forwarded_proto(&h));
            }
        }
    }

    #[test]
    fn marker_means_tls() {
        let mut req = request("198.51.100.1", &[]);
        assert!(!is_secure(&req, None));
        req.extensions_mut().insert(SecureTransport);
        assert!(is_secure(&req, None));
    }

    #[test]
    fn forwarded_scheme_only_from_trusted_proxies() {
        let xff = resolver(ForwardedHeader::XForwardedFor);
        let fwd = resolver(ForwardedHeader::Forwarded);
        type Case<'a> = (
            &'a ClientIpResolver,
            &'a str,
            &'a [(&'a str, &'a str)],
            bool,
        );
        let cases: &[Case<'_>] = &[
            (&xff, "10.0.0.1", &[("x-forwarded-proto", "https")], true),
            (&xff, "10.0.0.1", &[("x-forwarded-proto", "HTTPS")], true),
            (&xff, "10.0.0.1", &[("x-forwarded-proto", "http")], false),
            (
                &xff,
                "10.0.0.1",
                &[("x-forwarded-proto", "https, http")],
                false,
            ),
            (
                &xff,
                "10.0.0.1",
                &[("x-forwarded-proto", "http, https")],
                true,
            ),
            // Untrusted peer: its claim is ignored.
            (
                &xff,
                "198.51.100.1",
                &[("x-forwarded-proto", "https")],
                false,
            ),
            // The resolver maintains X-Forwarded-*: Forwarded is not read.
            (&xff, "10.0.0.1", &[("forwarded", "proto=https")], false),
            (
                &fwd,
                "10.0.0.1",
                &[("forwarded", "for=1.2.3.4;proto=https")],
                true,
            ),
            (&fwd, "10.0.0.1", &[("forwarded", "Proto=\"https\"")], true),
            (
                &fwd,
                "10.0.0.1",
                &[("forwarded", "proto=https, for=10.0.0.9;proto=http")],
                false,
            ),
            (
                &fwd,
                "10.0.0.1",
                &[("forwarded", "proto=https;proto=http")],
                false,
            ),
            (
                &fwd,
                "10.0.0.1",
                &[("forwarded", "proto=https;garbage")],
                false,
            ),
            (&fwd, "10.0.0.1", &[("x-forwarded-proto", "https")], false),
            (&fwd, "198.51.100.1", &[("forwarded", "proto=https")], false),
        ];
        for (resolver, peer, headers, want) in cases {
            let req = request(peer, headers);
            assert_eq!(is_secure(&req, Some(resolver)), *want, "{peer} {headers:?}");
        }
        // A resolver without a forwarded header trusts no scheme either.
        let none = ClientIpResolver::builder()
            .trust_proxy("10.0.0.0/8")
            .unwrap()
            .build();
        let req = request("10.0.0.1", &[("x-forwarded-proto", "https")]);
        assert!(!is_secure(&req, Some(&none)));
    }
}
