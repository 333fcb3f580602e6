//! `spawn_app`: the real Arena on port 0, with its own database (a SQLite file, or a fresh
//! PostgreSQL database) and its own cache prefix, so tests run in parallel.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use arena::{AppState, Application, Settings};
use serde_json::{json, Value};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Which backends a test app runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backends {
    /// SQLite file, in-process cache, SQL documents, local events.
    Embedded,
    /// PostgreSQL (`TEST_DATABASE_URL`) and Redis (`TEST_REDIS_URL`); MongoDB too when
    /// `TEST_MONGODB_URL` is set.
    Real,
    /// PostgreSQL and a Redis Cluster (`TEST_REDIS_CLUSTER_URL`, a `redis-cluster://` URL);
    /// MongoDB too when `TEST_MONGODB_URL` is set.
    RealCluster,
}

/// Runs a scenario `async fn name(app: TestApp)` once on embedded backends and once on
/// PostgreSQL + Redis (skipped, visibly, when their URLs are not set; failed in CI).
#[macro_export]
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => { $(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn embedded() {
                let app = $crate::helpers::spawn_app($crate::helpers::Backends::Embedded)
                    .await
                    .expect("embedded backends are always available");
                super::$name(app).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn postgres_redis() {
                match $crate::helpers::spawn_app($crate::helpers::Backends::Real).await {
                    Some(app) => super::$name(app).await,
                    None => $crate::helpers::skipped("TEST_DATABASE_URL / TEST_REDIS_URL not set"),
                }
            }
        }
    )* };
}

/// Like [`both_backends!`], each scenario with its settings adjusted:
/// `name => |s| s.field = value`.
#[macro_export]
macro_rules! both_backends_with {
    ($($name:ident => $tweak:expr),* $(,)?) => { $(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn embedded() {
                let app = $crate::helpers::spawn_app_with($crate::helpers::Backends::Embedded, $tweak)
                    .await
                    .expect("embedded backends are always available");
                super::$name(app).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn postgres_redis() {
                match $crate::helpers::spawn_app_with($crate::helpers::Backends::Real, $tweak).await {
                    Some(app) => super::$name(app).await,
                    None => $crate::helpers::skipped("TEST_DATABASE_URL / TEST_REDIS_URL not set"),
                }
            }
        }
    )* };
}

