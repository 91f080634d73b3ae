//! Keys from a remote JWKS document, refreshed in the background (feature `oidc`).
//!
//! [`RemoteJwks`] is a [`KeySource`]: hand it to
//! [`JwtAuthenticatorBuilder::key_source`](super::JwtAuthenticatorBuilder::key_source) and the
//! authenticator follows the identity provider's key rotation without a restart.
//!
//! - **Reads never wait.** The request path loads the current keys from an `ArcSwap`; no lock
//!   is taken and no fetch is ever awaited by a request whose token names a known key.
//! - **Background refresh** every `Cache-Control: max-age` (clamped to
//!   [`refresh_bounds`](RemoteJwksBuilder::refresh_bounds)), or
//!   [`default_refresh`](RemoteJwksBuilder::default_refresh) when the response has none; after a
//!   failure, retries back off exponentially.
//! - **Unknown `kid`**: one single-flight refetch (concurrent callers await the same fetch),
//!   at most once per [`unknown_kid_interval`](RemoteJwksBuilder::unknown_kid_interval), and a
//!   bounded negative cache of kids that were looked up and not found. Attackers choose `kid`s:
//!   a flood of random ones costs the identity provider at most one fetch per interval.
//! - **Last-good keys are kept** when the identity provider is down, slow, answers with an
//!   error status, an oversized body, malformed JSON, too many keys, or no usable key.
//! - **Never HMAC**: symmetric (`oct`) keys in the document are skipped, as are encryption
//!   keys and unsupported key types. Keys without `alg` get the algorithms of their key type,
//!   intersected with the authenticator's allow-list.
//! - **Readiness**: [`is_ready`](RemoteJwks::is_ready) once one fetch succeeded;
//!   [`ready`](RemoteJwks::ready) / [`wait_ready`](RemoteJwks::wait_ready) await it.
//!
//! | setting | default | effect of changing it |
//! |---|---|---|
//! | [`connect_timeout`](RemoteJwksBuilder::connect_timeout) | 2 s | longer: a dead identity provider holds refreshes (never requests) longer |
//! | [`timeout`](RemoteJwksBuilder::timeout) (whole request, body included) | 5 s | same; also bounds how long [`start`](RemoteJwks::start) waits |
//! | [`max_response_bytes`](RemoteJwksBuilder::max_response_bytes) | 1 MiB | larger responses are refused (memory bound) |
//! | [`max_keys`](RemoteJwksBuilder::max_keys) | 100 | a document with more keys is refused as a whole (CPU and memory bound) |
//! | [`refresh_bounds`](RemoteJwksBuilder::refresh_bounds) | 60 s ..= 24 h | a lower minimum lets the identity provider's `max-age` make you poll it more often |
//! | [`default_refresh`](RemoteJwksBuilder::default_refresh) | 5 min | how stale keys may get when the response has no `max-age` |
//! | [`unknown_kid_interval`](RemoteJwksBuilder::unknown_kid_interval) | 30 s | shorter: rotations are picked up sooner, but unknown `kid`s can trigger more fetches |
//! | [`negative_cache`](RemoteJwksBuilder::negative_cache) | 1,000 kids for 60 s | |
//! | [`retry_backoff`](RemoteJwksBuilder::retry_backoff) | 1 s doubling to 60 s | |
//! | [`startup`](RemoteJwksBuilder::startup) | [`StartupMode::FailFast`] | [`StartupMode::NotReady`] starts without keys (every token refused) and keeps retrying |
//! | scheme | `https` only | [`insecure_allow_http`](RemoteJwksBuilder::insecure_allow_http) lets anyone on the path substitute keys |
//! | redirects | not followed | |
//!
//! ```
//! use std::sync::Arc;
//! use portcullis::authn::jwt::{JwtAuthenticator, RemoteJwks};
//! use portcullis::testing::{TestIdp, TestKey};
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let key = TestKey::es256("k1");
//! let idp = TestIdp::start().await.unwrap(); // serves a JWKS on 127.0.0.1
//! idp.set_keys(&[&key]);
//!
//! let jwks = RemoteJwks::builder(idp.jwks_url())
//!     .insecure_allow_http() // loopback test server only; production JWKS are https
//!     .build()
//!     .unwrap();
//! jwks.start().await.unwrap(); // first fetch; fails fast by default
//! assert!(jwks.is_ready());
//!
//! let jwt = JwtAuthenticator::builder()
//!     .issuer(idp.issuer())
//!     .audience("api")
//!     .key_source(Arc::new(jwks.clone()))
//!     .build()
//!     .unwrap();
//! let token = key.mint(&key.claims("alice", &idp.issuer(), "api"));
//! assert_eq!(jwt.authenticate_token(&token).await.unwrap().subject(), "alice");
//! # });
//! ```
//!
//! # Deployment caveat
//! Keys are only as trustworthy as the channel they come over: keep `https`, and keep the
//! operating system's trust store current (certificates are verified with it). A key removed by
//! the identity provider stops verifying only after the next refresh, up to the refresh
//! interval later. Dropping every handle to a [`RemoteJwks`] stops its background task.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use futures_util::FutureExt;
use futures_util::future::{BoxFuture, Shared};
use http::HeaderMap;
use jsonwebtoken::jwk::Jwk;
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

use super::{KeySnapshot, KeySource, VerificationKey};
use crate::clock::{SharedClock, SystemClock};
use crate::error::ConfigError;

const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
const DEFAULT_MAX_RESPONSE_BYTES: usize = 1024 * 1024;
const DEFAULT_MAX_KEYS: usize = 100;
const DEFAULT_MIN_REFRESH: Duration = Duration::from_secs(60);
const DEFAULT_MAX_REFRESH: Duration = Duration::from_secs(24 * 3600);
const DEFAULT_REFRESH: Duration = Duration::from_secs(5 * 60);
const DEFAULT_UNKNOWN_KID_INTERVAL: Duration = Duration::from_secs(30);
const DEFAULT_NEGATIVE_CAPACITY: usize = 1_000;
const DEFAULT_NEGATIVE_TTL: Duration = Duration::from_secs(60);
const DEFAULT_RETRY_INITIAL: Duration = Duration::from_secs(1);
const DEFAULT_RETRY_MAX: Duration = Duration::from_secs(60);
/// Longest accepted timeout or interval (keeps time arithmetic far from overflow).
const MAX_INTERVAL: Duration = Duration::from_secs(365 * 24 * 3600);
/// A `kid` longer than this never triggers a fetch (real key ids are far shorter).
const MAX_KID_BYTES: usize = 256;

/// Locks a mutex whose critical sections never panic half-way; a poisoned lock still holds
/// consistent data, so it is used as is.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What [`RemoteJwks::start`] (and discovery) do when the identity provider cannot be reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum StartupMode {
    /// `start()` returns the error: the service refuses to start without keys. The default.
    #[default]
    FailFast,
    /// `start()` succeeds without keys, reports not ready, and keeps retrying in the
    /// background. Every token is refused until the first successful fetch.
    NotReady,
}

/// A failed fetch from an identity provider (JWKS or discovery document). The message names
/// what failed (status, timeout, size, parse error) and never contains response bodies or
/// credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct FetchError {
    message: String,
}

impl FetchError {
    pub(crate) fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
        }
    }

    /// What failed.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for FetchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for FetchError {}

