//! Wraps a [`KeyValue`], an [`LruStore`] or a [`VersionedCache`] to count round trips and
//! failures in the instance's metrics, by operation and by caller (`request`, or the
//! `background` workers). Each counter is looked up once, when the wrapper is made.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use prometheus::IntCounter;

use super::{
    Announcement, CacheResult, KeyValue, LruStore, Versioned, VersionedCache, WriteOutcome,
};
use crate::metrics::Metrics;

/// Every cache operation, as labelled in `arena_cache_round_trips_total{op}`.
#[derive(Debug, Clone, Copy)]
enum Op {
    Ping,
    Get,
    Set,
    SetMany,
    SetNx,
    DelIfEquals,
    Del,
    IncrBy,
    RaiseMany,
    IncrWithTtl,
    Sadd,
    Smembers,
    ScanPrefix,
    LeasedGetMany,
    LeasedFillMany,
    BeginWrite,
    EndWrite,
    Invalidate,
    DropWritten,
    StorageGet,
    StoragePut,
    StorageKeys,
    StorageForget,
}

const OPS: [(Op, &str); 23] = [
    (Op::Ping, "ping"),
    (Op::Get, "get"),
    (Op::Set, "set"),
    (Op::SetMany, "set_many"),
    (Op::SetNx, "set_nx"),
    (Op::DelIfEquals, "del_if_equals"),
    (Op::Del, "del"),
    (Op::IncrBy, "incr_by"),
    (Op::RaiseMany, "raise_many"),
    (Op::IncrWithTtl, "incr_with_ttl"),
    (Op::Sadd, "sadd"),
    (Op::Smembers, "smembers"),
    (Op::ScanPrefix, "scan_prefix"),
    (Op::LeasedGetMany, "leased_get_many"),
    (Op::LeasedFillMany, "leased_fill_many"),
    (Op::BeginWrite, "begin_write"),
    (Op::EndWrite, "end_write"),
    (Op::Invalidate, "invalidate"),
    (Op::DropWritten, "drop_written"),
    (Op::StorageGet, "storage_get"),
    (Op::StoragePut, "storage_put"),
    (Op::StorageKeys, "storage_keys"),
    (Op::StorageForget, "storage_forget"),
];

/// A cache that counts every call as one round trip.
pub struct Instrumented<T: ?Sized> {
    inner: Arc<T>,
    /// Per operation: `[request, background]`.
    round_trips: Vec<[IntCounter; 2]>,
    errors: IntCounter,
}

impl<T: ?Sized> Instrumented<T> {
    /// Wraps `inner`, counting into `metrics`.
    pub fn new(inner: Arc<T>, metrics: &Metrics) -> Self {
        let round_trips = OPS
            .iter()
            .enumerate()
            .map(|(i, (op, name))| {
                debug_assert_eq!(*op as usize, i);
                [
                    metrics
                        .cache_round_trips
                        .with_label_values(&[*name, "request"]),
                    metrics
                        .cache_round_trips
                        .with_label_values(&[*name, "background"]),
                ]
            })
            .collect();
        Self {
            inner,
            round_trips,
            errors: metrics.cache_errors.clone(),
        }
    }

    fn count<R>(&self, op: Op, r: CacheResult<R>) -> CacheResult<R> {
        // Versioned reads are recorded by the write-through layer with their versions, and a
        // fill records what it stored (a collection version) or follows a miss that tainted
        // the operation already; any other call makes the response unfit for the memo.
        if !matches!(op, Op::Ping | Op::LeasedGetMany | Op::LeasedFillMany) {
            entity::scope::read::taint();
        }
        let caller = usize::from(crate::metrics::caller() == "background");
        self.round_trips[op as usize][caller].inc();
        if let Err(e) = &r {
            self.errors.inc();
            tracing::warn!(error = ?e, op = OPS[op as usize].1, "cache call failed");
        }
        r
    }
}

