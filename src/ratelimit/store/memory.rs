//! The in-process GCRA store: a sharded map with a hard bound on tracked keys.

use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasher, BuildHasherDefault, Hash, Hasher};

use siphasher::sip::SipHasher13;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::error::ConfigError;
use crate::ratelimit::{Quota, RateLimitDecision, gcra};

/// Default bound on tracked keys.
pub const DEFAULT_MAX_KEYS: usize = 100_000;

/// Default interval between idle sweeps of a shard.
pub const DEFAULT_IDLE_SWEEP: Duration = Duration::from_secs(60);

const MAX_SHARDS: usize = 64;

/// Hashes are already uniformly random (keyed SipHash); the map uses them as they are.
#[derive(Default)]
pub(crate) struct IdentityHasher(u64);

impl Hasher for IdentityHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 << 8) | u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// A map keyed by keyed-SipHash values.
pub(crate) type IdMap<V> = HashMap<u64, V, BuildHasherDefault<IdentityHasher>>;

/// A SipHash-1-3 key (128 bits) drawn from the operating system's generator.
#[derive(Clone, Copy)]
pub(crate) struct SipKey(u64, u64);

impl SipKey {
    pub(crate) fn random() -> Self {
        let mut bytes = [0u8; 16];
        if getrandom::fill(&mut bytes).is_err() {
            // No OS generator: the standard library's per-process random hash keys.
            let state = std::collections::hash_map::RandomState::new();
            return Self(state.hash_one(0u8), state.hash_one(1u8));
        }
        let (a, b) = bytes.split_at(8);
        let word = |s: &[u8]| {
            let mut w = [0u8; 8];
            w.copy_from_slice(s);
            u64::from_le_bytes(w)
        };
        Self(word(a), word(b))
    }

    /// A hasher with this key. `siphasher`'s integer writes take a fast path (the standard
    /// library's `DefaultHasher` turns each into a byte-slice write).
    pub(crate) fn hasher(self) -> SipHasher13 {
        SipHasher13::new_with_keys(self.0, self.1)
    }

    pub(crate) fn hash<K: Hash + ?Sized>(self, key: &K) -> u64 {
        let mut h = self.hasher();
        key.hash(&mut h);
        h.finish()
    }
}

/// The shard of a hash: bits 32 and up, because the map places entries by the low bits and
/// tags them with the top 7, so neither may be constant across one shard's keys.
pub(crate) fn shard_index(hash: u64, mask: u64) -> usize {
    usize::try_from((hash >> 32) & mask).unwrap_or(0)
}

struct Shard {
    /// Key hash → theoretical arrival time (ns since the Unix epoch).
    tats: IdMap<u64>,
    /// The bucket shared by new keys that found the shard full of keys still in debt.
    overflow_tat: u64,
    /// No sweep can free anything before this instant (the smallest TAT kept by the last sweep).
    next_useful_sweep: u64,
    /// When the next idle sweep is due.
    next_idle_sweep: u64,
}

struct Inner {
    shards: Box<[Mutex<Shard>]>,
    shard_mask: u64,
    per_shard: usize,
    key: SipKey,
    idle_sweep: u64,
    overflowed: AtomicU64,
    evicted: AtomicU64,
}

