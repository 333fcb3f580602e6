//! What every domain's tests stand on: the real Arena started for a test ([`TestApp`]), on
//! the backends of a test matrix ([`scenario!`](crate::scenario)), and the tools around it.
//!
//! - [`app`]: `TestApp::builder(Backends::Real).settings(|s| ...).try_spawn().await`, each
//!   app with its own database and cache prefix, so tests run in parallel; replicas,
//!   restarts, a re-created database.
//! - [`scenario`]: one scenario, one test case per backend.
//! - [`backends`]: which backends, and where their servers are.
//! - [`client`]: GraphQL over HTTP, metrics, reading errors. [`ws`]: GraphQL over WebSocket.
//! - [`proxy`], [`redis`]: a Redis outage for one app; a Redis of the test's own.
//! - [`report`]: cases that did not run, measured figures. [`wait`], [`sql`]: small helpers.
//!
//! # Where the real servers are
//!
//! Embedded backends need nothing. The others use PostgreSQL, Redis, a Redis Cluster and
//! MongoDB, each found once per process: the URL in `TEST_DATABASE_URL`, `TEST_REDIS_URL`,
//! `TEST_REDIS_CLUSTER_URL`, `TEST_MONGODB_URL` when set; otherwise the usual local
//! address, if a TCP connection to it succeeds within 250 ms
//! (`postgres://postgres@127.0.0.1:5432/test`, `redis://127.0.0.1:6379`, the cluster of
//! `.ci/start-redis-cluster.sh` on 127.0.0.1:7101–7103, `mongodb://127.0.0.1:27017`). A
//! variable set to the empty string leaves its server out. The real backends keep their
//! documents in MongoDB when it was found, else in PostgreSQL.
//!
//! # Cases that did not run
//!
//! A case whose servers were not found (or that needs `redis-server` to start a Redis of
//! its own, and it is not installed) returns at once and passes: `cargo test` needs nothing
//! but Rust. It is not silent: it prints `SKIPPED <test>: <why>` on the terminal, and the
//! run ends, after libtest's `test result:` line, with `NOT RUN: <n> test case(s) passed
//! without running`, the list being in `target/tmp/api-not-run.txt` (removed by a run in
//! which every case ran). With `CI=true` such a case fails instead.

pub mod app;
pub mod backends;
pub mod client;
pub mod proxy;
pub mod redis;
pub mod report;
pub mod scenario;
pub mod sql;
pub mod wait;
pub mod ws;

pub use app::TestApp;
pub use backends::{servers, Backends};
pub use client::{assert_no_errors, basic, error_code, error_message, metric_in};
pub use proxy::Proxy;
pub use redis::PrivateRedis;
pub use report::figure;
pub use wait::wait_until;
