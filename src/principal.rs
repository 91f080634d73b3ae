//! Who is calling: the [`Principal`] every authenticator produces and every policy reads.
//!
//! A principal is immutable and cheap to clone (one `Arc`). Authentication inserts it into the
//! request extensions; handlers take it as an extractor (`Principal` or `Option<Principal>` with
//! the `axum` feature).
//!
//! ```
//! use portcullis::principal::{AuthMethod, Principal, PrincipalKind};
//!
//! let p = Principal::builder("alice", AuthMethod::Other("test".into()))
//!     .kind(PrincipalKind::User)
//!     .issuer("https://idp.example")
//!     .roles(["reader", "editor"])
//!     .scopes(["documents:read"])
//!     .build();
//! assert!(p.has_role("editor"));
//! assert!(p.has_scope("documents:read"));
//! assert_eq!(p.subject(), "alice");
//! ```

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::SystemTime;

use serde::Serialize;
use serde::ser::SerializeStruct;
use serde_json::{Map, Value};

/// Whether a principal is a person or a workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum PrincipalKind {
    /// A human user (the usual case for tokens with a `sub`).
    User,
    /// A service or machine client (client-credentials tokens, API keys, mTLS workloads).
    Service,
}

/// How a principal proved its identity.
///
/// Holds identifiers only (key ids, algorithm names, certificate identities), never secret
/// material.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum AuthMethod {
    /// A verified JSON Web Token.
    Jwt {
        /// The `kid` of the key that verified the token, if the token named one.
        kid: Option<String>,
        /// The JWS algorithm that verified the token (`RS256`, `EdDSA`, ...).
        alg: String,
    },
    /// An API key, by its public id.
    ApiKey {
        /// The public identifier of the key (never the secret part).
        key_id: String,
    },
    /// A TLS client certificate.
    Mtls {
        /// The identity taken from the certificate (a SPIFFE ID, DNS name or subject).
        identity: String,
    },
    /// Anything else, named by the authenticator that produced it.
    Other(String),
}

impl AuthMethod {
    /// A short stable name for logs and metrics: `jwt`, `api_key`, `mtls` or the custom name.
    pub fn name(&self) -> &str {
        match self {
            AuthMethod::Jwt { .. } => "jwt",
            AuthMethod::ApiKey { .. } => "api_key",
            AuthMethod::Mtls { .. } => "mtls",
            AuthMethod::Other(name) => name,
        }
    }
}

impl Serialize for AuthMethod {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            AuthMethod::Jwt { kid, alg } => {
                let mut s = serializer.serialize_struct("AuthMethod", 3)?;
                s.serialize_field("type", "jwt")?;
                s.serialize_field("kid", kid)?;
                s.serialize_field("alg", alg)?;
                s.end()
            }
            AuthMethod::ApiKey { key_id } => {
                let mut s = serializer.serialize_struct("AuthMethod", 2)?;
                s.serialize_field("type", "api_key")?;
                s.serialize_field("key_id", key_id)?;
                s.end()
            }
            AuthMethod::Mtls { identity } => {
                let mut s = serializer.serialize_struct("AuthMethod", 2)?;
                s.serialize_field("type", "mtls")?;
                s.serialize_field("identity", identity)?;
                s.end()
            }
            AuthMethod::Other(name) => {
                let mut s = serializer.serialize_struct("AuthMethod", 1)?;
                s.serialize_field("type", name)?;
                s.end()
            }
        }
    }
}

#[derive(Debug)]
struct Inner {
    subject: String,
    kind: PrincipalKind,
    issuer: Option<String>,
    tenant: Option<String>,
    roles: Vec<String>,
    scopes: Vec<String>,
    permissions: Vec<String>,
    attributes: Map<String, Value>,
    auth_method: AuthMethod,
    expires_at: Option<SystemTime>,
}

/// What a [`Principal`] shares between its clones: its fields, and beside them (so that no
/// `Debug` of the fields can show them) its audit fields, kept from its second event on.
struct Shared {
    fields: Inner,
    audit_json: AuditJson,
}

impl std::ops::Deref for Shared {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.fields
    }
}

/// The identifier fields an audit line writes for a principal (`,"subject":...` through
/// `key_id`), formatted once per principal value. A principal of a cached token appears in
/// many events; one built for a single request is formatted in place, without the copy (it
/// is kept only from its second event on).
#[derive(Default)]
pub(crate) struct AuditJson {
    seen: AtomicBool,
    json: OnceLock<Box<[u8]>>,
}

