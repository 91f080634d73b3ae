//! Request hygiene: refuse requests whose target or header section different components would
//! read differently, before any guard or handler sees them.
//!
//! As a layer, [`RequestHygieneLayer`] checks every request before the service it wraps.
//! [`SecureRouter`](crate::routing::SecureRouter) applies the same checks by default inside
//! each route's handler and in its fallbacks, first thing, on the URI the client sent (nested
//! prefixes included): routing has matched by then, but nothing has read the request.
//!
//! A path such as `/api%2Fadmin`, `/api/..;/admin`, `/static/%2e%2e/secret` or `/a\b` is read one
//! way by a proxy, another by the router and a third by a file-serving handler; the classic
//! authorization bypasses live in those gaps. [`RequestHygieneLayer`] refuses them outright:
//!
//! | check | default | refusal |
//! |---|---|---|
//! | encoded `/` or `\` (`%2F`, `%5C`), raw `\` | refused | 400 |
//! | `.` and `..` segments, plain or encoded (`%2e`, `.%2E`...) | refused | 400 |
//! | empty interior segments (`//`) | refused | 400 |
//! | `;` (path parameters, `..;/`), raw or encoded | refused | 400 |
//! | NUL and other control characters after decoding | refused | 400 |
//! | double encoding (`%25` followed by two hex digits) | refused | 400 |
//! | malformed `%` escapes, invalid UTF-8 after decoding | refused | 400 |
//! | URI longer than 8 KiB | refused | 400 |
//! | more than 100 header fields | refused | 400 |
//! | one header field (name + value) above 8 KiB, all of them above 32 KiB | refused | 400 |
//! | methods other than GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS | refused | 400 |
//!
//! The statuses come from the [rejection table](crate::rejection): 414 and 431 are not in it.
//! Over-long URIs and header sections are refused with 400 (`BadRequest`), the generic client
//! error RFC 9110 allows for any malformed request; 413 is kept for bodies, since a client that
//! gets it shrinks the body, which would not help. Unknown methods get 400 rather than 405,
//! because 405 must list the resource's methods in `Allow`, which a layer in front of routing
//! does not know.
//!
//! ```
//! use http::{Request, Response, StatusCode};
//! use portcullis::validate::hygiene::RequestHygieneLayer;
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//!
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! let svc = ServiceBuilder::new()
//!     .layer(RequestHygieneLayer::new())
//!     .service(service_fn(|_req: Request<String>| async {
//!         Ok::<_, std::convert::Infallible>(Response::new(String::from("ok")))
//!     }));
//! let ok = svc.clone().oneshot(Request::get("/api/documents/1").body(String::new()).unwrap()).await.unwrap();
//! assert_eq!(ok.status(), StatusCode::OK);
//! let sneaky = Request::get("/api/..;/admin").body(String::new()).unwrap();
//! assert_eq!(svc.oneshot(sneaky).await.unwrap().status(), StatusCode::BAD_REQUEST);
//! # });
//! ```
//!
//! # Deployment caveat
//! The layer judges the request as this server received it. A proxy in front that decodes,
//! merges slashes or resolves dot segments before forwarding hides the original form: configure
//! it to forward the target unmodified (or to refuse the same forms), so that what was checked
//! here is what the client sent. Header limits here come after the HTTP server's own (hyper
//! refuses more than 100 headers by default); keep the server's limits at or below these.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Method, Request, Response};
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use crate::error::ConfigError;
use crate::rejection::{Rejection, RejectionKind};

/// Why a path was refused (for the audit detail and for tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PathIssue {
    /// The path does not start with `/` (and is not `*` on `OPTIONS`).
    NotAbsolute,
    /// `%2F` / `%5C`: an encoded separator.
    EncodedSeparator,
    /// A raw or encoded backslash.
    Backslash,
    /// A `.` or `..` segment, raw or encoded.
    DotSegment,
    /// An empty segment other than the last (`//`).
    EmptySegment,
    /// `;` (path parameters), raw or encoded.
    PathParameter,
    /// NUL, raw or encoded.
    Nul,
    /// Another control character after decoding.
    ControlCharacter,
    /// `%25` followed by two hex digits: decoded twice, it is a different path.
    DoubleEncoding,
    /// A `%` without two hex digits.
    MalformedEscape,
    /// The decoded path is not UTF-8.
    InvalidUtf8,
}

