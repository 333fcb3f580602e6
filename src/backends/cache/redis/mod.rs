//! The Redis (or Redis Cluster) cache tier, through fred: one [`RedisCache`] serves both
//! [`KeyValue`] and [`VersionedCache`].
//!
//! Every method is one round trip: a single command, a Lua script (`lua/`, see [`scripts`]),
//! or — only where the keys of one call live in several cluster hash slots — one pipeline
//! that fred writes to every node involved at once. Key naming is in [`keys`], connections
//! and their failure behaviour in [`connection`].

pub mod connection;
pub mod keys;
pub mod scripts;

use std::time::Duration;

use async_trait::async_trait;
use fred::interfaces::{ClientLike, KeysInterface, SetsInterface, SortedSetsInterface};
use fred::prelude::{Expiration, SetOptions, Value};
use futures::TryStreamExt;

use self::connection::Connection;
use self::keys::Keys;
use self::scripts::Scripts;
use super::{CacheError, CacheResult, KeyValue, LruStore, Versioned, VersionedCache, WriteOutcome};
use crate::backends::redis_client::map_err;

/// `SCAN ... COUNT` hint.
const SCAN_PAGE: u32 = 500;

/// The Redis cache. See the module documentation.
pub struct RedisCache {
    conn: std::sync::Arc<Connection>,
    keys: Keys,
    scripts: Scripts,
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

#[async_trait]
impl KeyValue for RedisCache {
    fn kind(&self) -> &'static str {
        "redis"
    }

    async fn ping(&self) -> CacheResult<()> {
        self.conn
            .pool()
            .with_options(self.conn.options())
            .ping::<Value>(None)
            .await
            .map(drop)
            .map_err(map_err)
    }

    async fn get(&self, key: &str) -> CacheResult<Option<String>> {
        let v: Value = self
            .conn
            .pool()
            .with_options(self.conn.options())
            .get(self.keys.key(key))
            .await
            .map_err(map_err)?;
        opt_string(v)
    }

    async fn set(&self, key: &str, value: &str, ttl: Option<Duration>) -> CacheResult<()> {
        self.conn
            .pool()
            .with_options(self.conn.options())
            .set::<Value, _, _>(
                self.keys.key(key),
                value,
                ttl.map(|t| Expiration::PX(millis(t))),
                None,
                false,
            )
            .await
            .map(drop)
            .map_err(map_err)
    }

    async fn set_many(
        &self,
        entries: &[(String, String)],
        ttl: Option<Duration>,
    ) -> CacheResult<()> {
        // One pipeline of SETs: works unchanged on a cluster, where MSET would need every
        // key in one slot, and carries the expiry in the same command.
        let calls = entries
            .iter()
            .map(|(k, v)| {
                let mut args = vec![Value::from(self.keys.key(k)), Value::from(v.as_str())];
                if let Some(ttl) = ttl {
                    args.push("PX".into());
                    args.push(Value::Integer(millis(ttl)));
                }
                args
            })
            .collect();
        for reply in self.conn.send("SET", 0, calls).await {
            reply.map_err(map_err)?;
        }
        Ok(())
    }

    async fn set_nx(&self, key: &str, value: &str, ttl: Duration) -> CacheResult<bool> {
        let reply: Value = self
            .conn
            .pool()
            .with_options(self.conn.options())
            .set(
                self.keys.key(key),
                value,
                Some(Expiration::PX(millis(ttl))),
                Some(SetOptions::NX),
                false,
            )
            .await
            .map_err(map_err)?;
        Ok(!reply.is_null())
    }

    async fn del_if_equals(&self, key: &str, value: &str) -> CacheResult<bool> {
        let reply = self
            .conn
            .eval_one(
                &self.scripts.del_if_equals,
                vec![self.keys.key(key)],
                vec![value.into()],
            )
            .await?;
        Ok(integer(reply)? > 0)
    }

    async fn del(&self, keys: &[String]) -> CacheResult<u64> {
        let stored: Vec<String> = keys.iter().map(|k| self.keys.key(k)).collect();
        self.del_stored(&stored).await
    }

