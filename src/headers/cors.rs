//! CORS presets on tower-http's `CorsLayer`, validated when built.

use std::fmt;
use std::future::Future;
use std::net::{IpAddr, Ipv6Addr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use http::header::{self, HeaderName, HeaderValue};
use http::{Method, Request, Response};
use pin_project_lite::pin_project;
use tower_http::cors as th;
use tower_layer::Layer;
use tower_service::Service;

use crate::error::ConfigError;

/// Default preflight cache lifetime: ten minutes.
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(600);
/// Longest preflight cache lifetime accepted (browsers cap it at 2 h or 24 h anyway).
const MAX_MAX_AGE: Duration = Duration::from_secs(24 * 3600);

/// The response headers the presets let cross-origin scripts read: the request id (to quote to
/// an operator) and the rate-limit headers.
pub const DEFAULT_EXPOSE_HEADERS: [&str; 4] = [
    "x-request-id",
    "retry-after",
    "ratelimit",
    "ratelimit-policy",
];

/// Which cross-origin callers a browser lets read responses. Built by a [`CorsBuilder`], whose
/// `build()` checks the whole policy; see the [module docs](super) for the rules.
///
/// Requests without `Origin`, and same-origin requests, are unaffected (CORS only relaxes the
/// browser's same-origin policy). A preflight (`OPTIONS` with `Origin` and
/// `Access-Control-Request-Method`) from an allowed origin is answered here, before
/// authentication, as browsers never send credentials on preflights; the real request that
/// follows goes through the whole stack. A preflight from any other origin is handed on like
/// any `OPTIONS` request (deny-by-default routing refuses it) and gets no CORS headers.
#[derive(Clone)]
#[must_use]
pub struct CorsLayer {
    inner: th::CorsLayer,
    origins: Arc<[HeaderValue]>,
    any_origin: bool,
}

impl fmt::Debug for CorsLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CorsLayer")
            .field("origins", &self.origins)
            .field("any_origin", &self.any_origin)
            .finish_non_exhaustive()
    }
}

impl CorsLayer {
    /// An empty policy: add origins, methods and headers, then [`build`](CorsBuilder::build).
    pub fn builder() -> CorsBuilder {
        CorsBuilder {
            origins: Vec::new(),
            methods: Vec::new(),
            allow_headers: Vec::new(),
            expose_headers: Vec::new(),
            credentials: false,
            max_age: DEFAULT_MAX_AGE,
            any_origin: false,
            plain_http: false,
        }
    }

    /// Preset for a bearer-token API called from browser apps on other origins: methods `GET`,
    /// `POST`, `PUT`, `PATCH`, `DELETE`; request headers `authorization`, `content-type`;
    /// [`DEFAULT_EXPOSE_HEADERS`] readable; no cookies (`credentials` off: the token travels in
    /// `Authorization`, which the app sets itself). Add the origins.
    pub fn bearer_api() -> CorsBuilder {
        Self::builder()
            .allow_methods([
                Method::GET,
                Method::POST,
                Method::PUT,
                Method::PATCH,
                Method::DELETE,
            ])
            .allow_headers(["authorization", "content-type"])
            .expose_headers(DEFAULT_EXPOSE_HEADERS)
    }

    /// Preset for a cookie-session API called from a few trusted origins: the
    /// [`bearer_api`](Self::bearer_api) methods, request headers `content-type` and the CSRF
    /// token header ([`CSRF_HEADER`](super::CSRF_HEADER)), credentials (cookies) on. Pair it with
    /// [`CsrfLayer`](super::CsrfLayer) and list the same origins there as trusted.
    pub fn cookie_session() -> CorsBuilder {
        Self::bearer_api()
            .clear_allow_headers()
            .allow_headers(["content-type", super::CSRF_HEADER])
            .allow_credentials()
    }
}

impl<S> Layer<S> for CorsLayer {
    type Service = Cors<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Cors {
            inner: self.inner.layer(inner),
            origins: self.origins.clone(),
            any_origin: self.any_origin,
        }
    }
}

