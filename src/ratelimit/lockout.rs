//! Brute-force lockout: progressive backoff, then a temporary lockout, after repeated failed
//! authentications from one client (and, optionally, for one presented identity).
//!
//! [`LockoutLayer`] sits *outside* the authentication layer. It watches the responses coming
//! back: a response carrying a [`Rejection`] of kind
//! [`InvalidCredential`](RejectionKind::InvalidCredential) (a presented credential that did not
//! verify) counts one failure for the request's key. After
//! [`backoff_after`](LockoutLayerBuilder::backoff_after) failures (default 5) each further
//! failure blocks the key for a doubling delay (1 s, 2 s, 4 s, …); from
//! [`lock_after`](LockoutLayerBuilder::lock_after) failures (default 10) it is locked out for
//! [`lockout_duration`](LockoutLayerBuilder::lockout_duration) (default 15 min). A blocked key is
//! answered at once with [`RejectionKind::LockedOut`] (429 with `Retry-After`, gRPC
//! `RESOURCE_EXHAUSTED`), without reaching the authenticator; the server never sleeps.
//! Failures older than the [`window`](LockoutLayerBuilder::window) (default 15 min) are
//! forgotten.
//!
//! ```
//! use std::sync::Arc;
//! use http::{Request, Response, StatusCode};
//! use portcullis::clock::ManualClock;
//! use portcullis::context::ClientIp;
//! use portcullis::ratelimit::lockout::LockoutLayer;
//! use portcullis::rejection::Rejection;
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//!
//! # tokio_test_block_on(async {
//! let clock = ManualClock::now_from_system();
//! let lockout = LockoutLayer::builder()
//!     .backoff_after(2)
//!     .lock_after(3)
//!     .clock(Arc::new(clock.clone()))
//!     .build()
//!     .unwrap();
//! // Stands in for the authentication layer: every credential is wrong.
//! let svc = ServiceBuilder::new().layer(lockout.clone()).service(service_fn(
//!     |_req: Request<String>| async {
//!         Ok::<_, std::convert::Infallible>(
//!             Rejection::invalid_credential("bad password").into_deferred_response::<String>(),
//!         )
//!     },
//! ));
//! let attempt = || {
//!     let mut req = Request::new(String::new());
//!     req.extensions_mut().insert(ClientIp("198.51.100.4".parse().unwrap()));
//!     svc.clone().oneshot(req)
//! };
//! assert_eq!(attempt().await.unwrap().status(), StatusCode::UNAUTHORIZED);
//! assert_eq!(attempt().await.unwrap().status(), StatusCode::UNAUTHORIZED);
//! // Second failure: one second of backoff.
//! let blocked = attempt().await.unwrap();
//! assert_eq!(blocked.status(), StatusCode::TOO_MANY_REQUESTS);
//! assert_eq!(blocked.headers()["retry-after"], "1");
//! clock.advance(std::time::Duration::from_secs(1));
//! assert_eq!(attempt().await.unwrap().status(), StatusCode::UNAUTHORIZED);
//! // Third failure: locked out for 15 minutes.
//! assert_eq!(attempt().await.unwrap().headers()["retry-after"], "900");
//! assert_eq!(lockout.stats().locked, 1);
//! # });
//! # fn tokio_test_block_on<F: std::future::Future>(f: F) -> F::Output {
//! #     tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
//! # }
//! ```
//!
//! # Keys
//!
//! The key is the client address resolved at the edge ([`ClientIp`], which believes forwarded
//! headers only from configured proxies, so a client cannot lock out someone else by sending
//! their address in `X-Forwarded-For`), IPv6 grouped by /56, combined with the presented
//! identity when an [`identity`](LockoutLayerBuilder::identity) extractor is configured (for
//! instance the id part of an API key, or a user name field). With an identity, a successful
//! authentication for that (identity, client) clears its failures; without one, failures decay
//! only with time, so a valid account cannot be used to reset an address's counter.
//!
//! # Memory
//!
//! At most [`max_keys`](LockoutLayerBuilder::max_keys) (default 100 000) entries. Entries that
//! are neither blocked nor holding failures inside the window are dropped by the layer itself
//! when a shard is full (and periodically). Blocked entries are never evicted; when a shard is
//! full of them, new keys share the shard's overflow entry: their failures count together and
//! they are blocked together (conservative) until entries expire. Counted in
//! [`LockoutStats::overflowed`].
//!
//! # Shadow mode
//!
//! [`shadow`](LockoutLayerBuilder::shadow): failures are counted and blocks are decided and
//! audited (`lockout.shadow`), but nothing is refused.
//!
//! # Deployment caveat
//!
//! State is per process: with several replicas an attacker gets the allowance once per replica.
//! Many clients behind one NAT share an address: an attacker there can block them (bounded by
//! the lockout duration); configure an identity extractor to key per (identity, address).

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::hash::{BuildHasher, Hash, Hasher};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use http::request::Parts;
use http::{Request, Response};
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use crate::client_ip::ClientIpResolver;
use crate::clock::{SharedClock, SystemClock};
use crate::context::ClientIp;
use crate::error::ConfigError;
use crate::principal::Principal;
use crate::ratelimit::store::duration_nanos;
use crate::rejection::{Rejection, RejectionKind};

