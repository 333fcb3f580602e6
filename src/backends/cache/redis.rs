//! The Redis (or Redis Cluster) cache tier, through fred.
//!
//! Every [`Cache`] method is one round trip: a single command, a Lua script, or — only where
//! the keys of one call live in several cluster hash slots — one pipeline that fred writes to
//! every node involved at once.
//!
//! Key layout. Every key gets the instance prefix. On a single server the key `K` is stored as
//! `<prefix>K` and its in-flight-write mark as `<prefix>K:w`. On a cluster the key is wrapped
//! in a hash tag, `<prefix>{K}` and `<prefix>{K}:w`, so that an entry and its mark always share
//! a hash slot and one script can touch both atomically.
//!
//! Failure behaviour. While Redis is unreachable every command fails at once (per-command
//! `fail_fast`), and a command that was sent but gets no answer fails after the command
//! timeout; callers then go to the database. A command that was in flight when a connection
//! dropped is answered with an error, never replayed, so a non-idempotent script (`INCR` of a
//! mark, `DECR` in `end_write`) never runs twice. The clients reconnect in the background with
//! an exponential backoff capped at two seconds.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use fred::clients::Pool;
use fred::error::{Error as FredError, ErrorKind};
use fred::interfaces::{ClientLike, KeysInterface, LuaInterface, SetsInterface};
use fred::prelude::{Builder, Config, Expiration, Options, ReconnectPolicy, SetOptions, Value};
use fred::types::config::{TcpConfig, UnresponsiveConfig};
use fred::types::{ClusterHash, CustomCommand};
use futures::TryStreamExt;

use super::{Cache, CacheError, CacheResult, Versioned, WriteOutcome};

/// Connections per instance. fred multiplexes concurrent commands on each connection, so a
/// single client would already serve many requests; a small pool spreads encoding, decoding and
/// socket I/O over several router tasks on the multi-threaded runtime and keeps one large reply
/// (a `SCAN` page, a big value) from delaying every other request behind it.
const POOL_SIZE: usize = 4;

/// Timeout of a TCP (and TLS) connect and of the internal commands run on connect (`AUTH`,
/// `SELECT`, `CLUSTER SLOTS`).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Reconnect backoff: 100 ms doubling up to this cap, never giving up.
const RECONNECT_MIN_DELAY_MS: u32 = 100;
const RECONNECT_MAX_DELAY_MS: u32 = 2_000;

/// `SCAN ... COUNT` hint.
const SCAN_PAGE: u32 = 500;

/// The fred builder shared by the cache and the event bus: URL parsing (including
/// `redis-cluster://`), reconnect policy, timeouts.
///
/// `command_timeout` becomes fred's default command timeout (zero disables it, as in fred).
/// A dead-but-open connection (no answer for twice the command timeout, at least a second) is
/// closed and reconnected.
pub(crate) fn builder(url: &str, command_timeout: Duration) -> Result<Builder, FredError> {
    let config = Config::from_url(url)?;
    let mut builder = Builder::from_config(config);
    let unresponsive = if command_timeout.is_zero() {
        UnresponsiveConfig::default()
    } else {
        let max_timeout = (command_timeout * 2).max(Duration::from_secs(1));
        UnresponsiveConfig {
            max_timeout: Some(max_timeout),
            interval: (max_timeout / 4).clamp(Duration::from_millis(100), Duration::from_secs(2)),
        }
    };
    builder
        .with_config(|config| {
            // Report a failed *first* connection to the caller instead of retrying forever.
            config.fail_fast = true;
        })
        .with_performance_config(|perf| {
            perf.default_command_timeout = command_timeout;
        })
        .with_connection_config(|conn| {
            conn.connection_timeout = CONNECT_TIMEOUT;
            conn.internal_command_timeout = CONNECT_TIMEOUT;
            // Room for a MOVED/ASK redirection on a cluster. Replays after a dropped
            // connection are ruled out by the per-command `fail_fast` option, not by this.
            conn.max_command_attempts = 3;
            conn.unresponsive = unresponsive;
            conn.tcp = TcpConfig {
                nodelay: Some(true),
                ..TcpConfig::default()
            };
        })
        .set_policy(ReconnectPolicy::new_exponential(
            0, // unlimited attempts
            RECONNECT_MIN_DELAY_MS,
            RECONNECT_MAX_DELAY_MS,
            2,
        ));
    Ok(builder)
}

