//! [`TestApp`]: the real Arena on port 0, with its own database (a SQLite file, or a fresh
//! PostgreSQL database) and its own cache prefix, so tests run in parallel; its replicas,
//! restarts and a re-created database.

use std::net::SocketAddr;
use std::sync::Arc;

use arena::usage::counting::UsageBuffer;
use arena::{AppState, Application, Settings};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::backends::{servers, Backends};
use super::proxy::Proxy;
use super::report::skipped;

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
    pub usage: Arc<UsageBuffer>,
    /// The settings it runs with.
    pub settings: Settings,
    /// Which backends.
    pub backends: Backends,
    /// Its database, shared by its replicas, removed when the last of them is dropped.
    database: Arc<TestDatabase>,
    shutdown: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<anyhow::Result<()>>>,
}

/// How a [`TestApp`] is started: [`TestApp::builder`].
pub struct TestAppBuilder<'a> {
    backends: Backends,
    redis_url: Option<String>,
    tweaks: Vec<Tweak<'a>>,
}

/// An adjustment of the settings.
type Tweak<'a> = Box<dyn FnOnce(&mut Settings) + 'a>;

impl TestApp {
    /// A test app on `backends`, with the test settings (fast hashing, no sync worker, a
    /// cache prefix of its own) adjusted by each [`TestAppBuilder::settings`] in turn.
    pub fn builder<'a>(backends: Backends) -> TestAppBuilder<'a> {
        TestAppBuilder {
            backends,
            redis_url: None,
            tweaks: Vec::new(),
        }
    }
}

impl<'a> TestAppBuilder<'a> {
    /// Adjusts the settings (after the adjustments given before).
    pub fn settings(mut self, tweak: impl FnOnce(&mut Settings) + 'a) -> Self {
        self.tweaks.push(Box::new(tweak));
        self
    }

    /// Starts the app; panics when its backends were not found. For backends known to be
    /// there: embedded ones, or those of an app already running.
    pub async fn spawn(self) -> TestApp {
        if let Some(why) = self.backends.missing() {
            panic!("{:?} backends: {why}", self.backends);
        }
        let (mut settings, database) = TestDatabase::create(self.backends).await;
        if let Some(url) = self.redis_url {
            settings.redis_url = Some(url);
        }
        for tweak in self.tweaks {
            tweak(&mut settings);
        }
        TestApp::start(settings, self.backends, Arc::new(database)).await
    }

    /// Starts the app; `None` when its backends were not found, the running case then
    /// recorded as not run (a failure in CI).
    pub async fn try_spawn(self) -> Option<TestApp> {
        if !self.found() {
            return None;
        }
        Some(self.spawn().await)
    }

    /// Like [`TestAppBuilder::try_spawn`], the app reaching Redis through a [`Proxy`] that
    /// the test can cut. On `Backends::Real` only (the in-process cache cannot be
    /// unreachable): on others the case does not run.
    pub async fn try_spawn_behind_proxy(mut self) -> Option<(TestApp, Proxy)> {
        if self.backends != Backends::Real {
            skipped("a proxy stands before one Redis server: Backends::Real only");
            return None;
        }
        if !self.found() {
            return None;
        }
        let proxy = Proxy::start(servers().redis.url().expect("Redis was found")).await;
        self.redis_url = Some(proxy.url());
        Some((self.spawn().await, proxy))
    }

    /// Whether the backends were found; if not, the running case is recorded as not run.
    fn found(&self) -> bool {
        match self.backends.missing() {
            Some(why) => {
                skipped(&why);
                false
            }
            None => true,
        }
    }
}

