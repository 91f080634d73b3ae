//! Authentication: who is calling.
//!
//! An [`Authenticator`] looks at the request head and answers one of three things:
//! `Ok(Some(principal))` (my credential, valid), `Ok(None)` (no credential of mine here) or
//! `Err(rejection)` (my credential, invalid). [`AuthnLayer`] runs its authenticators in order:
//!
//! - the one whose credential is present decides; a present but invalid credential is refused
//!   with 401 and never falls through to anonymous;
//! - several credentials in one request (two `Authorization` headers, a bearer token and an API
//!   key) are refused with 400 `invalid_request`;
//! - an `Authorization` header that no authenticator understands is refused with 401;
//! - no credential at all means anonymous: the request continues without a [`Principal`], and
//!   the route's policy decides whether anonymous callers may pass.
//!
//! On success the [`Principal`] is inserted into the request extensions (handlers extract it)
//! and into the response extensions (the audit event names the subject).
//!
//! ```
//! use http::{Request, StatusCode};
//! use portcullis::authn::{AuthFuture, Authenticator, AuthnLayer};
//! use portcullis::context::RequestContextLayer;
//! use portcullis::principal::{AuthMethod, Principal};
//! use portcullis::rejection::Rejection;
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//!
//! /// Accepts `x-demo-user: <name>`; refuses an empty name.
//! #[derive(Debug)]
//! struct DemoHeader;
//!
//! impl Authenticator for DemoHeader {
//!     fn authenticate<'a>(&'a self, parts: &'a http::request::Parts) -> AuthFuture<'a> {
//!         let result = match parts.headers.get("x-demo-user").map(|v| v.to_str()) {
//!             None => Ok(None),
//!             Some(Ok(name)) if !name.is_empty() => Ok(Some(
//!                 Principal::builder(name, AuthMethod::Other("demo".into())).build(),
//!             )),
//!             Some(_) => Err(Rejection::invalid_credential("empty demo user")),
//!         };
//!         Box::pin(std::future::ready(result))
//!     }
//! }
//!
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! let svc = ServiceBuilder::new()
//!     .layer(RequestContextLayer::new())
//!     .layer(AuthnLayer::new(DemoHeader))
//!     .service(service_fn(|req: Request<String>| async move {
//!         let who = req.extensions().get::<Principal>().map(|p| p.subject().to_owned());
//!         Ok::<_, std::convert::Infallible>(http::Response::new(who.unwrap_or_default()))
//!     }));
//!
//! let ok = svc.clone()
//!     .oneshot(Request::builder().header("x-demo-user", "alice").body(String::new()).unwrap())
//!     .await.unwrap();
//! assert_eq!(ok.status(), StatusCode::OK);
//!
//! let bad = svc
//!     .oneshot(Request::builder().header("x-demo-user", "").body(String::new()).unwrap())
//!     .await.unwrap();
//! assert_eq!(bad.status(), StatusCode::UNAUTHORIZED);
//! # });
//! ```
//!
//! # Deployment caveat
//! Authentication only establishes identity. Without an authorization guard
//! ([`SecureRouter`](crate::routing::SecureRouter) or your own policy check) anonymous requests
//! pass straight through.

pub mod api_key;
#[cfg(feature = "oidc")]
pub mod introspection;
#[cfg(feature = "jwt")]
pub mod jwt;
#[cfg(feature = "tls")]
pub mod mtls;
#[cfg(feature = "oidc")]
pub mod oidc;
pub mod protected_resource;
pub mod revocation;

#[cfg(feature = "redis")]
pub use revocation::RedisRevocationStore;
pub use revocation::{MemoryRevocationStore, Revocation, RevocationStore};

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::header::AUTHORIZATION;
use http::request::Parts;
use http::{Request, Response};
use tower_layer::Layer;
use tower_service::Service;

use crate::principal::Principal;
use crate::rejection::Rejection;

/// The future an [`Authenticator`] returns.
pub type AuthFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Option<Principal>, Rejection>> + Send + 'a>>;

