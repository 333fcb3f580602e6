//! The Redis side of the near cache ([`crate::backends::cache::near`]): the lease set, the
//! invalidations and their acknowledgements.
//!
//! * The lease set `<prefix>near:holders` is a sorted set of replica ids by the expiry of
//!   their lease, in milliseconds of the Redis server's clock. Each replica renews its lease
//!   every [`RENEW_EVERY`] for [`LEASE_TTL`] (`near_renew.lua`) and holds it, by its own
//!   clock, until [`HELD_FOR`] after it *sent* the renewal: always before Redis lets it go.
//!   A renewal of a replica that is no longer in the set fails, and the replica empties its
//!   near cache before it joins again.
//! * A write publishes its keys on `<prefix>near:inv` and reads the holders in the same
//!   script (`near_publish.lua`). On one Redis server whose marks no replica must confirm,
//!   the same script sets the write's marks first (`near_marks.lua`): one round trip before
//!   `COMMIT` instead of two. Each replica drops the keys and acknowledges on the writer's
//!   channel `<prefix>near:ack:<writer>`. Holders that have not answered within the
//!   command timeout are removed from the set (`near_revoke.lua`), and the writer waits
//!   until their leases would have run out.
//! * The set keeps a member `~epoch` from its first use on (`lua/epoch.lua`). When Redis
//!   loses it (restarted empty, failed over, flushed), whoever finds it missing first writes
//!   it again with a `~grace` of [`LEASE_TTL`], and every write waits out the grace before
//!   it is acknowledged: a holder cut off from Redis may still serve its near copies under a
//!   lease granted before the loss, which no writer can see any more.
//! * A replica whose subscriber lost messages (it fell behind, or reconnected) stops serving
//!   its near cache at once and joins again with an empty one.
//!
//! One subscriber connection per instance (commands share the cache's connections); the
//! messages are fed to the near cache by a task of their own.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use fred::clients::SubscriberClient;
use fred::interfaces::{ClientLike, EventInterface, PubsubInterface};
use fred::prelude::Value;
use fred::types::Message;
use parking_lot::Mutex;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use super::{NearBus, NearState};
use crate::backends::cache::redis::connection::Connection;
use crate::backends::cache::redis::keys::Keys;
use crate::backends::cache::redis::scripts::{load, Script};
use crate::backends::cache::{CacheError, CacheResult};
use crate::backends::redis_client::builder;

/// How long a renewal keeps a replica in the lease set, by the server's clock.
pub const LEASE_TTL: Duration = Duration::from_millis(1_000);
/// How long a replica serves its near cache after sending a renewal that succeeded: a fifth
/// less than [`LEASE_TTL`], room for clocks that run at different rates.
pub const HELD_FOR: Duration = Duration::from_millis(800);
/// How often a replica renews its lease.
pub const RENEW_EVERY: Duration = Duration::from_millis(200);

/// Prepended to the scripts that read or renew the lease set: notices a lost set.
const EPOCH: &str = include_str!("lua/epoch.lua");

/// Capacity of fred's channel between the subscriber connection and the task that reads it.
const UPSTREAM_CAPACITY: usize = 4_096;

/// The invalidations a writer waits on: by sequence number, who acknowledged.
type Pending = Mutex<HashMap<u64, (HashSet<String>, Arc<Notify>)>>;

struct Shared {
    /// This replica's id in the lease set.
    id: String,
    conn: Arc<Connection>,
    renew: Script,
    publish: Script,
    revoke: Script,
    /// The marks' names and `near_marks.lua` + `near_publish.lua`, when a write's marks and
    /// its invalidation can go in one call ([`RedisNearBus::connect`]'s `fuse`).
    fused: Option<(Keys, Script)>,
    holders: String,
    inv_channel: String,
    ack_prefix: String,
    state: Arc<NearState>,
    pending: Pending,
    seq: AtomicU64,
    ack_timeout: Duration,
    /// Bumped when invalidations may have been missed; a renewal sent under an older value
    /// does not extend the lease. The lock orders the bump against the lease's extension.
    generation: Mutex<u64>,
}