/// Runs a scenario of several replicas (`app.spawn_replica()`) on PostgreSQL + Redis and on
/// PostgreSQL + a Redis Cluster. Its embedded variant is ignored: embedded replicas share the
/// SQLite file but neither the in-process cache nor the in-process events, by design.
#[macro_export]
macro_rules! across_replicas {
    ($($name:ident),* $(,)?) => { $(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            #[ignore = "embedded backends are one process: replicas share no cache and no events"]
            async fn embedded() {
                let app = $crate::helpers::spawn_app($crate::helpers::Backends::Embedded)
                    .await
                    .expect("embedded backends are always available");
                super::$name(app).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn postgres_redis() {
                match $crate::helpers::spawn_app($crate::helpers::Backends::Real).await {
                    Some(app) => super::$name(app).await,
                    None => $crate::helpers::skipped("TEST_DATABASE_URL / TEST_REDIS_URL not set"),
                }
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn postgres_redis_cluster() {
                match $crate::helpers::spawn_app($crate::helpers::Backends::RealCluster).await {
                    Some(app) => super::$name(app).await,
                    None => $crate::helpers::skipped(
                        "TEST_DATABASE_URL / TEST_REDIS_CLUSTER_URL not set",
                    ),
                }
            }
        }
    )* };
}

/// Says that the running test was skipped and why, on the terminal itself: libtest captures
/// `eprintln!` of a passing test, but not writes to the stderr handle. In CI (`CI=true`),
/// where every backend is set up, a missing one fails the test instead.
pub fn skipped(why: &str) {
    use std::io::Write;
    let thread = std::thread::current();
    let test = thread.name().unwrap_or("a test");
    if in_ci() {
        panic!("{test}: {why}; CI runs every suite against every backend");
    }
    let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {why}");
}

/// Prints a measured figure of the running test on the terminal (shown even when the test
/// passes), as `FIGURE <test>: <what>`.
pub fn figure(what: &str) {
    use std::io::Write;
    let thread = std::thread::current();
    let test = thread.name().unwrap_or("a test");
    let _ = writeln!(std::io::stderr(), "FIGURE {test}: {what}");
}

/// Whether the tests run in CI (`CI=true`), where no suite may be skipped.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// A running Arena and a client for it.
pub struct TestApp {
    /// Where it listens.
    pub addr: SocketAddr,
    /// `http://addr`.
    pub url: String,
    /// An HTTP client.
    pub client: reqwest::Client,
    /// The app's shared state (database, cache, metrics).
    pub state: AppState,
    /// Where the app counts commands before flushing them to the cache tier.
    pub usage: std::sync::Arc<arena::usage::counting::UsageBuffer>,
    /// The settings it runs with.
    pub settings: Settings,
    /// Which backends.
    pub backends: Backends,
    shutdown: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<anyhow::Result<()>>>,
    _dir: Option<std::sync::Arc<tempfile::TempDir>>,
    drop_db: Option<(String, String)>,
}

/// Settings for a test: embedded backends in a temp dir, or fresh real ones; fast hashing.
pub async fn test_settings(
    backends: Backends,
) -> Option<(
    Settings,
    Option<tempfile::TempDir>,
    Option<(String, String)>,
)> {
    let mut s = Settings::defaults();
    s.addr = "127.0.0.1:0".parse().unwrap();
    s.pbkdf2_iterations = 1_000;
    s.cache_prefix = format!("test:{}:", uuid::Uuid::new_v4().simple());
    s.sync_enabled = false;
    s.db_pool = 8;
    s.log = "warn".into();
    s.redis_url = None;
    s.mongodb_url = None;
    match backends {
        Backends::Embedded => {
            let dir = tempfile::tempdir().unwrap();
            s.database_url = format!(
                "sqlite://{}?mode=rwc",
                dir.path().join("arena.db").display()
            );
            Some((s, Some(dir), None))
        }
        Backends::Real | Backends::RealCluster => {
            let admin = std::env::var("TEST_DATABASE_URL").ok()?;
            let redis = match backends {
                Backends::RealCluster => std::env::var("TEST_REDIS_CLUSTER_URL"),
                _ => std::env::var("TEST_REDIS_URL"),
            }
            .ok()
            .filter(|u| !u.is_empty())?;
            let name = format!("arena_test_{}", uuid::Uuid::new_v4().simple());
            let conn = sea_orm::Database::connect(&admin)
                .await
                .expect("TEST_DATABASE_URL");
            sea_orm::ConnectionTrait::execute_unprepared(
                &conn,
                &format!("CREATE DATABASE \"{name}\""),
            )
            .await
            .expect("creating the test database");
            conn.close().await.ok();
            let base = admin.rsplit_once('/').map(|(b, _)| b).unwrap_or(&admin);
            s.database_url = format!("{base}/{name}");
            s.redis_url = Some(redis);
            if let Ok(m) = std::env::var("TEST_MONGODB_URL") {
                s.mongodb_url = Some(m);
                s.mongodb_database = name.clone();
            }
            Some((s, None, Some((admin, name))))
        }
    }
}

/// Spawns Arena on `backends`; `None` when real backends are asked for but not configured.
pub async fn spawn_app(backends: Backends) -> Option<TestApp> {
    spawn_app_with(backends, |_| {}).await
}

/// Like [`spawn_app`], with settings adjusted by `tweak`.
pub async fn spawn_app_with(
    backends: Backends,
    tweak: impl FnOnce(&mut Settings),
) -> Option<TestApp> {
    let (mut settings, dir, drop_db) = test_settings(backends).await?;
    tweak(&mut settings);
    let mut app = start(settings, backends).await;
    app._dir = dir.map(std::sync::Arc::new);
    app.drop_db = drop_db;
    Some(app)
}

/// Starts an Arena with exactly these settings.
pub async fn start(settings: Settings, backends: Backends) -> TestApp {
    arena::telemetry::init(&settings.log, false);
    let app = Application::build(settings.clone())
        .await
        .expect("Arena starts");
    let addr = app.local_addr();
    let state = app.state().clone();
    let usage = app.usage().clone();
    let (tx, rx) = oneshot::channel::<()>();
    let handle = tokio::spawn(app.run_until(async move {
        let _ = rx.await;
    }));
    TestApp {
        addr,
        url: format!("http://{addr}"),
        client: reqwest::Client::new(),
        state,
        usage,
        settings,
        backends,
        shutdown: Some(tx),
        handle: Some(handle),
        _dir: None,
        drop_db: None,
    }
}

impl TestApp {
    /// A second Arena on the same database, cache prefix and document store (a replica).
    pub async fn spawn_replica(&self) -> TestApp {
        self.spawn_replica_with(|_| {}).await
    }

    /// A replica whose settings are adjusted by `tweak` (a Redis URL of its own, say).
    pub async fn spawn_replica_with(&self, tweak: impl FnOnce(&mut Settings)) -> TestApp {
        let mut settings = self.settings.clone();
        tweak(&mut settings);
        let mut app = start(settings, self.backends).await;
        app._dir = self._dir.clone();
        app
    }

    /// Stops this Arena, drops its database and creates an empty one of the same name (a
    /// SQLite file deleted, or `DROP DATABASE` + `CREATE DATABASE`), then starts a new Arena
    /// on the same settings: the same cache (Redis keeps running) and cache prefix.
    pub async fn recreate_database(mut self) -> TestApp {
        let dir = self._dir.take();
        let drop_db = self.drop_db.take();
        let (settings, backends) = (self.settings.clone(), self.backends);
        self.stop().await;
        match &drop_db {
            Some((admin, name)) => {
                let conn = sea_orm::Database::connect(admin).await.expect("admin URL");
                for sql in [
                    format!("DROP DATABASE \"{name}\" WITH (FORCE)"),
                    format!("CREATE DATABASE \"{name}\""),
                ] {
                    sea_orm::ConnectionTrait::execute_unprepared(&conn, &sql)
                        .await
                        .expect("re-creating the database");
                }
                conn.close().await.ok();
            }
            None => {
                let path = settings
                    .database_url
                    .trim_start_matches("sqlite://")
                    .split('?')
                    .next()
                    .unwrap()
                    .to_owned();
                for suffix in ["", "-wal", "-shm"] {
                    let _ = std::fs::remove_file(format!("{path}{suffix}"));
                }
            }
        }
        let mut app = start(settings, backends).await;
        app._dir = dir;
        app.drop_db = drop_db;
        app
    }

    /// Stops this Arena gracefully (workers flush) and starts a new one on the same settings,
    /// database and document store; an embedded cache, being in-process, starts empty.
    pub async fn restart(mut self) -> TestApp {
        let dir = self._dir.take();
        let drop_db = self.drop_db.take();
        let (settings, backends) = (self.settings.clone(), self.backends);
        self.stop().await;
        let mut app = start(settings, backends).await;
        app._dir = dir;
        app.drop_db = drop_db;
        app
    }

    /// Stops the server gracefully (in-flight requests finish, workers flush) and waits.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(h) = self.handle.take() {
            h.await.expect("server task").expect("server ran");
        }
    }

    /// POSTs one GraphQL operation; returns the whole JSON response.
    pub async fn gql(&self, query: &str, variables: Value) -> Value {
        self.gql_auth(None, query, variables).await
    }

    /// POSTs one GraphQL operation with `Authorization: Bearer <token>`.
    pub async fn gql_as(&self, token: &str, query: &str, variables: Value) -> Value {
        self.gql_auth(Some(format!("Bearer {token}")), query, variables)
            .await
    }

    /// POSTs one GraphQL operation as the client `from` (`X-Forwarded-For: <from>`; it
    /// counts only when the app trusts 127.0.0.1 as a proxy), with a raw `Authorization`
    /// value.
    pub async fn gql_from(
        &self,
        from: &str,
        auth: Option<String>,
        query: &str,
        variables: Value,
    ) -> Value {
        let mut req = self
            .client
            .post(format!("{}/graphql", self.url))
            .header("X-Forwarded-For", from)
            .json(&json!({ "query": query, "variables": variables }));
        if let Some(a) = auth {
            req = req.header("Authorization", a);
        }
        req.send()
            .await
            .expect("request sent")
            .json()
            .await
            .expect("JSON response")
    }

    /// POSTs one GraphQL operation with a raw `Authorization` value.
    pub async fn gql_auth(&self, auth: Option<String>, query: &str, variables: Value) -> Value {
        let mut req = self
            .client
            .post(format!("{}/graphql", self.url))
            .json(&json!({ "query": query, "variables": variables }));
        if let Some(a) = auth {
            req = req.header("Authorization", a);
        }
        req.send()
            .await
            .expect("request sent")
            .json()
            .await
            .expect("JSON response")
    }

    /// Creates `username` (password `password123`) and logs in; returns the token.
    pub async fn login_new_user(&self, username: &str) -> String {
        let r = self
            .gql(
                "mutation($u: String!) { createUser(username: $u, password: \"password123\") { id } }",
                json!({ "u": username }),
            )
            .await;
        assert_no_errors(&r);
        let r = self
            .gql(
                "mutation($u: String!) { login(username: $u, password: \"password123\") { token } }",
                json!({ "u": username }),
            )
            .await;
        assert_no_errors(&r);
        r["data"]["login"]["token"].as_str().unwrap().to_owned()
    }

    /// The id of the user `token` signs in.
    pub async fn viewer_id(&self, token: &str) -> i64 {
        let r = self.gql_as(token, "{ me { id } }", json!({})).await;
        assert_no_errors(&r);
        r["data"]["me"]["id"].as_str().unwrap().parse().unwrap()
    }

    /// The value of one metric sample from `/metrics`, e.g.
    /// `arena_cache_round_trips_total{op="versioned_get_many"}`; 0 when absent.
    pub async fn metric(&self, sample: &str) -> f64 {
        let text = self
            .client
            .get(format!("{}/metrics", self.url))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        metric_in(&text, sample)
    }

    /// The WebSocket URL.
    pub fn ws_url(&self) -> String {
        format!("ws://{}/graphql/ws", self.addr)
    }
}