impl PathIssue {
    /// A short stable name.
    pub const fn name(self) -> &'static str {
        match self {
            PathIssue::NotAbsolute => "not_absolute",
            PathIssue::EncodedSeparator => "encoded_separator",
            PathIssue::Backslash => "backslash",
            PathIssue::DotSegment => "dot_segment",
            PathIssue::EmptySegment => "empty_segment",
            PathIssue::PathParameter => "path_parameter",
            PathIssue::Nul => "nul",
            PathIssue::ControlCharacter => "control_character",
            PathIssue::DoubleEncoding => "double_encoding",
            PathIssue::MalformedEscape => "malformed_escape",
            PathIssue::InvalidUtf8 => "invalid_utf8",
        }
    }
}

impl fmt::Display for PathIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Checks a request path (without the query) as described in the [module docs](self).
///
/// ```
/// use portcullis::validate::hygiene::{PathIssue, check_path};
///
/// assert_eq!(check_path("/files/report%20Q3.pdf"), Ok(()));
/// assert_eq!(check_path("/files/"), Ok(()));
/// assert_eq!(check_path("/api%2Fadmin"), Err(PathIssue::EncodedSeparator));
/// assert_eq!(check_path("/a/%2e%2E/b"), Err(PathIssue::DotSegment));
/// assert_eq!(check_path("/a/..;/b"), Err(PathIssue::PathParameter));
/// ```
pub fn check_path(path: &str) -> Result<(), PathIssue> {
    let bytes = path.as_bytes();
    if bytes.first() != Some(&b'/') {
        return Err(PathIssue::NotAbsolute);
    }
    // `fold` with `&` has no early exit, so the loop vectorizes; most paths are plain.
    if bytes
        .iter()
        .fold(true, |plain, b| plain & PLAIN_PATH_BYTE[usize::from(*b)])
    {
        return check_plain_segments(&bytes[1..]);
    }
    check_decoded_segments(bytes)
}

/// The path bytes that need no decoding and can raise no issue on their own: RFC 3986 `pchar`
/// and `/`, without `%` and `;`.
const PLAIN_PATH_BYTE: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = c.is_ascii_alphanumeric()
            || matches!(
                c,
                b'-' | b'.'
                    | b'_'
                    | b'~'
                    | b'!'
                    | b'$'
                    | b'&'
                    | b'\''
                    | b'('
                    | b')'
                    | b'*'
                    | b'+'
                    | b','
                    | b'='
                    | b':'
                    | b'@'
                    | b'/'
            );
        b += 1;
    }
    table
};

/// The segment checks for a path of [`PLAIN_PATH_BYTE`]s (after the leading `/`), where
/// decoding changes nothing: only empty interior segments and dot segments can be wrong.
fn check_plain_segments(rest: &[u8]) -> Result<(), PathIssue> {
    let mut segments = rest.split(|b| *b == b'/').peekable();
    while let Some(segment) = segments.next() {
        if segment.is_empty() && segments.peek().is_some() {
            return Err(PathIssue::EmptySegment);
        }
        if segment == b"." || segment == b".." {
            return Err(PathIssue::DotSegment);
        }
    }
    Ok(())
}