const SHARDS: usize = 16;

type Extractor = Arc<dyn Fn(&Parts) -> Option<String> + Send + Sync>;

#[derive(Debug, Clone, Copy, Default)]
struct Entry {
    failures: u32,
    last_failure: u64,
    blocked_until: u64,
}

impl Entry {
    fn idle(&self, now: u64, window: u64) -> bool {
        self.blocked_until <= now && now.saturating_sub(self.last_failure) > window
    }
}

#[derive(Default)]
struct Shard {
    entries: HashMap<u64, Entry>,
    overflow: Entry,
    next_sweep: u64,
}

#[derive(Default)]
struct Counters {
    failures: AtomicU64,
    refused: AtomicU64,
    backoffs: AtomicU64,
    locked: AtomicU64,
    shadow_refusals: AtomicU64,
    overflowed: AtomicU64,
}

struct Config {
    resolver: ClientIpResolver,
    identity: Option<Extractor>,
    backoff_after: u32,
    lock_after: u32,
    base_delay: u64,
    lockout: u64,
    window: u64,
    per_shard: usize,
    shards: Box<[Mutex<Shard>]>,
    hasher: std::collections::hash_map::RandomState,
    clock: SharedClock,
    shadow: bool,
    counters: Counters,
}

/// Counters of a [`LockoutLayer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct LockoutStats {
    /// Failed authentications seen.
    pub failures: u64,
    /// Requests refused because their key was blocked.
    pub refused: u64,
    /// Backoff delays imposed.
    pub backoffs: u64,
    /// Lockouts imposed.
    pub locked: u64,
    /// Requests shadow mode would have refused.
    pub shadow_refusals: u64,
    /// Lookups or failures that went to an overflow entry (shard full of blocked keys).
    pub overflowed: u64,
    /// Entries tracked now.
    pub tracked_keys: usize,
}

/// Brute-force lockout. See the [module docs](self).
#[derive(Clone)]
#[must_use]
pub struct LockoutLayer {
    config: Arc<Config>,
}

impl fmt::Debug for LockoutLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LockoutLayer")
            .field("backoff_after", &self.config.backoff_after)
            .field("lock_after", &self.config.lock_after)
            .field("shadow", &self.config.shadow)
            .finish_non_exhaustive()
    }
}

/// Configuration of a [`LockoutLayer`].
#[must_use]
pub struct LockoutLayerBuilder {
    resolver: ClientIpResolver,
    identity: Option<Extractor>,
    backoff_after: u32,
    lock_after: u32,
    base_delay: Duration,
    lockout: Duration,
    window: Duration,
    max_keys: usize,
    clock: SharedClock,
    shadow: bool,
}

impl fmt::Debug for LockoutLayerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LockoutLayerBuilder")
            .field("backoff_after", &self.backoff_after)
            .field("lock_after", &self.lock_after)
            .field("lockout", &self.lockout)
            .field("window", &self.window)
            .field("max_keys", &self.max_keys)
            .finish_non_exhaustive()
    }
}

impl LockoutLayer {
    /// Starts a configuration with the defaults.
    pub fn builder() -> LockoutLayerBuilder {
        LockoutLayerBuilder {
            resolver: ClientIpResolver::builder().build(),
            identity: None,
            backoff_after: 5,
            lock_after: 10,
            base_delay: Duration::from_secs(1),
            lockout: Duration::from_secs(15 * 60),
            window: Duration::from_secs(15 * 60),
            max_keys: 100_000,
            clock: Arc::new(SystemClock),
            shadow: false,
        }
    }

