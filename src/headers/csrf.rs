//! CSRF protection for cookie-authenticated routes: Fetch Metadata first, a signed
//! double-submit token for browsers without it.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use http::header::{self, HeaderValue};
use http::{HeaderMap, Method, Request, Response};
use pin_project_lite::pin_project;
use secrecy::{ExposeSecret, SecretSlice};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use tower_layer::Layer;
use tower_service::Service;

use super::CSRF_HEADER;
use super::cors::normalize_origin;
use crate::error::ConfigError;
use crate::rejection::{Rejection, RejectionKind};

/// Default name of the token cookie. The `__Host-` prefix makes browsers accept it only with
/// `Secure`, `Path=/` and no `Domain`, so a sibling subdomain cannot plant one.
pub const DEFAULT_CSRF_COOKIE: &str = "__Host-portcullis-csrf";

/// Random bytes in a token before its tag.
const NONCE_LEN: usize = 16;
/// HMAC-SHA-256 tag length.
const TAG_LEN: usize = 32;
/// Minimum secret length: 256 bits, the HMAC-SHA-256 key strength.
const MIN_SECRET_LEN: usize = 32;
/// Domain separation for the tag, so the secret cannot be confused with another use.
const TAG_CONTEXT: &[u8] = b"portcullis-csrf-v1";

/// The key that signs CSRF tokens. Redacted in `Debug`, zeroized on drop.
pub struct CsrfSecret(SecretSlice<u8>);

impl CsrfSecret {
    /// A secret from `bytes` (at least 32). Share it between replicas so a token minted by one
    /// is accepted by the others.
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Self, ConfigError> {
        if bytes.len() < MIN_SECRET_LEN {
            return Err(ConfigError::new(format!(
                "CSRF secret must be at least {MIN_SECRET_LEN} bytes"
            )));
        }
        Ok(Self(SecretSlice::from(bytes)))
    }

    /// A random secret for this process only: tokens stop verifying on restart (browsers get a
    /// fresh one on their next `GET`) and are not shared between replicas.
    pub fn generate() -> Result<Self, ConfigError> {
        let mut bytes = vec![0u8; MIN_SECRET_LEN];
        getrandom::fill(&mut bytes)
            .map_err(|_| ConfigError::new("no OS randomness for the CSRF secret"))?;
        Self::from_bytes(bytes)
    }
}

impl fmt::Debug for CsrfSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CsrfSecret([REDACTED])")
    }
}

/// The CSRF token of this request (a request extension set by [`CsrfLayer`]), to put into the
/// page (a `<meta>` tag) or hand to the app's script, which sends it back in the
/// [`CSRF_HEADER`] header of unsafe requests.
///
/// With the feature `axum` it is an extractor; outside a `CsrfLayer` it refuses with 403.
#[derive(Clone, PartialEq, Eq)]
pub struct CsrfToken(Arc<str>);

impl CsrfToken {
    /// The token text (URL-safe base64).
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for CsrfToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CsrfToken([REDACTED])")
    }
}

#[cfg(feature = "axum")]
impl<S: Send + Sync> axum::extract::FromRequestParts<S> for CsrfToken {
    type Rejection = Rejection;

    async fn from_request_parts(
        parts: &mut http::request::Parts,
        _state: &S,
    ) -> Result<Self, Self::Rejection> {
        parts.extensions.get::<CsrfToken>().cloned().ok_or_else(|| {
            Rejection::new(
                RejectionKind::CrossSiteRequest,
                "CsrfToken extracted on a route without CsrfLayer",
            )
        })
    }
}

struct Config {
    secret: CsrfSecret,
    cookie: String,
    session_cookie: Option<String>,
    allow_same_site: bool,
    trusted_origins: Vec<HeaderValue>,
}

/// Refuses cross-site state-changing requests on cookie-authenticated routes, with 403
/// ([`RejectionKind::CrossSiteRequest`]). See the [module docs](super) for the decision table.
#[derive(Clone)]
#[must_use]
pub struct CsrfLayer {
    config: Arc<Config>,
}

impl fmt::Debug for CsrfLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CsrfLayer")
            .field("cookie", &self.config.cookie)
            .field("session_cookie", &self.config.session_cookie)
            .field("allow_same_site", &self.config.allow_same_site)
            .field("trusted_origins", &self.config.trusted_origins)
            .finish_non_exhaustive()
    }
}

