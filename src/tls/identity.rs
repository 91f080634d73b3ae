//! The client identity carried by a verified TLS client certificate.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls_pki_types::CertificateDer;
use serde::Serialize;
use sha2::{Digest, Sha256};
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

/// Longest SPIFFE ID accepted (SPIFFE ID specification, section 2.3).
const MAX_SPIFFE_ID_LEN: usize = 2048;
/// Longest trust domain accepted (SPIFFE ID specification, section 2.1).
const MAX_TRUST_DOMAIN_LEN: usize = 255;

/// A SPIFFE ID (`spiffe://trust-domain/path`), validated by the rules of the SPIFFE ID
/// specification: lowercase scheme and trust domain of `[a-z0-9.-_]`, no port, user info, query
/// or fragment, path segments of `[A-Za-z0-9.-_]` that are neither empty nor `.`/`..`, no
/// trailing slash, at most 2048 bytes.
///
/// ```
/// use portcullis::tls::SpiffeId;
///
/// let id = SpiffeId::parse("spiffe://prod.example/ns/billing/sa/api").unwrap();
/// assert_eq!(id.trust_domain(), "prod.example");
/// assert_eq!(id.path(), "/ns/billing/sa/api");
/// assert!(SpiffeId::parse("spiffe://Prod.example/x").is_err()); // uppercase trust domain
/// assert!(SpiffeId::parse("spiffe://prod.example/a/../b").is_err());
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpiffeId {
    id: Arc<str>,
    trust_domain_end: usize,
}

/// Why a string is not a SPIFFE ID, or a certificate carries no usable identity.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum IdentityError {
    /// The string is not a valid SPIFFE ID; the reason names the broken rule.
    InvalidSpiffeId(&'static str),
    /// The certificate has more than one `spiffe://` URI SAN (an X509-SVID has exactly one).
    SeveralSpiffeIds,
    /// The certificate could not be parsed.
    UnparsableCertificate,
    /// The peer presented no certificate.
    NoCertificate,
}

impl fmt::Display for IdentityError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IdentityError::InvalidSpiffeId(reason) => write!(f, "invalid SPIFFE ID: {reason}"),
            IdentityError::SeveralSpiffeIds => {
                f.write_str("certificate has more than one SPIFFE ID URI SAN")
            }
            IdentityError::UnparsableCertificate => f.write_str("certificate cannot be parsed"),
            IdentityError::NoCertificate => f.write_str("no client certificate"),
        }
    }
}

impl std::error::Error for IdentityError {}

impl SpiffeId {
    /// Parses and validates a SPIFFE ID.
    pub fn parse(id: &str) -> Result<Self, IdentityError> {
        let bad = IdentityError::InvalidSpiffeId;
        if id.len() > MAX_SPIFFE_ID_LEN {
            return Err(bad("longer than 2048 bytes"));
        }
        let rest = id
            .strip_prefix("spiffe://")
            .ok_or(bad("scheme is not spiffe://"))?;
        let (domain, path) = rest.find('/').map_or((rest, ""), |i| rest.split_at(i));
        if domain.is_empty() {
            return Err(bad("empty trust domain"));
        }
        if domain.len() > MAX_TRUST_DOMAIN_LEN {
            return Err(bad("trust domain longer than 255 bytes"));
        }
        if !domain.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'_')
        }) {
            return Err(bad("trust domain has characters outside [a-z0-9.-_]"));
        }
        if !path.is_empty() {
            for segment in path[1..].split('/') {
                match segment {
                    "" => return Err(bad("empty path segment or trailing slash")),
                    "." | ".." => return Err(bad("dot segment in path")),
                    s if !s
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_')) =>
                    {
                        return Err(bad("path has characters outside [A-Za-z0-9.-_]"));
                    }
                    _ => {}
                }
            }
        }
        Ok(Self {
            id: Arc::from(id),
            trust_domain_end: "spiffe://".len() + domain.len(),
        })
    }

    /// The whole ID.
    pub fn as_str(&self) -> &str {
        &self.id
    }

    /// The trust domain (`prod.example` in `spiffe://prod.example/ns/x`).
    pub fn trust_domain(&self) -> &str {
        &self.id["spiffe://".len()..self.trust_domain_end]
    }

    /// The path, empty or starting with `/`.
    pub fn path(&self) -> &str {
        &self.id[self.trust_domain_end..]
    }
}