/// A URL for messages and logs: scheme, host, port and path; no query, no user info.
pub(crate) fn display_url(url: &reqwest::Url) -> String {
    let mut shown = url.clone();
    shown.set_query(None);
    shown.set_fragment(None);
    // Only fails for URLs that cannot have credentials, which then have none to hide.
    let _ = shown.set_username("");
    let _ = shown.set_password(None);
    shown.to_string()
}

/// Parses and checks an identity-provider URL: `https` (or `http` when allowed), no
/// credentials in it.
pub(crate) fn parse_url(
    what: &str,
    url: &str,
    allow_http: bool,
) -> Result<reqwest::Url, ConfigError> {
    let parsed = reqwest::Url::parse(url)
        .map_err(|e| ConfigError::new(format!("{what} is not a valid URL: {e}")))?;
    match parsed.scheme() {
        "https" => {}
        "http" if allow_http => {}
        "http" => {
            return Err(ConfigError::new(format!(
                "{what} must use https (insecure_allow_http permits http, for tests on loopback)"
            )));
        }
        other => {
            return Err(ConfigError::new(format!(
                "{what} has unsupported scheme {other}"
            )));
        }
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(ConfigError::new(format!("{what} has no host")));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(ConfigError::new(format!(
            "{what} must not carry credentials"
        )));
    }
    Ok(parsed)
}

