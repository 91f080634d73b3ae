//! mTLS authentication (feature `tls`): the verified client certificate of the connection
//! becomes a service [`Principal`].
//!
//! The TLS layer ([`tls::serve`](crate::tls::serve), or tonic with
//! [`TlsIncoming`](crate::tls::TlsIncoming)) has already checked the certificate chain against
//! the client CA bundle and CRLs; [`MtlsAuthenticator`] decides which of those identities may
//! call this service and with which roles:
//!
//! | connection | outcome |
//! |---|---|
//! | no client certificate | `Ok(None)`: credential absent, the next authenticator or anonymous |
//! | certificate whose identity is malformed (two SPIFFE IDs, invalid SPIFFE ID) | 401 `InvalidCredential` |
//! | certificate that expired after the handshake (long-lived connection) | 401 `InvalidCredential` |
//! | identity not on the allow-list | 403 `Forbidden` |
//! | allowed identity | principal: kind `service`, auth method `mtls` |
//!
//! An identity outside the allow-list is refused with 403, not 401: the certificate is
//! authentic (the handshake proved possession of a key certified by a trusted CA), so there is
//! no better credential to present on this connection, and the refusal is a decision about who
//! may call, like a policy denial. Unlike 401 it is not counted as a failed login by
//! [`Lockout`](crate::ratelimit::lockout).
//!
//! The principal's subject is the SPIFFE ID, or for a certificate without one the first DNS
//! name that the allow-list names. Its issuer is `spiffe://<trust domain>`; attributes hold
//! `spiffe_id`, `trust_domain`, `dns_names`, `subject_dn` and `certificate_sha256`; it expires
//! with the certificate.
//!
//! ```
//! use portcullis::authn::mtls::MtlsAuthenticator;
//!
//! let mtls = MtlsAuthenticator::builder()
//!     .allow_trust_domain("prod.example")
//!     .roles_for_spiffe_id("spiffe://prod.example/ns/billing/sa/api", ["billing-writer"])
//!     .roles_for_trust_domain("prod.example", ["service"])
//!     .build()
//!     .unwrap();
//! # let _ = mtls;
//!
//! // Role mappings must name identities the allow-list admits.
//! assert!(MtlsAuthenticator::builder()
//!     .allow_trust_domain("prod.example")
//!     .roles_for_spiffe_id("spiffe://staging.example/x", ["admin"])
//!     .build()
//!     .is_err());
//! ```
//!
//! # Deployment caveat
//! Allow identities, not CAs: a trust domain admits every workload the CA issues certificates
//! for. Requests that carry both a client certificate and an `Authorization` header are two
//! credentials and are refused with 400, unless
//! [`prefer_authorization_header`](MtlsAuthenticatorBuilder::prefer_authorization_header) lets
//! the token decide (the certificate then only secures the transport). Revocation is checked
//! at the handshake: a connection opened before its certificate was revoked stays usable until
//! it closes.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;

use http::request::Parts;
use serde_json::{Map, Value};

use super::{AuthFuture, Authenticator};
use crate::clock::{SharedClock, SystemClock};
use crate::error::ConfigError;
use crate::principal::{AuthMethod, Principal, PrincipalKind};
use crate::rejection::Rejection;
use crate::tls::{ClientIdentity, SpiffeId};

/// Maps verified client certificates to service principals. See the [module docs](self).
pub struct MtlsAuthenticator {
    spiffe_ids: BTreeSet<String>,
    trust_domains: BTreeSet<String>,
    dns_names: BTreeSet<String>,
    id_roles: BTreeMap<String, Vec<String>>,
    domain_roles: BTreeMap<String, Vec<String>>,
    dns_roles: BTreeMap<String, Vec<String>>,
    any_verified: bool,
    prefer_authorization: bool,
    clock: SharedClock,
}

impl fmt::Debug for MtlsAuthenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MtlsAuthenticator")
            .field("spiffe_ids", &self.spiffe_ids)
            .field("trust_domains", &self.trust_domains)
            .field("dns_names", &self.dns_names)
            .field("any_verified", &self.any_verified)
            .field("prefer_authorization", &self.prefer_authorization)
            .finish_non_exhaustive()
    }
}

