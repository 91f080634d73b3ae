//! The Redis revocation store (feature `redis`).

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use redis::{RedisResult, Script};

use super::{
    RevocationError, RevocationStore, Revoked, StoreFuture, digest, issued_before, unix_seconds,
};
use crate::clock::{SharedClock, SystemClock};
use crate::error::ConfigError;
use crate::shared_redis::RedisConn;

/// The environment variable conventionally holding the Redis URL (`redis://host:port/db`).
pub const REDIS_URL_ENV: &str = "REDIS_URL";

const DEFAULT_PREFIX: &str = "portcullis:revocation:";
const DEFAULT_TIMEOUT: Duration = Duration::from_millis(500);

/// Sets `KEYS[1]` with a TTL of `ARGV[1]` ms unless it already lives longer.
const REVOKE_JTI: &str = r"
local current = redis.call('PTTL', KEYS[1])
if current ~= -1 and current < tonumber(ARGV[1]) then
  redis.call('SET', KEYS[1], '1', 'PX', ARGV[1])
end
return 1
";

/// Stores the not-before `ARGV[1]` in `KEYS[1]` with a TTL of `ARGV[2]` ms, unless a later
/// not-before is already there (then only its TTL may grow).
const REVOKE_SUBJECT: &str = r"
local current = tonumber(redis.call('GET', KEYS[1]) or '')
local not_before = tonumber(ARGV[1])
if current == nil or current <= not_before then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
elseif redis.call('PTTL', KEYS[1]) < tonumber(ARGV[2]) then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 1
";

struct Inner {
    conn: RedisConn,
    clock: SharedClock,
    revoke_jti: Script,
    revoke_subject: Script,
}

/// A revocation store in Redis, shared by every replica that points at the same server and
/// key prefix.
///
/// - One multiplexed [`ConnectionManager`](redis::aio::ConnectionManager) per store (clones share it), connected on first use
///   and reconnected after failures, so a service can start while Redis is down.
/// - Every call runs under a timeout (default 500 ms) covering connection and reply; a call
///   that fails or times out is a [`RevocationErrorKind::Unavailable`](super::RevocationErrorKind::Unavailable)
///   error, which [`Revocation`](super::Revocation) turns into a refusal (fail closed).
/// - Keys are `<prefix>jti:<sha256 hex>` (value `1`) and `<prefix>sub:<sha256 hex>` (value:
///   the not-before in Unix seconds), each with a Redis expiry (`SET ... PX`), so Redis drops
///   them at their TTL. Updates run as Lua scripts (called by SHA) so a later expiry or
///   not-before is never overwritten by an earlier one.
/// - Plain `redis://` only in this build (no TLS to Redis): keep Redis on a trusted network or
///   loopback.
///
/// ```
/// use std::time::Duration;
/// use portcullis::authn::revocation::{RedisRevocationStore, Revocation};
///
/// let store = RedisRevocationStore::builder("redis://127.0.0.1:6379")
///     .key_prefix("orders-api:revoked:")
///     .timeout(Duration::from_millis(200))
///     .build()
///     .unwrap();
/// // No connection is made until the first call.
/// let revocation = Revocation::builder(store).build().unwrap();
/// # let _ = revocation;
/// ```
#[derive(Clone)]
pub struct RedisRevocationStore {
    inner: Arc<Inner>,
}

impl fmt::Debug for RedisRevocationStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The endpoint is host and port only: the URL may carry a password.
        f.debug_struct("RedisRevocationStore")
            .field("endpoint", &self.inner.conn.endpoint())
            .field("prefix", &self.inner.conn.prefix())
            .field("timeout", &self.inner.conn.timeout())
            .field("connected", &self.inner.conn.connected())
            .finish_non_exhaustive()
    }
}

impl RedisRevocationStore {
    /// Starts a configuration for the server at `url` (`redis://[user:password@]host:port/db`).
    /// The URL is never shown by `Debug` or in errors.
    pub fn builder(url: impl AsRef<str>) -> RedisRevocationStoreBuilder {
        RedisRevocationStoreBuilder {
            url: Some(url.as_ref().to_owned()),
            prefix: DEFAULT_PREFIX.to_owned(),
            timeout: DEFAULT_TIMEOUT,
            clock: Arc::new(SystemClock),
        }
    }