/// Sums the samples of `/metrics` text whose name and labels start with `sample`
/// (so `arena_cache_round_trips_total` sums every `op`).
pub fn metric_in(text: &str, sample: &str) -> f64 {
    let (name, labels) = match sample.split_once('{') {
        Some((n, l)) => (n, Some(l.trim_end_matches('}'))),
        None => (sample, None),
    };
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (key, value) = l.rsplit_once(' ')?;
            let (kname, klabels) = match key.split_once('{') {
                Some((n, l)) => (n, l.trim_end_matches('}')),
                None => (key, ""),
            };
            if kname != name {
                return None;
            }
            if let Some(want) = labels {
                if !want.split(',').all(|w| klabels.split(',').any(|k| k == w)) {
                    return None;
                }
            }
            value.parse::<f64>().ok()
        })
        .sum()
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some((admin, name)) = self.drop_db.take() {
            // The pool may still hold connections: FORCE closes them.
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async move {
                    if let Ok(conn) = sea_orm::Database::connect(&admin).await {
                        let _ = sea_orm::ConnectionTrait::execute_unprepared(
                            &conn,
                            &format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"),
                        )
                        .await;
                    }
                });
            })
            .join();
        }
    }
}

/// Panics with the errors when the response has any.
pub fn assert_no_errors(resp: &Value) {
    assert!(
        resp.get("errors").is_none_or(|e| e.is_null()),
        "unexpected errors: {resp:#}"
    );
}

