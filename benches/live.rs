//! `cargo bench --bench live`: live queries (`query … @live`) as a user sees them: how soon a
//! write on one replica reaches 10 000 subscribers on another, what it costs the replica
//! that keeps them up to date, what an idle live query costs in memory, and the same against
//! polling as Hasura does it.
//!
//! Needs PostgreSQL and Redis: `TEST_DATABASE_URL` (a URL whose user may create databases) and
//! `TEST_REDIS_URL`; without them the bench says so and does nothing. Also `taskset` and `psql`.
//!
//! Set-up:
//! - a scratch database `arena_bench_<uuid>` (dropped at the end) and a unique
//!   `ARENA_CACHE_PREFIX`, shared by two release `arena` replicas, R1 and R2, each a process of
//!   its own pinned to core 0 (`taskset -c 0`), with the WebSocket caps
//!   (`ARENA_WS_MAX_CONNECTIONS`, `ARENA_WS_MAX_UNAUTHENTICATED`, `ARENA_WS_MAX_OPERATIONS`)
//!   raised above what the bench opens;
//! - this bench pins itself to core 1 (`sched_setaffinity` before any thread starts, so its
//!   WebSocket clients, its writer and its poller all run there);
//! - 1 000 meals created through R2's GraphQL (`createUser`, `login`, `createMeal`).
//!
//! Then, in order:
//! 0. **Control.** The writes of step 2 (same meals, same rate, other prices) with no live
//!    query open: R1's CPU per second then is what a replica spends anyway when another one
//!    writes (its caches' messages), not what live queries cost.
//! 1. **Memory.** One warm-up live query on R1, closed; R1's VmRSS; then 10 000 subscribers of
//!    `query($id: ID!) @live { meal(id: $id) { id name price } }` on R1 (100
//!    `graphql-transport-ws` connections × 100 operations, 10 subscribers per meal, a meal's
//!    subscribers on 10 different connections), opened all at once (each connection sends its
//!    100 `subscribe`s as soon as it is acknowledged), until every first result is in, R1's
//!    `arena_live_queries` and `arena_live_documents` say 10 000 and 1 000, and R1 is quiet
//!    (neither its live executions nor the results received move for 1.5 s). What R1 did
//!    meanwhile is reported: failed cache calls (`arena_cache_errors_total`: a Redis call
//!    over `ARENA_REDIS_TIMEOUT_MS` puts the replica in degraded mode, where reads go to
//!    PostgreSQL and live queries re-check every second), SQL statements, live executions,
//!    first results in `recheck` mode and results sent again with the same data. Then R1's
//!    CPU over 2 s idle, and VmRSS again. Growth ÷ subscribers = memory per idle live query
//!    (target ≤ 50 KiB).
//! 2. **Writes.** `BENCH_LIVE_WRITES` (300) `updateMeal`s on R2 at `BENCH_LIVE_RATE` (50/s),
//!    each started on its tick whatever the previous did, each to a different meal (a seeded
//!    random permutation) with a unique price. The bench keeps the instant each write's HTTP
//!    response arrived (its acknowledgement), and every subscriber the instant it read a
//!    result with that price. Update latency = receive − acknowledgement (an update that
//!    arrived before the acknowledgement counts as 0, and how many did is reported);
//!    p50 / p99 / max over every (write, subscriber of its meal). Missing updates (target 0)
//!    and results that show no written price or repeat one (target 0) are counted.
//!    `arena_live_executions_total` on R1, its delta ÷ writes (target 1: each write changes
//!    one document), `arena_sql_queries_total` on R1 ÷ writes, and R1's CPU (utime + stime
//!    of `/proc/<pid>/stat`, over `CLK_TCK`) per second of the write phase: from the first
//!    write to 2 s after the last acknowledgement.
//! 3. **Polling, over the same writes.** During that same write phase a poller thread of this
//!    bench does what Hasura's live queries do for the 1 000 distinct queries (1 000 cohorts
//!    of 10 subscribers): every second (Hasura's default refetch interval), one multiplexed
//!    SQL statement per batch of 100 cohorts (Hasura's default batch size) — `UNNEST` of the
//!    cohort ids and their variables, `LEFT OUTER JOIN LATERAL` the meal's row built as JSON
//!    by `json_build_object`, as Hasura's SQL does — straight to PostgreSQL over one sqlx
//!    connection; each cohort's result is compared with its previous one, and a write has
//!    reached the cohort at the end of the first statement that showed its price. It polls
//!    PostgreSQL rather than an Arena replica with its memo off: Arena would answer
//!    `meal(id)` from its entity cache, which is not the load a polling server puts on the
//!    database. The poller side's CPU is the PostgreSQL backend of that connection
//!    (`pg_backend_pid()`, its `/proc/<pid>/stat`) plus the poller thread's
//!    (`/proc/self/task/<tid>/stat`); its SQL statements per second are the ones it sent.
//!    Ratios Arena ÷ poller: CPU per second, SQL statements per second, latency p50 and p99.
//! 4. **One document.** The 10 000 subscribers closed (R1 back to 0 live queries), 10 000 new
//!    ones of one meal (100 × 100 again, opened the same way, R1 quiet before the write); one
//!    write on R2: the delta of R1's `arena_live_executions_total` (target exactly 1), how
//!    many subscribers got it, and the time from the acknowledgement to the first, the median
//!    and the last one (their 10 000 messages are read by this bench on one core too).
//!
//! Environment: `BENCH_LIVE_WRITES` (300), `BENCH_LIVE_RATE` (writes per second, 50),
//! `BENCH_LIVE_CONNECTIONS` (100), `BENCH_LIVE_OPERATIONS` (operations per connection, 100),
//! `BENCH_LIVE_MEALS` (1 000); `BENCH_NO_WRITE=1` prints the section without writing it.
//!
//! The results go into the `live` section of `docs/benchmarks.md`, with the date, commit and
//! machine (`benches/report/`). Servers are killed when the bench ends, also on a panic
//! (guards with `Drop`), then the scratch database is dropped.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;

mod report;

/// The core the servers are pinned to, and the one this bench pins itself to.
const SERVER_CORE: &str = "0";
const CLIENT_CORE: usize = 1;

const LIVE_QUERY: &str = "query($id: ID!) @live { meal(id: $id) { id name price } }";
const UPDATE: &str =
    "mutation($id: ID!, $p: Float!) { updateMeal(id: $id, input: { price: $p }) { id price } }";

/// Prices of the writes: `WRITE_PRICE_BASE + k` for write `k` (the seeded meals cost 1 to 50).
const WRITE_PRICE_BASE: f64 = 10_000.0;
/// Added to the prices of the control writes.
const CONTROL_PRICE_OFFSET: f64 = 100_000.0;
/// The price of the one-document write.
const SINGLE_PRICE: f64 = 7_777.25;

/// After the last acknowledgement, how long the write phase (and its CPU window) goes on.
const TAIL: Duration = Duration::from_secs(2);
/// How long missing updates are waited for after that.
const GRACE: Duration = Duration::from_secs(10);

/// Hasura's defaults: `HASURA_GRAPHQL_LIVE_QUERIES_MULTIPLEXED_REFETCH_INTERVAL` (1 s) and
/// `HASURA_GRAPHQL_LIVE_QUERIES_MULTIPLEXED_BATCH_SIZE` (100).
const POLL_INTERVAL: Duration = Duration::from_secs(1);
const POLL_BATCH: usize = 100;