impl AuditJson {
    /// The fields, once kept.
    pub(crate) fn get(&self) -> Option<&[u8]> {
        self.json.get().map(|json| &**json)
    }

    /// Offers the fields just formatted: kept the second time (both always agree, as the
    /// principal never changes).
    pub(crate) fn offer(&self, json: &[u8]) {
        if self.seen.load(Ordering::Relaxed) {
            // Another thread may have kept them first: the same bytes.
            let _ = self.json.set(Box::from(json));
        } else {
            self.seen.store(true, Ordering::Relaxed);
        }
    }
}

/// An authenticated caller.
///
/// Built by authenticators with [`Principal::builder`]; read by policies and handlers.
/// `Debug` and `Serialize` show identifiers and claims, never credentials.
#[derive(Clone)]
pub struct Principal {
    inner: Arc<Shared>,
}

impl Principal {
    /// Starts a principal for `subject`, authenticated by `method`. Kind defaults to
    /// [`PrincipalKind::User`].
    pub fn builder(subject: impl Into<String>, method: AuthMethod) -> PrincipalBuilder {
        PrincipalBuilder {
            inner: Inner {
                subject: subject.into(),
                kind: PrincipalKind::User,
                issuer: None,
                tenant: None,
                roles: Vec::new(),
                scopes: Vec::new(),
                permissions: Vec::new(),
                attributes: Map::new(),
                auth_method: method,
                expires_at: None,
            },
        }
    }

    /// The subject identifier (`sub`, API key owner, certificate identity).
    pub fn subject(&self) -> &str {
        &self.inner.subject
    }
    /// User or service.
    pub fn kind(&self) -> PrincipalKind {
        self.inner.kind
    }
    /// The issuer that vouched for the subject, when there is one.
    pub fn issuer(&self) -> Option<&str> {
        self.inner.issuer.as_deref()
    }
    /// The tenant the principal belongs to, when the deployment is multi-tenant.
    pub fn tenant(&self) -> Option<&str> {
        self.inner.tenant.as_deref()
    }
    /// Roles granted directly (before any role hierarchy is applied).
    pub fn roles(&self) -> &[String] {
        &self.inner.roles
    }
    /// OAuth scopes.
    pub fn scopes(&self) -> &[String] {
        &self.inner.scopes
    }
    /// Fine-grained permissions granted directly.
    pub fn permissions(&self) -> &[String] {
        &self.inner.permissions
    }
    /// Other attributes (for JWTs, the verified claims).
    pub fn attributes(&self) -> &Map<String, Value> {
        &self.inner.attributes
    }
    /// One attribute by name.
    pub fn attribute(&self, name: &str) -> Option<&Value> {
        self.inner.attributes.get(name)
    }
    /// How the principal authenticated.
    pub fn auth_method(&self) -> &AuthMethod {
        &self.inner.auth_method
    }
    /// When the credential stops being valid, if it expires.
    pub fn expires_at(&self) -> Option<SystemTime> {
        self.inner.expires_at
    }
    /// The principal's audit fields, formatted once (see `AuditEvent::write_json_fields`).
    pub(crate) fn audit_json(&self) -> &AuditJson {
        &self.inner.audit_json
    }
    /// Whether `role` was granted directly. Policies use the role hierarchy on top of this.
    pub fn has_role(&self, role: &str) -> bool {
        self.inner.roles.iter().any(|r| r == role)
    }
    /// Whether `scope` was granted.
    pub fn has_scope(&self, scope: &str) -> bool {
        self.inner.scopes.iter().any(|s| s == scope)
    }
    /// Whether `permission` was granted directly (scopes count as permissions too).
    pub fn has_direct_permission(&self, permission: &str) -> bool {
        self.inner.permissions.iter().any(|p| p == permission) || self.has_scope(permission)
    }
}

impl fmt::Debug for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Principal")
            .field("subject", &self.inner.subject)
            .field("kind", &self.inner.kind)
            .field("issuer", &self.inner.issuer)
            .field("tenant", &self.inner.tenant)
            .field("roles", &self.inner.roles)
            .field("scopes", &self.inner.scopes)
            .field("permissions", &self.inner.permissions)
            .field("auth_method", &self.inner.auth_method)
            .finish_non_exhaustive()
    }
}