/// The HTTP settings shared by the JWKS and discovery fetchers.
pub(crate) fn http_client(
    connect_timeout: Duration,
    timeout: Duration,
    allow_http: bool,
) -> Result<reqwest::Client, ConfigError> {
    reqwest::Client::builder()
        .connect_timeout(connect_timeout)
        .timeout(timeout)
        .https_only(!allow_http)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("portcullis/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| ConfigError::new(format!("cannot build the HTTP client: {e}")))
}

/// GETs `url` and returns the headers and at most `max_bytes` of body; anything but a 2xx
/// within the client's timeouts is an error.
pub(crate) async fn fetch_bounded(
    client: &reqwest::Client,
    url: &reqwest::Url,
    accept: &'static str,
    max_bytes: usize,
) -> Result<(HeaderMap, Vec<u8>), FetchError> {
    let shown = display_url(url);
    let describe = |e: reqwest::Error| {
        let what = if e.is_timeout() {
            "timed out"
        } else if e.is_connect() {
            "connection failed"
        } else if e.is_redirect() {
            "redirect refused"
        } else {
            "request failed"
        };
        FetchError::new(format!("GET {shown}: {what}"))
    };
    let mut response = client
        .get(url.clone())
        .header(http::header::ACCEPT, accept)
        .send()
        .await
        .map_err(describe)?;
    let status = response.status();
    if !status.is_success() {
        return Err(FetchError::new(format!("GET {shown}: HTTP {status}")));
    }
    let too_large = || FetchError::new(format!("GET {shown}: body exceeds {max_bytes} bytes"));
    if response
        .content_length()
        .is_some_and(|len| len > max_bytes as u64)
    {
        return Err(too_large());
    }
    let headers = response.headers().clone();
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(describe)? {
        if body.len() + chunk.len() > max_bytes {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok((headers, body))
}

/// `max-age` from `Cache-Control` (`no-cache`/`no-store` count as zero).
fn cache_max_age(headers: &HeaderMap) -> Option<Duration> {
    let mut max_age = None;
    for value in headers.get_all(http::header::CACHE_CONTROL) {
        let Ok(value) = value.to_str() else { continue };
        for directive in value.split(',') {
            let directive = directive.trim();
            if directive.eq_ignore_ascii_case("no-cache")
                || directive.eq_ignore_ascii_case("no-store")
            {
                return Some(Duration::ZERO);
            }
            if let Some((name, seconds)) = directive.split_once('=')
                && name.trim().eq_ignore_ascii_case("max-age")
                && let Ok(seconds) = seconds.trim().trim_matches('"').parse::<u64>()
            {
                max_age = Some(Duration::from_secs(seconds));
            }
        }
    }
    max_age
}

/// A parsed JWKS: the usable keys and a fingerprint of them (to detect "no change").
struct ParsedJwks {
    keys: Vec<VerificationKey>,
    fingerprint: [u8; 32],
}

/// Parses a JWKS leniently key by key (bad keys are skipped), but refuses the whole document
/// when it is not a JWKS, has more than `max_keys` keys, or has no usable key.
fn parse_jwks(body: &[u8], max_keys: usize) -> Result<ParsedJwks, String> {
    #[derive(serde::Deserialize)]
    struct Document {
        keys: Vec<Value>,
    }
    let document: Document =
        serde_json::from_slice(body).map_err(|e| format!("JWKS is not valid JSON: {e}"))?;
    if document.keys.len() > max_keys {
        return Err(format!(
            "JWKS has {} keys, more than the maximum of {max_keys}",
            document.keys.len()
        ));
    }
    let mut keys = Vec::with_capacity(document.keys.len());
    let mut hasher = Sha256::new();
    for value in document.keys {
        let kid = value.get("kid").and_then(Value::as_str).map(str::to_owned);
        if value.get("kty").and_then(Value::as_str) == Some("oct") {
            tracing::warn!(target: "portcullis::jwks", kid, "symmetric (oct) key in JWKS refused");
            continue;
        }
        let serialized = value.to_string();
        let jwk: Jwk = match serde_json::from_value(value) {
            Ok(jwk) => jwk,
            Err(e) => {
                tracing::warn!(target: "portcullis::jwks", kid, error = %e, "unreadable JWK skipped");
                continue;
            }
        };
        match VerificationKey::from_jwk(&jwk) {
            Ok(key) => {
                hasher.update(serialized.len().to_be_bytes());
                hasher.update(serialized.as_bytes());
                keys.push(key);
            }
            Err(e) => {
                tracing::warn!(target: "portcullis::jwks", kid, error = %e, "JWK skipped");
            }
        }
    }
    if keys.is_empty() {
        return Err("JWKS has no usable signing key".to_owned());
    }
    Ok(ParsedJwks {
        keys,
        fingerprint: hasher.finalize().into(),
    })
}

#[derive(Debug, Clone)]
struct Config {
    url: reqwest::Url,
    shown_url: String,
    max_response_bytes: usize,
    max_keys: usize,
    min_refresh: Duration,
    max_refresh: Duration,
    default_refresh: Duration,
    unknown_kid_interval: Duration,
    negative_ttl: Duration,
    retry_initial: Duration,
    retry_max: Duration,
    startup: StartupMode,
}

impl Config {
    fn refresh_after(&self, max_age: Option<Duration>) -> Duration {
        max_age
            .unwrap_or(self.default_refresh)
            .clamp(self.min_refresh, self.max_refresh)
    }

    fn retry_after(&self, consecutive_failures: u32) -> Duration {
        let exponent = consecutive_failures.saturating_sub(1).min(20);
        self.retry_initial
            .saturating_mul(1u32 << exponent)
            .min(self.retry_max)
    }
}

/// Outcome of one fetch, shared by every caller that awaited it.
type FetchOutcome = Result<bool, FetchError>;
type InFlight = Shared<BoxFuture<'static, FetchOutcome>>;

struct State {
    in_flight: Option<InFlight>,
    /// Which fetch `in_flight` is (the value of `fetches` when it started).
    in_flight_id: u64,
    /// Clock time the last fetch started (rate limit for unknown kids).
    last_attempt: Option<SystemTime>,
    last_success: Option<SystemTime>,
    last_error: Option<String>,
    consecutive_failures: u32,
    /// When the background task fetches next.
    next_due: Instant,
    fingerprint: Option<[u8; 32]>,
}

struct Inner {
    config: Config,
    client: reqwest::Client,
    clock: SharedClock,
    current: ArcSwap<KeySnapshot>,
    state: Mutex<State>,
    negative: quick_cache::sync::Cache<String, SystemTime>,
    ready: watch::Sender<bool>,
    /// Wakes the background task when the schedule changed.
    wake: Arc<Notify>,
    fetches: AtomicU64,
    failures: AtomicU64,
    started: AtomicBool,
    runtime: Mutex<Option<tokio::runtime::Handle>>,
    task: Mutex<Option<tokio::task::AbortHandle>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(task) = lock(&self.task).take() {
            task.abort();
        }
    }
}

/// Clears the in-flight slot if its fetch task ends without reporting (cancelled, or
/// dropped by a runtime shutting down), so later callers start a new fetch.
struct InFlightGuard {
    inner: Arc<Inner>,
    id: u64,
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        let mut state = lock(&self.inner.state);
        if state.in_flight.is_some() && state.in_flight_id == self.id {
            state.in_flight = None;
        }
    }
}

impl Inner {
    fn runtime(&self) -> Option<tokio::runtime::Handle> {
        tokio::runtime::Handle::try_current()
            .ok()
            .or_else(|| lock(&self.runtime).clone())
    }

    /// Joins the fetch in flight, or starts one if `may_start` allows it (it sees the state
    /// under the lock). The fetch runs in its own task and reports through a channel, so no
    /// lock is held while it is awaited, and callers that give up do not cancel it.
    fn join_or_start(self: &Arc<Self>, may_start: impl FnOnce(&State) -> bool) -> Option<InFlight> {
        let (in_flight, runtime, report, id) = {
            let mut state = lock(&self.state);
            if let Some(in_flight) = &state.in_flight {
                return Some(in_flight.clone());
            }
            if !may_start(&state) {
                return None;
            }
            let Some(runtime) = self.runtime() else {
                let error = FetchError::new("no tokio runtime to fetch the JWKS on");
                return Some(futures_util::future::ready(Err(error)).boxed().shared());
            };
            state.last_attempt = Some(self.clock.now());
            let id = self.fetches.fetch_add(1, Ordering::Relaxed) + 1;
            let (report, outcome) = tokio::sync::oneshot::channel::<FetchOutcome>();
            let in_flight = async move {
                outcome
                    .await
                    .unwrap_or_else(|_| Err(FetchError::new("JWKS fetch task was cancelled")))
            }
            .boxed()
            .shared();
            state.in_flight = Some(in_flight.clone());
            state.in_flight_id = id;
            (in_flight, runtime, report, id)
        };
        // Spawned outside the lock: a runtime that is shutting down drops the task at once,
        // and the guard's drop takes the lock to clear the slot.
        let guard = InFlightGuard {
            inner: Arc::clone(self),
            id,
        };
        runtime.spawn(async move {
            let fetched = guard.inner.fetch_once().await;
            let _ = report.send(guard.inner.finish(fetched));
        });
        Some(in_flight)
    }

    fn fetch(self: &Arc<Self>) -> InFlight {
        // `may_start` always allows, so there is always a fetch to return.
        match self.join_or_start(|_| true) {
            Some(in_flight) => in_flight,
            None => futures_util::future::ready(Ok(false)).boxed().shared(),
        }
    }

    async fn fetch_once(&self) -> Result<(ParsedJwks, Option<Duration>), FetchError> {
        let (headers, body) = fetch_bounded(
            &self.client,
            &self.config.url,
            "application/jwk-set+json, application/json",
            self.config.max_response_bytes,
        )
        .await?;
        // Parsing up to `max_response_bytes` of JSON is CPU work: keep it off the threads
        // that serve requests.
        let max_keys = self.config.max_keys;
        let parsed = tokio::task::spawn_blocking(move || parse_jwks(&body, max_keys))
            .await
            .map_err(|_| "the JWKS parse task was cancelled".to_owned())
            .and_then(|parsed| parsed)
            .map_err(|e| FetchError::new(format!("GET {}: {e}", self.config.shown_url)))?;
        Ok((parsed, cache_max_age(&headers)))
    }

    /// Records a fetch's outcome: installs new keys (only when they changed, so the
    /// authenticator's token cache survives no-op refreshes) and schedules the next fetch.
    fn finish(&self, fetched: Result<(ParsedJwks, Option<Duration>), FetchError>) -> FetchOutcome {
        let now = self.clock.now();
        let mut state = lock(&self.state);
        state.in_flight = None;
        // Audited after the state lock is released (a blocking audit sink must not hold it).
        let mut rotated = None;
        let outcome = match fetched {
            Ok((parsed, max_age)) => {
                let changed = state.fingerprint != Some(parsed.fingerprint);
                if changed {
                    let kids: Vec<&str> = parsed.keys.iter().filter_map(|k| k.kid()).collect();
                    tracing::info!(target: "portcullis::jwks", url = %self.config.shown_url, ?kids, "JWKS keys updated");
                    rotated = Some(kids.join(","));
                    state.fingerprint = Some(parsed.fingerprint);
                    self.current
                        .store(Arc::new(KeySnapshot { keys: parsed.keys }));
                }
                crate::audit::metrics::jwks_refresh(if changed { "updated" } else { "unchanged" });
                state.last_success = Some(now);
                state.last_error = None;
                state.consecutive_failures = 0;
                state.next_due = Instant::now() + self.config.refresh_after(max_age);
                self.ready.send_replace(true);
                Ok(changed)
            }
            Err(error) => {
                self.failures.fetch_add(1, Ordering::Relaxed);
                crate::audit::metrics::jwks_refresh("failure");
                state.consecutive_failures = state.consecutive_failures.saturating_add(1);
                let retry = self.config.retry_after(state.consecutive_failures);
                state.next_due = Instant::now() + retry;
                tracing::warn!(
                    target: "portcullis::jwks",
                    error = %error,
                    retry_in = ?retry,
                    keeping_keys = self.current.load().keys.len(),
                    "JWKS refresh failed; last-good keys kept"
                );
                state.last_error = Some(error.message().to_owned());
                Err(error)
            }
        };
        drop(state);
        match (&outcome, rotated) {
            (Ok(_), Some(kids)) => crate::audit::global().record(
                crate::audit::AuditEvent::new(crate::audit::EventType::KeyRotated)
                    .with_reason_code("jwks_updated")
                    .with_detail("source", self.config.shown_url.clone())
                    .with_detail("kids", kids),
            ),
            (Err(_), _) => crate::audit::global().signal(crate::audit::Signal::JwksFailure),
            _ => {}
        }
        self.wake.notify_one();
        outcome
    }

    fn knows(&self, kid: &str) -> bool {
        self.current
            .load()
            .keys
            .iter()
            .any(|k| k.kid() == Some(kid))
    }

    async fn unknown_kid(self: &Arc<Self>, kid: &str) -> bool {
        if kid.len() > MAX_KID_BYTES {
            return false;
        }
        let now = self.clock.now();
        if let Some(until) = self.negative.get(kid)
            && now < until
        {
            return self.knows(kid);
        }
        let interval = self.config.unknown_kid_interval;
        let fetch = self.join_or_start(|state| match state.last_attempt {
            None => true,
            // A clock that went backwards does not lock refreshes out.
            Some(last) => now
                .duration_since(last)
                .map_or(true, |elapsed| elapsed >= interval),
        });
        if let Some(fetch) = fetch {
            // Errors are logged by `finish`; the caller only needs to know about the kid.
            let _ = fetch.await;
        }
        let known = self.knows(kid);
        if !known {
            self.negative
                .insert(kid.to_owned(), now + self.config.negative_ttl);
        }
        known
    }
}

/// The background refresh loop. It holds only a `Weak` reference, so dropping the last
/// [`RemoteJwks`] handle ends it (the handle's drop also aborts it).
async fn refresh_loop(weak: Weak<Inner>, wake: Arc<Notify>) {
    loop {
        let due = match weak.upgrade() {
            Some(inner) => lock(&inner.state).next_due,
            None => return,
        };
        tokio::select! {
            () = tokio::time::sleep_until(due) => {}
            () = wake.notified() => continue,
        }
        let fetch = {
            let Some(inner) = weak.upgrade() else { return };
            inner.join_or_start(|state| Instant::now() >= state.next_due)
        };
        // `None`: the schedule moved while sleeping; read it again.
        if let Some(fetch) = fetch {
            let _ = fetch.await;
        }
    }
}

/// A JWKS fetched over HTTP and kept fresh. Cheap to clone; all clones share the keys and the
/// background task. See the [module docs](self).
#[derive(Clone)]
pub struct RemoteJwks {
    inner: Arc<Inner>,
}

impl fmt::Debug for RemoteJwks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let snapshot = self.inner.current.load();
        let kids: Vec<_> = snapshot.keys.iter().map(VerificationKey::kid).collect();
        f.debug_struct("RemoteJwks")
            .field("url", &self.inner.config.shown_url)
            .field("ready", &self.is_ready())
            .field("kids", &kids)
            .finish_non_exhaustive()
    }
}

