//! The application: shared state, the router, and `Application::build` which `main` and the
//! tests both use.

use std::future::Future;
use std::net::SocketAddr;
use std::ops::Deref;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context as _;
use axum::extract::{MatchedPath, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use migration::MigratorTrait;
use parking_lot::Mutex;
use rand::rngs::StdRng;
use rand::SeedableRng;
use sea_orm::DatabaseConnection;
use tokio::net::TcpListener;

use crate::backends::cache::instrumented::InstrumentedCache;
use crate::backends::cache::memory::MemoryCache;
use crate::backends::cache::redis::RedisCache;
use crate::backends::cache::Cache;
use crate::backends::documents::mongo::MongoDocuments;
use crate::backends::documents::sql::SqlDocuments;
use crate::backends::documents::DocumentStore;
use crate::backends::events::local::LocalEvents;
use crate::backends::events::redis::RedisEvents;
use crate::backends::events::EventBus;
use crate::backends::{sql, BackendStatus};
use crate::config::Settings;
use crate::graphql::{build_schema, ArenaSchema};
use crate::metrics::Metrics;

/// What every resolver and service reaches: settings and the four backends.
pub struct StateInner {
    /// The settings the instance runs with.
    pub settings: Settings,
    /// The SQL database.
    pub db: DatabaseConnection,
    /// The cache tier (instrumented).
    pub cache: Arc<dyn Cache>,
    /// The key-value storage's tier (instrumented): the cache tier, or a Redis of its own
    /// (`ARENA_STORAGE_REDIS_URL`) whose LRU eviction cannot touch the cache's entries,
    /// write marks and counters.
    pub storage: Arc<dyn Cache>,
    /// The document store.
    pub docs: Arc<dyn DocumentStore>,
    /// The event bus.
    pub events: Arc<dyn EventBus>,
    /// This instance's metrics.
    pub metrics: Metrics,
    /// Random draws (battles, dice); seeded by `ARENA_RANDOM_SEED` when set.
    pub rng: Mutex<StdRng>,
    /// Cache health and the invalidations owed to it after an outage.
    pub cache_health: crate::write_through::CacheHealth,
    /// Usage counts not yet flushed to the cache tier.
    pub usage: crate::usage::UsageBuffer,
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
        let (cache, events): (Arc<dyn Cache>, Arc<dyn EventBus>) = match &settings.redis_url {
            Some(url) => (
                Arc::new(
                    RedisCache::connect(url, &settings.cache_prefix, timeout)
                        .await
                        .context("connecting to Redis (cache)")?,
                ),
                Arc::new(
                    RedisEvents::connect(url, &settings.cache_prefix, timeout)
                        .await
                        .context("connecting to Redis (events)")?,
                ),
            ),
            None => (
                Arc::new(MemoryCache::new(
                    settings.cache_capacity,
                    &settings.cache_prefix,
                )),
                Arc::new(LocalEvents::new()),
            ),
        };
        let cache: Arc<dyn Cache> = Arc::new(InstrumentedCache::new(cache, metrics.clone()));
        let storage: Arc<dyn Cache> = match (&settings.storage_redis_url, &settings.redis_url) {
            (Some(url), _) => Arc::new(InstrumentedCache::new(
                Arc::new(
                    RedisCache::connect(url, &settings.cache_prefix, timeout)
                        .await
                        .context("connecting to Redis (key-value storage)")?,
                ),
                metrics.clone(),
            )),
            (None, Some(_)) => cache.clone(),
            // Embedded: an LRU of its own, so that stored values evict one another, never the
            // cache tier's rows.
            (None, None) => Arc::new(InstrumentedCache::new(
                Arc::new(MemoryCache::evicting(
                    settings.cache_capacity,
                    &settings.cache_prefix,
                )),
                metrics.clone(),
            )),
        };
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
            None => StdRng::from_entropy(),
        };
        Ok(Self(Arc::new(StateInner {
            settings,
            db,
            cache,
            storage,
            docs,
            events,
            metrics,
            rng: Mutex::new(rng),
            cache_health: Default::default(),
            usage: Default::default(),
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

/// Router state: the app state and the schema.
#[derive(Clone)]
pub struct HttpState {
    /// Shared state.
    pub app: AppState,
    /// The schema, built with the state.
    pub schema: ArenaSchema,
}

/// A built, bound, not yet running Arena.
pub struct Application {
    listener: TcpListener,
    router: Router,
    state: AppState,
}

impl Application {
    /// Connects the backends, migrates, builds the schema and binds `settings.addr`.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let addr = settings.addr;
        let state = AppState::connect(settings).await?;
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding {addr}"))?;
        let schema = build_schema(&state.settings, Some(state.clone()));
        let router = router(HttpState {
            app: state.clone(),
            schema,
        });
        Ok(Self {
            listener,
            router,
            state,
        })
    }

    /// The bound address (the real port when asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// The shared state (tests use it to reach the database and the cache).
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until `shutdown` resolves, then finishes in-flight requests and flushes.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let state = self.state.clone();
        let workers = crate::workers::start(&state);
        tracing::info!(addr = %self.local_addr(), "Arena is serving GraphQL on /graphql");
        axum::serve(self.listener, self.router)
            .with_graceful_shutdown(shutdown)
            .await
            .context("serving HTTP")?;
        workers.stop().await;
        tracing::info!("Arena stopped");
        Ok(())
    }

    /// Serves until SIGTERM or Ctrl-C.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        self.run_until(shutdown_signal()).await
    }
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => futures::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = futures::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutdown requested: finishing in-flight requests");
}

fn router(state: HttpState) -> Router {
    use crate::graphql::http;
    Router::new()
        .route("/", get(http::graphiql))
        .route("/graphql", get(http::graphiql).post(http::graphql_post))
        .route("/graphql/ws", get(http::graphql_ws))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .layer(middleware::from_fn_with_state(state.clone(), track))
        .with_state(state)
}

async fn readyz(State(http): State<HttpState>) -> Response {
    let report = http.app.readiness().await;
    let ok = report.iter().all(|b| b.ok);
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(serde_json::json!({ "ready": ok, "backends": report })),
    )
        .into_response()
}

async fn metrics(State(http): State<HttpState>) -> impl IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        http.app.metrics.render(),
    )
}

async fn track(State(http): State<HttpState>, req: Request, next: Next) -> Response {
    let path = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".into());
    let start = Instant::now();
    let resp = next.run(req).await;
    let m = &http.app.metrics;
    m.http_requests
        .with_label_values(&[path.as_str(), resp.status().as_str()])
        .inc();
    m.http_latency
        .with_label_values(&[path.as_str()])
        .observe(start.elapsed().as_secs_f64());
    resp
}
