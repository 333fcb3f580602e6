//! `cargo bench --bench flood`: can a flood of password and API-key checks starve the server?
//! While flood clients loop for `BENCH_SECS`, one client reads a warm `meal(id)` in a loop;
//! its p50 and p99 are compared with the same reader's alone, on the same server, just before
//! the flood. The figure to watch is the p99 ratio (during ÷ alone): near 1× means the hashes
//! the flood costs do not take the CPU from other requests.
//!
//! The server is the release `arena` binary as its own process, pinned to core 0
//! (`taskset -c 0`), on embedded backends in a temp dir, with every production default,
//! PBKDF2 at 600 000 iterations included. This bench (the load generator: the reader and the
//! flood clients, on one tokio thread) pins itself to core 1. Each scenario gets a fresh
//! server, so that no budget used by one scenario carries into the next.
//!
//! Floods:
//! - `logins`: `login` with a made-up username (a new one every request) and a wrong password;
//! - `keys`: `{ me { id } }` with `Authorization: Basic` of a made-up, well-formed API key (a
//!   new one every request): each such key costs a dummy hash, as a wrong secret would.
//!
//! Each runs with 16 and 64 clients from one address (as a single attacking host), and with
//! 64 clients from 64 addresses (`X-Forwarded-For`, the server trusting 127.0.0.1 as a proxy:
//! a botnet, where no per-address budget helps and the bound on hashing must).
//!
//! Environment: `BENCH_SECS` (default 10), `BENCH_ONLY` (a substring of the scenario names to
//! run, e.g. `keys`), `BENCH_NO_WRITE=1` (print only).
//!
//! The table goes into the `flood` section of `docs/benchmarks.md`, with the date, commit and
//! machine (`benches/report/`).

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{json, Value};

mod report;

const SERVER_CORE: &str = "0";
const CLIENT_CORE: usize = 1;

const MEAL_QUERY: &str =
    "query($id: ID!) { meal(id: $id) { id name cuisine price difficulty battles wins winPct } }";
const LOGIN: &str =
    "mutation($u: String!, $p: String!) { login(username: $u, password: $p) { token } }";

#[derive(Clone, Copy, PartialEq)]
enum Flood {
    Logins,
    Keys,
}

struct Scenario {
    flood: Flood,
    clients: usize,
    /// Each client its own address (`X-Forwarded-For`) rather than all one.
    many_addresses: bool,
}

