//! The roof: the router and `Application::build`, which `main` and the tests both use. The
//! state every domain stands on lives in [`crate::state`].

use std::future::Future;
use std::net::SocketAddr;
use std::time::Instant;

use anyhow::Context as _;
use axum::extract::{MatchedPath, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use tokio::net::TcpListener;

use crate::config::Settings;
use crate::graphql::auth::HeaderAuthenticator;
use std::sync::Arc;

use crate::graphql::http::HttpState;
use crate::graphql::{build_schema, SchemaState};
use crate::state::AppState;
use crate::usage::counting::UsageBuffer;
use crate::workers::Workers;
use crate::write_through;

/// A built, bound, not yet running Arena.
pub struct Application {
    listener: TcpListener,
    router: Router,
    state: AppState,
    usage: Arc<UsageBuffer>,
}

impl Application {
    /// Connects the backends, migrates, builds the schema and binds `settings.addr`.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let addr = settings.addr;
        let state = AppState::connect(settings).await?;
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding {addr}"))?;
        let usage = Arc::new(UsageBuffer::default());
        let schema = build_schema(
            &state.settings,
            Some(SchemaState {
                state: state.clone(),
                usage: usage.clone(),
            }),
        );
        let router = router(HttpState {
            app: state.clone(),
            schema,
            auth: HeaderAuthenticator::shared(state.clone()),
        });
        Ok(Self {
            listener,
            router,
            state,
            usage,
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

    /// Where this instance counts commands before flushing them to the cache tier.
    pub fn usage(&self) -> &Arc<UsageBuffer> {
        &self.usage
    }

    /// Serves until `shutdown` resolves, then finishes in-flight requests and flushes.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let state = self.state.clone();
        let mut workers = Workers::new();
        workers.spawn(write_through::health_worker(
            state.clone(),
            workers.stop_signal(),
        ));
        workers.spawn(crate::usage::counting::flush_worker(
            state.clone(),
            self.usage.clone(),
            workers.stop_signal(),
        ));
        if state.settings.sync_enabled {
            workers.spawn(crate::usage::sync::sync_worker(
                state.clone(),
                Some(self.usage.clone()),
                workers.stop_signal(),
            ));
        }
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
        .route(
            "/graphql/ws",
            get(crate::graphql::ws::graphql_ws).layer(axum::Extension(
                crate::graphql::ws::Connections::new(
                    &state.app.settings,
                    state.app.metrics.clone(),
                ),
            )),
        )
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
