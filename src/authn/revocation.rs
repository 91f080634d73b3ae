//! Token revocation: a deny-list by `jti`, and a not-before time per subject.
//!
//! A verified JWT stays valid until its `exp`. [`Revocation`] refuses tokens before that:
//!
//! - **by `jti`**: one token is refused until its `exp` (plus a retention margin that covers
//!   the verifier's clock-skew leeway), after which the entry expires by itself;
//! - **by subject** ("log out everywhere"): every token of the subject issued (`iat`) at or
//!   before the not-before time is refused. Tokens issued later are accepted. A token without
//!   `iat` is refused while its subject has a not-before entry, since it cannot prove it is
//!   newer. Subject entries expire after the maximum token lifetime plus the margin, when every
//!   token they could refuse has expired anyway. Tokens without `jti` can still be revoked this
//!   way.
//!
//! Entries live in a [`RevocationStore`]: [`MemoryRevocationStore`] (one process) or
//! `RedisRevocationStore` (feature `redis`, shared by every replica). [`Revocation`] implements
//! the JWT authenticator's [`RevocationCheck`](crate::authn::jwt::RevocationCheck), so it runs
//! after every successful verification, cached verifications included.
//!
//! | setting | default | effect of changing it |
//! |---|---|---|
//! | store failure | refuse the token (401, detail `revocation store unavailable`) | [`insecure_fail_open`](RevocationBuilder::insecure_fail_open) accepts tokens while the store is down, so a revoked token works again during an outage |
//! | maximum token lifetime ([`max_token_lifetime`](RevocationBuilder::max_token_lifetime)) | 24 h | how long subject entries, and `jti` entries revoked without a known `exp`, are kept; shorter than the authenticator's maximum lifetime lets revoked tokens come back |
//! | retention margin ([`retention_margin`](RevocationBuilder::retention_margin)) | 5 min | added to every entry's lifetime; must cover the verifier's `exp` leeway |
//! | [`MemoryRevocationStore`] capacity | 100,000 entries | when full, expired entries are evicted; if none are, the revocation fails loudly (never a silent eviction of a live entry) |
//!
//! Time comes from the injected [`Clock`](crate::clock::Clock). Identifiers are at most 1 KiB;
//! the Redis store keys them by SHA-256 digest (fixed-size keys, raw values not stored), the
//! memory store by the identifier in a per-process keyed hash map (no digest per request). No
//! token material is ever logged or put into an error; the `token.revoked` audit event names
//! the revoked `jti` or subject (identifiers, not credentials) so an incident can be traced.
//!
//! ```
//! use std::sync::Arc;
//! use portcullis::authn::jwt::JwtAuthenticator;
//! use portcullis::authn::revocation::{MemoryRevocationStore, Revocation};
//! use portcullis::testing::TestKey;
//!
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! let revocation = Revocation::builder(MemoryRevocationStore::new()).build().unwrap();
//! let key = TestKey::ed25519("k1");
//! let jwt = JwtAuthenticator::builder()
//!     .issuer("https://issuer.test")
//!     .audience("api")
//!     .key(key.verification_key())
//!     .revocation(Arc::new(revocation.clone()))
//!     .build()
//!     .unwrap();
//!
//! // Revoke one token by its jti (kept until its exp).
//! let token = key.mint(&key.claims("alice", "https://issuer.test", "api"));
//! let principal = jwt.authenticate_token(&token).await.unwrap();
//! revocation.revoke_principal(&principal).await.unwrap();
//! let refused = jwt.authenticate_token(&token).await.unwrap_err();
//! assert_eq!(refused.status(), http::StatusCode::UNAUTHORIZED);
//! assert_eq!(refused.detail(), "token revoked (jti)");
//!
//! // Log bob out everywhere: his tokens issued until now are refused.
//! let bobs = key.mint(&key.claims("bob", "https://issuer.test", "api"));
//! revocation.revoke_subject_now("bob").await.unwrap();
//! assert!(jwt.authenticate_token(&bobs).await.is_err());
//! # });
//! ```
//!
//! # Deployment caveat
//! Revocation by subject compares the token's `iat` with this service's clock, at one-second
//! resolution (tokens issued in the same second as the not-before are refused too). If the
//! identity provider's clock runs ahead of yours, tokens it issued just before the revocation
//! can carry a later `iat`: pass a not-before a little in the future to
//! [`Revocation::revoke_subject`] when the clocks may disagree. With several replicas, use a
//! shared store (Redis): an in-memory deny-list only protects the process that holds it.

#[cfg(feature = "redis")]
mod redis;

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::claims::numeric_date;
use futures_util::future::BoxFuture;
use serde_json::Value;
#[cfg(feature = "redis")]
use sha2::{Digest, Sha256};

use crate::clock::{SharedClock, SystemClock};
use crate::error::ConfigError;
use crate::principal::Principal;
use crate::rejection::Rejection;

#[cfg(feature = "redis")]
pub use self::redis::{REDIS_URL_ENV, RedisRevocationStore, RedisRevocationStoreBuilder};

/// The rejection detail (audit log only) when a token's `jti` is revoked.
pub const DETAIL_JTI_REVOKED: &str = "token revoked (jti)";
/// The rejection detail (audit log only) when a token's subject was revoked after it was issued.
pub const DETAIL_SUBJECT_REVOKED: &str = "token revoked (subject not-before)";
/// The rejection detail (audit log only) when the store could not answer in time.
pub const DETAIL_STORE_UNAVAILABLE: &str = "revocation store unavailable";

/// Longest `jti` or subject accepted by the revoke operations.
pub const MAX_IDENTIFIER_BYTES: usize = 1024;