/// Per-command options of every cache command: fail at once while disconnected, and give up
/// after `command_timeout`.
pub(crate) fn command_options(command_timeout: Duration) -> Options {
    Options {
        fail_fast: true,
        timeout: (!command_timeout.is_zero()).then_some(command_timeout),
        ..Options::default()
    }
}

/// Maps a fred error: the server being away or slow is [`CacheError::Unavailable`], anything
/// else (a wrong type, a script error, a bad reply) is [`CacheError::Protocol`].
pub(crate) fn map_err(e: FredError) -> CacheError {
    let unavailable = matches!(
        e.kind(),
        ErrorKind::IO
            | ErrorKind::Timeout
            | ErrorKind::Canceled
            | ErrorKind::Backpressure
            | ErrorKind::Routing
            | ErrorKind::Cluster
    ) || [
        "LOADING",
        "MASTERDOWN",
        "TRYAGAIN",
        "CLUSTERDOWN",
        "READONLY",
        "BUSY",
    ]
    .iter()
    .any(|code| e.details().starts_with(code));
    if unavailable {
        CacheError::Unavailable(e.to_string())
    } else {
        CacheError::Protocol(e.to_string())
    }
}

/// Readers' fills: each entry is stored (`SET key payload PX ttl`) unless its key has a write
/// in flight or holds a version at least as new. KEYS: entry1, mark1, entry2, mark2, …
/// ARGV: ttl (ms), then per key: version, encoded entry. Returns 1 (stored) or 0 per key.
const FILL: &str = r"
local ttl = ARGV[1]
local out = {}
for i = 1, #KEYS / 2 do
  local key, mark = KEYS[2 * i - 1], KEYS[2 * i]
  local version, encoded = tonumber(ARGV[2 * i]), ARGV[2 * i + 1]
  local stored = 0
  local m = tonumber(redis.call('GET', mark))
  if not (m and m > 0) then
    local newer = false
    local cur = redis.call('GET', key)
    if cur then
      local sep = string.find(cur, '|', 1, true)
      if sep then
        local v = tonumber(string.sub(cur, 1, sep - 1))
        if v and v >= version then newer = true end
      end
    end
    if not newer then
      redis.call('SET', key, encoded, 'PX', ttl)
      stored = 1
    end
  end
  out[i] = stored
end
return out
";

/// Marks keys as being written and revokes their readers' leases.
/// KEYS: mark1, lease1, mark2, lease2, … ARGV: mark ttl (ms).
const BEGIN_WRITE: &str = r"
for i = 1, #KEYS / 2 do
  redis.call('INCR', KEYS[2 * i - 1])
  redis.call('PEXPIRE', KEYS[2 * i - 1], ARGV[1])
  redis.call('DEL', KEYS[2 * i])
end
return #KEYS / 2
";

/// Reads entries; every unmarked miss gets the caller's lease.
/// KEYS: entry1, mark1, lease1, entry2, … ARGV: lease, lease ttl (ms).
/// Returns per key the entry, or false (nil) for a miss or a marked key.
const LEASED_GET: &str = r"
local out = {}
for i = 1, #KEYS / 3 do
  local key, mark, lease = KEYS[3 * i - 2], KEYS[3 * i - 1], KEYS[3 * i]
  local m = tonumber(redis.call('GET', mark))
  if m and m > 0 then
    out[i] = false
  else
    local cur = redis.call('GET', key)
    if cur then
      out[i] = cur
    else
      redis.call('SET', lease, ARGV[1], 'PX', ARGV[2])
      out[i] = false
    end
  end
end
return out
";

