//! The edge of the stack: request ids, client address, rendering of rejections, audit.
//!
//! [`RequestContextLayer`] is the outermost portcullis layer. On the way in it gives the request
//! a [`RequestContext`] (request id, start time, client address, whether it is gRPC). On the way
//! out it renders any [`Rejection`] found in the response extensions exactly once, as RFC 9457
//! `application/problem+json` or as a trailers-only gRPC response, sets `x-request-id`, and
//! writes one audit event (see [`audit`](crate::audit)).
//!
//! It also normalizes framework refusals: a 4xx response with a `text/plain` or empty body and
//! no rejection attached (axum's own extractor rejections echo parser errors) is replaced by the
//! generic problem document for that status, so every refusal looks the same.
//!
//! ```
//! use http::{Request, StatusCode};
//! use portcullis::context::RequestContextLayer;
//! use portcullis::rejection::Rejection;
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//!
//! # tokio_test_block_on(async {
//! let svc = ServiceBuilder::new()
//!     .layer(RequestContextLayer::new())
//!     .service(service_fn(|_req: Request<String>| async {
//!         Ok::<_, std::convert::Infallible>(
//!             Rejection::not_found().into_deferred_response::<String>(),
//!         )
//!     }));
//! let response = svc.oneshot(Request::new(String::new())).await.unwrap();
//! assert_eq!(response.status(), StatusCode::NOT_FOUND);
//! assert_eq!(response.headers()["content-type"], "application/problem+json");
//! assert!(response.headers().contains_key("x-request-id"));
//! # });
//! # fn tokio_test_block_on<F: std::future::Future>(f: F) -> F::Output {
//! #     tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
//! # }
//! ```
//!
//! # Deployment caveat
//! The client address is the socket peer unless an outer layer inserted a [`ClientIp`] or a
//! [`ClientIpResolver`] is configured. Behind a reverse proxy the peer is the proxy: configure
//! the resolver with the proxy networks, so forwarded headers are believed only from them.

use std::fmt;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, ready};
use std::time::{Instant, SystemTime};

use http::header::{self, HeaderName, HeaderValue};
use http::uri::PathAndQuery;
use http::{Method, Request, Response, StatusCode};
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use crate::audit::{AuditEvent, Auditor, EventType, TraceId, truncate};
use crate::body::SecureBody;
use crate::client_ip::ClientIpResolver;
use crate::error::ConfigError;
use crate::principal::Principal;
use crate::rejection::{Rejection, RejectionKind, is_grpc, is_grpc_content_type};

/// The request id header set on every response.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// [`REQUEST_ID_HEADER`] as a ready name: inserting a header by `&str` parses the name and, for
/// a header that is not in the map yet, copies it into a new allocation on every response.
const REQUEST_ID: HeaderName = HeaderName::from_static(REQUEST_ID_HEADER);

/// How many request-id counter values a thread takes at a time.
const ID_BLOCK: u64 = 1024;

/// How many request ids share one header-value buffer.
const IDS_PER_BUFFER: usize = 64;

/// W3C Trace Context's header, read for the audit event's trace id.
const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");

/// A unique id for one request: 32 lowercase hex digits, a random per-process prefix and a
/// keyed permutation of a counter, so ids never repeat within a process, practically never
/// across replicas, and do not reveal how many requests the process has served.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct RequestId([u8; 32]);

impl RequestId {
    /// A fresh id.
    pub fn generate() -> Self {
        static KEYS: std::sync::OnceLock<(u64, u64)> = std::sync::OnceLock::new();
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let (prefix, key) = *KEYS.get_or_init(|| {
            let mut bytes = [0u8; 16];
            // Without OS randomness the ids stay unique within the process (the permutation of
            // the counter is a bijection); the random parts only separate replicas and hide the
            // counter, so a fixed fallback is acceptable.
            let _ = getrandom::fill(&mut bytes);
            let (a, b) = bytes.split_at(8);
            let word = |s: &[u8]| s.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
            (word(a), word(b))
        });
        // Each thread takes counter values in blocks: one shared atomic operation per block
        // instead of per request (the workers would otherwise contend for its cache line).
        thread_local! {
            static BLOCK: std::cell::Cell<(u64, u64)> = const { std::cell::Cell::new((0, 0)) };
        }
        let take_block = || {
            let start = COUNTER.fetch_add(ID_BLOCK, Ordering::Relaxed);
            (start, start.wrapping_add(ID_BLOCK))
        };
        let counter = BLOCK
            .try_with(|block| {
                let (mut next, mut end) = block.get();
                if next == end {
                    (next, end) = take_block();
                }
                block.set((next.wrapping_add(1), end));
                next
            })
            // Thread shutting down: a block of its own, used once.
            .unwrap_or_else(|_| take_block().0);
        let n = splitmix64(counter ^ key);
        let mut out = [0u8; 32];
        crate::hex::encode_into(&prefix.to_be_bytes(), &mut out[..16]);
        crate::hex::encode_into(&n.to_be_bytes(), &mut out[16..]);
        RequestId(out)
    }

