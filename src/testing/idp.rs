//! An in-process identity provider: OpenID Connect discovery and a JWKS on a loopback port,
//! with switchable faults and fetch counters.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderValue, Request, Response, StatusCode, header};
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

use super::TestKey;

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// How a [`TestIdp`] misbehaves. Faults apply to the discovery document and the JWKS alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Fault {
    /// Answers normally.
    #[default]
    None,
    /// Answers normally after this delay (to exceed a client's timeout).
    Delay(Duration),
    /// Answers with this HTTP status and a short text body.
    Status(u16),
    /// Answers 200 with a body that is not valid JSON.
    MalformedJson,
    /// Stops answering: new connections are closed as soon as they are accepted.
    Down,
}

struct IdpState {
    base: String,
    issuer: Mutex<String>,
    jwks: Mutex<String>,
    cache_control: Mutex<Option<String>>,
    fault: Mutex<Fault>,
    jwks_fetches: AtomicUsize,
    discovery_fetches: AtomicUsize,
    discovery_paths: Mutex<Vec<String>>,
    fetched: Notify,
}

/// An identity provider for tests, listening on `127.0.0.1` on a free port.
///
/// It serves `GET {issuer path}/.well-known/openid-configuration` (for any issuer path, so
/// issuers such as `{url}/realms/demo` work) and `GET /jwks`, counts the requests it answers,
/// and can be switched to a [`Fault`]. Every response carries `Connection: close`, so each
/// fetch is a new connection and [`Fault::Down`] takes effect at once. Dropping it stops the
/// server.
///
/// ```
/// use portcullis::testing::{Fault, TestIdp, TestKey};
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let idp = TestIdp::start().await.unwrap();
/// idp.set_keys(&[&TestKey::ed25519("k1")]);
/// assert!(idp.jwks_url().starts_with("http://127.0.0.1:"));
/// idp.set_fault(Fault::Status(500));
/// assert_eq!(idp.jwks_fetches(), 0);
/// # });
/// ```
pub struct TestIdp {
    state: Arc<IdpState>,
    addr: SocketAddr,
    server: tokio::task::AbortHandle,
}

impl fmt::Debug for TestIdp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestIdp")
            .field("addr", &self.addr)
            .field("issuer", &self.issuer())
            .field("fault", &*lock(&self.state.fault))
            .finish_non_exhaustive()
    }
}