    /// Starts a configuration from the `REDIS_URL` environment variable; `build()` fails when
    /// it is unset.
    pub fn builder_from_env() -> RedisRevocationStoreBuilder {
        RedisRevocationStoreBuilder {
            url: std::env::var(REDIS_URL_ENV).ok(),
            prefix: DEFAULT_PREFIX.to_owned(),
            timeout: DEFAULT_TIMEOUT,
            clock: Arc::new(SystemClock),
        }
    }

    /// The server's host and port (never the password).
    pub fn endpoint(&self) -> &str {
        self.inner.conn.endpoint()
    }

    /// The key prefix.
    pub fn key_prefix(&self) -> &str {
        self.inner.conn.prefix()
    }

    /// Connects if needed and sends `PING`, under the timeout. For readiness checks.
    pub async fn ping(&self) -> Result<(), RevocationError> {
        self.inner
            .conn
            .ping()
            .await
            .map_err(|failure| RevocationError::unavailable(failure.to_string()))
    }

    fn jti_key(&self, jti: &str) -> String {
        self.inner.conn.key("jti:", &digest(b"jti", jti))
    }

    fn subject_key(&self, subject: &str) -> String {
        self.inner.conn.key("sub:", &digest(b"sub", subject))
    }

    async fn connection(&self) -> RedisResult<redis::aio::ConnectionManager> {
        self.inner.conn.connection().await
    }

    /// Runs one operation under the timeout; maps failures to generic errors.
    async fn run<T>(
        &self,
        operation: &'static str,
        future: impl Future<Output = RedisResult<T>>,
    ) -> Result<T, RevocationError> {
        self.inner
            .conn
            .run(operation, future)
            .await
            .map_err(|failure| RevocationError::unavailable(failure.to_string()))
    }

    fn ttl_millis(&self, until: SystemTime) -> Option<u64> {
        let ttl = until.duration_since(self.inner.clock.now()).ok()?;
        let millis = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        (millis > 0).then_some(millis)
    }
}

impl RevocationStore for RedisRevocationStore {
    fn revoke_jti<'a>(&'a self, jti: &'a str, expires_at: SystemTime) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let Some(ttl) = self.ttl_millis(expires_at) else {
                return Ok(());
            };
            let key = self.jti_key(jti);
            self.run("revoke_jti", async {
                let mut conn = self.connection().await?;
                self.inner
                    .revoke_jti
                    .key(&key)
                    .arg(ttl)
                    .invoke_async::<()>(&mut conn)
                    .await
            })
            .await
        })
    }

    fn revoke_subject<'a>(
        &'a self,
        subject: &'a str,
        not_before: SystemTime,
        ttl: Duration,
    ) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let ttl = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
            let key = self.subject_key(subject);
            self.run("revoke_subject", async {
                let mut conn = self.connection().await?;
                self.inner
                    .revoke_subject
                    .key(&key)
                    .arg(unix_seconds(not_before))
                    .arg(ttl)
                    .invoke_async::<()>(&mut conn)
                    .await
            })
            .await
        })
    }

    fn is_revoked<'a>(
        &'a self,
        jti: Option<&'a str>,
        subject: &'a str,
        issued_at: Option<SystemTime>,
    ) -> StoreFuture<'a, Option<Revoked>> {
        Box::pin(async move {
            let subject_key = self.subject_key(subject);
            let jti_key = jti.map(|jti| self.jti_key(jti));
            // One round trip: MGET [jti key] subject key.
            let values: Vec<Option<String>> = self
                .run("is_revoked", async {
                    let mut conn = self.connection().await?;
                    let mut cmd = redis::cmd("MGET");
                    if let Some(jti_key) = &jti_key {
                        cmd.arg(jti_key);
                    }
                    cmd.arg(&subject_key);
                    cmd.query_async(&mut conn).await
                })
                .await?;
            let expected = 1 + usize::from(jti_key.is_some());
            if values.len() != expected {
                return Err(RevocationError::unavailable(
                    "redis is_revoked: unexpected reply",
                ));
            }
            if jti_key.is_some() && values[0].is_some() {
                return Ok(Some(Revoked::Jti));
            }
            match values.last().and_then(Option::as_deref) {
                None => Ok(None),
                Some(raw) => match raw.parse::<u64>() {
                    Ok(not_before) => {
                        Ok(issued_before(issued_at, not_before).then_some(Revoked::Subject))
                    }
                    // Not written by us; refuse rather than guess.
                    Err(_) => Ok(Some(Revoked::Subject)),
                },
            }
        })
    }
}