    /// Reads an id back from its text (32 lowercase hex digits).
    pub fn parse(text: &str) -> Option<Self> {
        let bytes: [u8; 32] = text.as_bytes().try_into().ok()?;
        bytes
            .iter()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
            .then_some(RequestId(bytes))
    }

    /// The id as a header value (hex digits only: always a valid value).
    ///
    /// A header value owns its bytes, which would cost an allocation per response; instead the
    /// ids are written one after the other into a per-thread buffer and each value shares it,
    /// one allocation per [`IDS_PER_BUFFER`] responses. A buffer is freed when the last of its
    /// values is.
    fn header_value(&self) -> Option<HeaderValue> {
        thread_local! {
            static BUFFER: std::cell::RefCell<bytes::BytesMut> =
                std::cell::RefCell::new(bytes::BytesMut::new());
        }
        let shared = BUFFER
            .try_with(|buffer| {
                // Not re-entered (nothing below calls back here); stay correct if it were.
                let mut buffer = buffer.try_borrow_mut().ok()?;
                if buffer.capacity() < self.0.len() {
                    *buffer = bytes::BytesMut::with_capacity(self.0.len() * IDS_PER_BUFFER);
                }
                buffer.extend_from_slice(&self.0);
                Some(buffer.split().freeze())
            })
            .ok()
            .flatten();
        match shared {
            Some(bytes) => HeaderValue::from_maybe_shared(bytes).ok(),
            // Thread shutting down: an owned copy.
            None => HeaderValue::from_bytes(&self.0).ok(),
        }
    }

    /// The id's 32 hex digits (the bytes of [`as_str`](Self::as_str)).
    pub(crate) fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        // Only ASCII hex digits are ever written into the buffer.
        std::str::from_utf8(&self.0).unwrap_or("")
    }
}

/// The splitmix64 finalizer: a bijection on `u64` that scrambles consecutive inputs.
fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

impl fmt::Debug for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The client's address as far as portcullis is concerned.
///
/// An outer layer that knows better (a trusted-proxy resolver) inserts this into the request
/// extensions; otherwise [`RequestContextLayer`] derives it from the socket peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientIp(pub IpAddr);

/// Per-request facts established at the edge, available to every later layer and handler.
#[derive(Debug, Clone)]
pub struct RequestContext {
    /// The request id.
    pub request_id: RequestId,
    /// When the request entered the stack.
    pub started: Instant,
    /// When the request entered the stack, by the system clock (read together with
    /// [`started`](Self::started)).
    ///
    /// Checks behind the edge that use the system clock ([`SystemClock`]: rate limits, lockout,
    /// JWT `exp`/`nbf`/`iat`) take this time instead of reading the clock again, so a request is
    /// judged as of its arrival; a layer given any other [`Clock`](crate::clock::Clock) asks
    /// that clock (see [`Clock::is_system`](crate::clock::Clock::is_system)). The edge's audit
    /// event is stamped `received + duration`.
    ///
    /// [`SystemClock`]: crate::clock::SystemClock
    pub received: SystemTime,
    /// The client address, when known.
    pub client_ip: Option<IpAddr>,
    /// Whether the request is gRPC (rejections render as gRPC statuses).
    pub grpc: bool,
}

#[cfg(test)]
impl RequestContext {
    /// The context the edge gives a request that arrived at `received` (tests of the layers
    /// behind it).
    pub(crate) fn arrived_at(received: SystemTime, client_ip: Option<IpAddr>) -> Self {
        Self {
            request_id: RequestId::generate(),
            started: Instant::now(),
            received,
            client_ip,
            grpc: false,
        }
    }
}

/// The route template a request matched, recorded in the response extensions by the
/// authorization guard so the audit event can name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MatchedRoute(pub std::sync::Arc<str>);

/// Where the client address came from.
enum Source {
    /// An outer layer's [`ClientIp`], already in the extensions.
    Outer(IpAddr),
    /// Derived here from the socket peer (and the resolver).
    Derived(IpAddr),
}

