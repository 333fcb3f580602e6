//! The cache tier: an in-process LRU by default, Redis (or Redis Cluster) through fred when
//! `REDIS_URL` is set. Both implement [`Cache`], and one conformance suite runs against both.
//!
//! Besides plain key/value operations the trait carries the *versioned entry* protocol that
//! keeps the meal cache consistent with the database (see `docs/cache-consistency.md`):
//!
//! * an entry is stored as `"<version>|<payload>"`;
//! * [`Cache::begin_write`] marks a key as being written (a counter at `<key>:w` with a
//!   safety expiry) *before* the database commits;
//! * while a key is marked, [`Cache::versioned_get_many`] reports it as a miss and
//!   [`Cache::versioned_fill`] refuses to fill it;
//! * [`Cache::end_write`] clears the mark and, for a committed write, stores the new entry
//!   unless a newer version is already there;
//! * [`Cache::versioned_fill`] (a reader filling after a miss) only stores a version newer than
//!   the one present;
//! * readers that go through [`Cache::leased_get_many`] get a *lease* (`<key>:l`) on each key
//!   they miss, and [`Cache::leased_fill_many`] stores only while that lease is still theirs.
//!   [`Cache::begin_write`] revokes the leases of the keys it marks, so a reader whose database
//!   read may predate a write can never fill — even if the newer entry was evicted meanwhile.
//!
//! Every implementation performs each method as one atomic step and (for Redis) one round trip.

pub mod health;
pub mod instrumented;
pub mod memory;
pub mod redis;

use std::time::Duration;

use async_trait::async_trait;

/// Why a cache call failed. The callers degrade (go to the database) rather than fail.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// The server could not be reached or did not answer in time.
    #[error("cache unavailable: {0}")]
    Unavailable(String),
    /// The server answered with something we did not expect.
    #[error("cache protocol error: {0}")]
    Protocol(String),
}

/// Result of a cache call.
pub type CacheResult<T> = Result<T, CacheError>;

/// A versioned entry as stored in the cache: the version and the payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned {
    /// The row version the payload was read at.
    pub version: i64,
    /// The serialized row (`null` for a tombstone).
    pub payload: String,
}

impl Versioned {
    /// Encodes as `"<version>|<payload>"`.
    pub fn encode(&self) -> String {
        format!("{}|{}", self.version, self.payload)
    }

    /// Decodes `"<version>|<payload>"`.
    pub fn decode(raw: &str) -> Option<Self> {
        let (v, payload) = raw.split_once('|')?;
        Some(Self {
            version: v.parse().ok()?,
            payload: payload.to_owned(),
        })
    }
}

/// A committed or abandoned write, passed to [`Cache::end_write`].
#[derive(Debug, Clone)]
pub enum WriteOutcome {
    /// The transaction committed this entry.
    Committed(Versioned),
    /// The transaction rolled back: only the mark is cleared.
    Aborted,
}

/// The cache tier. Keys are given without the instance's prefix; implementations add it, so
/// two Arena instances (or two tests) with different prefixes never see each other's keys.
#[async_trait]
pub trait Cache: Send + Sync + 'static {
    /// `memory` or `redis`.
    fn kind(&self) -> &'static str;

    /// One round trip to check the server answers.
    async fn ping(&self) -> CacheResult<()>;

    /// GET.
    async fn get(&self, key: &str) -> CacheResult<Option<String>>;
    /// MGET, in one round trip.
    async fn mget(&self, keys: &[String]) -> CacheResult<Vec<Option<String>>>;
    /// SET with an optional expiry.
    async fn set(&self, key: &str, value: &str, ttl: Option<Duration>) -> CacheResult<()>;
    /// Several SETs with one expiry, in one round trip.
    async fn set_many(
        &self,
        entries: &[(String, String)],
        ttl: Option<Duration>,
    ) -> CacheResult<()>;
    /// SET NX with an expiry; `true` when this call set it (a lock was taken).
    async fn set_nx(&self, key: &str, value: &str, ttl: Duration) -> CacheResult<bool>;
    /// Deletes the key only if it still holds `value` (releases a lock this caller owns).
    async fn del_if_equals(&self, key: &str, value: &str) -> CacheResult<bool>;
    /// DEL; returns how many existed.
    async fn del(&self, keys: &[String]) -> CacheResult<u64>;
    /// INCRBY, also setting `<key>:updated_time`-style companions is the caller's business.
    async fn incr_by(&self, key: &str, by: i64) -> CacheResult<i64>;
    /// INCRBY with an expiry set when the key is new (rate limiting windows).
    async fn incr_with_ttl(&self, key: &str, ttl: Duration) -> CacheResult<i64>;
    /// SADD; `true` when the member is new.
    async fn sadd(&self, key: &str, member: &str) -> CacheResult<bool>;
    /// SMEMBERS.
    async fn smembers(&self, key: &str) -> CacheResult<Vec<String>>;
    /// Keys starting with `prefix` (without the instance prefix). SCAN, never KEYS.
    async fn scan_prefix(&self, prefix: &str) -> CacheResult<Vec<String>>;

    /// Reads versioned entries; `None` for a missing entry *or* one with a write in flight.
    async fn versioned_get_many(&self, keys: &[String]) -> CacheResult<Vec<Option<Versioned>>>;
    /// A reader's fill after a miss: stored only when no write is in flight and no entry of
    /// the same or a newer version is present. Returns whether it was stored.
    async fn versioned_fill(
        &self,
        key: &str,
        entry: &Versioned,
        ttl: Duration,
    ) -> CacheResult<bool>;
    /// Several fills in one round trip; returns which were stored.
    async fn versioned_fill_many(
        &self,
        entries: &[(String, Versioned)],
        ttl: Duration,
    ) -> CacheResult<Vec<bool>> {
        let mut stored = Vec::with_capacity(entries.len());
        for (key, entry) in entries {
            stored.push(self.versioned_fill(key, entry, ttl).await?);
        }
        Ok(stored)
    }
    /// Like [`Cache::versioned_get_many`], and every unmarked miss gets the lease `lease`
    /// (expiring after `lease_ttl`), all in one round trip.
    async fn leased_get_many(
        &self,
        keys: &[String],
        lease: &str,
        lease_ttl: Duration,
    ) -> CacheResult<Vec<Option<Versioned>>>;
    /// Fills after a leased miss, in one round trip: each entry is stored only while the key's
    /// lease is still `lease`, no write is in flight and nothing as new is present; the lease
    /// is then released. Returns which were stored.
    async fn leased_fill_many(
        &self,
        entries: &[(String, Versioned)],
        lease: &str,
        ttl: Duration,
    ) -> CacheResult<Vec<bool>>;
    /// Marks the keys as being written, before the database commits, and revokes their
    /// readers' leases.
    async fn begin_write(&self, keys: &[String], mark_ttl: Duration) -> CacheResult<()>;
    /// Clears the marks; for committed writes stores each entry unless a newer one is present.
    async fn end_write(&self, writes: &[(String, WriteOutcome)], ttl: Duration) -> CacheResult<()>;
}
