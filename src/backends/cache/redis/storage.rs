//! [`LruStore`] on Redis: the key-value storage of each owner, as a sorted set of recency
//! beside the values, bounded by the capacity each call names.

use async_trait::async_trait;
use fred::interfaces::{ClientLike, SortedSetsInterface};
use fred::prelude::Value;
use futures::TryStreamExt;

use super::{integer, opt_string, RedisCache, SCAN_PAGE};
use crate::backends::cache::{CacheError, CacheResult, KeyValue, LruStore};
use crate::backends::redis_client::map_err;

impl RedisCache {
    /// The stored names matching `pattern` (`SCAN MATCH`), each once.
    pub(super) async fn scan_stored(&self, pattern: String) -> CacheResult<Vec<String>> {
        let client = self.conn.pool().next_connected();
        // fred's scanning streams take no per-command options, and while the server is away
        // they wait for a reconnection: each page gets the command timeout here instead.
        let mut pages: std::pin::Pin<Box<dyn futures::Stream<Item = _> + Send>> =
            if self.keys.clustered() {
                Box::pin(client.scan_cluster_buffered(pattern, Some(SCAN_PAGE), None))
            } else {
                Box::pin(client.scan_buffered(pattern, Some(SCAN_PAGE), None))
            };
        let mut found: Vec<String> = Vec::new();
        loop {
            let next = match self.conn.options().timeout {
                Some(t) => tokio::time::timeout(t, pages.try_next())
                    .await
                    .map_err(|e| CacheError::Unavailable(Box::new(e)))?,
                None => pages.try_next().await,
            };
            match next.map_err(map_err)? {
                Some(key) => {
                    if let Some(k) = key.as_str() {
                        found.push(k.to_owned());
                    }
                }
                None => break,
            }
        }
        // SCAN may return a key more than once.
        found.sort();
        found.dedup();
        Ok(found)
    }

    /// DEL of stored names, one call per cluster slot group, in one round trip.
    pub(super) async fn del_stored(&self, stored: &[String]) -> CacheResult<u64> {
        if stored.is_empty() {
            return Ok(0);
        }
        let calls = self
            .keys
            .groups(stored)
            .iter()
            .map(|g| g.iter().map(|&i| Value::from(stored[i].as_str())).collect())
            .collect();
        let mut n = 0;
        for reply in self.conn.send("DEL", 0, calls).await {
            n += u64::try_from(integer(reply.map_err(map_err)?)?).unwrap_or(0);
        }
        Ok(n)
    }
}

#[async_trait]
impl LruStore for RedisCache {
    fn kind(&self) -> &'static str {
        "redis"
    }

    async fn ping(&self) -> CacheResult<()> {
        KeyValue::ping(self).await
    }

    async fn get(&self, owner: &str, key: &str) -> CacheResult<Option<String>> {
        let value = format!("{}{key}", self.keys.owned_prefix(owner));
        let reply = self
            .conn
            .eval_one(
                &self.scripts.storage_get,
                vec![self.keys.owner_index(owner), value],
                vec![key.into()],
            )
            .await?;
        opt_string(reply)
    }

    async fn put(
        &self,
        owner: &str,
        entries: &[(String, String)],
        capacity: u64,
    ) -> CacheResult<u64> {
        let mut args = Vec::with_capacity(2 + 2 * entries.len());
        args.push(Value::from(self.keys.owned_prefix(owner)));
        args.push(Value::Integer(i64::try_from(capacity).unwrap_or(i64::MAX)));
        for (k, v) in entries {
            args.push(Value::from(k.as_str()));
            args.push(Value::from(v.as_str()));
        }
        let reply = self
            .conn
            .eval_one(
                &self.scripts.storage_put,
                vec![self.keys.owner_index(owner)],
                args,
            )
            .await?;
        Ok(u64::try_from(integer(reply)?).unwrap_or(0))
    }

    async fn keys(&self, owner: &str) -> CacheResult<Vec<String>> {
        self.conn
            .pool()
            .with_options(self.conn.options())
            .zrange(
                self.keys.owner_index(owner),
                0,
                -1,
                None,
                false,
                None,
                false,
            )
            .await
            .map_err(map_err)
    }

    async fn forget(&self, owner: &str) -> CacheResult<()> {
        // Every value the index names, and any it lost track of (an allkeys-lru server may
        // have evicted the index before the values), then the index.
        let prefix = self.keys.owned_prefix(owner);
        let mut stored: Vec<String> = LruStore::keys(self, owner)
            .await?
            .into_iter()
            .map(|k| format!("{prefix}{k}"))
            .collect();
        let pattern = format!("{}*", crate::backends::redis_client::glob_escape(&prefix));
        stored.extend(self.scan_stored(pattern).await?);
        stored.sort();
        stored.dedup();
        for part in stored.chunks(500) {
            self.del_stored(part).await?;
        }
        self.del_stored(&[self.keys.owner_index(owner)]).await?;
        Ok(())
    }
}