/// The full check, decoding each segment.
fn check_decoded_segments(bytes: &[u8]) -> Result<(), PathIssue> {
    // Segments after the leading '/'; the last may be empty (a trailing slash).
    let segments: Vec<&[u8]> = bytes[1..].split(|b| *b == b'/').collect();
    let last = segments.len() - 1;
    let mut decoded = Vec::with_capacity(bytes.len());
    for (i, segment) in segments.iter().enumerate() {
        if segment.is_empty() && i != last {
            return Err(PathIssue::EmptySegment);
        }
        let start = decoded.len();
        let mut j = 0;
        while j < segment.len() {
            let b = segment[j];
            let byte = if b == b'%' {
                let (Some(hi), Some(lo)) = (
                    segment.get(j + 1).copied().and_then(hex),
                    segment.get(j + 2).copied().and_then(hex),
                ) else {
                    return Err(PathIssue::MalformedEscape);
                };
                j += 3;
                let value = hi << 4 | lo;
                if value == b'/' || value == b'\\' {
                    return Err(PathIssue::EncodedSeparator);
                }
                value
            } else {
                j += 1;
                if b == b'\\' {
                    return Err(PathIssue::Backslash);
                }
                b
            };
            match byte {
                0 => return Err(PathIssue::Nul),
                b';' => return Err(PathIssue::PathParameter),
                b if b < 0x20 || b == 0x7f => return Err(PathIssue::ControlCharacter),
                _ => decoded.push(byte),
            }
        }
        let segment = &decoded[start..];
        if segment == b"." || segment == b".." {
            return Err(PathIssue::DotSegment);
        }
        // Judged on the decoded text, so `%25%32%66` (decoding to `%2f`) counts as well as
        // `%252f`.
        let escape_after_decoding = segment
            .windows(3)
            .any(|w| w[0] == b'%' && hex(w[1]).is_some() && hex(w[2]).is_some());
        if escape_after_decoding {
            return Err(PathIssue::DoubleEncoding);
        }
    }
    if std::str::from_utf8(&decoded).is_err() {
        return Err(PathIssue::InvalidUtf8);
    }
    Ok(())
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Limits {
    max_uri_len: usize,
    max_headers: usize,
    max_header_len: usize,
    max_header_section: usize,
    methods: Vec<Method>,
    check_paths: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_uri_len: 8 * 1024,
            max_headers: 100,
            max_header_len: 8 * 1024,
            max_header_section: 32 * 1024,
            methods: vec![
                Method::GET,
                Method::HEAD,
                Method::POST,
                Method::PUT,
                Method::PATCH,
                Method::DELETE,
                Method::OPTIONS,
            ],
            check_paths: true,
        }
    }
}

/// The hygiene layer. See the [module docs](self).
#[derive(Debug, Clone)]
#[must_use]
pub struct RequestHygieneLayer {
    limits: Arc<Limits>,
}

impl Default for RequestHygieneLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl RequestHygieneLayer {
    /// Every check on, with the default limits.
    pub fn new() -> Self {
        Self {
            limits: Arc::new(Limits::default()),
        }
    }
    /// Starts a configuration from the defaults.
    pub fn builder() -> RequestHygieneBuilder {
        RequestHygieneBuilder {
            limits: Limits::default(),
        }
    }

    /// Checks one request; `Err` carries the refusal.
    pub fn check<B>(&self, req: &Request<B>) -> Result<(), Rejection> {
        self.check_parts(req.method(), &[req.uri()], req.headers())
    }

    /// [`check`](Self::check) on a request's method, URI and headers.
    ///
    /// Every URI in `targets` is checked (length and path): a router checks both the URI the
    /// client sent and the one it routed when a layer rewrote it; method and headers once.
    pub(crate) fn check_parts(
        &self,
        method: &Method,
        targets: &[&http::Uri],
        headers: &http::HeaderMap,
    ) -> Result<(), Rejection> {
        let limits = &self.limits;
        let refuse = |detail: String| Err(Rejection::new(RejectionKind::BadRequest, detail));
        if !limits.methods.contains(method) {
            return refuse(format!("method {} not accepted", truncate_method(method)));
        }
        for uri in targets {
            let uri_len = uri.path_and_query().map_or(0, |pq| pq.as_str().len())
                + uri.authority().map_or(0, |a| a.as_str().len());
            if uri_len > limits.max_uri_len {
                return refuse(format!("URI of {uri_len} bytes above the limit"));
            }
        }
        if headers.len() > limits.max_headers {
            return refuse(format!("{} header fields above the limit", headers.len()));
        }
        let mut section = 0usize;
        for (name, value) in headers {
            let len = name.as_str().len() + value.len();
            if len > limits.max_header_len {
                return refuse(format!(
                    "header field {name} of {len} bytes above the limit"
                ));
            }
            section += len;
        }
        if section > limits.max_header_section {
            return refuse(format!("header section of {section} bytes above the limit"));
        }
        if limits.check_paths {
            for uri in targets {
                let path = uri.path();
                let asterisk = path == "*" && method == Method::OPTIONS;
                if !asterisk && let Err(issue) = check_path(path) {
                    return refuse(format!("ambiguous path: {issue}"));
                }
            }
        }
        Ok(())
    }
}

