//! The four backends: SQL, cache, documents and events. Each is a trait (or, for
//! SQL, sea-orm's connection) with an embedded implementation and a server one, chosen by URL.

pub mod cache;
pub mod documents;
pub mod events;
pub mod redis_client;
pub mod sql;
pub mod sql_direct;

/// What a backend reports to `/readyz`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BackendStatus {
    /// `sql`, `cache`, `documents` or `events`.
    pub tier: &'static str,
    /// Which implementation serves the tier (`sqlite`, `postgres`, `redis`, `memory`, …).
    pub kind: &'static str,
    /// Whether the last probe succeeded.
    pub ok: bool,
    /// The probe's error, if any (never contains credentials).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}