impl CsrfLayer {
    /// Starts a layer whose tokens are signed with `secret`.
    pub fn builder(secret: CsrfSecret) -> CsrfBuilder {
        CsrfBuilder {
            secret,
            cookie: DEFAULT_CSRF_COOKIE.to_owned(),
            session_cookie: None,
            allow_same_site: false,
            trusted_origins: Vec::new(),
        }
    }
}

/// Builds a [`CsrfLayer`].
#[derive(Debug)]
#[must_use]
pub struct CsrfBuilder {
    secret: CsrfSecret,
    cookie: String,
    session_cookie: Option<String>,
    allow_same_site: bool,
    trusted_origins: Vec<String>,
}

impl CsrfBuilder {
    /// Accepts `Sec-Fetch-Site: same-site` (another subdomain of the same registrable domain).
    /// Default: refused, since any subdomain (a user-content host, a forgotten staging app) could
    /// then post with the user's cookies.
    pub fn allow_same_site(mut self) -> Self {
        self.allow_same_site = true;
        self
    }

    /// Accepts unsafe requests from `origin` (an app on another origin that is meant to call
    /// this service with cookies; list it in the CORS policy too). Normalised like CORS origins.
    pub fn trusted_origin(mut self, origin: impl Into<String>) -> Self {
        self.trusted_origins.push(origin.into());
        self
    }

    /// The token cookie's name (default [`DEFAULT_CSRF_COOKIE`]). Keep the `__Host-` prefix
    /// unless the service is not served over HTTPS.
    pub fn cookie_name(mut self, name: impl Into<String>) -> Self {
        self.cookie = name.into();
        self
    }

    /// Binds tokens to the value of the session cookie `name`: a token minted for one session
    /// is refused in another, so a token planted by an attacker (from their own session) is
    /// useless. Default: unbound (the token is only tied to the secret).
    pub fn bind_to_session_cookie(mut self, name: impl Into<String>) -> Self {
        self.session_cookie = Some(name.into());
        self
    }

    /// Checks the configuration and builds the layer.
    pub fn build(self) -> Result<CsrfLayer, ConfigError> {
        let valid_name = |name: &str| {
            !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
        };
        if !valid_name(&self.cookie) {
            return Err(ConfigError::new("CSRF cookie name is not a cookie token"));
        }
        if let Some(session) = &self.session_cookie
            && (!valid_name(session) || *session == self.cookie)
        {
            return Err(ConfigError::new(
                "CSRF session cookie name is invalid or equals the token cookie",
            ));
        }
        let mut trusted_origins = Vec::new();
        for origin in &self.trusted_origins {
            let normalized = normalize_origin(origin, false)?;
            let value = HeaderValue::from_str(&normalized)
                .map_err(|_| ConfigError::new(format!("CSRF: invalid origin {origin:?}")))?;
            trusted_origins.push(value);
        }
        Ok(CsrfLayer {
            config: Arc::new(Config {
                secret: self.secret,
                cookie: self.cookie,
                session_cookie: self.session_cookie,
                allow_same_site: self.allow_same_site,
                trusted_origins,
            }),
        })
    }
}

impl<S> Layer<S> for CsrfLayer {
    type Service = Csrf<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Csrf {
            inner,
            config: self.config.clone(),
        }
    }
}

/// The service produced by [`CsrfLayer`].
#[derive(Clone)]
pub struct Csrf<S> {
    inner: S,
    config: Arc<Config>,
}

impl<S: fmt::Debug> fmt::Debug for Csrf<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Csrf")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

/// What the layer decided for one request.
enum Verdict {
    Pass,
    Refuse(&'static str),
}

impl Config {
    fn tag(&self, session: &[u8], nonce: &[u8]) -> Option<Hmac<Sha256>> {
        let mut mac = Hmac::<Sha256>::new_from_slice(self.secret.0.expose_secret()).ok()?;
        mac.update(TAG_CONTEXT);
        mac.update(
            &u64::try_from(session.len())
                .unwrap_or(u64::MAX)
                .to_be_bytes(),
        );
        mac.update(session);
        mac.update(nonce);
        Some(mac)
    }

