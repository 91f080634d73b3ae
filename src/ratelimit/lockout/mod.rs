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
//! # Shared state (feature `redis`)
//!
//! With [`redis`](LockoutLayerBuilder::redis) and a [`RedisLockoutStore`], the counters live in
//! Redis: every replica using the same Redis and key prefix counts a client's failures together
//! and blocks it together. A failure is counted by one atomic Lua script (the same rules as in
//! memory), a check is one `HMGET`, every call is under the store's timeout, and each Redis key
//! expires when its client is neither blocked nor holding a recent failure. When Redis does not
//! answer, the store's [`FailureMode`](crate::ratelimit::store::FailureMode) decides: refuse
//! with 429 (fail closed, the default) or use this layer's in-memory counters (fail open),
//! counted and audited either way.
//!
//! # Shadow mode
//!
//! [`shadow`](LockoutLayerBuilder::shadow): failures are counted and blocks are decided and
//! audited (`lockout.shadow`), but nothing is refused.
//!
//! # Deployment caveat
//!
//! Without a [`RedisLockoutStore`], state is per process: with several replicas an attacker gets
//! the allowance once per replica. With one, a Redis outage in fail-open mode falls back to that
//! per-replica allowance, and in fail-closed mode refuses every request until Redis answers.
//! Many clients behind one NAT share an address: an attacker there can block them (bounded by
//! the lockout duration); configure an identity extractor to key per (identity, address).

use std::fmt;
use std::hash::{Hash, Hasher};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::request::Parts;
use http::{Request, Response};
use tower_layer::Layer;
use tower_service::Service;

use crate::client_ip::ClientIpResolver;
use crate::clock::{SharedClock, SystemClock, request_time};
use crate::context::ClientIp;
use crate::error::ConfigError;
use crate::principal::Principal;
use crate::ratelimit::future::Finish;
pub use crate::ratelimit::future::ResponseFuture;
use crate::ratelimit::store::{IdMap, SipKey, duration_nanos, shard_index};
use crate::rejection::{Rejection, RejectionKind};

#[cfg(feature = "redis")]
mod redis;
#[cfg(feature = "redis")]
pub use redis::{RedisLockoutStore, RedisLockoutStoreBuilder};

const SHARDS: usize = 16;

type Extractor = Arc<dyn Fn(&Parts) -> Option<String> + Send + Sync>;

/// The rules, in nanoseconds; the Redis script applies the same ones.
#[derive(Debug, Clone, Copy)]
struct Policy {
    backoff_after: u32,
    lock_after: u32,
    base_delay: u64,
    lockout: u64,
    window: u64,
}

/// What one failure led to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Counted,
    Backoff,
    Locked,
}

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

    /// Counts one failure at `now`.
    fn fail(&mut self, now: u64, policy: &Policy) -> Outcome {
        if now.saturating_sub(self.last_failure) > policy.window && self.blocked_until <= now {
            self.failures = 0;
        }
        self.failures = self.failures.saturating_add(1);
        self.last_failure = now;
        if self.failures >= policy.lock_after {
            self.blocked_until = now.saturating_add(policy.lockout);
            Outcome::Locked
        } else if self.failures >= policy.backoff_after {
            let doublings = (self.failures - policy.backoff_after).min(63);
            let delay = policy
                .base_delay
                .saturating_mul(1u64 << doublings)
                .min(policy.lockout);
            self.blocked_until = now.saturating_add(delay);
            Outcome::Backoff
        } else {
            Outcome::Counted
        }
    }
}

/// A locked shard that publishes its key count when released.
struct ShardGuard<'a> {
    shard: std::sync::MutexGuard<'a, Shard>,
    tracked: &'a AtomicUsize,
}

impl std::ops::Deref for ShardGuard<'_> {
    type Target = Shard;
    fn deref(&self) -> &Shard {
        &self.shard
    }
}