/// Turns a credential in the request head into a [`Principal`].
///
/// Implementations must return `Ok(None)` quickly when their credential is absent, must never
/// put credential material into a rejection's detail, and should claim an `Authorization`
/// scheme only if they understand it.
pub trait Authenticator: Send + Sync + fmt::Debug + 'static {
    /// Authenticates the request head. See the [module docs](self) for the three outcomes.
    fn authenticate<'a>(&'a self, parts: &'a Parts) -> AuthFuture<'a>;

    /// Answers without waiting when the authenticator can (a cached token, static keys, an
    /// in-memory store): `Some(outcome)` must be exactly what [`authenticate`](Self::authenticate)
    /// would return. `None` (the default) means only `authenticate` can tell.
    ///
    /// [`AuthnLayer`] asks every authenticator this first; when all of them answer, the request
    /// goes on without a boxed future. When one cannot, all run through `authenticate`, so an
    /// implementation must not count or log an attempt in this method (the attempt may be
    /// evaluated twice).
    fn authenticate_now(&self, parts: &Parts) -> Option<Result<Option<Principal>, Rejection>> {
        let _ = parts;
        None
    }
}

impl<A: Authenticator + ?Sized> Authenticator for Arc<A> {
    fn authenticate<'a>(&'a self, parts: &'a Parts) -> AuthFuture<'a> {
        (**self).authenticate(parts)
    }
    fn authenticate_now(&self, parts: &Parts) -> Option<Result<Option<Principal>, Rejection>> {
        (**self).authenticate_now(parts)
    }
}

/// Runs authenticators in front of a service. See the [module docs](self).
#[derive(Clone)]
#[must_use]
pub struct AuthnLayer {
    authenticators: Arc<[Arc<dyn Authenticator>]>,
}

impl fmt::Debug for AuthnLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthnLayer")
            .field("authenticators", &self.authenticators)
            .finish()
    }
}

impl AuthnLayer {
    /// A layer with one authenticator.
    pub fn new(authenticator: impl Authenticator) -> Self {
        Self {
            authenticators: Arc::from(vec![Arc::new(authenticator) as Arc<dyn Authenticator>]),
        }
    }

    /// A layer with several authenticators, tried in order.
    pub fn from_authenticators(authenticators: Vec<Arc<dyn Authenticator>>) -> Self {
        Self {
            authenticators: Arc::from(authenticators),
        }
    }

    /// Adds another authenticator after the existing ones.
    pub fn with(self, authenticator: impl Authenticator) -> Self {
        let mut all: Vec<_> = self.authenticators.iter().cloned().collect();
        all.push(Arc::new(authenticator));
        Self::from_authenticators(all)
    }
}

impl<S> Layer<S> for AuthnLayer {
    type Service = Authn<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Authn {
            inner,
            authenticators: self.authenticators.clone(),
        }
    }
}

/// The service produced by [`AuthnLayer`].
#[derive(Clone)]
pub struct Authn<S> {
    inner: S,
    authenticators: Arc<[Arc<dyn Authenticator>]>,
}

impl<S: fmt::Debug> fmt::Debug for Authn<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authn")
            .field("inner", &self.inner)
            .field("authenticators", &self.authenticators.len())
            .finish()
    }
}

/// Runs every authenticator against `parts` and applies the one-credential rule.
pub async fn authenticate(
    authenticators: &[Arc<dyn Authenticator>],
    parts: &Parts,
) -> Result<Option<Principal>, Rejection> {
    let has_authorization = single_authorization(parts)?;
    let mut decided = Decided::default();
    for authenticator in authenticators {
        decided.add(authenticator.authenticate(parts).await)?;
    }
    decided.finish(has_authorization)
}

/// [`authenticate`] without waiting: `None` when an authenticator can only answer
/// asynchronously.
pub fn authenticate_now(
    authenticators: &[Arc<dyn Authenticator>],
    parts: &Parts,
) -> Option<Result<Option<Principal>, Rejection>> {
    let has_authorization = match single_authorization(parts) {
        Ok(present) => present,
        Err(rejection) => return Some(Err(rejection)),
    };
    let mut decided = Decided::default();
    for authenticator in authenticators {
        if let Err(rejection) = decided.add(authenticator.authenticate_now(parts)?) {
            return Some(Err(rejection));
        }
    }
    Some(decided.finish(has_authorization))
}