/// Fills after a leased miss: stored only while the lease is the caller's, no write is in
/// flight and no version as new is present; the leases are released (after the SETs).
/// KEYS: entry1, mark1, lease1, … ARGV: lease, ttl (ms), then per key: version, encoded.
const LEASED_FILL: &str = r"
local out = {}
local release = {}
for i = 1, #KEYS / 3 do
  local key, mark, lease = KEYS[3 * i - 2], KEYS[3 * i - 1], KEYS[3 * i]
  local version, encoded = tonumber(ARGV[2 * i + 1]), ARGV[2 * i + 2]
  local stored = 0
  if redis.call('GET', lease) == ARGV[1] then
    release[#release + 1] = lease
    local m = tonumber(redis.call('GET', mark))
    if not (m and m > 0) then
      local newer = false
      local cur = redis.call('GET', key)
      if cur then
        local sep = string.find(cur, '|', 1, true)
        if sep then
          local v = tonumber(string.sub(cur, 1, sep - 1))
          if v and v >= version then newer = true end
        end
      end
      if not newer then
        redis.call('SET', key, encoded, 'PX', ARGV[2])
        stored = 1
      end
    end
  end
  out[i] = stored
end
-- The leases are released after every SET: on a full server (noeviction) the first SET is
-- then the script's first write and is refused; a DEL first would let the SETs through.
for _, lease in ipairs(release) do
  redis.call('DEL', lease)
end
return out
";

/// Clears marks and stores committed entries unless a version at least as new is there.
/// KEYS: entry1, mark1, entry2, mark2, … ARGV: ttl (ms), then per key: mode (`c` committed,
/// `a` aborted), version, encoded entry.
const END_WRITE: &str = r"
local ttl = ARGV[1]
for i = 1, #KEYS / 2 do
  local key, mark = KEYS[2 * i - 1], KEYS[2 * i]
  local a = 2 + 3 * (i - 1)
  if redis.call('DECR', mark) <= 0 then redis.call('DEL', mark) end
  if ARGV[a] == 'c' then
    local store = true
    local cur = redis.call('GET', key)
    if cur then
      local sep = string.find(cur, '|', 1, true)
      if sep then
        local v = tonumber(string.sub(cur, 1, sep - 1))
        if v and v >= tonumber(ARGV[a + 1]) then store = false end
      end
    end
    if store then redis.call('SET', key, ARGV[a + 2], 'PX', ttl) end
  end
end
return 1
";

/// `INCR`, setting the expiry when the key is new (or has somehow lost it).
/// KEYS: counter. ARGV: ttl (ms).
const INCR_WITH_TTL: &str = r"
local n = redis.call('INCR', KEYS[1])
if n == 1 or redis.call('PTTL', KEYS[1]) == -1 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
end
return n
";

/// Compare-and-delete. KEYS: key. ARGV: expected value.
const DEL_IF_EQUALS: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

/// A Lua script and its SHA1, as reported by `SCRIPT LOAD` at connect.
struct Script {
    body: &'static str,
    sha: String,
}

struct Scripts {
    fill: Script,
    leased_get: Script,
    leased_fill: Script,
    begin_write: Script,
    end_write: Script,
    incr_with_ttl: Script,
    del_if_equals: Script,
}

/// The Redis cache. See the module documentation for the key layout and failure behaviour.
pub struct RedisCache {
    pool: Pool,
    options: Options,
    prefix: String,
    clustered: bool,
    scripts: Scripts,
}

impl std::fmt::Debug for RedisCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisCache")
            .field("prefix", &self.prefix)
            .field("clustered", &self.clustered)
            .finish_non_exhaustive()
    }
}

impl RedisCache {
    /// Connects a pool of four connections to `url` (`redis://`, or
    /// `redis-cluster://` for a cluster) and loads the Lua scripts. Fails when the server
    /// cannot be reached now; once connected, the pool reconnects by itself.
    pub async fn connect(
        url: &str,
        prefix: &str,
        command_timeout: Duration,
    ) -> Result<RedisCache, CacheError> {
        let builder = builder(url, command_timeout)
            .map_err(|e| CacheError::Protocol(format!("invalid Redis URL: {}", e.details())))?;
        let pool = builder.build_pool(POOL_SIZE).map_err(map_err)?;
        if let Err(e) = pool.init().await {
            // Some of the pool's clients may have connected: close them.
            let _ = pool.quit().await;
            return Err(map_err(e));
        }
        let clustered = pool.is_clustered();

        let load = |body: &'static str| {
            let pool = pool.clone();
            async move {
                let sha: String = pool.script_load(body).await.map_err(map_err)?;
                Ok::<_, CacheError>(Script { body, sha })
            }
        };
        let leased = futures::try_join!(load(LEASED_GET), load(LEASED_FILL));
        let (leased_get, leased_fill) = match leased {
            Ok(scripts) => scripts,
            Err(e) => {
                let _ = pool.quit().await;
                return Err(e);
            }
        };
        let loaded = futures::try_join!(
            load(FILL),
            load(BEGIN_WRITE),
            load(END_WRITE),
            load(INCR_WITH_TTL),
            load(DEL_IF_EQUALS),
        );
        let (fill, begin_write, end_write, incr_with_ttl, del_if_equals) = match loaded {
            Ok(scripts) => scripts,
            Err(e) => {
                let _ = pool.quit().await;
                return Err(e);
            }
        };