/// Builds a [`CorsLayer`]. Nothing is allowed until added; `build()` refuses policies that
/// would expose more than intended.
#[derive(Debug, Clone)]
#[must_use]
pub struct CorsBuilder {
    origins: Vec<String>,
    methods: Vec<String>,
    allow_headers: Vec<String>,
    expose_headers: Vec<String>,
    credentials: bool,
    max_age: Duration,
    any_origin: bool,
    plain_http: bool,
}

impl CorsBuilder {
    /// Allows `origin` (`https://app.example.com`, `http://127.0.0.1:3000`). Origins are
    /// normalised (lower case, default port dropped, one trailing `/` dropped) and must be a
    /// scheme and host only: no path, query, user info or fragment. Plain `http` is accepted
    /// for loopback hosts only (see
    /// [`insecure_allow_plain_http_origins`](Self::insecure_allow_plain_http_origins)).
    pub fn allow_origin(mut self, origin: impl Into<String>) -> Self {
        self.origins.push(origin.into());
        self
    }

    /// Allows every origin in `origins`.
    pub fn allow_origins<I>(mut self, origins: I) -> Self
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        self.origins.extend(origins.into_iter().map(Into::into));
        self
    }

    /// Allows these methods on cross-origin requests (explicit: `*` is refused).
    pub fn allow_methods<I>(mut self, methods: I) -> Self
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        self.methods
            .extend(methods.into_iter().map(|m| m.as_ref().to_owned()));
        self
    }

    /// Allows these request headers (explicit: `*` is refused). Default: none beyond the
    /// CORS-safelisted ones.
    pub fn allow_headers<I>(mut self, headers: I) -> Self
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        self.allow_headers
            .extend(headers.into_iter().map(|h| h.as_ref().to_owned()));
        self
    }

    /// Forgets the allowed request headers (to replace a preset's).
    pub fn clear_allow_headers(mut self) -> Self {
        self.allow_headers.clear();
        self
    }

    /// Lets cross-origin scripts read these response headers (explicit: `*` is refused).
    pub fn expose_headers<I>(mut self, headers: I) -> Self
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        self.expose_headers
            .extend(headers.into_iter().map(|h| h.as_ref().to_owned()));
        self
    }

    /// Sends `Access-Control-Allow-Credentials: true`: the allowed origins may send cookies and
    /// read the answers. Default off. Cookie-authenticated routes then need CSRF protection
    /// ([`CsrfLayer`](super::CsrfLayer)).
    pub fn allow_credentials(mut self) -> Self {
        self.credentials = true;
        self
    }

    /// How long browsers may cache a preflight answer (default [`DEFAULT_MAX_AGE`], at most
    /// 24 h). Longer means fewer preflights and slower policy changes.
    pub fn max_age(mut self, max_age: Duration) -> Self {
        self.max_age = max_age;
        self
    }

    /// Allows every origin (`Access-Control-Allow-Origin: *`), for public, anonymous data only.
    /// Refused together with credentials or an origin list.
    pub fn insecure_allow_any_origin(mut self) -> Self {
        self.any_origin = true;
        self
    }

    /// Accepts `http://` origins on non-loopback hosts. Anyone on the network path of such an
    /// origin can inject script into it and then call this API as that origin.
    pub fn insecure_allow_plain_http_origins(mut self) -> Self {
        self.plain_http = true;
        self
    }

    /// Checks the policy and builds the layer.
    pub fn build(self) -> Result<CorsLayer, ConfigError> {
        if self.any_origin && self.credentials {
            return Err(ConfigError::new(
                "CORS: a wildcard origin cannot be combined with credentials",
            ));
        }
        if self.any_origin && !self.origins.is_empty() {
            return Err(ConfigError::new(
                "CORS: either a wildcard origin or an origin list, not both",
            ));
        }
        if !self.any_origin && self.origins.is_empty() {
            return Err(ConfigError::new("CORS: no allowed origin"));
        }
        let mut origins: Vec<HeaderValue> = Vec::new();
        for origin in &self.origins {
            let normalized = normalize_origin(origin, self.plain_http)?;
            let value = HeaderValue::from_str(&normalized)
                .map_err(|_| ConfigError::new(format!("CORS: invalid origin {origin:?}")))?;
            if !origins.contains(&value) {
                origins.push(value);
            }
        }
        if self.methods.is_empty() {
            return Err(ConfigError::new("CORS: no allowed method"));
        }
        let mut methods = Vec::new();
        for method in &self.methods {
            if method.trim() == "*" {
                return Err(ConfigError::new("CORS: list methods explicitly, not `*`"));
            }
            let method = Method::from_bytes(method.trim().as_bytes())
                .map_err(|_| ConfigError::new(format!("CORS: invalid method {method:?}")))?;
            if !methods.contains(&method) {
                methods.push(method);
            }
        }
        let allow_headers = header_names("allowed request header", &self.allow_headers)?;
        let expose_headers = header_names("exposed response header", &self.expose_headers)?;
        if self.max_age > MAX_MAX_AGE {
            return Err(ConfigError::new("CORS: max_age above 24 hours"));
        }
        let allow_origin = if self.any_origin {
            th::AllowOrigin::any()
        } else {
            th::AllowOrigin::list(origins.iter().cloned())
        };
        let inner = th::CorsLayer::new()
            .allow_origin(allow_origin)
            .allow_methods(methods)
            .allow_headers(allow_headers)
            .expose_headers(expose_headers)
            .allow_credentials(self.credentials)
            .max_age(self.max_age);
        Ok(CorsLayer {
            inner,
            origins: origins.into(),
            any_origin: self.any_origin,
        })
    }
}