impl std::ops::DerefMut for ShardGuard<'_> {
    fn deref_mut(&mut self) -> &mut Shard {
        &mut self.shard
    }
}

impl Drop for ShardGuard<'_> {
    fn drop(&mut self) {
        // Still under the lock: the count readers see is never older than the last release.
        self.tracked
            .store(self.shard.entries.len(), Ordering::Release);
    }
}

#[derive(Default)]
struct Shard {
    entries: IdMap<Entry>,
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
    policy: Policy,
    per_shard: usize,
    /// The in-process counters: the state itself, or the fallback of a shared store.
    shards: Box<[Mutex<Shard>]>,
    /// How many keys each shard tracks, written under its lock: a request whose shard tracks
    /// none cannot be blocked (a shard is full, and its overflow entry used, only with at least
    /// `per_shard >= 1` keys), so it is let through without taking the lock.
    tracked: Box<[AtomicUsize]>,
    hash_key: SipKey,
    clock: SharedClock,
    shadow: bool,
    counters: Counters,
    #[cfg(feature = "redis")]
    shared: Option<RedisLockoutStore>,
}

/// The key of one request: the local hash and, with a shared store, the Redis key.
#[derive(Debug, Clone)]
struct Key {
    hash: u64,
    #[cfg(feature = "redis")]
    shared: Option<String>,
}

/// Counters of a [`LockoutLayer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct LockoutStats {
    /// Failed authentications seen.
    pub failures: u64,
    /// Requests refused because their key was blocked (or, fail-closed, because the shared
    /// store did not answer).
    pub refused: u64,
    /// Backoff delays imposed.
    pub backoffs: u64,
    /// Lockouts imposed.
    pub locked: u64,
    /// Requests shadow mode would have refused.
    pub shadow_refusals: u64,
    /// Lookups or failures that went to an overflow entry (shard full of blocked keys).
    pub overflowed: u64,
    /// Entries tracked in process memory now.
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
        let mut d = f.debug_struct("LockoutLayer");
        d.field("backoff_after", &self.config.policy.backoff_after)
            .field("lock_after", &self.config.policy.lock_after)
            .field("shadow", &self.config.shadow);
        #[cfg(feature = "redis")]
        d.field("shared", &self.config.shared);
        d.finish_non_exhaustive()
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
    #[cfg(feature = "redis")]
    shared: Option<RedisLockoutStore>,
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
            #[cfg(feature = "redis")]
            shared: None,
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
    /// does when it sees an `InvalidCredential` refusal, in the layer's store (shared or local).
    /// For authentication that happens outside the layer (a login handler checking a password).
    pub async fn record_failure(&self, ip: IpAddr, identity: Option<&str>) {
        let key = self.config.key(Some(ip), identity);
        self.config.record_failure(&key).await;
    }

    /// How long the client `ip` (and `identity`) is blocked for, if it is. With a shared store
    /// that does not answer: fail-closed reports a block of the base delay, fail-open consults
    /// the local counters.
    pub async fn blocked_for(&self, ip: IpAddr, identity: Option<&str>) -> Option<Duration> {
        let key = self.config.key(Some(ip), identity);
        self.config.blocked_for(&key).await.map(|(wait, _)| wait)
    }

    /// Forgets the failures of the client `ip` (and `identity`), as the layer does after a
    /// successful authentication of a request with an identity.
    pub async fn clear(&self, ip: IpAddr, identity: Option<&str>) {
        let key = self.config.key(Some(ip), identity);
        self.config.clear(&key).await;
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

    /// The most entries tracked in process memory. Default 100 000; at least 16.
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

    /// Keeps the counters in Redis (feature `redis`), shared by every replica using the same
    /// Redis and key prefix, instead of in process memory. The layers of all replicas must use
    /// the same rules ([`backoff_after`](Self::backoff_after) and the rest). When Redis fails,
    /// the store's [`FailureMode`](crate::ratelimit::store::FailureMode) applies; fail-open uses
    /// this layer's in-memory counters ([`max_keys`](Self::max_keys) bounds them).
    #[cfg(feature = "redis")]
    pub fn redis(mut self, store: RedisLockoutStore) -> Self {
        self.shared = Some(store);
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
                policy: Policy {
                    backoff_after: self.backoff_after,
                    lock_after: self.lock_after,
                    base_delay: duration_nanos(self.base_delay),
                    lockout: duration_nanos(self.lockout),
                    window: duration_nanos(self.window),
                },
                per_shard: self.max_keys / SHARDS,
                shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
                tracked: (0..SHARDS).map(|_| AtomicUsize::new(0)).collect(),
                hash_key: SipKey::random(),
                clock: self.clock,
                shadow: self.shadow,
                counters: Counters::default(),
                #[cfg(feature = "redis")]
                shared: self.shared,
            }),
        })
    }
}