/// A point-in-time view of a [`RemoteJwks`], for health endpoints and logs.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct JwksStatus {
    /// At least one fetch succeeded.
    pub ready: bool,
    /// Keys currently served.
    pub keys: usize,
    /// Fetches started (background, unknown `kid` and explicit refreshes).
    pub fetches: u64,
    /// Fetches that failed.
    pub failures: u64,
    /// When the last successful fetch completed (by the configured clock).
    pub last_success: Option<SystemTime>,
    /// Why the last fetch failed, if it did and none succeeded since.
    pub last_error: Option<String>,
    /// Time until the next background refresh.
    pub next_refresh_in: Duration,
}

impl RemoteJwks {
    /// Starts a configuration for the JWKS at `url`. See [`RemoteJwksBuilder`].
    pub fn builder(url: impl Into<String>) -> RemoteJwksBuilder {
        RemoteJwksBuilder::new(url.into())
    }

    /// Starts the background refresh and waits for the first fetch (at most the configured
    /// timeout). With [`StartupMode::FailFast`] (the default) a failed first fetch is returned
    /// as an error; with [`StartupMode::NotReady`] it is logged, `start` succeeds, and the
    /// background task keeps retrying. Calling it again only waits for keys again.
    ///
    /// Must be called within a tokio runtime; the background task runs on that runtime.
    pub async fn start(&self) -> Result<(), FetchError> {
        let inner = &self.inner;
        if !inner.started.swap(true, Ordering::SeqCst) {
            let runtime = tokio::runtime::Handle::try_current()
                .map_err(|_| FetchError::new("RemoteJwks::start needs a tokio runtime"))?;
            *lock(&inner.runtime) = Some(runtime.clone());
            let task = runtime.spawn(refresh_loop(Arc::downgrade(inner), inner.wake.clone()));
            *lock(&inner.task) = Some(task.abort_handle());
        }
        if self.is_ready() {
            return Ok(());
        }
        match (inner.fetch().await, inner.config.startup) {
            (Ok(_), _) | (Err(_), StartupMode::NotReady) => Ok(()),
            (Err(error), StartupMode::FailFast) => Err(error),
        }
    }

    /// Fetches the JWKS now (joining a fetch already in flight), bypassing the unknown-`kid`
    /// rate limit. Returns whether the keys changed. Meant for operators and tests; the
    /// background task and unknown `kid`s refresh by themselves.
    pub async fn refresh(&self) -> Result<bool, FetchError> {
        self.inner.fetch().await
    }

    /// Whether at least one fetch succeeded (the keys are usable).
    pub fn is_ready(&self) -> bool {
        *self.inner.ready.borrow()
    }

    /// Waits until [`is_ready`](Self::is_ready).
    pub async fn ready(&self) {
        let mut ready = self.inner.ready.subscribe();
        // The sender lives in `inner`, which `self` keeps alive: the wait cannot fail.
        let _ = ready.wait_for(|ready| *ready).await;
    }

    /// Waits until [`is_ready`](Self::is_ready), at most `timeout`; returns whether it is.
    pub async fn wait_ready(&self, timeout: Duration) -> bool {
        tokio::time::timeout(timeout, self.ready()).await.is_ok()
    }

    /// The JWKS URL (without query).
    pub fn url(&self) -> &str {
        &self.inner.config.shown_url
    }

    /// Counters and timestamps for health endpoints and logs.
    pub fn status(&self) -> JwksStatus {
        let inner = &self.inner;
        let state = lock(&inner.state);
        JwksStatus {
            ready: self.is_ready(),
            keys: inner.current.load().keys.len(),
            fetches: inner.fetches.load(Ordering::Relaxed),
            failures: inner.failures.load(Ordering::Relaxed),
            last_success: state.last_success,
            last_error: state.last_error.clone(),
            next_refresh_in: state.next_due.saturating_duration_since(Instant::now()),
        }
    }
}

impl KeySource for RemoteJwks {
    fn snapshot(&self) -> Arc<KeySnapshot> {
        self.inner.current.load_full()
    }

    fn unknown_kid<'a>(&'a self, kid: &'a str) -> BoxFuture<'a, bool> {
        Box::pin(self.inner.unknown_kid(kid))
    }
}

/// Configures a [`RemoteJwks`]. Every setting's default and effect is in the
/// [module docs](self).
#[must_use]
#[derive(Clone)]
pub struct RemoteJwksBuilder {
    url: String,
    allow_http: bool,
    connect_timeout: Duration,
    timeout: Duration,
    max_response_bytes: usize,
    max_keys: usize,
    min_refresh: Duration,
    max_refresh: Duration,
    default_refresh: Duration,
    unknown_kid_interval: Duration,
    negative_capacity: usize,
    negative_ttl: Duration,
    retry_initial: Duration,
    retry_max: Duration,
    startup: StartupMode,
    clock: SharedClock,
}

impl fmt::Debug for RemoteJwksBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RemoteJwksBuilder")
            .field("url", &self.url)
            .field("allow_http", &self.allow_http)
            .field("timeout", &self.timeout)
            .field("max_keys", &self.max_keys)
            .field("startup", &self.startup)
            .finish_non_exhaustive()
    }
}

