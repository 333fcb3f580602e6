//! The Redis (or Redis Cluster) cache tier, through fred: one [`RedisCache`] serves both
//! [`KeyValue`] and [`VersionedCache`].
//!
//! Every method is one round trip: a single command, a Lua script (`lua/`, see [`scripts`]),
//! or — only where the keys of one call live in several cluster hash slots — one pipeline
//! that fred writes to every node involved at once. Key naming is in [`keys`], connections
//! and their failure behaviour in [`connection`]. The three traits are implemented one file
//! each, as in `memory/`: `kv.rs`, `storage.rs` (the LRU key-value storage) and `versioned.rs`
//! (the write-through entries).

pub mod connection;
pub mod keys;
mod kv;
pub mod scripts;
mod storage;
mod versioned;

use std::time::Duration;

use fred::prelude::Value;

use self::connection::Connection;
use self::keys::Keys;
use self::scripts::Scripts;
use super::{CacheError, CacheResult, Versioned};

/// `SCAN ... COUNT` hint.
const SCAN_PAGE: u32 = 500;

/// The Redis cache. See the module documentation.
pub struct RedisCache {
    conn: std::sync::Arc<Connection>,
    keys: Keys,
    scripts: Scripts,
    /// Replicas a write mark must reach before the write commits (0: not waited for).
    replicas: u32,
}

impl std::fmt::Debug for RedisCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisCache")
            .field("keys", &self.keys)
            .finish_non_exhaustive()
    }
}

impl RedisCache {
    /// Connects to `url` (`redis://`, or `redis-cluster://` for a cluster), with every key
    /// under `prefix`, and loads the Lua scripts. Fails when the server cannot be reached now;
    /// once connected, the pool reconnects by itself.
    pub async fn connect(
        url: &str,
        prefix: &str,
        command_timeout: Duration,
    ) -> CacheResult<RedisCache> {
        Self::connect_replicated(url, prefix, command_timeout, 0).await
    }

    /// [`RedisCache::connect`], with write marks confirmed by `replicas` replicas of their
    /// primary (`WAIT`) before a write may commit: a failover then never promotes a replica
    /// that lacks a mark, so no replica can serve the entry from before the write.
    pub async fn connect_replicated(
        url: &str,
        prefix: &str,
        command_timeout: Duration,
        replicas: u32,
    ) -> CacheResult<RedisCache> {
        let conn = Connection::connect(url, command_timeout).await?;
        let scripts = match Scripts::load(&conn).await {
            Ok(s) => s,
            Err(e) => {
                conn.quit().await;
                return Err(e);
            }
        };
        let keys = Keys::new(prefix, conn.is_clustered());
        Ok(RedisCache {
            conn: std::sync::Arc::new(conn),
            keys,
            scripts,
            replicas,
        })
    }

    /// Whether the server is a Redis Cluster.
    pub fn is_clustered(&self) -> bool {
        self.keys.clustered()
    }

    /// The cache's connections, for what shares them (the near cache's bus: it is then
    /// connected whenever the cache is).
    pub fn connection(&self) -> std::sync::Arc<Connection> {
        self.conn.clone()
    }

    /// Closes the connections. Dropping the cache does the same in the background.
    pub async fn quit(&self) {
        self.conn.quit().await;
    }

    /// Runs `script` over `items`, one call per cluster slot group (one on a single server),
    /// and returns one reply per group with the group's item indices. `call` builds a group's
    /// keys and arguments.
    async fn eval_grouped(
        &self,
        script: &scripts::Script,
        stored: &[String],
        call: impl Fn(&[usize]) -> (Vec<String>, Vec<Value>),
    ) -> CacheResult<Vec<(Vec<usize>, Value)>> {
        let groups = self.keys.groups(stored);
        let calls = groups.iter().map(|g| call(g)).collect();
        let replies = self.conn.eval(script, calls).await?;
        Ok(groups.into_iter().zip(replies).collect())
    }

    /// [`RedisCache::eval_grouped`] with each group's writes confirmed by `replicas`
    /// replicas ([`Connection::eval_replicated`]); whether they all were.
    async fn eval_grouped_replicated(
        &self,
        script: &scripts::Script,
        stored: &[String],
        call: impl Fn(&[usize]) -> (Vec<String>, Vec<Value>),
        replicas: u32,
    ) -> CacheResult<bool> {
        let groups = self.keys.groups(stored);
        let calls = groups.iter().map(|g| call(g)).collect();
        let (_, replicated) = self.conn.eval_replicated(script, calls, replicas).await?;
        Ok(replicated)
    }
}

