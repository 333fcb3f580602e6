//! A private Redis Cluster with replicas: three primaries and three replicas (nothing on disk),
//! for failover. The nemesis kills a primary (-9); the cluster promotes its replica once the
//! others agree the primary failed (`cluster-node-timeout` 1 s); the killed node, started
//! again, rejoins as a replica of the promoted one and syncs from it.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::cluster::{free_port, poll_until};

/// How long the nodes wait before they call a silent peer failed.
const NODE_TIMEOUT_MS: u64 = 1000;

/// One node: its port and its process.
struct Node {
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

/// A failover as the nemesis saw it.
#[derive(Clone, Copy, Debug)]
pub struct Promotion {
    /// The primary was killed.
    pub killed: Instant,
    /// Its replica was a primary and the cluster's state `ok` again, as seen by every
    /// surviving node.
    pub promoted: Instant,
}

pub struct RedisCluster {
    nodes: Mutex<Vec<Node>>,
    promotions: Mutex<Vec<Promotion>>,
}

/// One line of `CLUSTER NODES`.
struct NodeLine {
    port: u16,
    primary: bool,
    failed: bool,
    /// The first slot it serves (primaries).
    first_slot: Option<u16>,
}

fn parse_nodes(text: &str) -> Vec<NodeLine> {
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 8 {
                return None;
            }
            let port = f[1].split('@').next()?.rsplit(':').next()?.parse().ok()?;
            let flags = f[2];
            let first_slot = f
                .get(8)
                .and_then(|s| s.split('-').next())
                .and_then(|s| s.parse().ok());
            Some(NodeLine {
                port,
                primary: flags.contains("master"),
                failed: flags.contains("fail"),
                first_slot,
            })
        })
        .collect()
}

/// `redis-cli -p port args…`, its stdout (on a blocking thread).
async fn cli(port: u16, args: &[&str]) -> Result<String, String> {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let out = Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &port.to_string()])
            .args(&args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("redis-cli: {e}"))?;
        Ok(String::from_utf8_lossy(&out.stdout).replace('\r', ""))
    })
    .await
    .map_err(|e| e.to_string())?
}