fn unix_nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(duration_nanos)
        .unwrap_or(0)
}

/// Why a request is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Block {
    /// Its key is blocked.
    Key,
    /// The shared store did not answer (fail-closed).
    #[cfg(feature = "redis")]
    StoreUnavailable,
}

impl Config {
    fn key(&self, ip: Option<IpAddr>, identity: Option<&str>) -> Key {
        let ip = ip.map(|ip| self.resolver.key(ip));
        let mut h = self.hash_key.hasher();
        ip.hash(&mut h);
        identity.hash(&mut h);
        Key {
            hash: h.finish(),
            #[cfg(feature = "redis")]
            shared: self.shared.as_ref().map(|s| s.key(ip, identity)),
        }
    }

    fn shard_index(&self, hash: u64) -> usize {
        // `shards` has SHARDS (a power of two) elements and the index is reduced modulo its
        // length.
        shard_index(hash, SHARDS as u64 - 1) % self.shards.len()
    }

    fn shard(&self, hash: u64) -> ShardGuard<'_> {
        let index = self.shard_index(hash);
        ShardGuard {
            shard: self.shards[index]
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
            tracked: &self.tracked[index],
        }
    }

    /// Whether the shard of `hash` tracks any key; `false` means the key is not blocked.
    fn may_be_blocked(&self, hash: u64) -> bool {
        self.tracked[self.shard_index(hash)].load(Ordering::Acquire) > 0
    }

    fn sweep(&self, shard: &mut Shard, now: u64) {
        let window = self.policy.window;
        shard.entries.retain(|_, e| !e.idle(now, window));
        if shard.overflow.idle(now, window) {
            shard.overflow = Entry::default();
        }
        shard.next_sweep = now.saturating_add(window.min(60_000_000_000));
    }

    fn local_blocked_for(&self, hash: u64, now: SystemTime) -> Option<Duration> {
        if !self.may_be_blocked(hash) {
            return None;
        }
        let now = unix_nanos(now);
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

    fn local_record_failure(&self, hash: u64, now: SystemTime) -> (u32, Outcome) {
        let now = unix_nanos(now);
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
        let outcome = entry.fail(now, &self.policy);
        (entry.failures, outcome)
    }

    fn local_clear(&self, hash: u64) {
        self.shard(hash).entries.remove(&hash);
    }

    /// Counts and audits what one failure led to.
    fn note(&self, failures: u32, outcome: Outcome) {
        match outcome {
            Outcome::Counted => {}
            Outcome::Backoff => {
                self.counters.backoffs.fetch_add(1, Ordering::Relaxed);
            }
            Outcome::Locked => {
                self.counters.locked.fetch_add(1, Ordering::Relaxed);
                crate::audit::global().record(
                    crate::audit::AuditEvent::new(crate::audit::EventType::LockoutLocked)
                        .with_reason_code("locked")
                        .with_detail("failures", failures)
                        .with_detail("lockout_secs", self.policy.lockout / 1_000_000_000)
                        .with_detail("shadow", self.shadow),
                );
            }
        }
    }

    fn sync_record_failure(&self, hash: u64) {
        self.counters.failures.fetch_add(1, Ordering::Relaxed);
        let (failures, outcome) = self.local_record_failure(hash, self.clock.now());
        self.note(failures, outcome);
    }

    /// Whether the key is blocked, and why: the shared store when there is one (following its
    /// failure mode when it does not answer), the local counters otherwise.
    async fn blocked_for(&self, key: &Key) -> Option<(Duration, Block)> {
        self.check(key, self.clock.now()).await.0
    }

    /// [`blocked_for`](Self::blocked_for) at `now`, and whether the key may hold failures (a
    /// success then has something to clear).
    async fn check(&self, key: &Key, now: SystemTime) -> (Option<(Duration, Block)>, bool) {
        #[cfg(feature = "redis")]
        if let (Some(store), Some(shared)) = (&self.shared, &key.shared) {
            use crate::ratelimit::store::FailureMode;
            return match store.blocked_for(shared, now).await {
                Ok((wait, exists)) => (wait.map(|w| (w, Block::Key)), exists),
                Err(failure) => match store.note_failure(&failure, "check") {
                    FailureMode::FailOpen => (
                        self.local_blocked_for(key.hash, now)
                            .map(|w| (w, Block::Key)),
                        true,
                    ),
                    _ => (
                        Some((
                            Duration::from_nanos(self.policy.base_delay),
                            Block::StoreUnavailable,
                        )),
                        true,
                    ),
                },
            };
        }
        (
            self.local_blocked_for(key.hash, now)
                .map(|w| (w, Block::Key)),
            true,
        )
    }

    async fn record_failure(&self, key: &Key) {
        #[cfg(feature = "redis")]
        if let (Some(store), Some(shared)) = (&self.shared, &key.shared) {
            use crate::ratelimit::store::FailureMode;
            self.counters.failures.fetch_add(1, Ordering::Relaxed);
            let now = self.clock.now();
            match store.record_failure(shared, now, &self.policy).await {
                Ok((failures, outcome)) => self.note(failures, outcome),
                Err(failure) => {
                    if store.note_failure(&failure, "record") == FailureMode::FailOpen {
                        let (failures, outcome) = self.local_record_failure(key.hash, now);
                        self.note(failures, outcome);
                    }
                    // Fail-closed: nothing to count in; checks refuse until Redis answers.
                }
            }
            return;
        }
        self.sync_record_failure(key.hash);
    }

    async fn clear(&self, key: &Key) {
        #[cfg(feature = "redis")]
        if let (Some(store), Some(shared)) = (&self.shared, &key.shared) {
            if let Err(failure) = store.clear(shared).await {
                let _ = store.note_failure(&failure, "clear");
            }
            // The local counters may hold failures from a fallback period.
            self.local_clear(key.hash);
            return;
        }
        self.local_clear(key.hash);
    }

    /// The refusal for a blocked request, or `None` in shadow mode (counted and audited).
    fn refusal<B: Default>(&self, wait: Duration, block: Block) -> Option<Response<B>> {
        if self.shadow {
            self.counters
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
            return None;
        }
        self.counters.refused.fetch_add(1, Ordering::Relaxed);
        let detail = match block {
            Block::Key => "too many failed authentications from this client",
            #[cfg(feature = "redis")]
            Block::StoreUnavailable => "lockout store unavailable (fail closed)",
        };
        Some(
            Rejection::new(RejectionKind::LockedOut, detail)
                .with_retry_after(wait)
                .into_deferred_response(),
        )
    }
}