impl fmt::Debug for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.id, f)
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.id)
    }
}

impl std::str::FromStr for SpiffeId {
    type Err = IdentityError;
    fn from_str(s: &str) -> Result<Self, IdentityError> {
        Self::parse(s)
    }
}

impl Serialize for SpiffeId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.id)
    }
}

/// The certificate chain a client presented and the TLS layer verified, leaf first.
///
/// Inserted into the request extensions by [`serve`](crate::tls::serve) when the client sent a
/// certificate. The chain was checked against the client CA bundle (and CRLs) during the
/// handshake; nothing else can insert this type, since extensions never come from the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerCertificates(pub Arc<Vec<CertificateDer<'static>>>);

impl PeerCertificates {
    /// The client's own (leaf) certificate.
    pub fn leaf(&self) -> Option<&CertificateDer<'static>> {
        self.0.first()
    }
}

/// Who the client is, according to its verified certificate: SPIFFE ID (URI SAN), DNS names
/// (DNS SANs), subject and common name.
///
/// Inserted into the request extensions by [`serve`](crate::tls::serve); also read from tonic's
/// TLS connection info with [`ClientIdentity::from_tonic_request`]. With the `axum` feature it
/// is an extractor (401 when the client sent no certificate; `Option<ClientIdentity>` for
/// routes that also serve clients without one). Serializes as JSON with `spiffe_id`,
/// `dns_names`, `subject`, `common_name`, `fingerprint_sha256` and `not_after` (Unix seconds).
///
/// Cheap to clone (one `Arc`): it is parsed once per connection and shared by its requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientIdentity {
    inner: Arc<IdentityInner>,
}

impl Serialize for ClientIdentity {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.inner.serialize(serializer)
    }
}

#[derive(Debug, PartialEq, Eq, Serialize)]
struct IdentityInner {
    spiffe_id: Option<SpiffeId>,
    dns_names: Vec<String>,
    subject: String,
    common_name: Option<String>,
    fingerprint_sha256: String,
    not_after: u64,
}

impl ClientIdentity {
    /// The identity of a DER certificate.
    ///
    /// Fails when the certificate cannot be parsed, has several `spiffe://` URI SANs, or one
    /// that is not a valid SPIFFE ID. URI SANs of other schemes are ignored.
    pub fn from_der(der: &[u8]) -> Result<Self, IdentityError> {
        let (_, cert) =
            X509Certificate::from_der(der).map_err(|_| IdentityError::UnparsableCertificate)?;
        let mut spiffe_id = None;
        let mut dns_names = Vec::new();
        let san = cert
            .subject_alternative_name()
            .map_err(|_| IdentityError::UnparsableCertificate)?;
        for name in san.iter().flat_map(|ext| ext.value.general_names.iter()) {
            match name {
                // Compared as bytes: a URI SAN should be ASCII, but slicing a `str` of a
                // hostile certificate at a fixed offset could split a character.
                GeneralName::URI(uri)
                    if uri
                        .as_bytes()
                        .get(..7)
                        .is_some_and(|scheme| scheme.eq_ignore_ascii_case(b"spiffe:")) =>
                {
                    if spiffe_id.is_some() {
                        return Err(IdentityError::SeveralSpiffeIds);
                    }
                    spiffe_id = Some(SpiffeId::parse(uri)?);
                }
                GeneralName::DNSName(dns) => dns_names.push((*dns).to_owned()),
                _ => {}
            }
        }
        let common_name = cert
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .map(str::to_owned);
        let not_after = u64::try_from(cert.validity().not_after.timestamp()).unwrap_or(0);
        Ok(Self {
            inner: Arc::new(IdentityInner {
                spiffe_id,
                dns_names,
                subject: cert.subject().to_string(),
                common_name,
                fingerprint_sha256: crate::hex::encode(&Sha256::digest(der)),
                not_after,
            }),
        })
    }

