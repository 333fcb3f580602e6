//! Per-instance Prometheus metrics. Each `Application` owns its registry, so two instances in
//! one process (tests, the benchmark) never mix their counts.

use std::sync::OnceLock;

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// The counters and histograms `/metrics` exposes.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// HTTP requests by path and status.
    pub http_requests: IntCounterVec,
    /// HTTP latency by path, in seconds.
    pub http_latency: HistogramVec,
    /// GraphQL errors by `extensions.code`.
    pub graphql_errors: IntCounterVec,
    /// Round trips to the cache tier by operation (each cache call is one).
    pub cache_round_trips: IntCounterVec,
    /// Cache calls that failed (the request fell back to the database).
    pub cache_errors: IntCounter,
    /// Entity lookups answered by the cache.
    pub cache_hits: IntCounterVec,
    /// Entity lookups the cache could not answer.
    pub cache_misses: IntCounterVec,
    /// Queries looked up in the memo of responses, by `result`: `hit`, `stale` (an entry
    /// read changed) or `miss`.
    pub response_memo: IntCounterVec,
    /// `arena_near_cache_total{result}`: keys served from (`hit`) or not found in (`miss`)
    /// the near cache, entries dropped by an invalidation, fills refused after one, other
    /// replicas' leases revoked by a write (they did not acknowledge in time), writes that
    /// waited out the grace after the lease set was lost (`grace`).
    pub near_cache: IntCounterVec,
    /// SQL statements sent to the database, by `caller`: `request` (on a request's path) or
    /// `background` (the workers: count flushes, sync passes, health probes).
    pub sql_queries: IntCounterVec,
    /// Password and secret hashes computed (real or dummy), by the hashing threads.
    pub hashes: IntCounter,
    /// Hashes refused because every hashing thread was busy and the queue was full.
    pub hashes_refused: IntCounter,
    /// Hashes running or waiting for a hashing thread.
    pub hashes_in_flight: IntGauge,
    /// Open WebSocket connections, by whether their credential was verified
    /// (`authenticated`, `unauthenticated`).
    pub ws_connections: IntGaugeVec,
    /// Operations running on WebSocket connections.
    pub ws_operations: IntGauge,
    /// WebSocket connections and operations refused at a cap (`connection`, `operation`).
    pub ws_refused: IntCounterVec,
    /// Executions of live queries (each serves every subscriber of its document).
    pub live_executions: IntCounter,
    /// Live queries running (subscribers).
    pub live_queries: IntGauge,
    /// Distinct live documents (document, variables, credential) being kept up to date.
    pub live_documents: IntGauge,
}

tokio::task_local! {
    static BACKGROUND: ();
}

/// Runs `fut` as background work: the SQL statements it sends count as
/// `caller="background"`, so that a request's own cost can be read apart from the workers'.
pub async fn background<F: std::future::Future>(fut: F) -> F::Output {
    BACKGROUND.scope((), fut).await
}