const DEFAULT_MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(24 * 3600);
const DEFAULT_RETENTION_MARGIN: Duration = Duration::from_secs(300);
const DEFAULT_MEMORY_CAPACITY: usize = 100_000;

/// The future a [`RevocationStore`] returns.
pub type StoreFuture<'a, T> = BoxFuture<'a, Result<T, RevocationError>>;

/// Why a token is revoked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Revoked {
    /// Its `jti` is on the deny-list.
    Jti,
    /// Its subject has a not-before time at or after the token's `iat`.
    Subject,
}

impl Revoked {
    /// The rejection detail for the audit log.
    pub const fn detail(self) -> &'static str {
        match self {
            Revoked::Jti => DETAIL_JTI_REVOKED,
            Revoked::Subject => DETAIL_SUBJECT_REVOKED,
        }
    }
}

/// What went wrong with a revocation operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RevocationErrorKind {
    /// The store did not answer (down, unreachable, timed out, protocol error).
    Unavailable,
    /// The store is full and refused a new entry (see [`MemoryRevocationStore`]).
    Full,
    /// The input was unusable: an empty or oversized `jti` or subject, a principal without
    /// `jti`.
    InvalidInput,
}

/// A failed revocation operation. Its message never contains a token, `jti`, subject or
/// connection secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevocationError {
    kind: RevocationErrorKind,
    message: Cow<'static, str>,
}

impl RevocationError {
    /// An error of `kind` with a message that must not contain secret material.
    pub fn new(kind: RevocationErrorKind, message: impl Into<Cow<'static, str>>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }
    /// The store could not answer.
    pub fn unavailable(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(RevocationErrorKind::Unavailable, message)
    }
    /// The kind.
    pub fn kind(&self) -> RevocationErrorKind {
        self.kind
    }
    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for RevocationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "revocation: {}", self.message)
    }
}

impl std::error::Error for RevocationError {}

/// Where revocations are kept. Implementations must bound every call in time (a store that
/// hangs would hang every authenticated request) and expire entries by themselves.
pub trait RevocationStore: Send + Sync + fmt::Debug + 'static {
    /// Refuses the token with this `jti` until `expires_at`. Revoking an already revoked `jti`
    /// keeps the later expiry. An `expires_at` in the past is a no-op.
    fn revoke_jti<'a>(&'a self, jti: &'a str, expires_at: SystemTime) -> StoreFuture<'a, ()>;

    /// Refuses the subject's tokens issued at or before `not_before` (compared in whole Unix
    /// seconds), for `ttl`. A later not-before replaces an earlier one, never the reverse.
    fn revoke_subject<'a>(
        &'a self,
        subject: &'a str,
        not_before: SystemTime,
        ttl: Duration,
    ) -> StoreFuture<'a, ()>;

    /// Whether a token with this `jti` (if any), `subject` and `iat` (if any) is revoked.
    fn is_revoked<'a>(
        &'a self,
        jti: Option<&'a str>,
        subject: &'a str,
        issued_at: Option<SystemTime>,
    ) -> StoreFuture<'a, Option<Revoked>>;

    /// [`is_revoked`](Self::is_revoked) without waiting, for stores that can answer at once (in
    /// memory): `Some` must be what `is_revoked` would return. The default, `None`, sends every
    /// check through `is_revoked`.
    fn is_revoked_now(
        &self,
        jti: Option<&str>,
        subject: &str,
        issued_at: Option<SystemTime>,
    ) -> Option<Result<Option<Revoked>, RevocationError>> {
        let _ = (jti, subject, issued_at);
        None
    }
}

impl<T: RevocationStore + ?Sized> RevocationStore for Arc<T> {
    fn revoke_jti<'a>(&'a self, jti: &'a str, expires_at: SystemTime) -> StoreFuture<'a, ()> {
        (**self).revoke_jti(jti, expires_at)
    }
    fn revoke_subject<'a>(
        &'a self,
        subject: &'a str,
        not_before: SystemTime,
        ttl: Duration,
    ) -> StoreFuture<'a, ()> {
        (**self).revoke_subject(subject, not_before, ttl)
    }
    fn is_revoked<'a>(
        &'a self,
        jti: Option<&'a str>,
        subject: &'a str,
        issued_at: Option<SystemTime>,
    ) -> StoreFuture<'a, Option<Revoked>> {
        (**self).is_revoked(jti, subject, issued_at)
    }
    fn is_revoked_now(
        &self,
        jti: Option<&str>,
        subject: &str,
        issued_at: Option<SystemTime>,
    ) -> Option<Result<Option<Revoked>, RevocationError>> {
        (**self).is_revoked_now(jti, subject, issued_at)
    }
}

/// Whole Unix seconds, saturating at zero before the epoch.
pub(crate) fn unix_seconds(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Whether a token issued at `issued_at` falls under a subject not-before of `not_before_secs`:
/// issued in or before that second, or of unknown age.
pub(crate) fn issued_before(issued_at: Option<SystemTime>, not_before_secs: u64) -> bool {
    issued_at.is_none_or(|iat| unix_seconds(iat) <= not_before_secs)
}

/// The SHA-256 digest a store keys an identifier by (`kind` separates jti and subject keys).
#[cfg(feature = "redis")]
pub(crate) fn digest(kind: &[u8], identifier: &str) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(kind);
    hasher.update([0u8]);
    hasher.update(identifier.as_bytes());
    hasher.finalize().into()
}

