//! The application: the router and `Application::build`, which `main` and the tests both use. The
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
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

use crate::config::Settings;
use crate::graphql::transport::auth::HeaderAuthenticator;
use crate::metrics::RouteMetrics;
use std::sync::Arc;

use crate::consistency;
use crate::graphql::build_pipeline;
use crate::graphql::transport::http::HttpState;
use crate::state::AppState;
use crate::usage::counting::UsageBuffer;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

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
        let pipeline = build_pipeline(&state, usage.clone());
        let router = router(HttpState::new(
            state.clone(),
            pipeline,
            HeaderAuthenticator::shared(state.clone()),
        ))?;
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
        let workers = TaskTracker::new();
        let stop = CancellationToken::new();
        // The workers' SQL is counted apart from the requests' (`caller="background"`).
        use crate::metrics::background;
        workers.spawn(background(consistency::health_worker(
            state.clone(),
            stop.clone(),
        )));
        workers.spawn(background(crate::usage::counting::flush_worker(
            state.clone(),
            self.usage.clone(),
            stop.clone(),
        )));
        if state.settings.sync_enabled {
            workers.spawn(background(crate::usage::sync::sync_worker(
                state.clone(),
                Some(self.usage.clone()),
                stop.clone(),
            )));
        }
        tracing::info!(addr = %self.local_addr(), "Arena is serving GraphQL on /graphql");
        // With connect info: failed password and key checks are counted per client address.
        let service = self
            .router
            .into_make_service_with_connect_info::<SocketAddr>();
        axum::serve(self.listener, service)
            .with_graceful_shutdown(shutdown)
            .await
            .context("serving HTTP")?;
        // Bulk writes answer before their cache effects are done (`consistency::write_copy`):
        // finish those, or their keys stay marked (read from the database) until the marks
        // expire.
        state.deferred_effects.close();
        let drained = state.deferred_effects.wait();
        if tokio::time::timeout(std::time::Duration::from_secs(30), drained)
            .await
            .is_err()
        {
            tracing::warn!("stopping with cache effects of bulk writes unfinished");
        }
        // The workers flush on the way out.
        stop.cancel();
        workers.close();
        workers.wait().await;
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

fn router(state: HttpState) -> anyhow::Result<Router> {
    use crate::graphql::transport::http;
    let settings = &state.app.settings;
    // The GraphQL routes: a request that runs past the time limit is cancelled (a write that
    // had not reached its commit rolls back), and answered with a GraphQL error.
    let graphql = Router::new()
        .route("/graphql", get(http::graphql_get).post(http::graphql_post))
        .route("/", get(http::graphiql))
        // The outer bound on any body; a JSON body is held to the smaller
        // ARENA_MAX_BODY_BYTES by its handler.
        .layer(RequestBodyLimitLayer::new(
            settings.max_body_bytes + settings.max_upload_bytes,
        ))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::GATEWAY_TIMEOUT,
            settings.request_timeout(),
        ))
        .layer(middleware::from_fn_with_state(state.clone(), limit_errors));
    // WebSocket connections and SSE streams share the connection caps.
    let connections = crate::graphql::transport::ws::Connections::new(
        &state.app.settings,
        state.app.metrics.clone(),
    );
    let sse = {
        use crate::graphql::transport::sse;
        Router::new()
            .route(
                "/graphql/stream",
                axum::routing::put(sse::reserve)
                    .get(sse::open)
                    .post(sse::execute)
                    .delete(sse::stop),
            )
            .layer(axum::Extension(sse::Streams::default()))
            .layer(axum::Extension(connections.clone()))
            .layer(RequestBodyLimitLayer::new(settings.max_body_bytes))
    };
    Ok(Router::new()
        .merge(graphql)
        .merge(sse)
        .route(
            "/graphql/ws",
            get(crate::graphql::transport::ws::graphql_ws).layer(axum::Extension(connections)),
        )
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .layer(middleware::from_fn_with_state(
            Arc::new(RouteMetrics::new(&state.app.metrics, ROUTES)),
            track,
        ))
        .layer(cors(&settings.cors_origins)?)
        .layer(CatchPanicLayer::custom(panicked))
        .layer(TraceLayer::new_for_http())
        .with_state(state))
}