    /// The identity of a presented chain's leaf (the first certificate).
    pub fn from_chain(chain: &[CertificateDer<'_>]) -> Result<Self, IdentityError> {
        let leaf = chain.first().ok_or(IdentityError::NoCertificate)?;
        Self::from_der(leaf.as_ref())
    }

    /// The identity found in request extensions: the [`ClientIdentity`] that
    /// [`serve`](crate::tls::serve) inserted, otherwise one parsed from [`PeerCertificates`] or
    /// (feature `tonic`) tonic's `TlsConnectInfo`. `None` when the connection carried no client
    /// certificate.
    pub fn from_extensions(extensions: &http::Extensions) -> Option<Result<Self, IdentityError>> {
        if let Some(identity) = extensions.get::<ClientIdentity>() {
            return Some(Ok(identity.clone()));
        }
        if let Some(PeerCertificates(chain)) = extensions.get::<PeerCertificates>() {
            return Some(Self::from_chain(chain));
        }
        #[cfg(feature = "tonic")]
        {
            use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
            if let Some(chain) = extensions
                .get::<TlsConnectInfo<TcpConnectInfo>>()
                .and_then(TlsConnectInfo::peer_certs)
            {
                return Some(Self::from_chain(chain.as_slice()));
            }
        }
        None
    }

    /// The identity of the client certificate of a tonic request (served by tonic over TLS, or
    /// with an incoming stream from [`TlsIncoming`](crate::tls::TlsIncoming)); `None` without a
    /// client certificate.
    #[cfg(feature = "tonic")]
    pub fn from_tonic_request<T>(
        request: &tonic::Request<T>,
    ) -> Option<Result<Self, IdentityError>> {
        Self::from_extensions(request.extensions())
    }

    /// The SPIFFE ID of the URI SAN, if the certificate is an X509-SVID.
    pub fn spiffe_id(&self) -> Option<&SpiffeId> {
        self.inner.spiffe_id.as_ref()
    }
    /// The DNS names of the subject alternative name extension, in certificate order.
    pub fn dns_names(&self) -> &[String] {
        &self.inner.dns_names
    }
    /// The subject distinguished name (`CN=billing, O=Example`).
    pub fn subject(&self) -> &str {
        &self.inner.subject
    }
    /// The first common name (CN) of the subject.
    pub fn common_name(&self) -> Option<&str> {
        self.inner.common_name.as_deref()
    }
    /// SHA-256 of the DER certificate, lowercase hex (for pinning and audit).
    pub fn fingerprint_sha256(&self) -> &str {
        &self.inner.fingerprint_sha256
    }
    /// End of the certificate's validity.
    pub fn not_after(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(self.inner.not_after)
    }
}

#[cfg(feature = "axum")]
mod extract {
    use axum::extract::{FromRequestParts, OptionalFromRequestParts};
    use http::request::Parts;

    use super::ClientIdentity;
    use crate::rejection::Rejection;

    /// Requires a client certificate: 401 when the connection has none, or its identity is
    /// malformed.
    impl<S: Send + Sync> FromRequestParts<S> for ClientIdentity {
        type Rejection = Rejection;

        async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Rejection> {
            match ClientIdentity::from_extensions(&parts.extensions) {
                Some(Ok(identity)) => Ok(identity),
                Some(Err(e)) => Err(Rejection::invalid_credential(format!(
                    "client certificate identity: {e}"
                ))),
                None => Err(Rejection::missing_credential()),
            }
        }
    }

    /// `Option<ClientIdentity>`: `None` without a client certificate; 401 for a malformed one.
    impl<S: Send + Sync> OptionalFromRequestParts<S> for ClientIdentity {
        type Rejection = Rejection;

