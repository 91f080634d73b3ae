//! The Redis lockout store (feature `redis`): failure counters shared by every replica.

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use redis::Script;

use super::{Outcome, Policy};
use crate::error::ConfigError;
use crate::ratelimit::store::FailureMode;
use crate::shared_redis::{RedisConn, RedisFailure, digest, unix_micros};

const DEFAULT_PREFIX: &str = "portcullis:lockout:";
const DEFAULT_TIMEOUT: Duration = Duration::from_millis(100);

/// Counts one failure, atomically, with the same rules as the in-memory lockout. The entry is
/// a hash: `f` failures, `l` last failure, `b` blocked until (microseconds since the epoch).
/// ARGV: now, window, backoff_after, lock_after, base delay, lockout duration.
/// Returns {failures, outcome (0 counted, 1 backoff, 2 locked)}.
/// The key expires when it is neither blocked nor holding a failure inside the window, so Redis
/// holds only clients that failed recently.
const RECORD_FAILURE: &str = r"
local now = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local backoff_after = tonumber(ARGV[3])
local lock_after = tonumber(ARGV[4])
local base = tonumber(ARGV[5])
local lockout = tonumber(ARGV[6])
local v = redis.call('HMGET', KEYS[1], 'f', 'l', 'b')
local failures = tonumber(v[1]) or 0
local last = tonumber(v[2]) or 0
local blocked = tonumber(v[3]) or 0
if now - last > window and blocked <= now then failures = 0 end
failures = failures + 1
local outcome = 0
if failures >= lock_after then
  blocked = now + lockout
  outcome = 2
elseif failures >= backoff_after then
  local delay = base * 2 ^ math.min(failures - backoff_after, 62)
  if delay > lockout then delay = lockout end
  blocked = now + delay
  outcome = 1
end
redis.call('HSET', KEYS[1], 'f', string.format('%d', failures), 'l', string.format('%d', now),
  'b', string.format('%d', blocked))
local keep = math.max(blocked, now + window) - now
redis.call('PEXPIRE', KEYS[1], math.ceil(keep / 1000) + 1)
return {failures, outcome}
";

struct Inner {
    conn: RedisConn,
    mode: FailureMode,
    record: Script,
    failures: AtomicU64,
    fallbacks: AtomicU64,
}

/// Lockout state in Redis, so every replica pointing at the same Redis and key prefix counts
/// one client's failures together and blocks it together. Plug it in with
/// [`LockoutLayerBuilder::redis`](super::LockoutLayerBuilder::redis).
///
/// - The same rules as the in-memory lockout, applied atomically by one Lua script per failure
///   (loaded once, called by SHA); a check is one `HMGET`; a successful authentication after
///   earlier failures one `DEL`.
/// - One multiplexed [`ConnectionManager`](redis::aio::ConnectionManager) per store (clones
///   share it), connected on first use; every call under a timeout (default 100 ms) covering
///   connection and reply.
/// - Keys are `<prefix><sha256 hex>` of the client address (IPv6 grouped as the layer's
///   resolver says) and the presented identity, so neither appears in Redis. Each key expires
///   when its client is neither blocked nor holding a failure inside the window: Redis holds
///   only clients that failed recently.
/// - Time comes from the layer's clock: keep replicas on NTP.
/// - Plain `redis://` only in this build (no TLS to Redis): keep Redis on a trusted network or
///   loopback.
/// - When Redis fails or times out, the [`FailureMode`] applies: `FailClosed` (default)
///   refuses requests with 429 until Redis answers again; `FailOpen` uses the layer's own
///   in-memory counters (per replica). Both are counted ([`failures`](Self::failures),
///   [`fallbacks`](Self::fallbacks)) and audited (`lockout.store_unavailable`,
///   `lockout.fallback` on target `portcullis::audit`).
///
/// ```
/// use std::time::Duration;
/// use portcullis::ratelimit::lockout::{LockoutLayer, RedisLockoutStore};
/// use portcullis::ratelimit::store::FailureMode;
///
/// let store = RedisLockoutStore::builder("redis://127.0.0.1:6379")
///     .key_prefix("orders-api:lockout:")
///     .timeout(Duration::from_millis(50))
///     .failure_mode(FailureMode::FailClosed)
///     .build()
///     .unwrap();
/// // No connection is made until the first request.
/// let lockout = LockoutLayer::builder().redis(store).build().unwrap();
/// # let _ = lockout;
/// ```
#[derive(Clone)]
pub struct RedisLockoutStore {
    inner: Arc<Inner>,
}

