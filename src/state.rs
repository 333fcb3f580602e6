//! The state every domain stands on: the settings, the four backends and the metrics,
//! connected once by [`AppState::connect`] and shared (cheaply cloned) by every request,
//! worker and command. It sits below the domains: nothing here knows a GraphQL root or a
//! route.

use std::ops::Deref;
use std::sync::Arc;

use anyhow::Context as _;
use parking_lot::Mutex;
use rand::rngs::StdRng;
use rand::SeedableRng;
use sea_orm::DatabaseConnection;
use tokio_util::task::TaskTracker;

use crate::backends::cache::instrumented::Instrumented;
use crate::backends::cache::memory::{MemoryKv, MemoryLru, MemoryVersioned};
use crate::backends::cache::redis::RedisCache;
use crate::backends::cache::{KeyValue, LruStore, VersionedCache};
use crate::backends::documents::mongo::MongoDocuments;
use crate::backends::documents::sql::SqlDocuments;
use crate::backends::documents::DocumentStore;
use crate::backends::events::local::LocalEvents;
use crate::backends::events::redis::RedisEvents;
use crate::backends::events::EventBus;
use crate::backends::{sql, BackendStatus};
use crate::config::Settings;
use crate::consistency::near::redis::RedisNearBus;
use crate::consistency::near::{NearCache, NearState};
use crate::metrics::Metrics;

/// What every resolver and service reaches: settings and the four backends.
pub struct StateInner {
    /// The settings the instance runs with.
    pub settings: Settings,
    /// `ARENA_CACHE_PREFIX` followed by the database's cache namespace and `:`: what every
    /// cache key, lease, mark and event channel of this instance starts with.
    pub cache_prefix: String,
    /// The SQL database.
    pub db: DatabaseConnection,
    /// The same database for the hottest single statements (lists, `updateMeal`): on
    /// PostgreSQL, connections kept outside the pool, given back without sqlx's ping.
    pub direct: crate::backends::sql_direct::Direct,
    /// The cache tier's plain keys (instrumented): rings, counters, user data stamps, locks,
    /// rate limits.
    pub kv: Arc<dyn KeyValue>,
    /// The cache tier's write-through entries (instrumented).
    pub cache: Arc<dyn VersionedCache>,
    /// The key-value storage (instrumented), an exact LRU per user: in the cache tier, or in
    /// a Redis of its own (`ARENA_STORAGE_REDIS_URL`) whose `allkeys-lru` eviction, bounding
    /// memory on top, cannot touch the cache's entries, write marks and counters.
    pub storage: Arc<dyn LruStore>,
    /// The document store.
    pub docs: Arc<dyn DocumentStore>,
    /// The event bus.
    pub events: Arc<dyn EventBus>,
    /// This instance's metrics.
    pub metrics: Metrics,
    /// Random draws (battles, dice); seeded by `ARENA_RANDOM_SEED` when set.
    pub rng: Mutex<StdRng>,
    /// API secrets this instance verified recently (the PBKDF2 check is expensive).
    pub verified_secrets: crate::crypto::VerifiedSecrets,
    /// The threads every password and secret hash runs on, and the bound on waiting hashes.
    pub hasher: crate::crypto::Hasher,
    /// Cache health and the invalidations owed to it after an outage.
    pub cache_health: crate::consistency::CacheHealth,
    /// Locks of this process by key (user data changes): requests of one instance queue up
    /// instead of racing each other's compare-and-set in the document store.
    pub local_locks: LocalLocks,
    /// Work that goes on after its request was answered (a bulk write's cache effects) and
    /// that the instance finishes before it stops.
    pub deferred_effects: TaskTracker,
    /// On SQLite, which lets one transaction write at a time: held by a write transaction of
    /// the write path from `BEGIN` to `COMMIT` (or by a single-statement write while its
    /// statement runs), so that its writers queue here in order instead of in SQLite's busy
    /// handler, whose sleeps (up to 100 ms each) put the p99 of 32 concurrent writes near a
    /// second. `None` on PostgreSQL.
    pub sqlite_writes: Option<Arc<tokio::sync::Mutex<()>>>,
}

/// In-process locks by key, each created on first use and dropped once nobody holds or
/// waits for it.
#[derive(Default)]
pub struct LocalLocks {
    locks: Mutex<std::collections::HashMap<String, std::sync::Weak<tokio::sync::Mutex<()>>>>,
}

