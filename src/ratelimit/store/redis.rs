//! The Redis GCRA store (feature `redis`): one limit shared by every replica.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use redis::Script;

use crate::error::ConfigError;
use crate::ratelimit::{MemoryStore, Quota, RateLimitDecision, gcra};
use crate::shared_redis::{RedisConn, digest, unix_micros};

const DEFAULT_PREFIX: &str = "portcullis:ratelimit:";
const DEFAULT_TIMEOUT: Duration = Duration::from_millis(100);

/// GCRA in one atomic step. Times in microseconds (exact in Lua's doubles until year 2255).
/// ARGV: now, emission interval, tolerance. Returns {allowed, remaining or retry-after, reset}.
/// The key expires when it is back to full burst, so Redis holds only keys in debt.
const GCRA: &str = r"
local now = tonumber(ARGV[1])
local t = tonumber(ARGV[2])
local tau = tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0') or 0
if tat < now then tat = now end
local allow_at = tat - tau
if now < allow_at then
  return {0, allow_at - now, tat - now}
end
local new_tat = tat + t
redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX', math.ceil((new_tat - now) / 1000) + 1)
return {1, math.floor((now + tau - tat) / t), new_tat - now}
";

/// What a Redis-backed abuse-protection store ([`RedisRateLimitStore`],
/// [`RedisLockoutStore`](crate::ratelimit::lockout::RedisLockoutStore)) does when Redis does
/// not answer within its timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FailureMode {
    /// Refuse the request (429). The default, and the right choice for credential endpoints
    /// (login, token, password reset): an outage must not allow unlimited guessing.
    FailClosed,
    /// Fall back to local, per-process state with the same configuration (a [`MemoryStore`]
    /// with the same quota; the lockout layer's own in-memory counters); every fallback is
    /// counted (`fallbacks()`) and audited (`ratelimit.fallback` / `lockout.fallback` on target
    /// `portcullis::audit`). Limits become per replica while Redis is away.
    FailOpen,
}

impl FailureMode {
    /// `fail_closed` or `fail_open`, as written in audit events.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::FailClosed => "fail_closed",
            Self::FailOpen => "fail_open",
        }
    }
}

struct Inner {
    conn: RedisConn,
    mode: FailureMode,
    local: MemoryStore,
    script: Script,
    fallbacks: AtomicU64,
    failures: AtomicU64,
}

/// Rate-limit state in Redis: the same GCRA as [`MemoryStore`], run atomically by one Lua
/// script per check (loaded once, called by SHA), so every replica pointing at the same Redis
/// and prefix enforces one combined limit.
///
/// - One multiplexed [`ConnectionManager`](redis::aio::ConnectionManager) per store (clones share it), connected on first use.
/// - Every call is under a timeout (default 100 ms) covering connection and reply.
/// - Time comes from the caller (`now`), so replicas need synchronized clocks (NTP); a skew of
///   δ shifts a client's budget by about δ / emission interval.
/// - Keys are `<prefix><sha256(limit name, key) hex>` and expire when back to full burst, so
///   Redis memory is bounded by the keys in debt.
/// - Plain `redis://` only in this build (no TLS to Redis): keep Redis on a trusted network or
///   loopback.
///
/// ```
/// use std::time::Duration;
/// use portcullis::ratelimit::store::{FailureMode, RedisRateLimitStore};
///
/// let store = RedisRateLimitStore::builder("redis://127.0.0.1:6379")
///     .key_prefix("orders-api:rl:")
///     .timeout(Duration::from_millis(50))
///     .failure_mode(FailureMode::FailOpen)
///     .build()
///     .unwrap();
/// // No connection is made until the first check.
/// assert_eq!(store.fallbacks(), 0);
/// ```
#[derive(Clone)]
pub struct RedisRateLimitStore {
    inner: Arc<Inner>,
}

impl fmt::Debug for RedisRateLimitStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the URL: it may carry a password.
        f.debug_struct("RedisRateLimitStore")
            .field("endpoint", &self.inner.conn.endpoint())
            .field("prefix", &self.inner.conn.prefix())
            .field("timeout", &self.inner.conn.timeout())
            .field("mode", &self.inner.mode)
            .finish_non_exhaustive()
    }
}

/// Configuration of a [`RedisRateLimitStore`].
#[must_use]
pub struct RedisRateLimitStoreBuilder {
    url: String,
    prefix: String,
    timeout: Duration,
    mode: FailureMode,
    local: Option<MemoryStore>,
}

