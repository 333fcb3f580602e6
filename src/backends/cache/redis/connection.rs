//! The cache's connections to Redis (or Redis Cluster) and the one-round-trip command helpers
//! every method goes through.
//!
//! Failure behaviour. While Redis is unreachable every command fails at once (per-command
//! `fail_fast`), and a command that was sent but gets no answer fails after the command
//! timeout; callers then go to the database. A command that was in flight when a connection
//! dropped is answered with an error, never replayed, so a non-idempotent script (`INCR` of a
//! mark, `DECR` in `end_write`) never runs twice. The clients reconnect in the background with
//! an exponential backoff from 20 ms capped at 200 ms, so a cache that answers again is
//! used again within a few hundred milliseconds.

use std::time::Duration;

use fred::clients::{Client, Pool};
use fred::error::{Error as FredError, ErrorKind};
use fred::interfaces::ClientLike;
use fred::prelude::{Options, Value};
use fred::types::{ClusterHash, CustomCommand};

use super::scripts::Script;
use crate::backends::cache::{CacheError, CacheResult};
use crate::backends::redis_client::{builder, command_options, map_err};

/// Connections per instance, at most: one per core the process may run on. fred multiplexes
/// concurrent commands on each connection and, when several are queued, writes them with
/// one system call, so a single client already serves many requests. More connections spread
/// encoding, decoding and socket I/O over several router tasks on the multi-threaded runtime
/// and keep one large reply (a `SCAN` page, a big value) from delaying every other request
/// behind it; on one core they only split the queue, so that each command costs a system call
/// of its own.
const MAX_POOL_SIZE: usize = 4;

fn pool_size() -> usize {
    std::thread::available_parallelism()
        .map_or(1, usize::from)
        .clamp(1, MAX_POOL_SIZE)
}

/// A pool of connections and the options of every command.
pub struct Connection {
    pool: Pool,
    options: Options,
    clustered: bool,
    command_timeout: Duration,
}

impl Connection {
    /// Connects to `url` (`redis://`, or `redis-cluster://` for a cluster). Fails when the
    /// server cannot be reached now; once connected, the pool reconnects by itself.
    pub async fn connect(url: &str, command_timeout: Duration) -> CacheResult<Connection> {
        let builder = builder(url, command_timeout).map_err(|e| {
            CacheError::Protocol(format!("invalid Redis URL: {}", e.details()).into())
        })?;
        let pool = builder.build_pool(pool_size()).map_err(map_err)?;
        if let Err(e) = pool.init().await {
            // Some of the pool's clients may have connected: close them.
            let _ = pool.quit().await;
            return Err(map_err(e));
        }
        let clustered = pool.is_clustered();
        Ok(Connection {
            pool,
            options: command_options(command_timeout),
            clustered,
            command_timeout,
        })
    }

    /// The pool, for commands with their own helpers in fred.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// The options of every command (fail fast, time out).
    pub fn options(&self) -> &Options {
        &self.options
    }

    /// Pings every connection of the pool: succeeds only when each one answers, so that a
    /// recovery declared on a successful ping is not followed by a command on a connection
    /// still waiting to reconnect.
    pub async fn ping_all(&self) -> CacheResult<()> {
        let pings = self
            .pool
            .clients()
            .iter()
            .map(|c| async move { c.with_options(&self.options).ping::<Value>(None).await });
        for r in futures::future::join_all(pings).await {
            r.map_err(map_err)?;
        }
        Ok(())
    }

    /// Whether the server is a Redis Cluster.
    pub fn is_clustered(&self) -> bool {
        self.clustered
    }

    /// Closes the connections.
    pub async fn quit(&self) {
        let _ = self.pool.quit().await;
    }

    /// Runs the command `name` once per argument list, in one round trip: the command itself
    /// when there is one, a pipeline otherwise. `key_at` is the index of the first key in each
    /// argument list; on a cluster it routes the command to its slot's node (fred hashes the
    /// first string argument of a custom command otherwise, which for `EVALSHA` is the SHA).
    /// One result per argument list.
    pub async fn send(
        &self,
        name: &'static str,
        key_at: usize,
        calls: Vec<Vec<Value>>,
    ) -> Vec<Result<Value, FredError>> {
        self.send_on(None, name, key_at, calls).await
    }