/// The Redis near-cache bus. Dropping it stops its tasks, leaves the lease set and closes
/// its connections.
pub struct RedisNearBus {
    shared: Arc<Shared>,
    subscriber: SubscriberClient,
    tasks: Vec<JoinHandle<()>>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Invalidation {
    /// The writer.
    w: String,
    /// Its sequence number.
    s: u64,
    /// The keys.
    k: Vec<String>,
}

fn fred_err(e: fred::error::Error) -> CacheError {
    crate::backends::redis_client::map_err(e)
}

impl RedisNearBus {
    /// Subscribes to `url`, and starts renewing a lease for `state` under `prefix`; commands
    /// go through `conn`, the cache's own connections, so that the bus can be used whenever
    /// the cache can. `command_timeout` is also how long a writer waits for
    /// acknowledgements. `fuse` (one Redis server, whose marks no replica must confirm):
    /// a write's marks and its invalidation go in one script
    /// ([`NearBus::mark_and_invalidate_others`]).
    pub async fn connect(
        url: &str,
        conn: Arc<Connection>,
        prefix: &str,
        command_timeout: Duration,
        state: Arc<NearState>,
        fuse: bool,
    ) -> CacheResult<RedisNearBus> {
        let (renew, publish, revoke) = futures::try_join!(
            load(
                &conn,
                format!("{EPOCH}\n{}", include_str!("lua/near_renew.lua"))
            ),
            load(
                &conn,
                format!("{EPOCH}\n{}", include_str!("lua/near_publish.lua"))
            ),
            load(&conn, include_str!("lua/near_revoke.lua").to_owned()),
        )?;
        let fused = if fuse {
            let body = format!(
                "{EPOCH}\n{}\n{}",
                include_str!("lua/near_marks.lua"),
                include_str!("lua/near_publish.lua")
            );
            Some((Keys::new(prefix, false), load(&conn, body).await?))
        } else {
            None
        };
        let id = uuid::Uuid::new_v4().simple().to_string();
        let shared = Arc::new(Shared {
            ack_prefix: format!("{prefix}near:ack:"),
            inv_channel: format!("{prefix}near:inv"),
            holders: format!("{prefix}near:holders"),
            id,
            conn,
            renew,
            publish,
            revoke,
            fused,
            state,
            pending: Mutex::default(),
            seq: AtomicU64::new(0),
            ack_timeout: command_timeout.max(Duration::from_millis(50)),
            generation: Mutex::new(0),
        });
        let mut builder = builder(url, command_timeout).map_err(fred_err)?;
        builder.with_performance_config(|perf| perf.broadcast_channel_capacity = UPSTREAM_CAPACITY);
        let subscriber = builder.build_subscriber_client().map_err(fred_err)?;
        // Listen before subscribing, so that nothing published after the subscription is missed.
        let listen = tokio::spawn(listen(subscriber.message_rx(), shared.clone()));
        let mut bus = RedisNearBus {
            shared: shared.clone(),
            subscriber: subscriber.clone(),
            tasks: vec![listen],
        };
        bus.tasks.push(tokio::spawn(watch_connection(
            subscriber.reconnect_rx(),
            subscriber.error_rx(),
            shared.clone(),
        )));
        subscriber.init().await.map_err(fred_err)?;
        bus.tasks.push(subscriber.manage_subscriptions());
        subscriber
            .subscribe(vec![
                shared.inv_channel.clone(),
                format!("{}{}", shared.ack_prefix, shared.id),
            ])
            .await
            .map_err(fred_err)?;
        bus.tasks.push(tokio::spawn(renew_forever(shared)));
        Ok(bus)
    }
}

/// Feeds invalidations to the near cache and acknowledgements to the writers waiting.
async fn listen(mut upstream: tokio::sync::broadcast::Receiver<Message>, shared: Arc<Shared>) {
    let own_acks = format!("{}{}", shared.ack_prefix, shared.id);
    loop {
        let message = match upstream.recv().await {
            Ok(m) => m,
            Err(RecvError::Lagged(n)) => {
                tracing::warn!(lost = n, "near cache: invalidations lost, emptied");
                shared.missed();
                continue;
            }
            Err(RecvError::Closed) => break,
        };
        let Ok(payload) = message.value.convert::<String>() else {
            continue;
        };
        if message.channel == shared.inv_channel {
            let Ok(inv) = serde_json::from_str::<Invalidation>(&payload) else {
                continue;
            };
            if inv.w == shared.id {
                continue;
            }
            shared.state.drop_keys(&inv.k);
            let shared = shared.clone();
            tokio::spawn(async move {
                let channel = format!("{}{}", shared.ack_prefix, inv.w);
                let ack = format!("{} {}", inv.s, shared.id);
                let _ = shared
                    .conn
                    .send(
                        "PUBLISH",
                        usize::MAX,
                        vec![vec![channel.into(), ack.into()]],
                    )
                    .await;
            });
        } else if message.channel == own_acks {
            let Some((seq, from)) = payload.split_once(' ') else {
                continue;
            };
            let Ok(seq) = seq.parse::<u64>() else {
                continue;
            };
            if let Some((acked, notify)) = shared.pending.lock().get_mut(&seq) {
                acked.insert(from.to_owned());
                notify.notify_one();
            }
        }
    }
}

/// A subscriber that reconnected (or failed) may have missed invalidations.
async fn watch_connection(
    mut reconnects: tokio::sync::broadcast::Receiver<fred::types::config::Server>,
    mut errors: tokio::sync::broadcast::Receiver<(
        fred::error::Error,
        Option<fred::types::config::Server>,
    )>,
    shared: Arc<Shared>,
) {
    loop {
        let closed = tokio::select! {
            r = reconnects.recv() => matches!(r, Err(RecvError::Closed)),
            r = errors.recv() => matches!(r, Err(RecvError::Closed)),
        };
        if closed {
            break;
        }
        shared.missed();
    }
}

impl Shared {
    /// Invalidations may have been missed: stop serving now, join again with nothing.
    fn missed(&self) {
        let mut generation = self.generation.lock();
        *generation += 1;
        self.state.lease_lost();
    }