impl fmt::Debug for RedisRateLimitStoreBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisRateLimitStoreBuilder")
            .field("prefix", &self.prefix)
            .field("timeout", &self.timeout)
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

impl RedisRateLimitStoreBuilder {
    /// The key prefix. Default `portcullis:ratelimit:`. Services sharing a Redis but not their
    /// limits need different prefixes. Printable ASCII without spaces, 1 to 128 bytes.
    pub fn key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// The timeout of each check (connection and reply). Default 100 ms; 1 ms to 30 s. It is
    /// added to a request's latency when Redis hangs.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// What to do when Redis fails. Default [`FailureMode::FailClosed`].
    pub fn failure_mode(mut self, mode: FailureMode) -> Self {
        self.mode = mode;
        self
    }

    /// The local store used by [`FailureMode::FailOpen`]. Default: a [`MemoryStore`] with
    /// its default bound.
    pub fn fallback_store(mut self, store: MemoryStore) -> Self {
        self.local = Some(store);
        self
    }

    /// Checks the configuration (no connection is made).
    pub fn build(self) -> Result<RedisRateLimitStore, ConfigError> {
        let conn = RedisConn::new("rate limit", &self.url, self.prefix, self.timeout)?;
        let local = match self.local {
            Some(local) => local,
            None => MemoryStore::builder().build()?,
        };
        Ok(RedisRateLimitStore {
            inner: Arc::new(Inner {
                conn,
                mode: self.mode,
                local,
                script: Script::new(GCRA),
                fallbacks: AtomicU64::new(0),
                failures: AtomicU64::new(0),
            }),
        })
    }
}

impl RedisRateLimitStore {
    /// Starts a configuration for the server at `url` (`redis://[user:password@]host:port/db`).
    pub fn builder(url: impl AsRef<str>) -> RedisRateLimitStoreBuilder {
        RedisRateLimitStoreBuilder {
            url: url.as_ref().to_owned(),
            prefix: DEFAULT_PREFIX.to_owned(),
            timeout: DEFAULT_TIMEOUT,
            mode: FailureMode::FailClosed,
            local: None,
        }
    }

    /// Spends one unit of `key`'s budget in limit `limit` under `quota` at `now`. When Redis
    /// fails or times out, follows the [`FailureMode`]; never waits longer than the timeout.
    pub async fn check(
        &self,
        limit: &str,
        key: &str,
        quota: &Quota,
        now: SystemTime,
    ) -> RateLimitDecision {
        let redis_key = self.redis_key(limit, key);
        match self.try_check(&redis_key, quota, now).await {
            Ok(decision) => decision,
            Err(reason) => {
                self.inner.failures.fetch_add(1, Ordering::Relaxed);
                match self.inner.mode {
                    FailureMode::FailClosed => {
                        crate::audit::global().record(
                            crate::audit::AuditEvent::new(
                                crate::audit::EventType::RateLimitStoreUnavailable,
                            )
                            .with_reason_code("fail_closed")
                            .with_reason(reason.to_string()),
                        );
                        gcra::deny_all(quota)
                    }
                    FailureMode::FailOpen => {
                        self.inner.fallbacks.fetch_add(1, Ordering::Relaxed);
                        crate::audit::global().record(
                            crate::audit::AuditEvent::new(
                                crate::audit::EventType::RateLimitFallback,
                            )
                            .with_reason_code("fail_open")
                            .with_reason(reason.to_string()),
                        );
                        self.inner.local.check(&redis_key, quota, now)
                    }
                }
            }
        }
    }