    fn mint(&self, session: &[u8]) -> Option<String> {
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).ok()?;
        let tag = self.tag(session, &nonce)?.finalize().into_bytes();
        let mut raw = Vec::with_capacity(NONCE_LEN + TAG_LEN);
        raw.extend_from_slice(&nonce);
        raw.extend_from_slice(&tag);
        Some(URL_SAFE_NO_PAD.encode(raw))
    }

    /// Whether `token` carries a valid tag for `session` (constant-time tag comparison).
    fn verify(&self, token: &str, session: &[u8]) -> bool {
        let Ok(raw) = URL_SAFE_NO_PAD.decode(token) else {
            return false;
        };
        if raw.len() != NONCE_LEN + TAG_LEN {
            return false;
        }
        let (nonce, tag) = raw.split_at(NONCE_LEN);
        self.tag(session, nonce)
            .is_some_and(|mac| mac.verify_slice(tag).is_ok())
    }

    fn session<'a>(&self, headers: &'a HeaderMap) -> &'a [u8] {
        match &self.session_cookie {
            Some(name) => match cookie(headers, name) {
                Cookie::One(value) => value.as_bytes(),
                _ => b"",
            },
            None => b"",
        }
    }

    fn is_trusted(&self, headers: &HeaderMap) -> bool {
        headers
            .get(header::ORIGIN)
            .is_some_and(|origin| self.trusted_origins.contains(origin))
    }

    /// The decision table of the module docs.
    fn judge(&self, method: &Method, headers: &HeaderMap) -> Verdict {
        if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
            return Verdict::Pass;
        }
        // Browsers never attach an Authorization header on their own: a request that carries
        // one was built by a script allowed to (same origin, or CORS-approved), not forged.
        if headers.contains_key(header::AUTHORIZATION) {
            return Verdict::Pass;
        }
        match headers.get("sec-fetch-site").map(HeaderValue::as_bytes) {
            Some(b"same-origin" | b"none") => Verdict::Pass,
            Some(b"same-site") if self.allow_same_site || self.is_trusted(headers) => Verdict::Pass,
            Some(b"same-site") => Verdict::Refuse("same-site request (Sec-Fetch-Site)"),
            Some(b"cross-site") if self.is_trusted(headers) => Verdict::Pass,
            Some(b"cross-site") => Verdict::Refuse("cross-site request (Sec-Fetch-Site)"),
            Some(_) => Verdict::Refuse("unknown Sec-Fetch-Site value"),
            // No Fetch Metadata: an older browser, or not a browser.
            None if self.is_trusted(headers) => Verdict::Pass,
            None if headers.contains_key(header::ORIGIN) && !self.same_origin(headers) => {
                Verdict::Refuse("cross-origin request (Origin)")
            }
            None => self.check_token(headers),
        }
    }

    /// `Origin` equals the request's own `Host` (either scheme): used only to refuse early; a
    /// same-origin request without Fetch Metadata still needs the token.
    fn same_origin(&self, headers: &HeaderMap) -> bool {
        let (Some(origin), Some(host)) = (
            headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()),
            headers.get(header::HOST).and_then(|v| v.to_str().ok()),
        ) else {
            return false;
        };
        let authority = origin
            .strip_prefix("https://")
            .or_else(|| origin.strip_prefix("http://"));
        authority.is_some_and(|a| a.eq_ignore_ascii_case(host))
    }

    /// The signed double-submit check: cookie and header carry the same token, and its tag is
    /// ours (for this session when bound).
    fn check_token(&self, headers: &HeaderMap) -> Verdict {
        let Cookie::One(from_cookie) = cookie(headers, &self.cookie) else {
            return Verdict::Refuse("CSRF cookie missing or duplicated");
        };
        let mut from_header = headers.get_all(CSRF_HEADER).iter();
        let (Some(from_header), None) = (from_header.next(), from_header.next()) else {
            return Verdict::Refuse("CSRF header missing or duplicated");
        };
        if !bool::from(from_header.as_bytes().ct_eq(from_cookie.as_bytes())) {
            return Verdict::Refuse("CSRF header and cookie differ");
        }
        if !self.verify(from_cookie, self.session(headers)) {
            return Verdict::Refuse("CSRF token not signed by this service for this session");
        }
        Verdict::Pass
    }

    fn set_cookie(&self, token: &str) -> Option<HeaderValue> {
        // HttpOnly: scripts get the token from the page (CsrfToken), never from the cookie.
        HeaderValue::from_str(&format!(
            "{}={token}; Path=/; Secure; HttpOnly; SameSite=Strict",
            self.cookie
        ))
        .ok()
    }
}