    /// Renews (or takes) the lease; whether the replica holds it.
    async fn renew(&self, join: bool) -> CacheResult<bool> {
        let reply = self
            .conn
            .eval_one(
                &self.renew,
                vec![self.holders.clone()],
                vec![
                    Value::from(self.id.as_str()),
                    Value::Integer(LEASE_TTL.as_millis() as i64),
                    Value::from(if join { "1" } else { "0" }),
                ],
            )
            .await?;
        Ok(reply.as_i64() == Some(1))
    }

    /// Removes `ids` from the lease set and waits until their leases would have run out.
    async fn revoke(&self, ids: &[String]) -> CacheResult<()> {
        let left = self
            .conn
            .eval_one(
                &self.revoke,
                vec![self.holders.clone()],
                ids.iter().map(|id| Value::from(id.as_str())).collect(),
            )
            .await?
            .as_i64()
            .ok_or_else(|| CacheError::protocol("near_revoke: not an integer"))?;
        self.state.revoked(ids.len());
        tracing::warn!(
            replicas = ?ids,
            wait_ms = left,
            "near cache: replicas did not acknowledge an invalidation; their leases revoked"
        );
        if left > 0 {
            // The reply came after the script ran: waiting `left` from now ends after the
            // lease did by the server's clock, and so after the holder stopped using it.
            tokio::time::sleep(Duration::from_millis(left as u64 + 2)).await;
        }
        Ok(())
    }
}

/// Renews the lease every [`RENEW_EVERY`], joining again (with an empty near cache) whenever
/// it was lost.
async fn renew_forever(shared: Arc<Shared>) {
    let mut joined_at: Option<u64> = None;
    loop {
        let generation = *shared.generation.lock();
        let join = joined_at != Some(generation);
        if join {
            shared.state.lease_lost();
            shared.state.clear();
        }
        let sent = Instant::now();
        match shared.renew(join).await {
            Ok(true) => {
                let g = shared.generation.lock();
                if *g == generation {
                    joined_at = Some(generation);
                    shared.state.lease_until(sent + HELD_FOR);
                } else {
                    joined_at = None;
                }
            }
            Ok(false) => {
                // Revoked, or it ran out: empty the near cache and join again at once.
                shared.state.lease_lost();
                joined_at = None;
                continue;
            }
            Err(_) => {
                shared.state.lease_lost();
                joined_at = None;
            }
        }
        tokio::time::sleep(RENEW_EVERY).await;
    }
}

#[async_trait]
impl NearBus for RedisNearBus {
    async fn invalidate_others(&self, keys: &[String]) -> CacheResult<()> {
        self.publish_and_wait(keys, None).await
    }