fn check_identifier(value: &str, what: &'static str) -> Result<(), RevocationError> {
    if value.is_empty() {
        return Err(RevocationError::new(
            RevocationErrorKind::InvalidInput,
            match what {
                "jti" => "empty jti",
                _ => "empty subject",
            },
        ));
    }
    if value.len() > MAX_IDENTIFIER_BYTES {
        return Err(RevocationError::new(
            RevocationErrorKind::InvalidInput,
            match what {
                "jti" => "jti longer than 1024 bytes",
                _ => "subject longer than 1024 bytes",
            },
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// In-memory store
// ---------------------------------------------------------------------------------------------

#[derive(Default)]
struct MemoryState {
    /// jti → expiry. Identifiers are at most 1 KiB; the map's hasher is keyed per process, so
    /// attacker-chosen identifiers cannot force collisions, and lookups need no digest.
    jtis: HashMap<Box<str>, SystemTime>,
    /// subject → (not-before in Unix seconds, expiry).
    subjects: HashMap<Box<str>, (u64, SystemTime)>,
}

impl MemoryState {
    fn len(&self) -> usize {
        self.jtis.len() + self.subjects.len()
    }

    fn purge(&mut self, now: SystemTime) {
        self.jtis.retain(|_, expires| *expires > now);
        self.subjects.retain(|_, (_, expires)| *expires > now);
    }
}

/// The locked state; publishes its size to [`MemoryRevocationStore::entries`] when unlocked.
struct StateGuard<'a> {
    state: MutexGuard<'a, MemoryState>,
    entries: &'a AtomicUsize,
}

impl Drop for StateGuard<'_> {
    fn drop(&mut self) {
        // Runs before `state` unlocks (fields drop after this), so every change is published
        // under the lock, in order.
        self.entries.store(self.state.len(), Ordering::Release);
    }
}

impl std::ops::Deref for StateGuard<'_> {
    type Target = MemoryState;
    fn deref(&self) -> &MemoryState {
        &self.state
    }
}

impl std::ops::DerefMut for StateGuard<'_> {
    fn deref_mut(&mut self) -> &mut MemoryState {
        &mut self.state
    }
}

/// A revocation store in this process's memory: bounded, entries expire at their TTL by the
/// [`Clock`](crate::clock::Clock).
///
/// **When full** (default 100,000 entries, jti and subject entries together): expired entries
/// are evicted first; if every entry is still live, the new revocation is refused with a
/// [`RevocationErrorKind::Full`] error and an error-level log (`portcullis::revocation`). A live
/// entry is never evicted to make room, because that would silently un-revoke a token. Size the
/// capacity for the revocations you expect within one maximum token lifetime.
///
/// Revocations are lost on restart and not shared between replicas; use the Redis store for
/// that.
pub struct MemoryRevocationStore {
    state: Mutex<MemoryState>,
    /// `state.len()` as of the last change, written under the lock after every change. A lookup
    /// that reads 0 answers "not revoked" without taking the lock: most deployments revoke
    /// rarely, and the lock would be shared by every request.
    ///
    /// Why no revocation is missed: `revoke_*` stores the new count (Release) before it
    /// returns. A check that starts after the revocation returned is ordered after that store
    /// (whatever told the caller the revocation is done, a response or a channel, synchronizes),
    /// so its Acquire load reads that count or a later one. A later count is 0 only if entries
    /// were removed after expiring, and an expired entry refuses nothing. A check racing with a
    /// `revoke_*` that has not returned may pass, as it may with the lock (it may lock first).
    entries: AtomicUsize,
    clock: SharedClock,
    capacity: usize,
}

impl fmt::Debug for MemoryRevocationStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryRevocationStore")
            .field("entries", &self.len())
            .field("capacity", &self.capacity)
            .finish_non_exhaustive()
    }
}

impl Default for MemoryRevocationStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryRevocationStore {
    /// A store with the defaults: system clock, 100,000 entries.
    pub fn new() -> Self {
        Self {
            state: Mutex::new(MemoryState::default()),
            entries: AtomicUsize::new(0),
            clock: Arc::new(SystemClock),
            capacity: DEFAULT_MEMORY_CAPACITY,
        }
    }

    /// Starts a configuration.
    pub fn builder() -> MemoryRevocationStoreBuilder {
        MemoryRevocationStoreBuilder {
            clock: Arc::new(SystemClock),
            capacity: DEFAULT_MEMORY_CAPACITY,
        }
    }

    /// Entries currently held (expired ones included until they are evicted).
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether the store holds no entry.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Evicts every expired entry now. Expired entries are also evicted when the store is full
    /// and ignored by lookups, so calling this is never needed for correctness.
    pub fn purge_expired(&self) {
        let now = self.clock.now();
        self.lock().purge(now);
    }