impl TestApp {
    /// Starts an Arena with exactly these settings.
    async fn start(settings: Settings, backends: Backends, database: Arc<TestDatabase>) -> TestApp {
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
            database,
            shutdown: Some(tx),
            handle: Some(handle),
        }
    }

    /// A second Arena on the same database, cache prefix and document store (a replica).
    pub async fn spawn_replica(&self) -> TestApp {
        TestApp::start(self.settings.clone(), self.backends, self.database.clone()).await
    }

    /// A replica whose settings are this app's adjusted by `tweak` (another Redis URL: this
    /// app may go through a [`Proxy`]).
    pub async fn spawn_replica_with(&self, tweak: impl FnOnce(&mut Settings)) -> TestApp {
        let mut settings = self.settings.clone();
        tweak(&mut settings);
        TestApp::start(settings, self.backends, self.database.clone()).await
    }

    /// A replica that reaches Redis directly, where this app goes through a [`Proxy`].
    pub async fn spawn_direct_replica(&self) -> TestApp {
        let mut settings = self.settings.clone();
        settings.redis_url = servers().redis.url().map(str::to_owned);
        TestApp::start(settings, self.backends, self.database.clone()).await
    }

    /// Stops this Arena gracefully (workers flush) and starts a new one on the same settings,
    /// database and document store; an embedded cache, being in-process, starts empty.
    pub async fn restart(self) -> TestApp {
        let (settings, backends, database) =
            (self.settings.clone(), self.backends, self.database.clone());
        self.stop().await;
        TestApp::start(settings, backends, database).await
    }

    /// Stops this Arena, drops its database and creates an empty one of the same name (a
    /// SQLite file deleted, or `DROP DATABASE` + `CREATE DATABASE`), then starts a new Arena
    /// on the same settings: the same cache (Redis keeps running) and cache prefix.
    pub async fn recreate_database(self) -> TestApp {
        let (settings, backends, database) =
            (self.settings.clone(), self.backends, self.database.clone());
        let pool = self.state.db.clone();
        self.stop().await;
        // Every connection closed first: one closing late would write to (and on SQLite
        // delete the journal of) the new database.
        pool.close().await.expect("the old pool closes");
        database.recreate().await;
        TestApp::start(settings, backends, database).await
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
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// The SQLite file of an embedded test app, in its temporary directory.
const SQLITE_FILE: &str = "arena.db";

/// A test's own database: a SQLite file in a temporary directory, or a PostgreSQL database
/// (dropped with the last app on it), and, on MongoDB, a document database of the same name.
enum TestDatabase {
    Sqlite { dir: tempfile::TempDir },
    Postgres { admin: String, name: String },
}

impl TestDatabase {
    /// The test settings on `backends`, and the database they name, created.
    async fn create(backends: Backends) -> (Settings, TestDatabase) {
        let mut s = Settings::defaults();
        s.addr = "127.0.0.1:0".parse().unwrap();
        s.pbkdf2_iterations = 1_000;
        s.cache_prefix = format!("test:{}:", uuid::Uuid::new_v4().simple());
        s.sync_enabled = false;
        s.db_pool = 8;
        // Four times the default: tests run side by side on a machine of two cores, where a
        // Redis call of a large import can take longer than 250 ms, and a replica then
        // (rightly) degrades or refuses a write under `strict`. Tests of timeouts set their own.
        s.redis_timeout_ms = 1_000;
        s.log = "warn".into();
        s.redis_url = None;
        s.mongodb_url = None;
        let servers = servers();
        let redis = match backends {
            Backends::Embedded => {
                let dir = tempfile::tempdir().unwrap();
                s.database_url = format!(
                    "sqlite://{}?mode=rwc",
                    dir.path().join(SQLITE_FILE).display()
                );
                return (s, TestDatabase::Sqlite { dir });
            }
            Backends::Real => &servers.redis,
            Backends::RealCluster => &servers.redis_cluster,
        };
        let admin = servers.database.url().expect("PostgreSQL was found");
        let name = format!("arena_test_{}", uuid::Uuid::new_v4().simple());
        execute(admin, &[format!("CREATE DATABASE \"{name}\"")]).await;
        let base = admin.rsplit_once('/').map_or(admin, |(b, _)| b);
        s.database_url = format!("{base}/{name}");
        s.redis_url = redis.url().map(str::to_owned);
        if let Some(m) = servers.mongodb.url() {
            s.mongodb_url = Some(m.to_owned());
            s.mongodb_database = name.clone();
        }
        let admin = admin.to_owned();
        (s, TestDatabase::Postgres { admin, name })
    }

    /// Drops the database and creates an empty one of the same name.
    async fn recreate(&self) {
        match self {
            TestDatabase::Postgres { admin, name } => {
                execute(
                    admin,
                    &[
                        format!("DROP DATABASE \"{name}\" WITH (FORCE)"),
                        format!("CREATE DATABASE \"{name}\""),
                    ],
                )
                .await
            }
            TestDatabase::Sqlite { dir } => {
                for file in [SQLITE_FILE, "arena.db-wal", "arena.db-shm"] {
                    let _ = std::fs::remove_file(dir.path().join(file));
                }
            }
        }
    }
}

/// Runs `statements` on PostgreSQL as `admin`.
async fn execute(admin: &str, statements: &[String]) {
    let conn = sea_orm::Database::connect(admin).await.unwrap_or_else(|e| {
        panic!(
            "PostgreSQL at {admin}: {e} (set TEST_DATABASE_URL, or leave PostgreSQL out with \
             TEST_DATABASE_URL=)"
        )
    });
    for sql in statements {
        sea_orm::ConnectionTrait::execute_unprepared(&conn, sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
    conn.close().await.ok();
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let TestDatabase::Postgres { admin, name } = self else {
            return;
        };
        let (admin, name) = (admin.clone(), name.clone());
        // Another runtime, on a thread of its own: this one may be shutting down. The pool
        // may still hold connections: FORCE closes them.
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