/// Builds an [`MtlsAuthenticator`].
#[must_use]
pub struct MtlsAuthenticatorBuilder {
    spiffe_ids: Vec<String>,
    trust_domains: Vec<String>,
    dns_names: Vec<String>,
    id_roles: Vec<(String, Vec<String>)>,
    domain_roles: Vec<(String, Vec<String>)>,
    dns_roles: Vec<(String, Vec<String>)>,
    any_verified: bool,
    prefer_authorization: bool,
    clock: SharedClock,
}

impl fmt::Debug for MtlsAuthenticatorBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MtlsAuthenticatorBuilder")
            .field("spiffe_ids", &self.spiffe_ids)
            .field("trust_domains", &self.trust_domains)
            .field("dns_names", &self.dns_names)
            .finish_non_exhaustive()
    }
}

fn strings<I, R>(roles: I) -> Vec<String>
where
    I: IntoIterator<Item = R>,
    R: Into<String>,
{
    roles.into_iter().map(Into::into).collect()
}

impl MtlsAuthenticatorBuilder {
    /// Admits the workload with exactly this SPIFFE ID.
    pub fn allow_spiffe_id(mut self, id: impl Into<String>) -> Self {
        self.spiffe_ids.push(id.into());
        self
    }

    /// Admits every SPIFFE ID of this trust domain (`prod.example`).
    pub fn allow_trust_domain(mut self, domain: impl Into<String>) -> Self {
        self.trust_domains.push(domain.into());
        self
    }

    /// Admits certificates without a SPIFFE ID that carry this DNS name in their subject
    /// alternative names (exact, case-insensitive match; no wildcards).
    pub fn allow_dns_name(mut self, name: impl Into<String>) -> Self {
        self.dns_names.push(name.into());
        self
    }

    /// Admits every certificate the TLS layer verified, whatever identity it names: the client
    /// CA bundle alone decides who may connect. Use it only with a CA dedicated to this
    /// service's clients. The subject is the SPIFFE ID, else the first DNS name, else
    /// `cn:<subject common name>` (a CN is not a verified name: it never equals a DNS or SPIFFE
    /// subject and earns no DNS roles), else `sha256:<fingerprint>`; certificates with a
    /// malformed identity are still refused with 401. Role mappings for listed identities still
    /// apply.
    pub fn allow_any_verified_certificate(mut self) -> Self {
        self.any_verified = true;
        self
    }

    /// Grants roles to one SPIFFE ID (which must be admitted by ID or trust domain).
    pub fn roles_for_spiffe_id<I, R>(mut self, id: impl Into<String>, roles: I) -> Self
    where
        I: IntoIterator<Item = R>,
        R: Into<String>,
    {
        self.id_roles.push((id.into(), strings(roles)));
        self
    }

    /// Grants roles to every admitted SPIFFE ID of a trust domain.
    pub fn roles_for_trust_domain<I, R>(mut self, domain: impl Into<String>, roles: I) -> Self
    where
        I: IntoIterator<Item = R>,
        R: Into<String>,
    {
        self.domain_roles.push((domain.into(), strings(roles)));
        self
    }

    /// Grants roles to an admitted DNS name.
    pub fn roles_for_dns_name<I, R>(mut self, name: impl Into<String>, roles: I) -> Self
    where
        I: IntoIterator<Item = R>,
        R: Into<String>,
    {
        self.dns_roles.push((name.into(), strings(roles)));
        self
    }

    /// When the request also carries an `Authorization` header, leave the decision to the
    /// token's authenticator (return "no credential of mine"). Default: off, the certificate
    /// is a credential and a second one is refused with 400.
    pub fn prefer_authorization_header(mut self) -> Self {
        self.prefer_authorization = true;
        self
    }

    /// The time source for the per-request expiry check (default: the system clock).
    pub fn clock(mut self, clock: SharedClock) -> Self {
        self.clock = clock;
        self
    }