#[async_trait]
impl KeyValue for Instrumented<dyn KeyValue> {
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }
    async fn ping(&self) -> CacheResult<()> {
        self.count(Op::Ping, self.inner.ping().await)
    }
    async fn get(&self, key: &str) -> CacheResult<Option<String>> {
        self.count(Op::Get, self.inner.get(key).await)
    }
    async fn set(&self, key: &str, value: &str, ttl: Option<Duration>) -> CacheResult<()> {
        self.count(Op::Set, self.inner.set(key, value, ttl).await)
    }
    async fn set_many(
        &self,
        entries: &[(String, String)],
        ttl: Option<Duration>,
    ) -> CacheResult<()> {
        self.count(Op::SetMany, self.inner.set_many(entries, ttl).await)
    }
    async fn set_nx(&self, key: &str, value: &str, ttl: Duration) -> CacheResult<bool> {
        self.count(Op::SetNx, self.inner.set_nx(key, value, ttl).await)
    }
    async fn del_if_equals(&self, key: &str, value: &str) -> CacheResult<bool> {
        self.count(Op::DelIfEquals, self.inner.del_if_equals(key, value).await)
    }
    async fn del(&self, keys: &[String]) -> CacheResult<u64> {
        self.count(Op::Del, self.inner.del(keys).await)
    }
    async fn incr_by(&self, key: &str, by: i64) -> CacheResult<i64> {
        self.count(Op::IncrBy, self.inner.incr_by(key, by).await)
    }
    async fn raise_many(&self, counters: &[(String, i64)]) -> CacheResult<()> {
        self.count(Op::RaiseMany, self.inner.raise_many(counters).await)
    }
    async fn incr_with_ttl(&self, key: &str, ttl: Duration) -> CacheResult<i64> {
        self.count(Op::IncrWithTtl, self.inner.incr_with_ttl(key, ttl).await)
    }
    async fn sadd(&self, key: &str, member: &str) -> CacheResult<bool> {
        self.count(Op::Sadd, self.inner.sadd(key, member).await)
    }
    async fn smembers(&self, key: &str) -> CacheResult<Vec<String>> {
        self.count(Op::Smembers, self.inner.smembers(key).await)
    }
    async fn scan_prefix(&self, prefix: &str) -> CacheResult<Vec<String>> {
        self.count(Op::ScanPrefix, self.inner.scan_prefix(prefix).await)
    }
}

#[async_trait]
impl LruStore for Instrumented<dyn LruStore> {
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }
    async fn ping(&self) -> CacheResult<()> {
        self.count(Op::Ping, self.inner.ping().await)
    }
    async fn get(&self, owner: &str, key: &str) -> CacheResult<Option<String>> {
        self.count(Op::StorageGet, self.inner.get(owner, key).await)
    }
    async fn put(
        &self,
        owner: &str,
        entries: &[(String, String)],
        capacity: u64,
    ) -> CacheResult<u64> {
        self.count(
            Op::StoragePut,
            self.inner.put(owner, entries, capacity).await,
        )
    }
    async fn keys(&self, owner: &str) -> CacheResult<Vec<String>> {
        self.count(Op::StorageKeys, self.inner.keys(owner).await)
    }
    async fn forget(&self, owner: &str) -> CacheResult<()> {
        self.count(Op::StorageForget, self.inner.forget(owner).await)
    }
}

#[async_trait]
impl VersionedCache for Instrumented<dyn VersionedCache> {
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }
    async fn ping(&self) -> CacheResult<()> {
        self.count(Op::Ping, self.inner.ping().await)
    }
    async fn leased_get_many(
        &self,
        keys: &[String],
        lease: &str,
        lease_ttl: Duration,
    ) -> CacheResult<Vec<Option<Versioned>>> {
        self.count(
            Op::LeasedGetMany,
            self.inner.leased_get_many(keys, lease, lease_ttl).await,
        )
    }
    async fn entry_versions(&self, keys: &[String]) -> CacheResult<Vec<Option<i64>>> {
        self.count(Op::LeasedGetMany, self.inner.entry_versions(keys).await)
    }
    async fn entries(&self, keys: &[String]) -> CacheResult<Vec<Option<Versioned>>> {
        self.count(Op::LeasedGetMany, self.inner.entries(keys).await)
    }
    fn still_at_now(&self, reads: &[(String, i64)]) -> Option<bool> {
        // No round trip: nothing to count.
        self.inner.still_at_now(reads)
    }
    async fn leased_fill_many(
        &self,
        entries: &[(String, Versioned)],
        lease: &str,
        ttl: Duration,
    ) -> CacheResult<Vec<bool>> {
        self.count(
            Op::LeasedFillMany,
            self.inner.leased_fill_many(entries, lease, ttl).await,
        )
    }
    async fn begin_write(&self, keys: &[String], mark_ttl: Duration) -> CacheResult<()> {
        self.count(Op::BeginWrite, self.inner.begin_write(keys, mark_ttl).await)
    }
    async fn end_write(&self, writes: &[(String, WriteOutcome)], ttl: Duration) -> CacheResult<()> {
        self.count(Op::EndWrite, self.inner.end_write(writes, ttl).await)
    }
    async fn end_write_announced(
        &self,
        writes: &[(String, WriteOutcome)],
        ttl: Duration,
        announcement: &Announcement,
    ) -> CacheResult<bool> {
        self.count(
            Op::EndWrite,
            self.inner
                .end_write_announced(writes, ttl, announcement)
                .await,
        )
    }
    async fn invalidate(&self, keys: &[String]) -> CacheResult<()> {
        self.count(Op::Invalidate, self.inner.invalidate(keys).await)
    }
    async fn drop_written(&self, keys: &[String]) -> CacheResult<()> {
        self.count(Op::DropWritten, self.inner.drop_written(keys).await)
    }
}
