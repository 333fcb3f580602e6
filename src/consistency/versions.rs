//! The memo's version check: a memoized response is served again only while every cache
//! entry it was computed from still holds the version it read.

use std::collections::HashMap;
use std::sync::Arc;

use async_graphql::dataloader::Loader;

use super::batch::BatchLoader;
use crate::backends::cache::VersionedCache;

/// Reads the versions that memoized responses depend on. The checks of every request polled
/// in the same pass of the runtime go to the cache tier as one call (on Redis, one `MGET` per
/// hash slot), so under load one round trip vouches for many responses. A check still reads
/// the cache tier after its request began: a write acknowledged before then is seen.
pub struct Versions {
    cache: Arc<dyn VersionedCache>,
    batch: BatchLoader<String, CurrentVersions>,
}

/// The loader behind [`Versions`].
pub struct CurrentVersions(Arc<dyn VersionedCache>);

impl Loader<String> for CurrentVersions {
    type Value = i64;
    /// The cache tier could not be read (the error is counted and logged by the cache).
    type Error = ();

    async fn load(&self, keys: &[String]) -> Result<HashMap<String, i64>, ()> {
        let now = self.0.entry_versions(keys).await.map_err(|_| ())?;
        Ok(keys
            .iter()
            .zip(now)
            .filter_map(|(k, v)| Some((k.clone(), v?)))
            .collect())
    }
}

impl Versions {
    /// Checks over `cache`.
    pub fn new(cache: Arc<dyn VersionedCache>) -> Self {
        Self {
            batch: BatchLoader::new(CurrentVersions(cache.clone())),
            cache,
        }
    }

    /// Whether every entry still holds the version read; `Err` when the cache tier could not
    /// be read. No call at all when there are no entries.
    pub async fn current(&self, reads: &[(String, i64)]) -> Result<bool, ()> {
        if reads.is_empty() {
            return Ok(true);
        }
        // In process (the embedded cache, or a near cache under its lease): as of now, no
        // round trip to share.
        if let Some(current) = self.cache.still_at_now(reads) {
            return Ok(current);
        }
        let keys = reads.iter().map(|(k, _)| k.clone());
        let now = self.batch.load_many(keys).await?;
        Ok(reads.iter().all(|(k, then)| now.get(k) == Some(then)))
    }
}
