//! End-to-end tests of the portcullis stack (issue 2), in one test binary.
//!
//! - [`matrix`]: every route of the demo contract × every caller (anonymous, each role, every
//!   kind of bad token, several credentials) with the exact refusal each must get.
//! - [`audit`]: the audit event of a refusal, captured from `tracing`.
//! - [`audit_log`]: the JSON-lines sink, the hash-chained file and its verifier.
//! - [`routing`]: the route-policy report, nesting and merging, template-based authorization,
//!   declaration errors.
//! - [`cache`]: the verified-token cache against expiry and key rotation, on a manual clock.
//! - [`tonic_grpc`]: a real tonic server and client over loopback.
//! - [`redaction`]: no credential in audit events, traces, metric labels or responses.
//! - [`runbooks`]: the commands of `docs/runbooks/` against the running example.
//! - [`api_keys`]: API keys beside JWTs in the demo stack, key-file reload, the example's key file.
//! - [`no_secret_leak`]: no secret in any response, Debug, Display, error or log line.
//! - [`outbound`]: service A calls service B with client-credentials tokens from the real provider (HTTP and gRPC).
//! - [`real_idp`]: a real OpenID Provider (node's `oidc-provider`) on loopback.
//! - [`validation`]: the example's `POST /api/documents` validation (in process and against the
//!   example binary) and the request hygiene layer in the full stack.
//! - [`http_hardening`]: secure headers on every response, CORS presets, CSRF protection.
//! - [`browser`]: headless Chromium against the example: CORS and the CSP nonce, enforced by a
//!   real browser.
//! - [`tls`]: real TLS handshakes: mTLS identities, refused certificates, hot reload, CRLs, tonic.
//! - [`future_size`]: upper bounds on the bytes each layer adds to the response future.

// Helpers outside `#[test]` functions are test code too: a failed setup step should panic.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed expectation is a test failure"
)]

mod api_keys;
mod audit;
mod audit_log;
mod browser;
mod cache;
mod cedar;
mod future_size;
mod http_hardening;
mod matrix;
mod no_secret_leak;
mod outbound;
mod real_idp;
mod redaction;
mod routing;
mod runbooks;
mod support;
mod tls;
mod tonic_grpc;
mod validation;
