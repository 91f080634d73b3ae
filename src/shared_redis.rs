//! Redis plumbing shared by the Redis stores (feature `redis`): the revocation store, the rate
//! limit store and the lockout store.
//!
//! One place checks the URL (never quoting it: it may carry a password), the key prefix and the
//! timeout; holds the one multiplexed [`ConnectionManager`] (connected on first use, reconnected
//! after failures, so a service can start while Redis is down); runs every call under the
//! timeout (connection and reply); and builds keys as `<prefix><kind><sha256 hex>` so callers'
//! identifiers (tokens ids, subjects, addresses) never appear in Redis in clear.
//!
//! Lua scripts are [`redis::Script`]s: invoked by SHA (`EVALSHA`), loaded once on the first
//! `NOSCRIPT` answer.

use std::fmt;
use std::future::Future;
use std::time::Duration;

use redis::RedisResult;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use sha2::{Digest, Sha256};
use tokio::sync::OnceCell;

use crate::error::ConfigError;

/// The longest key prefix accepted.
const MAX_PREFIX_BYTES: usize = 128;
/// The shortest and longest per-call timeouts accepted.
const MIN_TIMEOUT: Duration = Duration::from_millis(1);
const MAX_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a Redis call did not produce a value. Its text names the operation and the error
/// category only (never a key, a value or the URL).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RedisFailure {
    /// Redis answered with an error, or the connection failed.
    Error {
        operation: &'static str,
        category: String,
    },
    /// No answer within the timeout.
    Timeout {
        operation: &'static str,
        timeout: Duration,
    },
}

impl RedisFailure {
    /// A short fixed reason for counters and audit fields.
    pub(crate) fn reason(&self) -> &'static str {
        match self {
            Self::Error { .. } => "redis error",
            Self::Timeout { .. } => "redis timeout",
        }
    }
}

impl fmt::Display for RedisFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Error {
                operation,
                category,
            } => write!(f, "redis {operation} failed: {category}"),
            Self::Timeout { operation, timeout } => write!(
                f,
                "redis {operation} timed out after {} ms",
                timeout.as_millis()
            ),
        }
    }
}

/// A checked Redis configuration and its lazily connected, shared connection manager.
pub(crate) struct RedisConn {
    client: redis::Client,
    manager: OnceCell<ConnectionManager>,
    prefix: String,
    timeout: Duration,
    endpoint: String,
}

impl fmt::Debug for RedisConn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Host and port only: the URL may carry a password.
        f.debug_struct("RedisConn")
            .field("endpoint", &self.endpoint)
            .field("prefix", &self.prefix)
            .field("timeout", &self.timeout)
            .field("connected", &self.manager.initialized())
            .finish()
    }
}

impl RedisConn {
    /// Checks `url` (`redis://[user:password@]host:port/db`), `prefix` (1 to 128 bytes of
    /// printable ASCII without spaces) and `timeout` (1 ms to 30 s). `what` names the store in
    /// error messages. No connection is made.
    pub(crate) fn new(
        what: &str,
        url: &str,
        prefix: String,
        timeout: Duration,
    ) -> Result<Self, ConfigError> {
        if !url.starts_with("redis://") {
            return Err(ConfigError::new(format!(
                "the {what} Redis URL must start with redis:// (TLS and unix sockets are not enabled in this build)"
            )));
        }
        // The parser's message could quote the URL (and its password): keep it out.
        let client = redis::Client::open(url)
            .map_err(|_| ConfigError::new(format!("the {what} Redis URL is not valid")))?;
        if prefix.is_empty()
            || prefix.len() > MAX_PREFIX_BYTES
            || !prefix.bytes().all(|b| b.is_ascii_graphic())
        {
            return Err(ConfigError::new(format!(
                "the {what} Redis key prefix must be 1..=128 bytes of printable ASCII without spaces"
            )));
        }
        if !(MIN_TIMEOUT..=MAX_TIMEOUT).contains(&timeout) {
            return Err(ConfigError::new(format!(
                "the {what} Redis timeout must be between 1 ms and 30 s"
            )));
        }
        let endpoint = client.get_connection_info().addr().to_string();
        Ok(Self {
            client,
            manager: OnceCell::new(),
            prefix,
            timeout,
            endpoint,
        })
    }

    /// The server's host and port (never the password).
    pub(crate) fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The key prefix.
    pub(crate) fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The per-call timeout.
    pub(crate) fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Whether a connection manager exists (a first call was attempted successfully).
    pub(crate) fn connected(&self) -> bool {
        self.manager.initialized()
    }