/// Whether an `Authorization` header is present; more than one is refused.
fn single_authorization(parts: &Parts) -> Result<bool, Rejection> {
    let mut authorization = parts.headers.get_all(AUTHORIZATION).iter();
    let present = authorization.next().is_some();
    if authorization.next().is_some() {
        return Err(Rejection::invalid_credential_request(
            "more than one Authorization header",
        ));
    }
    Ok(present)
}

/// The one-credential rule, applied as the authenticators answer.
#[derive(Default)]
struct Decided(Option<Result<Principal, Rejection>>);

impl Decided {
    fn add(&mut self, outcome: Result<Option<Principal>, Rejection>) -> Result<(), Rejection> {
        let outcome = match outcome {
            Ok(None) => return Ok(()),
            Ok(Some(principal)) => Ok(principal),
            Err(rejection) => Err(rejection),
        };
        if self.0.is_some() {
            return Err(Rejection::invalid_credential_request(
                "more than one credential presented",
            ));
        }
        self.0 = Some(outcome);
        Ok(())
    }

    fn finish(self, has_authorization: bool) -> Result<Option<Principal>, Rejection> {
        match self.0 {
            Some(outcome) => outcome.map(Some),
            None if has_authorization => Err(Rejection::invalid_credential(
                "unsupported Authorization scheme",
            )),
            None => Ok(None),
        }
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for Authn<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send,
    ReqBody: Send + 'static,
    ResBody: Default + Send + 'static,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, ResBody, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let (mut parts, body) = req.into_parts();
        // The common case (cached token, static keys, in-memory stores) decides here and calls
        // the inner service directly, with no boxed future.
        let started = std::time::Instant::now();
        if let Some(outcome) = authenticate_now(&self.authenticators, &parts) {
            observe(&parts, &outcome, started.elapsed());
            return match outcome {
                Ok(Some(principal)) => {
                    parts.extensions.insert(principal.clone());
                    let future = self.inner.call(Request::from_parts(parts, body));
                    ResponseFuture::inner(future, Some(principal))
                }
                Ok(None) => {
                    ResponseFuture::inner(self.inner.call(Request::from_parts(parts, body)), None)
                }
                Err(rejection) => ResponseFuture::refused(rejection.into_deferred_response()),
            };
        }
        // Take the service that was driven to readiness; leave a fresh clone in its place.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let authenticators = self.authenticators.clone();
        ResponseFuture::waiting(Box::pin(async move {
            let started = std::time::Instant::now();
            let outcome = authenticate(&authenticators, &parts).await;
            observe(&parts, &outcome, started.elapsed());
            match outcome {
                Ok(Some(principal)) => {
                    parts.extensions.insert(principal.clone());
                    let mut response = inner.call(Request::from_parts(parts, body)).await?;
                    response.extensions_mut().insert(principal);
                    Ok(response)
                }
                Ok(None) => inner.call(Request::from_parts(parts, body)).await,
                Err(rejection) => Ok(rejection.into_deferred_response()),
            }
        }))
    }
}

type BoxedResponse<B, E> = Pin<Box<dyn Future<Output = Result<Response<B>, E>> + Send>>;

pin_project_lite::pin_project! {
    /// Response future of [`Authn`].
    pub struct ResponseFuture<F, B, E> {
        #[pin]
        state: State<F, B, E>,
    }
}

pin_project_lite::pin_project! {
    #[project = StateProj]
    enum State<F, B, E> {
        Inner { #[pin] future: F, principal: Option<Principal> },
        Refused { response: Option<Response<B>> },
        Waiting { future: BoxedResponse<B, E> },
    }
}

impl<F, B, E> ResponseFuture<F, B, E> {
    fn inner(future: F, principal: Option<Principal>) -> Self {
        Self {
            state: State::Inner { future, principal },
        }
    }
    fn refused(response: Response<B>) -> Self {
        Self {
            state: State::Refused {
                response: Some(response),
            },
        }
    }
    fn waiting(future: BoxedResponse<B, E>) -> Self {
        Self {
            state: State::Waiting { future },
        }
    }
}

impl<F, B, E> fmt::Debug for ResponseFuture<F, B, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<F, B, E> Future for ResponseFuture<F, B, E>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<B>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Inner { future, principal } => {
                let mut response = std::task::ready!(future.poll(cx))?;
                // The audit event at the edge names the subject from the response.
                if let Some(principal) = principal.take() {
                    response.extensions_mut().insert(principal);
                }
                Poll::Ready(Ok(response))
            }
            StateProj::Refused { response } => match response.take() {
                Some(response) => Poll::Ready(Ok(response)),
                // Polled after completion, which a caller must not do: stay pending, never panic.
                None => Poll::Pending,
            },
            StateProj::Waiting { future } => future.as_mut().poll(cx),
        }
    }
}