    async fn incr_by(&self, key: &str, by: i64) -> CacheResult<i64> {
        self.conn
            .pool()
            .with_options(self.conn.options())
            .incr_by(self.keys.key(key), by)
            .await
            .map_err(map_err)
    }

    async fn raise_many(&self, counters: &[(String, i64)]) -> CacheResult<()> {
        if counters.is_empty() {
            return Ok(());
        }
        let stored: Vec<String> = counters.iter().map(|(k, _)| self.keys.key(k)).collect();
        self.eval_grouped(&self.scripts.raise, &stored, |g| {
            let keys = g.iter().map(|&i| stored[i].clone()).collect();
            let args = g.iter().map(|&i| Value::Integer(counters[i].1)).collect();
            (keys, args)
        })
        .await
        .map(drop)
    }

    async fn incr_with_ttl(&self, key: &str, ttl: Duration) -> CacheResult<i64> {
        let reply = self
            .conn
            .eval_one(
                &self.scripts.incr_with_ttl,
                vec![self.keys.key(key)],
                vec![Value::Integer(millis(ttl))],
            )
            .await?;
        integer(reply)
    }

    async fn sadd(&self, key: &str, member: &str) -> CacheResult<bool> {
        let added: i64 = self
            .conn
            .pool()
            .with_options(self.conn.options())
            .sadd(self.keys.key(key), member)
            .await
            .map_err(map_err)?;
        Ok(added > 0)
    }

    async fn smembers(&self, key: &str) -> CacheResult<Vec<String>> {
        let mut members: Vec<String> = self
            .conn
            .pool()
            .with_options(self.conn.options())
            .smembers(self.keys.key(key))
            .await
            .map_err(map_err)?;
        members.sort();
        Ok(members)
    }

    async fn scan_prefix(&self, prefix: &str) -> CacheResult<Vec<String>> {
        let found = self.scan_stored(self.keys.scan_pattern(prefix)).await?;
        let mut out: Vec<String> = found
            .iter()
            .filter_map(|k| self.keys.unkey(k))
            .filter(|k| k.starts_with(prefix))
            .collect();
        out.sort();
        out.dedup();
        Ok(out)
    }
}