enum Cookie<'a> {
    None,
    One(&'a str),
    Several,
}

/// The value of cookie `name` across every `Cookie` header; two of them (cookie tossing) is
/// reported as such.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Cookie<'a> {
    let mut found = Cookie::None;
    for line in headers.get_all(header::COOKIE) {
        let Ok(text) = line.to_str() else { continue };
        for pair in text.split(';') {
            let Some((key, value)) = pair.trim().split_once('=') else {
                continue;
            };
            if key == name {
                found = match found {
                    Cookie::None => Cookie::One(value.trim_matches('"')),
                    _ => return Cookie::Several,
                };
            }
        }
    }
    found
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for Csrf<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: Default,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, ResBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        if let Verdict::Refuse(why) = self.config.judge(req.method(), req.headers()) {
            let rejection = Rejection::new(RejectionKind::CrossSiteRequest, why);
            return ResponseFuture {
                kind: Kind::Refused {
                    response: Some(rejection.into_deferred_response()),
                },
            };
        }
        // Hand the handler this session's token: the cookie's when valid, a new one otherwise
        // (sent as a cookie with the response).
        let session = self.config.session(req.headers());
        let current = match cookie(req.headers(), &self.config.cookie) {
            Cookie::One(token) if self.config.verify(token, session) => Some(token.to_owned()),
            _ => None,
        };
        let (token, set_cookie) = match current {
            Some(token) => (Some(token), None),
            None => {
                let token = self.config.mint(session);
                let set_cookie = token.as_deref().and_then(|t| self.config.set_cookie(t));
                (token, set_cookie)
            }
        };
        if let Some(token) = token {
            req.extensions_mut().insert(CsrfToken(token.into()));
        }
        ResponseFuture {
            kind: Kind::Inner {
                future: self.inner.call(req),
                set_cookie,
            },
        }
    }
}