        async fn from_request_parts(
            parts: &mut Parts,
            _state: &S,
        ) -> Result<Option<Self>, Rejection> {
            ClientIdentity::from_extensions(&parts.extensions)
                .transpose()
                .map_err(|e| {
                    Rejection::invalid_credential(format!("client certificate identity: {e}"))
                })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spiffe_id_table() {
        let ok = [
            ("spiffe://example.org", "example.org", ""),
            (
                "spiffe://example.org/ns/prod/sa/api",
                "example.org",
                "/ns/prod/sa/api",
            ),
            ("spiffe://a-b_c.9/x.y-z_W", "a-b_c.9", "/x.y-z_W"),
        ];
        for (input, domain, path) in ok {
            let id = SpiffeId::parse(input).unwrap();
            assert_eq!(
                (id.trust_domain(), id.path(), id.as_str()),
                (domain, path, input)
            );
        }
        let long = format!("spiffe://example.org/{}", "a".repeat(2048));
        let bad = [
            "",
            "https://example.org/x",
            "SPIFFE://example.org/x",
            "spiffe://",
            "spiffe:///path",
            "spiffe://Example.org/x",
            "spiffe://example.org:8443/x",
            "spiffe://user@example.org/x",
            "spiffe://example.org/",
            "spiffe://example.org/a//b",
            "spiffe://example.org/a/./b",
            "spiffe://example.org/a/../b",
            "spiffe://example.org/a?b",
            "spiffe://example.org/a#b",
            "spiffe://example.org/a%20b",
            long.as_str(),
        ];
        for input in bad {
            assert!(
                matches!(
                    SpiffeId::parse(input),
                    Err(IdentityError::InvalidSpiffeId(_))
                ),
                "{input}"
            );
        }
    }

    proptest::proptest! {
        /// Any input: no panic; an accepted ID splits into its parts and parses again.
        #[test]
        fn spiffe_parse_is_total_and_consistent(input in "(spiffe://)?[a-zA-Z0-9./_:@%?#-]{0,40}") {
            if let Ok(id) = SpiffeId::parse(&input) {
                proptest::prop_assert_eq!(
                    format!("spiffe://{}{}", id.trust_domain(), id.path()),
                    input.clone()
                );
                proptest::prop_assert_eq!(SpiffeId::parse(id.as_str()), Ok(id.clone()));
                proptest::prop_assert!(!id.trust_domain().is_empty());
            }
        }

        /// Arbitrary bytes as a certificate: an error, never a panic.
        #[test]
        fn arbitrary_der_never_panics(der in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512)) {
            let _ = ClientIdentity::from_der(&der);
        }
    }

    #[test]
    fn garbage_certificates_are_errors() {
        assert_eq!(
            ClientIdentity::from_der(b"not a certificate"),
            Err(IdentityError::UnparsableCertificate)
        );
        assert_eq!(
            ClientIdentity::from_chain(&[]),
            Err(IdentityError::NoCertificate)
        );
        assert!(ClientIdentity::from_extensions(&http::Extensions::new()).is_none());
    }

    fn cert_with(sans: Vec<rcgen::SanType>, cn: &str) -> Vec<u8> {
        let mut params = rcgen::CertificateParams::default();
        params.subject_alt_names = sans;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "Example");
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    fn uri(s: &str) -> rcgen::SanType {
        rcgen::SanType::URI(s.try_into().unwrap())
    }

    #[test]
    fn identity_from_real_certificates() {
        let der = cert_with(
            vec![
                uri("spiffe://prod.example/ns/billing/sa/api"),
                uri("https://other.example/ignored"),
                rcgen::SanType::DnsName("billing.internal".try_into().unwrap()),
                rcgen::SanType::DnsName("billing.svc".try_into().unwrap()),
            ],
            "billing",
        );
        let id = ClientIdentity::from_der(&der).unwrap();
        assert_eq!(
            id.spiffe_id().map(SpiffeId::as_str),
            Some("spiffe://prod.example/ns/billing/sa/api")
        );
        assert_eq!(id.dns_names(), ["billing.internal", "billing.svc"]);
        assert_eq!(id.common_name(), Some("billing"));
        assert!(id.subject().contains("CN=billing"), "{}", id.subject());
        assert_eq!(
            id.fingerprint_sha256(),
            crate::hex::encode(&Sha256::digest(&der))
        );
        assert!(id.not_after() > SystemTime::now());
        let json = serde_json::to_value(&id).unwrap();
        assert_eq!(json["spiffe_id"], "spiffe://prod.example/ns/billing/sa/api");
        assert_eq!(json["dns_names"][1], "billing.svc");

        let mut ext = http::Extensions::new();
        ext.insert(PeerCertificates(Arc::new(vec![CertificateDer::from(
            der.clone(),
        )])));
        assert_eq!(ClientIdentity::from_extensions(&ext), Some(Ok(id)));
    }

    #[test]
    fn several_or_invalid_spiffe_ids_are_refused() {
        let two = cert_with(
            vec![uri("spiffe://a.example/x"), uri("spiffe://b.example/y")],
            "two",
        );
        assert_eq!(
            ClientIdentity::from_der(&two),
            Err(IdentityError::SeveralSpiffeIds)
        );
        let bad = cert_with(vec![uri("spiffe://A.example/x")], "bad");
        assert!(matches!(
            ClientIdentity::from_der(&bad),
            Err(IdentityError::InvalidSpiffeId(_))
        ));
        let none = cert_with(vec![], "plain");
        let id = ClientIdentity::from_der(&none).unwrap();
        assert!(id.spiffe_id().is_none() && id.dns_names().is_empty());
    }
}
