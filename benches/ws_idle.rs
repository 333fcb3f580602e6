//! `cargo bench --bench ws_idle`: what an idle WebSocket subscriber costs the server in
//! memory, so that the connection caps (`ARENA_WS_MAX_CONNECTIONS`,
//! `ARENA_WS_MAX_UNAUTHENTICATED`) bound it.
//!
//! Starts the release `arena` binary as a process of its own (embedded backends, a fresh
//! SQLite file, connection caps raised above the counts), then opens idle
//! `graphql-transport-ws` connections from this process, each acknowledged and subscribed to
//! `battleResults`, in steps (`BENCH_WS_STEPS`, default `1000,5000`). After each step it
//! waits until the server reports every subscription running (`arena_ws_operations` on
//! `/metrics`) and reads the server's VmRSS from `/proc/<pid>/status`; the cost per
//! connection is the growth over the resident size before the first connection, divided by
//! the connections open.
//!
//! The table goes into the `ws_idle` section of `docs/benchmarks.md`, with the date, commit and
//! machine (`benches/report/`); `BENCH_NO_WRITE=1` only prints it.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use serde_json::json;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;

mod report;

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

struct Server {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn resident_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn start(max: usize) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_arena"))
        .arg("serve")
        .env_remove("REDIS_URL")
        .env_remove("MONGODB_URL")
        .env(
            "DATABASE_URL",
            format!(
                "sqlite://{}?mode=rwc",
                dir.path().join("arena.db").display()
            ),
        )
        .env("ARENA_ADDR", format!("127.0.0.1:{port}"))
        .env("ARENA_LOG", "warn")
        .env("ARENA_SYNC_ENABLED", "false")
        .env("ARENA_WS_MAX_CONNECTIONS", max.to_string())
        .env("ARENA_WS_MAX_UNAUTHENTICATED", max.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the release arena binary starts");
    let url = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while client.get(format!("{url}/healthz")).send().await.is_err() {
        assert!(Instant::now() < deadline, "Arena did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Server {
        child,
        url,
        _dir: dir,
    }
}

async fn subscriber(ws_url: &str) -> Socket {
    let mut request = ws_url.into_client_request().unwrap();
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_static("graphql-transport-ws"),
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(request)
        .await
        .expect("upgrade");
    ws.send(Message::text(
        json!({ "type": "connection_init" }).to_string(),
    ))
    .await
    .unwrap();
    loop {
        match ws.next().await.expect("open").expect("a message") {
            Message::Text(t) if t.contains("connection_ack") => break,
            Message::Text(t) => panic!("expected connection_ack, got {t}"),
            _ => {}
        }
    }
    let subscribe = json!({
        "type": "subscribe",
        "id": "1",
        "payload": { "query": "subscription { battleResults { id winner { name } loser { name } } }" },
    });
    ws.send(Message::text(subscribe.to_string())).await.unwrap();
    ws
}

async fn running_operations(client: &reqwest::Client, url: &str) -> u64 {
    let text = client
        .get(format!("{url}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("arena_ws_operations "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

fn main() {
    let steps: Vec<usize> = std::env::var("BENCH_WS_STEPS")
        .unwrap_or_else(|_| "1000,5000".into())
        .split(',')
        .map(|s| s.trim().parse().expect("BENCH_WS_STEPS: numbers"))
        .collect();
    let max = *steps.iter().max().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let server = start(max + 10).await;
        let pid = server.child.id();
        let ws_url = format!("{}/graphql/ws", server.url.replacen("http", "ws", 1));
        let client = reqwest::Client::new();
        // Warm up: one connection's worth of first-time allocations (the schema's lazy
        // parts, the event topic), then close it.
        let warm = subscriber(&ws_url).await;
        let deadline = Instant::now() + Duration::from_secs(30);
        while running_operations(&client, &server.url).await != 1 {
            assert!(
                Instant::now() < deadline,
                "the warm-up subscription never ran"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        drop(warm);
        while running_operations(&client, &server.url).await != 0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let base = resident_kib(pid);
        let mib = |kib: u64| kib as f64 / 1024.0;
        println!(
            "ws_idle: arena (release, embedded backends) resident before any subscriber: {:.1} MiB",
            mib(base)
        );
        let mut rows = Vec::new();
        let mut sockets: Vec<Socket> = Vec::with_capacity(max);
        for &n in &steps {
            // Open in batches of 100 at a time.
            while sockets.len() < n {
                let batch = (n - sockets.len()).min(100);
                let opened =
                    futures::future::join_all((0..batch).map(|_| subscriber(&ws_url))).await;
                sockets.extend(opened);
            }
            let deadline = Instant::now() + Duration::from_secs(120);
            while running_operations(&client, &server.url).await != n as u64 {
                assert!(Instant::now() < deadline, "not every subscription runs");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let rss = resident_kib(pid);
            let grew = rss.saturating_sub(base);
            let row = vec![
                n.to_string(),
                format!("{:.1} MiB", mib(rss)),
                format!("{:.1} MiB", mib(grew)),
                format!("{:.1} KiB", grew as f64 / n as f64),
            ];
            eprintln!("ws_idle: {}", row.join(", "));
            rows.push(row);
        }
        drop(sockets);

        let mut section = report::Section::new(
            "ws_idle",
            "Idle WebSocket subscribers",
            "The release `arena` on embedded backends, a process of its own; this bench opens \
             idle `graphql-transport-ws` connections to it, each acknowledged and subscribed to \
             `battleResults`, and reads the server's VmRSS once every subscription runs. The \
             cost per connection is the growth over the resident size before the first \
             subscriber, divided by the connections open.",
        );
        section.setting(format!(
            "BENCH_WS_STEPS={}",
            steps
                .iter()
                .map(usize::to_string)
                .collect::<Vec<_>>()
                .join(",")
        ));
        section.note(format!(
            "Resident before any subscriber: {:.1} MiB.",
            mib(base)
        ));
        section.table(
            &["idle subscribers", "server RSS", "growth", "per connection"],
            &rows,
        );
        section.write();
    });
}
