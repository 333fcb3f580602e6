//! `cargo bench --bench meal_read`: warm `meal(id)` over HTTP under concurrent load, against a
//! bare axum JSON endpoint in the same run, and warm against cold (every read's cache entry
//! removed just before). Client and servers share this one process, so the figures are
//! coarser than `cargo bench --bench load`'s; the ratios are what it is for.
//!
//! Embedded backends by default; PostgreSQL + Redis when `TEST_DATABASE_URL` and
//! `TEST_REDIS_URL` are set (a scratch database is created). `BENCH_REQUESTS` and
//! `BENCH_CONCURRENCY` tune the load; `BENCH_NO_WRITE=1` only prints the results, which
//! otherwise go into the `meal_read` section of `docs/benchmarks.md`, with the date, commit and
//! machine (`benches/report/`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use arena::meals::service::NewMeal;
use arena::{Application, Settings};
use clap::Parser;
use entity::meal::Difficulty;
use serde_json::json;

mod report;

struct Stats {
    rps: f64,
    p50: Duration,
    p99: Duration,
}

async fn load(url: &str, bodies: Arc<Vec<String>>, requests: usize, concurrency: usize) -> Stats {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .build()
        .unwrap();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (client, url, bodies, next) =
            (client.clone(), url.to_owned(), bodies.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= requests {
                    break;
                }
                let body = bodies[i % bodies.len()].clone();
                let t = Instant::now();
                let r = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await
                    .expect("request");
                assert!(r.status().is_success());
                let bytes = r.bytes().await.unwrap();
                assert!(!bytes.is_empty());
                lat.push(t.elapsed());
            }
            lat
        }));
    }
    let mut all = Vec::with_capacity(requests);
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let elapsed = start.elapsed();
    all.sort();
    Stats {
        rps: requests as f64 / elapsed.as_secs_f64(),
        p50: all[all.len() / 2],
        p99: all[all.len() * 99 / 100],
    }
}