/// `background` inside [`background`], `request` anywhere else.
pub fn caller() -> &'static str {
    if BACKGROUND.try_with(|_| ()).is_ok() {
        "background"
    } else {
        "request"
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh registry with every metric registered.
    pub fn new() -> Self {
        let registry = Registry::new();
        let http_requests = IntCounterVec::new(
            Opts::new("arena_http_requests_total", "HTTP requests"),
            &["path", "status"],
        )
        .expect("valid metric");
        let http_latency = HistogramVec::new(
            HistogramOpts::new("arena_http_request_duration_seconds", "HTTP latency"),
            &["path"],
        )
        .expect("valid metric");
        let graphql_errors = IntCounterVec::new(
            Opts::new("arena_graphql_errors_total", "GraphQL errors by code"),
            &["code"],
        )
        .expect("valid metric");
        let cache_round_trips = IntCounterVec::new(
            Opts::new(
                "arena_cache_round_trips_total",
                "Round trips to the cache tier",
            ),
            &["op", "caller"],
        )
        .expect("valid metric");
        let cache_errors = IntCounter::new("arena_cache_errors_total", "Failed cache calls")
            .expect("valid metric");
        let cache_hits = IntCounterVec::new(
            Opts::new("arena_cache_hits_total", "Lookups answered by the cache"),
            &["entity"],
        )
        .expect("valid metric");
        let cache_misses = IntCounterVec::new(
            Opts::new(
                "arena_cache_misses_total",
                "Lookups the cache could not answer",
            ),
            &["entity"],
        )
        .expect("valid metric");
        let sql_queries = IntCounterVec::new(
            Opts::new("arena_sql_queries_total", "SQL statements executed"),
            &["caller"],
        )
        .expect("valid metric");
        let hashes = IntCounter::new(
            "arena_hashes_total",
            "Password and secret hashes computed (real or dummy)",
        )
        .expect("valid metric");
        let hashes_refused = IntCounter::new(
            "arena_hashes_refused_total",
            "Hashes refused at once: every hashing thread busy and the queue full",
        )
        .expect("valid metric");
        let hashes_in_flight = IntGauge::new(
            "arena_hashes_in_flight",
            "Hashes running or waiting for a hashing thread",
        )
        .expect("valid metric");
        let ws_connections = IntGaugeVec::new(
            Opts::new("arena_ws_connections", "Open WebSocket connections"),
            &["auth"],
        )
        .expect("valid metric");
        let ws_operations =
            IntGauge::new("arena_ws_operations", "Operations running on WebSockets")
                .expect("valid metric");
        let live_executions = IntCounter::new(
            "arena_live_executions_total",
            "Executions of live queries, each shared by every subscriber of its document",
        )
        .expect("valid metric");
        let live_queries =
            IntGauge::new("arena_live_queries", "Live queries running").expect("valid metric");
        let live_documents = IntGauge::new(
            "arena_live_documents",
            "Distinct live documents (document, variables, credential) kept up to date",
        )
        .expect("valid metric");
        let ws_refused = IntCounterVec::new(
            Opts::new(
                "arena_ws_refused_total",
                "WebSocket connections and operations refused at a cap",
            ),
            &["what"],
        )
        .expect("valid metric");
        let response_memo = IntCounterVec::new(
            Opts::new(
                "arena_response_memo_total",
                "Queries looked up in the memo of responses",
            ),
            &["result"],
        )
        .expect("valid metric");
        let near_cache = IntCounterVec::new(
            Opts::new(
                "arena_near_cache_total",
                "Keys looked up in the near cache of Redis entries, and its invalidations",
            ),
            &["result"],
        )
        .expect("valid metric");
        for c in [
            Box::new(http_requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(http_latency.clone()),
            Box::new(graphql_errors.clone()),
            Box::new(cache_round_trips.clone()),
            Box::new(cache_errors.clone()),
            Box::new(cache_hits.clone()),
            Box::new(cache_misses.clone()),
            Box::new(response_memo.clone()),
            Box::new(near_cache.clone()),
            Box::new(sql_queries.clone()),
            Box::new(hashes.clone()),
            Box::new(hashes_refused.clone()),
            Box::new(hashes_in_flight.clone()),
            Box::new(ws_connections.clone()),
            Box::new(ws_operations.clone()),
            Box::new(ws_refused.clone()),
            Box::new(live_executions.clone()),
            Box::new(live_queries.clone()),
            Box::new(live_documents.clone()),
        ] {
            registry.register(c).expect("metric registered once");
        }
        Self {
            registry,
            http_requests,
            http_latency,
            graphql_errors,
            cache_round_trips,
            cache_errors,
            cache_hits,
            cache_misses,
            response_memo,
            near_cache,
            sql_queries,
            hashes,
            hashes_refused,
            hashes_in_flight,
            ws_connections,
            ws_operations,
            ws_refused,
            live_executions,
            live_queries,
            live_documents,
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        // Encoding into a Vec cannot fail for well-formed metrics.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

/// The request metrics of the routes of a router, resolved once: a request finds its
/// route's series by comparing a few strings, not by hashing its labels into the registry.
pub struct RouteMetrics {
    routes: Vec<Route>,
}

struct Route {
    path: &'static str,
    latency: Histogram,
    /// `arena_http_requests_total{path, status}` by status − 100, made on first use.
    by_status: Box<[OnceLock<IntCounter>]>,
    requests: IntCounterVec,
}

impl RouteMetrics {
    /// The series of `paths`, plus `unmatched` for requests no route matched.
    pub fn new(metrics: &Metrics, paths: &[&'static str]) -> Self {
        let routes = paths
            .iter()
            .copied()
            .chain(["unmatched"])
            .map(|path| Route {
                path,
                latency: metrics.http_latency.with_label_values(&[path]),
                by_status: (100..600).map(|_| OnceLock::new()).collect(),
                requests: metrics.http_requests.clone(),
            })
            .collect();
        Self { routes }
    }

    /// Counts a request to `path` (the route it matched) answered with `status` after
    /// `seconds`.
    pub fn observe(&self, path: Option<&str>, status: u16, seconds: f64) {
        let route = path
            .and_then(|p| self.routes.iter().find(|r| r.path == p))
            .unwrap_or_else(|| self.routes.last().expect("the unmatched route"));
        route.latency.observe(seconds);
        match route.by_status.get(usize::from(status).wrapping_sub(100)) {
            Some(slot) => slot
                .get_or_init(|| {
                    route
                        .requests
                        .with_label_values(&[route.path, &status.to_string()])
                })
                .inc(),
            None => route
                .requests
                .with_label_values(&[route.path, &status.to_string()])
                .inc(),
        }
    }
}