fn client_ip(
    extensions: &http::Extensions,
    headers: &http::HeaderMap,
    resolver: Option<&ClientIpResolver>,
) -> Option<Source> {
    if let Some(ClientIp(ip)) = extensions.get::<ClientIp>() {
        return Some(Source::Outer(*ip));
    }
    let peer = peer_ip(extensions)?;
    Some(Source::Derived(match resolver {
        Some(resolver) => resolver.resolve(peer, headers),
        None => crate::client_ip::canonical(peer),
    }))
}

pub(crate) fn peer_ip(extensions: &http::Extensions) -> Option<IpAddr> {
    #[cfg(feature = "axum")]
    if let Some(info) = extensions.get::<axum::extract::ConnectInfo<SocketAddr>>() {
        return Some(info.0.ip());
    }
    #[cfg(feature = "tonic")]
    if let Some(info) = extensions.get::<tonic::transport::server::TcpConnectInfo>()
        && let Some(addr) = info.remote_addr()
    {
        return Some(addr.ip());
    }
    #[cfg(all(feature = "tonic", feature = "tls"))]
    if let Some(addr) = extensions
        .get::<tonic::transport::server::TlsConnectInfo<tonic::transport::server::TcpConnectInfo>>()
        .and_then(|info| info.get_ref().remote_addr())
    {
        return Some(addr.ip());
    }
    extensions.get::<SocketAddr>().map(SocketAddr::ip)
}

/// The outermost portcullis layer. See the [module docs](self).
#[derive(Debug, Clone)]
#[must_use]
pub struct RequestContextLayer {
    normalize_framework_rejections: bool,
    client_ip: Option<Arc<ClientIpResolver>>,
    resource_metadata: Option<HeaderValue>,
    auditor: Option<Auditor>,
}

impl Default for RequestContextLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl RequestContextLayer {
    /// The edge layer with framework-rejection normalization on.
    pub fn new() -> Self {
        Self {
            normalize_framework_rejections: true,
            client_ip: None,
            resource_metadata: None,
            auditor: None,
        }
    }

    /// Records the per-request events with `auditor` (sinks, sampling, alerts) and hands it
    /// to the inner layers in the request extensions, so their events (authorization
    /// decisions, `authn.success`) go to the same place. When `auditor` is the one installed
    /// with [`install_global`](crate::audit::install_global) and no outer layer inserted
    /// another, inner layers use it as the global auditor and it is not inserted.
    ///
    /// Default: the [`global`](crate::audit::global) auditor, which is the `tracing` sink
    /// unless the application installed another.
    pub fn with_auditor(mut self, auditor: Auditor) -> Self {
        self.auditor = Some(auditor);
        self
    }

    /// Resolves the client address with `resolver` (trusted proxies and forwarded headers)
    /// instead of taking the socket peer. The result is inserted as [`ClientIp`] for every
    /// later layer.
    pub fn with_client_ip_resolver(mut self, resolver: ClientIpResolver) -> Self {
        self.client_ip = Some(Arc::new(resolver));
        self
    }

    /// Adds `resource_metadata="<url>"` (RFC 9728 §5.1) to the `WWW-Authenticate` challenge of
    /// every 401, pointing clients at this resource's protected-resource metadata (see
    /// [`ProtectedResourceMetadata::metadata_url`](crate::authn::protected_resource::ProtectedResourceMetadata::metadata_url)).
    ///
    /// Default: no parameter. The URL is checked here: `https` (or `http` on a loopback host),
    /// a host, no user info, query or fragment, printable ASCII without quotes or backslashes.
    ///
    /// ```
    /// use portcullis::context::RequestContextLayer;
    ///
    /// let layer = RequestContextLayer::new()
    ///     .with_resource_metadata("https://api.example.com/.well-known/oauth-protected-resource")
    ///     .unwrap();
    /// # let _ = layer;
    /// assert!(RequestContextLayer::new().with_resource_metadata("https://x/\"y").is_err());
    /// ```
    pub fn with_resource_metadata(mut self, url: &str) -> Result<Self, ConfigError> {
        crate::authn::protected_resource::check_url("resource metadata URL", url)?;
        let value = HeaderValue::from_str(&format!("resource_metadata=\"{url}\""))
            .map_err(|_| ConfigError::new("resource metadata URL is not a valid header value"))?;
        self.resource_metadata = Some(value);
        Ok(self)
    }