/// Counts a verification in the metrics and records `authn.success` when the auditor keeps it.
fn observe(
    parts: &Parts,
    outcome: &Result<Option<Principal>, Rejection>,
    elapsed: std::time::Duration,
) {
    let seconds = elapsed.as_secs_f64();
    match outcome {
        Ok(None) => {}
        Ok(Some(principal)) => {
            crate::audit::metrics::authn(principal.auth_method().name(), true, seconds);
            let auditor = parts
                .extensions
                .get::<crate::audit::Auditor>()
                .unwrap_or_else(|| crate::audit::global());
            if auditor.wants_authn_success() {
                let mut event =
                    crate::audit::AuditEvent::new(crate::audit::EventType::AuthnSuccess)
                        .with_principal(principal.clone());
                if let Some(context) = parts.extensions.get::<crate::context::RequestContext>() {
                    event.request_id = Some(context.request_id);
                    event.client_ip = context.client_ip;
                }
                event.method = Some(parts.method.clone());
                event.duration = Some(elapsed);
                auditor.record(event);
            }
        }
        Err(_) => crate::audit::metrics::authn("none", false, seconds),
    }
}

/// Extracts the token of an `Authorization: Bearer <token>` header.
///
/// Returns `Ok(None)` when there is no `Authorization` header or it uses another scheme,
/// `Err` when it says `Bearer` but the token is empty or not a valid RFC 6750 `b64token`.
pub fn bearer_token(parts: &Parts) -> Result<Option<&str>, Rejection> {
    match bearer_token_bytes(parts)? {
        Some(token) => b64token_str(token).map(Some),
        None => Ok(None),
    }
}

/// The first half of [`bearer_token`]: the scheme and emptiness checks, in the same order, and
/// the trimmed token bytes **not yet checked** with [`b64token_str`]. A caller must run that
/// check before using the bytes, unless it recognizes them as bytes that passed it before (the
/// JWT authenticator's verified-token cache, keyed by their SHA-256 digest).
pub(crate) fn bearer_token_bytes(parts: &Parts) -> Result<Option<&[u8]>, Rejection> {
    let Some(value) = parts.headers.get(AUTHORIZATION) else {
        return Ok(None);
    };
    let Some((scheme, rest)) = value.as_bytes().split_first_chunk::<6>() else {
        return Ok(None);
    };
    if !is_bearer_scheme(*scheme) {
        return Ok(None);
    }
    if rest.is_empty() {
        return Err(Rejection::invalid_credential_request("empty bearer token"));
    }
    if rest[0] != b' ' {
        // `BearerX...` is another scheme name, not ours.
        return Ok(None);
    }
    let token = trim_spaces(&rest[1..]);
    if token.is_empty() {
        return Err(Rejection::invalid_credential_request("empty bearer token"));
    }
    Ok(Some(token))
}

/// The second half of [`bearer_token`]: refuses a token that is not an RFC 6750 `b64token`.
pub(crate) fn b64token_str(token: &[u8]) -> Result<&str, Rejection> {
    if !is_b64token(token) {
        return Err(Rejection::invalid_credential_request(
            "bearer token has characters outside b64token",
        ));
    }
    // b64token is ASCII, so this cannot fail; map defensively anyway.
    std::str::from_utf8(token)
        .map_err(|_| Rejection::invalid_credential_request("bearer token is not ASCII"))
}

/// Whether `scheme` is `bearer` in any case, as `eq_ignore_ascii_case` would say, in one
/// comparison: setting bit 0x20 lowers an ASCII capital letter, and a byte becomes a lower-case
/// letter that way only if it is that letter in either case.
#[inline]
fn is_bearer_scheme(scheme: [u8; 6]) -> bool {
    let [a, b, c, d, e, f] = scheme;
    let lowered = u64::from_le_bytes([a, b, c, d, e, f, 0, 0]) | 0x2020_2020_2020;
    lowered == u64::from_le_bytes(*b"bearer\0\0")
}