/// Rate-limit state in process memory, bounded.
///
/// Keys are hashed with a per-store random key (SipHash-1-3) so callers cannot aim at a shard or
/// force collisions; two keys whose 64-bit hashes collide (odds about 2⁻⁶⁴ per pair) would
/// share one bucket, which can only make limiting stricter.
///
/// # Memory bound and eviction policy
///
/// At most [`max_keys`](MemoryStoreBuilder::max_keys) keys are tracked, split evenly over up
/// to 64 shards, about 16 bytes per key plus map overhead. The store cleans up after itself,
/// during checks, with no background task:
///
/// - An entry whose theoretical arrival time has passed (the key is back to its full burst) is
///   exactly equivalent to no entry, so it can be dropped without changing any decision. A
///   shard drops all such entries when it is full, and every
///   [`idle_sweep`](MemoryStoreBuilder::idle_sweep) (default 60 s) otherwise.
/// - An entry still in debt (its caller recently spent budget) is **never** evicted: a key
///   under attack cannot be reset to its full burst by flooding the store with other keys.
/// - When a shard is full of entries in debt, a new key is not tracked on its own: it shares
///   the shard's *overflow bucket* (one GCRA state with the caller's quota). New callers are
///   then limited conservatively, together, until entries pay off their debt; the count is in
///   [`overflowed`](MemoryStore::overflowed).
///
/// ```
/// use std::num::NonZeroU32;
/// use std::time::{Duration, UNIX_EPOCH};
/// use portcullis::ratelimit::{MemoryStore, Quota};
///
/// let store = MemoryStore::builder().max_keys(1_000).build().unwrap();
/// let quota = Quota::per_second(NonZeroU32::new(2).unwrap());
/// let now = UNIX_EPOCH + Duration::from_secs(1_000);
/// assert!(store.check(&"alice", &quota, now).is_allowed());
/// assert!(store.check(&"alice", &quota, now).is_allowed());
/// let third = store.check(&"alice", &quota, now);
/// assert!(!third.is_allowed());
/// assert_eq!(third.retry_after(), Duration::from_millis(500));
/// assert!(store.check(&"bob", &quota, now).is_allowed());
/// assert!(store.tracked_keys() <= 1_000);
/// ```
#[derive(Clone)]
pub struct MemoryStore {
    inner: Arc<Inner>,
}

impl fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryStore")
            .field("max_keys", &self.max_keys())
            .field("tracked_keys", &self.tracked_keys())
            .finish_non_exhaustive()
    }
}

/// Configuration of a [`MemoryStore`].
#[derive(Debug, Clone)]
#[must_use]
pub struct MemoryStoreBuilder {
    max_keys: usize,
    idle_sweep: Duration,
}

impl MemoryStoreBuilder {
    /// The most keys tracked at once. Default [`DEFAULT_MAX_KEYS`] (100 000). At least 1.
    ///
    /// Smaller bounds use less memory; when the bound is reached by keys still in debt, new
    /// keys share an overflow bucket (stricter limiting), never looser.
    pub fn max_keys(mut self, max_keys: usize) -> Self {
        self.max_keys = max_keys;
        self
    }

    /// How often a shard drops entries that are back to full burst even when it is not full.
    /// Default 60 s; at least 1 ms. Shorter frees idle memory sooner at the cost of more sweeps.
    pub fn idle_sweep(mut self, every: Duration) -> Self {
        self.idle_sweep = every;
        self
    }

    /// Checks the configuration.
    pub fn build(self) -> Result<MemoryStore, ConfigError> {
        if self.max_keys == 0 {
            return Err(ConfigError::new(
                "rate limit store: max_keys must be at least 1",
            ));
        }
        if self.idle_sweep < Duration::from_millis(1) {
            return Err(ConfigError::new(
                "rate limit store: idle_sweep must be at least 1 ms",
            ));
        }
        // A power of two no larger than max_keys, so per_shard * shards <= max_keys.
        let mut shards = MAX_SHARDS;
        while shards > self.max_keys {
            shards /= 2;
        }
        let per_shard = self.max_keys / shards;
        let shards_vec: Vec<Mutex<Shard>> = (0..shards)
            .map(|_| {
                Mutex::new(Shard {
                    tats: IdMap::default(),
                    overflow_tat: 0,
                    next_useful_sweep: 0,
                    next_idle_sweep: 0,
                })
            })
            .collect();
        Ok(MemoryStore {
            inner: Arc::new(Inner {
                shards: shards_vec.into_boxed_slice(),
                shard_mask: (shards as u64) - 1,
                per_shard,
                key: SipKey::random(),
                idle_sweep: duration_nanos(self.idle_sweep),
                overflowed: AtomicU64::new(0),
                evicted: AtomicU64::new(0),
            }),
        })
    }
}