impl fmt::Debug for RedisLockoutStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the URL: it may carry a password.
        f.debug_struct("RedisLockoutStore")
            .field("endpoint", &self.inner.conn.endpoint())
            .field("prefix", &self.inner.conn.prefix())
            .field("timeout", &self.inner.conn.timeout())
            .field("mode", &self.inner.mode)
            .finish_non_exhaustive()
    }
}

/// Configuration of a [`RedisLockoutStore`].
#[must_use]
pub struct RedisLockoutStoreBuilder {
    url: String,
    prefix: String,
    timeout: Duration,
    mode: FailureMode,
}

impl fmt::Debug for RedisLockoutStoreBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisLockoutStoreBuilder")
            .field("prefix", &self.prefix)
            .field("timeout", &self.timeout)
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

impl RedisLockoutStoreBuilder {
    /// The key prefix. Default `portcullis:lockout:`. Services sharing a Redis but not their
    /// lockouts need different prefixes. Printable ASCII without spaces, 1 to 128 bytes.
    pub fn key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// The timeout of each call (connection and reply). Default 100 ms; 1 ms to 30 s. It is
    /// added to a request's latency when Redis hangs.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// What to do when Redis fails. Default [`FailureMode::FailClosed`]: an outage must not
    /// allow unlimited guessing. [`FailureMode::FailOpen`] keeps authenticating with per-replica
    /// counters instead.
    pub fn failure_mode(mut self, mode: FailureMode) -> Self {
        self.mode = mode;
        self
    }

    /// Checks the configuration (no connection is made).
    pub fn build(self) -> Result<RedisLockoutStore, ConfigError> {
        let conn = RedisConn::new("lockout", &self.url, self.prefix, self.timeout)?;
        Ok(RedisLockoutStore {
            inner: Arc::new(Inner {
                conn,
                mode: self.mode,
                record: Script::new(RECORD_FAILURE),
                failures: AtomicU64::new(0),
                fallbacks: AtomicU64::new(0),
            }),
        })
    }
}

impl RedisLockoutStore {
    /// Starts a configuration for the server at `url` (`redis://[user:password@]host:port/db`).
    /// The URL is never shown by `Debug` or in errors.
    pub fn builder(url: impl AsRef<str>) -> RedisLockoutStoreBuilder {
        RedisLockoutStoreBuilder {
            url: url.as_ref().to_owned(),
            prefix: DEFAULT_PREFIX.to_owned(),
            timeout: DEFAULT_TIMEOUT,
            mode: FailureMode::FailClosed,
        }
    }

    /// How many calls Redis failed (error or timeout), in either mode.
    pub fn failures(&self) -> u64 {
        self.inner.failures.load(Ordering::Relaxed)
    }

    /// How many calls fell back to the in-memory counters ([`FailureMode::FailOpen`]).
    pub fn fallbacks(&self) -> u64 {
        self.inner.fallbacks.load(Ordering::Relaxed)
    }

    /// The failure mode.
    pub fn failure_mode(&self) -> FailureMode {
        self.inner.mode
    }

    /// The server's host and port (never the password).
    pub fn endpoint(&self) -> &str {
        self.inner.conn.endpoint()
    }

