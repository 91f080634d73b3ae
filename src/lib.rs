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
//! - [`authn`]: the [`Authenticator`](authn::Authenticator) trait, [`AuthnLayer`](authn::AuthnLayer),
//!   and JWT verification ([`authn::jwt`]).
//! - [`authz`]: [`Policy`](authz::Policy), the built-in policies and RBAC.
//! - [`routing`]: deny-by-default routing: `SecureRouter` for axum, [`MethodPolicies`](routing::MethodPolicies) for tonic.
//! - [`rejection`]: the one refusal type and its HTTP / gRPC rendering table.
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
//! | `redis` | no | [`authn::revocation::RedisRevocationStore`] and the Redis rate-limit store: state shared across replicas |
//! | `config` | no | [`authz::config::PolicyFile`]: roles and route / gRPC policies from a TOML file |
//! | `testing` | no | [`testing`]: key generation, token minting and an in-process identity provider for tests (enables `axum`) |
//! | `cedar` | no | [`authz::cedar`]: Cedar policies (the `cedar-policy` crate) as a `Policy`, validated against a Cedar schema at startup |
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
pub mod client_ip;
pub mod clock;
pub mod context;
mod error;
pub mod principal;
pub mod ratelimit;
pub mod rejection;
pub mod routing;
mod security;
#[cfg(feature = "testing")]
pub mod testing;
#[cfg(feature = "tls")]
pub mod tls;

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
