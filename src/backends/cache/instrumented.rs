//! Wraps any [`Cache`] to count round trips and failures in the instance's metrics.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::{Cache, CacheResult, Versioned, WriteOutcome};
use crate::metrics::Metrics;

/// A cache that counts every call as one round trip.
pub struct InstrumentedCache {
    inner: Arc<dyn Cache>,
    metrics: Metrics,
}

impl InstrumentedCache {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn Cache>, metrics: Metrics) -> Self {
        Self { inner, metrics }
    }

    fn count<T>(&self, op: &str, r: CacheResult<T>) -> CacheResult<T> {
        self.metrics
            .cache_round_trips
            .with_label_values(&[op])
            .inc();
        if let Err(e) = &r {
            self.metrics.cache_errors.inc();
            tracing::warn!(error = %e, "cache call failed");
        }
        r
    }
}

#[async_trait]
impl Cache for InstrumentedCache {
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }
    async fn ping(&self) -> CacheResult<()> {
        self.count("ping", self.inner.ping().await)
    }
    async fn get(&self, key: &str) -> CacheResult<Option<String>> {
        self.count("get", self.inner.get(key).await)
    }
    async fn mget(&self, keys: &[String]) -> CacheResult<Vec<Option<String>>> {
        self.count("mget", self.inner.mget(keys).await)
    }
    async fn set(&self, key: &str, value: &str, ttl: Option<Duration>) -> CacheResult<()> {
        self.count("set", self.inner.set(key, value, ttl).await)
    }
    async fn set_many(
        &self,
        entries: &[(String, String)],
        ttl: Option<Duration>,
    ) -> CacheResult<()> {
        self.count("set_many", self.inner.set_many(entries, ttl).await)
    }
    async fn set_nx(&self, key: &str, value: &str, ttl: Duration) -> CacheResult<bool> {
        self.count("set_nx", self.inner.set_nx(key, value, ttl).await)
    }
    async fn del_if_equals(&self, key: &str, value: &str) -> CacheResult<bool> {
        self.count("del_if_equals", self.inner.del_if_equals(key, value).await)
    }
    async fn del(&self, keys: &[String]) -> CacheResult<u64> {
        self.count("del", self.inner.del(keys).await)
    }
    async fn incr_by(&self, key: &str, by: i64) -> CacheResult<i64> {
        self.count("incr_by", self.inner.incr_by(key, by).await)
    }
    async fn incr_with_ttl(&self, key: &str, ttl: Duration) -> CacheResult<i64> {
        self.count("incr_with_ttl", self.inner.incr_with_ttl(key, ttl).await)
    }
    async fn sadd(&self, key: &str, member: &str) -> CacheResult<bool> {
        self.count("sadd", self.inner.sadd(key, member).await)
    }
    async fn smembers(&self, key: &str) -> CacheResult<Vec<String>> {
        self.count("smembers", self.inner.smembers(key).await)
    }
    async fn scan_prefix(&self, prefix: &str) -> CacheResult<Vec<String>> {
        self.count("scan_prefix", self.inner.scan_prefix(prefix).await)
    }
    async fn versioned_get_many(&self, keys: &[String]) -> CacheResult<Vec<Option<Versioned>>> {
        self.count(
            "versioned_get_many",
            self.inner.versioned_get_many(keys).await,
        )
    }
    async fn versioned_fill(
        &self,
        key: &str,
        entry: &Versioned,
        ttl: Duration,
    ) -> CacheResult<bool> {
        self.count(
            "versioned_fill",
            self.inner.versioned_fill(key, entry, ttl).await,
        )
    }
    async fn versioned_fill_many(
        &self,
        entries: &[(String, Versioned)],
        ttl: Duration,
    ) -> CacheResult<Vec<bool>> {
        self.count(
            "versioned_fill_many",
            self.inner.versioned_fill_many(entries, ttl).await,
        )
    }
    async fn leased_get_many(
        &self,
        keys: &[String],
        lease: &str,
        lease_ttl: Duration,
    ) -> CacheResult<Vec<Option<Versioned>>> {
        self.count(
            "leased_get_many",
            self.inner.leased_get_many(keys, lease, lease_ttl).await,
        )
    }
    async fn leased_fill_many(
        &self,
        entries: &[(String, Versioned)],
        lease: &str,
        ttl: Duration,
    ) -> CacheResult<Vec<bool>> {
        self.count(
            "leased_fill_many",
            self.inner.leased_fill_many(entries, lease, ttl).await,
        )
    }
    async fn begin_write(&self, keys: &[String], mark_ttl: Duration) -> CacheResult<()> {
        self.count("begin_write", self.inner.begin_write(keys, mark_ttl).await)
    }
    async fn end_write(&self, writes: &[(String, WriteOutcome)], ttl: Duration) -> CacheResult<()> {
        self.count("end_write", self.inner.end_write(writes, ttl).await)
    }
}