    /// Leaves plain-text 4xx responses that carry no [`Rejection`] untouched.
    ///
    /// Default: normalization on. Turning it off lets framework error texts (which can echo
    /// request content, such as JSON parser messages) reach clients.
    pub fn insecure_keep_framework_rejections(mut self) -> Self {
        self.normalize_framework_rejections = false;
        self
    }
}

impl<S> Layer<S> for RequestContextLayer {
    type Service = RequestContextService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequestContextService {
            inner,
            normalize: self.normalize_framework_rejections,
            client_ip: self.client_ip.clone(),
            config: Arc::new(EdgeConfig {
                resource_metadata: self.resource_metadata.clone(),
                auditor: self.auditor.clone(),
            }),
        }
    }
}

/// The service produced by [`RequestContextLayer`].
#[derive(Debug, Clone)]
pub struct RequestContextService<S> {
    inner: S,
    normalize: bool,
    client_ip: Option<Arc<ClientIpResolver>>,
    config: Arc<EdgeConfig>,
}

/// The edge's rarely needed settings, shared with the response futures that need them.
#[derive(Debug)]
struct EdgeConfig {
    resource_metadata: Option<HeaderValue>,
    auditor: Option<Auditor>,
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for RequestContextService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    type Response = Response<SecureBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        let source = client_ip(req.extensions(), req.headers(), self.client_ip.as_deref());
        let (grpc, traceparent) = edge_headers(req.headers());
        let trace_id = traceparent.and_then(|v| TraceId::from_traceparent(v.as_bytes()));
        let context = RequestContext {
            request_id: RequestId::generate(),
            started: Instant::now(),
            received: SystemTime::now(),
            client_ip: source.as_ref().map(|s| match s {
                Source::Outer(ip) | Source::Derived(ip) => *ip,
            }),
            grpc,
        };
        // An outer layer's `ClientIp` is already there for the later layers.
        if let Some(Source::Derived(ip)) = source {
            req.extensions_mut().insert(ClientIp(ip));
        }
        // Inner layers record with the auditor in the extensions, or the global one: the
        // installed global auditor needs no per-request insert.
        let own_auditor = match &self.config.auditor {
            Some(auditor) => {
                let global = auditor.is_installed_global();
                if !(global && req.extensions().get::<Auditor>().is_none()) {
                    req.extensions_mut().insert(auditor.clone());
                }
                // The edge records with `global()`, the same auditor, without holding a clone.
                !global
            }
            None => false,
        };
        let state = EdgeState {
            method: req.method().clone(),
            path: request_path(req.uri()),
            trace_id: trace_id.and_then(TraceId::to_bytes),
            request_id: context.request_id,
            started: context.started,
            received: context.received,
            client_ip: context.client_ip,
            grpc: context.grpc,
            normalize: self.normalize,
            // Shared only when the response needs it: a clone is an atomic increment on a
            // counter every connection's requests touch.
            config: (own_auditor || self.config.resource_metadata.is_some())
                .then(|| self.config.clone()),
        };
        req.extensions_mut().insert(context);
        ResponseFuture {
            inner: self.inner.call(req),
            state: Some(state),
        }
    }
}

/// Whether the request is gRPC (as [`is_grpc`] judges it) and its first `traceparent`, in one
/// pass over the request's few headers instead of a hashed lookup per name. A request with
/// many headers is looked up instead.
fn edge_headers(headers: &http::HeaderMap) -> (bool, Option<&HeaderValue>) {
    const SCAN_LIMIT: usize = 8;
    if headers.len() > SCAN_LIMIT {
        return (is_grpc(headers), headers.get(TRACEPARENT));
    }
    let mut content_type = None;
    let mut traceparent = None;
    for (name, value) in headers {
        if *name == header::CONTENT_TYPE {
            content_type.get_or_insert(value);
        } else if *name == TRACEPARENT {
            traceparent.get_or_insert(value);
        }
    }
    (content_type.is_some_and(is_grpc_content_type), traceparent)
}

/// What the response needs of the request. Kept small: the response future holding it is moved
/// by every enclosing layer and by the server.
struct EdgeState {
    method: Method,
    /// [`Uri::path`](http::Uri::path)'s source (shared bytes, cheap to clone); the path is copied
    /// out only when the event needs it. `None` for a request without a path.
    path: Option<PathAndQuery>,
    /// The [`TraceId`] as bytes, half the size of its text.
    trace_id: Option<[u8; 16]>,
    // The `RequestContext`'s fields, side by side with the others (a nested struct would
    // be padded on its own).
    request_id: RequestId,
    started: Instant,
    /// For the audit event's timestamp, `received + duration`: no second clock read.
    received: SystemTime,
    client_ip: Option<IpAddr>,
    grpc: bool,
    normalize: bool,
    /// The edge's settings when the response needs them (resource metadata, an auditor other
    /// than the installed global one).
    config: Option<Arc<EdgeConfig>>,
}