impl RemoteJwksBuilder {
    fn new(url: String) -> Self {
        Self {
            url,
            allow_http: false,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            timeout: DEFAULT_TIMEOUT,
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
            max_keys: DEFAULT_MAX_KEYS,
            min_refresh: DEFAULT_MIN_REFRESH,
            max_refresh: DEFAULT_MAX_REFRESH,
            default_refresh: DEFAULT_REFRESH,
            unknown_kid_interval: DEFAULT_UNKNOWN_KID_INTERVAL,
            negative_capacity: DEFAULT_NEGATIVE_CAPACITY,
            negative_ttl: DEFAULT_NEGATIVE_TTL,
            retry_initial: DEFAULT_RETRY_INITIAL,
            retry_max: DEFAULT_RETRY_MAX,
            startup: StartupMode::FailFast,
            clock: Arc::new(SystemClock),
        }
    }

    pub(crate) fn with_url(mut self, url: String) -> Self {
        self.url = url;
        self
    }

    pub(crate) fn allows_http(&self) -> bool {
        self.allow_http
    }

    pub(crate) fn timeouts(&self) -> (Duration, Duration) {
        (self.connect_timeout, self.timeout)
    }

    pub(crate) fn response_limit(&self) -> usize {
        self.max_response_bytes
    }

    pub(crate) fn retry_bounds(&self) -> (Duration, Duration) {
        (self.retry_initial, self.retry_max)
    }

    pub(crate) fn startup_mode(&self) -> StartupMode {
        self.startup
    }

    /// Permits `http` URLs. Insecure: anyone on the network path can substitute keys and mint
    /// accepted tokens. Meant for tests against a loopback server.
    pub fn insecure_allow_http(mut self) -> Self {
        self.allow_http = true;
        self
    }
    /// Time allowed to establish the connection (default 2 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }
    /// Time allowed for the whole request, body included (default 5 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
    /// Largest accepted response body (default 1 MiB).
    pub fn max_response_bytes(mut self, max: usize) -> Self {
        self.max_response_bytes = max;
        self
    }
    /// Most keys a document may hold; a larger document is refused whole and the last-good
    /// keys are kept (default 100).
    pub fn max_keys(mut self, max: usize) -> Self {
        self.max_keys = max;
        self
    }
    /// Bounds applied to the response's `Cache-Control: max-age` (default 60 s ..= 24 h).
    pub fn refresh_bounds(mut self, min: Duration, max: Duration) -> Self {
        self.min_refresh = min;
        self.max_refresh = max;
        self
    }
    /// Refresh interval when the response carries no `max-age` (default 5 min; clamped to the
    /// bounds).
    pub fn default_refresh(mut self, interval: Duration) -> Self {
        self.default_refresh = interval;
        self
    }
    /// Least time between two fetches triggered by unknown `kid`s (default 30 s). Any fetch
    /// (background or explicit) counts as the last one.
    pub fn unknown_kid_interval(mut self, interval: Duration) -> Self {
        self.unknown_kid_interval = interval;
        self
    }
    /// Capacity and lifetime of the cache of `kid`s that were looked up and not found
    /// (default 1,000 for 60 s). A cached kid is refused without any fetch.
    pub fn negative_cache(mut self, capacity: usize, ttl: Duration) -> Self {
        self.negative_capacity = capacity;
        self.negative_ttl = ttl;
        self
    }
    /// Delay before retrying a failed fetch, doubling from `initial` up to `max` (default
    /// 1 s to 60 s).
    pub fn retry_backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.retry_initial = initial;
        self.retry_max = max;
        self
    }
    /// What [`RemoteJwks::start`] does when the first fetch fails (default
    /// [`StartupMode::FailFast`]).
    pub fn startup(mut self, mode: StartupMode) -> Self {
        self.startup = mode;
        self
    }
    /// The time source for the unknown-`kid` rate limit, the negative cache and the status
    /// timestamps (default: the system clock). The refresh schedule runs on tokio's timer.
    pub fn clock(mut self, clock: SharedClock) -> Self {
        self.clock = clock;
        self
    }

    pub(crate) fn check(&self) -> Result<reqwest::Url, ConfigError> {
        let url = parse_url("JWKS URL", &self.url, self.allow_http)?;
        let positive = [
            ("connect_timeout", self.connect_timeout),
            ("timeout", self.timeout),
            ("minimum refresh", self.min_refresh),
            ("retry_backoff initial", self.retry_initial),
        ];
        for (name, value) in positive {
            if value.is_zero() {
                return Err(ConfigError::new(format!("{name} must be positive")));
            }
        }
        let all = [
            self.connect_timeout,
            self.timeout,
            self.min_refresh,
            self.max_refresh,
            self.default_refresh,
            self.unknown_kid_interval,
            self.negative_ttl,
            self.retry_initial,
            self.retry_max,
        ];
        if all.iter().any(|d| *d > MAX_INTERVAL) {
            return Err(ConfigError::new(
                "JWKS timeouts and intervals must not exceed 365 days",
            ));
        }
        if self.min_refresh > self.max_refresh {
            return Err(ConfigError::new("refresh_bounds: minimum above maximum"));
        }
        if self.retry_initial > self.retry_max {
            return Err(ConfigError::new("retry_backoff: initial above maximum"));
        }
        if self.max_response_bytes == 0 || self.max_keys == 0 || self.negative_capacity == 0 {
            return Err(ConfigError::new(
                "max_response_bytes, max_keys and the negative cache capacity must be positive",
            ));
        }
        Ok(url)
    }

    /// Checks the configuration and builds the source. No request is made until
    /// [`RemoteJwks::start`] (or the first unknown `kid`).
    pub fn build(self) -> Result<RemoteJwks, ConfigError> {
        let url = self.check()?;
        let client = http_client(self.connect_timeout, self.timeout, self.allow_http)?;
        let (ready, _) = watch::channel(false);
        Ok(RemoteJwks {
            inner: Arc::new(Inner {
                config: Config {
                    shown_url: display_url(&url),
                    url,
                    max_response_bytes: self.max_response_bytes,
                    max_keys: self.max_keys,
                    min_refresh: self.min_refresh,
                    max_refresh: self.max_refresh,
                    default_refresh: self.default_refresh,
                    unknown_kid_interval: self.unknown_kid_interval,
                    negative_ttl: self.negative_ttl,
                    retry_initial: self.retry_initial,
                    retry_max: self.retry_max,
                    startup: self.startup,
                },
                client,
                clock: self.clock,
                current: ArcSwap::from_pointee(KeySnapshot::default()),
                state: Mutex::new(State {
                    in_flight: None,
                    in_flight_id: 0,
                    last_attempt: None,
                    last_success: None,
                    last_error: None,
                    consecutive_failures: 0,
                    next_due: Instant::now(),
                    fingerprint: None,
                }),
                negative: quick_cache::sync::Cache::new(self.negative_capacity),
                ready,
                wake: Arc::new(Notify::new()),
                fetches: AtomicU64::new(0),
                failures: AtomicU64::new(0),
                started: AtomicBool::new(false),
                runtime: Mutex::new(None),
                task: Mutex::new(None),
            }),
        })
    }
}

#[cfg(test)]
#[cfg(feature = "testing")]
mod tests {
    use super::*;
    use crate::authn::jwt::{JwtAlgorithm, JwtAuthenticator};
    use crate::clock::ManualClock;
    use crate::testing::{Fault, TestIdp, TestKey, jwks_json, jwks_json_copies, random_id};
    use jsonwebtoken::Header;
    use serde_json::json;

    const AUD: &str = "api";
    const FAST: Duration = Duration::from_millis(300);

    struct Fixture {
        idp: TestIdp,
        jwks: RemoteJwks,
        auth: JwtAuthenticator,
        clock: ManualClock,
    }