/// What the inner service's response says about the credential.
fn verdict<B>(response: &Response<B>) -> Option<bool> {
    let failed = response
        .extensions()
        .get::<Rejection>()
        .is_some_and(|r| r.kind() == RejectionKind::InvalidCredential);
    if failed {
        Some(false)
    } else if response.extensions().get::<Principal>().is_some() {
        Some(true)
    } else {
        None
    }
}

/// Watches a response of the in-memory lockout: counts a failure, or clears on success.
pub(crate) struct Observer {
    config: Arc<Config>,
    /// The in-memory key (a shared store's key goes the boxed way): only its hash, to keep the
    /// response future small.
    hash: u64,
    has_identity: bool,
}

impl Observer {
    pub(crate) fn observe<B>(self, response: &Response<B>) {
        match verdict(response) {
            Some(false) => self.config.sync_record_failure(self.hash),
            Some(true) if self.has_identity => self.config.local_clear(self.hash),
            _ => {}
        }
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
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    ReqBody: Send + 'static,
    ResBody: Default + Send + 'static,
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
        let key = config.key(ip, identity.as_deref());
        let has_identity = identity.is_some();
        #[cfg(feature = "redis")]
        if key.shared.is_some() {
            return self.call_shared(key, has_identity, req);
        }
        // Most clients have no failures on record: no clock read and no lock for them.
        if config.may_be_blocked(key.hash)
            && let Some(wait) =
                config.local_blocked_for(key.hash, request_time(&*config.clock, req.extensions()))
            && let Some(response) = config.refusal(wait, Block::Key)
        {
            return ResponseFuture::refused(response);
        }
        let observer = Observer {
            config: self.config.clone(),
            hash: key.hash,
            has_identity,
        };
        ResponseFuture::inner(self.inner.call(req), Finish::Observe(observer))
    }
}

