//! HTTP hardening for browser-reachable services: secure response headers with per-request CSP
//! nonces, CORS presets validated at build time, and CSRF protection for cookie-authenticated
//! routes.
//!
//! ```text
//! client ─► SecureHeaders ─► Cors ─► RequestContext ─► ... ─► Authenticate ─► Csrf ─► router
//! ```
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
//! # CORS
//!
//! [`CorsLayer`] wraps tower-http's `CorsLayer` with presets ([`CorsLayer::bearer_api`],
//! [`CorsLayer::cookie_session`]) and a [`CorsBuilder::build`] that refuses what would expose
//! more than intended: an empty or wildcard origin list (a wildcard only through
//! [`insecure_allow_any_origin`](CorsBuilder::insecure_allow_any_origin), never with
//! credentials), origins with a path, query, user info, fragment or wildcard, plain `http`
//! origins outside loopback, `*` methods or headers, a preflight cache above 24 h. Origins are
//! normalised to the form browsers send (`https://App.example.com:443/` becomes
//! `https://app.example.com`) and compared exactly.
//!
//! A preflight from an allowed origin is answered by the layer, before authentication (browsers
//! never send credentials on a preflight); the request that follows goes through the whole
//! stack and is authenticated like any other. A preflight from another origin, and an `OPTIONS`
//! request that is not a preflight, are handed on to deny-by-default routing and leave without
//! CORS headers, so the browser refuses. [`SecurityBuilder::cors`](crate::SecurityBuilder::cors)
//! places the layer outside the edge, so the refusals the edge renders stay readable by the
//! allowed origin's script.
//!
//! # CSRF
//!
//! [`CsrfLayer`] protects routes authenticated by cookies. For unsafe methods (everything but
//! `GET`, `HEAD`, `OPTIONS`):
//!
//! | request | decision |
//! |---|---|
//! | carries `Authorization` (bearer token, API key...) | pass: browsers never add it on their own, so it cannot be forged cross-site |
//! | `Sec-Fetch-Site: same-origin` or `none` | pass |
//! | `Sec-Fetch-Site: same-site` | 403, unless [`allow_same_site`](CsrfBuilder::allow_same_site) or a trusted origin |
//! | `Sec-Fetch-Site: cross-site` | 403, unless `Origin` is a [trusted origin](CsrfBuilder::trusted_origin) |
//! | no Fetch Metadata (older browsers, non-browser clients) | a trusted `Origin` passes; another site's `Origin` is 403; otherwise the token must check out |
//!
//! The token is a signed double submit: the layer sets an `HttpOnly`, `Secure`,
//! `SameSite=Strict`, `__Host-` cookie holding 16 random bytes and their HMAC-SHA-256 tag under
//! a [`CsrfSecret`] (optionally bound to the session cookie's value), hands the same token to
//! handlers ([`CsrfToken`]) to embed in the page, and requires the page's script to echo it in
//! the [`CSRF_HEADER`] header. Header and cookie must be equal (constant-time comparison) and the
//! tag must verify (constant time), so a cookie planted by a sibling subdomain or another
//! session is refused. Refusals are 403 [`RejectionKind::CrossSiteRequest`](crate::rejection::RejectionKind::CrossSiteRequest),
//! rendered and audited by the edge like every refusal.
//!
//! ```
//! use http::{Method, Request, StatusCode};
//! use portcullis::context::RequestContextLayer;
//! use portcullis::headers::{CsrfLayer, CsrfSecret};
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//!
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! let csrf = CsrfLayer::builder(CsrfSecret::generate().unwrap()).build().unwrap();
//! let svc = ServiceBuilder::new()
//!     .layer(RequestContextLayer::new())
//!     .layer(csrf)
//!     .service(service_fn(|_req: Request<String>| async {
//!         Ok::<_, std::convert::Infallible>(http::Response::new(String::from("done")))
//!     }));
//! let forged = Request::builder()
//!     .method(Method::POST)
//!     .header("cookie", "session=victim")
//!     .header("sec-fetch-site", "cross-site")
//!     .body(String::new())
//!     .unwrap();
//! assert_eq!(svc.clone().oneshot(forged).await.unwrap().status(), StatusCode::FORBIDDEN);
//! let own = Request::builder()
//!     .method(Method::POST)
//!     .header("cookie", "session=victim")
//!     .header("sec-fetch-site", "same-origin")
//!     .body(String::new())
//!     .unwrap();
//! assert_eq!(svc.oneshot(own).await.unwrap().status(), StatusCode::OK);
//! # });
//! ```
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
//! - CORS is enforced by browsers only; it is not access control. A non-browser client ignores
//!   it, so every route still needs its policy. Preflights are answered before the per-IP rate
//!   limit and are not audited (they carry no credential and reach no handler).
//! - CSRF: the layer belongs on cookie-authenticated routes, inside the edge (so its refusals
//!   are rendered and audited). Skipping requests that carry `Authorization` relies on the
//!   authentication layer refusing any `Authorization` header it cannot verify (portcullis's
//!   [`AuthnLayer`](crate::authn::AuthnLayer) does). GET handlers must not change state. With
//!   several replicas, give them the same [`CsrfSecret`]. The `__Host-` cookie needs HTTPS
//!   (browsers also accept it on `http://localhost`).

mod cors;
mod csrf;
mod nonce;
mod secure;
mod transport;

pub use cors::{
    Cors, CorsBuilder, CorsLayer, DEFAULT_EXPOSE_HEADERS, DEFAULT_MAX_AGE,
    ResponseFuture as CorsResponseFuture,
};
pub use csrf::{
    Csrf, CsrfBuilder, CsrfLayer, CsrfSecret, CsrfToken, DEFAULT_CSRF_COOKIE,
    ResponseFuture as CsrfResponseFuture,
};
pub use nonce::CspNonce;
pub use secure::{
    API_CSP, DEFAULT_HSTS_MAX_AGE, HTML_CSP, HTML_PERMISSIONS_POLICY, NONCE_PLACEHOLDER, Profile,
    ResponseFuture, SecureHeaders, SecureHeadersBuilder, SecureHeadersLayer,
};
pub use transport::SecureTransport;

/// The request header that carries the CSRF token.
pub const CSRF_HEADER: &str = "x-csrf-token";