/// The SQL Hasura sends for a batch of cohorts of `meal(id) { id name price }`: the cohorts'
/// ids and variables unnested, each joined laterally to its result built as JSON in
/// PostgreSQL.
const POLL_SQL: &str = r#"SELECT "_subs"."result_id", "_fld_resp"."root"::text AS "result"
FROM UNNEST(($1)::bigint[], ($2)::text[]::json[]) AS "_subs"("result_id", "result_vars")
LEFT OUTER JOIN LATERAL (
  SELECT json_build_object('meal', "_meal"."root") AS "root"
  FROM (
    SELECT (
      SELECT json_build_object('id', "_root.base"."id"::text, 'name', "_root.base"."name",
                               'price', "_root.base"."price")
      FROM (
        SELECT * FROM "public"."meals"
        WHERE "public"."meals"."id" = (("_subs"."result_vars" #>> ARRAY['query', 'id']))::bigint
          AND NOT "public"."meals"."deleted"
        LIMIT 1
      ) AS "_root.base"
    ) AS "root"
  ) AS "_meal"
) AS "_fld_resp" ON ('true')"#;

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

// ---------------------------------------------------------------------------------------------
// Entry point.
// ---------------------------------------------------------------------------------------------

struct Config {
    writes: usize,
    rate: f64,
    connections: usize,
    operations: usize,
    meals: usize,
    clk_tck: f64,
}

impl Config {
    fn from_env() -> Self {
        let num = |name: &str, default: usize| {
            std::env::var(name)
                .ok()
                .map(|v| {
                    v.parse()
                        .unwrap_or_else(|_| panic!("{name}={v}: not a number"))
                })
                .unwrap_or(default)
        };
        // SAFETY: sysconf only reads a system constant.
        let clk = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        let cfg = Config {
            writes: num("BENCH_LIVE_WRITES", 300),
            rate: num("BENCH_LIVE_RATE", 50) as f64,
            connections: num("BENCH_LIVE_CONNECTIONS", 100),
            operations: num("BENCH_LIVE_OPERATIONS", 100),
            meals: num("BENCH_LIVE_MEALS", 1000),
            clk_tck: if clk > 0 { clk as f64 } else { 100.0 },
        };
        assert!(
            cfg.writes > 0 && cfg.rate > 0.0 && cfg.meals > 0,
            "BENCH_LIVE_WRITES, BENCH_LIVE_RATE and BENCH_LIVE_MEALS must be positive"
        );
        assert!(
            cfg.subscribers() >= cfg.meals,
            "fewer subscribers ({}) than meals ({})",
            cfg.subscribers(),
            cfg.meals
        );
        cfg
    }

    fn subscribers(&self) -> usize {
        self.connections * self.operations
    }
}

fn main() {
    // Before any thread starts: every thread of this process inherits it.
    let pinned = pin_self(CLIENT_CORE);
    let (db, redis) = match (
        std::env::var("TEST_DATABASE_URL"),
        std::env::var("TEST_REDIS_URL"),
    ) {
        (Ok(db), Ok(redis)) => (db, redis),
        _ => {
            println!(
                "live bench skipped: it needs PostgreSQL and Redis; set TEST_DATABASE_URL and \
                 TEST_REDIS_URL"
            );
            return;
        }
    };
    for tool in ["taskset", "psql"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        assert!(found, "`{tool}` is needed on PATH");
    }
    let cfg = Config::from_env();
    println!(
        "live bench: servers on core {SERVER_CORE}, this bench on core {CLIENT_CORE} ({}); \
         {} subscribers ({} connections × {}) over {} meals; {} writes at {}/s; CLK_TCK {}",
        match &pinned {
            Ok(()) => "pinned".to_owned(),
            Err(e) => format!("NOT pinned: {e}"),
        },
        cfg.subscribers(),
        cfg.connections,
        cfg.operations,
        cfg.meals,
        cfg.writes,
        cfg.rate,
        cfg.clk_tck
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    let outcome = rt.block_on(run(&cfg, &db, &redis));
    write_report(&cfg, &outcome, pinned.is_ok());
}

/// Restricts this thread (and the threads it starts from now on) to `core`.
fn pin_self(core: usize) -> Result<(), String> {
    // SAFETY: a zeroed cpu_set_t is an empty set; CPU_SET and sched_setaffinity only read and
    // write that set and this thread's affinity.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(core, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error().to_string())
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The run.
// ---------------------------------------------------------------------------------------------

/// Everything measured, for the report.
struct Outcome {
    opening: Opening,
    control_cpu_per_sec: f64,
    control_cpu_ms_per_write: f64,
    rss_before_kib: u64,
    rss_after_kib: u64,
    idle_cpu_per_sec: f64,
    live_queries: f64,
    live_documents: f64,
    writes_failed: Vec<String>,
    write_ack_p50_us: f64,
    arena: Side,
    poller: Side,
    executions_per_write: f64,
    sql_per_write: f64,
    cpu_ms_per_write: f64,
    early: usize,
    extra: usize,
    missing_detail: Vec<String>,
    poll_statements: usize,
    poll_window_secs: f64,
    pg_backend_measured: bool,
    poller_pg_cpu_per_sec: f64,
    poller_thread_cpu_per_sec: f64,
    single: Single,
    problems: Vec<String>,
    problem_count: usize,
}

/// One side of the comparison over the write phase.
#[derive(Default)]
struct Side {
    /// Latencies (µs) of every update that arrived, sorted.
    latencies_us: Vec<f64>,
    expected: usize,
    missing: usize,
    cpu_per_sec: f64,
    sql_per_sec: f64,
}

/// The one-document scenario.
struct Single {
    opening: Opening,
    subscribers: usize,
    documents: f64,
    executions: f64,
    updated: usize,
    first_ms: f64,
    p50_ms: f64,
    last_ms: f64,
    /// What the clients saw go wrong (the first 50), and how many things did.
    problems: Vec<String>,
    problem_count: usize,
}

async fn run(cfg: &Config, admin: &str, redis: &str) -> Outcome {
    let dir = tempfile::tempdir().expect("a temp dir");
    // Declared first so it is dropped last, after the servers that use it.
    let scratch = ScratchDb::create(admin);
    let prefix = format!("bench:{}:", uuid::Uuid::new_v4().simple());
    let caps = [
        (
            "ARENA_WS_MAX_CONNECTIONS",
            (cfg.connections + 100).max(10_000).to_string(),
        ),
        (
            "ARENA_WS_MAX_UNAUTHENTICATED",
            (cfg.connections + 100).max(1_000).to_string(),
        ),
        (
            "ARENA_WS_MAX_OPERATIONS",
            (cfg.operations + 10).max(100).to_string(),
        ),
    ];
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("an HTTP client");
    // R1 first: it migrates the scratch database before R2 starts.
    let r1 = spawn_arena(&http, dir.path(), "r1", &scratch, redis, &prefix, &caps).await;
    let r2 = spawn_arena(&http, dir.path(), "r2", &scratch, redis, &prefix, &caps).await;

    let started = Instant::now();
    let (token, meal_ids) = seed(&http, &r2, cfg.meals).await;
    println!(
        "seeded {} meals through R2 in {:.1} s",
        meal_ids.len(),
        started.elapsed().as_secs_f64()
    );

    let mut order: Vec<usize> = (0..cfg.meals).collect();
    {
        use rand::seq::SliceRandom;
        use rand::SeedableRng;
        order.shuffle(&mut rand::rngs::StdRng::seed_from_u64(0x11fe));
    }
    let writes: Vec<(usize, f64)> = (0..cfg.writes)
        .map(|k| (order[k % order.len()], WRITE_PRICE_BASE + k as f64))
        .collect();

    // The control: the same writes (other prices) with no live query open, for what R1 does
    // anyway when another replica writes.
    let control: Vec<(usize, f64)> = writes
        .iter()
        .map(|(meal, price)| (*meal, price + CONTROL_PRICE_OFFSET))
        .collect();
    let ticks = proc_ticks(r1.pid());
    let from = Instant::now();
    let acks = write_phase(&http, &r2, &token, &meal_ids, &control, cfg.rate).await;
    let last = acks.iter().map(|a| a.ack).max().expect("a write");
    tokio::time::sleep_until((last + TAIL).into()).await;
    let control_cpu = (proc_ticks(r1.pid()) - ticks) as f64 / cfg.clk_tck;
    let control_cpu_per_sec = control_cpu / from.elapsed().as_secs_f64();
    let control_failed = acks.iter().filter(|a| a.error.is_some()).count();
    assert_eq!(control_failed, 0, "control writes failed");
    let control_cpu_ms_per_write = control_cpu * 1e3 / control.len() as f64;
    println!(
        "control: {} writes with no live query open: R1 CPU {:.3} s/s ({:.2} ms per write)",
        control.len(),
        control_cpu_per_sec,
        control_cpu_ms_per_write
    );

    // 1. Memory: a warm-up live query, closed, then the resident size before and after.
    {
        let warm = Subscribers::open(&r1.ws_url(), 1, 1, &|_| meal_ids[0].clone()).await;
        warm.wait_first(Duration::from_secs(30)).await;
        warm.close();
        wait_metric(&http, &r1, "arena_live_queries", 0.0).await;
        wait_metric(&http, &r1, "arena_live_documents", 0.0).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let rss_before_kib = rss_kib(r1.pid());
    let (subs, opening) =
        open_and_settle(cfg, &http, &r1, &|s| meal_ids[s % cfg.meals].clone()).await;
    wait_metric(&http, &r1, "arena_live_documents", cfg.meals as f64).await;
    let live_queries = metric(&http, &r1, "arena_live_queries").await;
    let live_documents = metric(&http, &r1, "arena_live_documents").await;
    let idle_ticks = proc_ticks(r1.pid());
    let idle_from = Instant::now();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle_cpu_per_sec = (proc_ticks(r1.pid()) - idle_ticks) as f64
        / cfg.clk_tck
        / idle_from.elapsed().as_secs_f64();
    let rss_after_kib = rss_kib(r1.pid());
    println!(
        "{} live queries ({} documents) on R1, every first result in {:.1} s (meanwhile on R1: \
         {} failed cache calls, {} SQL statements, {} executions; {} first results in recheck \
         mode, {} results repeating the first); R1 RSS {:.1} → {:.1} MiB; idle CPU {:.3} s/s",
        live_queries,
        live_documents,
        opening.secs,
        opening.cache_errors,
        opening.sql,
        opening.executions,
        opening.first_recheck,
        opening.repeats,
        rss_before_kib as f64 / 1024.0,
        rss_after_kib as f64 / 1024.0,
        idle_cpu_per_sec
    );

    // 2 and 3. The write phase, with the poller running over the same writes.
    let poller = Poller::start(&scratch.url, &meal_ids);
    let executions_before = metric(&http, &r1, "arena_live_executions_total").await;
    let sql_before = metric(&http, &r1, "arena_sql_queries_total").await;
    let updates_before = subs.shared.updates.load(Ordering::Acquire);
    let r1_ticks = proc_ticks(r1.pid());
    let pg_ticks = poller.backend_ticks();
    let poller_ticks = poller.thread_ticks();
    let window_start = Instant::now();
    let acks = write_phase(&http, &r2, &token, &meal_ids, &writes, cfg.rate).await;
    let last_ack = acks
        .iter()
        .map(|a| a.ack)
        .max()
        .expect("at least one write");
    tokio::time::sleep_until((last_ack + TAIL).into()).await;
    let window_secs = window_start.elapsed().as_secs_f64();
    let r1_cpu = (proc_ticks(r1.pid()) - r1_ticks) as f64 / cfg.clk_tck;
    let pg_cpu = poller
        .backend_ticks()
        .zip(pg_ticks)
        .map(|(after, before)| (after - before) as f64 / cfg.clk_tck);
    let poller_cpu = (poller.thread_ticks() - poller_ticks) as f64 / cfg.clk_tck;
    let window_end = Instant::now();
    let polled = poller.stop();
    // Missing updates get a little longer.
    let expected_updates: usize = writes
        .iter()
        .zip(&acks)
        .filter(|(_, a)| a.error.is_none())
        .map(|((meal, _), _)| subscribers_of(*meal, cfg))
        .sum();
    let grace_end = Instant::now() + GRACE;
    while subs.shared.updates.load(Ordering::Acquire) - updates_before < expected_updates
        && Instant::now() < grace_end
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let executions = metric(&http, &r1, "arena_live_executions_total").await - executions_before;
    let sql = metric(&http, &r1, "arena_sql_queries_total").await - sql_before;

    let events = std::mem::take(&mut *subs.shared.events.lock().unwrap());
    let analysis = analyse_live(cfg, &writes, &acks, &events, &meal_ids);
    let poll_latencies = analyse_poll(&writes, &acks, &polled.changes);
    let poll_statements = polled
        .statements
        .iter()
        .filter(|t| **t >= window_start && **t <= window_end)
        .count();
    let ok_writes = acks.iter().filter(|a| a.error.is_none()).count().max(1) as f64;
    let mut write_ack: Vec<f64> = acks
        .iter()
        .filter(|a| a.error.is_none())
        .map(|a| (a.ack - a.sent).as_secs_f64() * 1e6)
        .collect();
    write_ack.sort_by(f64::total_cmp);
    let arena = Side {
        expected: expected_updates,
        missing: analysis.missing,
        cpu_per_sec: r1_cpu / window_secs,
        sql_per_sec: sql / window_secs,
        latencies_us: analysis.latencies_us,
    };
    let poller_side = Side {
        expected: acks.iter().filter(|a| a.error.is_none()).count(),
        missing: poll_latencies.1,
        cpu_per_sec: (pg_cpu.unwrap_or(0.0) + poller_cpu) / window_secs,
        sql_per_sec: poll_statements as f64 / window_secs,
        latencies_us: poll_latencies.0,
    };
    println!(
        "write phase: {} writes in {:.1} s; R1: {:.2} executions/write, {:.2} SQL/write, CPU \
         {:.3} s/s; updates {} of {} ({} missing), p50 {} p99 {}; poller: {} statements, CPU \
         {:.3} s/s, p50 {} p99 {}",
        writes.len(),
        window_secs,
        executions / ok_writes,
        sql / ok_writes,
        arena.cpu_per_sec,
        arena.latencies_us.len(),
        arena.expected,
        arena.missing,
        fmt_us(percentile(&arena.latencies_us, 0.5)),
        fmt_us(percentile(&arena.latencies_us, 0.99)),
        poll_statements,
        poller_side.cpu_per_sec,
        fmt_us(percentile(&poller_side.latencies_us, 0.5)),
        fmt_us(percentile(&poller_side.latencies_us, 0.99)),
    );
    let mut problems = polled.errors;
    let mut problem_count = problems.len();
    {
        let p = subs.shared.problems.lock().unwrap();
        problem_count += subs.shared.problem_count.load(Ordering::Acquire);
        problems.extend(p.iter().cloned());
    }
    subs.close();
    wait_metric(&http, &r1, "arena_live_queries", 0.0).await;
    wait_metric(&http, &r1, "arena_live_documents", 0.0).await;

    // 4. One document, as many subscribers.
    let mut single = one_document(cfg, &http, &r1, &r2, &token, &meal_ids[0]).await;
    println!(
        "one document: {} subscribers, {} execution(s) on R1 for one write, {} updated, ack → \
         last {:.1} ms",
        single.subscribers, single.executions, single.updated, single.last_ms
    );
    problem_count += single.problem_count + single_problems(&mut problems, &single, cfg);
    problems.append(&mut single.problems);

    Outcome {
        opening,
        control_cpu_per_sec,
        control_cpu_ms_per_write,
        rss_before_kib,
        rss_after_kib,
        idle_cpu_per_sec,
        live_queries,
        live_documents,
        writes_failed: acks
            .iter()
            .enumerate()
            .filter_map(|(k, a)| a.error.as_ref().map(|e| format!("write {k}: {e}")))
            .collect(),
        write_ack_p50_us: percentile(&write_ack, 0.5),
        executions_per_write: executions / ok_writes,
        sql_per_write: sql / ok_writes,
        cpu_ms_per_write: r1_cpu * 1e3 / ok_writes,
        early: analysis.early,
        extra: analysis.extra,
        missing_detail: analysis.missing_detail,
        poll_statements,
        poll_window_secs: window_secs,
        pg_backend_measured: pg_cpu.is_some(),
        poller_pg_cpu_per_sec: pg_cpu.unwrap_or(0.0) / window_secs,
        poller_thread_cpu_per_sec: poller_cpu / window_secs,
        arena,
        poller: poller_side,
        single,
        problems,
        problem_count,
    }
}

/// What happened while a set of subscribers opened, until R1 was quiet again.
#[derive(Default)]
struct Opening {
    /// Until every first result was in.
    secs: f64,
    /// R1's failed cache calls (`arena_cache_errors_total`), SQL statements and live
    /// executions, until quiet.
    cache_errors: f64,
    sql: f64,
    executions: f64,
    /// First results in `recheck` mode.
    first_recheck: usize,
    /// Results after the first (no write was made), and how many of them showed the same
    /// meal as the first.
    repeats: usize,
    repeats_same: usize,
}

/// R1's failed cache calls, SQL statements and live executions.
async fn counters(http: &reqwest::Client, r1: &Server) -> [f64; 3] {
    [
        metric(http, r1, "arena_cache_errors_total").await,
        metric(http, r1, "arena_sql_queries_total").await,
        metric(http, r1, "arena_live_executions_total").await,
    ]
}

/// Opens `cfg`'s subscribers on R1 all at once, subscriber `s` reading `meal_of(s)`; returns
/// once every first result is in, R1 counts them all, and neither R1's live executions nor
/// the results received have moved for 1.5 s. What was received until then is cleared.
async fn open_and_settle(
    cfg: &Config,
    http: &reqwest::Client,
    r1: &Server,
    meal_of: &dyn Fn(usize) -> String,
) -> (Subscribers, Opening) {
    let before = counters(http, r1).await;
    let start = Instant::now();
    let subs = Subscribers::open(&r1.ws_url(), cfg.connections, cfg.operations, meal_of).await;
    subs.wait_first(Duration::from_secs(180)).await;
    let secs = start.elapsed().as_secs_f64();
    wait_metric(http, r1, "arena_live_queries", cfg.subscribers() as f64).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = (f64::NAN, usize::MAX);
    let mut quiet_since = Instant::now();
    loop {
        let now = (
            metric(http, r1, "arena_live_executions_total").await,
            subs.shared.updates.load(Ordering::Acquire),
        );
        if now != last {
            last = now;
            quiet_since = Instant::now();
        } else if quiet_since.elapsed() >= Duration::from_millis(1500) {
            break;
        }
        if Instant::now() > deadline {
            eprintln!("R1 was still not quiet 30 s after the subscribers opened");
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let after = counters(http, r1).await;
    let events = std::mem::take(&mut *subs.shared.events.lock().unwrap());
    subs.shared.updates.store(0, Ordering::Release);
    let mut first_price: HashMap<u32, Option<f64>> = HashMap::new();
    let mut opening = Opening {
        secs,
        cache_errors: after[0] - before[0],
        sql: after[1] - before[1],
        executions: after[2] - before[2],
        ..Opening::default()
    };
    for e in &events {
        if e.first {
            first_price.insert(e.sub, e.price);
            opening.first_recheck += usize::from(e.recheck);
        } else {
            opening.repeats += 1;
            if first_price.get(&e.sub) == Some(&e.price) {
                opening.repeats_same += 1;
            }
        }
    }
    (subs, opening)
}

/// Subscriber `s` reads meal `s % meals`: how many read `meal`.
fn subscribers_of(meal: usize, cfg: &Config) -> usize {
    (0..cfg.subscribers())
        .filter(|s| s % cfg.meals == meal)
        .count()
}

/// Problems of the one-document scenario, added to `problems`; returns how many.
fn single_problems(problems: &mut Vec<String>, single: &Single, cfg: &Config) -> usize {
    let mut n = 0;
    if single.updated < cfg.subscribers() {
        problems.push(format!(
            "one document: {} of {} subscribers never received the write's price {SINGLE_PRICE}",
            cfg.subscribers() - single.updated,
            cfg.subscribers()
        ));
        n += 1;
    }
    if single.executions != 1.0 {
        problems.push(format!(
            "one document: {} executions on R1 for one write (expected exactly 1)",
            single.executions
        ));
        n += 1;
    }
    n
}

async fn one_document(
    cfg: &Config,
    http: &reqwest::Client,
    r1: &Server,
    r2: &Server,
    token: &str,
    meal_id: &str,
) -> Single {
    let (subs, opening) = open_and_settle(cfg, http, r1, &|_| meal_id.to_owned()).await;
    let documents = metric(http, r1, "arena_live_documents").await;
    let before = metric(http, r1, "arena_live_executions_total").await;
    let r = gql(
        http,
        r2,
        UPDATE,
        json!({ "id": meal_id, "p": SINGLE_PRICE }),
        Some(token),
    )
    .await;
    let ack = Instant::now();
    assert!(r.get("errors").is_none(), "the one-document write: {r}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while subs.shared.updates.load(Ordering::Acquire) < cfg.subscribers()
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Any further execution would show within this.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let executions = metric(http, r1, "arena_live_executions_total").await - before;
    let events = std::mem::take(&mut *subs.shared.events.lock().unwrap());
    let problems: Vec<String> = subs
        .shared
        .problems
        .lock()
        .unwrap()
        .iter()
        .map(|p| format!("one document: {p}"))
        .collect();
    let problem_count = subs.shared.problem_count.load(Ordering::Acquire);
    let mut got: HashMap<u32, Instant> = HashMap::new();
    for e in events.iter().filter(|e| !e.first) {
        if e.price == Some(SINGLE_PRICE) {
            got.entry(e.sub).or_insert(e.at);
        }
    }
    let mut ms: Vec<f64> = got
        .values()
        .map(|at| at.saturating_duration_since(ack).as_secs_f64() * 1e3)
        .collect();
    ms.sort_by(f64::total_cmp);
    subs.close();
    wait_metric(http, r1, "arena_live_queries", 0.0).await;
    Single {
        opening,
        subscribers: cfg.subscribers(),
        documents,
        executions,
        updated: got.len(),
        first_ms: ms.first().copied().unwrap_or(f64::NAN),
        p50_ms: percentile(&ms, 0.5),
        last_ms: ms.last().copied().unwrap_or(f64::NAN),
        problems,
        problem_count,
    }
}

// ---------------------------------------------------------------------------------------------
// Writes.
// ---------------------------------------------------------------------------------------------

struct Ack {
    sent: Instant,
    /// When the response had arrived.
    ack: Instant,
    error: Option<String>,
}

/// One `updateMeal` per tick of `rate`, each started on time whatever the others do.
async fn write_phase(
    http: &reqwest::Client,
    r2: &Server,
    token: &str,
    meal_ids: &[String],
    writes: &[(usize, f64)],
    rate: f64,
) -> Vec<Ack> {
    let start = tokio::time::Instant::now();
    let mut tasks = Vec::with_capacity(writes.len());
    for (k, (meal, price)) in writes.iter().enumerate() {
        tokio::time::sleep_until(start + Duration::from_secs_f64(k as f64 / rate)).await;
        let (http, url, token) = (http.clone(), r2.graphql_url(), token.to_owned());
        let body = json!({ "query": UPDATE, "variables": { "id": meal_ids[*meal], "p": price } });
        tasks.push(tokio::spawn(async move {
            let sent = Instant::now();
            let r = http.post(&url).bearer_auth(&token).json(&body).send().await;
            let answer = match r {
                Ok(resp) => resp.json::<Value>().await.map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            let ack = Instant::now();
            let error = match answer {
                Ok(v) if v.get("errors").is_none() && v["data"]["updateMeal"].is_object() => None,
                Ok(v) => Some(clip(&v.to_string())),
                Err(e) => Some(e),
            };
            Ack { sent, ack, error }
        }));
    }
    let mut acks = Vec::with_capacity(tasks.len());
    for t in tasks {
        acks.push(t.await.expect("a write task"));
    }
    acks
}

// ---------------------------------------------------------------------------------------------
// Live subscribers.
// ---------------------------------------------------------------------------------------------

/// A `next` a subscriber received.
struct Event {
    sub: u32,
    /// `data.meal.price`, if any.
    price: Option<f64>,
    at: Instant,
    /// The operation's first result.
    first: bool,
    /// `extensions.live.mode` is `recheck`: the server could not vouch for the result and
    /// runs it again every second.
    recheck: bool,
}

#[derive(Default)]
struct Shared {
    events: Mutex<Vec<Event>>,
    /// Operations whose first result arrived.
    first: AtomicUsize,
    /// Results after the first.
    updates: AtomicUsize,
    /// What went wrong (the first 50), and how many things did.
    problems: Mutex<Vec<String>>,
    problem_count: AtomicUsize,
    closing: AtomicBool,
}

impl Shared {
    fn problem(&self, what: String) {
        if self.problem_count.fetch_add(1, Ordering::AcqRel) < 50 {
            self.problems.lock().unwrap().push(what);
        }
    }
}

/// `connections` × `operations` live queries, subscriber `s` on connection
/// `s / operations`, reading the meal `meal_of(s)`.
struct Subscribers {
    shared: Arc<Shared>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    total: usize,
}

impl Subscribers {
    async fn open(
        ws_url: &str,
        connections: usize,
        operations: usize,
        meal_of: &dyn Fn(usize) -> String,
    ) -> Self {
        let shared = Arc::new(Shared::default());
        let mut tasks = Vec::with_capacity(connections);
        for c in 0..connections {
            let subs: Vec<(u32, String)> = (c * operations..(c + 1) * operations)
                .map(|s| (s as u32, meal_of(s)))
                .collect();
            tasks.push(tokio::spawn(connection(
                ws_url.to_owned(),
                c,
                subs,
                shared.clone(),
            )));
            // A few handshakes at a time.
            if c % 10 == 9 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        Subscribers {
            shared,
            tasks,
            total: connections * operations,
        }
    }

    async fn wait_first(&self, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let got = self.shared.first.load(Ordering::Acquire);
            if got >= self.total {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "only {got} of {} live queries got their first result within {within:?}; \
                     problems: {:?}",
                    self.total,
                    self.shared.problems.lock().unwrap()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Drops every connection (the server sees them close).
    fn close(&self) {
        self.shared.closing.store(true, Ordering::Release);
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Drop for Subscribers {
    fn drop(&mut self) {
        self.close();
    }
}

async fn open_socket(ws_url: &str) -> Result<Socket, String> {
    let mut request = ws_url.into_client_request().map_err(|e| e.to_string())?;
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_static("graphql-transport-ws"),
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(request)
        .await
        .map_err(|e| format!("upgrade: {e}"))?;
    ws.send(Message::text(
        json!({ "type": "connection_init", "payload": {} }).to_string(),
    ))
    .await
    .map_err(|e| e.to_string())?;
    let ack = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(t))) if t.contains("\"connection_ack\"") => return Ok(()),
                Some(Ok(Message::Text(t))) => return Err(format!("before the ack: {t}")),
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e.to_string()),
                None => return Err("closed before connection_ack".to_owned()),
            }
        }
    })
    .await
    .map_err(|_| "no connection_ack within 30 s".to_owned())?;
    ack.map(|()| ws)
}

/// One connection: its subscriptions, then every message it receives, until aborted.
async fn connection(ws_url: String, c: usize, subs: Vec<(u32, String)>, shared: Arc<Shared>) {
    let mut ws = match open_socket(&ws_url).await {
        Ok(ws) => ws,
        Err(e) => {
            shared.problem(format!("connection {c}: {e}"));
            return;
        }
    };
    let base = subs.first().map_or(0, |(s, _)| *s);
    for (s, meal) in &subs {
        let msg = json!({
            "type": "subscribe",
            "id": format!("s{s}"),
            "payload": { "query": LIVE_QUERY, "variables": { "id": meal } },
        });
        if let Err(e) = ws.feed(Message::text(msg.to_string())).await {
            shared.problem(format!("connection {c}: subscribe s{s}: {e}"));
            return;
        }
    }
    if let Err(e) = ws.flush().await {
        shared.problem(format!("connection {c}: flushing the subscribes: {e}"));
        return;
    }
    let mut seen = vec![false; subs.len()];
    while let Some(msg) = ws.next().await {
        let at = Instant::now();
        let text = match msg {
            Ok(Message::Text(t)) => t,
            Ok(Message::Close(frame)) => {
                if !shared.closing.load(Ordering::Acquire) {
                    shared.problem(format!("connection {c}: closed by the server: {frame:?}"));
                }
                return;
            }
            Ok(_) => continue,
            Err(e) => {
                if !shared.closing.load(Ordering::Acquire) {
                    shared.problem(format!("connection {c}: {e}"));
                }
                return;
            }
        };
        let v: Value = match serde_json::from_str(text.as_str()) {
            Ok(v) => v,
            Err(_) => {
                shared.problem(format!("connection {c}: not JSON: {}", clip(text.as_str())));
                continue;
            }
        };
        let id = v["id"].as_str().unwrap_or_default();
        let sub = id.strip_prefix('s').and_then(|n| n.parse::<u32>().ok());
        match (v["type"].as_str().unwrap_or_default(), sub) {
            ("next", Some(sub))
                if sub
                    .checked_sub(base)
                    .is_some_and(|i| (i as usize) < subs.len()) =>
            {
                let i = (sub - base) as usize;
                let payload = &v["payload"];
                if payload.get("errors").is_some() {
                    shared.problem(format!(
                        "{id} (meal {}): errors: {}",
                        subs[i].1,
                        clip(&payload.to_string())
                    ));
                }
                let meal = &payload["data"]["meal"];
                if meal["id"].as_str() != Some(subs[i].1.as_str()) {
                    shared.problem(format!(
                        "{id}: expected meal {}, received {}",
                        subs[i].1,
                        clip(&payload.to_string())
                    ));
                }
                let first = !seen[i];
                seen[i] = true;
                shared.events.lock().unwrap().push(Event {
                    sub,
                    price: meal["price"].as_f64(),
                    at,
                    first,
                    recheck: payload["extensions"]["live"]["mode"] == "recheck",
                });
                if first {
                    shared.first.fetch_add(1, Ordering::AcqRel);
                } else {
                    shared.updates.fetch_add(1, Ordering::AcqRel);
                }
            }
            ("ping", _) => {
                let _ = ws.send(Message::text(r#"{"type":"pong"}"#)).await;
            }
            ("pong", _) => {}
            _ => shared.problem(format!("connection {c}: {}", clip(text.as_str()))),
        }
    }
    if !shared.closing.load(Ordering::Acquire) {
        shared.problem(format!("connection {c}: ended"));
    }
}

/// What the subscribers saw of the writes.
struct LiveAnalysis {
    /// µs from each write's acknowledgement to each of its subscribers' receipt, sorted.
    latencies_us: Vec<f64>,
    early: usize,
    missing: usize,
    missing_detail: Vec<String>,
    /// Results after the first that show no written price, or one already received.
    extra: usize,
}

fn analyse_live(
    cfg: &Config,
    writes: &[(usize, f64)],
    acks: &[Ack],
    events: &[Event],
    meal_ids: &[String],
) -> LiveAnalysis {
    let by_price: HashMap<u64, usize> = writes
        .iter()
        .enumerate()
        .map(|(k, (_, price))| (price.to_bits(), k))
        .collect();
    // (write, subscriber) → first receipt.
    let mut got: HashMap<(usize, u32), Instant> = HashMap::new();
    let mut last_seen: HashMap<u32, Option<f64>> = HashMap::new();
    let mut extra = 0;
    for e in events {
        last_seen.insert(e.sub, e.price);
        if e.first {
            continue;
        }
        match e.price.and_then(|p| by_price.get(&p.to_bits())) {
            Some(&k) if writes[k].0 == e.sub as usize % cfg.meals => {
                if got.insert((k, e.sub), e.at).is_some() {
                    extra += 1;
                }
            }
            _ => extra += 1,
        }
    }
    let mut latencies_us = Vec::new();
    let mut early = 0;
    let mut missing = 0;
    let mut missing_detail = Vec::new();
    for (k, ((meal, price), ack)) in writes.iter().zip(acks).enumerate() {
        if ack.error.is_some() {
            continue;
        }
        for s in (0..cfg.subscribers()).filter(|s| s % cfg.meals == *meal) {
            let s = s as u32;
            match got.get(&(k, s)) {
                Some(at) if *at < ack.ack => {
                    early += 1;
                    latencies_us.push(0.0);
                }
                Some(at) => latencies_us.push((*at - ack.ack).as_secs_f64() * 1e6),
                None => {
                    missing += 1;
                    if missing_detail.len() < 10 {
                        missing_detail.push(format!(
                            "write {k} (updateMeal(id: {}, price: {price}), acknowledged): \
                             subscriber s{s} on connection {} last received price {:?}",
                            meal_ids[*meal],
                            s as usize / cfg.operations,
                            last_seen.get(&s).copied().flatten()
                        ));
                    }
                }
            }
        }
    }
    latencies_us.sort_by(f64::total_cmp);
    LiveAnalysis {
        latencies_us,
        early,
        missing,
        missing_detail,
        extra,
    }
}

/// The poller's latency per write (µs, sorted; a poll before the acknowledgement counts as 0)
/// and how many writes it never saw.
fn analyse_poll(
    writes: &[(usize, f64)],
    acks: &[Ack],
    changes: &[(usize, Option<f64>, Instant)],
) -> (Vec<f64>, usize) {
    let mut latencies = Vec::new();
    let mut missing = 0;
    for ((meal, price), ack) in writes.iter().zip(acks) {
        if ack.error.is_some() {
            continue;
        }
        let seen = changes
            .iter()
            .find(|(cohort, p, _)| cohort == meal && *p == Some(*price));
        match seen {
            Some((_, _, at)) => {
                latencies.push(at.saturating_duration_since(ack.ack).as_secs_f64() * 1e6)
            }
            None => missing += 1,
        }
    }
    latencies.sort_by(f64::total_cmp);
    (latencies, missing)
}

// ---------------------------------------------------------------------------------------------
// The Hasura-style poller.
// ---------------------------------------------------------------------------------------------

struct Polled {
    /// (cohort, price, end of the statement that first showed it).
    changes: Vec<(usize, Option<f64>, Instant)>,
    /// When each statement ended.
    statements: Vec<Instant>,
    errors: Vec<String>,
}

struct Poller {
    stop: Arc<AtomicBool>,
    join: std::thread::JoinHandle<Polled>,
    /// The poller thread's id, for `/proc/self/task/<tid>/stat`.
    tid: i32,
    /// The PostgreSQL backend serving it, when it runs on this machine.
    backend_pid: Option<u32>,
}

impl Poller {
    /// Starts polling every cohort (one per meal); returns once the first poll is done.
    fn start(db_url: &str, meal_ids: &[String]) -> Poller {
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (url, ids, flag) = (db_url.to_owned(), meal_ids.to_vec(), stop.clone());
        let join = std::thread::Builder::new()
            .name("poller".into())
            .spawn(move || {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a runtime")
                    .block_on(poll_loop(url, ids, flag, ready_tx))
            })
            .expect("the poller thread");
        let (tid, backend) = ready_rx.recv().expect("the poller connects and polls once");
        // The backend's pid is this machine's only if PostgreSQL runs here.
        let backend_pid = u32::try_from(backend).ok().filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| c.contains("postgres"))
        });
        Poller {
            stop,
            join,
            tid,
            backend_pid,
        }
    }

    fn thread_ticks(&self) -> u64 {
        stat_ticks(&format!("/proc/self/task/{}/stat", self.tid))
    }

    fn backend_ticks(&self) -> Option<u64> {
        self.backend_pid.map(proc_ticks)
    }

    fn stop(self) -> Polled {
        self.stop.store(true, Ordering::Release);
        self.join.join().expect("the poller thread")
    }
}

async fn poll_loop(
    url: String,
    meal_ids: Vec<String>,
    stop: Arc<AtomicBool>,
    ready: std::sync::mpsc::Sender<(i32, i32)>,
) -> Polled {
    use sea_orm::sqlx::{self, Connection, Row};
    let mut conn = sqlx::PgConnection::connect(&url)
        .await
        .expect("the poller's PostgreSQL connection");
    let backend: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut conn)
        .await
        .expect("pg_backend_pid()");
    // Hasura's variables of a cohort: the query's and the session's.
    let cohorts: Vec<(i64, String)> = meal_ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            (
                i as i64,
                json!({ "query": { "id": id }, "session": { "x-hasura-role": "anonymous" } })
                    .to_string(),
            )
        })
        .collect();
    let mut last: Vec<Option<String>> = vec![None; cohorts.len()];
    let mut out = Polled {
        changes: Vec::new(),
        statements: Vec::new(),
        errors: Vec::new(),
    };
    let mut first = true;
    let mut tick = tokio::time::Instant::now();
    // SAFETY: gettid has no preconditions.
    let tid = unsafe { libc::gettid() };
    loop {
        for batch in cohorts.chunks(POLL_BATCH) {
            let ids: Vec<i64> = batch.iter().map(|(i, _)| *i).collect();
            let vars: Vec<String> = batch.iter().map(|(_, v)| v.clone()).collect();
            let rows = sqlx::query(POLL_SQL)
                .bind(ids)
                .bind(vars)
                .fetch_all(&mut conn)
                .await;
            let at = Instant::now();
            out.statements.push(at);
            let rows = match rows {
                Ok(rows) => rows,
                Err(e) => {
                    if out.errors.len() < 10 {
                        out.errors.push(format!("poller: {e}"));
                    }
                    continue;
                }
            };
            for row in rows {
                let cohort = row.get::<i64, _>(0) as usize;
                let result: Option<String> = row.get(1);
                if last[cohort] != result {
                    if !first {
                        let price = result
                            .as_deref()
                            .and_then(|r| serde_json::from_str::<Value>(r).ok())
                            .and_then(|v| v["meal"]["price"].as_f64());
                        out.changes.push((cohort, price, at));
                    }
                    last[cohort] = result;
                }
            }
        }
        if first {
            first = false;
            ready.send((tid, backend)).expect("the bench waits");
        }
        tick += POLL_INTERVAL;
        tokio::time::sleep_until(tick).await;
        if stop.load(Ordering::Acquire) {
            return out;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Report.
// ---------------------------------------------------------------------------------------------

fn write_report(cfg: &Config, o: &Outcome, pinned: bool) {
    let mut section = report::Section::new(
        "live",
        "Live queries",
        "Two release `arena` replicas, R1 and R2, on one scratch PostgreSQL database and one \
         Redis key prefix, each a process pinned to core 0; the bench pins itself (WebSocket \
         clients, writer, poller) to core 1. 1 000 meals are created through R2. On R1, 10 000 \
         `graphql-transport-ws` subscribers (100 connections × 100 operations, 10 per meal) \
         run `query($id: ID!) @live { meal(id: $id) { id name price } }`, opened all at \
         once; what R1 did until it was quiet again is reported (failed cache calls — a Redis \
         call over `ARENA_REDIS_TIMEOUT_MS` puts a replica in degraded mode, where reads go to \
         PostgreSQL and live queries re-check every second —, SQL statements, executions, \
         results sent again with the same data). Then R2 takes `updateMeal` writes at a \
         steady rate, each to a different meal drawn at random with a unique price (the same \
         writes at other prices ran first with no live query open: R1's CPU then is the \
         control). Update latency is the instant a subscriber received a result showing the \
         write's price minus the instant the write's HTTP response arrived (updates that \
         arrived before it count as 0), over every subscriber of every written meal. Memory \
         per live query is R1's VmRSS growth from before the subscriptions to after them \
         (idle, every first result in), divided by the subscribers. Over the same writes, a \
         poller in the bench does what Hasura does for the 1 000 distinct queries: every \
         second (its default refetch interval), one multiplexed SQL statement per batch of \
         100 cohorts (its default batch size: `UNNEST` of the cohorts' ids and variables, \
         `LEFT OUTER JOIN LATERAL` the meal built as JSON by PostgreSQL) sent straight to \
         PostgreSQL, each cohort's result diffed with the last; its latency runs from a \
         write's acknowledgement to the end of the first statement that showed it. It polls \
         PostgreSQL rather than an Arena replica with the memo off because Arena would answer \
         `meal(id)` from its entity cache, which is not the load a polling server puts on \
         the database. CPU is utime + stime from `/proc`: R1's on Arena's side; the poller \
         connection's PostgreSQL backend plus the poller thread on the other (fan-out to \
         subscribers is not modelled there); Redis, which both R1 and R2 use, is in neither, \
         and neither is R2's write work. Last, 10 000 subscribers of one meal (opened the \
         same way, R1 quiet before the write) and one write; the bench reads their 10 000 \
         messages on one core. ✗ marks a target not met.",
    );
    section.setting(format!(
        "BENCH_LIVE_WRITES={}, BENCH_LIVE_RATE={}/s, {} connections × {} operations over {} \
         meals",
        cfg.writes, cfg.rate, cfg.connections, cfg.operations, cfg.meals
    ));
    if !pinned {
        section.setting("the bench could NOT pin itself to core 1");
    }

    let mark = |ok: bool| if ok { "" } else { " ✗" };
    let n = |x: usize| group(x as u64);
    let a = &o.arena;
    let per_query_kib =
        o.rss_after_kib.saturating_sub(o.rss_before_kib) as f64 / cfg.subscribers() as f64;
    let rows = vec![
        vec![
            "live queries on R1".to_owned(),
            format!(
                "{} subscribers ({} connections × {}, opened at once), {} documents; every \
                 first result in {:.1} s",
                n(o.live_queries as usize),
                cfg.connections,
                cfg.operations,
                n(o.live_documents as usize),
                o.opening.secs
            ),
            "—".to_owned(),
        ],
        opening_row("while they opened", &o.opening, cfg),
        vec![
            "update latency, write ack on R2 → subscriber on R1: p50 / p99 / max".to_owned(),
            format!(
                "{} / {} / {} ({} updates of {} writes)",
                fmt_us(percentile(&a.latencies_us, 0.5)),
                fmt_us(percentile(&a.latencies_us, 0.99)),
                fmt_us(a.latencies_us.last().copied().unwrap_or(f64::NAN)),
                n(a.latencies_us.len()),
                n(cfg.writes)
            ),
            "—".to_owned(),
        ],
        vec![
            "updates received before the write's ack (counted as 0)".to_owned(),
            format!("{} of {}", n(o.early), n(a.latencies_us.len())),
            "—".to_owned(),
        ],
        vec![
            "subscribers of a written meal never updated".to_owned(),
            format!(
                "{} of {}{}",
                n(a.missing),
                n(a.expected),
                mark(a.missing == 0)
            ),
            "0".to_owned(),
        ],
        vec![
            "results showing no written price, or one already received".to_owned(),
            format!("{}{}", n(o.extra), mark(o.extra == 0)),
            "0".to_owned(),
        ],
        vec![
            "live executions on R1 per write".to_owned(),
            format!(
                "{:.2}{}",
                o.executions_per_write,
                mark((o.executions_per_write - 1.0).abs() < 0.005)
            ),
            "1".to_owned(),
        ],
        vec![
            "SQL statements on R1 per write".to_owned(),
            format!("{:.2}", o.sql_per_write),
            "—".to_owned(),
        ],
        vec![
            "R1 CPU during the write phase".to_owned(),
            format!(
                "{:.3} s/s ({:.2} ms per write)",
                a.cpu_per_sec, o.cpu_ms_per_write
            ),
            "—".to_owned(),
        ],
        vec![
            "R1 CPU during the same writes with no live query open (control)".to_owned(),
            format!(
                "{:.3} s/s ({:.2} ms per write)",
                o.control_cpu_per_sec, o.control_cpu_ms_per_write
            ),
            "—".to_owned(),
        ],
        vec![
            "R1 CPU while idle with every live query open".to_owned(),
            format!("{:.3} s/s", o.idle_cpu_per_sec),
            "—".to_owned(),
        ],
        vec![
            format!(
                "R1 RSS before → after {} idle live queries",
                n(cfg.subscribers())
            ),
            format!(
                "{:.1} → {:.1} MiB",
                o.rss_before_kib as f64 / 1024.0,
                o.rss_after_kib as f64 / 1024.0
            ),
            "—".to_owned(),
        ],
        vec![
            "memory per idle live query".to_owned(),
            format!("{per_query_kib:.2} KiB{}", mark(per_query_kib <= 50.0)),
            "≤ 50 KiB".to_owned(),
        ],
        vec![
            format!(
                "one document, {} subscribers ({} document(s) on R1): executions on R1 for one \
                 write",
                n(o.single.subscribers),
                o.single.documents
            ),
            format!(
                "{}{}",
                o.single.executions,
                mark(o.single.executions == 1.0)
            ),
            "1".to_owned(),
        ],
        opening_row("one document, while they opened", &o.single.opening, cfg),
        vec![
            "one document: subscribers updated".to_owned(),
            format!(
                "{} of {}{}",
                n(o.single.updated),
                n(o.single.subscribers),
                mark(o.single.updated == o.single.subscribers)
            ),
            "all".to_owned(),
        ],
        vec![
            "one document: write ack → first / p50 / last subscriber updated".to_owned(),
            format!(
                "{:.1} / {:.1} / {:.1} ms",
                o.single.first_ms, o.single.p50_ms, o.single.last_ms
            ),
            "—".to_owned(),
        ],
    ];
    section.table(&["measurement", "value", "target"], &rows);

    let p = &o.poller;
    let side = |s: &Side| {
        vec![
            format!("{:.3}", s.cpu_per_sec),
            format!("{:.1}", s.sql_per_sec),
            fmt_us(percentile(&s.latencies_us, 0.5)),
            fmt_us(percentile(&s.latencies_us, 0.99)),
            fmt_us(s.latencies_us.last().copied().unwrap_or(f64::NAN)),
            format!("{} of {}", n(s.missing), n(s.expected)),
        ]
    };
    let (arena_col, poll_col) = (side(a), side(p));
    let labels = [
        "server CPU, s per s",
        "SQL statements per s",
        "update latency p50",
        "update latency p99",
        "update latency max",
        "updates missed",
    ];
    let rows: Vec<Vec<String>> = labels
        .iter()
        .enumerate()
        .map(|(i, l)| vec![(*l).to_owned(), arena_col[i].clone(), poll_col[i].clone()])
        .collect();
    section.table(
        &[
            &format!("over the same {} writes", n(cfg.writes)),
            "Arena live (R1, pushed by writes)",
            "poller (Hasura-style multiplexed SQL every 1 s)",
        ],
        &rows,
    );
    let ratio = |x: f64, y: f64| {
        if y > 0.0 {
            format!("{:.3}×", x / y)
        } else {
            "—".to_owned()
        }
    };
    section.table(
        &["Arena ÷ poller", "ratio"],
        &[
            vec![
                "server CPU per second".to_owned(),
                ratio(a.cpu_per_sec, p.cpu_per_sec),
            ],
            vec![
                "server CPU per second, R1's above the control (no live query open)".to_owned(),
                ratio(a.cpu_per_sec - o.control_cpu_per_sec, p.cpu_per_sec),
            ],
            vec![
                "SQL statements per second".to_owned(),
                ratio(a.sql_per_sec, p.sql_per_sec),
            ],
            vec![
                "update latency p50".to_owned(),
                ratio(
                    percentile(&a.latencies_us, 0.5),
                    percentile(&p.latencies_us, 0.5),
                ),
            ],
            vec![
                "update latency p99".to_owned(),
                ratio(
                    percentile(&a.latencies_us, 0.99),
                    percentile(&p.latencies_us, 0.99),
                ),
            ],
        ],
    );
    let mut notes = vec![format!(
        "Write phase: {:.1} s from the first write to 2 s after the last acknowledgement; \
         `updateMeal` on R2 took {} (p50, send → response). Arena's latencies are per \
         subscriber (10 per write), the poller's per cohort (one per write). The poller sent \
         {} statements in the window; its CPU is {:.3} s/s in the PostgreSQL backend{} and \
         {:.3} s/s in the poller thread.",
        o.poll_window_secs,
        fmt_us(o.write_ack_p50_us),
        o.poll_statements,
        o.poller_pg_cpu_per_sec,
        if o.pg_backend_measured {
            ""
        } else {
            " (not measured: PostgreSQL does not run on this machine)"
        },
        o.poller_thread_cpu_per_sec
    )];
    if !o.writes_failed.is_empty() {
        notes.push(format!(
            "⚠ {} writes failed: {}",
            o.writes_failed.len(),
            o.writes_failed
                .iter()
                .take(5)
                .cloned()
                .collect::<Vec<_>>()
                .join("; ")
        ));
    }
    if !o.missing_detail.is_empty() {
        notes.push(format!(
            "⚠ Missing updates (first {}): {}",
            o.missing_detail.len(),
            o.missing_detail.join("; ")
        ));
    }
    if o.problem_count > 0 {
        notes.push(format!(
            "⚠ {} problem(s) seen by the clients (first {}): {}",
            o.problem_count,
            o.problems.len().min(10),
            o.problems
                .iter()
                .take(10)
                .cloned()
                .collect::<Vec<_>>()
                .join("; ")
        ));
    }
    section.note(notes.join("\n\n"));
    section.write();
}

/// At most 300 characters of `s`.
fn clip(s: &str) -> String {
    match s.char_indices().nth(300) {
        Some((at, _)) => format!("{}…", &s[..at]),
        None => s.to_owned(),
    }
}

/// What R1 did while subscribers opened (and until it was quiet), as a row.
fn opening_row(what: &str, o: &Opening, cfg: &Config) -> Vec<String> {
    vec![
        format!(
            "{what}: R1's failed cache calls / SQL statements / live executions; first results \
             in `recheck` mode; results repeating the first"
        ),
        format!(
            "{} / {} / {}; {} of {}; {} ({} with the same meal data)",
            group(o.cache_errors as u64),
            group(o.sql as u64),
            group(o.executions as u64),
            group(o.first_recheck as u64),
            group(cfg.subscribers() as u64),
            group(o.repeats as u64),
            group(o.repeats_same as u64)
        ),
        "—".to_owned(),
    ]
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn fmt_us(us: f64) -> String {
    if us.is_nan() {
        "—".to_owned()
    } else if us < 1000.0 {
        format!("{us:.0} µs")
    } else {
        format!("{:.2} ms", us / 1000.0)
    }
}

/// `12345` → `12 345`.
fn group(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(' ');
        }
        out.push(c);
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Servers, metrics, /proc.
// ---------------------------------------------------------------------------------------------

/// A server process pinned to `SERVER_CORE`; killed when dropped.
struct Server {
    name: String,
    child: Child,
    base: String,
    log: PathBuf,
}

impl Server {
    fn pid(&self) -> u32 {
        // `taskset` execs the server, so the child's pid is the server's.
        self.child.id()
    }

    fn graphql_url(&self) -> String {
        format!("{}/graphql", self.base)
    }

    fn ws_url(&self) -> String {
        format!("{}/graphql/ws", self.base.replacen("http", "ws", 1))
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// `taskset -c 0 arena serve` on the scratch database and Redis, with `extra` settings and
/// nothing of this environment's Arena settings; returns once `/healthz` answers.
async fn spawn_arena(
    http: &reqwest::Client,
    dir: &Path,
    name: &str,
    db: &ScratchDb,
    redis: &str,
    prefix: &str,
    extra: &[(&str, String)],
) -> Server {
    let port = free_port();
    let log = dir.join(format!("{name}.log"));
    let file = File::create(&log).expect("a log file");
    let mut cmd = Command::new("taskset");
    cmd.args(["-c", SERVER_CORE])
        .arg(env!("CARGO_BIN_EXE_arena"))
        .arg("serve")
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(file.try_clone().expect("a log file"))
        .stderr(file);
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        if key.starts_with("ARENA_")
            || ["DATABASE_URL", "REDIS_URL", "MONGODB_URL", "RUST_LOG"].contains(&key.as_ref())
        {
            cmd.env_remove(key.as_ref());
        }
    }
    cmd.env("ARENA_ADDR", format!("127.0.0.1:{port}"))
        .env("ARENA_PBKDF2_ITERATIONS", "1000")
        .env("ARENA_LOG", "warn")
        .env("ARENA_SYNC_ENABLED", "false")
        .env("DATABASE_URL", &db.url)
        .env("REDIS_URL", redis)
        .env("ARENA_CACHE_PREFIX", prefix);
    for (k, v) in extra {
        cmd.env(k, v);
    }
    let child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("{name} does not start: {e}"));
    let server = Server {
        name: name.to_owned(),
        child,
        base: format!("http://127.0.0.1:{port}"),
        log,
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ok = http
            .get(format!("{}/healthz", server.base))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        if ok {
            return server;
        }
        let state = std::fs::read_to_string(format!("/proc/{}/stat", server.pid()))
            .ok()
            .and_then(|s| {
                s.rsplit_once(')')
                    .and_then(|(_, rest)| rest.split_whitespace().next().map(str::to_owned))
            });
        assert!(
            state.as_deref().is_some_and(|s| s != "Z"),
            "{} exited during start-up:\n{}",
            server.name,
            server.log_tail()
        );
        assert!(
            Instant::now() < deadline,
            "{} did not answer within 60 s:\n{}",
            server.name,
            server.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// POSTs a GraphQL request; the JSON answer, whatever it holds.
async fn gql(
    http: &reqwest::Client,
    server: &Server,
    query: &str,
    variables: Value,
    token: Option<&str>,
) -> Value {
    let mut req = http
        .post(server.graphql_url())
        .json(&json!({ "query": query, "variables": variables }));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req
        .send()
        .await
        .unwrap_or_else(|e| panic!("{}: {e}", server.name));
    resp.json()
        .await
        .unwrap_or_else(|e| panic!("{}: not JSON: {e}", server.name))
}

/// createUser, login, then `meals` meals (8 requests at a time); the token and the meals' ids.
async fn seed(http: &reqwest::Client, r2: &Server, meals: usize) -> (String, Vec<String>) {
    let r = gql(
        http,
        r2,
        "mutation { createUser(username: \"livebench\", password: \"password123\") { id } }",
        json!({}),
        None,
    )
    .await;
    assert!(r.get("errors").is_none(), "createUser: {r}");
    let r = gql(
        http,
        r2,
        "mutation { login(username: \"livebench\", password: \"password123\") { token } }",
        json!({}),
        None,
    )
    .await;
    let token = r["data"]["login"]["token"]
        .as_str()
        .unwrap_or_else(|| panic!("login: {r}"))
        .to_owned();
    let ids = futures::stream::iter(0..meals)
        .map(|i| {
            let token = token.clone();
            async move {
                let r = gql(
                    http,
                    r2,
                    "mutation($i: CreateMealInput!) { createMeal(input: $i) { id } }",
                    json!({ "i": {
                        "name": format!("Live {i}"),
                        "cuisine": "Thai",
                        "price": (i % 50 + 1) as f64,
                        "difficulty": "LOW",
                    } }),
                    Some(&token),
                )
                .await;
                r["data"]["createMeal"]["id"]
                    .as_str()
                    .unwrap_or_else(|| panic!("createMeal: {r}"))
                    .to_owned()
            }
        })
        .buffered(8)
        .collect()
        .await;
    (token, ids)
}

/// The sum of every sample of `name` on the server's `/metrics` (all label sets).
async fn metric(http: &reqwest::Client, server: &Server, name: &str) -> f64 {
    let text = http
        .get(format!("{}/metrics", server.base))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{} /metrics: {e}", server.name))
        .text()
        .await
        .unwrap_or_default();
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Waits (up to a minute) until `name` on the server reads `value`.
async fn wait_metric(http: &reqwest::Client, server: &Server, name: &str, value: f64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let now = metric(http, server, name).await;
        if now == value {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{} {name} is {now}, not {value}, after 60 s",
            server.name
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// utime + stime of the stat file at `path`, in clock ticks.
fn stat_ticks(path: &str) -> u64 {
    let stat =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e} (did it exit?)"));
    // The command name may hold spaces; the fields after it start with field 3 (state).
    // utime and stime are fields 14 and 15.
    let after = &stat[stat.rfind(')').expect("a stat line") + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

fn proc_ticks(pid: u32) -> u64 {
    stat_ticks(&format!("/proc/{pid}/stat"))
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// A scratch PostgreSQL database, dropped (with its connections) when this is dropped.
struct ScratchDb {
    admin: String,
    name: String,
    url: String,
}

impl ScratchDb {
    fn create(admin: &str) -> Self {
        let name = format!("arena_bench_{}", uuid::Uuid::new_v4().simple());
        psql(admin, &format!("CREATE DATABASE \"{name}\"")).expect("the scratch database");
        let base = admin.rsplit_once('/').map_or(admin, |(b, _)| b);
        ScratchDb {
            url: format!("{base}/{name}?sslmode=disable"),
            admin: admin.to_owned(),
            name,
        }
    }
}

impl Drop for ScratchDb {
    fn drop(&mut self) {
        if let Err(e) = psql(
            &self.admin,
            &format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name),
        ) {
            eprintln!("could not drop {}: {e}", self.name);
        }
    }
}

fn psql(url: &str, command: &str) -> Result<(), String> {
    let out = Command::new("psql")
        .arg(url)
        .args(["-v", "ON_ERROR_STOP=1", "-q", "-c", command])
        .output()
        .map_err(|e| format!("psql: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "psql {command}: {}",
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}