fn header_names(what: &str, names: &[String]) -> Result<Vec<HeaderName>, ConfigError> {
    let mut out: Vec<HeaderName> = Vec::new();
    for name in names {
        if name.trim() == "*" {
            return Err(ConfigError::new(format!(
                "CORS: list each {what} explicitly, not `*`"
            )));
        }
        let parsed = HeaderName::from_bytes(name.trim().as_bytes())
            .map_err(|_| ConfigError::new(format!("CORS: invalid {what} {name:?}")))?;
        if !out.contains(&parsed) {
            out.push(parsed);
        }
    }
    Ok(out)
}

/// `scheme://host[:port]` as a browser serializes it in `Origin`: lower case, no default port,
/// IPv6 in brackets in its canonical text form.
pub(crate) fn normalize_origin(origin: &str, plain_http: bool) -> Result<String, ConfigError> {
    let invalid = |why: &str| ConfigError::new(format!("CORS: origin {origin:?} {why}"));
    let text = origin.trim();
    let (scheme, rest) = text
        .split_once("://")
        .ok_or_else(|| invalid("needs a scheme (https://...)"))?;
    let scheme = scheme.to_ascii_lowercase();
    let default_port = match scheme.as_str() {
        "https" => 443,
        "http" => 80,
        _ => return Err(invalid("must be http or https")),
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.is_empty() {
        return Err(invalid("has no host"));
    }
    if rest
        .bytes()
        .any(|b| matches!(b, b'/' | b'?' | b'#' | b'@' | b'\\' | b'*') || !b.is_ascii_graphic())
    {
        return Err(invalid(
            "must be a scheme and host only (no path, query, fragment, user info or wildcard)",
        ));
    }
    let (host, port) = if let Some(after) = rest.strip_prefix('[') {
        let (addr, tail) = after
            .split_once(']')
            .ok_or_else(|| invalid("has an unclosed IPv6 bracket"))?;
        let addr: Ipv6Addr = addr
            .parse()
            .map_err(|_| invalid("has a bad IPv6 address"))?;
        let port = match tail {
            "" => None,
            _ => Some(
                tail.strip_prefix(':')
                    .ok_or_else(|| invalid("has text after the IPv6 address"))?,
            ),
        };
        (Host::Ip(IpAddr::V6(addr)), port)
    } else {
        let (host, port) = match rest.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (rest, None),
        };
        let host = host.to_ascii_lowercase();
        let host = match host.parse::<IpAddr>() {
            Ok(ip @ IpAddr::V4(_)) => Host::Ip(ip),
            Ok(IpAddr::V6(_)) => return Err(invalid("needs brackets around an IPv6 address")),
            Err(_) => {
                let labels_ok = host.split('.').all(|label| {
                    !label.is_empty()
                        && label.len() <= 63
                        && label
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                        && !label.starts_with('-')
                        && !label.ends_with('-')
                });
                if !labels_ok || host.len() > 253 {
                    return Err(invalid(
                        "has an invalid host name (use the ASCII, punycode form)",
                    ));
                }
                Host::Name(host)
            }
        };
        (host, port)
    };
    let port = match port {
        None => None,
        Some(p) => {
            let n: u16 = p
                .parse()
                .ok()
                .filter(|n| *n != 0 && p.bytes().all(|b| b.is_ascii_digit()))
                .ok_or_else(|| invalid("has an invalid port"))?;
            (n != default_port).then_some(n)
        }
    };
    if scheme == "http" && !plain_http && !host.is_loopback() {
        return Err(invalid(
            "is plain http on a non-loopback host (insecure_allow_plain_http_origins)",
        ));
    }
    let host = match host {
        Host::Ip(IpAddr::V6(v6)) => format!("[{v6}]"),
        Host::Ip(ip) => ip.to_string(),
        Host::Name(name) => name,
    };
    Ok(match port {
        Some(port) => format!("{scheme}://{host}:{port}"),
        None => format!("{scheme}://{host}"),
    })
}

