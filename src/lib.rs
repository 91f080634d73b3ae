//! # portcullis
//!
//! Composable tower layers and extractors that secure an [axum](https://docs.rs/axum) router or
//! a [tonic](https://docs.rs/tonic) server: every request is authenticated, authorized against an
//! explicit policy and audited, and every refusal looks the same to the client while its detail
//! is recorded for the operator.
//!
//! ```text
//! client ─► RequestContext ─► Authenticate ─► PolicyGuard (per route) ─► handler
//! ```
//!
//! - [`context`]: the edge layer (request id, rendering of rejections, audit events).
//! - [`audit`]: audit events, the JSON-lines and hash-chained sinks, metrics, alerts.
//! - [`authn`]: the [`Authenticator`](authn::Authenticator) trait, [`AuthnLayer`](authn::AuthnLayer),
//!   and JWT verification ([`authn::jwt`]).
//! - [`authz`]: [`Policy`](authz::Policy), the built-in policies and RBAC.
//! - [`routing`]: deny-by-default routing: `SecureRouter` for axum, [`MethodPolicies`](routing::MethodPolicies) for tonic.
//! - [`authn::api_key`]: API keys (hashed, looked up by id, watched key file).
//! - [`secrets`]: secret sources (environment, files, watched files) and the [`KeyRing`](secrets::KeyRing).
//! - [`rejection`]: the one refusal type and its HTTP / gRPC rendering table.
//! - [`validate`]: request hygiene (ambiguous paths, limits), validated extractors and types,
//!   `SafeUrl` (SSRF guard).
//! - [`headers`]: secure response headers (CSP with per-request nonces, HSTS over TLS only).
//! - [`Security`]: the stack assembled in order.
//!
//! ## Feature flags
//!
//! | feature | default | enables |
//! |---|---|---|
//! | `axum` | yes | extractors, `routing::SecureRouter` |
//! | `jwt` | yes | [`authn::jwt`]: JWT verification from static keys (aws-lc-rs) |
//! | `oidc` | no | remote JWKS ([`authn::jwt::RemoteJwks`]) and OpenID Connect discovery ([`authn::oidc`]), over HTTPS with rustls |
//! | `tonic` | no | reads tonic's connection info for client addresses |
//! | `redis` | no | [`authn::revocation::RedisRevocationStore`], the Redis rate-limit and lockout stores: state shared across replicas |
//! | `config` | no | [`authz::config::PolicyFile`]: roles and route / gRPC policies from a TOML file |
//! | `testing` | no | [`testing`]: key generation, token minting and an in-process identity provider for tests (enables `axum`) |
//! | `cedar` | no | [`authz::cedar`]: Cedar policies (the `cedar-policy` crate) as a `Policy`, validated against a Cedar schema at startup |
//! | `metrics` | no | counters and histograms through the [`metrics`](https://docs.rs/metrics) facade ([`audit::metrics`] lists the names) |
//! | `webhook` | no | [`audit::WebhookHook`]: security alerts POSTed to a webhook (HTTP with rustls) |
//! | `validate` | yes | `validate::Valid` extractors (garde), bounded / pattern / slug types, `validate::SafeUrl` with resolver checks (the request hygiene layer needs no feature) |
//! | `outbound` | no | [`client`]: OAuth 2.0 client-credentials token source (cached, refreshed ahead, single flight) and `BearerTokenLayer` for outgoing hyper / tonic clients, over HTTPS with rustls |
//! | `tls` | no | [`tls`]: rustls server configuration (TLS 1.2+, client CA, CRLs, certificate hot reload), serving over TLS with the client identity in request extensions, the mTLS client configuration, and [`authn::mtls`] |
//! | `full` | no | all of the above |
//!
//! Features only add capabilities; none weakens a default.
//!
//! ## Defaults
//!
//! See `docs/security-defaults.md` in the repository for every default and the threat it
//! addresses.

#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod audit;
pub mod authn;
pub mod authz;
pub mod body;
mod claims;
#[cfg(feature = "outbound")]
pub mod client;
pub mod client_ip;
pub mod clock;
pub mod context;
mod error;
pub mod headers;
mod hex;
pub mod principal;
pub mod ratelimit;
pub mod rejection;
pub mod routing;
pub mod secrets;
mod security;
#[cfg(feature = "redis")]
mod shared_redis;
#[cfg(feature = "testing")]
pub mod testing;
#[cfg(feature = "tls")]
pub mod tls;
pub mod validate;

pub use error::ConfigError;
pub use security::{Security, SecurityBuilder};

/// The types most services need.
pub mod prelude {
    pub use crate::Security;
    pub use crate::authz::{
        Policy, Rbac, SharedPolicy, all_of, any_of, authenticated, has_any_role, has_permission,
        has_role, has_scope, not, public,
    };
    pub use crate::principal::{AuthMethod, Principal, PrincipalKind};
    pub use crate::rejection::{Rejection, RejectionKind};
    #[cfg(feature = "axum")]
    pub use crate::routing::{SecureRouter, delete, get, patch, post, put};
}