impl Scenario {
    fn name(&self) -> String {
        format!(
            "{} x{}{}",
            match self.flood {
                Flood::Logins => "logins",
                Flood::Keys => "keys",
            },
            self.clients,
            if self.many_addresses {
                " (one address each)"
            } else {
                ""
            }
        )
    }
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument is not used.
    pin_to_core(CLIENT_CORE);
    let secs: u64 = std::env::var("BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let only = std::env::var("BENCH_ONLY").unwrap_or_default();
    let mut scenarios = Vec::new();
    for flood in [Flood::Logins, Flood::Keys] {
        for (clients, many_addresses) in [(16, false), (64, false), (64, true)] {
            scenarios.push(Scenario {
                flood,
                clients,
                many_addresses,
            });
        }
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let mut rows = Vec::new();
    for s in scenarios.iter().filter(|s| s.name().contains(&only)) {
        eprintln!("flood: {} for {secs} s", s.name());
        rows.push((s.name(), rt.block_on(run(s, Duration::from_secs(secs)))));
    }
    let mut section = report::Section::new(
        "flood",
        "Floods of password and API-key checks",
        "The release `arena` on embedded backends with every production default (PBKDF2 at \
         600 000 iterations), pinned to core 0, a fresh server per flood; the load generator \
         pinned to core 1. One client reads a warm `meal(id)` in a loop, alone, then while the \
         flood clients loop: bad logins with a made-up username, or `Basic` credentials of a \
         made-up, well-formed API key, from one address or one address per client \
         (`X-Forwarded-For` through a trusted proxy). The p99 ratio (during ÷ alone) is the \
         figure to watch: near 1× means the flood does not starve other requests.",
    );
    section.rounds(format!(
        "1 per flood: {secs} s of reads alone, then {secs} s during the flood"
    ));
    if !only.is_empty() {
        section.setting(format!("BENCH_ONLY={only}"));
    }
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|(name, r)| {
            vec![
                name.clone(),
                format!(
                    "{} ({} / {} / {})",
                    r.answered, r.unauthenticated, r.rate_limited, r.other
                ),
                format!("{} / {}", r.hashes, r.hashes_refused),
                format!("{:.2} / {:.2}", r.alone.0, r.alone.1),
                format!("{:.2} / {:.2}", r.during.0, r.during.1),
                format!("{:.2}×", r.during.1 / r.alone.1),
            ]
        })
        .collect();
    section.table(
        &[
            "flood",
            "answered (UNAUTHENTICATED / RATE_LIMITED / other)",
            "hashes run / refused at once",
            "warm meal(id) alone p50 / p99 ms",
            "during the flood p50 / p99 ms",
            "p99 ratio",
        ],
        &rows,
    );
    section.write();
}

struct Outcome {
    answered: usize,
    unauthenticated: usize,
    rate_limited: usize,
    other: usize,
    hashes: f64,
    hashes_refused: f64,
    /// (p50, p99) in ms of the warm reads alone, then during the flood.
    alone: (f64, f64),
    during: (f64, f64),
}

async fn run(s: &Scenario, secs: Duration) -> Outcome {
    let server = Server::start(s.many_addresses);
    let url = format!("{}/graphql", server.url);
    let http = reqwest::Client::new();
    wait_ready(&http, &server).await;

    // A user, a meal, and a warm cache entry.
    let r = post(
        &http,
        &url,
        "mutation { createUser(username: \"chef\", password: \"correct horse\") { id } }",
        json!({}),
        &[],
    )
    .await;
    assert!(r.get("errors").is_none(), "{r}");
    let r = post(
        &http,
        &url,
        LOGIN,
        json!({ "u": "chef", "p": "correct horse" }),
        &[],
    )
    .await;
    let token = r["data"]["login"]["token"]
        .as_str()
        .unwrap_or_else(|| panic!("login: {r}"))
        .to_owned();
    let auth = format!("Bearer {token}");
    let r = post(
        &http,
        &url,
        "mutation { createMeal(input: { name: \"Pad Thai\", cuisine: \"Thai\", price: 11, difficulty: MED }) { id } }",
        json!({}),
        &[("authorization", auth.as_str())],
    )
    .await;
    let id = r["data"]["createMeal"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("createMeal: {r}"))
        .to_owned();
    let reader = reqwest::Client::new();
    for _ in 0..500 {
        read_meal(&reader, &url, &id).await;
    }

    let alone = percentiles(read_for(&reader, &url, &id, secs).await);

    let hashes_before = metric(&http, &server.url, "arena_hashes_total").await;
    let refused_before = metric(&http, &server.url, "arena_hashes_refused_total").await;
    let deadline = Instant::now() + secs;
    let flood_client = reqwest::Client::builder()
        .pool_max_idle_per_host(s.clients)
        .build()
        .expect("a client");
    let clients: Vec<_> = (0..s.clients)
        .map(|c| {
            let (http, url) = (flood_client.clone(), url.clone());
            let (flood, many) = (s.flood, s.many_addresses);
            tokio::spawn(async move { flood_loop(http, url, flood, many, c, deadline).await })
        })
        .collect();
    let during = percentiles(read_for(&reader, &url, &id, secs).await);
    let mut codes = Vec::new();
    for c in clients {
        codes.extend(c.await.expect("a flood client"));
    }
    let count = |code: &str| codes.iter().filter(|c| c.as_str() == code).count();
    let (unauthenticated, rate_limited) = (count("UNAUTHENTICATED"), count("RATE_LIMITED"));
    Outcome {
        answered: codes.len(),
        unauthenticated,
        rate_limited,
        other: codes.len() - unauthenticated - rate_limited,
        hashes: metric(&http, &server.url, "arena_hashes_total").await - hashes_before,
        hashes_refused: metric(&http, &server.url, "arena_hashes_refused_total").await
            - refused_before,
        alone,
        during,
    }
}

/// One flood client: requests one after another until `deadline`; the code of each answer.
async fn flood_loop(
    http: reqwest::Client,
    url: String,
    flood: Flood,
    many_addresses: bool,
    client: usize,
    deadline: Instant,
) -> Vec<String> {
    let from = format!("198.18.{}.{}", client / 250, client % 250 + 1);
    let mut codes = Vec::new();
    let mut n = 0u64;
    while Instant::now() < deadline {
        n += 1;
        let mut req = http.post(&url);
        if many_addresses {
            req = req.header("x-forwarded-for", &from);
        }
        let made_up = format!("{client:03}x{n:020}");
        req = match flood {
            Flood::Logins => req.json(&json!({
                "query": LOGIN,
                "variables": { "u": format!("u{made_up}"), "p": "wrong-password" },
            })),
            Flood::Keys => {
                let key = format!("ak_{made_up}");
                let basic = base64::engine::general_purpose::STANDARD
                    .encode(format!("{key}:made-up-secret"));
                req.header("authorization", format!("Basic {basic}"))
                    .json(&json!({ "query": "{ me { id } }" }))
            }
        };
        let code = match tokio::time::timeout_at(deadline.into(), req.send()).await {
            Err(_) => break,
            Ok(Err(e)) => format!("error: {e}"),
            Ok(Ok(resp)) => match resp.json::<Value>().await {
                Ok(v) => v["errors"][0]["extensions"]["code"]
                    .as_str()
                    .unwrap_or("no error")
                    .to_owned(),
                Err(e) => format!("error: {e}"),
            },
        };
        codes.push(code);
    }
    codes
}

async fn read_meal(http: &reqwest::Client, url: &str, id: &str) {
    let r = post(http, url, MEAL_QUERY, json!({ "id": id }), &[]).await;
    assert!(r["data"]["meal"]["id"] == id, "meal(id): {r}");
}

/// Reads the meal one request after another for `secs`; each read's latency in ms.
async fn read_for(http: &reqwest::Client, url: &str, id: &str, secs: Duration) -> Vec<f64> {
    let end = Instant::now() + secs;
    let mut lat = Vec::new();
    while Instant::now() < end {
        let t = Instant::now();
        read_meal(http, url, id).await;
        lat.push(t.elapsed().as_secs_f64() * 1e3);
    }
    lat
}

fn percentiles(mut v: Vec<f64>) -> (f64, f64) {
    assert!(!v.is_empty(), "no reads");
    v.sort_by(f64::total_cmp);
    let at = |q: f64| v[((v.len() as f64 * q) as usize).min(v.len() - 1)];
    (at(0.50), at(0.99))
}

async fn post(
    http: &reqwest::Client,
    url: &str,
    query: &str,
    variables: Value,
    headers: &[(&str, &str)],
) -> Value {
    let mut req = http
        .post(url)
        .json(&json!({ "query": query, "variables": variables }));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.send()
        .await
        .expect("the server answers")
        .json()
        .await
        .expect("a JSON answer")
}

async fn metric(http: &reqwest::Client, base: &str, name: &str) -> f64 {
    let text = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text");
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

async fn wait_ready(http: &reqwest::Client, server: &Server) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ok = http
            .get(format!("{}/healthz", server.url))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        if ok {
            return;
        }
        assert!(Instant::now() < deadline, "arena did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The release `arena`, pinned to `SERVER_CORE`, on embedded backends in a temp dir; killed
/// when dropped.
struct Server {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Server {
    fn start(trust_loopback_proxy: bool) -> Server {
        let dir = tempfile::tempdir().expect("a temp dir");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let mut cmd = Command::new("taskset");
        cmd.args(["-c", SERVER_CORE])
            .arg(Path::new(env!("CARGO_BIN_EXE_arena")))
            .arg("serve")
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        for (key, _) in std::env::vars_os() {
            let key = key.to_string_lossy();
            if key.starts_with("ARENA_")
                || ["DATABASE_URL", "REDIS_URL", "MONGODB_URL"].contains(&key.as_ref())
            {
                cmd.env_remove(key.as_ref());
            }
        }
        cmd.env("ARENA_ADDR", format!("127.0.0.1:{port}"))
            .env(
                "DATABASE_URL",
                format!(
                    "sqlite://{}?mode=rwc",
                    dir.path().join("arena.db").display()
                ),
            )
            .env("ARENA_LOG", "warn")
            .env("ARENA_SYNC_ENABLED", "false");
        if trust_loopback_proxy {
            cmd.env("ARENA_TRUSTED_PROXIES", "127.0.0.1");
        }
        let child = cmd.spawn().expect("taskset runs arena");
        Server {
            child,
            url: format!("http://127.0.0.1:{port}"),
            _dir: dir,
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Pins this process (every thread started after this call) to `core`.
fn pin_to_core(core: usize) {
    // SAFETY: `cpu_set_t` is plain data; CPU_ZERO / CPU_SET only write into it, and
    // `sched_setaffinity` reads it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_ZERO(&mut set);
        libc::CPU_SET(core, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            eprintln!("flood: could not pin the load generator to core {core}");
        }
    }
}