async fn bare_axum() -> String {
    let app = axum::Router::new().route(
        "/json",
        axum::routing::post(|| async {
            axum::Json(
                json!({ "data": { "meal": { "id": "1", "name": "Margherita", "price": 9.5 } } }),
            )
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}/json")
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[tokio::main]
async fn main() {
    // `cargo bench` passes `--bench`; ignore our own arguments.
    let requests = env_usize("BENCH_REQUESTS", 20_000);
    let concurrency = env_usize("BENCH_CONCURRENCY", 32);
    let mut settings: Settings = arena::config::Cli::parse_from(["arena"]).settings;
    settings.addr = "127.0.0.1:0".parse().unwrap();
    settings.log = "error".into();
    settings.sync_enabled = false;
    settings.cache_prefix = format!("bench:{}:", uuid::Uuid::new_v4().simple());
    let dir = tempfile::tempdir().unwrap();
    let mut scratch_db: Option<(String, String)> = None;
    let backend = match (
        std::env::var("TEST_DATABASE_URL"),
        std::env::var("TEST_REDIS_URL"),
    ) {
        (Ok(admin), Ok(redis)) => {
            let name = format!("arena_bench_{}", uuid::Uuid::new_v4().simple());
            let conn = sea_orm::Database::connect(&admin).await.unwrap();
            sea_orm::ConnectionTrait::execute_unprepared(
                &conn,
                &format!("CREATE DATABASE \"{name}\""),
            )
            .await
            .unwrap();
            let base = admin
                .rsplit_once('/')
                .map(|(b, _)| b)
                .unwrap_or(&admin)
                .to_owned();
            settings.database_url = format!("{base}/{name}");
            settings.redis_url = Some(redis);
            scratch_db = Some((admin, name));
            "PostgreSQL + Redis"
        }
        _ => {
            settings.database_url = format!(
                "sqlite://{}?mode=rwc",
                dir.path().join("bench.db").display()
            );
            "SQLite + in-process cache"
        }
    };
    arena::telemetry::init(&settings.log, false);
    let app = Application::build(settings).await.unwrap();
    let state = app.state().clone();
    let url = format!("http://{}/graphql", app.local_addr());
    tokio::spawn(app.run_until(futures::future::pending()));

    let cold_n = requests.min(5_000);
    let mut ids = Vec::with_capacity(cold_n);
    for i in 0..cold_n {
        let m = arena::meals::service::create_meal(
            &state,
            NewMeal {
                name: format!("bench meal {i}"),
                cuisine: "Bench".into(),
                price: 1.0 + i as f64,
                difficulty: Difficulty::Med,
            },
        )
        .await
        .unwrap();
        ids.push(m.id);
    }
    let body = |id: i64| {
        json!({ "query": format!("{{ meal(id: \"{id}\") {{ id name price }} }}") }).to_string()
    };

    let bare = bare_axum().await;
    let bare_bodies = Arc::new(vec![body(1)]);
    // Warm-up both servers.
    load(&bare, bare_bodies.clone(), 2_000, concurrency).await;
    let warm_bodies = Arc::new(ids.iter().take(100).map(|&i| body(i)).collect::<Vec<_>>());
    load(&url, warm_bodies.clone(), 2_000, concurrency).await;

    let b = load(&bare, bare_bodies, requests, concurrency).await;
    let w = load(&url, warm_bodies, requests, concurrency).await;
    // Cold: every request reads a meal whose cache entry was just removed.
    let keys: Vec<String> = ids.iter().map(|i| format!("meal:{i}")).collect();
    for chunk in keys.chunks(500) {
        state.cache.invalidate(chunk).await.unwrap();
    }
    let cold_bodies = Arc::new(ids.iter().map(|&i| body(i)).collect::<Vec<_>>());
    let c = load(&url, cold_bodies, cold_n, concurrency).await;

    let mut section = report::Section::new(
        "meal_read",
        "Warm and cold `meal(id)`, in one process",
        "Arena (started in this process) and a bare axum JSON endpoint, loaded by concurrent \
         tasks of the same process. Warm reads cycle over 100 cached meals; cold reads each \
         read a meal whose cache entry was removed just before. `cargo bench --bench load` \
         measures the read path more faithfully; this one is quick and shows warm ÷ cold.",
    );
    section.setting(format!(
        "{backend}; BENCH_REQUESTS={requests} (cold: {cold_n}), BENCH_CONCURRENCY={concurrency}"
    ));
    let rows: Vec<Vec<String>> = [
        ("bare axum JSON endpoint", &b),
        ("Arena warm meal(id)", &w),
        ("Arena cold meal(id)", &c),
    ]
    .iter()
    .map(|(name, s)| {
        vec![
            name.to_string(),
            format!("{:.0}", s.rps),
            format!("{:.3}", ms(s.p50)),
            format!("{:.3}", ms(s.p99)),
            format!("{:.2}×", s.rps / b.rps),
        ]
    })
    .collect();
    section.table(
        &["scenario", "req/s", "p50 ms", "p99 ms", "req/s ÷ bare"],
        &rows,
    );
    section.table(
        &[
            "warm ÷ bare, req/s",
            "warm ÷ bare, p50",
            "warm ÷ bare, p99",
            "warm ÷ cold, req/s",
            "cold ÷ warm, p50",
        ],
        &[vec![
            format!("{:.2}×", w.rps / b.rps),
            format!("{:.2}×", ms(w.p50) / ms(b.p50)),
            format!("{:.2}×", ms(w.p99) / ms(b.p99)),
            format!("{:.2}×", w.rps / c.rps),
            format!("{:.2}×", ms(c.p50) / ms(w.p50)),
        ]],
    );
    section.write();
    if let Some((admin, name)) = scratch_db {
        let conn = sea_orm::Database::connect(&admin).await.unwrap();
        let _ = sea_orm::ConnectionTrait::execute_unprepared(
            &conn,
            &format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"),
        )
        .await;
    }
}
