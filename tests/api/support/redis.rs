//! A Redis server of the test's own, for what cannot be done to the shared one.

use std::process::{Child, Command, Stdio};

use super::report::skipped;
use super::wait::until_listening;

/// A Redis server of this test's own (`redis-server` on a free port, nothing on disk), for
/// what cannot be done to the shared one: filling it up, changing its settings, restarting
/// it. Stopped when dropped.
pub struct PrivateRedis {
    port: u16,
    child: Child,
}

impl PrivateRedis {
    /// Starts one; `None` when `redis-server` is not installed, the running case then
    /// recorded as not run (a failure in CI).
    pub async fn try_start() -> Option<PrivateRedis> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let Some(child) = spawn_redis_server(port) else {
            skipped("redis-server is not installed (a Redis of the test's own is needed)");
            return None;
        };
        until_listening(port).await;
        Some(PrivateRedis { port, child })
    }

    /// Kills the server (no shutdown: whatever it held is gone, as after a crash without
    /// persistence) and starts an empty one on the same port.
    pub async fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.child = spawn_redis_server(self.port).expect("redis-server starts again");
        until_listening(self.port).await;
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Runs `redis-cli` against it and returns its output.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-p", &self.port.to_string()])
            .args(args)
            .output()
            .expect("redis-cli runs");
        assert!(out.status.success(), "redis-cli {args:?}");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }
}

fn spawn_redis_server(port: u16) -> Option<Child> {
    Command::new("redis-server")
        .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
        .args(["--save", "", "--appendonly", "no"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
