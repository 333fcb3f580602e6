//! The embedded cache tier: everything in this process, behind one mutex per store, which is
//! all the atomicity the protocols need in a single process.
//!
//! * [`MemoryKv`] keeps plain values, counters and sets until they expire (expired ones are
//!   swept as writes go on) or are deleted, as a Redis run with `noeviction` does: reading
//!   many meals can never drop a user's ring or free a lock someone holds;
//! * [`MemoryLru`] keeps the key-value storage: per owner an exact LRU at the capacity each
//!   call names, and over all owners at most `ARENA_CACHE_CAPACITY` values (the memory
//!   bound, like a dedicated `allkeys-lru` Redis), least recently used first.
//! * [`MemoryVersioned`] keeps the write-through entries and read leases in an LRU bounded by
//!   `ARENA_CACHE_CAPACITY`, and the write marks beside it (never evicted).

mod kv;
mod lru;
mod versioned;

pub use kv::MemoryKv;
pub use lru::MemoryLru;
pub use versioned::MemoryVersioned;

use std::time::Instant;

/// A value with an optional expiry.
#[derive(Debug, Clone)]
struct Expiring<T> {
    value: T,
    expires_at: Option<Instant>,
}

impl<T> Expiring<T> {
    fn live(&self, now: Instant) -> bool {
        self.expires_at.is_none_or(|t| t > now)
    }
}

/// Expired values are swept every this many writes.
const SWEEP_EVERY: u64 = 1024;