    impl Fixture {
        /// A fresh token (never cached) signed by `key` for the fixture's issuer.
        fn token(&self, key: &TestKey) -> String {
            key.mint(&key.claims("alice", &self.idp.issuer(), AUD))
        }
        /// A token naming `kid`, with a dummy signature: the kid is looked up before any
        /// signature check, so this is what a flood of forged tokens looks like (and it is
        /// cheap to make thousands of).
        fn token_with_kid(&self, key: &TestKey, kid: &str) -> String {
            use base64::Engine;
            let b64 =
                |v: Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
            let header = json!({"alg": format!("{:?}", key.algorithm()), "kid": kid});
            let claims = key.claims("mallory", &self.idp.issuer(), AUD);
            format!("{}.{}.c2lnbmF0dXJl", b64(header), b64(claims))
        }
        async fn accepts(&self, token: &str) -> bool {
            self.auth.authenticate_token(token).await.is_ok()
        }
    }

    fn builder(idp: &TestIdp, clock: &ManualClock) -> RemoteJwksBuilder {
        RemoteJwks::builder(idp.jwks_url())
            .insecure_allow_http()
            .connect_timeout(FAST)
            .timeout(FAST)
            .clock(Arc::new(clock.clone()))
    }

    async fn fixture_with(
        keys: &[&TestKey],
        configure: impl FnOnce(RemoteJwksBuilder) -> RemoteJwksBuilder,
    ) -> Fixture {
        let idp = TestIdp::start().await.unwrap();
        idp.set_keys(keys);
        let clock = ManualClock::now_from_system();
        let jwks = configure(builder(&idp, &clock)).build().unwrap();
        jwks.start().await.unwrap();
        let auth = JwtAuthenticator::builder()
            .issuer(idp.issuer())
            .audience(AUD)
            .key_source(Arc::new(jwks.clone()))
            .clock(Arc::new(clock.clone()))
            .build()
            .unwrap();
        Fixture {
            idp,
            jwks,
            auth,
            clock,
        }
    }

    async fn fixture(keys: &[&TestKey]) -> Fixture {
        fixture_with(keys, |b| b).await
    }

    #[tokio::test]
    async fn rotation_is_followed_without_restart() {
        let (old, new) = (TestKey::es256("old"), TestKey::ed25519("new"));
        let f = fixture(&[&old]).await;
        assert!(f.jwks.is_ready());
        assert!(f.accepts(&f.token(&old)).await);
        assert_eq!(f.idp.jwks_fetches(), 1);

        // The IdP publishes a second key. Right after a fetch, an unknown kid is rate limited
        // (and remembered as unknown) instead of refetching.
        f.idp.set_keys(&[&old, &new]);
        assert!(!f.accepts(&f.token(&new)).await);
        assert_eq!(f.idp.jwks_fetches(), 1);

        // Once the rate limit and the negative cache have expired, the new kid is fetched.
        f.clock.advance(Duration::from_secs(61));
        assert!(f.accepts(&f.token(&new)).await);
        assert_eq!(f.idp.jwks_fetches(), 2);
        assert!(
            f.accepts(&f.token(&old)).await,
            "old key valid until removed"
        );

        // The IdP retires the old key; the next refresh drops it.
        f.idp.set_keys(&[&new]);
        assert!(f.jwks.refresh().await.unwrap(), "keys changed");
        let err = f.auth.authenticate_token(&f.token(&old)).await.unwrap_err();
        assert_eq!(err.status(), http::StatusCode::UNAUTHORIZED);
        assert!(f.accepts(&f.token(&new)).await);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn flood_of_random_kids_causes_bounded_fetches() {
        let key = TestKey::es256("real");
        let f = fixture(&[&key]).await;
        assert_eq!(f.idp.jwks_fetches(), 1);
        f.clock.advance(Duration::from_secs(31));

        // 1,000 concurrent requests with random kids, on two worker threads: one single-flight
        // refetch, shared by all.
        let tasks: Vec<_> = (0..1_000)
            .map(|_| {
                let (auth, token) = (f.auth.clone(), f.token_with_kid(&key, &random_id()));
                tokio::spawn(async move { auth.authenticate_token(&token).await.is_ok() })
            })
            .collect();
        for task in tasks {
            assert!(!task.await.unwrap());
        }
        assert_eq!(
            f.idp.jwks_fetches(),
            2,
            "one refetch for 1,000 unknown kids"
        );

        // Another 1,000 within the interval: no fetch at all.
        for _ in 0..1_000 {
            let token = f.token_with_kid(&key, &random_id());
            assert!(!f.accepts(&token).await);
        }
        assert_eq!(f.idp.jwks_fetches(), 2);
        // The known key kept working throughout.
        assert!(f.accepts(&f.token(&key)).await);

        // Each later interval allows at most one more.
        f.clock.advance(Duration::from_secs(31));
        for _ in 0..1_000 {
            let token = f.token_with_kid(&key, &random_id());
            assert!(!f.accepts(&token).await);
        }
        assert_eq!(f.idp.jwks_fetches(), 3);
        // The negative cache stays bounded.
        assert!(f.jwks.inner.negative.len() <= DEFAULT_NEGATIVE_CAPACITY);
        assert_eq!(f.jwks.status().fetches, 3);
    }

    #[tokio::test]
    async fn a_remembered_unknown_kid_never_refetches() {
        let key = TestKey::es256("real");
        let f = fixture(&[&key]).await;
        f.clock.advance(Duration::from_secs(31));
        let token = f.token_with_kid(&key, "ghost");
        assert!(!f.accepts(&token).await);
        assert_eq!(f.idp.jwks_fetches(), 2);
        // The rate limit has passed again, but the kid is still in the negative cache.
        f.clock.advance(Duration::from_secs(31));
        assert!(!f.accepts(&token).await);
        assert_eq!(f.idp.jwks_fetches(), 2);
        // Overlong kids never fetch.
        f.clock.advance(Duration::from_secs(61));
        assert!(!f.accepts(&f.token_with_kid(&key, &"k".repeat(300))).await);
        assert_eq!(f.idp.jwks_fetches(), 2);
    }

    /// Puts the IdP into `fault` (and/or serves `body`), then checks that a refresh in flight
    /// against it does not hold up a token with a known key, fails with `expected`, keeps the
    /// last-good keys and readiness, and that unknown kids during the fault do not panic.
    async fn check_fault(fault: Fault, body: Option<String>, max_bytes: usize, expected: &str) {
        let key = TestKey::es256("k1");
        let f = fixture_with(&[&key], |b| b.max_response_bytes(max_bytes)).await;
        let before = f.jwks.snapshot();
        f.idp.set_fault(fault);
        if let Some(body) = body {
            f.idp.set_jwks_json(body);
        }
        // A refresh in flight against the faulty IdP...
        let jwks = f.jwks.clone();
        let refresh = tokio::spawn(async move { jwks.refresh().await });
        if fault != Fault::Down {
            assert!(f.idp.wait_for_jwks_fetches(2, FAST).await, "{expected}");
        }
        // ...does not hold up a token with a known key (a fresh one: a full verification).
        let started = std::time::Instant::now();
        let quick = tokio::time::timeout(
            Duration::from_millis(100),
            f.auth.authenticate_token(&f.token(&key)),
        )
        .await;
        assert!(matches!(quick, Ok(Ok(_))), "{expected}: {quick:?}");
        assert!(started.elapsed() < Duration::from_millis(100), "{expected}");
        if matches!(fault, Fault::Delay(_)) {
            assert!(!refresh.is_finished(), "the slow fetch is still in flight");
        }
        let error = refresh.await.unwrap().unwrap_err();
        assert!(error.message().contains(expected), "{expected}: {error}");
        // Last-good keys kept, still ready, the failure reported.
        assert!(Arc::ptr_eq(&before, &f.jwks.snapshot()), "{expected}");
        assert!(f.jwks.is_ready(), "{expected}");
        assert!(f.accepts(&f.token(&key)).await, "{expected}");
        let status = f.jwks.status();
        assert_eq!(status.failures, 1, "{expected}");
        assert!(status.last_error.unwrap().contains(expected), "{expected}");
        assert!(
            status.next_refresh_in <= DEFAULT_RETRY_INITIAL,
            "retry soon"
        );
        // Unknown kids during the fault: refused, keys kept, no panic.
        f.clock.advance(Duration::from_secs(31));
        assert!(
            !f.accepts(&f.token_with_kid(&key, "new")).await,
            "{expected}"
        );
        assert!(f.accepts(&f.token(&key)).await, "{expected}");
        assert_eq!(f.jwks.status().failures, 2, "{expected}");
    }

    #[tokio::test]
    async fn fault_slow_idp() {
        let slow = Fault::Delay(Duration::from_secs(2));
        check_fault(slow, None, DEFAULT_MAX_RESPONSE_BYTES, "timed out").await;
    }

    #[tokio::test]
    async fn fault_http_500() {
        check_fault(
            Fault::Status(500),
            None,
            DEFAULT_MAX_RESPONSE_BYTES,
            "HTTP 500",
        )
        .await;
    }

    #[tokio::test]
    async fn fault_malformed_json() {
        let expected = "not valid JSON";
        check_fault(
            Fault::MalformedJson,
            None,
            DEFAULT_MAX_RESPONSE_BYTES,
            expected,
        )
        .await;
        let not_a_jwks = Some("[1, 2]".to_owned());
        check_fault(
            Fault::None,
            not_a_jwks,
            DEFAULT_MAX_RESPONSE_BYTES,
            expected,
        )
        .await;
    }

    #[tokio::test]
    async fn fault_idp_down() {
        let expected = "GET http://127.0.0.1";
        check_fault(Fault::Down, None, DEFAULT_MAX_RESPONSE_BYTES, expected).await;
    }

    #[tokio::test]
    async fn fault_ten_thousand_keys() {
        let many = jwks_json_copies(&TestKey::es256("k"), 10_000);
        // Within a raised size limit, the key count limit refuses it...
        let expected = "has 10000 keys, more than the maximum of 100";
        check_fault(Fault::None, Some(many.clone()), 8 << 20, expected).await;
        // ...and with the default size limit, the size does.
        let expected = "body exceeds 1048576 bytes";
        check_fault(
            Fault::None,
            Some(many),
            DEFAULT_MAX_RESPONSE_BYTES,
            expected,
        )
        .await;
    }

    #[tokio::test]
    async fn fault_only_hmac_keys() {
        let secret = "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldA";
        let oct = json!({"keys": [{"kty": "oct", "kid": "h", "k": secret, "alg": "HS256"}]});
        let body = Some(oct.to_string());
        check_fault(Fault::None, body, DEFAULT_MAX_RESPONSE_BYTES, "no usable").await;
    }

    #[tokio::test]
    async fn hmac_keys_in_a_jwks_are_never_accepted() {
        let secret = b"0123456789abcdef0123456789abcdef";
        let hmac = TestKey::hmac("h", JwtAlgorithm::HS256, secret);
        let ec = TestKey::es256("ec");
        let mut jwks: Value = serde_json::from_str(&jwks_json(&[&ec])).unwrap();
        jwks["keys"].as_array_mut().unwrap().push(json!({
            "kty": "oct", "kid": "h", "alg": "HS256",
            "k": base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, secret),
        }));
        let f = fixture(&[&ec]).await;
        f.idp.set_jwks_json(jwks.to_string());
        f.jwks.refresh().await.unwrap();
        let kids: Vec<_> = f
            .jwks
            .snapshot()
            .keys
            .iter()
            .map(|k| k.kid().map(str::to_owned))
            .collect();
        assert_eq!(kids, [Some("ec".to_owned())]);
        let forged = hmac.mint(&hmac.claims("admin", &f.idp.issuer(), AUD));
        assert!(!f.accepts(&forged).await);
        assert!(f.accepts(&f.token(&ec)).await);
    }