impl EdgeState {
    fn path(&self) -> &str {
        self.path.as_ref().map_or("", PathAndQuery::path)
    }
}

/// The part of `uri` that [`Uri::path`](http::Uri::path) reads, or `None` when that is empty.
fn request_path(uri: &http::Uri) -> Option<PathAndQuery> {
    if uri.path().is_empty() {
        return None;
    }
    // A URI with a path has its path-and-query (origin form, absolute form or `*`).
    uri.path_and_query()
        .cloned()
        .or_else(|| PathAndQuery::try_from(uri.path()).ok())
}

pin_project! {
    /// Response future of [`RequestContextService`].
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        state: Option<EdgeState>,
    }
}

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<F, ResBody, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<ResBody>, E>>,
{
    type Output = Result<Response<SecureBody<ResBody>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let response = ready!(this.inner.poll(cx))?;
        let Some(state) = this.state.take() else {
            // Polled after completion: pass the response through without a second audit.
            return Poll::Ready(Ok(response.map(SecureBody::inner)));
        };
        Poll::Ready(Ok(finish(state, response)))
    }
}

fn framework_rejection_kind(status: StatusCode) -> Option<RejectionKind> {
    Some(match status {
        StatusCode::BAD_REQUEST => RejectionKind::BadRequest,
        StatusCode::UNAUTHORIZED => RejectionKind::InvalidCredential,
        StatusCode::FORBIDDEN => RejectionKind::Forbidden,
        StatusCode::NOT_FOUND => RejectionKind::NotFound,
        StatusCode::PAYLOAD_TOO_LARGE => RejectionKind::PayloadTooLarge,
        StatusCode::UNSUPPORTED_MEDIA_TYPE => RejectionKind::UnsupportedMediaType,
        StatusCode::UNPROCESSABLE_ENTITY => RejectionKind::ValidationFailed,
        StatusCode::TOO_MANY_REQUESTS => RejectionKind::RateLimited,
        _ => return None,
    })
}

fn finish<B>(state: EdgeState, response: Response<B>) -> Response<SecureBody<B>> {
    let (mut parts, body) = response.into_parts();
    let mut rejection = parts.extensions.remove::<Rejection>();
    if rejection.is_none()
        && state.normalize
        && !state.grpc
        && parts.status.is_client_error()
        && parts
            .headers
            .get(header::CONTENT_TYPE)
            .is_none_or(|v| v.as_bytes().starts_with(b"text/plain"))
    {
        rejection = framework_rejection_kind(parts.status)
            .map(|kind| Rejection::new(kind, format!("framework rejection {}", parts.status)));
    }

    let request_id = state.request_id;
    let duration = state.started.elapsed();
    let mut response = match &rejection {
        Some(rejection) => {
            let rendered = if state.grpc {
                rejection.to_grpc_response()
            } else {
                rejection.to_http_response(Some(request_id.as_str()))
            };
            let (mut rendered_parts, bytes) = rendered.into_parts();
            // Keep the extensions (principal, route, the rejection itself) for outer layers.
            rendered_parts.extensions = std::mem::take(&mut parts.extensions);
            rendered_parts.extensions.insert(rejection.clone());
            // Keep the IETF rate-limit headers a limiter attached to its refusal.
            for name in &crate::ratelimit::REFUSAL_HEADER_NAMES {
                for value in parts.headers.get_all(name) {
                    rendered_parts.headers.append(name, value.clone());
                }
            }
            drop(body);
            Response::from_parts(rendered_parts, SecureBody::fixed(bytes))
        }
        None => Response::from_parts(parts, SecureBody::inner(body)),
    };
    let config = state.config.as_deref();
    if let (Some(parameter), Some(_)) = (
        config.and_then(|c| c.resource_metadata.as_ref()),
        &rejection,
    ) && response.status() == StatusCode::UNAUTHORIZED
    {
        add_resource_metadata(response.headers_mut(), parameter);
    }
    if let Some(value) = request_id.header_value() {
        response.headers_mut().insert(REQUEST_ID, value);
    }

    let event = edge_event(&state, &response, rejection.as_ref(), duration);
    match config.and_then(|c| c.auditor.as_ref()) {
        Some(auditor) => auditor.record(event),
        None => crate::audit::global().record(event),
    }
    response
}