        Ok(RedisCache {
            pool,
            options: command_options(command_timeout),
            prefix: prefix.to_owned(),
            clustered,
            scripts: Scripts {
                fill,
                leased_get,
                leased_fill,
                begin_write,
                end_write,
                incr_with_ttl,
                del_if_equals,
            },
        })
    }

    /// Whether the server is a Redis Cluster.
    pub fn is_clustered(&self) -> bool {
        self.clustered
    }

    /// Closes the connections. Dropping the cache does the same in the background.
    pub async fn quit(&self) {
        let _ = self.pool.quit().await;
    }

    /// The stored name of `key`.
    fn key(&self, key: &str) -> String {
        if self.clustered {
            format!("{}{{{}}}", self.prefix, key)
        } else {
            format!("{}{}", self.prefix, key)
        }
    }

    /// The stored name of `key`'s in-flight-write mark.
    fn mark(&self, key: &str) -> String {
        let mut mark = self.key(key);
        mark.push_str(":w");
        mark
    }

    /// The stored name of `key`'s read lease.
    fn lease(&self, key: &str) -> String {
        let mut lease = self.key(key);
        lease.push_str(":l");
        lease
    }

    /// The caller's name of a stored key (the inverse of [`Self::key`]).
    fn unkey(&self, stored: &str) -> Option<String> {
        let rest = stored.strip_prefix(self.prefix.as_str())?;
        if !self.clustered {
            return Some(rest.to_owned());
        }
        let rest = rest.strip_prefix('{')?;
        let close = rest.rfind('}')?;
        Some(format!("{}{}", &rest[..close], &rest[close + 1..]))
    }

    /// Splits item indices by cluster hash slot of the stored key; one group on a single server.
    fn groups(&self, stored_keys: &[String]) -> Vec<Vec<usize>> {
        if !self.clustered || stored_keys.len() < 2 {
            return vec![(0..stored_keys.len()).collect()];
        }
        let mut by_slot: BTreeMap<u16, Vec<usize>> = BTreeMap::new();
        for (i, k) in stored_keys.iter().enumerate() {
            by_slot
                .entry(fred::util::redis_keyslot(k.as_bytes()))
                .or_default()
                .push(i);
        }
        by_slot.into_values().collect()
    }

    /// Runs the command `name` once per argument list, in one round trip: the command itself
    /// when there is one, a pipeline otherwise. `key_at` is the index of the first key in each
    /// argument list; on a cluster it routes the command to its slot's node (fred hashes the
    /// first string argument of a custom command otherwise, which for `EVALSHA` is the SHA).
    /// One result per argument list.
    async fn send(
        &self,
        name: &'static str,
        key_at: usize,
        calls: Vec<Vec<Value>>,
    ) -> Vec<Result<Value, FredError>> {
        let command = |args: &[Value]| {
            let hash = match args.get(key_at) {
                Some(Value::String(key)) if self.clustered => {
                    ClusterHash::Custom(fred::util::redis_keyslot(key.as_bytes()))
                }
                _ => ClusterHash::FirstKey,
            };
            CustomCommand::new_static(name, hash, false)
        };
        let n = calls.len();
        if n <= 1 {
            let mut out = Vec::with_capacity(n);
            for args in calls {
                out.push(
                    self.pool
                        .with_options(&self.options)
                        .custom::<Value, Value>(command(&args), args)
                        .await,
                );
            }
            return out;
        }
        let pipeline = self.pool.next_connected().pipeline();
        let queue = pipeline.with_options(&self.options);
        for args in calls {
            if let Err(e) = queue.custom::<Value, Value>(command(&args), args).await {
                return vec![Err(e); n];
            }
        }
        let results = pipeline.try_all::<Value>().await;
        if results.len() == n {
            results
        } else {
            // The pipeline as a whole failed (not connected, timed out).
            let e = results
                .into_iter()
                .find_map(Result::err)
                .unwrap_or_else(|| FredError::new(ErrorKind::Unknown, "short pipeline reply"));
            vec![Err(e); n]
        }
    }

    /// Runs `script` once per `(keys, args)` call, in one round trip; a node that does not
    /// know the script yet (`NOSCRIPT`) gets it with `EVAL`, which caches it there.
    async fn eval(
        &self,
        script: &Script,
        calls: Vec<(Vec<String>, Vec<Value>)>,
    ) -> CacheResult<Vec<Value>> {
        let build = |body: &str, (keys, args): &(Vec<String>, Vec<Value>)| {
            let mut v: Vec<Value> = Vec::with_capacity(2 + keys.len() + args.len());
            v.push(body.into());
            v.push(Value::Integer(keys.len() as i64));
            v.extend(keys.iter().map(|k| Value::from(k.as_str())));
            v.extend(args.iter().cloned());
            v
        };
        // Arguments: script, number of keys, keys…, so the first key is at index 2.
        let mut results = self
            .send(
                "EVALSHA",
                2,
                calls.iter().map(|c| build(&script.sha, c)).collect(),
            )
            .await;

        let missing: Vec<usize> = results
            .iter()
            .enumerate()
            .filter(|(_, r)| matches!(r, Err(e) if e.details().starts_with("NOSCRIPT")))
            .map(|(i, _)| i)
            .collect();
        if !missing.is_empty() {
            let retried = self
                .send(
                    "EVAL",
                    2,
                    missing
                        .iter()
                        .map(|&i| build(script.body, &calls[i]))
                        .collect(),
                )
                .await;
            for (i, r) in missing.into_iter().zip(retried) {
                results[i] = r;
            }
        }
        results.into_iter().map(|r| r.map_err(map_err)).collect()
    }

    /// `eval` for a single call.
    async fn eval_one(
        &self,
        script: &Script,
        keys: Vec<String>,
        args: Vec<Value>,
    ) -> CacheResult<Value> {
        self.eval(script, vec![(keys, args)])
            .await?
            .pop()
            .ok_or_else(|| CacheError::Protocol("empty script reply".into()))
    }
}