impl Drop for TestIdp {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// Accepts connections, closing them at once while the server is [`Fault::Down`].
struct SwitchableListener {
    inner: TcpListener,
    state: Arc<IdpState>,
}

impl axum::serve::Listener for SwitchableListener {
    type Io = TcpStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.inner.accept().await {
                Ok((io, addr)) => {
                    if *lock(&self.state.fault) == Fault::Down {
                        drop(io);
                        continue;
                    }
                    return (io, addr);
                }
                // Out of file descriptors and similar: back off briefly and retry.
                Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

impl TestIdp {
    /// Binds `127.0.0.1:0` and serves. The issuer is the server's URL (`http://127.0.0.1:PORT`,
    /// no trailing slash) and the JWKS is empty until [`set_keys`](Self::set_keys).
    pub async fn start() -> io::Result<Self> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let base = format!("http://{addr}");
        let state = Arc::new(IdpState {
            issuer: Mutex::new(base.clone()),
            base,
            jwks: Mutex::new(json!({"keys": []}).to_string()),
            cache_control: Mutex::new(None),
            fault: Mutex::new(Fault::None),
            jwks_fetches: AtomicUsize::new(0),
            discovery_fetches: AtomicUsize::new(0),
            discovery_paths: Mutex::new(Vec::new()),
            fetched: Notify::new(),
        });
        let app = Router::new()
            .route("/jwks", axum::routing::get(serve_jwks))
            .fallback(serve_discovery)
            .with_state(state.clone());
        let listener = SwitchableListener {
            inner: listener,
            state: state.clone(),
        };
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        })
        .abort_handle();
        Ok(Self {
            state,
            addr,
            server,
        })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        self.state.base.clone()
    }
    /// The issuer named in the discovery document (initially [`url`](Self::url)).
    pub fn issuer(&self) -> String {
        lock(&self.state.issuer).clone()
    }
    /// Changes the issuer named in the discovery document (for issuer-mismatch and
    /// trailing-slash tests).
    pub fn set_issuer(&self, issuer: impl Into<String>) {
        *lock(&self.state.issuer) = issuer.into();
    }
    /// `{url}/jwks`.
    pub fn jwks_url(&self) -> String {
        format!("{}/jwks", self.state.base)
    }
    /// Serves the public keys of `keys` (HMAC keys are skipped, see
    /// [`jwks_json`](super::jwks_json)).
    pub fn set_keys(&self, keys: &[&TestKey]) {
        self.set_jwks_json(super::jwks_json(keys));
    }
    /// Serves `json` verbatim as the JWKS.
    pub fn set_jwks_json(&self, json: impl Into<String>) {
        *lock(&self.state.jwks) = json.into();
    }
    /// Sends this `Cache-Control` value with the JWKS (default: none).
    pub fn set_cache_control(&self, value: Option<&str>) {
        *lock(&self.state.cache_control) = value.map(str::to_owned);
    }
    /// Switches the server to `fault` ([`Fault::None`] restores normal service).
    pub fn set_fault(&self, fault: Fault) {
        *lock(&self.state.fault) = fault;
    }
    /// JWKS requests answered so far (requests refused by [`Fault::Down`] are not counted).
    pub fn jwks_fetches(&self) -> usize {
        self.state.jwks_fetches.load(Ordering::SeqCst)
    }
    /// Discovery requests answered so far.
    pub fn discovery_fetches(&self) -> usize {
        self.state.discovery_fetches.load(Ordering::SeqCst)
    }
    /// The paths discovery documents were requested at, in order.
    pub fn discovery_paths(&self) -> Vec<String> {
        lock(&self.state.discovery_paths).clone()
    }
    /// Waits until at least `count` JWKS requests were answered, at most `timeout`; returns
    /// whether they were.
    pub async fn wait_for_jwks_fetches(&self, count: usize, timeout: Duration) -> bool {
        let wait = async {
            loop {
                let notified = self.state.fetched.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                if self.jwks_fetches() >= count {
                    return;
                }
                notified.await;
            }
        };
        tokio::time::timeout(timeout, wait).await.is_ok()
    }
}

/// A JWKS with `count` copies of `key`'s public JWK, with kids `{kid}-0`, `{kid}-1`, ...
/// (for tests of key-count limits).
pub fn jwks_json_copies(key: &TestKey, count: usize) -> String {
    let Some(mut jwk) = key.public_jwk().cloned() else {
        return json!({"keys": []}).to_string();
    };
    // Serialize the key once without its kid, then splice a kid into each copy (fast even in
    // debug builds, for tens of thousands of keys).
    if let Some(members) = jwk.as_object_mut() {
        members.remove("kid");
    }
    let rest = jwk.to_string();
    let rest = rest.strip_prefix('{').unwrap_or(&rest);
    let kid = Value::from(key.kid()).to_string();
    let kid = kid.trim_matches('"');
    let mut out = String::with_capacity(count * (rest.len() + kid.len() + 20) + 16);
    out.push_str("{\"keys\":[");
    for i in 0..count {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&format!("{{\"kid\":\"{kid}-{i}\","));
        out.push_str(rest);
    }
    out.push_str("]}");
    out
}

/// Applies the current fault; `Some(response)` when it replaces the normal answer.
async fn apply_fault(state: &IdpState) -> Option<Response<Body>> {
    let fault = *lock(&state.fault);
    match fault {
        Fault::None => None,
        Fault::Delay(delay) => {
            tokio::time::sleep(delay).await;
            None
        }
        Fault::Status(code) => {
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            Some(respond(status, "text/plain", "fault injected".to_owned()))
        }
        Fault::MalformedJson => Some(respond(
            StatusCode::OK,
            "application/json",
            "{\"keys\": [{\"kty\": ".to_owned(),
        )),
        // Only reached by a request that raced the switch.
        Fault::Down => Some(respond(
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            String::new(),
        )),
    }
}