    async fn try_check(
        &self,
        redis_key: &str,
        quota: &Quota,
        now: SystemTime,
    ) -> Result<RateLimitDecision, &'static str> {
        let now_us = unix_micros(now);
        let t_us = (quota.emission_nanos() / 1_000).max(1);
        let tau_us = quota.tolerance_nanos() / 1_000;
        let inner = &*self.inner;
        let call = async {
            let mut conn = inner.conn.connection().await?;
            inner
                .script
                .key(redis_key)
                .arg(now_us)
                .arg(t_us)
                .arg(tau_us)
                .invoke_async::<(i64, i64, i64)>(&mut conn)
                .await
        };
        match inner.conn.run("ratelimit", call).await {
            Ok((allowed, value, reset)) => {
                let nanos = |v: i64| u64::try_from(v).unwrap_or(0).saturating_mul(1_000);
                Ok(if allowed == 1 {
                    RateLimitDecision::allow(u64::try_from(value).unwrap_or(0), 1, nanos(reset))
                } else {
                    RateLimitDecision::refuse(nanos(value), nanos(reset))
                })
            }
            Err(failure) => Err(failure.reason()),
        }
    }

    fn redis_key(&self, limit: &str, key: &str) -> String {
        self.inner
            .conn
            .key("", &digest(&[limit.as_bytes(), key.as_bytes()]))
    }

    /// How many checks fell back to the local limiter ([`FailureMode::FailOpen`]).
    pub fn fallbacks(&self) -> u64 {
        self.inner.fallbacks.load(Ordering::Relaxed)
    }

    /// How many checks Redis failed (error or timeout), in either mode.
    pub fn failures(&self) -> u64 {
        self.inner.failures.load(Ordering::Relaxed)
    }

    /// The failure mode.
    pub fn failure_mode(&self) -> FailureMode {
        self.inner.mode
    }
}

#[cfg(test)]
mod tests {
    //! Against the real Redis at `REDIS_URL` (default `redis://127.0.0.1:6379`). Without a
    //! server these tests skip with a loud message, except under CI (`CI` set), where they fail.

    use super::*;
    use crate::shared_redis::test_support::{answers, redis_url};
    use std::num::NonZeroU32;

    async fn store(prefix: &str) -> Option<RedisRateLimitStore> {
        let store = RedisRateLimitStore::builder(redis_url())
            .key_prefix(prefix)
            .timeout(Duration::from_secs(2))
            .build()
            .unwrap();
        answers(&store.inner.conn, "ratelimit")
            .await
            .then_some(store)
    }

    fn unique_prefix() -> String {
        crate::shared_redis::test_support::unique_prefix("rl")
    }

    #[tokio::test]
    async fn two_instances_enforce_one_combined_limit() {
        let prefix = unique_prefix();
        let (Some(a), Some(b)) = (store(&prefix).await, store(&prefix).await) else {
            return;
        };
        let quota = Quota::per_minute(NonZeroU32::new(10).unwrap());
        let now = SystemTime::now();
        let mut allowed = 0;
        for i in 0..30 {
            let store = if i % 2 == 0 { &a } else { &b };
            if store
                .check("api", "client-1", &quota, now)
                .await
                .is_allowed()
            {
                allowed += 1;
            }
        }
        assert_eq!(allowed, 10);
        let refused = a.check("api", "client-1", &quota, now).await;
        assert_eq!(refused.retry_after(), Duration::from_secs(6));
        // Another key, and the same key in another limit, have their own budgets.
        assert!(b.check("api", "client-2", &quota, now).await.is_allowed());
        assert!(b.check("other", "client-1", &quota, now).await.is_allowed());
        // A minute later, the budget has come back.
        let later = now + Duration::from_secs(60);
        assert!(a.check("api", "client-1", &quota, later).await.is_allowed());
        assert_eq!(a.failures() + b.failures(), 0);
    }

    #[tokio::test]
    async fn unreachable_redis_follows_the_failure_mode_without_hanging() {
        let quota = Quota::per_second(NonZeroU32::new(2).unwrap());
        let now = SystemTime::now();
        for mode in [FailureMode::FailClosed, FailureMode::FailOpen] {
            let store = RedisRateLimitStore::builder("redis://127.0.0.1:1")
                .timeout(Duration::from_millis(200))
                .failure_mode(mode)
                .build()
                .unwrap();
            let started = std::time::Instant::now();
            let decisions: Vec<bool> = {
                let mut v = Vec::new();
                for _ in 0..3 {
                    v.push(
                        store
                            .check("login", "client", &quota, now)
                            .await
                            .is_allowed(),
                    );
                }
                v
            };
            assert!(started.elapsed() < Duration::from_secs(3), "{mode:?} hung");
            assert_eq!(store.failures(), 3);
            match mode {
                FailureMode::FailClosed => {
                    assert_eq!(decisions, [false, false, false]);
                    assert_eq!(store.fallbacks(), 0);
                }
                FailureMode::FailOpen => {
                    // The local limiter still applies the quota.
                    assert_eq!(decisions, [true, true, false]);
                    assert_eq!(store.fallbacks(), 3);
                }
            }
        }
    }

