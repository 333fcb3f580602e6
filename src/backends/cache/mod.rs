//! The cache tier, behind three narrow traits, each implemented in process ([`memory`]) and on
//! Redis or Redis Cluster ([`redis`], through fred), with one conformance suite per trait
//! running against both:
//!
//! * [`KeyValue`]: plain values with expiries, counters, sets and key scans: the battle
//!   rings, usage counters and user data stamps, locks ([`lock::CacheLock`])
//!   and rate limits;
//! * [`LruStore`]: values per owner with an exact least-recently-used bound: the key-value
//!   storage;
//! * [`VersionedCache`]: the versioned entries of the write-through cache (cached rows, and
//!   the copies of user data documents) and their protocol (see `docs/cache-consistency.md`):
//!   * an entry is stored as `"<version>|<payload>"`;
//!   * [`VersionedCache::begin_write`] marks a key as being written (a counter at `<key>:w`
//!     with a safety expiry) *before* the database commits, and revokes the key's read lease;
//!   * [`VersionedCache::leased_get_many`] reports a marked key as a miss, and gives every
//!     unmarked miss the reader's *lease* (`<key>:l`);
//!   * [`VersionedCache::leased_fill_many`] stores only while that lease is still the
//!     reader's, no write is in flight and no version as new is present, so a reader whose
//!     database read may predate a write can never fill, even after the newer entry was
//!     evicted;
//!   * [`VersionedCache::end_write`] clears the mark and, for a committed write, stores the
//!     new entry unless a newer one is present.
//!
//! Every method is one atomic step and (on Redis) one round trip.

pub mod instrumented;
pub mod lock;
pub mod memory;
pub mod redis;

use std::time::Duration;

use async_trait::async_trait;

/// A boxed error source.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why a cache call failed. The callers degrade (go to the database) rather than fail.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// The server could not be reached or did not answer in time.
    #[error("cache unavailable")]
    Unavailable(#[source] BoxError),
    /// The server answered with something we did not expect (or refused the command).
    #[error("cache protocol error")]
    Protocol(#[source] BoxError),
}

impl CacheError {
    /// A protocol error described by `what` (a reply of the wrong shape).
    pub fn protocol(what: impl Into<String>) -> Self {
        CacheError::Protocol(what.into().into())
    }

    /// Whether the server answered but refused (a full Redis under `noeviction` refuses
    /// every write but `DEL`), rather than being away.
    pub fn is_refusal(&self) -> bool {
        matches!(self, CacheError::Protocol(_))
    }
}

/// Result of a cache call.
pub type CacheResult<T> = Result<T, CacheError>;

/// Plain keys and values. Keys are given without the instance's prefix; implementations add
/// it, so two Arena instances (or two tests) with different prefixes never see each other's
/// keys.
#[async_trait]
pub trait KeyValue: Send + Sync + 'static {
    /// `memory` or `redis`, for `/readyz`.
    fn kind(&self) -> &'static str;
    /// One round trip to check the server answers.
    async fn ping(&self) -> CacheResult<()>;
    /// GET (a counter reads as its number).
    async fn get(&self, key: &str) -> CacheResult<Option<String>>;
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
    /// INCRBY; the counter's new value.
    async fn incr_by(&self, key: &str, by: i64) -> CacheResult<i64>;
    /// Raises each counter to at least its value (never lowers one), in one round trip.
    async fn raise_many(&self, counters: &[(String, i64)]) -> CacheResult<()>;
    /// INCR with an expiry set when the key is new (rate limiting windows).
    async fn incr_with_ttl(&self, key: &str, ttl: Duration) -> CacheResult<i64>;
    /// SADD; `true` when the member is new.
    async fn sadd(&self, key: &str, member: &str) -> CacheResult<bool>;
    /// SMEMBERS, sorted.
    async fn smembers(&self, key: &str) -> CacheResult<Vec<String>>;
    /// Keys starting with `prefix` (without the instance prefix). SCAN, never KEYS.
    async fn scan_prefix(&self, prefix: &str) -> CacheResult<Vec<String>>;
}