#[cfg(feature = "redis")]
impl<S> Lockout<S> {
    /// The shared-store path: check, call, then count or clear, each awaited in turn so the
    /// next attempt sees this one.
    fn call_shared<ReqBody, ResBody>(
        &mut self,
        key: Key,
        has_identity: bool,
        req: Request<ReqBody>,
    ) -> ResponseFuture<S::Future, ResBody>
    where
        S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
        S::Future: Send + 'static,
        ReqBody: Send + 'static,
        ResBody: Default + Send + 'static,
    {
        let mut inner = crate::ratelimit::future::take_ready(&mut self.inner);
        let config = self.config.clone();
        ResponseFuture::boxed(Box::pin(async move {
            let now = request_time(&*config.clock, req.extensions());
            let (blocked, may_hold_failures) = config.check(&key, now).await;
            if let Some((wait, block)) = blocked
                && let Some(response) = config.refusal(wait, block)
            {
                return Ok(response);
            }
            let response = inner.call(req).await?;
            match verdict(&response) {
                Some(false) => config.record_failure(&key).await,
                // Nothing to clear (the usual case) costs no round trip.
                Some(true) if has_identity && may_hold_failures => config.clear(&key).await,
                _ => {}
            }
            Ok(response)
        }))
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

    #[tokio::test]
    async fn shards_without_keys_skip_the_lock_and_stay_exact() {
        let clock = ManualClock::now_from_system();
        let l = layer(&clock, 1_000);
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        let hash = l.config.key(Some(ip), None).hash;
        let tracked = |l: &LockoutLayer| {
            l.config
                .tracked
                .iter()
                .map(|t| t.load(Ordering::Relaxed))
                .sum::<usize>()
        };
        assert!(!l.config.may_be_blocked(hash));
        for _ in 0..3 {
            l.record_failure(ip, None).await;
        }
        // The failures are visible to the unlocked check, and the key is blocked.
        assert!(l.config.may_be_blocked(hash));
        assert_eq!(tracked(&l), 1);
        assert_eq!(l.blocked_for(ip, None).await, Some(Duration::from_secs(1)));
        // Cleared: nothing tracked again.
        l.config.local_clear(hash);
        assert!(!l.config.may_be_blocked(hash));
        assert_eq!(l.blocked_for(ip, None).await, None);
        // Swept after the window: the count follows the map.
        l.record_failure(ip, None).await;
        assert_eq!(tracked(&l), 1);
        clock.advance(Duration::from_secs(24 * 3600));
        for i in 0..=255u8 {
            let other = IpAddr::from([198, 51, 100, i]);
            assert_eq!(l.blocked_for(other, None).await, None);
            l.record_failure(other, None).await;
        }
        let (entries, counted) = (
            l.config
                .shards
                .iter()
                .map(|s| s.lock().unwrap().entries.len())
                .sum::<usize>(),
            tracked(&l),
        );
        assert_eq!(entries, counted);
    }

    #[tokio::test]
    async fn backoff_doubles_then_locks_and_expires() {
        let clock = ManualClock::now_from_system();
        let l = layer(&clock, 1_000);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        for _ in 0..2 {
            l.record_failure(ip, None).await;
            assert_eq!(l.blocked_for(ip, None).await, None);
        }
        l.record_failure(ip, None).await;
        assert_eq!(l.blocked_for(ip, None).await, Some(Duration::from_secs(1)));
        clock.advance(Duration::from_secs(1));
        l.record_failure(ip, None).await;
        assert_eq!(l.blocked_for(ip, None).await, Some(Duration::from_secs(2)));
        l.record_failure(ip, None).await;
        assert_eq!(
            l.blocked_for(ip, None).await,
            Some(Duration::from_secs(900))
        );
        assert_eq!(l.stats().locked, 1);
        // Another client is unaffected.
        assert_eq!(
            l.blocked_for("192.0.2.2".parse().unwrap(), None).await,
            None
        );
        clock.advance(Duration::from_secs(900));
        assert_eq!(l.blocked_for(ip, None).await, None);
    }

    #[tokio::test]
    async fn memory_is_bounded_and_locked_keys_survive_churn() {
        let clock = ManualClock::now_from_system();
        let l = layer(&clock, 1_024);
        let attacker: IpAddr = "203.0.113.66".parse().unwrap();
        for _ in 0..5 {
            l.record_failure(attacker, None).await;
        }
        assert!(l.blocked_for(attacker, None).await.is_some());
        for i in 0..1_000_000u32 {
            let ip = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            l.record_failure(ip, None).await;
            if i % 1000 == 0 {
                clock.advance(Duration::from_millis(1));
            }
        }
        let stats = l.stats();
        assert!(stats.tracked_keys <= 1_024, "{}", stats.tracked_keys);
        assert!(l.blocked_for(attacker, None).await.is_some());
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
    async fn system_clock_checks_use_the_arrival_time_from_the_edge() {
        use crate::context::{ClientIp, RequestContext};
        use http::StatusCode;
        use tower::{ServiceExt, service_fn};

        let lockout = LockoutLayer::builder()
            .backoff_after(1)
            .lock_after(1)
            .build()
            .unwrap();
        let ip: IpAddr = "192.0.2.9".parse().unwrap();
        lockout.record_failure(ip, None).await;
        let svc = lockout.layer(service_fn(|_req: Request<String>| async {
            Ok::<_, std::convert::Infallible>(Response::new(String::new()))
        }));
        let status = |received: Option<SystemTime>| {
            let mut req = Request::new(String::new());
            req.extensions_mut().insert(ClientIp(ip));
            if let Some(received) = received {
                req.extensions_mut()
                    .insert(RequestContext::arrived_at(received, Some(ip)));
            }
            let svc = svc.clone();
            async move { svc.oneshot(req).await.unwrap().status() }
        };
        let now = SystemTime::now();
        assert_eq!(status(None).await, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(status(Some(now)).await, StatusCode::TOO_MANY_REQUESTS);
        // Arrived after the lock expired by its own time: the clock was not read.
        let later = now + Duration::from_secs(24 * 3600);
        assert_eq!(status(Some(later)).await, StatusCode::OK);
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