    /// Counts a failed call and, in fail-open mode, a fallback; returns the mode to follow.
    pub(super) fn note_failure(
        &self,
        failure: &RedisFailure,
        operation: &'static str,
    ) -> FailureMode {
        self.inner.failures.fetch_add(1, Ordering::Relaxed);
        let mode = self.inner.mode;
        if mode == FailureMode::FailOpen {
            self.inner.fallbacks.fetch_add(1, Ordering::Relaxed);
            crate::audit::global().record(
                crate::audit::AuditEvent::new(crate::audit::EventType::LockoutFallback)
                    .with_reason_code("fail_open")
                    .with_reason(failure.reason().to_string())
                    .with_detail("operation", operation),
            );
        } else {
            crate::audit::global().record(
                crate::audit::AuditEvent::new(crate::audit::EventType::LockoutStoreUnavailable)
                    .with_reason_code("fail_closed")
                    .with_reason(failure.reason().to_string())
                    .with_detail("operation", operation),
            );
        }
        mode
    }

    /// The Redis key of a client address (already grouped) and presented identity.
    pub(super) fn key(&self, ip: Option<IpAddr>, identity: Option<&str>) -> String {
        let ip = ip.map(|ip| ip.to_string()).unwrap_or_default();
        // `i` marks a present identity, so no identity and an empty one differ.
        let identity = identity.map(|id| format!("i{id}")).unwrap_or_default();
        self.inner.conn.key(
            "",
            &digest(&[b"lockout", ip.as_bytes(), identity.as_bytes()]),
        )
    }

    /// How long the key is blocked for at `now`, if it is, and whether it has an entry at all
    /// (so a success clears only what exists, without a round trip otherwise).
    pub(super) async fn blocked_for(
        &self,
        key: &str,
        now: SystemTime,
    ) -> Result<(Option<Duration>, bool), RedisFailure> {
        let conn = &self.inner.conn;
        let (failures, until): (Option<u64>, Option<u64>) = conn
            .run("lockout check", async {
                let mut c = conn.connection().await?;
                redis::cmd("HMGET")
                    .arg(key)
                    .arg("f")
                    .arg("b")
                    .query_async(&mut c)
                    .await
            })
            .await?;
        let now = unix_micros(now);
        let blocked = until
            .filter(|until| *until > now)
            .map(|until| Duration::from_micros(until - now));
        Ok((blocked, failures.is_some()))
    }