impl MemoryStore {
    /// Starts a configuration.
    pub fn builder() -> MemoryStoreBuilder {
        MemoryStoreBuilder {
            max_keys: DEFAULT_MAX_KEYS,
            idle_sweep: DEFAULT_IDLE_SWEEP,
        }
    }

    /// Spends one unit of `key`'s budget under `quota` at time `now`, if the budget allows.
    pub fn check<K: Hash + ?Sized>(
        &self,
        key: &K,
        quota: &Quota,
        now: SystemTime,
    ) -> RateLimitDecision {
        self.check_hash(self.hash(key), quota, now)
    }

    /// The store's keyed hash of `key` (what [`check_hash`](Self::check_hash) takes).
    pub fn hash<K: Hash + ?Sized>(&self, key: &K) -> u64 {
        self.inner.key.hash(key)
    }

    /// A hasher keyed like [`hash`](Self::hash), to hash composite keys without allocating.
    pub(crate) fn hasher(&self) -> SipHasher13 {
        self.inner.key.hasher()
    }

    /// [`check`](Self::check) with a key already hashed by [`hash`](Self::hash).
    pub fn check_hash(&self, hash: u64, quota: &Quota, now: SystemTime) -> RateLimitDecision {
        let now = system_nanos(now);
        let inner = &*self.inner;
        let index = shard_index(hash, inner.shard_mask);
        let Some(shard) = inner.shards.get(index) else {
            // The mask keeps the index in range; stay strict if that ever changed.
            return gcra::deny_all(quota);
        };
        // A panic while holding the lock cannot leave a TAT half-written: keep going.
        let mut shard = shard.lock().unwrap_or_else(PoisonError::into_inner);
        if now >= shard.next_idle_sweep {
            self.sweep(&mut shard, now);
        }
        if let Some(tat) = shard.tats.get_mut(&hash) {
            let (decision, new_tat) = gcra::check(quota, *tat, now);
            *tat = new_tat;
            return decision;
        }
        if shard.tats.len() >= inner.per_shard && now >= shard.next_useful_sweep {
            self.sweep(&mut shard, now);
        }
        if shard.tats.len() < inner.per_shard {
            let (decision, new_tat) = gcra::check(quota, 0, now);
            if new_tat > now {
                shard.tats.insert(hash, new_tat);
            }
            decision
        } else {
            inner.overflowed.fetch_add(1, Ordering::Relaxed);
            let (decision, new_tat) = gcra::check(quota, shard.overflow_tat, now);
            shard.overflow_tat = new_tat;
            decision
        }
    }

    fn sweep(&self, shard: &mut Shard, now: u64) {
        let before = shard.tats.len();
        let mut min_kept = u64::MAX;
        shard.tats.retain(|_, tat| {
            let keep = *tat > now;
            if keep {
                min_kept = min_kept.min(*tat);
            }
            keep
        });
        let evicted = before - shard.tats.len();
        if evicted > 0 {
            self.inner
                .evicted
                .fetch_add(evicted as u64, Ordering::Relaxed);
        }
        shard.next_useful_sweep = if min_kept == u64::MAX { 0 } else { min_kept };
        shard.next_idle_sweep = now.saturating_add(self.inner.idle_sweep);
        if shard.tats.capacity() > 2 * shard.tats.len().max(16) {
            shard.tats.shrink_to_fit();
        }
    }

    /// The bound on tracked keys (the configured `max_keys` rounded down to a multiple of the
    /// shard count).
    pub fn max_keys(&self) -> usize {
        self.inner.per_shard * self.inner.shards.len()
    }

    /// How many keys are tracked now.
    pub fn tracked_keys(&self) -> usize {
        self.inner
            .shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(PoisonError::into_inner).tats.len())
            .sum()
    }

    /// How many checks went to an overflow bucket because a shard was full of keys in debt.
    pub fn overflowed(&self) -> u64 {
        self.inner.overflowed.load(Ordering::Relaxed)
    }

    /// How many entries were dropped because they were back to full burst.
    pub fn evicted(&self) -> u64 {
        self.inner.evicted.load(Ordering::Relaxed)
    }
}