/// The `extensions.code` of the first error.
pub fn error_code(resp: &Value) -> &str {
    resp["errors"][0]["extensions"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("expected an error with a code: {resp:#}"))
}

/// The message of the first error.
pub fn error_message(resp: &Value) -> &str {
    resp["errors"][0]["message"].as_str().unwrap_or("")
}

/// Waits until `cond` holds, checking every 20 ms, failing after `limit`.
pub async fn wait_until<F, Fut>(limit: Duration, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if cond().await {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition not met in {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// An `Authorization` value for an API key: `Basic base64(publicKey:secretKey)`.
pub fn basic(public_key: &str, secret: &str) -> String {
    use base64::Engine as _;
    let raw = format!("{public_key}:{secret}");
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(raw)
    )
}

/// Arena on PostgreSQL and a Redis reached through a [`Proxy`] (to the local Redis) that the
/// test can cut; `None` when `TEST_REDIS_URL` is not set.
pub async fn spawn_behind_proxy() -> Option<(TestApp, Proxy)> {
    spawn_behind_proxy_with(|_| {}).await
}

/// [`spawn_behind_proxy`] with settings adjusted by `tweak`.
pub async fn spawn_behind_proxy_with(
    tweak: impl FnOnce(&mut Settings),
) -> Option<(TestApp, Proxy)> {
    let redis = std::env::var("TEST_REDIS_URL").ok()?;
    assert!(
        redis.contains("127.0.0.1:6379") || redis.contains("localhost:6379"),
        "the proxy forwards to the local Redis"
    );
    let proxy = Proxy::start(0).await;
    let port = proxy.port;
    let app = spawn_app_with(Backends::Real, |s| {
        s.redis_url = Some(format!("redis://127.0.0.1:{port}"));
        tweak(s);
    })
    .await
    .expect("TEST_DATABASE_URL and TEST_REDIS_URL are set");
    Some((app, proxy))
}

/// A TCP proxy in front of Redis that the test can cut and restore, or freeze: a real
/// outage for this app only, without touching the Redis server other tests share.
pub struct Proxy {
    /// The port it listens on.
    pub port: u16,
    task: Option<tokio::task::JoinHandle<()>>,
    frozen: tokio::sync::watch::Sender<bool>,
}

impl Proxy {
    /// Listens on `port` (0: any) and forwards each connection to the local Redis.
    pub async fn start(port: u16) -> Proxy {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap();
        let port = listener.local_addr().unwrap().port();
        let (frozen, watch) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                let Ok((inbound, _)) = listener.accept().await else {
                    break;
                };
                let watch = watch.clone();
                conns.spawn(async move {
                    if let Ok(outbound) = tokio::net::TcpStream::connect("127.0.0.1:6379").await {
                        let (ri, wi) = inbound.into_split();
                        let (ro, wo) = outbound.into_split();
                        tokio::join!(pump(ri, wo, watch.clone()), pump(ro, wi, watch));
                    }
                });
            }
        });
        Proxy {
            port,
            task: Some(task),
            frozen,
        }
    }

    /// Cuts every connection and stops listening (dropping the JoinSet aborts the copies).
    pub fn cut(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }

    /// Stops forwarding (connections stay open, bytes wait) until [`Proxy::thaw`]: a Redis
    /// that does not answer, or a network that lost its packets.
    pub fn freeze(&self) {
        self.frozen.send_replace(true);
    }

    /// Forwards again what waited and what follows.
    pub fn thaw(&self) {
        self.frozen.send_replace(false);
    }
}