/// The request's own audit event.
fn edge_event<B>(
    state: &EdgeState,
    response: &Response<B>,
    rejection: Option<&Rejection>,
    duration: std::time::Duration,
) -> AuditEvent {
    let extensions = response.extensions();
    let route = extensions.get::<MatchedRoute>().map(|r| r.0.clone());
    let event_type = rejection.map_or(EventType::AuthzAllow, |r| {
        EventType::from_rejection_event(r.kind().audit_event_type())
    });
    // Stamped when the response passes, as the arrival time plus the duration: the clock was
    // read for the duration just now and need not be read again.
    let mut event = match state.received.checked_add(duration) {
        Some(at) => AuditEvent::at(event_type, at),
        None => AuditEvent::new(event_type),
    };
    event.request_id = Some(state.request_id);
    event.trace_id = state.trace_id.map(TraceId::from_bytes);
    event.principal = extensions.get::<Principal>().cloned();
    event.client_ip = state.client_ip;
    event.method = Some(state.method.clone());
    if state.grpc {
        event.grpc_method = Some(truncate(state.path(), 256).into());
    }
    if route.is_none() || rejection.is_some() {
        event.path = Some(truncate(state.path(), 256).into());
    }
    event.route = route;
    event.status = Some(response.status().as_u16());
    event.duration = Some(duration);
    if let Some(rejection) = rejection {
        if state.grpc {
            event.grpc_status = Some(rejection.kind().grpc_code());
        }
        event.reason_code = Some(rejection.kind().name());
        event.reason = Some(rejection.detail().to_owned().into());
        if let Some(policy) = rejection.policy_id() {
            event.policy_ids.push(policy.into());
        }
        event.decision_id = rejection.decision_id().map(Into::into);
    }
    event
}

