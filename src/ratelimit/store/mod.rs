//! Where rate-limit state lives: [`MemoryStore`] (in process, bounded).

mod memory;

pub(crate) use memory::duration_nanos;
pub use memory::{DEFAULT_IDLE_SWEEP, DEFAULT_MAX_KEYS, MemoryStore, MemoryStoreBuilder};