fn trim_spaces(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|b| *b != b' ').unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| *b != b' ')
        .map_or(start, |i| i + 1);
    &bytes[start..end]
}

/// Whether `b` is an RFC 6750 `b64token` body character. Comparisons only (no table), so a loop
/// over a token's bytes vectorizes: the check runs on every request.
#[inline]
fn is_b64token_char(b: u8) -> bool {
    // ASCII letters differ from their lower case in bit 0x20 only; no other byte maps into a..=z.
    let lower = b | 0x20;
    lower.is_ascii_lowercase()
        | b.is_ascii_digit()
        | (b == b'-')
        | (b == b'.')
        | (b == b'_')
        | (b == b'~')
        | (b == b'+')
        | (b == b'/')
}

/// RFC 6750 `b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="`.
pub(crate) fn is_b64token(token: &[u8]) -> bool {
    let body_end = token.iter().rposition(|b| *b != b'=').map_or(0, |i| i + 1);
    // `fold` with `&` (not `all`) has no early exit, so the loop vectorizes; tokens are valid in
    // the common case, so there is nothing to exit early for.
    body_end > 0
        && token[..body_end]
            .iter()
            .fold(true, |ok, b| ok & is_b64token_char(*b))
}

#[cfg(feature = "axum")]
mod extract {
    use axum::extract::{FromRequestParts, OptionalFromRequestParts};
    use http::request::Parts;

    use crate::principal::Principal;
    use crate::rejection::Rejection;

    /// Requires an authenticated caller: refuses with 401 when the request is anonymous.
    impl<S: Send + Sync> FromRequestParts<S> for Principal {
        type Rejection = Rejection;

        async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Rejection> {
            parts
                .extensions
                .get::<Principal>()
                .cloned()
                .ok_or_else(Rejection::missing_credential)
        }
    }

    /// `Option<Principal>`: `None` for anonymous callers.
    impl<S: Send + Sync> OptionalFromRequestParts<S> for Principal {
        type Rejection = std::convert::Infallible;

        async fn from_request_parts(
            parts: &mut Parts,
            _state: &S,
        ) -> Result<Option<Self>, Self::Rejection> {
            Ok(parts.extensions.get::<Principal>().cloned())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn b64token_characters_are_exactly_rfc_6750s() {
        for b in 0..=255u8 {
            let expected =
                b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'+' | b'/');
            assert_eq!(is_b64token_char(b), expected, "byte {b:#04x}");
        }
        assert!(is_b64token(b"abc.DEF-_~+/09=="));
        assert!(!is_b64token(b"==="));
        assert!(!is_b64token(b"a=b"));
        // A bad byte anywhere in a long token, past any vector width.
        let mut long = vec![b'a'; 1000];
        assert!(is_b64token(&long));
        long[997] = b'@';
        assert!(!is_b64token(&long));
    }

    #[test]
    fn bearer_scheme_check_matches_eq_ignore_ascii_case() {
        // Each byte is compared on its own, so every byte value at every position, around
        // every mix of cases, covers all inputs.
        for case_mask in 0..64u32 {
            let base: Vec<u8> = b"bearer"
                .iter()
                .enumerate()
                .map(|(i, b)| {
                    if case_mask & (1 << i) != 0 {
                        b.to_ascii_uppercase()
                    } else {
                        *b
                    }
                })
                .collect();
            for position in 0..6 {
                for byte in 0..=255u8 {
                    let mut scheme: [u8; 6] = base.clone().try_into().unwrap();
                    scheme[position] = byte;
                    assert_eq!(
                        is_bearer_scheme(scheme),
                        scheme.eq_ignore_ascii_case(b"bearer"),
                        "{scheme:?}"
                    );
                }
            }
        }
    }

    fn parts(values: &[&str]) -> Parts {
        let mut builder = Request::builder();
        for v in values {
            builder = builder.header(AUTHORIZATION, *v);
        }
        builder.body(()).unwrap().into_parts().0
    }

    /// Accepts `x-user: <name>`, refuses an empty name; answers at once only when `sync`.
    #[derive(Debug)]
    struct HeaderUser {
        header: &'static str,
        sync: bool,
    }