    /// The counters.
    pub fn stats(&self) -> LockoutStats {
        let c = &self.config.counters;
        LockoutStats {
            failures: c.failures.load(Ordering::Relaxed),
            refused: c.refused.load(Ordering::Relaxed),
            backoffs: c.backoffs.load(Ordering::Relaxed),
            locked: c.locked.load(Ordering::Relaxed),
            shadow_refusals: c.shadow_refusals.load(Ordering::Relaxed),
            overflowed: c.overflowed.load(Ordering::Relaxed),
            tracked_keys: self
                .config
                .shards
                .iter()
                .map(|s| {
                    s.lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .entries
                        .len()
                })
                .sum(),
        }
    }

    /// Records one failed authentication for the client `ip` (and `identity`) now, as the layer
    /// does when it sees an `InvalidCredential` refusal. For authentication that happens
    /// outside the layer (a login handler checking a password).
    pub fn record_failure(&self, ip: std::net::IpAddr, identity: Option<&str>) {
        let hash = self.config.key(Some(ip), identity);
        self.config.record_failure(hash);
    }

    /// How long the client `ip` (and `identity`) is blocked for, if it is.
    pub fn blocked_for(&self, ip: std::net::IpAddr, identity: Option<&str>) -> Option<Duration> {
        let hash = self.config.key(Some(ip), identity);
        self.config.blocked_for(hash)
    }
}

impl LockoutLayerBuilder {
    /// Groups IPv6 clients as `resolver` does (default /56).
    pub fn client_ip_grouped_by(mut self, resolver: &ClientIpResolver) -> Self {
        self.resolver = resolver.clone();
        self
    }

    /// Keys failures per (identity, client) with the identity `extract` reads from the request
    /// head (an API key id, a user name). Default: per client only.
    pub fn identity<F>(mut self, extract: F) -> Self
    where
        F: Fn(&Parts) -> Option<String> + Send + Sync + 'static,
    {
        self.identity = Some(Arc::new(extract));
        self
    }

    /// Failures before the first backoff delay. Default 5, at least 1. Lower stops guessing
    /// sooner and bothers users who mistype sooner.
    pub fn backoff_after(mut self, failures: u32) -> Self {
        self.backoff_after = failures;
        self
    }

    /// Failures before a full lockout. Default 10; at least `backoff_after`.
    pub fn lock_after(mut self, failures: u32) -> Self {
        self.lock_after = failures;
        self
    }

    /// The first backoff delay, doubled with each further failure. Default 1 s.
    pub fn base_delay(mut self, delay: Duration) -> Self {
        self.base_delay = delay;
        self
    }

    /// How long a lockout lasts (also the cap of backoff delays). Default 15 min.
    pub fn lockout_duration(mut self, duration: Duration) -> Self {
        self.lockout = duration;
        self
    }

    /// How long a failure is remembered. Default 15 min. Longer windows catch slower guessing.
    pub fn window(mut self, window: Duration) -> Self {
        self.window = window;
        self
    }

    /// The most entries tracked. Default 100 000; at least 16.
    pub fn max_keys(mut self, max_keys: usize) -> Self {
        self.max_keys = max_keys;
        self
    }

    /// The time source. Default: the system clock.
    pub fn clock(mut self, clock: SharedClock) -> Self {
        self.clock = clock;
        self
    }

    /// Shadow mode: count and audit what would be blocked, block nothing. Default: off.
    pub fn shadow(mut self) -> Self {
        self.shadow = true;
        self
    }

    /// Checks the configuration.
    pub fn build(self) -> Result<LockoutLayer, ConfigError> {
        if self.backoff_after == 0 || self.lock_after < self.backoff_after {
            return Err(ConfigError::new(
                "lockout: backoff_after must be at least 1 and lock_after at least backoff_after",
            ));
        }
        if self.base_delay.is_zero() || self.lockout < self.base_delay || self.window.is_zero() {
            return Err(ConfigError::new(
                "lockout: base_delay and window must be positive, lockout_duration at least base_delay",
            ));
        }
        if self.max_keys < SHARDS {
            return Err(ConfigError::new("lockout: max_keys must be at least 16"));
        }
        Ok(LockoutLayer {
            config: Arc::new(Config {
                resolver: self.resolver,
                identity: self.identity,
                backoff_after: self.backoff_after,
                lock_after: self.lock_after,
                base_delay: duration_nanos(self.base_delay),
                lockout: duration_nanos(self.lockout),
                window: duration_nanos(self.window),
                per_shard: self.max_keys / SHARDS,
                shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
                hasher: std::collections::hash_map::RandomState::new(),
                clock: self.clock,
                shadow: self.shadow,
                counters: Counters::default(),
            }),
        })
    }
}

