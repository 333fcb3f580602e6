//! The system under test: a private Redis, a database of the run's own, and Arena replicas as
//! separate processes, each reaching Redis through its own [`Proxy`].

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use sea_orm::ConnectionTrait;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::proxy::{Mode, Proxy};
use crate::redis_cluster::RedisCluster;

/// The server binary under test.
const ARENA: &str = env!("CARGO_BIN_EXE_arena");

/// How the replicas are configured.
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    /// PostgreSQL to create the run's database on (`postgres://…/db`).
    pub admin_url: String,
    pub replicas: usize,
    /// `strict` or `available`.
    pub consistency: String,
    /// Near cache entries per replica (0: off).
    pub near_cache: usize,
    pub redis_timeout_ms: u64,
    /// The replicas use a private Redis Cluster with replicas (reached directly, for
    /// failover) instead of the single Redis behind their proxies.
    pub redis_cluster: bool,
    /// Where the processes' output goes.
    pub log_dir: PathBuf,
}

/// A free TCP port on 127.0.0.1 (bound, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// Polls `probe` every 20 ms until it holds or `limit` passes.
pub async fn poll_until<F, Fut>(limit: Duration, mut probe: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    loop {
        if probe().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The output file of a process (appended to across restarts).
fn log_file(path: &Path) -> Result<(Stdio, Stdio), String> {
    let f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let g: File = f.try_clone().map_err(|e| e.to_string())?;
    Ok((Stdio::from(f), Stdio::from(g)))
}

/// Sends a signal to a process of ours.
fn signal(pid: u32, sig: libc::c_int) -> Result<(), String> {
    // SAFETY: kill(2) on the pid of a child we spawned and have not reaped.
    let rc = unsafe { libc::kill(pid as libc::pid_t, sig) };
    if rc == 0 {
        Ok(())
    } else {
        Err(format!(
            "kill({pid}, {sig}): {}",
            std::io::Error::last_os_error()
        ))
    }
}

/// Kills (SIGKILL) and reaps a child.
fn kill_child(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// The private Redis server: restartable (empty) and pausable.
pub struct Redis {
    port: u16,
    log: PathBuf,
    state: Mutex<RedisState>,
}

struct RedisState {
    child: Option<Child>,
    paused: bool,
}

impl Redis {
    async fn start(log: PathBuf) -> Result<Redis, String> {
        let redis = Redis {
            port: free_port(),
            log,
            state: Mutex::new(RedisState {
                child: None,
                paused: false,
            }),
        };
        redis.boot().await?;
        Ok(redis)
    }

    /// `host:port`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Starts redis-server (nothing on disk) and waits until it answers PING.
    pub async fn boot(&self) -> Result<(), String> {
        let (out, err) = log_file(&self.log)?;
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("redis-server: {e}"))?;
        {
            let mut s = self.state.lock().unwrap();
            if let Some(mut old) = s.child.replace(child) {
                kill_child(&mut old);
            }
            s.paused = false;
        }
        let addr = self.addr();
        if poll_until(Duration::from_secs(10), || ping(&addr)).await {
            Ok(())
        } else {
            Err(format!(
                "redis-server on {addr} did not answer PING in 10 s"
            ))
        }
    }

    /// kill -9: whatever it held is gone.
    pub fn kill(&self) {
        let mut s = self.state.lock().unwrap();
        if let Some(mut child) = s.child.take() {
            kill_child(&mut child);
        }
        s.paused = false;
    }

    /// kill -STOP: connections stay open, nothing is answered.
    pub fn pause(&self) -> Result<(), String> {
        let mut s = self.state.lock().unwrap();
        let pid = s.child.as_ref().ok_or("Redis is not running")?.id();
        signal(pid, libc::SIGSTOP)?;
        s.paused = true;
        Ok(())
    }

    /// kill -CONT after [`Redis::pause`].
    pub fn resume(&self) -> Result<(), String> {
        let mut s = self.state.lock().unwrap();
        if !s.paused {
            return Ok(());
        }
        let pid = s.child.as_ref().ok_or("Redis is not running")?.id();
        signal(pid, libc::SIGCONT)?;
        s.paused = false;
        Ok(())
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Whether a Redis at `addr` answers PING (within 500 ms).
async fn ping(addr: &str) -> bool {
    let attempt = async {
        let mut s = TcpStream::connect(addr).await.ok()?;
        s.write_all(b"PING\r\n").await.ok()?;
        let mut buf = [0u8; 7];
        s.read_exact(&mut buf).await.ok()?;
        (&buf == b"+PONG\r\n").then_some(())
    };
    matches!(
        tokio::time::timeout(Duration::from_millis(500), attempt).await,
        Ok(Some(()))
    )
}

/// One Arena process, killable and restartable on the same port.
pub struct Replica {
    pub index: usize,
    /// `http://127.0.0.1:port`.
    pub url: String,
    env: Vec<(String, String)>,
    log: PathBuf,
    child: Mutex<Option<Child>>,
}

impl Replica {
    fn spawn(&self) -> Result<(), String> {
        let (out, err) = log_file(&self.log)?;
        let mut cmd = Command::new(ARENA);
        // Nothing of the caller's Arena settings leaks in.
        for (k, _) in std::env::vars_os() {
            let k = k.to_string_lossy();
            if k.starts_with("ARENA_")
                || ["DATABASE_URL", "REDIS_URL", "MONGODB_URL"].contains(&&*k)
            {
                cmd.env_remove(&*k);
            }
        }
        let child = cmd
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("{ARENA}: {e}"))?;
        if let Some(mut old) = self.child.lock().unwrap().replace(child) {
            kill_child(&mut old);
        }
        Ok(())
    }

    /// kill -9.
    pub fn kill(&self) {
        if let Some(mut child) = self.child.lock().unwrap().take() {
            kill_child(&mut child);
        }
    }

    /// The exit status, if the process has ended.
    fn exited(&self) -> Option<String> {
        let mut guard = self.child.lock().unwrap();
        match guard.as_mut().map(Child::try_wait) {
            None => Some("not running".into()),
            Some(Ok(Some(status))) => Some(status.to_string()),
            Some(Ok(None)) => None,
            Some(Err(e)) => Some(e.to_string()),
        }
    }

    /// Starts the process and waits until `/readyz` answers 200. A start can fail while the
    /// cache tier is unreachable (another fault): it is retried until `limit`.
    pub async fn start(&self, http: &reqwest::Client, limit: Duration) -> Result<(), String> {
        let deadline = Instant::now() + limit;
        let mut last = String::new();
        while Instant::now() < deadline {
            self.spawn()?;
            let attempt = (deadline - Instant::now()).min(Duration::from_secs(20));
            let url = format!("{}/readyz", self.url);
            let attempt_end = Instant::now() + attempt;
            let mut ended = None;
            let mut ready = false;
            // Polls until ready, exited, or the attempt's time is up.
            while !ready && ended.is_none() && Instant::now() < attempt_end {
                ended = self.exited();
                let answer = http.get(&url).timeout(Duration::from_secs(1)).send().await;
                ready = answer.is_ok_and(|r| r.status().is_success());
                if !ready {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
            if ready {
                return Ok(());
            }
            match ended {
                Some(status) => last = format!("exited ({status})"),
                None => {
                    last = format!("not ready in {attempt:?}");
                    self.kill();
                }
            }
        }
        Err(format!(
            "replica {} did not become ready in {limit:?}: {last} (log: {})",
            self.index,
            self.log.display()
        ))
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The run's own PostgreSQL database, dropped at the end.
struct Database {
    admin: String,
    name: String,
    url: String,
    dropped: bool,
}

impl Database {
    async fn create(admin: &str) -> Result<Database, String> {
        let name = format!("arena_faults_{}", uuid::Uuid::new_v4().simple());
        execute(admin, &format!("CREATE DATABASE \"{name}\"")).await?;
        let base = admin.rsplit_once('/').map_or(admin, |(b, _)| b);
        Ok(Database {
            admin: admin.to_owned(),
            url: format!("{base}/{name}"),
            name,
            dropped: false,
        })
    }

    fn drop_statement(&self) -> String {
        format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name)
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        if self.dropped {
            return;
        }
        // On a thread with a runtime of its own: the caller's may be shutting down.
        let (admin, sql) = (self.admin.clone(), self.drop_statement());
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime");
            let _ = rt.block_on(execute(&admin, &sql));
        })
        .join();
    }
}

/// Runs one statement on PostgreSQL as `admin`.
async fn execute(admin: &str, sql: &str) -> Result<(), String> {
    let conn = sea_orm::Database::connect(admin)
        .await
        .map_err(|e| format!("PostgreSQL at {admin}: {e}"))?;
    let result = conn.execute_unprepared(sql).await;
    let _ = conn.close().await;
    result.map(|_| ()).map_err(|e| format!("{sql}: {e}"))
}

/// Redis, the database, and the replicas with their proxies.
pub struct Cluster {
    pub redis: Redis,
    /// With [`ClusterConfig::redis_cluster`]: the cache the replicas use.
    pub redis_cluster: Option<RedisCluster>,
    pub proxies: Vec<Proxy>,
    pub replicas: Vec<Replica>,
    pub http: reqwest::Client,
    // Dropped last: after the replicas are killed.
    database: Database,
}

impl Cluster {
    /// Starts everything; replica 0 first (it runs the migrations), then the others.
    pub async fn start(config: &ClusterConfig) -> Result<Cluster, String> {
        std::fs::create_dir_all(&config.log_dir).map_err(|e| e.to_string())?;
        let database = Database::create(&config.admin_url).await?;
        let redis = Redis::start(config.log_dir.join("redis.log")).await?;
        let redis_cluster = if config.redis_cluster {
            Some(RedisCluster::start(config.log_dir.join("redis-cluster")).await?)
        } else {
            None
        };
        let prefix = format!("faults:{}:", uuid::Uuid::new_v4().simple());
        let mut proxies = Vec::new();
        let mut replicas = Vec::new();
        for index in 0..config.replicas {
            let proxy = Proxy::start(&redis.addr())
                .await
                .map_err(|e| format!("proxy: {e}"))?;
            let port = free_port();
            let env = [
                ("ARENA_ADDR", format!("127.0.0.1:{port}")),
                ("DATABASE_URL", database.url.clone()),
                (
                    "REDIS_URL",
                    redis_cluster
                        .as_ref()
                        .map_or_else(|| proxy.url(), RedisCluster::url),
                ),
                ("ARENA_CACHE_PREFIX", prefix.clone()),
                ("ARENA_CONSISTENCY", config.consistency.clone()),
                (
                    "ARENA_REDIS_TIMEOUT_MS",
                    config.redis_timeout_ms.to_string(),
                ),
                ("ARENA_NEAR_CACHE", config.near_cache.to_string()),
                ("ARENA_PBKDF2_ITERATIONS", "1000".into()),
                ("ARENA_SYNC_ENABLED", "false".into()),
                ("ARENA_DB_POOL", "8".into()),
                ("ARENA_LOG", "warn".into()),
                // Each primary of the cluster has one replica; a single Redis has none.
                (
                    "ARENA_REDIS_REPLICAS",
                    u32::from(config.redis_cluster).to_string(),
                ),
            ];
            replicas.push(Replica {
                index,
                url: format!("http://127.0.0.1:{port}"),
                env: env.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
                log: config.log_dir.join(format!("replica-{index}.log")),
                child: Mutex::new(None),
            });
            proxies.push(proxy);
        }
        let cluster = Cluster {
            redis,
            redis_cluster,
            proxies,
            replicas,
            http: reqwest::Client::new(),
            database,
        };
        let limit = Duration::from_secs(60);
        if let Some((first, rest)) = cluster.replicas.split_first() {
            first.start(&cluster.http, limit).await?;
            let others = rest.iter().map(|r| r.start(&cluster.http, limit));
            for r in futures::future::join_all(others).await {
                r?;
            }
        }
        Ok(cluster)
    }

    /// Kills a replica (kill -9).
    pub fn kill_replica(&self, i: usize) {
        self.replicas[i].kill();
    }

    /// Starts a killed replica again on the same port, ready.
    pub async fn restart_replica(&self, i: usize) -> Result<(), String> {
        self.replicas[i]
            .start(&self.http, Duration::from_secs(60))
            .await
    }

    /// Sets the mode of replica `i`'s proxy.
    pub async fn proxy(&self, i: usize, mode: Mode) -> Result<(), String> {
        self.proxies[i]
            .set(mode)
            .await
            .map_err(|e| format!("proxy {i}: {e}"))
    }

    /// Stops every process and drops the database.
    pub async fn shut_down(mut self) -> Result<(), String> {
        for r in &self.replicas {
            r.kill();
        }
        self.redis.kill();
        if let Some(c) = &self.redis_cluster {
            c.kill_all();
        }
        let result = execute(&self.database.admin, &self.database.drop_statement()).await;
        self.database.dropped = result.is_ok();
        result
    }
}