    impl HeaderUser {
        fn outcome(&self, parts: &Parts) -> Result<Option<Principal>, Rejection> {
            match parts.headers.get(self.header).map(|v| v.to_str()) {
                None => Ok(None),
                Some(Ok(name)) if !name.is_empty() => Ok(Some(
                    Principal::builder(name, crate::principal::AuthMethod::Other("test".into()))
                        .build(),
                )),
                Some(_) => Err(Rejection::invalid_credential("empty user")),
            }
        }
    }

    impl Authenticator for HeaderUser {
        fn authenticate<'a>(&'a self, parts: &'a Parts) -> AuthFuture<'a> {
            Box::pin(std::future::ready(self.outcome(parts)))
        }
        fn authenticate_now(&self, parts: &Parts) -> Option<Result<Option<Principal>, Rejection>> {
            self.sync.then(|| self.outcome(parts))
        }
    }

    #[tokio::test]
    async fn immediate_and_asynchronous_paths_decide_alike() {
        use tower::{ServiceExt, service_fn};

        let echo = service_fn(|req: Request<String>| async move {
            let who = req
                .extensions()
                .get::<Principal>()
                .map(|p| p.subject().to_owned());
            Ok::<_, std::convert::Infallible>(Response::new(who.unwrap_or_default()))
        });
        type Case<'a> = (&'a [(&'a str, &'a str)], Option<&'a str>, http::StatusCode);
        let cases: [Case; 6] = [
            (&[], Some(""), http::StatusCode::OK),
            (&[("x-a", "alice")], Some("alice"), http::StatusCode::OK),
            (&[("x-b", "bob")], Some("bob"), http::StatusCode::OK),
            (&[("x-a", "")], None, http::StatusCode::UNAUTHORIZED),
            (
                &[("x-a", "alice"), ("x-b", "bob")],
                None,
                http::StatusCode::BAD_REQUEST,
            ),
            (
                &[("authorization", "Basic eA==")],
                None,
                http::StatusCode::UNAUTHORIZED,
            ),
        ];
        // Both immediate, both asynchronous, and one of each (which takes the slow path).
        for (sync_a, sync_b) in [(true, true), (false, false), (true, false)] {
            let layer = AuthnLayer::new(HeaderUser {
                header: "x-a",
                sync: sync_a,
            })
            .with(HeaderUser {
                header: "x-b",
                sync: sync_b,
            });
            for (headers, subject, status) in cases {
                let mut builder = Request::builder();
                for (name, value) in headers {
                    builder = builder.header(*name, *value);
                }
                let response = layer
                    .layer(echo)
                    .oneshot(builder.body(String::new()).unwrap())
                    .await
                    .unwrap();
                assert_eq!(response.status(), status, "{headers:?} {sync_a} {sync_b}");
                if let Some(subject) = subject {
                    assert_eq!(response.body(), subject);
                    assert_eq!(
                        response
                            .extensions()
                            .get::<Principal>()
                            .map(|p| p.subject()),
                        (!subject.is_empty()).then_some(subject),
                        "the principal reaches the response for the audit event"
                    );
                }
            }
        }
    }

    #[test]
    fn bearer_parsing_table() {
        let ok = [
            ("Bearer abc.def.ghi", "abc.def.ghi"),
            ("bearer abc", "abc"),
            ("BEARER  a-b_c~d+e/f==", "a-b_c~d+e/f=="),
        ];
        for (header, token) in ok {
            assert_eq!(
                bearer_token(&parts(&[header])).unwrap(),
                Some(token),
                "{header}"
            );
        }
        for other in ["Basic dXNlcjpwYXNz", "Bearerabc", "ApiKey x"] {
            assert_eq!(bearer_token(&parts(&[other])).unwrap(), None, "{other}");
        }
        for bad in [
            "Bearer",
            "Bearer ",
            "Bearer a b",
            "Bearer ===",
            "Bearer a\"b",
            "Bearer é",
        ] {
            let Ok(value) = http::HeaderValue::from_bytes(bad.as_bytes()) else {
                continue;
            };
            let mut p = parts(&[]);
            p.headers.insert(AUTHORIZATION, value);
            let err = bearer_token(&p).unwrap_err();
            assert_eq!(err.status(), http::StatusCode::BAD_REQUEST, "{bad}");
        }
        assert_eq!(bearer_token(&parts(&[])).unwrap(), None);
    }
}