impl Config {
    fn now(&self) -> u64 {
        self.clock
            .now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(duration_nanos)
            .unwrap_or(0)
    }

    fn key(&self, ip: Option<std::net::IpAddr>, identity: Option<&str>) -> u64 {
        let mut h = self.hasher.build_hasher();
        ip.map(|ip| self.resolver.key(ip)).hash(&mut h);
        identity.hash(&mut h);
        h.finish()
    }

    fn shard(&self, hash: u64) -> std::sync::MutexGuard<'_, Shard> {
        let index = usize::try_from(hash % SHARDS as u64).unwrap_or(0) % self.shards.len();
        // `shards` has SHARDS elements and the index is reduced modulo its length.
        let shard = &self.shards[index];
        shard.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn sweep(&self, shard: &mut Shard, now: u64) {
        let window = self.window;
        shard.entries.retain(|_, e| !e.idle(now, window));
        if shard.overflow.idle(now, window) {
            shard.overflow = Entry::default();
        }
        shard.next_sweep = now.saturating_add(window.min(60_000_000_000));
    }

    fn blocked_for(&self, hash: u64) -> Option<Duration> {
        let now = self.now();
        let mut shard = self.shard(hash);
        let entry = match shard.entries.get(&hash) {
            Some(e) => *e,
            None if shard.entries.len() >= self.per_shard => {
                self.counters.overflowed.fetch_add(1, Ordering::Relaxed);
                if now >= shard.next_sweep {
                    self.sweep(&mut shard, now);
                }
                shard.overflow
            }
            None => return None,
        };
        (entry.blocked_until > now).then(|| Duration::from_nanos(entry.blocked_until - now))
    }

    fn record_failure(&self, hash: u64) {
        let now = self.now();
        self.counters.failures.fetch_add(1, Ordering::Relaxed);
        let mut shard = self.shard(hash);
        if !shard.entries.contains_key(&hash)
            && shard.entries.len() >= self.per_shard
            && now >= shard.next_sweep
        {
            self.sweep(&mut shard, now);
        }
        let full = shard.entries.len() >= self.per_shard;
        let entry = match shard.entries.get_mut(&hash) {
            Some(e) => e,
            None if full => {
                self.counters.overflowed.fetch_add(1, Ordering::Relaxed);
                &mut shard.overflow
            }
            None => shard.entries.entry(hash).or_default(),
        };
        if now.saturating_sub(entry.last_failure) > self.window && entry.blocked_until <= now {
            entry.failures = 0;
        }
        entry.failures = entry.failures.saturating_add(1);
        entry.last_failure = now;
        let failures = entry.failures;
        if failures >= self.lock_after {
            entry.blocked_until = now.saturating_add(self.lockout);
            self.counters.locked.fetch_add(1, Ordering::Relaxed);
            drop(shard);
            crate::audit::global().record(
                crate::audit::AuditEvent::new(crate::audit::EventType::LockoutLocked)
                    .with_reason_code("locked")
                    .with_detail("failures", failures)
                    .with_detail("lockout_secs", self.lockout / 1_000_000_000)
                    .with_detail("shadow", self.shadow),
            );
        } else if failures >= self.backoff_after {
            let doublings = (failures - self.backoff_after).min(63);
            let delay = self
                .base_delay
                .saturating_mul(1u64 << doublings)
                .min(self.lockout);
            entry.blocked_until = now.saturating_add(delay);
            self.counters.backoffs.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn clear(&self, hash: u64) {
        self.shard(hash).entries.remove(&hash);
    }
}

impl<S> Layer<S> for LockoutLayer {
    type Service = Lockout<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Lockout {
            inner,
            config: self.config.clone(),
        }
    }
}

/// The service produced by [`LockoutLayer`].
#[derive(Clone)]
pub struct Lockout<S> {
    inner: S,
    config: Arc<Config>,
}

impl<S: fmt::Debug> fmt::Debug for Lockout<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lockout")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for Lockout<S>
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
        let config = &*self.config;
        let ip = req.extensions().get::<ClientIp>().map(|c| c.0);
        let (identity, req) = match &config.identity {
            Some(extract) => {
                let (parts, body) = req.into_parts();
                (extract(&parts), Request::from_parts(parts, body))
            }
            None => (None, req),
        };
        let hash = config.key(ip, identity.as_deref());
        if let Some(wait) = config.blocked_for(hash) {
            if config.shadow {
                config
                    .counters
                    .shadow_refusals
                    .fetch_add(1, Ordering::Relaxed);
                crate::audit::global().record(
                    crate::audit::AuditEvent::new(crate::audit::EventType::LockoutShadow)
                        .with_reason_code("locked_out")
                        .with_detail(
                            "retry_after_ms",
                            u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                        ),
                );
            } else {
                config.counters.refused.fetch_add(1, Ordering::Relaxed);
                let response = Rejection::new(
                    RejectionKind::LockedOut,
                    "too many failed authentications from this client",
                )
                .with_retry_after(wait)
                .into_deferred_response();
                return ResponseFuture::refused(response);
            }
        }
        ResponseFuture::new(State::Inner {
            future: self.inner.call(req),
            observe: Some((self.config.clone(), hash, identity.is_some())),
        })
    }
}