/// The CORS policy of `ARENA_CORS_ORIGINS`: `*`, a comma-separated list, or empty (none).
fn cors(origins: &str) -> anyhow::Result<CorsLayer> {
    use axum::http::{header, Method};
    let layer = CorsLayer::new()
        .allow_methods([Method::GET, Method::POST, Method::PUT, Method::DELETE])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            header::ACCEPT,
            header::HeaderName::from_static(crate::graphql::transport::sse::TOKEN_HEADER),
        ])
        .max_age(std::time::Duration::from_secs(600));
    let origins = origins.trim();
    if origins == "*" {
        return Ok(layer.allow_origin(AllowOrigin::any()));
    }
    let list = origins
        .split(',')
        .map(str::trim)
        .filter(|o| !o.is_empty())
        .map(|o| {
            o.parse::<axum::http::HeaderValue>()
                .with_context(|| format!("ARENA_CORS_ORIGINS: `{o}` is not an origin"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(layer.allow_origin(AllowOrigin::list(list)))
}

/// A panic anywhere below is an `INTERNAL` error for the client (the log has the panic).
fn panicked(err: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let what = err
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| err.downcast_ref::<&str>().copied())
        .unwrap_or("a panic");
    tracing::error!(panic = what, "a request panicked");
    crate::graphql::transport::http::error_response(
        StatusCode::INTERNAL_SERVER_ERROR,
        crate::graphql::transport::http::MediaType::Json,
        "INTERNAL",
        "internal error",
    )
}

/// Gives the answers of the body-limit and timeout layers a GraphQL body with a code.
async fn limit_errors(State(http): State<HttpState>, req: Request, next: Next) -> Response {
    use crate::graphql::transport::http::{error_response, MediaType};
    let media = req
        .headers()
        .get(axum::http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .and_then(|a| MediaType::negotiate(Some(a)))
        .unwrap_or(MediaType::Json);
    let resp = next.run(req).await;
    let from_layer = !resp
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| c.contains("json") || c.contains("html"));
    match resp.status() {
        StatusCode::GATEWAY_TIMEOUT if from_layer => {
            let settings = &http.app.settings;
            http.app
                .metrics
                .graphql_errors
                .with_label_values(&["TIMEOUT"])
                .inc();
            error_response(
                StatusCode::GATEWAY_TIMEOUT,
                media,
                "TIMEOUT",
                format!(
                    "the request ran longer than the {} ms limit and was cancelled; a write \
                     that had not reached its commit was rolled back, one already committing \
                     completed (read the data again to know which)",
                    settings.request_timeout_ms
                ),
            )
        }
        StatusCode::PAYLOAD_TOO_LARGE if from_layer => {
            let settings = &http.app.settings;
            error_response(
                StatusCode::PAYLOAD_TOO_LARGE,
                media,
                "BAD_USER_INPUT",
                format!(
                    "the request body is larger than the {}-byte limit",
                    settings.max_body_bytes + settings.max_upload_bytes
                ),
            )
        }
        _ => resp,
    }
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

/// The paths of the router, for their request metrics.
const ROUTES: &[&str] = &[
    "/graphql",
    "/",
    "/graphql/ws",
    "/graphql/stream",
    "/healthz",
    "/readyz",
    "/metrics",
];

async fn track(State(routes): State<Arc<RouteMetrics>>, req: Request, next: Next) -> Response {
    let start = Instant::now();
    let path = req.extensions().get::<MatchedPath>().cloned();
    let resp = next.run(req).await;
    routes.observe(
        path.as_ref().map(MatchedPath::as_str),
        resp.status().as_u16(),
        start.elapsed().as_secs_f64(),
    );
    resp
}