    fn lock(&self) -> StateGuard<'_> {
        StateGuard {
            // The state stays consistent across a panic (every update is a single map
            // operation).
            state: self.state.lock().unwrap_or_else(PoisonError::into_inner),
            entries: &self.entries,
        }
    }

    /// Makes room for one new entry, or refuses loudly.
    fn ensure_room(&self, state: &mut MemoryState, now: SystemTime) -> Result<(), RevocationError> {
        if state.len() < self.capacity {
            return Ok(());
        }
        state.purge(now);
        if state.len() < self.capacity {
            return Ok(());
        }
        tracing::error!(
            target: "portcullis::revocation",
            capacity = self.capacity,
            "in-memory revocation store is full of live entries; revocation refused"
        );
        Err(RevocationError::new(
            RevocationErrorKind::Full,
            "in-memory revocation store is full",
        ))
    }

    fn revoke_jti_now(&self, jti: &str, expires_at: SystemTime) -> Result<(), RevocationError> {
        check_identifier(jti, "jti")?;
        let now = self.clock.now();
        if expires_at <= now {
            return Ok(());
        }
        let mut state = self.lock();
        match state.jtis.get_mut(jti) {
            Some(existing) => {
                if *existing < expires_at {
                    *existing = expires_at;
                }
            }
            None => {
                self.ensure_room(&mut state, now)?;
                state.jtis.insert(jti.into(), expires_at);
            }
        }
        Ok(())
    }

    fn revoke_subject_now(
        &self,
        subject: &str,
        not_before: SystemTime,
        ttl: Duration,
    ) -> Result<(), RevocationError> {
        check_identifier(subject, "subject")?;
        let now = self.clock.now();
        // About 34,000 years: representable on every platform; beyond any real TTL.
        let expires_at = now
            .checked_add(ttl)
            .unwrap_or(UNIX_EPOCH + Duration::from_secs(1 << 40));
        let not_before = unix_seconds(not_before);
        let mut state = self.lock();
        match state.subjects.get_mut(subject) {
            Some((existing_nb, existing_exp)) if *existing_exp > now => {
                *existing_nb = (*existing_nb).max(not_before);
                *existing_exp = (*existing_exp).max(expires_at);
            }
            Some(expired) => *expired = (not_before, expires_at),
            None => {
                self.ensure_room(&mut state, now)?;
                state
                    .subjects
                    .insert(subject.into(), (not_before, expires_at));
            }
        }
        Ok(())
    }

    fn lookup(
        &self,
        jti: Option<&str>,
        subject: &str,
        issued_at: Option<SystemTime>,
    ) -> Option<Revoked> {
        // See `entries` for why this cannot miss a revocation that has been stored.
        if self.entries.load(Ordering::Acquire) == 0 {
            return None;
        }
        // The clock is read only when an entry is found: most tokens have none.
        let mut state = self.lock();
        if let Some(jti) = jti {
            match state.jtis.get(jti) {
                Some(expires) if *expires > self.clock.now() => return Some(Revoked::Jti),
                Some(_) => {
                    state.jtis.remove(jti);
                }
                None => {}
            }
        }
        match state.subjects.get(subject) {
            Some((not_before, expires)) if *expires > self.clock.now() => {
                issued_before(issued_at, *not_before).then_some(Revoked::Subject)
            }
            Some(_) => {
                state.subjects.remove(subject);
                None
            }
            None => None,
        }
    }
}

impl RevocationStore for MemoryRevocationStore {
    fn revoke_jti<'a>(&'a self, jti: &'a str, expires_at: SystemTime) -> StoreFuture<'a, ()> {
        Box::pin(std::future::ready(self.revoke_jti_now(jti, expires_at)))
    }

    fn revoke_subject<'a>(
        &'a self,
        subject: &'a str,
        not_before: SystemTime,
        ttl: Duration,
    ) -> StoreFuture<'a, ()> {
        Box::pin(std::future::ready(
            self.revoke_subject_now(subject, not_before, ttl),
        ))
    }

    fn is_revoked<'a>(
        &'a self,
        jti: Option<&'a str>,
        subject: &'a str,
        issued_at: Option<SystemTime>,
    ) -> StoreFuture<'a, Option<Revoked>> {
        Box::pin(std::future::ready(Ok(self.lookup(jti, subject, issued_at))))
    }

    fn is_revoked_now(
        &self,
        jti: Option<&str>,
        subject: &str,
        issued_at: Option<SystemTime>,
    ) -> Option<Result<Option<Revoked>, RevocationError>> {
        Some(Ok(self.lookup(jti, subject, issued_at)))
    }
}

/// Configures a [`MemoryRevocationStore`].
#[derive(Debug)]
#[must_use]
pub struct MemoryRevocationStoreBuilder {
    clock: SharedClock,
    capacity: usize,
}