/// Appends the `resource_metadata` parameter to the Bearer challenge.
fn add_resource_metadata(headers: &mut http::HeaderMap, parameter: &HeaderValue) {
    let Some(challenge) = headers.get(header::WWW_AUTHENTICATE) else {
        return;
    };
    let mut value = challenge.as_bytes().to_vec();
    // A bare scheme takes its first parameter after a space, later ones after a comma.
    value.extend_from_slice(if value.contains(&b' ') { b", " } else { b" " });
    value.extend_from_slice(parameter.as_bytes());
    if let Ok(value) = HeaderValue::from_bytes(&value) {
        headers.insert(header::WWW_AUTHENTICATE, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn resource_metadata_is_added_to_401_challenges_only() {
        use tower::{ServiceExt, service_fn};

        const URL: &str = "https://api.example.com/.well-known/oauth-protected-resource";
        let refuse = |rejection: Rejection| {
            RequestContextLayer::new()
                .with_resource_metadata(URL)
                .unwrap()
                .layer(service_fn(move |_req: Request<String>| {
                    let rejection = rejection.clone();
                    async move {
                        Ok::<_, std::convert::Infallible>(
                            rejection.into_deferred_response::<String>(),
                        )
                    }
                }))
        };
        let challenge = |rejection: Rejection| async move {
            let response = refuse(rejection)
                .oneshot(Request::new(String::new()))
                .await
                .unwrap();
            response
                .headers()
                .get(header::WWW_AUTHENTICATE)
                .map(|v| v.to_str().unwrap().to_owned())
        };
        assert_eq!(
            challenge(Rejection::missing_credential()).await.unwrap(),
            format!("Bearer resource_metadata=\"{URL}\"")
        );
        assert_eq!(
            challenge(Rejection::invalid_credential("x")).await.unwrap(),
            format!(
                "Bearer error=\"invalid_token\", error_description=\"The access token is invalid or expired\", resource_metadata=\"{URL}\""
            )
        );
        let forbidden = challenge(Rejection::forbidden("x")).await.unwrap();
        assert!(!forbidden.contains("resource_metadata"), "{forbidden}");
        assert_eq!(challenge(Rejection::not_found()).await, None);
        // Without the option, nothing changes.
        let plain = RequestContextLayer::new()
            .layer(service_fn(|_req: Request<String>| async {
                Ok::<_, std::convert::Infallible>(
                    Rejection::missing_credential().into_deferred_response::<String>(),
                )
            }))
            .oneshot(Request::new(String::new()))
            .await
            .unwrap();
        assert_eq!(plain.headers()[header::WWW_AUTHENTICATE], "Bearer");

        for bad in [
            "https://api.example.com/\"x",
            "https://api.example.com/\r\nx",
            "http://api.example.com/meta",
            "https://api.example.com/#frag",
            "not a url",
        ] {
            assert!(
                RequestContextLayer::new()
                    .with_resource_metadata(bad)
                    .is_err(),
                "{bad:?}"
            );
        }
    }

    #[tokio::test]
    async fn resolved_client_ip_reaches_inner_layers() {
        use crate::client_ip::ForwardedHeader;
        use tower::{ServiceExt, service_fn};

        let resolver = ClientIpResolver::builder()
            .trust_proxy("10.0.0.0/8")
            .unwrap()
            .forwarded_header(ForwardedHeader::XForwardedFor)
            .build();
        let svc = RequestContextLayer::new()
            .with_client_ip_resolver(resolver)
            .layer(service_fn(|req: Request<String>| async move {
                let ip = req.extensions().get::<ClientIp>().map(|c| c.0.to_string());
                Ok::<_, std::convert::Infallible>(Response::new(ip.unwrap_or_default()))
            }));
        let request = |peer: &str| {
            let mut req = Request::builder()
                .header("x-forwarded-for", "6.6.6.6, 203.0.113.9")
                .body(String::new())
                .unwrap();
            req.extensions_mut()
                .insert(SocketAddr::new(peer.parse().unwrap(), 4000));
            req
        };
        let via_proxy = svc.clone().oneshot(request("10.0.0.2")).await.unwrap();
        assert_eq!(body_text(via_proxy).await, "203.0.113.9");
        let direct = svc.oneshot(request("198.51.100.1")).await.unwrap();
        assert_eq!(body_text(direct).await, "198.51.100.1");
    }

    async fn body_text<B>(response: Response<SecureBody<B>>) -> String
    where
        B: http_body::Body<Data = bytes::Bytes>,
        B::Error: Into<crate::body::BoxError>,
    {
        use http_body_util::BodyExt;
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[test]
    fn request_path_is_the_uri_path() {
        for text in [
            "/",
            "/api/me",
            "/api/me?x=1&y=2",
            "/a%20b",
            "*",
            "https://api.example.com",
            "https://api.example.com/v1/items?q=1",
            "api.example.com:443",
        ] {
            let uri: http::Uri = text.parse().unwrap();
            let path = request_path(&uri);
            assert_eq!(
                path.as_ref().map_or("", PathAndQuery::path),
                uri.path(),
                "{text}"
            );
        }
    }

    /// An auditor that keeps every event it records.
    fn capturing_auditor() -> (Auditor, Arc<std::sync::Mutex<Vec<AuditEvent>>>) {
        let events = Arc::new(std::sync::Mutex::new(Vec::<AuditEvent>::new()));
        let captured = events.clone();
        let auditor = Auditor::builder()
            .sink(move |event: &AuditEvent| captured.lock().unwrap().push(event.clone()))
            .build()
            .unwrap();
        (auditor, events)
    }

    #[tokio::test]
    async fn audit_event_keeps_path_trace_id_and_auditor() {
        use tower::{ServiceExt, service_fn};

        let (auditor, events) = capturing_auditor();
        let svc = RequestContextLayer::new()
            .with_auditor(auditor)
            .layer(service_fn(|_req: Request<String>| async {
                Ok::<_, std::convert::Infallible>(
                    Rejection::not_found().into_deferred_response::<String>(),
                )
            }));
        let request = Request::builder()
            .method("PATCH")
            .uri("https://api.example.com/v1/items?q=secret")
            .header(
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            )
            .body(String::new())
            .unwrap();
        let response = svc.oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        let events = events.lock().unwrap();
        let [event] = events.as_slice() else {
            panic!("{} events", events.len());
        };
        assert_eq!(event.status, Some(404));
        assert_eq!(event.reason_code, Some("not_found"));
        assert_eq!(event.path.as_deref(), Some("/v1/items"));
        assert_eq!(event.method, Some(Method::PATCH));
        assert_eq!(
            event.trace_id.map(|t| t.as_str().to_owned()).as_deref(),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
    }

    #[tokio::test]
    async fn arrival_time_reaches_inner_layers_and_stamps_the_audit_event() {
        use std::sync::Mutex;
        use tower::{ServiceExt, service_fn};

        let (auditor, events) = capturing_auditor();
        let seen = Arc::new(Mutex::new(None::<RequestContext>));
        let inner_seen = seen.clone();
        let svc = RequestContextLayer::new()
            .with_auditor(auditor)
            .layer(service_fn(move |req: Request<String>| {
                let context = req.extensions().get::<RequestContext>().cloned();
                *inner_seen.lock().unwrap() = context;
                async {
                    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                    Ok::<_, std::convert::Infallible>(Response::new(String::new()))
                }
            }));
        let before = SystemTime::now();
        let response = svc.oneshot(Request::new(String::new())).await.unwrap();
        let after = SystemTime::now();
        assert_eq!(response.status(), StatusCode::OK);
        let context = seen.lock().unwrap().clone().expect("context");
        assert!(before <= context.received && context.received <= after);
        let events = events.lock().unwrap();
        let [event] = events.as_slice() else {
            panic!("{} events", events.len());
        };
        // Stamped at the end of the request without reading the clock again: arrival plus the
        // duration.
        let duration = event.duration.expect("duration");
        assert!(duration >= std::time::Duration::from_millis(5));
        assert_eq!(event.timestamp, context.received + duration);
    }

    #[test]
    fn edge_headers_agree_with_lookups() {
        let cases: Vec<Vec<(&str, &str)>> = vec![
            vec![],
            vec![("content-type", "application/grpc")],
            vec![
                ("content-type", "application/grpc+proto"),
                ("te", "trailers"),
            ],
            vec![("content-type", "application/json")],
            vec![
                (
                    "traceparent",
                    "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
                ),
                ("authorization", "Bearer x"),
            ],
            // Repeated names: the first value counts, as `HeaderMap::get` returns it.
            vec![
                ("content-type", "text/plain"),
                ("content-type", "application/grpc"),
                ("traceparent", "first"),
                ("traceparent", "second"),
            ],
            // More headers than are scanned: looked up instead.
            (0..12)
                .map(|i| {
                    (
                        ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k", "l"][i],
                        "v",
                    )
                })
                .chain([("content-type", "application/grpc"), ("traceparent", "t")])
                .collect(),
        ];
        for case in cases {
            let mut headers = http::HeaderMap::new();
            for (name, value) in &case {
                headers.append(
                    HeaderName::from_static(name),
                    HeaderValue::from_static(value),
                );
            }
            let (grpc, traceparent) = edge_headers(&headers);
            assert_eq!(grpc, is_grpc(&headers), "{case:?}");
            assert_eq!(traceparent, headers.get(TRACEPARENT), "{case:?}");
        }
    }

    #[test]
    fn request_id_header_values_match_the_text() {
        // More ids than one buffer holds, kept alive across buffers, each its own value.
        let ids: Vec<RequestId> = (0..3 * IDS_PER_BUFFER + 5)
            .map(|_| RequestId::generate())
            .collect();
        let values: Vec<HeaderValue> = ids.iter().map(|id| id.header_value().unwrap()).collect();
        for (id, value) in ids.iter().zip(&values) {
            // What the previous implementation produced.
            assert_eq!(value, &HeaderValue::from_str(id.as_str()).unwrap());
            assert_eq!(value.len(), 32);
        }
        // On another thread, too (its own buffer).
        let id = RequestId::generate();
        let value = std::thread::spawn(move || id.header_value().unwrap())
            .join()
            .unwrap();
        assert_eq!(value.to_str().unwrap(), id.as_str());
        drop(ids);
        // Values outlive the ids and one another.
        assert!(values.iter().all(|v| v.len() == 32));
    }

    #[test]
    fn request_ids_stay_unique_across_threads_and_counter_blocks() {
        let per_thread = 3 * ID_BLOCK as usize + 7;
        let threads: Vec<_> = (0..4)
            .map(|_| {
                std::thread::spawn(move || {
                    (0..per_thread)
                        .map(|_| RequestId::generate())
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut all = std::collections::HashSet::new();
        for thread in threads {
            for id in thread.join().unwrap() {
                assert!(all.insert(id), "duplicate id {id}");
            }
        }
        assert_eq!(all.len(), 4 * per_thread);
    }

    #[test]
    fn request_ids_are_unique_hex_and_not_sequential() {
        let ids: Vec<RequestId> = (0..1000).map(|_| RequestId::generate()).collect();
        let set: std::collections::HashSet<_> = ids.iter().collect();
        assert_eq!(set.len(), ids.len());
        for id in &ids {
            assert_eq!(id.as_str().len(), 32);
            assert!(id.as_str().bytes().all(|b| b.is_ascii_hexdigit()));
        }
        // Consecutive ids differ in their second half by more than a counter step would.
        let tail = |id: &RequestId| u64::from_str_radix(&id.as_str()[16..], 16).unwrap();
        assert!(
            ids.windows(2)
                .any(|w| tail(&w[1]).abs_diff(tail(&w[0])) > 1_000_000)
        );
    }
}
