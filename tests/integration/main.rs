//! End-to-end tests of the portcullis stack (issue 2), in one test binary.
//!
//! - [`matrix`]: every route of the demo contract × every caller (anonymous, each role, every
//!   kind of bad token, several credentials) with the exact refusal each must get.
//! - [`audit`]: the audit event of a refusal, captured from `tracing`.
//! - [`routing`]: the route-policy report, nesting and merging, template-based authorization,
//!   declaration errors.
//! - [`cache`]: the verified-token cache against expiry and key rotation, on a manual clock.
//! - [`tonic_grpc`]: a real tonic server and client over loopback.
//! - [`real_idp`]: a real OpenID Provider (node's `oidc-provider`) on loopback.
//! - [`tls`]: real TLS handshakes: mTLS identities, refused certificates, hot reload, CRLs, tonic.

// Helpers outside `#[test]` functions are test code too: a failed setup step should panic.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed expectation is a test failure"
)]

mod audit;
mod cache;
mod cedar;
mod matrix;
mod real_idp;
mod routing;
mod support;
mod tls;
mod tonic_grpc;