    #[tokio::test]
    async fn redis_stopped_mid_run_follows_the_failure_mode_then_recovers() {
        use crate::shared_redis::test_support::{PrivateRedis, unique_prefix};
        let Some(mut server) = PrivateRedis::start("rate limit failure mode") else {
            return;
        };
        let quota = Quota::per_minute(NonZeroU32::new(3).unwrap());
        let now = SystemTime::now();
        let stores = [FailureMode::FailClosed, FailureMode::FailOpen].map(|mode| {
            RedisRateLimitStore::builder(server.url())
                .key_prefix(unique_prefix("rl"))
                .timeout(Duration::from_millis(300))
                .failure_mode(mode)
                .build()
                .unwrap()
        });
        server.wait_until_up(&stores[0].inner.conn).await;
        for store in &stores {
            assert!(
                store
                    .check("login", "client", &quota, now)
                    .await
                    .is_allowed()
            );
        }
        server.stop();
        for store in &stores {
            let mut decisions = Vec::new();
            for _ in 0..4 {
                let started = std::time::Instant::now();
                decisions.push(
                    store
                        .check("login", "client", &quota, now)
                        .await
                        .is_allowed(),
                );
                assert!(started.elapsed() < Duration::from_secs(2), "hung");
            }
            assert_eq!(store.failures(), 4);
            match store.failure_mode() {
                FailureMode::FailOpen => {
                    // The local limiter starts empty on this replica and applies the quota.
                    assert_eq!(decisions, [true, true, true, false]);
                    assert_eq!(store.fallbacks(), 4);
                }
                _ => {
                    assert_eq!(decisions, [false; 4]);
                    assert_eq!(store.fallbacks(), 0);
                }
            }
        }
        // Back (empty): the connection manager reconnects by itself.
        server.restart();
        server.wait_until_up(&stores[0].inner.conn).await;
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        while !stores[0]
            .check("login", "client", &quota, now)
            .await
            .is_allowed()
        {
            assert!(std::time::Instant::now() < deadline, "did not reconnect");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    #[tokio::test]
    async fn layers_on_two_replicas_share_one_limit() {
        use crate::context::{ClientIp, RequestContextLayer};
        use crate::ratelimit::{RateLimitKey, RateLimitLayer};
        use http::{Request, Response, StatusCode};
        use tower::{Layer, ServiceExt, service_fn};

        let prefix = unique_prefix();
        let mut replicas = Vec::new();
        for _ in 0..2 {
            let Some(store) = store(&prefix).await else {
                return;
            };
            let limit = RateLimitLayer::builder("per-ip")
                .quota(Quota::per_minute(NonZeroU32::new(3).unwrap()))
                .key(RateLimitKey::client_ip())
                .redis(store)
                .build()
                .unwrap();
            let svc = RequestContextLayer::new().layer(limit.layer(service_fn(
                |_req: Request<String>| async {
                    Ok::<_, std::convert::Infallible>(Response::new(String::new()))
                },
            )));
            replicas.push(svc);
        }
        let mut statuses = Vec::new();
        for i in 0..6 {
            let mut req = Request::new(String::new());
            req.extensions_mut()
                .insert(ClientIp("192.0.2.44".parse().unwrap()));
            let response = replicas[i % 2].clone().oneshot(req).await.unwrap();
            statuses.push(response.status());
            if response.status() == StatusCode::TOO_MANY_REQUESTS {
                assert_eq!(
                    response.headers()["ratelimit-policy"],
                    "\"per-ip\";q=3;w=60"
                );
            }
        }
        assert_eq!(
            statuses,
            [
                StatusCode::OK,
                StatusCode::OK,
                StatusCode::OK,
                StatusCode::TOO_MANY_REQUESTS,
                StatusCode::TOO_MANY_REQUESTS,
                StatusCode::TOO_MANY_REQUESTS
            ]
        );
    }

    #[test]
    fn invalid_configuration_is_refused() {
        assert!(RedisRateLimitStore::builder("not a url").build().is_err());
        assert!(
            RedisRateLimitStore::builder("redis://127.0.0.1:6379")
                .key_prefix("has space")
                .build()
                .is_err()
        );
        assert!(
            RedisRateLimitStore::builder("redis://127.0.0.1:6379")
                .timeout(Duration::ZERO)
                .build()
                .is_err()
        );
    }
}