fn respond(status: StatusCode, content_type: &'static str, body: String) -> Response<Body> {
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

async fn serve_jwks(State(state): State<Arc<IdpState>>) -> Response<Body> {
    state.jwks_fetches.fetch_add(1, Ordering::SeqCst);
    state.fetched.notify_waiters();
    if let Some(response) = apply_fault(&state).await {
        return response;
    }
    let body = lock(&state.jwks).clone();
    let mut response = respond(StatusCode::OK, "application/jwk-set+json", body);
    if let Some(value) = lock(&state.cache_control).as_deref()
        && let Ok(value) = HeaderValue::from_str(value)
    {
        response.headers_mut().insert(header::CACHE_CONTROL, value);
    }
    response
}

async fn serve_discovery(
    State(state): State<Arc<IdpState>>,
    request: Request<Body>,
) -> Response<Body> {
    let path = request.uri().path();
    if !path.ends_with("/.well-known/openid-configuration") {
        return respond(StatusCode::NOT_FOUND, "text/plain", String::new());
    }
    state.discovery_fetches.fetch_add(1, Ordering::SeqCst);
    lock(&state.discovery_paths).push(path.to_owned());
    if let Some(response) = apply_fault(&state).await {
        return response;
    }
    let base = &state.base;
    let issuer = lock(&state.issuer).clone();
    let document = json!({
        "issuer": issuer,
        "jwks_uri": format!("{base}/jwks"),
        "token_endpoint": format!("{base}/token"),
        "introspection_endpoint": format!("{base}/introspect"),
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["ES256", "EdDSA", "RS256"],
    });
    respond(StatusCode::OK, "application/json", document.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::authn::jwt::VerificationKey;

    #[test]
    fn copies_are_distinct_valid_keys() {
        let key = TestKey::es256("k");
        let keys = VerificationKey::from_jwks_json(&jwks_json_copies(&key, 3)).unwrap();
        let kids: Vec<_> = keys.iter().map(|k| k.kid().unwrap().to_owned()).collect();
        assert_eq!(kids, ["k-0", "k-1", "k-2"]);
        assert_eq!(jwks_json_copies(&key, 0), r#"{"keys":[]}"#);
        let hmac = TestKey::hmac("h", jsonwebtoken::Algorithm::HS256, &[7; 32]);
        assert_eq!(jwks_json_copies(&hmac, 2), r#"{"keys":[]}"#);
    }

    #[tokio::test]
    async fn faults_switch_and_fetches_are_counted() {
        let idp = TestIdp::start().await.unwrap();
        idp.set_keys(&[&TestKey::ed25519("k")]);
        let client = reqwest_free_get;
        assert_eq!(client(&idp, "/jwks").await.0, 200);
        idp.set_fault(Fault::Status(503));
        assert_eq!(client(&idp, "/jwks").await.0, 503);
        idp.set_fault(Fault::MalformedJson);
        let (status, body) = client(&idp, "/jwks").await;
        assert_eq!(status, 200);
        assert!(serde_json::from_str::<Value>(&body).is_err());
        idp.set_fault(Fault::None);
        let (status, body) = client(&idp, "/x/.well-known/openid-configuration").await;
        assert_eq!(status, 200);
        assert!(body.contains(&idp.issuer()));
        assert_eq!(client(&idp, "/other").await.0, 404);
        assert_eq!(idp.jwks_fetches(), 3);
        assert_eq!(idp.discovery_fetches(), 1);
        assert!(
            idp.wait_for_jwks_fetches(3, Duration::from_millis(10))
                .await
        );
        assert!(
            !idp.wait_for_jwks_fetches(4, Duration::from_millis(10))
                .await
        );
        idp.set_fault(Fault::Down);
        assert_eq!(client(&idp, "/jwks").await.0, 0, "connection closed");
        assert_eq!(idp.jwks_fetches(), 3);
    }

    /// A minimal HTTP/1.1 GET over a raw socket: (status, body); status 0 when the connection
    /// closed without an answer.
    async fn reqwest_free_get(idp: &TestIdp, path: &str) -> (u16, String) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = TcpStream::connect(idp.addr).await.unwrap();
        let request =
            format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
        if stream.write_all(request.as_bytes()).await.is_err() {
            return (0, String::new());
        }
        let mut response = String::new();
        if stream.read_to_string(&mut response).await.is_err() || response.is_empty() {
            return (0, String::new());
        }
        let status = response[9..12].parse().unwrap();
        let body = response
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default();
        (status, body)
    }
}