impl Drop for RedisCache {
    fn drop(&mut self) {
        // Close the connections; without this fred's connection tasks outlive the cache.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let pool = self.pool.clone();
            runtime.spawn(async move {
                let _ = pool.quit().await;
            });
        }
    }
}

/// Milliseconds for `PX`/`PEXPIRE`, at least 1 (Redis refuses 0).
fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX).max(1)
}

/// Escapes the glob characters of a `SCAN MATCH` or `PSUBSCRIBE` pattern.
pub(crate) fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// A reply value as an optional string.
fn opt_string(v: Value) -> CacheResult<Option<String>> {
    match v {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(s.to_string())),
        Value::Bytes(b) => String::from_utf8(b.to_vec())
            .map(Some)
            .map_err(|_| CacheError::Protocol("value is not UTF-8".into())),
        Value::Integer(i) => Ok(Some(i.to_string())),
        Value::Double(f) => Ok(Some(f.to_string())),
        other => Err(CacheError::Protocol(format!(
            "unexpected reply type {:?}",
            other.kind()
        ))),
    }
}

/// An array reply as optional strings.
fn opt_strings(v: Value) -> CacheResult<Vec<Option<String>>> {
    match v {
        Value::Array(items) => items.into_iter().map(opt_string).collect(),
        other => Err(CacheError::Protocol(format!(
            "expected an array, got {:?}",
            other.kind()
        ))),
    }
}

fn integer(v: Value) -> CacheResult<i64> {
    v.as_i64()
        .ok_or_else(|| CacheError::Protocol(format!("expected an integer, got {:?}", v.kind())))
}