    /// Validates every identity and mapping.
    pub fn build(self) -> Result<MtlsAuthenticator, ConfigError> {
        let mut spiffe_ids = BTreeSet::new();
        for id in &self.spiffe_ids {
            SpiffeId::parse(id)
                .map_err(|e| ConfigError::new(format!("mTLS allow-list {id:?}: {e}")))?;
            spiffe_ids.insert(id.clone());
        }
        let mut trust_domains = BTreeSet::new();
        for domain in &self.trust_domains {
            let id = SpiffeId::parse(&format!("spiffe://{domain}")).map_err(|e| {
                ConfigError::new(format!("mTLS allow-list trust domain {domain:?}: {e}"))
            })?;
            if !id.path().is_empty() {
                return Err(ConfigError::new(format!(
                    "mTLS allow-list trust domain {domain:?}: a trust domain has no path"
                )));
            }
            trust_domains.insert(domain.clone());
        }
        let mut dns_names = BTreeSet::new();
        for name in &self.dns_names {
            let valid = !name.is_empty()
                && name.len() <= 253
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-'));
            if !valid {
                return Err(ConfigError::new(format!(
                    "mTLS allow-list DNS name {name:?} is not a DNS name"
                )));
            }
            dns_names.insert(name.to_ascii_lowercase());
        }
        if !self.any_verified
            && spiffe_ids.is_empty()
            && trust_domains.is_empty()
            && dns_names.is_empty()
        {
            return Err(ConfigError::new(
                "mTLS authenticator: the allow-list is empty (no SPIFFE ID, trust domain or DNS name)",
            ));
        }
        let mut id_roles = BTreeMap::<String, Vec<String>>::new();
        for (id, roles) in self.id_roles {
            let parsed = SpiffeId::parse(&id)
                .map_err(|e| ConfigError::new(format!("mTLS role mapping {id:?}: {e}")))?;
            if !self.any_verified
                && !spiffe_ids.contains(&id)
                && !trust_domains.contains(parsed.trust_domain())
            {
                return Err(ConfigError::new(format!(
                    "mTLS role mapping {id:?}: the identity is not on the allow-list"
                )));
            }
            id_roles.entry(id).or_default().extend(roles);
        }
        let mut domain_roles = BTreeMap::<String, Vec<String>>::new();
        for (domain, roles) in self.domain_roles {
            let admitted = self.any_verified
                || trust_domains.contains(&domain)
                || spiffe_ids
                    .iter()
                    .any(|id| SpiffeId::parse(id).is_ok_and(|id| id.trust_domain() == domain));
            if !admitted {
                return Err(ConfigError::new(format!(
                    "mTLS role mapping for trust domain {domain:?}: nothing of it is on the allow-list"
                )));
            }
            domain_roles.entry(domain).or_default().extend(roles);
        }
        let mut dns_roles = BTreeMap::<String, Vec<String>>::new();
        for (name, roles) in self.dns_roles {
            let name = name.to_ascii_lowercase();
            if !self.any_verified && !dns_names.contains(&name) {
                return Err(ConfigError::new(format!(
                    "mTLS role mapping {name:?}: the DNS name is not on the allow-list"
                )));
            }
            dns_roles.entry(name).or_default().extend(roles);
        }
        Ok(MtlsAuthenticator {
            spiffe_ids,
            trust_domains,
            dns_names,
            id_roles,
            domain_roles,
            dns_roles,
            any_verified: self.any_verified,
            prefer_authorization: self.prefer_authorization,
            clock: self.clock,
        })
    }
}

impl MtlsAuthenticator {
    /// An empty allow-list; at least one identity must be added.
    pub fn builder() -> MtlsAuthenticatorBuilder {
        MtlsAuthenticatorBuilder {
            spiffe_ids: Vec::new(),
            trust_domains: Vec::new(),
            dns_names: Vec::new(),
            id_roles: Vec::new(),
            domain_roles: Vec::new(),
            dns_roles: Vec::new(),
            any_verified: false,
            prefer_authorization: false,
            clock: Arc::new(SystemClock),
        }
    }