impl MemoryRevocationStoreBuilder {
    /// The time source for entry expiry (default: the system clock). Give the store and the
    /// [`Revocation`] wrapper the same clock.
    pub fn clock(mut self, clock: SharedClock) -> Self {
        self.clock = clock;
        self
    }
    /// The most entries held at once (default 100,000). See the type docs for what happens
    /// when the store is full.
    pub fn capacity(mut self, capacity: usize) -> Self {
        self.capacity = capacity;
        self
    }
    /// Checks the configuration and builds the store.
    pub fn build(self) -> Result<MemoryRevocationStore, ConfigError> {
        if self.capacity == 0 {
            return Err(ConfigError::new(
                "revocation store capacity must be positive",
            ));
        }
        Ok(MemoryRevocationStore {
            state: Mutex::new(MemoryState::default()),
            entries: AtomicUsize::new(0),
            clock: self.clock,
            capacity: self.capacity,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// The check and the revoke operations
// ---------------------------------------------------------------------------------------------

struct RevocationInner {
    store: Arc<dyn RevocationStore>,
    clock: SharedClock,
    max_token_lifetime: Duration,
    retention_margin: Duration,
    fail_open: bool,
}

/// Revokes tokens and checks them against a [`RevocationStore`]. Cheap to clone. See the
/// [module docs](self).
///
/// Reads `jti` and `iat` from [`Principal::attributes`] (the verified claims) and the subject
/// from [`Principal::subject`] (the `sub` claim, or the client id of a client-credentials token
/// without one).
#[derive(Clone)]
pub struct Revocation {
    inner: Arc<RevocationInner>,
}

impl fmt::Debug for Revocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Revocation")
            .field("store", &self.inner.store)
            .field("max_token_lifetime", &self.inner.max_token_lifetime)
            .field("retention_margin", &self.inner.retention_margin)
            .field("fail_open", &self.inner.fail_open)
            .finish_non_exhaustive()
    }
}

impl Revocation {
    /// Starts a configuration over `store`.
    pub fn builder(store: impl RevocationStore) -> RevocationBuilder {
        RevocationBuilder {
            store: Arc::new(store),
            clock: Arc::new(SystemClock),
            max_token_lifetime: DEFAULT_MAX_TOKEN_LIFETIME,
            retention_margin: DEFAULT_RETENTION_MARGIN,
            fail_open: false,
        }
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn RevocationStore> {
        &self.inner.store
    }

    /// Revokes the token with this `jti`.
    ///
    /// With `expires_at` (the token's `exp`), the entry is kept until then plus the retention
    /// margin. Without it, the entry is kept for the maximum token lifetime plus the margin
    /// from now, which covers any token the authenticator still accepts.
    pub async fn revoke_jti(
        &self,
        jti: &str,
        expires_at: Option<SystemTime>,
    ) -> Result<(), RevocationError> {
        check_identifier(jti, "jti")?;
        let now = self.inner.clock.now();
        let latest = now + self.inner.max_token_lifetime;
        // An `exp` beyond the maximum lifetime cannot belong to an accepted token; cap it so a
        // mistaken value cannot pin an entry for years.
        let until = expires_at.map_or(latest, |exp| exp.min(latest)) + self.inner.retention_margin;
        self.inner.store.revoke_jti(jti, until).await?;
        crate::audit::global().record(
            crate::audit::AuditEvent::new(crate::audit::EventType::TokenRevoked)
                .with_reason_code("revoked_jti")
                .with_detail("jti", jti.to_owned()),
        );
        Ok(())
    }

    /// Revokes the token `principal` was authenticated with, by its `jti` claim, until its
    /// expiry. Fails with [`RevocationErrorKind::InvalidInput`] when the token has no `jti`
    /// (revoke its subject instead).
    pub async fn revoke_principal(&self, principal: &Principal) -> Result<(), RevocationError> {
        let Some(jti) = principal.attribute("jti").and_then(Value::as_str) else {
            return Err(RevocationError::new(
                RevocationErrorKind::InvalidInput,
                "the token has no jti; revoke its subject instead",
            ));
        };
        self.revoke_jti(jti, principal.expires_at()).await
    }

    /// Refuses every token of `subject` issued at or before `not_before` (whole seconds). The
    /// entry is kept for the maximum token lifetime plus the retention margin.
    pub async fn revoke_subject(
        &self,
        subject: &str,
        not_before: SystemTime,
    ) -> Result<(), RevocationError> {
        check_identifier(subject, "subject")?;
        let ttl = self.inner.max_token_lifetime + self.inner.retention_margin;
        self.inner
            .store
            .revoke_subject(subject, not_before, ttl)
            .await?;
        crate::audit::global().record(
            crate::audit::AuditEvent::new(crate::audit::EventType::TokenRevoked)
                .with_reason_code("revoked_subject")
                .with_detail("subject", subject.to_owned())
                .with_detail(
                    "not_before",
                    not_before
                        .duration_since(UNIX_EPOCH)
                        .map_or(0, |d| d.as_secs()),
                ),
        );
        Ok(())
    }

    /// "Log out everywhere": refuses every token of `subject` issued until now.
    pub async fn revoke_subject_now(&self, subject: &str) -> Result<(), RevocationError> {
        let now = self.inner.clock.now();
        self.revoke_subject(subject, now).await
    }

    /// Checks one principal. `Err` carries the rejection (401) with the reason as its detail.
    pub async fn check_principal(&self, principal: &Principal) -> Result<(), Rejection> {
        self.check_reason(principal)
            .await
            .map_err(Rejection::invalid_credential)
    }

    async fn check_reason(&self, principal: &Principal) -> Result<(), &'static str> {
        let (jti, issued_at) = token_identity(principal);
        let answer = self
            .inner
            .store
            .is_revoked(jti, principal.subject(), issued_at)
            .await;
        self.outcome(answer)
    }

    /// The check without waiting, when the store can answer at once.
    #[cfg(feature = "jwt")]
    fn check_reason_now(&self, principal: &Principal) -> Option<Result<(), &'static str>> {
        let (jti, issued_at) = token_identity(principal);
        let answer = self
            .inner
            .store
            .is_revoked_now(jti, principal.subject(), issued_at)?;
        Some(self.outcome(answer))
    }

    fn outcome(
        &self,
        answer: Result<Option<Revoked>, RevocationError>,
    ) -> Result<(), &'static str> {
        match answer {
            Ok(None) => Ok(()),
            Ok(Some(revoked)) => Err(revoked.detail()),
            Err(error) if self.inner.fail_open => {
                tracing::warn!(
                    target: "portcullis::revocation",
                    error = %error,
                    "revocation store unavailable; token accepted (insecure_fail_open)"
                );
                Ok(())
            }
            Err(_) => Err(DETAIL_STORE_UNAVAILABLE),
        }
    }
}