impl RedisCluster {
    /// Starts six nodes under `dir` and joins them: three primaries, one replica each.
    pub async fn start(dir: PathBuf) -> Result<RedisCluster, String> {
        // A node finding a `nodes.conf` of an earlier run would not join a new cluster.
        let _ = std::fs::remove_dir_all(&dir);
        let mut nodes = Vec::new();
        for _ in 0..6 {
            let port = free_port();
            let dir = dir.join(format!("node-{port}"));
            std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            let mut node = Node {
                port,
                dir,
                child: None,
            };
            node.child = Some(boot(&node)?);
            nodes.push(node);
        }
        for n in &nodes {
            let port = n.port;
            if !poll_until(Duration::from_secs(10), || async move {
                cli(port, &["ping"]).await.is_ok_and(|s| s.trim() == "PONG")
            })
            .await
            {
                return Err(format!(
                    "redis-server on {port} did not answer PING in 10 s"
                ));
            }
        }
        let addrs: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let created = tokio::task::spawn_blocking(move || {
            Command::new("redis-cli")
                .args(["--cluster", "create"])
                .args(&addrs)
                .args(["--cluster-replicas", "1", "--cluster-yes"])
                .stdin(Stdio::null())
                .output()
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("redis-cli --cluster create: {e}"))?;
        if !created.status.success() {
            return Err(format!(
                "redis-cli --cluster create: {}",
                String::from_utf8_lossy(&created.stdout)
            ));
        }
        let cluster = RedisCluster {
            nodes: Mutex::new(nodes),
            promotions: Mutex::new(Vec::new()),
        };
        if !poll_until(Duration::from_secs(30), || async {
            cluster.settled(None).await && cluster.replicated().await
        })
        .await
        {
            return Err("the Redis Cluster did not settle in 30 s".into());
        }
        Ok(cluster)
    }

    /// The URL Arena takes: every node as a seed.
    pub fn url(&self) -> String {
        let nodes = self.nodes.lock().unwrap();
        let mut ports = nodes.iter().map(|n| n.port);
        let first = ports.next().expect("six nodes");
        let rest: Vec<String> = ports.map(|p| format!("node=127.0.0.1:{p}")).collect();
        format!("redis-cluster://127.0.0.1:{first}?{}", rest.join("&"))
    }

    fn running_ports(&self) -> Vec<u16> {
        let nodes = self.nodes.lock().unwrap();
        nodes
            .iter()
            .filter(|n| n.child.is_some())
            .map(|n| n.port)
            .collect()
    }

    /// Every running node sees three primaries, none of them `down` (or `down_port`), and
    /// the cluster state `ok`.
    async fn settled(&self, down_port: Option<u16>) -> bool {
        for port in self.running_ports() {
            let Ok(info) = cli(port, &["cluster", "info"]).await else {
                return false;
            };
            if !info.lines().any(|l| l == "cluster_state:ok") {
                return false;
            }
            let Ok(text) = cli(port, &["cluster", "nodes"]).await else {
                return false;
            };
            let primaries: Vec<NodeLine> = parse_nodes(&text)
                .into_iter()
                .filter(|n| n.primary && !n.failed && n.first_slot.is_some())
                .collect();
            if primaries.len() != 3 || primaries.iter().any(|n| Some(n.port) == down_port) {
                return false;
            }
        }
        true
    }

    /// Every primary has a replica that finished its sync (`state=online`).
    async fn replicated(&self) -> bool {
        for port in self.running_ports() {
            let Ok(info) = cli(port, &["info", "replication"]).await else {
                return false;
            };
            if info.lines().any(|l| l == "role:master")
                && !info
                    .lines()
                    .any(|l| l.starts_with("slave0:") && l.contains("state=online"))
            {
                return false;
            }
        }
        true
    }

    /// The primary serving the `shard`-th range of slots (0, 1 or 2 by first slot).
    async fn primary(&self, shard: usize) -> Result<u16, String> {
        let port = *self.running_ports().first().ok_or("no node is running")?;
        let text = cli(port, &["cluster", "nodes"]).await?;
        let mut primaries: Vec<NodeLine> = parse_nodes(&text)
            .into_iter()
            .filter(|n| n.primary && !n.failed && n.first_slot.is_some())
            .collect();
        primaries.sort_by_key(|n| n.first_slot);
        primaries
            .get(shard)
            .map(|n| n.port)
            .ok_or_else(|| format!("no primary for shard {shard}: {text}"))
    }

    /// Kills (-9) the primary of `shard`, then waits until its replica took over.
    pub async fn fail_over(&self, shard: usize) -> Result<(), String> {
        let port = self.primary(shard).await?;
        let killed = Instant::now();
        {
            let mut nodes = self.nodes.lock().unwrap();
            let node = nodes
                .iter_mut()
                .find(|n| n.port == port)
                .ok_or("unknown node")?;
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        if !poll_until(Duration::from_secs(30), || self.settled(Some(port))).await {
            return Err(format!(
                "no replica took over from the primary on {port} in 30 s"
            ));
        }
        self.promotions.lock().unwrap().push(Promotion {
            killed,
            promoted: Instant::now(),
        });
        Ok(())
    }

    /// Starts every killed node again (it rejoins as a replica) and waits until the cluster
    /// knows it.
    pub async fn restart_killed(&self) -> Result<(), String> {
        let restarted: Vec<u16> = {
            let mut nodes = self.nodes.lock().unwrap();
            let mut ports = Vec::new();
            for node in nodes.iter_mut().filter(|n| n.child.is_none()) {
                node.child = Some(boot(node)?);
                ports.push(node.port);
            }
            ports
        };
        for port in restarted {
            let joined = poll_until(Duration::from_secs(30), || async move {
                cli(port, &["cluster", "info"])
                    .await
                    .is_ok_and(|s| s.lines().any(|l| l == "cluster_state:ok"))
            })
            .await;
            if !joined {
                return Err(format!("the node on {port} did not rejoin in 30 s"));
            }
        }
        if !poll_until(Duration::from_secs(30), || self.replicated()).await {
            return Err("a restarted node did not finish its sync in 30 s".into());
        }
        Ok(())
    }

    pub fn promotions(&self) -> Vec<Promotion> {
        self.promotions.lock().unwrap().clone()
    }

    pub fn kill_all(&self) {
        let mut nodes = self.nodes.lock().unwrap();
        for node in nodes.iter_mut() {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        self.kill_all();
    }
}

/// Starts one node (its `nodes.conf` in its own directory keeps its identity across
/// restarts; its data does not survive them).
fn boot(node: &Node) -> Result<Child, String> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(node.dir.join("redis.log"))
        .map_err(|e| e.to_string())?;
    let err = log.try_clone().map_err(|e| e.to_string())?;
    Command::new("redis-server")
        .args(["--bind", "127.0.0.1", "--port", &node.port.to_string()])
        .args(["--save", "", "--appendonly", "no"])
        .args(["--cluster-enabled", "yes"])
        .args(["--cluster-config-file", "nodes.conf"])
        .args(["--cluster-node-timeout", &NODE_TIMEOUT_MS.to_string()])
        // A replica may always take over, however long it was cut off.
        .args(["--cluster-replica-validity-factor", "0"])
        // A replica syncs as soon as it asks (not after the default 5 s).
        .args(["--repl-diskless-sync-delay", "0"])
        .arg("--dir")
        .arg(&node.dir)
        .stdin(Stdio::null())
        .stdout(Stdio::from(log))
        .stderr(Stdio::from(err))
        .spawn()
        .map_err(|e| format!("redis-server: {e}"))
}