/// Configures a [`RedisRevocationStore`].
#[must_use]
pub struct RedisRevocationStoreBuilder {
    url: Option<String>,
    prefix: String,
    timeout: Duration,
    clock: SharedClock,
}

impl fmt::Debug for RedisRevocationStoreBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisRevocationStoreBuilder")
            .field("prefix", &self.prefix)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl RedisRevocationStoreBuilder {
    /// The prefix of every key (default `portcullis:revocation:`). Give services that must not
    /// share revocations different prefixes. Printable ASCII without spaces, at most 128 bytes.
    pub fn key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }
    /// The time limit of one call, connecting included (default 500 ms; 1 ms to 30 s). It is
    /// added to the latency of every authenticated request while Redis hangs, and a call that
    /// exceeds it refuses the token (unless the wrapper is configured to fail open).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
    /// The time source used to turn expiry times into TTLs (default: the system clock).
    pub fn clock(mut self, clock: SharedClock) -> Self {
        self.clock = clock;
        self
    }
    /// Checks the configuration and builds the store. No connection is made here.
    pub fn build(self) -> Result<RedisRevocationStore, ConfigError> {
        let Some(url) = self.url else {
            return Err(ConfigError::new(format!(
                "{REDIS_URL_ENV} is not set (expected redis://host:port)"
            )));
        };
        let conn = RedisConn::new("revocation", &url, self.prefix, self.timeout)?;
        Ok(RedisRevocationStore {
            inner: Arc::new(Inner {
                conn,
                clock: self.clock,
                revoke_jti: Script::new(REVOKE_JTI),
                revoke_subject: Script::new(REVOKE_SUBJECT),
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    //! Against the real Redis at `REDIS_URL` (default `redis://127.0.0.1:6379`). Without a
    //! server these tests skip with a loud message, except under CI (`CI` set), where they fail.

    use super::*;
    use crate::authn::revocation::{
        DETAIL_JTI_REVOKED, DETAIL_STORE_UNAVAILABLE, DETAIL_SUBJECT_REVOKED, Revocation,
        RevocationErrorKind,
    };
    use crate::clock::Clock;
    use crate::principal::{AuthMethod, Principal};
    use std::time::{Instant, UNIX_EPOCH};

    use crate::shared_redis::test_support::{PrivateRedis, answers, random_hex, redis_url};

    /// A prefix unique to this test run, so parallel tests and runs never collide.
    fn unique_prefix() -> String {
        crate::shared_redis::test_support::unique_prefix("revocation")
    }

    fn store(url: &str, prefix: &str) -> RedisRevocationStore {
        RedisRevocationStore::builder(url)
            .key_prefix(prefix)
            .timeout(Duration::from_secs(2))
            .build()
            .unwrap()
    }

    /// A store on the real Redis, or `None` (after a loud message) when none answers outside CI.
    async fn live_store(prefix: &str) -> Option<RedisRevocationStore> {
        let store = store(&redis_url(), prefix);
        answers(&store.inner.conn, "revocation")
            .await
            .then_some(store)
    }

    fn principal(subject: &str, jti: Option<&str>, iat: u64, exp: u64) -> Principal {
        let mut builder = Principal::builder(subject, AuthMethod::Other("test".into()))
            .attribute("sub", subject)
            .attribute("iat", iat)
            .attribute("exp", exp)
            .expires_at(UNIX_EPOCH + Duration::from_secs(exp));
        if let Some(jti) = jti {
            builder = builder.attribute("jti", jti);
        }
        builder.build()
    }

    fn now_secs() -> u64 {
        SystemClock.unix_seconds()
    }

    async fn exists(store: &RedisRevocationStore, key: &str) -> bool {
        let mut conn = store.connection().await.unwrap();
        redis::cmd("EXISTS")
            .arg(key)
            .query_async::<i64>(&mut conn)
            .await
            .unwrap()
            == 1
    }

    #[tokio::test]
    async fn revoked_jti_is_refused_and_its_key_expires() {
        let prefix = unique_prefix();
        let Some(store) = live_store(&prefix).await else {
            return;
        };
        let revocation = Revocation::builder(store.clone())
            .retention_margin(Duration::ZERO)
            .build()
            .unwrap();
        let now = now_secs();
        let jti = random_hex();
        let token = principal("alice", Some(&jti), now, now + 2);
        let other = principal("alice", Some(&random_hex()), now, now + 2);
        assert!(revocation.check_principal(&token).await.is_ok());
        revocation.revoke_principal(&token).await.unwrap();
        let err = revocation.check_principal(&token).await.unwrap_err();
        assert_eq!(err.detail(), DETAIL_JTI_REVOKED);
        assert!(revocation.check_principal(&other).await.is_ok());

        let key = store.jti_key(&jti);
        assert!(key.starts_with(&prefix) && !key.contains(&jti));
        let mut conn = store.connection().await.unwrap();
        let pttl: i64 = redis::cmd("PTTL")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .unwrap();
        assert!(0 < pttl && pttl <= 2_000, "TTL follows exp: {pttl} ms");
        // Redis drops the key at its TTL (a bounded real wait: this is Redis's own expiry).
        let deadline = Instant::now() + Duration::from_secs(6);
        while exists(&store, &key).await {
            assert!(Instant::now() < deadline, "key outlived its TTL");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(revocation.check_principal(&token).await.is_ok());
    }

    #[tokio::test]
    async fn revoked_subject_refuses_older_tokens_and_accepts_newer() {
        let Some(store) = live_store(&unique_prefix()).await else {
            return;
        };
        let revocation = Revocation::builder(store.clone()).build().unwrap();
        let now = now_secs();
        let subject = format!("user-{}", random_hex());
        let older = principal(&subject, Some(&random_hex()), now - 30, now + 600);
        let without_jti = principal(&subject, None, now - 30, now + 600);
        revocation.revoke_subject_now(&subject).await.unwrap();
        for p in [&older, &without_jti] {
            let err = revocation.check_principal(p).await.unwrap_err();
            assert_eq!(err.detail(), DETAIL_SUBJECT_REVOKED);
        }
        let newer = principal(&subject, Some(&random_hex()), now + 1, now + 600);
        assert!(revocation.check_principal(&newer).await.is_ok());
        // An earlier not-before does not replace the later one.
        revocation
            .revoke_subject(&subject, UNIX_EPOCH + Duration::from_secs(now - 100))
            .await
            .unwrap();
        assert!(revocation.check_principal(&older).await.is_err());
        let mut conn = store.connection().await.unwrap();
        let pttl: i64 = redis::cmd("PTTL")
            .arg(store.subject_key(&subject))
            .query_async(&mut conn)
            .await
            .unwrap();
        assert!(
            pttl > 24 * 3600 * 1000,
            "kept for the maximum lifetime: {pttl}"
        );
    }

    #[tokio::test]
    async fn two_store_instances_share_state() {
        let prefix = unique_prefix();
        let Some(a) = live_store(&prefix).await else {
            return;
        };
        let b = store(&redis_url(), &prefix);
        let (a, b) = (
            Revocation::builder(a).build().unwrap(),
            Revocation::builder(b).build().unwrap(),
        );
        let now = now_secs();
        let jti = random_hex();
        let token = principal("alice", Some(&jti), now, now + 60);
        a.revoke_principal(&token).await.unwrap();
        assert_eq!(
            b.check_principal(&token).await.unwrap_err().detail(),
            DETAIL_JTI_REVOKED
        );
        let bob = principal("bob-shared", None, now - 5, now + 60);
        b.revoke_subject_now("bob-shared").await.unwrap();
        assert!(a.check_principal(&bob).await.is_err());
        // Another prefix is another namespace.
        let elsewhere = Revocation::builder(store(&redis_url(), &unique_prefix()))
            .build()
            .unwrap();
        assert!(elsewhere.check_principal(&token).await.is_ok());
    }

    #[tokio::test]
    async fn unreachable_redis_fails_closed_within_the_timeout() {
        // Port 1 on loopback: nothing listens there, connections are refused.
        let store = RedisRevocationStore::builder("redis://127.0.0.1:1")
            .timeout(Duration::from_millis(300))
            .build()
            .unwrap();
        let revocation = Revocation::builder(store.clone()).build().unwrap();
        let token = principal("alice", Some("j"), now_secs(), now_secs() + 60);
        let started = Instant::now();
        let checks = (0..16).map(|_| revocation.check_principal(&token));
        for result in futures_util::future::join_all(checks).await {
            assert_eq!(result.unwrap_err().detail(), DETAIL_STORE_UNAVAILABLE);
        }
        let err = revocation.revoke_principal(&token).await.unwrap_err();
        assert_eq!(err.kind(), RevocationErrorKind::Unavailable);
        assert!(store.ping().await.is_err());
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "bounded by the timeout: {:?}",
            started.elapsed()
        );
        let fail_open = Revocation::builder(store)
            .insecure_fail_open()
            .build()
            .unwrap();
        assert!(fail_open.check_principal(&token).await.is_ok());
    }

    #[tokio::test]
    async fn redis_stopping_mid_flight_fails_closed_then_recovers() {
        let Some(mut server) = PrivateRedis::start("revocation restart") else {
            return;
        };
        let store = RedisRevocationStore::builder(server.url())
            .key_prefix(unique_prefix())
            .timeout(Duration::from_millis(300))
            .build()
            .unwrap();
        server.wait_until_up(&store.inner.conn).await;
        let revocation = Revocation::builder(store.clone()).build().unwrap();
        let now = now_secs();
        let token = principal("alice", Some("j1"), now, now + 60);
        revocation.revoke_principal(&token).await.unwrap();
        assert_eq!(
            revocation
                .check_principal(&token)
                .await
                .unwrap_err()
                .detail(),
            DETAIL_JTI_REVOKED
        );

        server.stop();
        for _ in 0..3 {
            let started = Instant::now();
            let err = revocation.check_principal(&token).await.unwrap_err();
            assert_eq!(err.detail(), DETAIL_STORE_UNAVAILABLE);
            assert!(started.elapsed() < Duration::from_secs(2));
        }

        // Back on the same port (empty: no persistence): the manager reconnects by itself.
        server.restart();
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            match revocation.check_principal(&token).await {
                Ok(()) => break,
                Err(err) => {
                    assert_eq!(err.detail(), DETAIL_STORE_UNAVAILABLE);
                    assert!(Instant::now() < deadline, "did not reconnect");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    #[test]
    fn configuration_is_checked_and_never_shows_the_password() {
        let store = RedisRevocationStore::builder("redis://:hunter2-secret@127.0.0.1:6379/0")
            .build()
            .unwrap();
        let shown = format!("{store:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("127.0.0.1:6379"), "{shown}");
        for (url, prefix, timeout) in [
            ("http://127.0.0.1", DEFAULT_PREFIX, DEFAULT_TIMEOUT),
            (
                "redis://:hunter2-secret@[bad",
                DEFAULT_PREFIX,
                DEFAULT_TIMEOUT,
            ),
            ("redis://127.0.0.1", "", DEFAULT_TIMEOUT),
            ("redis://127.0.0.1", "has space", DEFAULT_TIMEOUT),
            ("redis://127.0.0.1", DEFAULT_PREFIX, Duration::ZERO),
        ] {
            let err = RedisRevocationStore::builder(url)
                .key_prefix(prefix)
                .timeout(timeout)
                .build()
                .unwrap_err();
            assert!(!err.to_string().contains("hunter2"), "{err}");
        }
    }
}