    /// The slot's routing of a command whose key is `key` (any node without a cluster).
    fn hash(&self, key: Option<&Value>) -> ClusterHash {
        match key {
            Some(Value::String(key)) if self.clustered => {
                ClusterHash::Custom(fred::util::redis_keyslot(key.as_bytes()))
            }
            _ => ClusterHash::FirstKey,
        }
    }

    /// [`Connection::send`] on the client `on` (its connections) when given, else on any.
    async fn send_on(
        &self,
        on: Option<&Client>,
        name: &'static str,
        key_at: usize,
        calls: Vec<Vec<Value>>,
    ) -> Vec<Result<Value, FredError>> {
        let command =
            |args: &[Value]| CustomCommand::new_static(name, self.hash(args.get(key_at)), false);
        let n = calls.len();
        if n <= 1 {
            let mut out = Vec::with_capacity(n);
            for args in calls {
                let reply = match on {
                    Some(client) => {
                        client
                            .with_options(&self.options)
                            .custom::<Value, Value>(command(&args), args)
                            .await
                    }
                    None => {
                        self.pool
                            .with_options(&self.options)
                            .custom::<Value, Value>(command(&args), args)
                            .await
                    }
                };
                out.push(reply);
            }
            return out;
        }
        let pipeline = on.unwrap_or_else(|| self.pool.next_connected()).pipeline();
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
    /// know the script yet (`NOSCRIPT`: it restarted, or `SCRIPT FLUSH`) gets it with `EVAL`,
    /// which caches it there.
    pub async fn eval(
        &self,
        script: &Script,
        calls: Vec<(Vec<String>, Vec<Value>)>,
    ) -> CacheResult<Vec<Value>> {
        self.eval_on(None, script, calls).await
    }

    /// [`Connection::eval`], then, over the same connections, `WAIT` on each call's node
    /// until `replicas` of its replicas have the call's writes. So a failover promotes a
    /// replica that has them. The replies, and whether every node confirmed within half the
    /// command timeout (if not, the writes may be on the primary alone).
    pub async fn eval_replicated(
        &self,
        script: &Script,
        calls: Vec<(Vec<String>, Vec<Value>)>,
        replicas: u32,
    ) -> CacheResult<(Vec<Value>, bool)> {
        let client = self.pool.next_connected();
        let routes: Vec<ClusterHash> = calls
            .iter()
            .map(|(keys, _)| {
                let key = keys.first().map(|k| Value::from(k.as_str()));
                self.hash(key.as_ref())
            })
            .collect();
        let replies = self.eval_on(Some(client), script, calls).await?;
        let wait_ms = (self.command_timeout / 2).as_millis().max(1) as i64;
        let pipeline = client.pipeline();
        let queue = pipeline.with_options(&self.options);
        for route in routes {
            let wait = CustomCommand::new_static("WAIT", route, false);
            let args = vec![Value::Integer(i64::from(replicas)), Value::Integer(wait_ms)];
            queue
                .custom::<Value, Value>(wait, args)
                .await
                .map_err(map_err)?;
        }
        let mut replicated = true;
        for confirmed in pipeline.try_all::<Value>().await {
            match confirmed.map_err(map_err)? {
                Value::Integer(n) if n >= i64::from(replicas) => {}
                other => {
                    tracing::warn!(
                        confirmed = ?other,
                        replicas,
                        wait_ms,
                        "Redis: fewer replicas than ARENA_REDIS_REPLICAS confirmed a write's marks"
                    );
                    replicated = false;
                }
            }
        }
        Ok((replies, replicated))
    }

    async fn eval_on(
        &self,
        on: Option<&Client>,
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
            .send_on(
                on,
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
                .send_on(
                    on,
                    "EVAL",
                    2,
                    missing
                        .iter()
                        .map(|&i| build(&script.body, &calls[i]))
                        .collect(),
                )
                .await;
            for (i, r) in missing.into_iter().zip(retried) {
                results[i] = r;
            }
        }
        results.into_iter().map(|r| r.map_err(map_err)).collect()
    }

    /// [`Connection::eval`] for a single call.
    pub async fn eval_one(
        &self,
        script: &Script,
        keys: Vec<String>,
        args: Vec<Value>,
    ) -> CacheResult<Value> {
        self.eval(script, vec![(keys, args)])
            .await?
            .pop()
            .ok_or_else(|| CacheError::protocol("empty script reply"))
    }
}

impl Drop for Connection {
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