/// Copies `from` to `to`, holding the bytes while the proxy is frozen.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut frozen: tokio::sync::watch::Receiver<bool>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if frozen.wait_for(|f| !*f).await.is_err() {
            break;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}

/// A Redis server of this test's own (`redis-server` on a free port, nothing on disk),
/// for what cannot be done to the shared one: filling it up, changing its settings.
/// Stopped when dropped.
pub struct PrivateRedis {
    /// The port it listens on.
    pub port: u16,
    child: std::process::Child,
}

impl PrivateRedis {
    /// Starts one; `None` when `redis-server` is not installed.
    pub async fn start() -> Option<PrivateRedis> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .ok()?
            .local_addr()
            .ok()?
            .port();
        let child = spawn_redis_server(port)?;
        let redis = PrivateRedis { port, child };
        wait_until(Duration::from_secs(10), || async {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
        })
        .await;
        Some(redis)
    }

    /// Kills the server (no shutdown: whatever it held is gone, as after a crash without
    /// persistence) and starts an empty one on the same port.
    pub async fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.child = spawn_redis_server(self.port).expect("redis-server starts again");
        let port = self.port;
        wait_until(Duration::from_secs(10), || async {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
        })
        .await;
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Runs `redis-cli` against it and returns its output.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = std::process::Command::new("redis-cli")
            .args(["-p", &self.port.to_string()])
            .args(args)
            .output()
            .expect("redis-cli runs");
        assert!(out.status.success(), "redis-cli {args:?}");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }
}

fn spawn_redis_server(port: u16) -> Option<std::process::Child> {
    std::process::Command::new("redis-server")
        .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
        .args(["--save", "", "--appendonly", "no"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .ok()
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