impl RedisCache {
    /// The lease script over `keys`: each entry, or on an unmarked miss the lease.
    async fn leased_get_script(
        &self,
        keys: &[String],
        lease: &str,
        lease_ttl: Duration,
    ) -> CacheResult<Vec<Option<Versioned>>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let stored: Vec<String> = keys.iter().map(|k| self.keys.key(k)).collect();
        let replies = self
            .eval_grouped(&self.scripts.leased_get, &stored, |g| {
                let keys = g
                    .iter()
                    .flat_map(|&i| {
                        [
                            stored[i].clone(),
                            self.keys.mark(&keys[i]),
                            self.keys.lease(&keys[i]),
                        ]
                    })
                    .collect();
                let args = vec![Value::from(lease), Value::Integer(millis(lease_ttl))];
                (keys, args)
            })
            .await?;
        let mut out = vec![None; keys.len()];
        for (group, reply) in replies {
            let values = opt_strings(reply, group.len())?;
            for (&i, v) in group.iter().zip(values) {
                out[i] = v.as_deref().and_then(Versioned::decode);
            }
        }
        Ok(out)
    }

    /// Reads entries and their marks with plain `MGET`s (one per hash slot, in one round
    /// trip): per group of key indexes, each entry, or `None` when it is missing or a write
    /// is in flight on it.
    async fn plain_get(
        &self,
        keys: &[String],
    ) -> CacheResult<Vec<(Vec<usize>, Vec<Option<String>>)>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let stored: Vec<String> = keys.iter().map(|k| self.keys.key(k)).collect();
        let groups = self.keys.groups(&stored);
        let calls = groups
            .iter()
            .map(|g| {
                g.iter()
                    .flat_map(|&i| {
                        [
                            Value::from(stored[i].as_str()),
                            Value::from(self.keys.mark(&keys[i])),
                        ]
                    })
                    .collect()
            })
            .collect();
        let replies = self.conn.send("MGET", 0, calls).await;
        let mut out = Vec::with_capacity(groups.len());
        for (group, reply) in groups.into_iter().zip(replies) {
            let values = opt_strings(
                reply.map_err(crate::backends::redis_client::map_err)?,
                group.len() * 2,
            )?;
            let entries = values
                .chunks(2)
                .map(|pair| {
                    let marked = pair[1]
                        .as_deref()
                        .and_then(|m| m.parse::<i64>().ok())
                        .is_some_and(|m| m > 0);
                    if marked {
                        None
                    } else {
                        pair[0].clone()
                    }
                })
                .collect();
            out.push((group, entries));
        }
        Ok(out)
    }
}

/// Milliseconds for `PX`/`PEXPIRE`, at least 1 (Redis refuses 0).
fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX).max(1)
}

/// A reply value as an optional string.
fn opt_string(v: Value) -> CacheResult<Option<String>> {
    match v {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(s.to_string())),
        Value::Bytes(b) => String::from_utf8(b.to_vec())
            .map(Some)
            .map_err(|e| CacheError::Protocol(Box::new(e))),
        Value::Integer(i) => Ok(Some(i.to_string())),
        Value::Double(f) => Ok(Some(f.to_string())),
        other => Err(CacheError::protocol(format!(
            "unexpected reply type {:?}",
            other.kind()
        ))),
    }
}

/// An array reply of `n` optional strings.
fn opt_strings(v: Value, n: usize) -> CacheResult<Vec<Option<String>>> {
    match v {
        Value::Array(items) if items.len() == n => items.into_iter().map(opt_string).collect(),
        other => Err(CacheError::protocol(format!(
            "expected an array of {n}, got {:?}",
            other.kind()
        ))),
    }
}

/// An array reply of `n` flags (1 or 0).
fn flags(v: Value, n: usize) -> CacheResult<Vec<bool>> {
    match v {
        Value::Array(items) if items.len() == n => {
            items.into_iter().map(|f| Ok(integer(f)? == 1)).collect()
        }
        other => Err(CacheError::protocol(format!(
            "expected {n} flags, got {:?}",
            other.kind()
        ))),
    }
}

fn integer(v: Value) -> CacheResult<i64> {
    v.as_i64()
        .ok_or_else(|| CacheError::protocol(format!("expected an integer, got {:?}", v.kind())))
}