impl Serialize for Principal {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let i = &self.inner;
        let mut s = serializer.serialize_struct("Principal", 9)?;
        s.serialize_field("subject", &i.subject)?;
        s.serialize_field("kind", &i.kind)?;
        s.serialize_field("issuer", &i.issuer)?;
        s.serialize_field("tenant", &i.tenant)?;
        s.serialize_field("roles", &i.roles)?;
        s.serialize_field("scopes", &i.scopes)?;
        s.serialize_field("permissions", &i.permissions)?;
        s.serialize_field("auth_method", &i.auth_method)?;
        let expires = i.expires_at.and_then(|t| {
            t.duration_since(std::time::UNIX_EPOCH)
                .ok()
                .map(|d| d.as_secs())
        });
        s.serialize_field("expires_at", &expires)?;
        s.end()
    }
}

/// Builds a [`Principal`].
#[derive(Debug)]
#[must_use]
pub struct PrincipalBuilder {
    inner: Inner,
}

impl PrincipalBuilder {
    /// Sets the kind (default [`PrincipalKind::User`]).
    pub fn kind(mut self, kind: PrincipalKind) -> Self {
        self.inner.kind = kind;
        self
    }
    /// Sets the issuer.
    pub fn issuer(mut self, issuer: impl Into<String>) -> Self {
        self.inner.issuer = Some(issuer.into());
        self
    }
    /// Sets the tenant.
    pub fn tenant(mut self, tenant: impl Into<String>) -> Self {
        self.inner.tenant = Some(tenant.into());
        self
    }
    /// Adds roles.
    pub fn roles<I, R>(mut self, roles: I) -> Self
    where
        I: IntoIterator<Item = R>,
        R: Into<String>,
    {
        self.inner.roles.extend(roles.into_iter().map(Into::into));
        self
    }
    /// Adds scopes.
    pub fn scopes<I, R>(mut self, scopes: I) -> Self
    where
        I: IntoIterator<Item = R>,
        R: Into<String>,
    {
        self.inner.scopes.extend(scopes.into_iter().map(Into::into));
        self
    }
    /// Adds permissions.
    pub fn permissions<I, R>(mut self, permissions: I) -> Self
    where
        I: IntoIterator<Item = R>,
        R: Into<String>,
    {
        self.inner
            .permissions
            .extend(permissions.into_iter().map(Into::into));
        self
    }
    /// Replaces the attributes.
    pub fn attributes(mut self, attributes: Map<String, Value>) -> Self {
        self.inner.attributes = attributes;
        self
    }
    /// Sets one attribute.
    pub fn attribute(mut self, name: impl Into<String>, value: impl Into<Value>) -> Self {
        self.inner.attributes.insert(name.into(), value.into());
        self
    }
    /// Sets the expiry of the credential.
    pub fn expires_at(mut self, at: SystemTime) -> Self {
        self.inner.expires_at = Some(at);
        self
    }
    /// Finishes the principal.
    pub fn build(self) -> Principal {
        Principal {
            inner: Arc::new(Shared {
                fields: self.inner,
                audit_json: AuditJson::default(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serializes_without_attributes_and_names_method() {
        let p = Principal::builder(
            "svc-a",
            AuthMethod::Jwt {
                kid: Some("k1".into()),
                alg: "EdDSA".into(),
            },
        )
        .kind(PrincipalKind::Service)
        .roles(["reader"])
        .attribute("email", "a@example.com")
        .build();
        let v = serde_json::to_value(&p).unwrap();
        assert_eq!(v["subject"], "svc-a");
        assert_eq!(v["kind"], "service");
        assert_eq!(v["auth_method"]["type"], "jwt");
        assert_eq!(v["auth_method"]["kid"], "k1");
        assert!(v.get("attributes").is_none());
        assert_eq!(p.auth_method().name(), "jwt");
    }

    #[test]
    fn scopes_count_as_direct_permissions() {
        let p = Principal::builder("a", AuthMethod::Other("t".into()))
            .scopes(["docs:read"])
            .permissions(["docs:write"])
            .build();
        assert!(p.has_direct_permission("docs:read"));
        assert!(p.has_direct_permission("docs:write"));
        assert!(!p.has_direct_permission("docs:delete"));
    }
}