    #[tokio::test]
    async fn keys_without_alg_get_their_family_intersected_with_the_allow_list() {
        let rsa = TestKey::rsa("r", JwtAlgorithm::PS256);
        let mut jwk = rsa.public_jwk().unwrap().clone();
        jwk.as_object_mut().unwrap().remove("alg");
        let idp = TestIdp::start().await.unwrap();
        idp.set_jwks_json(json!({"keys": [jwk]}).to_string());
        let clock = ManualClock::now_from_system();
        let jwks = builder(&idp, &clock).build().unwrap();
        jwks.start().await.unwrap();
        assert_eq!(jwks.snapshot().keys[0].algorithms().len(), 6, "RS* and PS*");
        let auth = JwtAuthenticator::builder()
            .issuer(idp.issuer())
            .audience(AUD)
            .allowed_algorithms([JwtAlgorithm::PS256])
            .key_source(Arc::new(jwks))
            .build()
            .unwrap();
        let claims = rsa.claims("u", &idp.issuer(), AUD);
        assert!(auth.authenticate_token(&rsa.mint(&claims)).await.is_ok());
        let mut header = Header::new(JwtAlgorithm::RS256);
        header.kid = Some("r".into());
        let rs256 = rsa.mint_with_header(&header, &claims);
        let err = auth.authenticate_token(&rs256).await.unwrap_err();
        assert!(err.detail().contains("alg not allowed"), "{err:?}");
    }

    #[tokio::test]
    async fn startup_fails_fast_or_starts_not_ready() {
        let key = TestKey::ed25519("k");
        let idp = TestIdp::start().await.unwrap();
        idp.set_keys(&[&key]);
        idp.set_fault(Fault::Down);
        let clock = ManualClock::now_from_system();

        let strict = builder(&idp, &clock).build().unwrap();
        let started = std::time::Instant::now();
        assert!(strict.start().await.is_err());
        assert!(started.elapsed() < Duration::from_secs(2));
        assert!(!strict.is_ready());

        let lenient = builder(&idp, &clock)
            .startup(StartupMode::NotReady)
            .retry_backoff(Duration::from_millis(20), Duration::from_millis(50))
            .build()
            .unwrap();
        lenient.start().await.unwrap();
        assert!(!lenient.is_ready());
        assert!(!lenient.wait_ready(Duration::from_millis(50)).await);
        let auth = JwtAuthenticator::builder()
            .issuer(idp.issuer())
            .audience(AUD)
            .key_source(Arc::new(lenient.clone()))
            .build()
            .unwrap();
        let token = key.mint(&key.claims("u", &idp.issuer(), AUD));
        let err = auth.authenticate_token(&token).await.unwrap_err();
        assert_eq!(err.status(), http::StatusCode::UNAUTHORIZED);

        // The IdP comes back: the background task retries and the source becomes ready.
        idp.set_fault(Fault::None);
        assert!(lenient.wait_ready(Duration::from_secs(3)).await);
        assert!(auth.authenticate_token(&token).await.is_ok());
        // `start` again is a no-op once ready.
        lenient.start().await.unwrap();
    }