enum Host {
    Ip(IpAddr),
    Name(String),
}

impl Host {
    fn is_loopback(&self) -> bool {
        match self {
            Host::Ip(ip) => ip.is_loopback(),
            Host::Name(name) => name == "localhost" || name.ends_with(".localhost"),
        }
    }
}

/// The service produced by [`CorsLayer`].
#[derive(Clone)]
pub struct Cors<S> {
    inner: th::Cors<S>,
    origins: Arc<[HeaderValue]>,
    any_origin: bool,
}

impl<S: fmt::Debug> fmt::Debug for Cors<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cors")
            .field("inner", self.inner.get_ref())
            .field("origins", &self.origins)
            .finish_non_exhaustive()
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for Cors<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: Default,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // tower-http re-checks its rules here; `build()` already refused every rule it asserts.
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let origin = req.headers().get(header::ORIGIN);
        let allowed = origin.is_some_and(|o| self.any_origin || self.origins.contains(o));
        let is_options = req.method() == Method::OPTIONS;
        let preflight = is_options
            && origin.is_some()
            && req
                .headers()
                .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
        // tower-http answers every OPTIONS request itself. Only real preflights from allowed
        // origins get that; any other OPTIONS (and everything from other origins) goes down
        // the stack, where routing and policies decide, and leaves without CORS headers.
        let direct = (is_options && !preflight) || (origin.is_some() && !allowed);
        if direct {
            ResponseFuture {
                kind: Kind::Direct {
                    future: self.inner.get_mut().call(req),
                },
            }
        } else {
            ResponseFuture {
                kind: Kind::Cors {
                    future: Box::pin(self.inner.call(req)),
                },
            }
        }
    }
}

