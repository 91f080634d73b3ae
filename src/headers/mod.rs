//! HTTP hardening for browser-reachable services: secure response headers with per-request CSP
//! nonces.
//!
//! # Secure headers
//!
//! [`SecureHeadersLayer`] sets these on every response that passes through it (the
//! [`Security`](crate::Security) stack includes the API profile by default):
//!
//! | header | API profile | HTML profile | a handler's own value | threat |
//! |---|---|---|---|---|
//! | `X-Content-Type-Options` | `nosniff` | same | replaced | MIME sniffing turning a JSON or upload response into script or HTML |
//! | `Cache-Control` | `no-store` | same | kept | shared caches and the browser's back button keeping per-user data |
//! | `Content-Security-Policy` | [`API_CSP`] | [`HTML_CSP`] with a fresh nonce | kept, and ours added beside it | XSS, injected scripts and styles, clickjacking (`frame-ancestors`) |
//! | `Referrer-Policy` | `no-referrer` | same | kept | URLs (ids, tokens in paths) leaking to other sites |
//! | `Cross-Origin-Resource-Policy` | `same-origin` | same | kept | other sites embedding responses (Spectre-style reads, hotlinking) |
//! | `X-Frame-Options` | `DENY` | same | replaced | clickjacking in browsers without `frame-ancestors` |
//! | `Cross-Origin-Opener-Policy` | — | `same-origin` | kept | cross-window attacks through `window.opener` |
//! | `Permissions-Policy` | — | [`HTML_PERMISSIONS_POLICY`] | kept | injected content using camera, microphone, location... |
//! | `Strict-Transport-Security` | `max-age=63072000; includeSubDomains`, over TLS only | same | replaced | SSL stripping on later visits |
//! | `Server`, `X-Powered-By` | removed | removed | removed | fingerprinting for targeted exploits |
//!
//! "Kept" headers are those where a handler knows better and its value cannot weaken what the
//! others protect: a public, cacheable resource may say `Cache-Control: public, max-age=60`; an
//! asset meant for other sites may say `Cross-Origin-Resource-Policy: cross-origin`. A handler's
//! `Content-Security-Policy` is kept *and* the layer's is added as a second header; browsers
//! enforce every policy, so a handler can narrow what may run but never widen it.
//! `nosniff`, `DENY` and HSTS have no safer alternative, so they are always the layer's.
//!
//! HSTS is sent only when the request arrived over TLS: the [`SecureTransport`] request
//! extension (set by a TLS server), or — with
//! [`trust_forwarded_proto`](SecureHeadersBuilder::trust_forwarded_proto) — the scheme a
//! trusted TLS-terminating proxy reports (`X-Forwarded-Proto` or `Forwarded: proto=`), believed
//! only from peers the [`ClientIpResolver`](crate::client_ip::ClientIpResolver) trusts.
//!
//! ```
//! use http::{Request, Response, StatusCode};
//! use portcullis::headers::SecureHeadersLayer;
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//!
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! let svc = ServiceBuilder::new()
//!     .layer(SecureHeadersLayer::api())
//!     .service(service_fn(|_req: Request<String>| async {
//!         let mut response = Response::new(String::from("{}"));
//!         response.headers_mut().insert("server", "hyper".parse().unwrap());
//!         Ok::<_, std::convert::Infallible>(response)
//!     }));
//! let response = svc.oneshot(Request::new(String::new())).await.unwrap();
//! assert_eq!(response.status(), StatusCode::OK);
//! assert_eq!(response.headers()["x-content-type-options"], "nosniff");
//! assert_eq!(response.headers()["content-security-policy"], "default-src 'none'; frame-ancestors 'none'");
//! assert!(response.headers().get("server").is_none());
//! assert!(response.headers().get("strict-transport-security").is_none()); // not over TLS
//! # });
//! ```
//!
//! ## Nonces for HTML
//!
//! The HTML profile ([`SecureHeadersLayer::html`]) puts a fresh 128-bit nonce from the OS
//! random source into every response's policy (`script-src 'nonce-…' 'strict-dynamic'`) and into
//! the request extensions, where handlers take it with the [`CspNonce`] extractor and stamp it on
//! the inline scripts they wrote. Injected markup cannot guess it, so injected inline scripts do
//! not run. Responses of this profile are `no-store` by default: a cached page would reuse its
//! nonce.
//!
//! # Deployment caveat
//! - Order: the layer must wrap the [`RequestContextLayer`](crate::context::RequestContextLayer)
//!   (be outside it), or the refusals that layer renders go out without the headers.
//!   [`Security`](crate::Security) gets this right.
//! - HSTS binds the whole host (and its subdomains by default) to HTTPS for two years: deploy it
//!   on a host where every subdomain serves HTTPS. Behind a TLS-terminating proxy, HSTS needs
//!   [`trust_forwarded_proto`](SecureHeadersBuilder::trust_forwarded_proto) with the proxy's
//!   networks, and the proxy nearest the service must report the client's scheme (it is the
//!   right-most value that is read).
//! - A policy does not make unescaped output safe; it limits the damage. Keep templates
//!   escaping, and never put the nonce anywhere an attacker's markup could read it back before
//!   the page renders (it is per response, so a leaked nonce is only good for that response).

mod cors;
mod nonce;
mod secure;
mod transport;

pub use cors::{
    Cors, CorsBuilder, CorsLayer, DEFAULT_EXPOSE_HEADERS, DEFAULT_MAX_AGE,
    ResponseFuture as CorsResponseFuture,
};
pub use nonce::CspNonce;
pub use secure::{
    API_CSP, DEFAULT_HSTS_MAX_AGE, HTML_CSP, HTML_PERMISSIONS_POLICY, NONCE_PLACEHOLDER, Profile,
    ResponseFuture, SecureHeaders, SecureHeadersBuilder, SecureHeadersLayer,
};
pub use transport::SecureTransport;

/// The request header that carries the CSRF token.
pub const CSRF_HEADER: &str = "x-csrf-token";