    #[tokio::test]
    async fn concurrent_refreshes_share_one_fetch() {
        let key = TestKey::ed25519("k");
        let f = fixture(&[&key]).await;
        f.idp.set_fault(Fault::Delay(Duration::from_millis(100)));
        let refreshes = futures_util::future::join_all((0..10).map(|_| f.jwks.refresh())).await;
        assert!(
            refreshes.iter().all(|r| matches!(r, Ok(false))),
            "{refreshes:?}"
        );
        assert_eq!(f.idp.jwks_fetches(), 2);
        assert_eq!(f.jwks.status().fetches, 2);
    }

    #[test]
    fn a_fetch_cancelled_by_runtime_shutdown_does_not_wedge_the_source() {
        let runtime = || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
        };
        let server = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let key = TestKey::ed25519("k");
        let idp = server.block_on(TestIdp::start()).unwrap();
        idp.set_keys(&[&key]);
        idp.set_fault(Fault::Delay(Duration::from_secs(5)));
        let clock = ManualClock::now_from_system();
        let jwks = builder(&idp, &clock)
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap();

        let first = runtime();
        first.block_on(async {
            let pending = jwks.clone();
            tokio::spawn(async move { pending.refresh().await });
            assert!(idp.wait_for_jwks_fetches(1, Duration::from_secs(2)).await);
        });
        drop(first); // cancels the fetch in flight

        idp.set_fault(Fault::None);
        runtime().block_on(async {
            assert!(
                jwks.refresh().await.unwrap(),
                "a new fetch, not the cancelled one"
            );
        });
        assert!(jwks.is_ready());
        assert_eq!(idp.jwks_fetches(), 2);
        drop(idp);
        drop(server);
    }

    #[tokio::test]
    async fn unchanged_keys_keep_the_snapshot() {
        let key = TestKey::ed25519("k");
        let f = fixture(&[&key]).await;
        let before = f.jwks.snapshot();
        assert!(!f.jwks.refresh().await.unwrap());
        assert!(Arc::ptr_eq(&before, &f.jwks.snapshot()));
    }

    #[tokio::test]
    async fn background_refresh_follows_max_age_and_stops_on_drop() {
        let key = TestKey::ed25519("k");
        let idp = TestIdp::start().await.unwrap();
        idp.set_keys(&[&key]);
        idp.set_cache_control(Some("public, max-age=3600"));
        let clock = ManualClock::now_from_system();
        let jwks = builder(&idp, &clock)
            .refresh_bounds(Duration::from_millis(50), Duration::from_secs(7200))
            .build()
            .unwrap();
        jwks.start().await.unwrap();
        let next = jwks.status().next_refresh_in;
        assert!(
            next > Duration::from_secs(3500) && next <= Duration::from_secs(3600),
            "{next:?}"
        );

        // max-age=0 is clamped to the minimum (50 ms here): the task keeps refreshing.
        idp.set_cache_control(Some("max-age=0"));
        jwks.refresh().await.unwrap();
        assert!(idp.wait_for_jwks_fetches(5, Duration::from_secs(3)).await);

        // Dropping the last handle stops the task.
        drop(jwks);
        let after_drop = idp.jwks_fetches();
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            idp.jwks_fetches() <= after_drop + 1,
            "a fetch in flight may finish"
        );
    }

    #[test]
    fn refresh_interval_from_cache_control() {
        let header = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(http::header::CACHE_CONTROL, value.parse().unwrap());
            cache_max_age(&headers)
        };
        assert_eq!(header("max-age=120"), Some(Duration::from_secs(120)));
        assert_eq!(
            header("public, MAX-AGE=\"30\""),
            Some(Duration::from_secs(30))
        );
        assert_eq!(header("no-store, max-age=100"), Some(Duration::ZERO));
        assert_eq!(header("no-cache"), Some(Duration::ZERO));
        assert_eq!(header("s-maxage=5"), None);
        assert_eq!(header("max-age=-1"), None);
        assert_eq!(cache_max_age(&HeaderMap::new()), None);

        let jwks = RemoteJwks::builder("https://idp.test/jwks")
            .build()
            .unwrap();
        let config = &jwks.inner.config;
        let after = |s: Option<u64>| config.refresh_after(s.map(Duration::from_secs));
        assert_eq!(after(None), DEFAULT_REFRESH);
        assert_eq!(after(Some(0)), DEFAULT_MIN_REFRESH);
        assert_eq!(after(Some(600)), Duration::from_secs(600));
        assert_eq!(after(Some(7 * 24 * 3600)), DEFAULT_MAX_REFRESH);
        let retries: Vec<u64> = (1..=8).map(|n| config.retry_after(n).as_secs()).collect();
        assert_eq!(retries, [1, 2, 4, 8, 16, 32, 60, 60]);
        assert_eq!(config.retry_after(u32::MAX), DEFAULT_RETRY_MAX);
    }

    #[test]
    fn builder_refuses_bad_configuration() {
        let bad = [
            (RemoteJwks::builder("http://idp.test/jwks"), "https"),
            (RemoteJwks::builder("ftp://idp.test/jwks"), "scheme"),
            (RemoteJwks::builder("not a url"), "valid URL"),
            (
                RemoteJwks::builder("https://user:pw@idp.test/jwks"),
                "credentials",
            ),
            (
                RemoteJwks::builder("https://idp.test/jwks").timeout(Duration::ZERO),
                "positive",
            ),
            (
                RemoteJwks::builder("https://idp.test/jwks").max_keys(0),
                "positive",
            ),
            (
                RemoteJwks::builder("https://idp.test/jwks")
                    .refresh_bounds(Duration::from_secs(10), Duration::from_secs(5)),
                "minimum above maximum",
            ),
            (
                RemoteJwks::builder("https://idp.test/jwks")
                    .retry_backoff(Duration::from_secs(10), Duration::from_secs(5)),
                "initial above maximum",
            ),
            (
                RemoteJwks::builder("https://idp.test/jwks").default_refresh(Duration::MAX),
                "365 days",
            ),
        ];
        for (builder, expected) in bad {
            let err = builder.build().unwrap_err();
            assert!(err.message().contains(expected), "{err}");
        }
        assert!(
            RemoteJwks::builder("http://127.0.0.1:1/jwks")
                .insecure_allow_http()
                .build()
                .is_ok()
        );
    }

    #[test]
    fn debug_and_errors_hide_queries() {
        let jwks = RemoteJwks::builder("https://idp.test/jwks?api_key=s3cret")
            .build()
            .unwrap();
        assert_eq!(jwks.url(), "https://idp.test/jwks");
        let shown = format!("{jwks:?} {:?}", RemoteJwks::builder("x"));
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(!jwks.is_ready());
    }

    #[tokio::test]
    async fn unknown_kid_before_start_fetches_lazily() {
        let key = TestKey::es256("k");
        let idp = TestIdp::start().await.unwrap();
        idp.set_keys(&[&key]);
        let clock = ManualClock::now_from_system();
        let jwks = builder(&idp, &clock).build().unwrap();
        assert!(jwks.unknown_kid("k").await);
        assert!(jwks.is_ready());
        assert_eq!(idp.jwks_fetches(), 1);
    }
}