pin_project! {
    /// Response future of [`Cors`].
    pub struct ResponseFuture<F> {
        #[pin]
        kind: Kind<F>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F> {
        // Boxed: tower-http's future carries the CORS headers (a `HeaderMap`) next to the inner
        // future, and unboxed it would make every `Cors` future (and the `Either` of an
        // optional CORS layer, CORS off) that much larger, moved by each enclosing layer on
        // every request. The allocation is paid only on the CORS path, which already builds
        // that header map.
        Cors { future: Pin<Box<th::ResponseFuture<F>>> },
        Direct { #[pin] future: F },
    }
}

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
    B: Default,
{
    type Output = Result<Response<B>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Cors { future } => future.as_mut().poll(cx),
            KindProj::Direct { future } => {
                let mut response = ready!(future.poll(cx))?;
                // The answer depends on Origin: caches must not serve it to another origin.
                response
                    .headers_mut()
                    .append(header::VARY, HeaderValue::from_static("origin"));
                Poll::Ready(Ok(response))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;
    use tower::{ServiceExt, service_fn};

    fn layer() -> CorsLayer {
        CorsLayer::bearer_api()
            .allow_origin("https://App.Example.com:443/")
            .allow_origin("http://127.0.0.1:3000")
            .build()
            .unwrap()
    }

    async fn send(layer: CorsLayer, req: Request<String>) -> Response<String> {
        layer
            .layer(service_fn(|req: Request<String>| async move {
                // Marks that the request reached the inner stack.
                Ok::<_, Infallible>(Response::new(format!("inner {}", req.method())))
            }))
            .oneshot(req)
            .await
            .unwrap()
    }

    fn preflight(origin: &str) -> Request<String> {
        Request::builder()
            .method(Method::OPTIONS)
            .uri("/api/me")
            .header("origin", origin)
            .header("access-control-request-method", "GET")
            .header("access-control-request-headers", "authorization")
            .body(String::new())
            .unwrap()
    }

    fn acao(response: &Response<String>) -> Option<&str> {
        response
            .headers()
            .get("access-control-allow-origin")
            .map(|v| v.to_str().unwrap())
    }

    fn cors_headers(response: &Response<String>) -> Vec<String> {
        response
            .headers()
            .keys()
            .filter(|n| n.as_str().starts_with("access-control-"))
            .map(|n| n.as_str().to_owned())
            .collect()
    }

    #[tokio::test]
    async fn allowed_preflight_is_answered_without_the_inner_stack() {
        let response = send(layer(), preflight("https://app.example.com")).await;
        assert!(response.body().is_empty(), "answered by the CORS layer");
        assert_eq!(acao(&response), Some("https://app.example.com"));
        let methods = response.headers()["access-control-allow-methods"]
            .to_str()
            .unwrap();
        assert!(methods.contains("GET") && methods.contains("DELETE"));
        assert!(
            response.headers()["access-control-allow-headers"]
                .to_str()
                .unwrap()
                .contains("authorization")
        );
        assert_eq!(response.headers()["access-control-max-age"], "600");
        assert!(
            response
                .headers()
                .get("access-control-allow-credentials")
                .is_none()
        );
    }

    #[tokio::test]
    async fn disallowed_origins_get_no_cors_headers() {
        for origin in [
            "https://evil.example",
            "https://app.example.com.evil.example",
            "http://app.example.com",
            "https://app.example.com:8443",
            "null",
        ] {
            let response = send(layer(), preflight(origin)).await;
            assert_eq!(response.body(), "inner OPTIONS", "{origin}: handed on");
            assert!(cors_headers(&response).is_empty(), "{origin}");
            let mut get = preflight(origin);
            *get.method_mut() = Method::GET;
            let response = send(layer(), get).await;
            assert_eq!(response.body(), "inner GET");
            assert!(cors_headers(&response).is_empty(), "{origin}");
            assert!(
                response
                    .headers()
                    .get_all("vary")
                    .iter()
                    .any(|v| v == "origin")
            );
        }
    }

    #[tokio::test]
    async fn actual_requests_from_allowed_origins_reach_the_stack() {
        let mut req = preflight("http://127.0.0.1:3000");
        *req.method_mut() = Method::GET;
        let response = send(layer(), req).await;
        assert_eq!(response.body(), "inner GET");
        assert_eq!(acao(&response), Some("http://127.0.0.1:3000"));
        assert!(
            response.headers()["access-control-expose-headers"]
                .to_str()
                .unwrap()
                .contains("x-request-id")
        );
        // Plain OPTIONS (no preflight headers) is routed like any other method.
        let plain = Request::builder()
            .method(Method::OPTIONS)
            .header("origin", "http://127.0.0.1:3000")
            .body(String::new())
            .unwrap();
        assert_eq!(send(layer(), plain).await.body(), "inner OPTIONS");
        // No Origin: not a CORS request, passes untouched.
        let response = send(layer(), Request::new(String::new())).await;
        assert_eq!(response.body(), "inner GET");
        assert_eq!(acao(&response), None);
    }

    #[tokio::test]
    async fn credentials_preset() {
        let layer = CorsLayer::cookie_session()
            .allow_origin("https://app.example.com")
            .build()
            .unwrap();
        let response = send(layer, preflight("https://app.example.com")).await;
        assert_eq!(
            response.headers()["access-control-allow-credentials"],
            "true"
        );
        assert_eq!(acao(&response), Some("https://app.example.com"));
        let headers = response.headers()["access-control-allow-headers"]
            .to_str()
            .unwrap();
        assert!(headers.contains("x-csrf-token") && !headers.contains("authorization"));
    }

    proptest::proptest! {
        #[test]
        fn normalisation_is_idempotent_and_never_panics(raw in "[a-zA-Z0-9:/\\[\\]@?#*. _-]{0,40}") {
            if let Ok(once) = normalize_origin(&raw, true) {
                let twice = normalize_origin(&once, true);
                proptest::prop_assert_eq!(twice, Ok(once.clone()));
                let uri: http::Uri = once.parse().unwrap();
                proptest::prop_assert!(uri.scheme().is_some() && uri.authority().is_some());
                proptest::prop_assert!(uri.path() == "/" || uri.path().is_empty());
                proptest::prop_assert!(uri.query().is_none());
                proptest::prop_assert_eq!(once.to_ascii_lowercase(), once.clone());
            }
        }

        #[test]
        fn well_formed_origins_round_trip(
            host in "[a-z][a-z0-9-]{0,10}[a-z0-9](\\.[a-z][a-z0-9]{0,5}){0,2}",
            port in proptest::option::of(1u16..),
        ) {
            let origin = match port {
                Some(port) => format!("https://{host}:{port}"),
                None => format!("https://{host}"),
            };
            let want = match port {
                Some(443) | None => format!("https://{host}"),
                Some(port) => format!("https://{host}:{port}"),
            };
            proptest::prop_assert_eq!(normalize_origin(&origin.to_uppercase(), false), Ok(want));
        }
    }

    #[test]
    fn origins_are_normalised() {
        let cases = [
            ("https://App.Example.COM", "https://app.example.com"),
            ("https://app.example.com:443", "https://app.example.com"),
            ("https://app.example.com/", "https://app.example.com"),
            (
                "HTTPS://app.example.com:8443",
                "https://app.example.com:8443",
            ),
            ("http://localhost:80", "http://localhost"),
            ("http://127.0.0.1:3000", "http://127.0.0.1:3000"),
            ("http://[0:0:0:0:0:0:0:1]:8080", "http://[::1]:8080"),
            ("https://[2001:DB8::1]", "https://[2001:db8::1]"),
        ];
        for (input, want) in cases {
            assert_eq!(normalize_origin(input, false).unwrap(), want, "{input}");
        }
    }

    #[test]
    fn invalid_policies_are_refused() {
        let bad_origins = [
            "*",
            "null",
            "app.example.com",
            "ftp://app.example.com",
            "https://app.example.com/path",
            "https://app.example.com?q",
            "https://app.example.com#f",
            "https://user@app.example.com",
            "https://*.example.com",
            "https://",
            "https://app.example.com:0",
            "https://app.example.com:99999",
            "https://app.example.com:x",
            "https://::1",
            "https://[::1",
            "https://ex ample.com",
            "https://-bad.example.com",
            "http://app.example.com",
        ];
        for origin in bad_origins {
            assert!(
                CorsLayer::bearer_api()
                    .allow_origin(origin)
                    .build()
                    .is_err(),
                "{origin}"
            );
        }
        assert!(
            CorsLayer::bearer_api()
                .allow_origin("http://intranet.example")
                .insecure_allow_plain_http_origins()
                .build()
                .is_ok()
        );
        let bad = [
            CorsLayer::bearer_api(),
            CorsLayer::bearer_api()
                .insecure_allow_any_origin()
                .allow_credentials(),
            CorsLayer::bearer_api()
                .insecure_allow_any_origin()
                .allow_origin("https://a.example"),
            CorsLayer::builder().allow_origin("https://a.example"),
            CorsLayer::builder()
                .allow_origin("https://a.example")
                .allow_methods(["*"]),
            CorsLayer::builder()
                .allow_origin("https://a.example")
                .allow_methods(["GET"])
                .allow_headers(["*"]),
            CorsLayer::builder()
                .allow_origin("https://a.example")
                .allow_methods(["GET"])
                .expose_headers(["*"]),
            CorsLayer::builder()
                .allow_origin("https://a.example")
                .allow_methods(["GET"])
                .allow_headers(["bad header"]),
            CorsLayer::builder()
                .allow_origin("https://a.example")
                .allow_methods(["GE T"]),
            CorsLayer::bearer_api()
                .allow_origin("https://a.example")
                .max_age(Duration::from_secs(2 * 24 * 3600)),
        ];
        for builder in bad {
            assert!(builder.clone().build().is_err(), "{builder:?}");
        }
        assert!(
            CorsLayer::bearer_api()
                .insecure_allow_any_origin()
                .build()
                .is_ok()
        );
    }
}
