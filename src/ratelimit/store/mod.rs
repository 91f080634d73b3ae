//! Where rate-limit state lives: [`MemoryStore`] (in process, bounded) and, with the feature
//! `redis`, `RedisRateLimitStore` (shared by replicas).

mod memory;
#[cfg(feature = "redis")]
mod redis;

pub use memory::{DEFAULT_IDLE_SWEEP, DEFAULT_MAX_KEYS, MemoryStore, MemoryStoreBuilder};
pub(crate) use memory::{IdMap, SipKey, duration_nanos, shard_index};
#[cfg(feature = "redis")]
pub use redis::{FailureMode, RedisRateLimitStore, RedisRateLimitStoreBuilder};