impl LocalLocks {
    /// Waits for the lock of `key`; it is held until the guard is dropped.
    pub async fn lock(&self, key: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = {
            let mut locks = self.locks.lock();
            match locks.get(key).and_then(std::sync::Weak::upgrade) {
                Some(lock) => lock,
                None => {
                    if locks.len() >= 1024 {
                        locks.retain(|_, l| l.strong_count() > 0);
                    }
                    let lock = Arc::new(tokio::sync::Mutex::new(()));
                    locks.insert(key.to_owned(), Arc::downgrade(&lock));
                    lock
                }
            }
        };
        lock.lock_owned().await
    }
}

/// The cache tier's backends: plain keys, versioned entries, events, and the storage when it
/// shares the tier.
type CacheTier = (
    Arc<dyn KeyValue>,
    Arc<dyn VersionedCache>,
    Arc<dyn EventBus>,
    Arc<dyn LruStore>,
);

/// Shared state, cheap to clone.
#[derive(Clone)]
pub struct AppState(Arc<StateInner>);

impl Deref for AppState {
    type Target = StateInner;
    fn deref(&self) -> &StateInner {
        &self.0
    }
}

/// The state of the current GraphQL request. Always present: the schema is built with it.
pub fn state<'a>(ctx: &async_graphql::Context<'a>) -> &'a AppState {
    ctx.data_unchecked::<AppState>()
}

impl AppState {
    /// Connects every backend named by `settings` (embedded ones when unset) and migrates.
    pub async fn connect(settings: Settings) -> anyhow::Result<Self> {
        let metrics = Metrics::new();
        // On PostgreSQL half the connections are kept outside the pool (`sql_direct`); on
        // SQLite the pool has them all.
        let direct_max = if settings.database_url.starts_with("postgres") {
            settings.db_pool / 2
        } else {
            0
        };
        let db = sql::connect(
            &settings.database_url,
            (settings.db_pool - direct_max).max(1),
            &metrics,
        )
        .await
        .with_context(|| "connecting to the SQL database")?;
        let namespace = sql::migrate(&db).await.context("running migrations")?;
        let sqlite_writes = (sea_orm::ConnectionTrait::get_database_backend(&db)
            == sea_orm::DatabaseBackend::Sqlite)
            .then(|| Arc::new(tokio::sync::Mutex::new(())));
        let direct = crate::backends::sql_direct::Direct::new(
            db.clone(),
            &settings.database_url,
            direct_max as usize,
            sql::Observer::new(&metrics),
        )?;
        // Every key, lease, mark and event channel lives under the database's namespace.
        let prefix = format!("{}{namespace}:", settings.cache_prefix);
        let timeout = std::time::Duration::from_millis(settings.redis_timeout_ms);
        let (kv, cache, events, shared_storage): CacheTier = match &settings.redis_url {
            Some(url) => {
                let redis = Arc::new(
                    RedisCache::connect_replicated(url, &prefix, timeout, settings.redis_replicas)
                        .await
                        .context("connecting to Redis (cache)")?,
                );
                let events = RedisEvents::connect(url, &prefix, timeout)
                    .await
                    .context("connecting to Redis (events)")?;
                let cache: Arc<dyn VersionedCache> = Arc::new(Instrumented::new(
                    redis.clone() as Arc<dyn VersionedCache>,
                    &metrics,
                ));
                let cache: Arc<dyn VersionedCache> = if settings.near_cache_entries > 0 {
                    let near = NearState::new(settings.near_cache_entries, &metrics);
                    let bus = RedisNearBus::connect(
                        url,
                        redis.connection(),
                        &prefix,
                        timeout,
                        near.clone(),
                        !redis.is_clustered() && settings.redis_replicas == 0,
                    )
                    .await
                    .context("connecting to Redis (near cache)")?;
                    Arc::new(NearCache::new(cache, near, Arc::new(bus)))
                } else {
                    cache
                };
                (redis.clone(), cache, Arc::new(events), redis)
            }
            // Embedded: the storage in an LRU of its own, so that stored values evict one
            // another, never the cache tier's values.
            None => (
                Arc::new(MemoryKv::new()),
                Arc::new(Instrumented::new(
                    Arc::new(MemoryVersioned::new(settings.cache_capacity))
                        as Arc<dyn VersionedCache>,
                    &metrics,
                )),
                Arc::new(LocalEvents::new()),
                Arc::new(MemoryLru::new(settings.cache_capacity)),
            ),
        };
        let storage: Arc<dyn LruStore> = match &settings.storage_redis_url {
            Some(url) => Arc::new(
                RedisCache::connect(url, &prefix, timeout)
                    .await
                    .context("connecting to Redis (key-value storage)")?,
            ),
            None => shared_storage,
        };
        let kv: Arc<dyn KeyValue> = Arc::new(Instrumented::new(kv, &metrics));
        let storage: Arc<dyn LruStore> = Arc::new(Instrumented::new(storage, &metrics));
        let docs: Arc<dyn DocumentStore> = match &settings.mongodb_url {
            Some(url) => Arc::new(
                MongoDocuments::connect(url, &settings.mongodb_database)
                    .await
                    .context("connecting to MongoDB")?,
            ),
            None => Arc::new(SqlDocuments::new(db.clone())),
        };
        let rng = match settings.random_seed {
            Some(seed) => StdRng::seed_from_u64(seed),
            None => StdRng::from_os_rng(),
        };
        let hasher =
            crate::crypto::Hasher::new(settings.hash_threads(), settings.hash_queue, &metrics);
        Ok(Self(Arc::new(StateInner {
            hasher,
            settings,
            cache_prefix: prefix,
            db,
            direct,
            kv,
            cache,
            storage,
            docs,
            events,
            metrics,
            rng: Mutex::new(rng),
            verified_secrets: crate::crypto::VerifiedSecrets::new(
                10_000,
                std::time::Duration::from_secs(600),
            ),
            cache_health: Default::default(),
            local_locks: LocalLocks::default(),
            deferred_effects: TaskTracker::new(),
            sqlite_writes,
        })))
    }

