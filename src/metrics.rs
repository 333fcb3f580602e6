//! Per-instance Prometheus metrics. Each `Application` owns its registry, so two instances in
//! one process (tests, the benchmark) never mix their counts.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
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
    /// SQL statements sent to the database.
    pub sql_queries: IntCounter,
    /// Open WebSocket connections, by whether their credential was verified
    /// (`authenticated`, `unauthenticated`).
    pub ws_connections: IntGaugeVec,
    /// Operations running on WebSocket connections.
    pub ws_operations: IntGauge,
    /// WebSocket connections and operations refused at a cap (`connection`, `operation`).
    pub ws_refused: IntCounterVec,
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
            &["op"],
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
        let sql_queries = IntCounter::new("arena_sql_queries_total", "SQL statements executed")
            .expect("valid metric");
        let ws_connections = IntGaugeVec::new(
            Opts::new("arena_ws_connections", "Open WebSocket connections"),
            &["auth"],
        )
        .expect("valid metric");
        let ws_operations =
            IntGauge::new("arena_ws_operations", "Operations running on WebSockets")
                .expect("valid metric");
        let ws_refused = IntCounterVec::new(
            Opts::new(
                "arena_ws_refused_total",
                "WebSocket connections and operations refused at a cap",
            ),
            &["what"],
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
            Box::new(sql_queries.clone()),
            Box::new(ws_connections.clone()),
            Box::new(ws_operations.clone()),
            Box::new(ws_refused.clone()),
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
            sql_queries,
            ws_connections,
            ws_operations,
            ws_refused,
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