    /// Counts one failure for the key at `now` under `policy`.
    pub(super) async fn record_failure(
        &self,
        key: &str,
        now: SystemTime,
        policy: &Policy,
    ) -> Result<(u32, Outcome), RedisFailure> {
        let inner = &*self.inner;
        let micros = |nanos: u64| (nanos / 1_000).max(1);
        let (failures, outcome): (u64, u8) = inner
            .conn
            .run("lockout record", async {
                let mut c = inner.conn.connection().await?;
                inner
                    .record
                    .key(key)
                    .arg(unix_micros(now))
                    .arg(micros(policy.window))
                    .arg(policy.backoff_after)
                    .arg(policy.lock_after)
                    .arg(micros(policy.base_delay))
                    .arg(micros(policy.lockout))
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        let outcome = match outcome {
            2 => Outcome::Locked,
            1 => Outcome::Backoff,
            _ => Outcome::Counted,
        };
        Ok((u32::try_from(failures).unwrap_or(u32::MAX), outcome))
    }

    /// Forgets the key's failures.
    pub(super) async fn clear(&self, key: &str) -> Result<(), RedisFailure> {
        let conn = &self.inner.conn;
        conn.run("lockout clear", async {
            let mut c = conn.connection().await?;
            redis::cmd("DEL").arg(key).query_async::<()>(&mut c).await
        })
        .await
    }

    #[cfg(test)]
    pub(super) fn conn(&self) -> &RedisConn {
        &self.inner.conn
    }
}

#[cfg(test)]
mod tests {
    //! Against the real Redis at `REDIS_URL` (default `redis://127.0.0.1:6379`), and against a
    //! private `redis-server` that the failure test starts and stops. Without Redis these tests
    //! skip with a loud message, except under CI (`CI` set), where they fail.

    use super::*;
    use crate::clock::ManualClock;
    use crate::context::ClientIp;
    use crate::ratelimit::lockout::LockoutLayer;
    use crate::rejection::Rejection;
    use crate::shared_redis::test_support::{PrivateRedis, answers, redis_url, unique_prefix};
    use http::{Request, Response, StatusCode};
    use std::time::Instant;
    use tower::{Layer, ServiceExt, service_fn};

    fn store(url: &str, prefix: &str, mode: FailureMode, timeout: Duration) -> RedisLockoutStore {
        RedisLockoutStore::builder(url)
            .key_prefix(prefix)
            .timeout(timeout)
            .failure_mode(mode)
            .build()
            .unwrap()
    }

    async fn live_store(prefix: &str) -> Option<RedisLockoutStore> {
        let store = store(
            &redis_url(),
            prefix,
            FailureMode::FailClosed,
            Duration::from_secs(2),
        );
        answers(store.conn(), "lockout").await.then_some(store)
    }

    /// A replica: lockout (backoff after 3, locked after 5) around an authenticator that
    /// accepts only `authorization: good`, with the identity from `x-user`.
    fn replica(
        store: RedisLockoutStore,
        clock: &ManualClock,
    ) -> (
        LockoutLayer,
        impl tower::Service<
            Request<String>,
            Response = Response<String>,
            Error = std::convert::Infallible,
            Future = impl Send,
        > + Clone,
    ) {
        let layer = LockoutLayer::builder()
            .backoff_after(3)
            .lock_after(5)
            .identity(|parts| {
                parts
                    .headers
                    .get("x-user")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned)
            })
            .clock(Arc::new(clock.clone()))
            .redis(store)
            .build()
            .unwrap();
        let svc = layer
            .clone()
            .layer(service_fn(|req: Request<String>| async move {
                let good = req
                    .headers()
                    .get("authorization")
                    .is_some_and(|v| v == "good");
                Ok::<_, std::convert::Infallible>(if good {
                    let mut ok = Response::new(String::new());
                    ok.extensions_mut().insert(
                        crate::principal::Principal::builder(
                            "alice",
                            crate::principal::AuthMethod::Other("test".into()),
                        )
                        .build(),
                    );
                    ok
                } else {
                    Rejection::invalid_credential("bad").into_deferred_response()
                })
            }));
        (layer, svc)
    }

    fn attempt(ip: &str, user: &str, auth: &str) -> Request<String> {
        let mut req = Request::builder()
            .header("authorization", auth)
            .header("x-user", user)
            .body(String::new())
            .unwrap();
        req.extensions_mut().insert(ClientIp(ip.parse().unwrap()));
        req
    }

    #[tokio::test]
    async fn two_replicas_lock_out_together_and_a_success_resets() {
        let prefix = unique_prefix("lockout");
        let (Some(a), Some(b)) = (live_store(&prefix).await, live_store(&prefix).await) else {
            return;
        };
        let clock = ManualClock::now_from_system();
        let (layer_a, svc_a) = replica(a.clone(), &clock);
        let (layer_b, svc_b) = replica(b.clone(), &clock);
        let replicas = [svc_a, svc_b];
        let ip = "198.51.100.7";

        // Two failures on each side of the balancer: the counters are shared.
        for i in 0..2 {
            let response = replicas[i % 2]
                .clone()
                .oneshot(attempt(ip, "alice", "bad"))
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        }
        // A success for (alice, ip) on replica B resets what A and B counted.
        let ok = replicas[1]
            .clone()
            .oneshot(attempt(ip, "alice", "good"))
            .await
            .unwrap();
        assert_eq!(ok.status(), StatusCode::OK);
        for i in 0..2 {
            let response = replicas[i % 2]
                .clone()
                .oneshot(attempt(ip, "alice", "bad"))
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "reset: {i}");
        }
        // Third failure (on B): one second of backoff, seen by A too.
        let third = replicas[0]
            .clone()
            .oneshot(attempt(ip, "alice", "bad"))
            .await
            .unwrap();
        assert_eq!(third.status(), StatusCode::UNAUTHORIZED);
        let blocked = replicas[1]
            .clone()
            .oneshot(attempt(ip, "alice", "good"))
            .await
            .unwrap();
        assert_eq!(blocked.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(blocked.headers()["retry-after"], "1");
        clock.advance(Duration::from_secs(1));
        // Fourth and fifth failures, alternating replicas: locked out everywhere.
        for i in 0..2 {
            let response = replicas[i % 2]
                .clone()
                .oneshot(attempt(ip, "alice", "bad"))
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{i}");
            clock.advance(Duration::from_secs(2));
        }
        for svc in &replicas {
            let locked = svc
                .clone()
                .oneshot(attempt(ip, "alice", "good"))
                .await
                .unwrap();
            assert_eq!(locked.status(), StatusCode::TOO_MANY_REQUESTS);
            let retry: u64 = locked.headers()["retry-after"]
                .to_str()
                .unwrap()
                .parse()
                .unwrap();
            assert!((897..=900).contains(&retry), "{retry}");
        }
        assert_eq!(
            layer_a.blocked_for(ip.parse().unwrap(), Some("bob")).await,
            None
        );
        assert_eq!(
            layer_a.stats().locked + layer_b.stats().locked,
            1,
            "one lockout, counted by the replica that saw the fifth failure"
        );
        // Redis holds the entry under a TTL no longer than the lockout.
        let key = a.key(Some(ip.parse().unwrap()), Some("alice"));
        assert!(key.starts_with(&prefix) && !key.contains(ip) && !key.contains("alice"));
        let mut conn = a.conn().connection().await.unwrap();
        let pttl: i64 = ::redis::cmd("PTTL")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .unwrap();
        assert!(0 < pttl && pttl <= 900_000 + 1, "{pttl}");
        clock.advance(Duration::from_secs(900));
        let after = replicas[0]
            .clone()
            .oneshot(attempt(ip, "alice", "good"))
            .await
            .unwrap();
        assert_eq!(after.status(), StatusCode::OK);
        assert_eq!(a.failures() + b.failures(), 0);
        assert_eq!(
            layer_a.stats().tracked_keys + layer_b.stats().tracked_keys,
            0
        );
    }

    #[tokio::test]
    async fn redis_stopped_mid_run_follows_the_failure_mode_without_hanging() {
        let Some(mut server) = PrivateRedis::start("lockout failure mode") else {
            return;
        };
        let timeout = Duration::from_millis(300);
        let closed = store(
            &server.url(),
            &unique_prefix("lockout"),
            FailureMode::FailClosed,
            timeout,
        );
        let open = store(
            &server.url(),
            &unique_prefix("lockout"),
            FailureMode::FailOpen,
            timeout,
        );
        server.wait_until_up(closed.conn()).await;
        let clock = ManualClock::now_from_system();
        let (closed_layer, closed_svc) = replica(closed.clone(), &clock);
        let (open_layer, open_svc) = replica(open.clone(), &clock);
        let ip = "203.0.113.9";
        // Up: two failures counted in Redis on each.
        for svc in [&closed_svc, &open_svc] {
            for _ in 0..2 {
                let r = svc
                    .clone()
                    .oneshot(attempt(ip, "carol", "bad"))
                    .await
                    .unwrap();
                assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
            }
        }
        server.stop();

        // Fail closed: every request refused with 429 within the timeout, the authenticator
        // never reached.
        for _ in 0..3 {
            let started = Instant::now();
            let r = closed_svc
                .clone()
                .oneshot(attempt(ip, "carol", "good"))
                .await
                .unwrap();
            assert!(started.elapsed() < Duration::from_secs(2), "hung");
            assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
            assert_eq!(r.headers()["retry-after"], "1");
        }
        assert_eq!(closed.failures(), 3);
        assert_eq!(closed.fallbacks(), 0);
        assert_eq!(closed_layer.stats().refused, 3);

        // Fail open: the local counters take over (starting from zero on this replica), with
        // the same rules: backoff after the third failure.
        let mut statuses = Vec::new();
        for _ in 0..4 {
            let started = Instant::now();
            let r = open_svc
                .clone()
                .oneshot(attempt(ip, "carol", "bad"))
                .await
                .unwrap();
            assert!(started.elapsed() < Duration::from_secs(2), "hung");
            statuses.push(r.status());
        }
        assert_eq!(
            statuses,
            [
                StatusCode::UNAUTHORIZED,
                StatusCode::UNAUTHORIZED,
                StatusCode::UNAUTHORIZED,
                StatusCode::TOO_MANY_REQUESTS
            ]
        );
        // Each of the 3 passing requests made a failed check and a failed record; the refused
        // one a failed check.
        assert_eq!(open.failures(), 7);
        assert_eq!(open.fallbacks(), 7);
        assert_eq!(open_layer.stats().backoffs, 1);
        assert_eq!(open_layer.stats().tracked_keys, 1);

        // Back (empty): both reconnect by themselves.
        server.restart();
        server.wait_until_up(closed.conn()).await;
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let r = closed_svc
                .clone()
                .oneshot(attempt(ip, "carol", "good"))
                .await
                .unwrap();
            if r.status() == StatusCode::OK {
                break;
            }
            assert!(Instant::now() < deadline, "did not reconnect");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The Lua script and the in-memory entry apply the same rules: the same failure counts,
    /// outcomes and blocks over pseudo-random sequences of failures, for several rule sets.
    #[tokio::test]
    async fn the_script_follows_the_in_memory_rules() {
        use crate::ratelimit::lockout::Entry;
        let Some(store) = live_store(&unique_prefix("lockout")).await else {
            return;
        };
        let policies = [
            (3, 5, 1_000, 900_000, 60_000),
            (1, 1, 250, 5_000, 2_000),
            (2, 8, 100, 3_000, 10_000),
        ];
        let start = SystemTime::now();
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        for (n, (backoff_after, lock_after, base_ms, lockout_ms, window_ms)) in
            policies.into_iter().enumerate()
        {
            let ms = |v: u64| v * 1_000_000;
            let policy = Policy {
                backoff_after,
                lock_after,
                base_delay: ms(base_ms),
                lockout: ms(lockout_ms),
                window: ms(window_ms),
            };
            let key = store.key(None, Some(&format!("policy-{n}")));
            let mut entry = Entry::default();
            let mut now = start;
            for step in 0..60 {
                // Gaps from 0 ms to about 1.5 windows, in whole milliseconds.
                seed = seed
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                now += Duration::from_millis((seed >> 33) % (window_ms * 3 / 2));
                let now_ns = crate::ratelimit::lockout::unix_nanos(now);
                let expected = entry.fail(now_ns, &policy);
                let (failures, outcome) = store.record_failure(&key, now, &policy).await.unwrap();
                assert_eq!(
                    (failures, outcome),
                    (entry.failures, expected),
                    "policy {n}, step {step}"
                );
                let (blocked, exists) = store.blocked_for(&key, now).await.unwrap();
                let expected_block = (entry.blocked_until > now_ns)
                    .then(|| Duration::from_nanos(entry.blocked_until - now_ns));
                assert_eq!(blocked, expected_block, "policy {n}, step {step}");
                assert!(exists);
            }
        }
        assert_eq!(store.failures(), 0);
    }

    #[test]
    fn configuration_is_checked_and_never_shows_the_password() {
        let store = RedisLockoutStore::builder("redis://:hunter2-secret@127.0.0.1:6379/0")
            .build()
            .unwrap();
        let shown = format!("{store:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("127.0.0.1:6379"), "{shown}");
        for builder in [
            RedisLockoutStore::builder("http://127.0.0.1"),
            RedisLockoutStore::builder("redis://:hunter2-secret@[bad"),
            RedisLockoutStore::builder("redis://127.0.0.1").key_prefix("has space"),
            RedisLockoutStore::builder("redis://127.0.0.1").key_prefix(""),
            RedisLockoutStore::builder("redis://127.0.0.1").timeout(Duration::ZERO),
        ] {
            let err = builder.build().unwrap_err();
            assert!(!err.to_string().contains("hunter2"), "{err}");
        }
    }
}