#[async_trait]
impl Cache for RedisCache {
    fn kind(&self) -> &'static str {
        "redis"
    }

    async fn ping(&self) -> CacheResult<()> {
        self.pool
            .with_options(&self.options)
            .ping::<Value>(None)
            .await
            .map(drop)
            .map_err(map_err)
    }

    async fn get(&self, key: &str) -> CacheResult<Option<String>> {
        let v: Value = self
            .pool
            .with_options(&self.options)
            .get(self.key(key))
            .await
            .map_err(map_err)?;
        opt_string(v)
    }

    async fn mget(&self, keys: &[String]) -> CacheResult<Vec<Option<String>>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let stored: Vec<String> = keys.iter().map(|k| self.key(k)).collect();
        let groups = self.groups(&stored);
        let calls = groups
            .iter()
            .map(|g| g.iter().map(|&i| Value::from(stored[i].as_str())).collect())
            .collect();
        let replies = self.send("MGET", 0, calls).await;
        let mut out = vec![None; keys.len()];
        for (group, reply) in groups.iter().zip(replies) {
            let values = opt_strings(reply.map_err(map_err)?)?;
            if values.len() != group.len() {
                return Err(CacheError::Protocol("MGET reply length mismatch".into()));
            }
            for (&i, v) in group.iter().zip(values) {
                out[i] = v;
            }
        }
        Ok(out)
    }

    async fn set(&self, key: &str, value: &str, ttl: Option<Duration>) -> CacheResult<()> {
        self.pool
            .with_options(&self.options)
            .set::<Value, _, _>(
                self.key(key),
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
                let mut args = vec![Value::from(self.key(k)), Value::from(v.as_str())];
                if let Some(ttl) = ttl {
                    args.push("PX".into());
                    args.push(Value::Integer(millis(ttl)));
                }
                args
            })
            .collect();
        for reply in self.send("SET", 0, calls).await {
            reply.map_err(map_err)?;
        }
        Ok(())
    }

    async fn set_nx(&self, key: &str, value: &str, ttl: Duration) -> CacheResult<bool> {
        let reply: Value = self
            .pool
            .with_options(&self.options)
            .set(
                self.key(key),
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
            .eval_one(
                &self.scripts.del_if_equals,
                vec![self.key(key)],
                vec![value.into()],
            )
            .await?;
        Ok(integer(reply)? > 0)
    }

    async fn del(&self, keys: &[String]) -> CacheResult<u64> {
        if keys.is_empty() {
            return Ok(0);
        }
        let stored: Vec<String> = keys.iter().map(|k| self.key(k)).collect();
        let calls = self
            .groups(&stored)
            .iter()
            .map(|g| g.iter().map(|&i| Value::from(stored[i].as_str())).collect())
            .collect();
        let mut n = 0;
        for reply in self.send("DEL", 0, calls).await {
            n += u64::try_from(integer(reply.map_err(map_err)?)?).unwrap_or(0);
        }
        Ok(n)
    }

    async fn incr_by(&self, key: &str, by: i64) -> CacheResult<i64> {
        self.pool
            .with_options(&self.options)
            .incr_by(self.key(key), by)
            .await
            .map_err(map_err)
    }

    async fn incr_with_ttl(&self, key: &str, ttl: Duration) -> CacheResult<i64> {
        let reply = self
            .eval_one(
                &self.scripts.incr_with_ttl,
                vec![self.key(key)],
                vec![Value::Integer(millis(ttl))],
            )
            .await?;
        integer(reply)
    }

    async fn sadd(&self, key: &str, member: &str) -> CacheResult<bool> {
        let added: i64 = self
            .pool
            .with_options(&self.options)
            .sadd(self.key(key), member)
            .await
            .map_err(map_err)?;
        Ok(added > 0)
    }

    async fn smembers(&self, key: &str) -> CacheResult<Vec<String>> {
        let mut members: Vec<String> = self
            .pool
            .with_options(&self.options)
            .smembers(self.key(key))
            .await
            .map_err(map_err)?;
        members.sort();
        Ok(members)
    }

    async fn scan_prefix(&self, prefix: &str) -> CacheResult<Vec<String>> {
        let pattern = if self.clustered {
            format!("{}{{{}*", glob_escape(&self.prefix), glob_escape(prefix))
        } else {
            format!("{}{}*", glob_escape(&self.prefix), glob_escape(prefix))
        };
        let client = self.pool.next_connected();
        // fred's scanning streams take no per-command options, and while the server is away
        // they wait for a reconnection: each page gets the command timeout here instead.
        let mut pages: std::pin::Pin<Box<dyn futures::Stream<Item = _> + Send>> = if self.clustered
        {
            Box::pin(client.scan_cluster_buffered(pattern, Some(SCAN_PAGE), None))
        } else {
            Box::pin(client.scan_buffered(pattern, Some(SCAN_PAGE), None))
        };
        let mut keys: Vec<fred::types::Key> = Vec::new();
        loop {
            let next = match self.options.timeout {
                Some(t) => tokio::time::timeout(t, pages.try_next())
                    .await
                    .map_err(|_| CacheError::Unavailable("SCAN timed out".into()))?,
                None => pages.try_next().await,
            };
            match next.map_err(map_err)? {
                Some(key) => keys.push(key),
                None => break,
            }
        }
        let mut out: Vec<String> = keys
            .iter()
            .filter_map(|k| k.as_str())
            .filter_map(|k| self.unkey(k))
            .filter(|k| k.starts_with(prefix))
            .collect();
        // SCAN may return a key more than once.
        out.sort();
        out.dedup();
        Ok(out)
    }

    async fn versioned_get_many(&self, keys: &[String]) -> CacheResult<Vec<Option<Versioned>>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let stored: Vec<String> = keys.iter().map(|k| self.key(k)).collect();
        let groups = self.groups(&stored);
        // One MGET over [k1, k1:w, k2, k2:w, …] per slot group (one group on a single server).
        let calls = groups
            .iter()
            .map(|g| {
                g.iter()
                    .flat_map(|&i| {
                        [
                            Value::from(stored[i].as_str()),
                            Value::from(self.mark(&keys[i])),
                        ]
                    })
                    .collect()
            })
            .collect();
        let replies = self.send("MGET", 0, calls).await;
        let mut out = vec![None; keys.len()];
        for (group, reply) in groups.iter().zip(replies) {
            let values = opt_strings(reply.map_err(map_err)?)?;
            if values.len() != 2 * group.len() {
                return Err(CacheError::Protocol("MGET reply length mismatch".into()));
            }
            let mut values = values.into_iter();
            for &i in group {
                let (entry, mark) = (values.next().flatten(), values.next().flatten());
                let marked = mark
                    .and_then(|m| m.parse::<i64>().ok())
                    .is_some_and(|n| n > 0);
                out[i] = if marked {
                    None
                } else {
                    entry.as_deref().and_then(Versioned::decode)
                };
            }
        }
        Ok(out)
    }

    async fn versioned_fill(
        &self,
        key: &str,
        entry: &Versioned,
        ttl: Duration,
    ) -> CacheResult<bool> {
        let stored = self
            .versioned_fill_many(&[(key.to_owned(), entry.clone())], ttl)
            .await?;
        Ok(stored.first().copied().unwrap_or(false))
    }

    async fn versioned_fill_many(
        &self,
        entries: &[(String, Versioned)],
        ttl: Duration,
    ) -> CacheResult<Vec<bool>> {
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        let stored: Vec<String> = entries.iter().map(|(k, _)| self.key(k)).collect();
        let groups = self.groups(&stored);
        let calls = groups
            .iter()
            .map(|g| {
                let mut keys = Vec::with_capacity(2 * g.len());
                let mut args = Vec::with_capacity(1 + 2 * g.len());
                args.push(Value::Integer(millis(ttl)));
                for &i in g {
                    let (key, entry) = &entries[i];
                    keys.push(stored[i].clone());
                    keys.push(self.mark(key));
                    args.push(Value::Integer(entry.version));
                    args.push(Value::from(entry.encode()));
                }
                (keys, args)
            })
            .collect();
        let replies = self.eval(&self.scripts.fill, calls).await?;
        let mut out = vec![false; entries.len()];
        for (group, reply) in groups.iter().zip(replies) {
            let flags = match reply {
                Value::Array(flags) if flags.len() == group.len() => flags,
                other => {
                    return Err(CacheError::Protocol(format!(
                        "unexpected fill reply {:?}",
                        other.kind()
                    )))
                }
            };
            for (&i, flag) in group.iter().zip(flags) {
                out[i] = integer(flag)? == 1;
            }
        }
        Ok(out)
    }

    async fn leased_get_many(
        &self,
        keys: &[String],
        lease: &str,
        lease_ttl: Duration,
    ) -> CacheResult<Vec<Option<Versioned>>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let stored: Vec<String> = keys.iter().map(|k| self.key(k)).collect();
        let groups = self.groups(&stored);
        let calls = groups
            .iter()
            .map(|g| {
                let keys = g
                    .iter()
                    .flat_map(|&i| [stored[i].clone(), self.mark(&keys[i]), self.lease(&keys[i])])
                    .collect();
                (
                    keys,
                    vec![Value::from(lease), Value::Integer(millis(lease_ttl))],
                )
            })
            .collect();
        let replies = self.eval(&self.scripts.leased_get, calls).await?;
        let mut out = vec![None; keys.len()];
        for (group, reply) in groups.iter().zip(replies) {
            let values = opt_strings(reply)?;
            if values.len() != group.len() {
                return Err(CacheError::Protocol(
                    "leased get reply length mismatch".into(),
                ));
            }
            for (&i, v) in group.iter().zip(values) {
                out[i] = v.as_deref().and_then(Versioned::decode);
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
        let stored: Vec<String> = entries.iter().map(|(k, _)| self.key(k)).collect();
        let groups = self.groups(&stored);
        let calls = groups
            .iter()
            .map(|g| {
                let mut keys = Vec::with_capacity(3 * g.len());
                let mut args = Vec::with_capacity(2 + 2 * g.len());
                args.push(Value::from(lease));
                args.push(Value::Integer(millis(ttl)));
                for &i in g {
                    let (key, entry) = &entries[i];
                    keys.push(stored[i].clone());
                    keys.push(self.mark(key));
                    keys.push(self.lease(key));
                    args.push(Value::Integer(entry.version));
                    args.push(Value::from(entry.encode()));
                }
                (keys, args)
            })
            .collect();
        let replies = self.eval(&self.scripts.leased_fill, calls).await?;
        let mut out = vec![false; entries.len()];
        for (group, reply) in groups.iter().zip(replies) {
            let flags = match reply {
                Value::Array(flags) if flags.len() == group.len() => flags,
                other => {
                    return Err(CacheError::Protocol(format!(
                        "unexpected leased fill reply {:?}",
                        other.kind()
                    )))
                }
            };
            for (&i, flag) in group.iter().zip(flags) {
                out[i] = integer(flag)? == 1;
            }
        }
        Ok(out)
    }

    async fn begin_write(&self, keys: &[String], mark_ttl: Duration) -> CacheResult<()> {
        if keys.is_empty() {
            return Ok(());
        }
        let marks: Vec<String> = keys.iter().map(|k| self.mark(k)).collect();
        let calls = self
            .groups(&marks)
            .into_iter()
            .map(|g| {
                let keys = g
                    .iter()
                    .flat_map(|&i| [marks[i].clone(), self.lease(&keys[i])])
                    .collect();
                (keys, vec![Value::Integer(millis(mark_ttl))])
            })
            .collect();
        self.eval(&self.scripts.begin_write, calls).await.map(drop)
    }

    async fn end_write(&self, writes: &[(String, WriteOutcome)], ttl: Duration) -> CacheResult<()> {
        if writes.is_empty() {
            return Ok(());
        }
        let stored: Vec<String> = writes.iter().map(|(k, _)| self.key(k)).collect();
        let calls = self
            .groups(&stored)
            .into_iter()
            .map(|g| {
                let mut keys = Vec::with_capacity(2 * g.len());
                let mut args = Vec::with_capacity(1 + 3 * g.len());
                args.push(Value::Integer(millis(ttl)));
                for i in g {
                    let (key, outcome) = &writes[i];
                    keys.push(stored[i].clone());
                    keys.push(self.mark(key));
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
            .collect();
        self.eval(&self.scripts.end_write, calls).await.map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::glob_escape;

    #[test]
    fn glob_characters_in_a_prefix_are_escaped() {
        assert_eq!(glob_escape("a*b?[c]\\"), "a\\*b\\?\\[c\\]\\\\");
        assert_eq!(glob_escape("plain:key"), "plain:key");
    }
}