pin_project! {
    /// Response future of [`Csrf`].
    pub struct ResponseFuture<F, B> {
        #[pin]
        kind: Kind<F, B>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F, B> {
        Inner { #[pin] future: F, set_cookie: Option<HeaderValue> },
        Refused { response: Option<Response<B>> },
    }
}

impl<F, B> fmt::Debug for ResponseFuture<F, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<F, B, E> Future for ResponseFuture<F, B>
where
    F: Future<Output = Result<Response<B>, E>>,
    B: Default,
{
    type Output = Result<Response<B>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Inner { future, set_cookie } => {
                let mut response = ready!(future.poll(cx))?;
                if let Some(value) = set_cookie.take() {
                    response.headers_mut().append(header::SET_COOKIE, value);
                }
                Poll::Ready(Ok(response))
            }
            KindProj::Refused { response } => {
                Poll::Ready(Ok(response.take().unwrap_or_else(|| {
                    Rejection::new(RejectionKind::CrossSiteRequest, "polled after completion")
                        .into_deferred_response()
                })))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;
    use tower::{ServiceExt, service_fn};

    fn layer() -> CsrfLayer {
        CsrfLayer::builder(CsrfSecret::from_bytes(vec![7; 32]).unwrap())
            .trusted_origin("https://app.example.com")
            .build()
            .unwrap()
    }

    async fn send(layer: &CsrfLayer, req: Request<String>) -> Response<String> {
        layer
            .layer(service_fn(|req: Request<String>| async move {
                let token = req
                    .extensions()
                    .get::<CsrfToken>()
                    .map(|t| t.as_str().to_owned());
                Ok::<_, Infallible>(Response::new(token.unwrap_or_default()))
            }))
            .oneshot(req)
            .await
            .unwrap()
    }

    fn req(method: Method, headers: &[(&str, &str)]) -> Request<String> {
        let mut builder = Request::builder()
            .method(method)
            .uri("/account")
            .header("host", "api.example.com");
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(String::new()).unwrap()
    }

    fn refused(response: &Response<String>) -> bool {
        response.status() == http::StatusCode::FORBIDDEN
            && response
                .extensions()
                .get::<Rejection>()
                .is_some_and(|r| r.kind() == RejectionKind::CrossSiteRequest)
    }

    /// A token minted by the layer on a GET, and the cookie header that carries it.
    async fn issued(layer: &CsrfLayer, extra_cookie: &str) -> (String, String) {
        let cookie_header = extra_cookie.to_owned();
        let mut headers = vec![];
        if !cookie_header.is_empty() {
            headers.push(("cookie", cookie_header.as_str()));
        }
        let response = send(layer, req(Method::GET, &headers)).await;
        let token = response.body().clone();
        let set_cookie = response.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(set_cookie.starts_with(&format!("{DEFAULT_CSRF_COOKIE}={token};")));
        assert!(set_cookie.contains("Secure") && set_cookie.contains("HttpOnly"));
        assert!(set_cookie.contains("SameSite=Strict") && set_cookie.contains("Path=/"));
        let mut cookie = format!("{DEFAULT_CSRF_COOKIE}={token}");
        if !extra_cookie.is_empty() {
            cookie = format!("{extra_cookie}; {cookie}");
        }
        (token, cookie)
    }

    #[tokio::test]
    async fn fetch_metadata_table() {
        let layer = layer();
        type Case<'a> = (Method, &'a [(&'a str, &'a str)], bool);
        let cases: &[Case<'_>] = &[
            (Method::GET, &[("sec-fetch-site", "cross-site")], true),
            (Method::HEAD, &[("sec-fetch-site", "cross-site")], true),
            (Method::POST, &[("sec-fetch-site", "same-origin")], true),
            (Method::POST, &[("sec-fetch-site", "none")], true),
            (Method::POST, &[("sec-fetch-site", "cross-site")], false),
            (Method::DELETE, &[("sec-fetch-site", "cross-site")], false),
            (Method::PUT, &[("sec-fetch-site", "same-site")], false),
            (Method::PATCH, &[("sec-fetch-site", "bogus")], false),
            (
                Method::POST,
                &[
                    ("sec-fetch-site", "cross-site"),
                    ("origin", "https://app.example.com"),
                ],
                true,
            ),
            (
                Method::POST,
                &[
                    ("sec-fetch-site", "cross-site"),
                    ("origin", "https://evil.example"),
                ],
                false,
            ),
            // Bearer-token requests are not CSRF-able.
            (
                Method::POST,
                &[
                    ("sec-fetch-site", "cross-site"),
                    ("authorization", "Bearer x"),
                ],
                true,
            ),
            // No metadata, no token.
            (Method::POST, &[], false),
            (Method::POST, &[("origin", "https://evil.example")], false),
            (Method::POST, &[("origin", "https://app.example.com")], true),
        ];
        for (method, headers, pass) in cases {
            let response = send(&layer, req(method.clone(), headers)).await;
            assert_eq!(!refused(&response), *pass, "{method} {headers:?}");
        }
        let same_site = CsrfLayer::builder(CsrfSecret::generate().unwrap())
            .allow_same_site()
            .build()
            .unwrap();
        let response = send(
            &same_site,
            req(Method::POST, &[("sec-fetch-site", "same-site")]),
        )
        .await;
        assert!(!refused(&response));
    }

    #[tokio::test]
    async fn double_submit_token_for_browsers_without_fetch_metadata() {
        let layer = layer();
        let (token, cookie) = issued(&layer, "").await;
        // The issued token round-trips; the GET that carried it is not re-issued.
        let response = send(&layer, req(Method::GET, &[("cookie", &cookie)])).await;
        assert_eq!(response.body(), &token);
        assert!(response.headers().get("set-cookie").is_none());

        let ok = send(
            &layer,
            req(Method::POST, &[("cookie", &cookie), (CSRF_HEADER, &token)]),
        )
        .await;
        assert!(!refused(&ok));

        let other = CsrfLayer::builder(CsrfSecret::from_bytes(vec![8; 32]).unwrap())
            .build()
            .unwrap();
        let (forged, forged_cookie) = issued(&other, "").await;
        let mut tampered = token.clone().into_bytes();
        tampered[5] = if tampered[5] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(tampered).unwrap();
        let tampered_cookie = format!("{DEFAULT_CSRF_COOKIE}={tampered}");
        let twice = format!("{cookie}; {DEFAULT_CSRF_COOKIE}={token}");
        let bad: &[&[(&str, &str)]] = &[
            &[("cookie", &cookie)],
            &[(CSRF_HEADER, &token)],
            &[("cookie", &cookie), (CSRF_HEADER, "x")],
            &[("cookie", &cookie), (CSRF_HEADER, &forged)],
            // Another service's (or secret's) token, submitted consistently.
            &[("cookie", &forged_cookie), (CSRF_HEADER, &forged)],
            &[("cookie", &tampered_cookie), (CSRF_HEADER, &tampered)],
            &[("cookie", &twice), (CSRF_HEADER, &token)],
            &[
                ("cookie", &cookie),
                (CSRF_HEADER, &token),
                (CSRF_HEADER, &token),
            ],
        ];
        for headers in bad {
            let response = send(&layer, req(Method::POST, headers)).await;
            assert!(refused(&response), "{headers:?}");
            assert!(response.body().is_empty());
        }
    }

    #[tokio::test]
    async fn tokens_bound_to_the_session() {
        let layer = CsrfLayer::builder(CsrfSecret::from_bytes(vec![9; 32]).unwrap())
            .bind_to_session_cookie("sid")
            .build()
            .unwrap();
        let (token, cookie) = issued(&layer, "sid=alice-session").await;
        let post = |cookie: String, token: String| {
            let layer = layer.clone();
            async move {
                send(
                    &layer,
                    req(Method::POST, &[("cookie", &cookie), (CSRF_HEADER, &token)]),
                )
                .await
            }
        };
        assert!(!refused(&post(cookie.clone(), token.clone()).await));
        // The attacker's own valid token, planted next to the victim's session, is refused.
        let victim = format!("sid=victim-session; {DEFAULT_CSRF_COOKIE}={token}");
        assert!(refused(&post(victim, token.clone()).await));
        // A new session gets a new token on its next GET.
        let (fresh, _) = issued(&layer, "sid=victim-session").await;
        assert_ne!(fresh, token);
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_tokens_and_cookies_never_verify_or_panic(
            token in "[A-Za-z0-9_=;\" -]{0,80}",
            cookies in "[A-Za-z0-9_=;\" -]{0,120}",
        ) {
            let layer = layer();
            proptest::prop_assert!(!layer.config.verify(&token, b""));
            let mut headers = HeaderMap::new();
            if let Ok(value) = HeaderValue::from_str(&cookies) {
                headers.insert(header::COOKIE, value);
            }
            if let Ok(value) = HeaderValue::from_str(&token) {
                headers.insert(CSRF_HEADER, value);
            }
            let verdict = layer.config.judge(&Method::POST, &headers);
            proptest::prop_assert!(matches!(verdict, Verdict::Refuse(_)));
        }
    }

    #[test]
    fn configuration_and_secrets() {
        assert!(CsrfSecret::from_bytes(vec![1; 31]).is_err());
        let secret = CsrfSecret::from_bytes(b"0123456789abcdef0123456789abcdef".to_vec()).unwrap();
        assert!(!format!("{secret:?}").contains("0123"));
        let layer = CsrfLayer::builder(secret).build().unwrap();
        assert!(!format!("{layer:?}").contains("0123"));
        let token = layer.config.mint(b"").unwrap();
        assert!(!format!("{:?}", CsrfToken(token.clone().into())).contains(&token));
        let bad = [
            CsrfLayer::builder(CsrfSecret::generate().unwrap()).cookie_name("a b"),
            CsrfLayer::builder(CsrfSecret::generate().unwrap()).cookie_name(""),
            CsrfLayer::builder(CsrfSecret::generate().unwrap())
                .bind_to_session_cookie(DEFAULT_CSRF_COOKIE),
            CsrfLayer::builder(CsrfSecret::generate().unwrap()).trusted_origin("*"),
            CsrfLayer::builder(CsrfSecret::generate().unwrap())
                .trusted_origin("http://evil.example"),
        ];
        for builder in bad {
            assert!(builder.build().is_err());
        }
    }
}