    /// The principal for a verified identity, or the refusal. See the [module docs](self).
    pub fn principal_for(&self, identity: &ClientIdentity) -> Result<Principal, Rejection> {
        if self.clock.now() > identity.not_after() {
            return Err(Rejection::invalid_credential(
                "client certificate expired after the TLS handshake",
            ));
        }
        let mut roles: Vec<String> = Vec::new();
        let mut add = |more: Option<&Vec<String>>| {
            for role in more.into_iter().flatten() {
                if !roles.contains(role) {
                    roles.push(role.clone());
                }
            }
        };
        let (subject, issuer) = if let Some(id) = identity.spiffe_id() {
            let admitted = self.any_verified
                || self.spiffe_ids.contains(id.as_str())
                || self.trust_domains.contains(id.trust_domain());
            if !admitted {
                return Err(Rejection::forbidden(format!(
                    "mTLS identity {id} is not on the allow-list"
                )));
            }
            add(self.id_roles.get(id.as_str()));
            add(self.domain_roles.get(id.trust_domain()));
            (
                id.as_str().to_owned(),
                Some(format!("spiffe://{}", id.trust_domain())),
            )
        } else {
            let matched = identity
                .dns_names()
                .iter()
                .map(|n| n.to_ascii_lowercase())
                .find(|n| self.dns_names.contains(n));
            let matched = matched.or_else(|| {
                self.any_verified.then(|| {
                    // A subject CN is not a verified DNS identity: it is named apart (so it can
                    // never equal a DNS- or SPIFFE-authenticated subject) and earns no DNS roles.
                    identity
                        .dns_names()
                        .first()
                        .map(|n| n.to_ascii_lowercase())
                        .or_else(|| identity.common_name().map(|cn| format!("cn:{cn}")))
                        .unwrap_or_else(|| format!("sha256:{}", identity.fingerprint_sha256()))
                })
            });
            let Some(name) = matched else {
                return Err(Rejection::forbidden(format!(
                    "mTLS certificate {} (subject {:?}) has no SPIFFE ID and no DNS name on the allow-list",
                    identity.fingerprint_sha256(),
                    identity.subject()
                )));
            };
            add(self.dns_roles.get(&name));
            (name, None)
        };
        let mut attributes = Map::new();
        if let Some(id) = identity.spiffe_id() {
            attributes.insert("spiffe_id".into(), Value::from(id.as_str()));
            attributes.insert("trust_domain".into(), Value::from(id.trust_domain()));
        }
        attributes.insert(
            "dns_names".into(),
            Value::from(identity.dns_names().to_vec()),
        );
        attributes.insert("subject_dn".into(), Value::from(identity.subject()));
        attributes.insert(
            "certificate_sha256".into(),
            Value::from(identity.fingerprint_sha256()),
        );
        let mut builder =
            Principal::builder(subject.clone(), AuthMethod::Mtls { identity: subject })
                .kind(PrincipalKind::Service)
                .roles(roles)
                .attributes(attributes)
                .expires_at(identity.not_after());
        if let Some(issuer) = issuer {
            builder = builder.issuer(issuer);
        }
        Ok(builder.build())
    }

    fn authenticate_parts(&self, parts: &Parts) -> Result<Option<Principal>, Rejection> {
        if self.prefer_authorization && parts.headers.contains_key(http::header::AUTHORIZATION) {
            return Ok(None);
        }
        match ClientIdentity::from_extensions(&parts.extensions) {
            None => Ok(None),
            Some(Err(e)) => Err(Rejection::invalid_credential(format!(
                "client certificate identity: {e}"
            ))),
            Some(Ok(identity)) => self.principal_for(&identity).map(Some),
        }
    }
}

impl Authenticator for MtlsAuthenticator {
    fn authenticate<'a>(&'a self, parts: &'a Parts) -> AuthFuture<'a> {
        Box::pin(std::future::ready(self.authenticate_parts(parts)))
    }