fn system_nanos(t: SystemTime) -> u64 {
    match t.duration_since(UNIX_EPOCH) {
        // 64-bit arithmetic (no `as_nanos` u128): saturates in the year 2554.
        Ok(d) => d
            .as_secs()
            .saturating_mul(1_000_000_000)
            .saturating_add(u64::from(d.subsec_nanos())),
        Err(_) => 0,
    }
}

pub(crate) fn duration_nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::num::NonZeroU32;

    fn nz(n: u32) -> NonZeroU32 {
        NonZeroU32::new(n).unwrap()
    }

    #[test]
    fn a_million_keys_stay_under_the_bound_and_an_attacked_key_stays_limited() {
        let store = MemoryStore::builder().max_keys(10_000).build().unwrap();
        let quota = Quota::per_second(nz(10));
        let mut now = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let victim = "attacked-key";
        // Exhaust the attacked key's burst.
        for _ in 0..10 {
            assert!(store.check(victim, &quota, now).is_allowed());
        }
        let mut peak = 0;
        for i in 0..1_000_000u64 {
            // 1 µs per request: the churning keys stay in debt for 100 ms each.
            now += Duration::from_micros(1);
            let _ = store.check(&i, &quota, now);
            if i % 1_000 == 0 {
                // The attacker keeps hammering: never allowed beyond the quota.
                let d = store.check(victim, &quota, now);
                if d.is_allowed() {
                    // At most 10 per second leak through: exactly the quota.
                    assert!(i % 100_000 == 0, "allowed at {i}");
                }
                peak = peak.max(store.tracked_keys());
            }
        }
        assert!(peak <= 10_000, "peak {peak}");
        assert!(store.tracked_keys() <= 10_000);
        assert!(store.evicted() > 10_000);
        assert!(store.overflowed() > 0);
    }

    #[test]
    fn attacked_key_is_not_reset_by_eviction() {
        let store = MemoryStore::builder().max_keys(64).build().unwrap();
        let quota = Quota::per_minute(nz(1));
        let now = UNIX_EPOCH + Duration::from_secs(1_000);
        assert!(store.check("victim", &quota, now).is_allowed());
        assert!(!store.check("victim", &quota, now).is_allowed());
        for i in 0..1_000_000u32 {
            let _ = store.check(&i, &quota, now + Duration::from_millis(u64::from(i % 1000)));
        }
        assert!(store.tracked_keys() <= 64);
        let later = now + Duration::from_secs(30);
        assert!(!store.check("victim", &quota, later).is_allowed());
        assert!(
            store
                .check("victim", &quota, now + Duration::from_secs(60))
                .is_allowed()
        );
    }

    #[test]
    fn idle_keys_are_swept_without_pressure() {
        let store = MemoryStore::builder()
            .idle_sweep(Duration::from_secs(1))
            .build()
            .unwrap();
        let quota = Quota::per_second(nz(5));
        let now = UNIX_EPOCH + Duration::from_secs(10);
        for i in 0..1_000u32 {
            let _ = store.check(&i, &quota, now);
        }
        assert_eq!(store.tracked_keys(), 1_000);
        for i in 0..10_000u32 {
            let _ = store.check(
                &(i + 5_000),
                &Quota::per_hour(nz(1_000_000)),
                now + Duration::from_secs(5),
            );
        }
        // Every old entry was back to full burst and got dropped by the shards' idle sweeps.
        assert!(store.tracked_keys() <= 10_000, "{}", store.tracked_keys());
        assert!(store.evicted() >= 1_000);
    }

    #[test]
    fn zero_max_keys_is_refused() {
        assert!(MemoryStore::builder().max_keys(0).build().is_err());
        assert!(
            MemoryStore::builder()
                .idle_sweep(Duration::ZERO)
                .build()
                .is_err()
        );
        assert_eq!(
            MemoryStore::builder()
                .max_keys(10)
                .build()
                .unwrap()
                .max_keys(),
            8
        );
    }
}