#[cfg(feature = "jwt")]
impl crate::authn::jwt::RevocationCheck for Revocation {
    fn check<'a>(
        &'a self,
        principal: &'a Principal,
    ) -> BoxFuture<'a, Result<(), Cow<'static, str>>> {
        Box::pin(async move { self.check_reason(principal).await.map_err(Cow::Borrowed) })
    }

    fn check_now(&self, principal: &Principal) -> Option<Result<(), Cow<'static, str>>> {
        self.check_reason_now(principal)
            .map(|outcome| outcome.map_err(Cow::Borrowed))
    }

    fn check_token_now(
        &self,
        principal: &Principal,
        jti: Option<&str>,
        issued_at: Option<SystemTime>,
    ) -> Option<Result<(), Cow<'static, str>>> {
        let answer = self
            .inner
            .store
            .is_revoked_now(jti, principal.subject(), issued_at)?;
        Some(self.outcome(answer).map_err(Cow::Borrowed))
    }
}

/// The `jti` and `iat` a revocation check looks at.
pub(crate) fn token_identity(principal: &Principal) -> (Option<&str>, Option<SystemTime>) {
    let jti = principal.attribute("jti").and_then(Value::as_str);
    let issued_at = principal
        .attribute("iat")
        .and_then(numeric_date)
        .map(|secs| UNIX_EPOCH + Duration::from_secs(secs));
    (jti, issued_at)
}

/// Configures a [`Revocation`]. Every setting documents its default in the
/// [module docs](self).
#[must_use]
pub struct RevocationBuilder {
    store: Arc<dyn RevocationStore>,
    clock: SharedClock,
    max_token_lifetime: Duration,
    retention_margin: Duration,
    fail_open: bool,
}

impl fmt::Debug for RevocationBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RevocationBuilder")
            .field("store", &self.store)
            .field("max_token_lifetime", &self.max_token_lifetime)
            .field("retention_margin", &self.retention_margin)
            .field("fail_open", &self.fail_open)
            .finish_non_exhaustive()
    }
}