pin_project! {
    /// Response future of [`Lockout`].
    pub struct ResponseFuture<F, B> {
        #[pin]
        state: State<F, B>,
    }
}

impl<F, B> ResponseFuture<F, B> {
    fn new(state: State<F, B>) -> Self {
        Self { state }
    }

    fn refused(response: Response<B>) -> Self {
        Self {
            state: State::Refused {
                response: Some(response),
            },
        }
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F, B> {
        /// Refused before reaching the inner service.
        Refused { response: Option<Response<B>> },
        /// Passed to the inner service; its response is observed.
        Inner {
            #[pin]
            future: F,
            observe: Option<(Arc<Config>, u64, bool)>,
        },
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
        match self.project().state.project() {
            StateProj::Refused { response } => {
                Poll::Ready(Ok(response.take().unwrap_or_else(|| {
                    Rejection::new(RejectionKind::LockedOut, "polled after completion")
                        .into_deferred_response()
                })))
            }
            StateProj::Inner { future, observe } => {
                let response = ready!(future.poll(cx))?;
                if let Some((config, hash, has_identity)) = observe.take() {
                    let failed = response
                        .extensions()
                        .get::<Rejection>()
                        .is_some_and(|r| r.kind() == RejectionKind::InvalidCredential);
                    if failed {
                        config.record_failure(hash);
                    } else if has_identity && response.extensions().get::<Principal>().is_some() {
                        config.clear(hash);
                    }
                }
                Poll::Ready(Ok(response))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use std::net::IpAddr;

    fn layer(clock: &ManualClock, max_keys: usize) -> LockoutLayer {
        LockoutLayer::builder()
            .backoff_after(3)
            .lock_after(5)
            .max_keys(max_keys)
            .clock(Arc::new(clock.clone()))
            .build()
            .unwrap()
    }

    #[test]
    fn backoff_doubles_then_locks_and_expires() {
        let clock = ManualClock::now_from_system();
        let l = layer(&clock, 1_000);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        for _ in 0..2 {
            l.record_failure(ip, None);
            assert_eq!(l.blocked_for(ip, None), None);
        }
        l.record_failure(ip, None);
        assert_eq!(l.blocked_for(ip, None), Some(Duration::from_secs(1)));
        clock.advance(Duration::from_secs(1));
        l.record_failure(ip, None);
        assert_eq!(l.blocked_for(ip, None), Some(Duration::from_secs(2)));
        l.record_failure(ip, None);
        assert_eq!(l.blocked_for(ip, None), Some(Duration::from_secs(900)));
        assert_eq!(l.stats().locked, 1);
        // Another client is unaffected.
        assert_eq!(l.blocked_for("192.0.2.2".parse().unwrap(), None), None);
        clock.advance(Duration::from_secs(900));
        assert_eq!(l.blocked_for(ip, None), None);
    }

    #[test]
    fn memory_is_bounded_and_locked_keys_survive_churn() {
        let clock = ManualClock::now_from_system();
        let l = layer(&clock, 1_024);
        let attacker: IpAddr = "203.0.113.66".parse().unwrap();
        for _ in 0..5 {
            l.record_failure(attacker, None);
        }
        assert!(l.blocked_for(attacker, None).is_some());
        for i in 0..1_000_000u32 {
            let ip = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            l.record_failure(ip, None);
            if i % 1000 == 0 {
                clock.advance(Duration::from_millis(1));
            }
        }
        let stats = l.stats();
        assert!(stats.tracked_keys <= 1_024, "{}", stats.tracked_keys);
        assert!(l.blocked_for(attacker, None).is_some());
    }

    #[test]
    fn invalid_configuration_is_refused() {
        assert!(LockoutLayer::builder().backoff_after(0).build().is_err());
        assert!(
            LockoutLayer::builder()
                .backoff_after(5)
                .lock_after(4)
                .build()
                .is_err()
        );
        assert!(LockoutLayer::builder().max_keys(1).build().is_err());
        assert!(
            LockoutLayer::builder()
                .window(Duration::ZERO)
                .build()
                .is_err()
        );
    }

    #[tokio::test]
    async fn spoofed_forwarded_headers_cannot_lock_out_someone_else() {
        use crate::client_ip::ForwardedHeader;
        use crate::context::RequestContextLayer;
        use http::StatusCode;
        use tower::{ServiceBuilder, ServiceExt, service_fn};

        let clock = ManualClock::now_from_system();
        let lockout = layer(&clock, 1_000);
        let resolver = ClientIpResolver::builder()
            .trust_proxy("10.0.0.0/8")
            .unwrap()
            .forwarded_header(ForwardedHeader::XForwardedFor)
            .build();
        let svc = ServiceBuilder::new()
            .layer(RequestContextLayer::new().with_client_ip_resolver(resolver))
            .layer(lockout.clone())
            .service(service_fn(|req: Request<String>| async move {
                let ok = req
                    .headers()
                    .get("authorization")
                    .is_some_and(|v| v == "good");
                Ok::<_, std::convert::Infallible>(if ok {
                    Response::new(String::new())
                } else {
                    Rejection::invalid_credential("bad").into_deferred_response()
                })
            }));
        let req = |peer: &str, xff: &str, auth: &str| {
            let mut req = Request::builder()
                .header("x-forwarded-for", xff)
                .header("authorization", auth)
                .body(String::new())
                .unwrap();
            req.extensions_mut()
                .insert(std::net::SocketAddr::new(peer.parse().unwrap(), 5000));
            req
        };
        // The attacker connects directly and claims to be the victim.
        for _ in 0..10 {
            let _ = svc
                .clone()
                .oneshot(req("198.51.100.66", "203.0.113.5", "bad"))
                .await;
        }
        let attacker = svc
            .clone()
            .oneshot(req("198.51.100.66", "203.0.113.5", "good"))
            .await
            .unwrap();
        assert_eq!(attacker.status(), StatusCode::TOO_MANY_REQUESTS);
        // The victim, through the trusted proxy, is not locked out.
        let victim = svc
            .oneshot(req("10.0.0.2", "203.0.113.5", "good"))
            .await
            .unwrap();
        assert_eq!(victim.status(), StatusCode::OK);
        let stats = lockout.stats();
        assert_eq!((stats.failures, stats.backoffs), (3, 1));
        assert!(stats.refused >= 7);
    }

    #[tokio::test]
    async fn shadow_mode_audits_without_refusing() {
        use http::StatusCode;
        use tower::{ServiceExt, service_fn};
        let clock = ManualClock::now_from_system();
        let lockout = LockoutLayer::builder()
            .backoff_after(1)
            .lock_after(1)
            .clock(Arc::new(clock))
            .shadow()
            .build()
            .unwrap();
        let svc = lockout
            .clone()
            .layer(service_fn(|_req: Request<String>| async {
                Ok::<_, std::convert::Infallible>(
                    Rejection::invalid_credential("bad").into_deferred_response::<String>(),
                )
            }));
        for _ in 0..3 {
            let response = svc
                .clone()
                .oneshot(Request::new(String::new()))
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        }
        let stats = lockout.stats();
        assert_eq!(
            (stats.failures, stats.shadow_refusals, stats.refused),
            (3, 2, 0)
        );
    }
}