    /// The shared multiplexed connection, created on first use. Cloning it is cheap; every
    /// clone drives the same connection.
    pub(crate) async fn connection(&self) -> RedisResult<ConnectionManager> {
        let manager = self
            .manager
            .get_or_try_init(|| {
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(self.timeout))
                    .set_response_timeout(Some(self.timeout))
                    .set_number_of_retries(1)
                    .set_min_delay(Duration::from_millis(50))
                    .set_max_delay(Duration::from_secs(2));
                ConnectionManager::new_with_config(self.client.clone(), config)
            })
            .await?;
        Ok(manager.clone())
    }

    /// Runs one operation (which gets its connection from [`connection`](Self::connection))
    /// under the timeout.
    pub(crate) async fn run<T>(
        &self,
        operation: &'static str,
        future: impl Future<Output = RedisResult<T>>,
    ) -> Result<T, RedisFailure> {
        match tokio::time::timeout(self.timeout, future).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) => Err(RedisFailure::Error {
                operation,
                category: error.category().to_owned(),
            }),
            Err(_) => Err(RedisFailure::Timeout {
                operation,
                timeout: self.timeout,
            }),
        }
    }

    /// Connects if needed and sends `PING`, under the timeout.
    pub(crate) async fn ping(&self) -> Result<(), RedisFailure> {
        self.run("ping", async {
            let mut conn = self.connection().await?;
            redis::cmd("PING").query_async::<()>(&mut conn).await
        })
        .await
    }

    /// `<prefix><kind><hex of digest>`.
    pub(crate) fn key(&self, kind: &str, digest: &[u8; 32]) -> String {
        let mut key = String::with_capacity(self.prefix.len() + kind.len() + 64);
        key.push_str(&self.prefix);
        key.push_str(kind);
        crate::hex::push(&mut key, digest);
        key
    }
}

/// SHA-256 of `parts` joined by NUL bytes (parts are text without NUL, or fixed tags).
pub(crate) fn digest(parts: &[&[u8]]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            hasher.update([0u8]);
        }
        hasher.update(part);
    }
    hasher.finalize().into()
}

/// Microseconds since the Unix epoch (0 before it), the time unit of the Lua scripts: exact in
/// Lua's doubles until the year 2255.
pub(crate) fn unix_micros(t: std::time::SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
pub(crate) mod test_support {
    //! Helpers of the tests that run against a real Redis: the shared one at `REDIS_URL`
    //! (default `redis://127.0.0.1:6379`), or a private `redis-server` the test starts and
    //! stops on a free loopback port. Without Redis the tests skip loudly, except under CI
    //! (`CI` set), where they fail.

    use std::process::{Child, Command, Stdio};
    use std::time::{Duration, Instant};

    use super::RedisConn;

    /// The shared test Redis.
    pub(crate) fn redis_url() -> String {
        std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
    }

    /// Prints past the test harness's output capture (which swallows `eprintln!` of passing
    /// tests), so a skipped Redis test is visible in every run.
    pub(crate) fn loud(message: &str) {
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), "\n**** {message} ****\n");
    }

    /// Sixteen random hex digits.
    pub(crate) fn random_hex() -> String {
        let mut bytes = [0u8; 8];
        let _ = getrandom::fill(&mut bytes);
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// A key prefix unique to this run, so parallel tests and runs never collide.
    pub(crate) fn unique_prefix(kind: &str) -> String {
        format!("portcullis-test:{kind}:{}:", random_hex())
    }

    /// Whether the shared test Redis answers a `PING` through `conn`; panics under CI when it
    /// does not, and says so loudly otherwise.
    pub(crate) async fn answers(conn: &RedisConn, test: &str) -> bool {
        match conn.ping().await {
            Ok(()) => true,
            Err(error) => {
                let message = format!(
                    "no Redis answering at {} ({error}); set REDIS_URL or start redis-server",
                    conn.endpoint()
                );
                if std::env::var_os("CI").is_some() {
                    panic!("CI is set and the Redis tests cannot run: {message}");
                }
                loud(&format!("SKIPPING REDIS TEST {test}: {message}"));
                false
            }
        }
    }

    /// A private `redis-server` (no persistence) on a free loopback port, killed on drop.
    #[derive(Debug)]
    pub(crate) struct PrivateRedis {
        child: Option<Child>,
        port: u16,
    }

    impl PrivateRedis {
        /// Starts one, or returns `None` (loudly) when the binary is missing outside CI.
        pub(crate) fn start(test: &str) -> Option<Self> {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map(|a| a.port())
                .unwrap_or_else(|e| panic!("no free loopback port: {e}"));
            let mut server = Self { child: None, port };
            match server.spawn() {
                Ok(()) => Some(server),
                Err(error) => {
                    if std::env::var_os("CI").is_some() {
                        panic!("CI is set and redis-server cannot be started: {error}");
                    }
                    loud(&format!(
                        "SKIPPING REDIS TEST {test}: no redis-server binary ({error})"
                    ));
                    None
                }
            }
        }

        fn spawn(&mut self) -> std::io::Result<()> {
            let child = Command::new("redis-server")
                .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no"])
                .stdout(Stdio::null())
                .spawn()?;
            self.child = Some(child);
            Ok(())
        }

        /// Its URL.
        pub(crate) fn url(&self) -> String {
            format!("redis://127.0.0.1:{}", self.port)
        }

        /// Stops it (SIGKILL: no goodbye to clients) and waits for the exit.
        pub(crate) fn stop(&mut self) {
            if let Some(mut child) = self.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }

        /// Starts it again on the same port (empty: no persistence).
        pub(crate) fn restart(&mut self) {
            self.stop();
            self.spawn()
                .unwrap_or_else(|e| panic!("redis-server did not restart: {e}"));
        }

        /// Waits (bounded) until `conn` gets an answer.
        pub(crate) async fn wait_until_up(&self, conn: &RedisConn) {
            let deadline = Instant::now() + Duration::from_secs(10);
            while conn.ping().await.is_err() {
                assert!(Instant::now() < deadline, "redis-server did not come up");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }

    impl Drop for PrivateRedis {
        fn drop(&mut self) {
            self.stop();
        }
    }
}