/// Values per owner, each owner holding at most a given number of keys: storing beyond it
/// evicts the owner's least recently read or written keys, exactly and in that order. On
/// Redis the order is a sorted set per owner, updated in the same script as the value.
#[async_trait]
pub trait LruStore: Send + Sync + 'static {
    /// `memory` or `redis`, for `/readyz`.
    fn kind(&self) -> &'static str;
    /// One round trip to check the server answers.
    async fn ping(&self) -> CacheResult<()>;
    /// The owner's value at `key`, which becomes the owner's most recently used key.
    async fn get(&self, owner: &str, key: &str) -> CacheResult<Option<String>>;
    /// Stores the entries in their order (each becomes the owner's most recently used key),
    /// then evicts the owner's least recently used keys beyond `capacity`; returns how many
    /// were evicted.
    async fn put(
        &self,
        owner: &str,
        entries: &[(String, String)],
        capacity: u64,
    ) -> CacheResult<u64>;
    /// The owner's keys, least recently used first.
    async fn keys(&self, owner: &str) -> CacheResult<Vec<String>>;
    /// Removes every value of the owner.
    async fn forget(&self, owner: &str) -> CacheResult<()>;
}

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

    /// The version of an encoded entry, without its payload.
    pub fn version_of(raw: &str) -> Option<i64> {
        raw.split_once('|')?.0.parse().ok()
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

/// A committed or abandoned write, passed to [`VersionedCache::end_write`].
#[derive(Debug, Clone)]
pub enum WriteOutcome {
    /// The transaction committed this entry.
    Committed(Versioned),
    /// The transaction rolled back, or the entry was deleted while marked (a bulk write): only
    /// the mark is cleared.
    Aborted,
    /// The entry is deleted while still marked, then the mark is cleared: a bulk write's
    /// entries, a collection's version, a failed commit's keys. A reader that missed before
    /// the deletion cannot fill afterwards (the mark revoked its lease).
    Dropped,
}

/// A message published once a write's end is applied: its change event, which live queries
/// follow ([`VersionedCache::end_write_announced`]).
#[derive(Debug, Clone)]
pub struct Announcement {
    /// The Redis channel.
    pub channel: String,
    /// The payload.
    pub message: String,
}

/// The write-through cache's entries and their protocol (see the module documentation).
#[async_trait]
pub trait VersionedCache: Send + Sync + 'static {
    /// `memory` or `redis`, for `/readyz`.
    fn kind(&self) -> &'static str;
    /// One round trip to check the server answers.
    async fn ping(&self) -> CacheResult<()>;
    /// Reads entries; `None` for a missing entry or one with a write in flight. Every
    /// unmarked miss gets the lease `lease` (expiring after `lease_ttl`).
    async fn leased_get_many(
        &self,
        keys: &[String],
        lease: &str,
        lease_ttl: Duration,
    ) -> CacheResult<Vec<Option<Versioned>>>;
    /// The versions of the entries present now (`None` for a missing entry or one with a
    /// write in flight), without taking a lease: what the memo of responses checks.
    async fn entry_versions(&self, keys: &[String]) -> CacheResult<Vec<Option<i64>>>;
    /// The entries present now (`None` for a missing entry or one with a write in flight),
    /// without taking a lease: [`Self::entry_versions`] with the payloads.
    async fn entries(&self, keys: &[String]) -> CacheResult<Vec<Option<Versioned>>>;
    /// Whether every entry of `reads` still holds the version read (present, unmarked, same
    /// version), when that can be answered in process, as of now and without a round trip
    /// (the in-process cache, or a near cache holding every key under its lease); `None`
    /// otherwise.
    fn still_at_now(&self, _reads: &[(String, i64)]) -> Option<bool> {
        None
    }
    /// Fills after a leased miss: each entry is stored only while the key's lease is still
    /// `lease`, no write is in flight and nothing as new is present; the lease is then
    /// released. Returns which were stored.
    async fn leased_fill_many(
        &self,
        entries: &[(String, Versioned)],
        lease: &str,
        ttl: Duration,
    ) -> CacheResult<Vec<bool>>;
    /// Marks the keys as being written, before the database commits, and revokes their
    /// readers' leases.
    async fn begin_write(&self, keys: &[String], mark_ttl: Duration) -> CacheResult<()>;
    /// Clears the marks; for committed writes stores each entry unless a newer one is present;
    /// deletes the dropped ones first. A whole write's end is one call, whatever it stores or
    /// drops.
    async fn end_write(&self, writes: &[(String, WriteOutcome)], ttl: Duration) -> CacheResult<()>;
    /// [`Self::end_write`], then `PUBLISH` of `announcement` in the same call, where one call
    /// covers every key (one Redis server); whether it was published. `false` leaves the
    /// publication to the caller.
    async fn end_write_announced(
        &self,
        writes: &[(String, WriteOutcome)],
        ttl: Duration,
        _announcement: &Announcement,
    ) -> CacheResult<bool> {
        self.end_write(writes, ttl).await.map(|()| false)
    }
    /// Deletes the entries and revokes their read leases (not their marks): a failed
    /// commit's, a bulk write's, or the ones an outage left owed. A reader that missed before
    /// the deletion cannot fill afterwards.
    async fn invalidate(&self, keys: &[String]) -> CacheResult<()>;
    /// A bulk write's end (or a failed commit's): deletes the entries while they are still
    /// marked, then clears one mark of each; [`Self::end_write`] of [`WriteOutcome::Dropped`].
    async fn drop_written(&self, keys: &[String]) -> CacheResult<()> {
        let dropped: Vec<(String, WriteOutcome)> = keys
            .iter()
            .map(|k| (k.clone(), WriteOutcome::Dropped))
            .collect();
        self.end_write(&dropped, Duration::ZERO).await
    }
}