impl RedisCache {
    /// The stored names matching `pattern` (`SCAN MATCH`), each once.
    async fn scan_stored(&self, pattern: String) -> CacheResult<Vec<String>> {
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
    async fn del_stored(&self, stored: &[String]) -> CacheResult<u64> {
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

#[async_trait]
impl VersionedCache for RedisCache {
    fn kind(&self) -> &'static str {
        "redis"
    }

    async fn ping(&self) -> CacheResult<()> {
        KeyValue::ping(self).await
    }

    /// Hits are read with plain `MGET`s of entry and mark; only the keys that missed (absent,
    /// or a write in flight) go on to the lease script, which reads them again atomically
    /// with taking the lease. `cargo bench --bench redis_read` measured the plain read of a
    /// hit at ~0.75× the Redis CPU of the script, with the same client CPU and round trips;
    /// a miss costs one round trip more, and then the fill's.
    async fn leased_get_many(
        &self,
        keys: &[String],
        lease: &str,
        lease_ttl: Duration,
    ) -> CacheResult<Vec<Option<Versioned>>> {
        let mut out = vec![None; keys.len()];
        let mut missed = Vec::new();
        for (group, entries) in self.plain_get(keys).await? {
            for (i, e) in group.into_iter().zip(entries) {
                match e.as_deref().and_then(Versioned::decode) {
                    Some(hit) => out[i] = Some(hit),
                    None => missed.push(i),
                }
            }
        }
        if missed.is_empty() {
            return Ok(out);
        }
        let missed_keys: Vec<String> = missed.iter().map(|&i| keys[i].clone()).collect();
        let leased = self
            .leased_get_script(&missed_keys, lease, lease_ttl)
            .await?;
        for (i, entry) in missed.into_iter().zip(leased) {
            out[i] = entry;
        }
        Ok(out)
    }

    async fn entries(&self, keys: &[String]) -> CacheResult<Vec<Option<Versioned>>> {
        let mut out = vec![None; keys.len()];
        for (group, entries) in self.plain_get(keys).await? {
            for (i, e) in group.into_iter().zip(entries) {
                out[i] = e.as_deref().and_then(Versioned::decode);
            }
        }
        Ok(out)
    }

    async fn entry_versions(&self, keys: &[String]) -> CacheResult<Vec<Option<i64>>> {
        let mut out = vec![None; keys.len()];
        for (group, entries) in self.plain_get(keys).await? {
            for (i, e) in group.into_iter().zip(entries) {
                out[i] = e.and_then(|raw| Versioned::version_of(&raw));
            }
        }
        Ok(out)
    }

    async fn leased_fill_many(
        &self,
        entries: &[(String, Versioned)],
        lease: &str,
        ttl: Duration,
    ) -> CacheResult<Vec<bool>> {
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        let stored: Vec<String> = entries.iter().map(|(k, _)| self.keys.key(k)).collect();
        let replies = self
            .eval_grouped(&self.scripts.leased_fill, &stored, |g| {
                let mut keys = Vec::with_capacity(3 * g.len());
                let mut args = Vec::with_capacity(2 + 2 * g.len());
                args.push(Value::from(lease));
                args.push(Value::Integer(millis(ttl)));
                for &i in g {
                    let (key, entry) = &entries[i];
                    keys.extend([stored[i].clone(), self.keys.mark(key), self.keys.lease(key)]);
                    args.push(Value::Integer(entry.version));
                    args.push(Value::from(entry.encode()));
                }
                (keys, args)
            })
            .await?;
        let mut out = vec![false; entries.len()];
        for (group, reply) in replies {
            for (&i, stored) in group.iter().zip(flags(reply, group.len())?) {
                out[i] = stored;
            }
        }
        Ok(out)
    }

    async fn begin_write(&self, keys: &[String], mark_ttl: Duration) -> CacheResult<()> {
        if keys.is_empty() {
            return Ok(());
        }
        let marks: Vec<String> = keys.iter().map(|k| self.keys.mark(k)).collect();
        self.eval_grouped(&self.scripts.begin_write, &marks, |g| {
            let keys = g
                .iter()
                .flat_map(|&i| [marks[i].clone(), self.keys.lease(&keys[i])])
                .collect();
            (keys, vec![Value::Integer(millis(mark_ttl))])
        })
        .await
        .map(drop)
    }

    async fn end_write(&self, writes: &[(String, WriteOutcome)], ttl: Duration) -> CacheResult<()> {
        if writes.is_empty() {
            return Ok(());
        }
        let stored: Vec<String> = writes.iter().map(|(k, _)| self.keys.key(k)).collect();
        self.eval_grouped(&self.scripts.end_write, &stored, |g| {
            let mut keys = Vec::with_capacity(2 * g.len());
            let mut args = Vec::with_capacity(1 + 3 * g.len());
            args.push(Value::Integer(millis(ttl)));
            for &i in g {
                let (key, outcome) = &writes[i];
                keys.extend([stored[i].clone(), self.keys.mark(key)]);
                match outcome {
                    WriteOutcome::Committed(entry) => {
                        args.push("c".into());
                        args.push(Value::Integer(entry.version));
                        args.push(Value::from(entry.encode()));
                    }
                    WriteOutcome::Aborted => {
                        args.push("a".into());
                        args.push(Value::Integer(0));
                        args.push("".into());
                    }
                }
            }
            (keys, args)
        })
        .await
        .map(drop)
    }

    async fn invalidate(&self, keys: &[String]) -> CacheResult<()> {
        KeyValue::del(self, keys).await.map(drop)
    }

    async fn drop_written(&self, keys: &[String]) -> CacheResult<()> {
        if keys.is_empty() {
            return Ok(());
        }
        let stored: Vec<String> = keys.iter().map(|k| self.keys.key(k)).collect();
        self.eval_grouped(&self.scripts.drop_written, &stored, |g| {
            let keys = g
                .iter()
                .flat_map(|&i| [stored[i].clone(), self.keys.mark(&keys[i])])
                .collect();
            (keys, Vec::new())
        })
        .await
        .map(drop)
    }
}
