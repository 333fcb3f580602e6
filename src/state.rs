//! The state every domain stands on: the settings, the four backends and the metrics,
//! connected once by [`AppState::connect`] and shared (cheaply cloned) by every request,
//! worker and command. It sits below the domains: nothing here knows a GraphQL root or a
//! route.

use std::ops::Deref;
use std::sync::Arc;

use anyhow::Context as _;
use migration::MigratorTrait;
use parking_lot::Mutex;
use rand::rngs::StdRng;
use rand::SeedableRng;
use sea_orm::DatabaseConnection;

use crate::backends::cache::instrumented::Instrumented;
use crate::backends::cache::memory::{MemoryKv, MemoryVersioned};
use crate::backends::cache::redis::RedisCache;
use crate::backends::cache::{KeyValue, VersionedCache};
use crate::backends::documents::mongo::MongoDocuments;
use crate::backends::documents::sql::SqlDocuments;
use crate::backends::documents::DocumentStore;
use crate::backends::events::local::LocalEvents;
use crate::backends::events::redis::RedisEvents;
use crate::backends::events::EventBus;
use crate::backends::{sql, BackendStatus};
use crate::config::Settings;
use crate::metrics::Metrics;

/// What every resolver and service reaches: settings and the four backends.
pub struct StateInner {
    /// The settings the instance runs with.
    pub settings: Settings,
    /// The SQL database.
    pub db: DatabaseConnection,
    /// The cache tier's plain keys (instrumented): rings, user data, counters, locks,
    /// staged imports, rate limits.
    pub kv: Arc<dyn KeyValue>,
    /// The cache tier's write-through entries (instrumented).
    pub cache: Arc<dyn VersionedCache>,
    /// The key-value storage's tier (instrumented): the cache tier, or a Redis of its own
    /// (`ARENA_STORAGE_REDIS_URL`) whose LRU eviction cannot touch the cache's entries,
    /// write marks and counters.
    pub storage: Arc<dyn KeyValue>,
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
    pub cache_health: crate::backends::cache::health::CacheHealth,
}

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
        let db = sql::connect(&settings.database_url, settings.db_pool, &metrics)
            .await
            .with_context(|| "connecting to the SQL database")?;
        migration::Migrator::up(&db, None)
            .await
            .context("running migrations")?;
        let timeout = std::time::Duration::from_millis(settings.redis_timeout_ms);
        let (kv, cache, events): (
            Arc<dyn KeyValue>,
            Arc<dyn VersionedCache>,
            Arc<dyn EventBus>,
        ) = match &settings.redis_url {
            Some(url) => {
                let redis = Arc::new(
                    RedisCache::connect(url, &settings.cache_prefix, timeout)
                        .await
                        .context("connecting to Redis (cache)")?,
                );
                let events = RedisEvents::connect(url, &settings.cache_prefix, timeout)
                    .await
                    .context("connecting to Redis (events)")?;
                (redis.clone(), redis, Arc::new(events))
            }
            None => (
                Arc::new(MemoryKv::new()),
                Arc::new(MemoryVersioned::new(settings.cache_capacity)),
                Arc::new(LocalEvents::new()),
            ),
        };
        let storage: Arc<dyn KeyValue> = match (&settings.storage_redis_url, &settings.redis_url) {
            (Some(url), _) => Arc::new(
                RedisCache::connect(url, &settings.cache_prefix, timeout)
                    .await
                    .context("connecting to Redis (key-value storage)")?,
            ),
            (None, Some(_)) => kv.clone(),
            // Embedded: an LRU of its own, so that stored values evict one another, never the
            // cache tier's values.
            (None, None) => Arc::new(MemoryKv::lru(settings.cache_capacity)),
        };
        let kv: Arc<dyn KeyValue> = Arc::new(Instrumented::new(kv, &metrics));
        let cache: Arc<dyn VersionedCache> = Arc::new(Instrumented::new(cache, &metrics));
        let storage: Arc<dyn KeyValue> = Arc::new(Instrumented::new(storage, &metrics));
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
            db,
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
                self.cache.ping().await.map_err(|e| e.to_string()),
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