    async fn mark_and_invalidate_others(
        &self,
        keys: &[String],
        mark_ttl: Duration,
    ) -> Option<CacheResult<()>> {
        self.shared.fused.as_ref()?;
        Some(self.publish_and_wait(keys, Some(mark_ttl)).await)
    }
}

impl RedisNearBus {
    /// Publishes the invalidation of `keys` (after marking them with `mark_ttl`, in the same
    /// script, when given) and waits for every other lease holder.
    async fn publish_and_wait(&self, keys: &[String], marks: Option<Duration>) -> CacheResult<()> {
        let shared = &self.shared;
        let seq = shared.seq.fetch_add(1, Ordering::Relaxed);
        let notify = Arc::new(Notify::new());
        shared
            .pending
            .lock()
            .insert(seq, (HashSet::new(), notify.clone()));
        scopeguard::defer! {
            shared.pending.lock().remove(&seq);
        }
        let message = serde_json::to_string(&Invalidation {
            w: shared.id.clone(),
            s: seq,
            k: keys.to_vec(),
        })
        .map_err(|e| CacheError::Protocol(Box::new(e)))?;
        let mut args = vec![
            shared.inv_channel.as_str().into(),
            message.into(),
            Value::Integer(LEASE_TTL.as_millis() as i64),
        ];
        let mut stored = vec![shared.holders.clone()];
        let script = match (marks, &shared.fused) {
            (Some(mark_ttl), Some((names, fused))) => {
                stored.extend(keys.iter().flat_map(|k| [names.mark(k), names.lease(k)]));
                args.push(Value::Integer(
                    i64::try_from(mark_ttl.as_millis())
                        .unwrap_or(i64::MAX)
                        .max(1),
                ));
                fused
            }
            _ => &shared.publish,
        };
        let reply = shared.conn.eval_one(script, stored, args).await?;
        let Value::Array(items) = reply else {
            return Err(CacheError::protocol("near_publish: not an array"));
        };
        // The lease set was lost a moment ago: holders of leases granted before the loss are
        // unknown, so the write waits until those leases ran out. The reply came after the
        // script ran, so waiting from now ends after the grace did by the server's clock.
        let grace = items.get(1).and_then(Value::as_i64).unwrap_or(0);
        if grace > 0 {
            shared.state.lost_set_waited();
            tracing::warn!(
                wait_ms = grace,
                "near cache: the lease set was lost (Redis restarted, failed over or was \
                 flushed); writes wait until leases granted before it ran out"
            );
        }
        let grace = async move {
            if grace > 0 {
                tokio::time::sleep(Duration::from_millis(grace as u64 + 2)).await;
            }
        };
        let mut holders: HashSet<String> = items
            .into_iter()
            .skip(2)
            .step_by(2)
            .filter_map(|v| v.convert::<String>().ok())
            .collect();
        holders.remove(&shared.id);
        let deadline = tokio::time::Instant::now() + shared.ack_timeout;
        loop {
            let missing: Vec<String> = {
                let pending = shared.pending.lock();
                let acked = &pending.get(&seq).expect("registered above").0;
                holders.difference(acked).cloned().collect()
            };
            if missing.is_empty() {
                grace.await;
                return Ok(());
            }
            if tokio::time::timeout_at(deadline, notify.notified())
                .await
                .is_err()
            {
                let revoked = shared.revoke(&missing).await;
                grace.await;
                return revoked;
            }
        }
    }
}

impl Drop for RedisNearBus {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
        self.shared.state.lease_lost();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let (shared, subscriber) = (self.shared.clone(), self.subscriber.clone());
            runtime.spawn(async move {
                // Leave the lease set, so that writers do not wait for this replica.
                let _ = shared
                    .conn
                    .send(
                        "ZREM",
                        1,
                        vec![vec![
                            shared.holders.as_str().into(),
                            shared.id.as_str().into(),
                        ]],
                    )
                    .await;
                let _ = subscriber.quit().await;
            });
        }
    }
}