    /// The identity was verified during the handshake: the answer is always immediate.
    fn authenticate_now(&self, parts: &Parts) -> Option<Result<Option<Principal>, Rejection>> {
        Some(self.authenticate_parts(parts))
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use http::{Request, StatusCode};
    use rustls_pki_types::CertificateDer;

    use super::*;
    use crate::clock::ManualClock;
    use crate::rejection::RejectionKind;
    use crate::tls::PeerCertificates;

    fn cert(spiffe: &[&str], dns: &[&str]) -> Vec<u8> {
        let mut params = rcgen::CertificateParams::default();
        for uri in spiffe {
            params
                .subject_alt_names
                .push(rcgen::SanType::URI((*uri).try_into().unwrap()));
        }
        for name in dns {
            params
                .subject_alt_names
                .push(rcgen::SanType::DnsName((*name).try_into().unwrap()));
        }
        params.not_after = rcgen::date_time_ymd(2100, 1, 1);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "svc");
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    fn parts_with(der: Option<Vec<u8>>, authorization: bool) -> Parts {
        let mut builder = Request::builder();
        if authorization {
            builder = builder.header("authorization", "Bearer abc");
        }
        let (mut parts, ()) = builder.body(()).unwrap().into_parts();
        if let Some(der) = der {
            parts
                .extensions
                .insert(PeerCertificates(Arc::new(vec![CertificateDer::from(der)])));
        }
        parts
    }

    fn authenticator() -> MtlsAuthenticator {
        MtlsAuthenticator::builder()
            .allow_spiffe_id("spiffe://prod.example/billing")
            .allow_trust_domain("mesh.example")
            .allow_dns_name("Legacy.Internal")
            .roles_for_spiffe_id("spiffe://prod.example/billing", ["billing"])
            .roles_for_trust_domain("mesh.example", ["mesh"])
            .roles_for_spiffe_id("spiffe://mesh.example/admin", ["admin", "mesh"])
            .roles_for_dns_name("legacy.internal", ["legacy"])
            .build()
            .unwrap()
    }

    #[test]
    fn outcome_table() {
        let a = authenticator();
        type Want = Result<Option<(&'static str, &'static [&'static str])>, RejectionKind>;
        let cases: Vec<(Option<Vec<u8>>, Want)> = vec![
            (None, Ok(None)),
            (
                Some(cert(&["spiffe://prod.example/billing"], &[])),
                Ok(Some(("spiffe://prod.example/billing", &["billing"]))),
            ),
            (
                Some(cert(&["spiffe://mesh.example/anything"], &["x.internal"])),
                Ok(Some(("spiffe://mesh.example/anything", &["mesh"]))),
            ),
            (
                Some(cert(&["spiffe://mesh.example/admin"], &[])),
                Ok(Some(("spiffe://mesh.example/admin", &["admin", "mesh"]))),
            ),
            (
                Some(cert(&[], &["other.internal", "legacy.internal"])),
                Ok(Some(("legacy.internal", &["legacy"]))),
            ),
            // Not admitted: other ID of an admitted ID's trust domain, other domain, SPIFFE ID
            // with an admitted DNS name (the SPIFFE ID decides), no identity at all.
            (
                Some(cert(&["spiffe://prod.example/other"], &[])),
                Err(RejectionKind::Forbidden),
            ),
            (
                Some(cert(&["spiffe://evil.example/billing"], &[])),
                Err(RejectionKind::Forbidden),
            ),
            (
                Some(cert(&["spiffe://evil.example/x"], &["legacy.internal"])),
                Err(RejectionKind::Forbidden),
            ),
            (Some(cert(&[], &[])), Err(RejectionKind::Forbidden)),
            // Malformed identities.
            (
                Some(cert(
                    &["spiffe://prod.example/billing", "spiffe://mesh.example/a"],
                    &[],
                )),
                Err(RejectionKind::InvalidCredential),
            ),
            (
                Some(cert(&["spiffe://PROD.example/billing"], &[])),
                Err(RejectionKind::InvalidCredential),
            ),
            (
                Some(b"garbage".to_vec()),
                Err(RejectionKind::InvalidCredential),
            ),
        ];
        for (i, (der, want)) in cases.into_iter().enumerate() {
            let got = a.authenticate_parts(&parts_with(der, false));
            match (got, want) {
                (Ok(None), Ok(None)) => {}
                (Ok(Some(p)), Ok(Some((subject, roles)))) => {
                    assert_eq!(p.subject(), subject, "case {i}");
                    assert_eq!(p.roles(), roles, "case {i}");
                    assert_eq!(p.kind(), PrincipalKind::Service);
                    assert_eq!(p.auth_method().name(), "mtls");
                    assert!(p.attribute("certificate_sha256").is_some());
                }
                (Err(r), Err(kind)) => assert_eq!(r.kind(), kind, "case {i}: {}", r.detail()),
                (got, want) => panic!("case {i}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn principal_fields_and_status_codes() {
        let a = authenticator();
        let p = a
            .authenticate_parts(&parts_with(
                Some(cert(&["spiffe://mesh.example/ns/a"], &[])),
                false,
            ))
            .unwrap()
            .unwrap();
        assert_eq!(p.issuer(), Some("spiffe://mesh.example"));
        assert_eq!(p.attribute("trust_domain").unwrap(), "mesh.example");
        assert_eq!(
            p.auth_method(),
            &AuthMethod::Mtls {
                identity: "spiffe://mesh.example/ns/a".into()
            }
        );
        assert!(p.expires_at().is_some());
        let denied = a
            .authenticate_parts(&parts_with(
                Some(cert(&["spiffe://x.example/a"], &[])),
                false,
            ))
            .unwrap_err();
        assert_eq!(denied.status(), StatusCode::FORBIDDEN);
    }

    #[test]
    fn expiry_is_checked_per_request() {
        let clock = ManualClock::at(SystemTime::UNIX_EPOCH + Duration::from_secs(4_200_000_000));
        let a = MtlsAuthenticator::builder()
            .allow_trust_domain("prod.example")
            .clock(Arc::new(clock))
            .build()
            .unwrap();
        let err = a
            .authenticate_parts(&parts_with(
                Some(cert(&["spiffe://prod.example/a"], &[])),
                false,
            ))
            .unwrap_err();
        assert_eq!(err.kind(), RejectionKind::InvalidCredential);
    }

    #[test]
    fn authorization_header_can_take_precedence() {
        let der = cert(&["spiffe://prod.example/billing"], &[]);
        let strict = authenticator();
        assert!(
            strict
                .authenticate_parts(&parts_with(Some(der.clone()), true))
                .unwrap()
                .is_some()
        );
        let deferring = MtlsAuthenticator::builder()
            .allow_trust_domain("prod.example")
            .prefer_authorization_header()
            .build()
            .unwrap();
        assert!(
            deferring
                .authenticate_parts(&parts_with(Some(der), true))
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn any_verified_certificate_names_a_subject() {
        let a = MtlsAuthenticator::builder()
            .allow_any_verified_certificate()
            .roles_for_trust_domain("prod.example", ["prod"])
            .build()
            .unwrap();
        let subject = |der| {
            a.authenticate_parts(&parts_with(Some(der), false))
                .unwrap()
                .unwrap()
        };
        let p = subject(cert(&["spiffe://prod.example/a"], &["a.internal"]));
        assert_eq!(
            (p.subject(), p.roles()),
            ("spiffe://prod.example/a", &["prod".to_owned()][..])
        );
        assert_eq!(subject(cert(&[], &["B.internal"])).subject(), "b.internal");
        // A CN is named apart and earns no DNS roles, even when it spells a mapped DNS name.
        assert_eq!(subject(cert(&[], &[])).subject(), "cn:svc");
        let by_dns = MtlsAuthenticator::builder()
            .allow_any_verified_certificate()
            .roles_for_dns_name("svc", ["admin"])
            .build()
            .unwrap();
        let cn_only = by_dns
            .authenticate_parts(&parts_with(Some(cert(&[], &[])), false))
            .unwrap()
            .unwrap();
        assert_eq!((cn_only.subject(), cn_only.roles()), ("cn:svc", &[][..]));
        let malformed = cert(&["spiffe://a.example/x", "spiffe://b.example/y"], &[]);
        assert_eq!(
            a.authenticate_parts(&parts_with(Some(malformed), false))
                .unwrap_err()
                .kind(),
            RejectionKind::InvalidCredential
        );
    }

    #[test]
    fn configuration_errors() {
        let bad = [
            MtlsAuthenticator::builder().build(),
            MtlsAuthenticator::builder()
                .allow_spiffe_id("spiffe://a/")
                .build(),
            MtlsAuthenticator::builder()
                .allow_trust_domain("A.example")
                .build(),
            MtlsAuthenticator::builder()
                .allow_trust_domain("a.example/x")
                .build(),
            MtlsAuthenticator::builder()
                .allow_dns_name("*.example")
                .build(),
            MtlsAuthenticator::builder()
                .allow_dns_name("a.example")
                .roles_for_dns_name("b.example", ["r"])
                .build(),
            MtlsAuthenticator::builder()
                .allow_dns_name("a.example")
                .roles_for_trust_domain("b.example", ["r"])
                .build(),
        ];
        for (i, result) in bad.into_iter().enumerate() {
            assert!(result.is_err(), "case {i}");
        }
    }
}