fn truncate_method(method: &Method) -> &str {
    let s = method.as_str();
    let mut end = s.len().min(16);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Configures a [`RequestHygieneLayer`].
#[derive(Debug, Clone)]
#[must_use]
pub struct RequestHygieneBuilder {
    limits: Limits,
}

impl RequestHygieneBuilder {
    /// Longest accepted request target (path and query, plus authority in absolute form), in
    /// bytes. Default 8 KiB; longer limits let clients make every log line and cache key huge.
    pub fn max_uri_len(mut self, bytes: usize) -> Self {
        self.limits.max_uri_len = bytes;
        self
    }
    /// Most header fields. Default 100.
    pub fn max_headers(mut self, count: usize) -> Self {
        self.limits.max_headers = count;
        self
    }
    /// Longest single header field (name plus value), in bytes. Default 8 KiB.
    pub fn max_header_len(mut self, bytes: usize) -> Self {
        self.limits.max_header_len = bytes;
        self
    }
    /// Largest header section (all names and values), in bytes. Default 32 KiB.
    pub fn max_header_section(mut self, bytes: usize) -> Self {
        self.limits.max_header_section = bytes;
        self
    }
    /// Accepts `method` too (for example `Method::from_bytes(b"PROPFIND")` for WebDAV).
    /// Default: GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS. `TRACE` and `CONNECT` stay out
    /// unless added here: TRACE reflects credentials back to scripts, CONNECT opens tunnels.
    pub fn allow_method(mut self, method: Method) -> Self {
        if !self.limits.methods.contains(&method) {
            self.limits.methods.push(method);
        }
        self
    }
    /// Turns the path checks off (limits and methods stay). Default: on. Without them, an
    /// encoded slash or a dot segment can make a proxy, the router and a handler disagree on
    /// which resource is addressed, which is how path-based authorization gets bypassed.
    pub fn insecure_skip_path_checks(mut self) -> Self {
        self.limits.check_paths = false;
        self
    }
    /// Checks the limits.
    pub fn build(self) -> Result<RequestHygieneLayer, ConfigError> {
        let l = &self.limits;
        if l.max_uri_len < 16 || l.max_headers == 0 || l.max_header_len < 64 {
            return Err(ConfigError::new(
                "request hygiene: limits too small to serve any request (URI >= 16 bytes, >= 1 header, header >= 64 bytes)",
            ));
        }
        if l.max_header_section < l.max_header_len {
            return Err(ConfigError::new(
                "request hygiene: the header section limit is below the single-header limit",
            ));
        }
        Ok(RequestHygieneLayer {
            limits: Arc::new(self.limits),
        })
    }
}

impl<S> Layer<S> for RequestHygieneLayer {
    type Service = RequestHygiene<S>;
    fn layer(&self, inner: S) -> RequestHygiene<S> {
        RequestHygiene {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service of [`RequestHygieneLayer`].
#[derive(Debug, Clone)]
pub struct RequestHygiene<S> {
    inner: S,
    layer: RequestHygieneLayer,
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for RequestHygiene<S>
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

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        match self.layer.check(&req) {
            Ok(()) => ResponseFuture {
                kind: Kind::Inner {
                    future: self.inner.call(req),
                },
            },
            Err(rejection) => ResponseFuture {
                kind: Kind::Refused {
                    response: Some(rejection.into_deferred_response()),
                },
            },
        }
    }
}

pin_project! {
    /// Response future of [`RequestHygiene`].
    pub struct ResponseFuture<F, B> {
        #[pin]
        kind: Kind<F, B>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F, B> {
        Inner { #[pin] future: F },
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
            KindProj::Inner { future } => future.poll(cx),
            KindProj::Refused { response } => match response.take() {
                Some(response) => Poll::Ready(Ok(response)),
                // Polled again after completion: nothing sensible to return but the same
                // refusal, rebuilt.
                None => Poll::Ready(Ok(Rejection::new(
                    RejectionKind::BadRequest,
                    "response future polled after completion",
                )
                .into_deferred_response())),
            },
        }
    }
}

/// Fuzzing entry point: `check_path` must never panic, and an accepted path, decoded once by
/// an independent decoder, must hold no separator, backslash, `;`, control character, dot
/// segment, empty interior segment or further escape.
#[doc(hidden)]
pub fn __fuzz_check_path(path: &str) {
    if check_path(path).is_err() {
        return;
    }
    let raw: Vec<&str> = path.split('/').skip(1).collect();
    for (i, segment) in raw.iter().enumerate() {
        assert!(
            !segment.is_empty() || i + 1 == raw.len(),
            "empty segment in {path:?}"
        );
        let decoded = percent_decode(segment.as_bytes());
        assert!(
            decoded != b"." && decoded != b"..",
            "dot segment in {path:?}"
        );
        for (k, b) in decoded.iter().enumerate() {
            assert!(
                !matches!(b, b'/' | b'\\' | b';') && *b >= 0x20 && *b != 0x7f,
                "{path:?}"
            );
            let escape = *b == b'%'
                && decoded.get(k + 1).is_some_and(u8::is_ascii_hexdigit)
                && decoded.get(k + 2).is_some_and(u8::is_ascii_hexdigit);
            assert!(!escape, "double encoding in {path:?}");
        }
    }
}

fn percent_decode(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let pair = bytes
            .get(i + 1..i + 3)
            .and_then(|p| std::str::from_utf8(p).ok());
        match pair.and_then(|p| u8::from_str_radix(p, 16).ok()) {
            Some(value) if bytes[i] == b'%' => {
                out.push(value);
                i += 3;
            }
            _ => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The plain-path shortcut answers exactly like the full decoding check.
    #[test]
    fn plain_paths_are_judged_like_decoded_ones() {
        let alphabet: &[&[u8]] = &[b"a", b"/", b".", b"..", b"~", b"@", b":", b"'", b"(", b"Z9"];
        let mut checked = 0;
        // Every path of up to five pieces from the alphabet, and a fifth of the six-piece ones.
        for n in 0u32..200_000 {
            let mut path = vec![b'/'];
            let mut k = n;
            for _ in 0..6 {
                path.extend_from_slice(alphabet[(k % 10) as usize]);
                k /= 10;
                if k == 0 {
                    break;
                }
            }
            assert!(path.iter().all(|b| PLAIN_PATH_BYTE[usize::from(*b)]));
            assert_eq!(
                check_plain_segments(&path[1..]),
                check_decoded_segments(&path),
                "{}",
                String::from_utf8_lossy(&path)
            );
            checked += 1;
        }
        assert_eq!(checked, 200_000);
        for excluded in [
            b'%', b';', b'\\', 0, 0x1f, 0x7f, 0x80, 0xff, b' ', b'?', b'#',
        ] {
            assert!(!PLAIN_PATH_BYTE[usize::from(excluded)], "{excluded:#x}");
        }
    }
    use proptest::prelude::*;
    use tower::{ServiceExt, service_fn};

    #[test]
    fn path_table() {
        use PathIssue::*;
        let cases: &[(&str, Result<(), PathIssue>)] = &[
            ("/", Ok(())),
            ("/api/documents/1", Ok(())),
            ("/api/documents/1/", Ok(())),
            ("/api/%64ocuments/1", Ok(())),
            ("/files/a%20b", Ok(())),
            ("/files/%C3%A9t%C3%A9", Ok(())),
            ("/a/...", Ok(())),
            ("/a/.well-known", Ok(())),
            ("/a%25b", Ok(())),
            ("relative", Err(NotAbsolute)),
            ("", Err(NotAbsolute)),
            ("/api%2Fdocuments", Err(EncodedSeparator)),
            ("/api%2fdocuments", Err(EncodedSeparator)),
            ("/api%5Cdocuments", Err(EncodedSeparator)),
            ("/api\\documents", Err(Backslash)),
            ("/a/./b", Err(DotSegment)),
            ("/a/../b", Err(DotSegment)),
            ("/a/..", Err(DotSegment)),
            ("/a/%2e%2e/b", Err(DotSegment)),
            ("/a/.%2E/b", Err(DotSegment)),
            ("/a/%2e/b", Err(DotSegment)),
            ("/..", Err(DotSegment)),
            ("//a", Err(EmptySegment)),
            ("/a//b", Err(EmptySegment)),
            ("/a;jsessionid=1", Err(PathParameter)),
            ("/a/..;/b", Err(PathParameter)),
            ("/a%3Bb", Err(PathParameter)),
            ("/a%00b", Err(Nul)),
            ("/a%0Ab", Err(ControlCharacter)),
            ("/a%7fb", Err(ControlCharacter)),
            ("/a%252e%252e/b", Err(DoubleEncoding)),
            ("/a%252fb", Err(DoubleEncoding)),
            ("/a%25%32%66b", Err(DoubleEncoding)),
            ("/a%2525", Err(DoubleEncoding)),
            ("/a%zz", Err(MalformedEscape)),
            ("/a%4", Err(MalformedEscape)),
            ("/a%", Err(MalformedEscape)),
            ("/a%C3%28", Err(InvalidUtf8)),
            ("/a%ff", Err(InvalidUtf8)),
        ];
        let mut failures = Vec::new();
        for (path, want) in cases {
            let got = check_path(path);
            if got != *want {
                failures.push(format!("{path}: {got:?} (want {want:?})"));
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    async fn status(layer: &RequestHygieneLayer, req: Request<String>) -> u16 {
        let svc = layer
            .clone()
            .layer(service_fn(|_req: Request<String>| async {
                Ok::<_, std::convert::Infallible>(Response::new(String::from("handler")))
            }));
        let res = svc.oneshot(req).await.unwrap();
        if res.status() != 200 {
            let rejection = res
                .extensions()
                .get::<Rejection>()
                .expect("rejection attached");
            assert_eq!(rejection.kind(), RejectionKind::BadRequest);
            assert!(res.body().is_empty());
        }
        res.status().as_u16()
    }

    #[tokio::test]
    async fn request_matrix() {
        let layer = RequestHygieneLayer::builder()
            .max_uri_len(64)
            .max_headers(4)
            .max_header_len(100)
            .max_header_section(200)
            .build()
            .unwrap();
        let req = |method: &str, uri: &str| {
            Request::builder()
                .method(Method::from_bytes(method.as_bytes()).unwrap())
                .uri(uri)
                .body(String::new())
                .unwrap()
        };
        assert_eq!(status(&layer, req("GET", "/ok?x=1")).await, 200);
        assert_eq!(status(&layer, req("OPTIONS", "*")).await, 200);
        assert_eq!(status(&layer, req("GET", "*")).await, 400);
        assert_eq!(status(&layer, req("TRACE", "/ok")).await, 400);
        assert_eq!(status(&layer, req("CONNECT", "/ok")).await, 400);
        assert_eq!(status(&layer, req("PROPFIND", "/ok")).await, 400);
        assert_eq!(status(&layer, req("GET", "/a%2Fb")).await, 400);
        assert_eq!(
            status(&layer, req("GET", &format!("/{}", "a".repeat(64)))).await,
            400
        );
        assert_eq!(
            status(&layer, req("GET", &format!("/a?{}", "q".repeat(62)))).await,
            400
        );
        assert_eq!(
            status(&layer, req("GET", &format!("/a?{}", "q".repeat(61)))).await,
            200
        );

        let mut many = req("GET", "/ok");
        for i in 0..5 {
            many.headers_mut().insert(
                http::HeaderName::from_bytes(format!("x-h{i}").as_bytes()).unwrap(),
                http::HeaderValue::from_static("v"),
            );
        }
        assert_eq!(status(&layer, many).await, 400);
        let mut long = req("GET", "/ok");
        long.headers_mut()
            .insert("x-long", "v".repeat(95).parse().unwrap());
        assert_eq!(status(&layer, long).await, 400);
        let mut section = req("GET", "/ok");
        for i in 0..3 {
            section.headers_mut().insert(
                http::HeaderName::from_bytes(format!("x-s{i}").as_bytes()).unwrap(),
                "v".repeat(80).parse().unwrap(),
            );
        }
        assert_eq!(status(&layer, section).await, 400);

        let webdav = RequestHygieneLayer::builder()
            .allow_method(Method::from_bytes(b"PROPFIND").unwrap())
            .build()
            .unwrap();
        assert_eq!(status(&webdav, req("PROPFIND", "/ok")).await, 200);
        let lax = RequestHygieneLayer::builder()
            .insecure_skip_path_checks()
            .build()
            .unwrap();
        assert_eq!(status(&lax, req("GET", "/a%2Fb")).await, 200);
        assert!(
            RequestHygieneLayer::builder()
                .max_headers(0)
                .build()
                .is_err()
        );
        assert!(
            RequestHygieneLayer::builder()
                .max_header_section(10)
                .build()
                .is_err()
        );
    }

    proptest! {
        #[test]
        fn accepted_paths_are_unambiguous(s in "/[a-zA-Z0-9%./;\\\\_-]{0,30}") {
            __fuzz_check_path(&s);
        }

        #[test]
        fn encoded_dots_are_dots(dots in prop::collection::vec(prop_oneof![Just("."), Just("%2e"), Just("%2E")], 1..=2)) {
            let segment: String = dots.concat();
            let path = format!("/a/{segment}/b");
            prop_assert_eq!(check_path(&path), Err(PathIssue::DotSegment));
        }
    }
}