    /// Probes each backend, for `/readyz`.
    pub async fn readiness(&self) -> Vec<BackendStatus> {
        let status = |tier, kind, r: Result<(), String>| BackendStatus {
            tier,
            kind,
            ok: r.is_ok(),
            error: r.err(),
        };
        let mut backends = vec![
            status(
                "sql",
                sql::kind(&self.db),
                sql::ping(&self.db).await.map_err(|e| e.to_string()),
            ),
            status(
                "cache",
                self.cache.kind(),
                if self.cache_health.fenced() {
                    Err(
                        "the database has a new cache namespace (arena cache-reset): restart \
                         this instance"
                            .to_owned(),
                    )
                } else {
                    self.cache.ping().await.map_err(|e| e.to_string())
                },
            ),
            status(
                "documents",
                self.docs.kind(),
                self.docs.ping().await.map_err(|e| e.to_string()),
            ),
            status(
                "events",
                self.events.kind(),
                self.events.ping().await.map_err(|e| e.to_string()),
            ),
        ];
        if self.settings.storage_redis_url.is_some() {
            backends.push(status(
                "storage",
                self.storage.kind(),
                self.storage.ping().await.map_err(|e| e.to_string()),
            ));
        }
        backends
    }
}

impl crate::consistency::Context for AppState {
    fn settings(&self) -> &Settings {
        &self.settings
    }
    fn db(&self) -> &DatabaseConnection {
        &self.db
    }
    fn direct(&self) -> &crate::backends::sql_direct::Direct {
        &self.direct
    }
    fn cache(&self) -> &Arc<dyn VersionedCache> {
        &self.cache
    }
    fn health(&self) -> &crate::consistency::CacheHealth {
        &self.cache_health
    }
    fn metrics(&self) -> &Metrics {
        &self.metrics
    }
    fn cache_prefix(&self) -> &str {
        &self.cache_prefix
    }
    fn deferred_effects(&self) -> &TaskTracker {
        &self.deferred_effects
    }
    fn write_gate(&self) -> Option<&Arc<tokio::sync::Mutex<()>>> {
        self.sqlite_writes.as_ref()
    }
    fn changed(&self, keys: &[String]) {
        if keys.is_empty() {
            return;
        }
        let payload = change_payload(keys);
        let events = self.events.clone();
        tokio::spawn(async move {
            if let Err(e) = events
                .publish(crate::backends::events::LIVE_TOPIC, payload)
                .await
            {
                tracing::debug!(error = %e, "publishing a change to live queries");
            }
        });
    }
    fn change_announcement(&self, keys: &[String]) -> Option<crate::backends::cache::Announcement> {
        let channel = self.events.channel(crate::backends::events::LIVE_TOPIC)?;
        Some(crate::backends::cache::Announcement {
            channel,
            message: change_payload(keys),
        })
    }
}

/// The change event of a write of `keys`: a JSON array of them. A bulk write names its
/// entries by their kind (`pokemon:*`): the message stays small however many rows it wrote,
/// and wakes every live query that read one of them.
fn change_payload(keys: &[String]) -> String {
    const MOST_KEYS: usize = 256;
    if keys.len() > MOST_KEYS {
        let kinds: std::collections::BTreeSet<String> = keys
            .iter()
            .map(|k| match k.split_once(':') {
                Some((kind, _)) => format!("{kind}:*"),
                None => k.clone(),
            })
            .collect();
        serde_json::to_string(&kinds).unwrap_or_default()
    } else {
        serde_json::to_string(keys).unwrap_or_default()
    }
}