impl RevocationBuilder {
    /// The time source (default: the system clock). Give the store the same clock.
    pub fn clock(mut self, clock: SharedClock) -> Self {
        self.clock = clock;
        self
    }
    /// The longest lifetime of a token the authenticator accepts (default 24 h, the JWT
    /// authenticator's default `max_lifetime`). Subject entries, and `jti` entries revoked
    /// without a known `exp`, are kept this long plus the retention margin. Setting it below
    /// the authenticator's maximum lets long-lived revoked tokens work again before they
    /// expire.
    pub fn max_token_lifetime(mut self, lifetime: Duration) -> Self {
        self.max_token_lifetime = lifetime;
        self
    }
    /// Added to every entry's lifetime (default 5 minutes, the largest `exp` leeway the JWT
    /// authenticator allows). Must cover the verifier's leeway, or a revoked token is accepted
    /// again during the leeway after its `exp`.
    pub fn retention_margin(mut self, margin: Duration) -> Self {
        self.retention_margin = margin;
        self
    }
    /// Accepts tokens when the store cannot answer (down, timed out). Insecure: during a store
    /// outage every revoked token works again. The default refuses them (401, detail
    /// `revocation store unavailable`) and is the right choice unless availability matters
    /// more than revocation.
    pub fn insecure_fail_open(mut self) -> Self {
        self.fail_open = true;
        self
    }
    /// Checks the configuration and builds the wrapper.
    pub fn build(self) -> Result<Revocation, ConfigError> {
        if self.max_token_lifetime.is_zero() {
            return Err(ConfigError::new("max_token_lifetime must be positive"));
        }
        if self.max_token_lifetime > Duration::from_secs(366 * 24 * 3600) {
            return Err(ConfigError::new("max_token_lifetime above one year"));
        }
        if self.retention_margin > Duration::from_secs(24 * 3600) {
            return Err(ConfigError::new("retention_margin above one day"));
        }
        Ok(Revocation {
            inner: Arc::new(RevocationInner {
                store: self.store,
                clock: self.clock,
                max_token_lifetime: self.max_token_lifetime,
                retention_margin: self.retention_margin,
                fail_open: self.fail_open,
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{Clock, ManualClock};
    use crate::principal::AuthMethod;
    use serde_json::json;

    fn principal(subject: &str, jti: Option<&str>, iat: Option<u64>, exp: u64) -> Principal {
        let mut builder = Principal::builder(
            subject,
            AuthMethod::Jwt {
                kid: None,
                alg: "EdDSA".into(),
            },
        )
        .attribute("sub", subject)
        .attribute("exp", exp)
        .expires_at(UNIX_EPOCH + Duration::from_secs(exp));
        if let Some(jti) = jti {
            builder = builder.attribute("jti", jti);
        }
        if let Some(iat) = iat {
            builder = builder.attribute("iat", iat);
        }
        builder.build()
    }

    fn setup(capacity: usize) -> (ManualClock, Arc<MemoryRevocationStore>, Revocation) {
        let clock = ManualClock::at(UNIX_EPOCH + Duration::from_secs(1_000_000));
        let store = Arc::new(
            MemoryRevocationStore::builder()
                .clock(Arc::new(clock.clone()))
                .capacity(capacity)
                .build()
                .unwrap(),
        );
        let revocation = Revocation::builder(store.clone())
            .clock(Arc::new(clock.clone()))
            .build()
            .unwrap();
        (clock, store, revocation)
    }

    #[tokio::test]
    async fn jti_revocation_lasts_until_exp_plus_margin() {
        let (clock, store, revocation) = setup(100);
        let now = clock.unix_seconds();
        let token = principal("alice", Some("j1"), Some(now), now + 600);
        let other = principal("alice", Some("j2"), Some(now), now + 600);
        assert!(revocation.check_principal(&token).await.is_ok());
        revocation.revoke_principal(&token).await.unwrap();
        let err = revocation.check_principal(&token).await.unwrap_err();
        assert_eq!(err.detail(), DETAIL_JTI_REVOKED);
        assert_eq!(err.status(), http::StatusCode::UNAUTHORIZED);
        assert!(revocation.check_principal(&other).await.is_ok());

        // Still refused during the leeway after exp; gone after exp + margin.
        clock.advance(Duration::from_secs(600 + 299));
        assert!(revocation.check_principal(&token).await.is_err());
        clock.advance(Duration::from_secs(2));
        assert!(revocation.check_principal(&token).await.is_ok());
        assert!(store.is_empty(), "the expired entry was dropped on lookup");
    }

    #[tokio::test]
    async fn jti_without_exp_is_kept_for_the_maximum_lifetime() {
        let (clock, _store, revocation) = setup(100);
        let now = clock.unix_seconds();
        let token = principal("alice", Some("j1"), Some(now), now + 3600);
        revocation.revoke_jti("j1", None).await.unwrap();
        clock.advance(Duration::from_secs(24 * 3600 + 299));
        assert!(revocation.check_principal(&token).await.is_err());
        clock.advance(Duration::from_secs(2));
        assert!(revocation.check_principal(&token).await.is_ok());

        // A far-future exp is capped at the maximum lifetime.
        let far = UNIX_EPOCH + Duration::from_secs(now + 10 * 365 * 24 * 3600);
        revocation.revoke_jti("j1", Some(far)).await.unwrap();
        clock.advance(Duration::from_secs(24 * 3600 + 301));
        assert!(revocation.check_principal(&token).await.is_ok());
    }

    #[tokio::test]
    async fn subject_not_before_refuses_older_tokens_only() {
        let (clock, _store, revocation) = setup(100);
        let now = clock.unix_seconds();
        let old = principal("bob", Some("a"), Some(now - 10), now + 600);
        let same_second = principal("bob", Some("b"), Some(now), now + 600);
        let no_iat = principal("bob", None, None, now + 600);
        let someone_else = principal("carol", Some("c"), Some(now - 10), now + 600);
        revocation.revoke_subject_now("bob").await.unwrap();
        for p in [&old, &same_second, &no_iat] {
            let err = revocation.check_principal(p).await.unwrap_err();
            assert_eq!(err.detail(), DETAIL_SUBJECT_REVOKED);
        }
        assert!(revocation.check_principal(&someone_else).await.is_ok());
        clock.advance(Duration::from_secs(1));
        let newer = principal("bob", None, Some(clock.unix_seconds()), now + 600);
        assert!(revocation.check_principal(&newer).await.is_ok());

        // An earlier not-before never replaces a later one.
        let earlier = UNIX_EPOCH + Duration::from_secs(now - 100);
        revocation.revoke_subject("bob", earlier).await.unwrap();
        assert!(revocation.check_principal(&old).await.is_err());
        // Fractional iat is read as whole seconds.
        let fractional = Principal::builder("bob", AuthMethod::Other("t".into()))
            .attribute("iat", json!((now - 5) as f64 + 0.5))
            .build();
        assert!(revocation.check_principal(&fractional).await.is_err());

        // The entry expires after the maximum lifetime plus the margin.
        clock.advance(Duration::from_secs(24 * 3600 + 301));
        assert!(revocation.check_principal(&old).await.is_ok());
    }

    #[tokio::test]
    async fn bad_input_is_refused_without_echo() {
        let (clock, _store, revocation) = setup(100);
        let long = "x".repeat(MAX_IDENTIFIER_BYTES + 1);
        for (result, kind) in [
            (
                revocation.revoke_jti("", None).await,
                RevocationErrorKind::InvalidInput,
            ),
            (
                revocation.revoke_jti(&long, None).await,
                RevocationErrorKind::InvalidInput,
            ),
            (
                revocation.revoke_subject_now("").await,
                RevocationErrorKind::InvalidInput,
            ),
        ] {
            let err = result.unwrap_err();
            assert_eq!(err.kind(), kind);
            assert!(!err.to_string().contains("xxxx"));
        }
        let now = clock.unix_seconds();
        let no_jti = principal("alice", None, Some(now), now + 60);
        let err = revocation.revoke_principal(&no_jti).await.unwrap_err();
        assert_eq!(err.kind(), RevocationErrorKind::InvalidInput);
        assert!(
            Revocation::builder(MemoryRevocationStore::new())
                .max_token_lifetime(Duration::ZERO)
                .build()
                .is_err()
        );
        assert!(
            MemoryRevocationStore::builder()
                .capacity(0)
                .build()
                .is_err()
        );
    }

    #[tokio::test]
    async fn full_store_evicts_expired_entries_then_refuses_loudly() {
        let (clock, store, revocation) = setup(3);
        let now = clock.unix_seconds();
        let soon = UNIX_EPOCH + Duration::from_secs(now + 10);
        for jti in ["a", "b", "c"] {
            revocation.revoke_jti(jti, Some(soon)).await.unwrap();
        }
        let err = revocation.revoke_jti("d", Some(soon)).await.unwrap_err();
        assert_eq!(err.kind(), RevocationErrorKind::Full);
        let err = revocation.revoke_subject_now("s").await.unwrap_err();
        assert_eq!(err.kind(), RevocationErrorKind::Full);
        // Re-revoking an existing entry needs no room.
        revocation.revoke_jti("a", Some(soon)).await.unwrap();
        // Live entries were not evicted.
        let a = principal("u", Some("a"), Some(now), now + 10);
        assert!(revocation.check_principal(&a).await.is_err());

        clock.advance(Duration::from_secs(10 + 301));
        revocation.revoke_jti("d", None).await.unwrap();
        assert_eq!(store.len(), 1, "expired entries were evicted to make room");
    }

    #[tokio::test]
    async fn memory_stays_bounded_under_churn() {
        let (clock, store, revocation) = setup(64);
        for i in 0..10_000u32 {
            let exp = UNIX_EPOCH + Duration::from_secs(clock.unix_seconds() + 1);
            revocation
                .revoke_jti(&format!("jti-{i}"), Some(exp))
                .await
                .unwrap();
            clock.advance(Duration::from_secs(10));
            assert!(store.len() <= 64);
        }
        clock.advance(Duration::from_secs(400));
        store.purge_expired();
        assert!(store.is_empty());
    }

    #[tokio::test]
    async fn the_lock_free_empty_answer_never_hides_a_stored_revocation() {
        let (clock, store, revocation) = setup(100_000);
        let now = clock.unix_seconds();
        assert_eq!(store.entries.load(Ordering::Acquire), 0);
        // Every change, removals on lookup and purges included, publishes the size.
        revocation.revoke_jti("a", None).await.unwrap();
        revocation.revoke_subject_now("s").await.unwrap();
        assert_eq!(store.entries.load(Ordering::Acquire), 2);
        let soon = UNIX_EPOCH + Duration::from_secs(now + 1);
        store.revoke_jti_now("b", soon).unwrap();
        assert_eq!(store.entries.load(Ordering::Acquire), 3);
        clock.advance(Duration::from_secs(2));
        assert_eq!(store.lookup(Some("b"), "u", None), None);
        assert_eq!(
            store.entries.load(Ordering::Acquire),
            2,
            "expired b dropped"
        );
        clock.advance(Duration::from_secs(25 * 3600));
        store.purge_expired();
        assert_eq!(store.entries.load(Ordering::Acquire), 0);
        assert!(store.is_empty());

        // Another thread revokes and says so; a check made after hearing it refuses.
        let (told, heard) = std::sync::mpsc::channel();
        let writer = {
            let store = store.clone();
            let clock = clock.clone();
            std::thread::spawn(move || {
                let until = clock.now() + Duration::from_secs(60);
                for i in 0..2_000u32 {
                    store.revoke_jti_now(&format!("jti-{i}"), until).unwrap();
                    told.send(i).unwrap();
                }
            })
        };
        for i in heard.iter() {
            let jti = format!("jti-{i}");
            assert_eq!(store.lookup(Some(&jti), "u", None), Some(Revoked::Jti));
        }
        writer.join().unwrap();
    }

    #[derive(Debug)]
    struct DownStore;

    impl RevocationStore for DownStore {
        fn revoke_jti<'a>(&'a self, _: &'a str, _: SystemTime) -> StoreFuture<'a, ()> {
            Box::pin(std::future::ready(Err(RevocationError::unavailable(
                "down",
            ))))
        }
        fn revoke_subject<'a>(
            &'a self,
            _: &'a str,
            _: SystemTime,
            _: Duration,
        ) -> StoreFuture<'a, ()> {
            Box::pin(std::future::ready(Err(RevocationError::unavailable(
                "down",
            ))))
        }
        fn is_revoked<'a>(
            &'a self,
            _: Option<&'a str>,
            _: &'a str,
            _: Option<SystemTime>,
        ) -> StoreFuture<'a, Option<Revoked>> {
            Box::pin(std::future::ready(Err(RevocationError::unavailable(
                "down",
            ))))
        }
    }

    #[tokio::test]
    async fn store_failure_fails_closed_unless_insecure_fail_open() {
        let p = principal("alice", Some("j"), Some(1), 2);
        let closed = Revocation::builder(DownStore).build().unwrap();
        let err = closed.check_principal(&p).await.unwrap_err();
        assert_eq!(err.detail(), DETAIL_STORE_UNAVAILABLE);
        assert_eq!(err.status(), http::StatusCode::UNAUTHORIZED);
        assert_eq!(
            closed.revoke_jti("j", None).await.unwrap_err().kind(),
            RevocationErrorKind::Unavailable
        );
        let open = Revocation::builder(DownStore)
            .insecure_fail_open()
            .build()
            .unwrap();
        assert!(open.check_principal(&p).await.is_ok());
        assert!(format!("{open:?}").contains("fail_open: true"));
    }

    #[cfg(feature = "testing")]
    #[tokio::test]
    async fn jwt_authenticator_consults_revocation_and_never_shows_identifiers() {
        use crate::authn::jwt::JwtAuthenticator;
        use crate::testing::TestKey;

        let store = Arc::new(MemoryRevocationStore::new());
        let revocation = Revocation::builder(store.clone()).build().unwrap();
        let key = TestKey::ed25519("k");
        let jwt = JwtAuthenticator::builder()
            .issuer("https://iss")
            .audience("api")
            .key(key.verification_key())
            .revocation(Arc::new(revocation.clone()))
            .build()
            .unwrap();
        let claims = key.claims("alice", "https://iss", "api");
        let jti = claims["jti"].as_str().unwrap().to_owned();
        let token = key.mint(&claims);
        let principal = jwt.authenticate_token(&token).await.unwrap();
        revocation.revoke_principal(&principal).await.unwrap();
        let err = jwt.authenticate_token(&token).await.unwrap_err();
        assert_eq!(err.detail(), DETAIL_JTI_REVOKED);
        let shown = format!("{err:?} {err} {revocation:?} {store:?}");
        assert!(!shown.contains(&jti), "{shown}");
        assert!(!shown.contains("alice"), "{shown}");
        assert!(!shown.contains(&token[..20]), "{shown}");
    }
}
