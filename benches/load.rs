//! `cargo bench --bench load`: Arena's read path under load, measured as a user sees it: over
//! HTTP, from a load generator in a process of its own, against a bare endpoint and another
//! GraphQL server in the same run.
//!
//! Every server is a separate process pinned to core 0 (`taskset -c 0`). The load generator,
//! `wrk` (Debian package `wrk`), runs pinned to core 1 with one thread
//! (`taskset -c 1 wrk -t1 -c<conns> -d<secs>s --latency -s <script.lua> <url>`), POSTing a
//! fixed GraphQL body. The servers:
//!
//! - the release `arena` binary, once per backend set:
//!   - embedded: SQLite in a temp dir and the in-process cache (always run);
//!   - PostgreSQL + Redis: when `TEST_DATABASE_URL` (a URL whose user may create databases)
//!     and `TEST_REDIS_URL` are set. A scratch database `arena_bench_<uuid>` is created and
//!     dropped at the end; the cache keys get a unique `ARENA_CACHE_PREFIX`;
//! - a bare axum endpoint: this bench binary re-executed with `ARENA_BENCH_ROLE=bare`; it parses
//!   the JSON body into a `serde_json::Value` and returns `{"data":{"__typename":"Query"}}`;
//! - PostGraphile v4, when `POSTGRAPHILE` is the path of its executable and PostgreSQL is
//!   configured (`mkdir -p /tmp/postgraphile && cd /tmp/postgraphile && npm init -y &&
//!   npm install postgraphile@4`, then `POSTGRAPHILE=/tmp/postgraphile/node_modules/.bin/postgraphile`).
//!   It reads the same row of the same database, with no cache.
//!
//! For each run it prints requests/s, p50 and p99 latency, errors (socket errors and non-2xx
//! responses; a run with any is flagged), the server's CPU time per request (utime + stime from
//! `/proc/<pid>/stat`, before and after the run), how busy the server, `wrk` and each core were,
//! and the server's RSS (`VmRSS`) after the run; then the ratios of `RATIOS`, each against its
//! target: warm `meal(id)` at ≥ 0.9× the throughput of `{ __typename }` and ≥ 0.5× the bare
//! endpoint's, its p50 at one connection ≤ 1.2× `{ __typename }`'s, a persisted query below
//! the full document's server CPU, ≥ 5× PostGraphile's throughput (and, with `BENCH_MEMORY=1`,
//! RSS after 1 000 000 warm reads ≤ 1.1× RSS after 10 000).
//! Server CPU is the server process's alone: PostgreSQL and Redis, which are not pinned, are not
//! in it (the per-core busy figures show where they ran).
//!
//! Environment:
//! - `BENCH_SECS` (default 10): length of each measured `wrk` run;
//! - `BENCH_WARMUP_SECS` (default 2): an unmeasured `wrk` run before each scenario;
//! - `BENCH_ROUNDS` (default 3): rounds of every scenario in turn; each figure is the median
//!   round's (a shared machine's slower spells spread over every scenario);
//! - `BENCH_ONLY`: comma-separated scenario keys to run (see `SCENARIOS`), default all;
//! - `BENCH_BACKENDS`: `embedded`, `postgres` or `embedded,postgres` (default: every set whose
//!   variables are present);
//! - `BENCH_MEMORY=1`: also measure RSS after the first 10 000 warm `meal(id)` reads and after
//!   1 000 000 (on each Arena instance, before the other scenarios; takes minutes);
//! - `TEST_DATABASE_URL`, `TEST_REDIS_URL`, `POSTGRAPHILE`: see above;
//! - `BENCH_NO_WRITE=1`: print the results only, leaving `docs/benchmarks.md` alone.
//!
//! At the end the ratios and the median figures of every backend set go into the `load`
//! section of `docs/benchmarks.md`, with the date, commit and machine (`benches/report/`).
//!
//! Children are killed when the bench ends, also on a panic (guards with `Drop`); the bare
//! server also exits when its stdin (a pipe from the bench) closes.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

mod report;

/// The core every server is pinned to, and the core `wrk` is pinned to.
const SERVER_CORE: &str = "0";
const CLIENT_CORE: &str = "1";

const TYPENAME_QUERY: &str = "{ __typename }";
const MEAL_QUERY: &str =
    "query($id: ID!) { meal(id: $id) { id name cuisine price difficulty battles wins winPct } }";

// ---------------------------------------------------------------------------------------------
// Scenarios: add a row to run one more.
// ---------------------------------------------------------------------------------------------

/// Which server a scenario loads.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Target {
    Bare,
    Arena,
    PostGraphile,
}

/// How a scenario's body is checked (once, over HTTP) before it is run with `wrk`.
#[derive(Clone, Copy)]
enum Probe {
    /// The response must have `data` and no `errors`.
    Data,
    /// Apollo automatic persisted queries: the hash-only body must answer, after registering
    /// the given document if the server says `PERSISTED_QUERY_NOT_FOUND`. Skipped when the
    /// server does not support the protocol.
    Persisted(&'static str),
}

/// What a scenario body may refer to: the meal created during set-up.
struct Fixture {
    meal_id: String,
}

struct Scenario {
    /// Short name, used by `BENCH_ONLY` and by the ratios.
    key: &'static str,
    label: &'static str,
    target: Target,
    connections: &'static [u32],
    probe: Probe,
    body: fn(&Fixture) -> Value,
}

const SCENARIOS: &[Scenario] = &[
    Scenario {
        key: "bare",
        label: "bare axum JSON endpoint",
        target: Target::Bare,
        connections: &[32, 1],
        probe: Probe::Data,
        body: |_| json!({ "query": TYPENAME_QUERY }),
    },
    Scenario {
        key: "typename",
        label: "Arena { __typename }",
        target: Target::Arena,
        connections: &[32, 1],
        probe: Probe::Data,
        body: |_| json!({ "query": TYPENAME_QUERY }),
    },
    Scenario {
        key: "meal",
        label: "Arena warm meal(id)",
        target: Target::Arena,
        connections: &[32, 1],
        probe: Probe::Data,
        body: |f| json!({ "query": MEAL_QUERY, "variables": { "id": f.meal_id } }),
    },
    Scenario {
        key: "persisted",
        label: "Arena warm meal(id), persisted query",
        target: Target::Arena,
        connections: &[32, 1],
        probe: Probe::Persisted(MEAL_QUERY),
        body: |f| {
            json!({
                "extensions": { "persistedQuery": { "version": 1, "sha256Hash": sha256_hex(MEAL_QUERY) } },
                "variables": { "id": f.meal_id },
            })
        },
    },
    Scenario {
        key: "postgraphile",
        label: "PostGraphile v4 mealById",
        target: Target::PostGraphile,
        connections: &[32, 1],
        probe: Probe::Data,
        body: |f| json!({ "query": format!("query {{ mealById(id: \"{}\") {{ id name cuisine price }} }}", f.meal_id) }),
    },
];

/// Which figure of a run a ratio compares.
#[derive(Clone, Copy)]
enum Metric {
    Rps,
    P50,
    CpuPerRequest,
}

#[derive(Clone, Copy)]
enum Goal {
    AtLeast(f64),
    AtMost(f64),
    Below(f64),
    Info,
}

struct RatioSpec {
    label: &'static str,
    /// (scenario key, connections, metric) over the same of the denominator.
    num: (&'static str, u32, Metric),
    den: (&'static str, u32, Metric),
    goal: Goal,
}

const RATIOS: &[RatioSpec] = &[
    RatioSpec {
        label: "warm meal(id) ÷ { __typename }, throughput, 32 conns",
        num: ("meal", 32, Metric::Rps),
        den: ("typename", 32, Metric::Rps),
        goal: Goal::AtLeast(0.9),
    },
    RatioSpec {
        label: "warm meal(id) ÷ bare endpoint, throughput, 32 conns",
        num: ("meal", 32, Metric::Rps),
        den: ("bare", 32, Metric::Rps),
        goal: Goal::AtLeast(0.5),
    },
    RatioSpec {
        label: "{ __typename } ÷ bare endpoint, throughput, 32 conns",
        num: ("typename", 32, Metric::Rps),
        den: ("bare", 32, Metric::Rps),
        goal: Goal::Info,
    },
    RatioSpec {
        label: "warm meal(id) p50 ÷ { __typename } p50, 1 conn",
        num: ("meal", 1, Metric::P50),
        den: ("typename", 1, Metric::P50),
        goal: Goal::AtMost(1.2),
    },
    RatioSpec {
        label: "persisted ÷ full document, server CPU per request, 32 conns",
        num: ("persisted", 32, Metric::CpuPerRequest),
        den: ("meal", 32, Metric::CpuPerRequest),
        goal: Goal::Below(1.0),
    },
    RatioSpec {
        label: "Arena warm meal(id) ÷ PostGraphile mealById, throughput, 32 conns",
        num: ("meal", 32, Metric::Rps),
        den: ("postgraphile", 32, Metric::Rps),
        goal: Goal::AtLeast(5.0),
    },
];

// ---------------------------------------------------------------------------------------------
// Entry point.
// ---------------------------------------------------------------------------------------------

fn main() {
    if std::env::var("ARENA_BENCH_ROLE").as_deref() == Ok("bare") {
        bare_server();
        return;
    }
    // `cargo bench` passes `--bench`; this bench takes no arguments.
    for tool in ["wrk", "taskset", "getconf"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            found,
            "`{tool}` is needed on PATH (apt-get install wrk util-linux)"
        );
    }
    let cfg = Config::from_env();
    let http = Http::new();
    let dir = tempfile::tempdir().expect("a temp dir");

    println!(
        "load bench: servers on core {SERVER_CORE}, wrk -t1 on core {CLIENT_CORE}; {} s per run \
         ({} s warm-up per scenario); {} online CPUs; CLK_TCK {}",
        cfg.secs,
        cfg.warmup_secs,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        cfg.clk_tck
    );

    let bare = spawn_bare(dir.path());
    wait_until(&bare, || {
        http.post(&bare.url, &json!({ "query": TYPENAME_QUERY }), None)
            .is_ok()
    });

    let pg = match (
        std::env::var("TEST_DATABASE_URL"),
        std::env::var("TEST_REDIS_URL"),
    ) {
        (Ok(db), Ok(redis)) => Some((db, redis)),
        _ => None,
    };
    let wanted = |name: &str| {
        cfg.backends
            .as_ref()
            .is_none_or(|list| list.iter().any(|b| b == name))
    };
    if cfg.postgraphile.is_some() && pg.is_none() {
        println!("(PostGraphile skipped: it needs TEST_DATABASE_URL and TEST_REDIS_URL)");
    }
    let mut sets = Vec::new();
    if wanted("embedded") {
        sets.push(run_backend_set(&cfg, &http, dir.path(), &bare, None));
    }
    match (&pg, wanted("postgres")) {
        (Some(pg), true) => sets.push(run_backend_set(&cfg, &http, dir.path(), &bare, Some(pg))),
        (None, true) if cfg.backends.is_some() => {
            panic!("BENCH_BACKENDS asks for postgres: set TEST_DATABASE_URL and TEST_REDIS_URL")
        }
        (None, _) => println!(
            "\n(PostgreSQL + Redis skipped: set TEST_DATABASE_URL and TEST_REDIS_URL to run it)"
        ),
        _ => {}
    }
    write_report(&cfg, &sets);
}

struct Config {
    secs: u64,
    rounds: u64,
    warmup_secs: u64,
    only: Option<Vec<String>>,
    backends: Option<Vec<String>>,
    memory: bool,
    postgraphile: Option<PathBuf>,
    clk_tck: f64,
}

impl Config {
    fn from_env() -> Self {
        let num = |name: &str, default: u64| {
            std::env::var(name)
                .ok()
                .map(|v| {
                    v.parse()
                        .unwrap_or_else(|_| panic!("{name}={v}: not a number"))
                })
                .unwrap_or(default)
        };
        let list = |name: &str| {
            std::env::var(name).ok().map(|v| {
                v.split(',')
                    .map(|s| s.trim().to_owned())
                    .filter(|s| !s.is_empty())
                    .collect()
            })
        };
        let clk = Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .expect("getconf runs");
        Config {
            secs: num("BENCH_SECS", 10),
            rounds: num("BENCH_ROUNDS", 3).max(1),
            warmup_secs: num("BENCH_WARMUP_SECS", 2),
            only: list("BENCH_ONLY"),
            backends: list("BENCH_BACKENDS"),
            memory: std::env::var("BENCH_MEMORY").is_ok_and(|v| v == "1" || v == "true"),
            postgraphile: std::env::var_os("POSTGRAPHILE").map(PathBuf::from),
            clk_tck: String::from_utf8_lossy(&clk.stdout)
                .trim()
                .parse()
                .unwrap_or(100.0),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// One backend set: Arena (and PostGraphile) started, set up, loaded, reported.
// ---------------------------------------------------------------------------------------------

/// What one backend set measured: the median round of each scenario, the ratios, and the
/// memory figures when `BENCH_MEMORY=1`.
struct BackendSet {
    /// Short name, a column of the report: `embedded` or `PostgreSQL + Redis`.
    name: &'static str,
    rows: Vec<Row>,
    ratios: Vec<RatioValue>,
    memory: Option<Memory>,
}

/// One measured `wrk` run, with what the server did during it.
struct Row {
    key: &'static str,
    label: &'static str,
    conns: u32,
    wrk: WrkResult,
    cpu_us_per_req: f64,
    server_busy_pct: f64,
    wrk_busy_pct: f64,
    core_busy_pct: [f64; 2],
    rss_kib: u64,
}

fn run_backend_set(
    cfg: &Config,
    http: &Http,
    dir: &Path,
    bare: &Server,
    pg: Option<&(String, String)>,
) -> BackendSet {
    let title = if pg.is_some() {
        "PostgreSQL + Redis"
    } else {
        "embedded (SQLite + in-process cache)"
    };
    println!("\n## {title}\n");
    // Declared first so it is dropped last, after the servers that use it.
    let scratch = pg.map(|(admin, _)| ScratchDb::create(admin));
    let arena = spawn_arena(dir, scratch.as_ref(), pg.map(|(_, redis)| redis.as_str()));
    let fixture = set_up_arena(http, &arena);

    let postgraphile = match (&scratch, &cfg.postgraphile) {
        (Some(db), Some(exe)) => Some(spawn_postgraphile(http, dir, exe, &db.url)),
        _ => None,
    };

    let memory = cfg.memory.then(|| memory_scenario(dir, &arena, &fixture));

    // Every round runs each scenario once, in turn, so that a slower spell of a shared machine
    // spreads over all of them; each figure is then the median round's.
    let mut runs: Vec<Vec<Row>> = Vec::new();
    let mut skipped = Vec::new();
    for round in 0..cfg.rounds {
        let mut slot = 0;
        for sc in SCENARIOS {
            if cfg
                .only
                .as_ref()
                .is_some_and(|only| !only.iter().any(|k| k == sc.key))
            {
                continue;
            }
            let server = match sc.target {
                Target::Bare => bare,
                Target::Arena => &arena,
                Target::PostGraphile => match &postgraphile {
                    Some(p) => p,
                    None => continue,
                },
            };
            if skipped.contains(&sc.key) {
                continue;
            }
            let body = (sc.body)(&fixture);
            if round == 0 {
                if let Err(why) = probe(http, server, sc.probe, &body) {
                    println!("skipped {}: {why}", sc.key);
                    skipped.push(sc.key);
                    continue;
                }
            }
            let lua = write_lua(dir, sc.key, &body, None);
            if cfg.warmup_secs > 0 && round == 0 {
                run_wrk(&server.url, &lua, sc.connections[0], cfg.warmup_secs);
            }
            for &conns in sc.connections {
                let row = measure(cfg, server, &lua, conns, sc);
                eprintln!(
                    "  round {} {} @{conns}: {:.0} req/s, p50 {}",
                    round + 1,
                    sc.key,
                    row.wrk.rps,
                    fmt_latency(row.wrk.p50_us)
                );
                if runs.len() <= slot {
                    runs.push(Vec::new());
                }
                runs[slot].push(row);
                slot += 1;
            }
        }
    }
    if cfg.rounds > 1 {
        println!("req/s in each round (the tables show the median round of each scenario):\n");
        for r in &runs {
            let each: Vec<String> = r.iter().map(|row| format!("{:.0}", row.wrk.rps)).collect();
            println!("- {} @{}: {}", r[0].label, r[0].conns, each.join(" / "));
        }
        println!();
    }
    let rows: Vec<Row> = runs
        .into_iter()
        .map(|mut r| {
            r.sort_by(|a, b| a.wrk.rps.total_cmp(&b.wrk.rps));
            let mid = r.len() / 2;
            r.swap_remove(mid)
        })
        .collect();
    print_table(&rows);
    let ratios = ratios(&rows, &skipped);
    print_ratios(&ratios);
    // Children are killed here (guards), then the scratch database is dropped.
    BackendSet {
        name: if pg.is_some() {
            "PostgreSQL + Redis"
        } else {
            "embedded"
        },
        rows,
        ratios,
        memory,
    }
}

/// Runs `wrk` against `server`, reading the server's CPU time, the cores' busy time and the
/// server's RSS around it.
fn measure(cfg: &Config, server: &Server, lua: &Path, conns: u32, sc: &Scenario) -> Row {
    let cpu_before = proc_cpu_ticks(server.pid());
    let cores_before = core_ticks();
    let start = Instant::now();
    let wrk = run_wrk(&server.url, lua, conns, cfg.secs);
    let wall = start.elapsed().as_secs_f64();
    let cpu_secs = (proc_cpu_ticks(server.pid()) - cpu_before) as f64 / cfg.clk_tck;
    let cores_after = core_ticks();
    let core_busy_pct = [0, 1].map(|i| {
        let (busy0, total0) = cores_before.get(i).copied().unwrap_or_default();
        let (busy1, total1) = cores_after.get(i).copied().unwrap_or_default();
        100.0 * (busy1 - busy0) as f64 / ((total1 - total0).max(1)) as f64
    });
    Row {
        key: sc.key,
        label: sc.label,
        conns,
        cpu_us_per_req: cpu_secs * 1e6 / (wrk.requests.max(1)) as f64,
        server_busy_pct: 100.0 * cpu_secs / wall,
        wrk_busy_pct: 100.0 * wrk.cpu_secs / wall,
        core_busy_pct,
        rss_kib: rss_kib(server.pid()),
        wrk,
    }
}

/// RSS after the first 10 000 warm `meal(id)` reads and after 1 000 000, in KiB.
struct Memory {
    first_kib: u64,
    total_kib: u64,
    errors: u64,
}

impl Memory {
    const GOAL: Goal = Goal::AtMost(1.10);

    fn ratio(&self) -> f64 {
        self.total_kib as f64 / self.first_kib.max(1) as f64
    }
}

/// RSS after the first 10 000 warm `meal(id)` reads, and after 1 000 000.
fn memory_scenario(dir: &Path, arena: &Server, fixture: &Fixture) -> Memory {
    const FIRST: u64 = 10_000;
    const TOTAL: u64 = 1_000_000;
    let body = json!({ "query": MEAL_QUERY, "variables": { "id": fixture.meal_id } });
    let mut reads = 0;
    let mut errors = 0;
    // wrk runs for its whole `-d` even when the script stops its thread, so the reads are
    // made in short runs, each stopping after what is still missing, and counted.
    let mut read_until = |goal: u64, chunk_secs: u64| {
        while reads < goal {
            let lua = write_lua(dir, "memory", &body, Some(goal - reads));
            let run = run_wrk(&arena.url, &lua, 32, chunk_secs);
            assert!(
                run.requests > 0,
                "no responses from Arena during the memory scenario"
            );
            reads += run.requests;
            errors += run.errors();
        }
        reads
    };
    let first = read_until(FIRST, 1);
    let rss_first = rss_kib(arena.pid());
    let total = read_until(TOTAL, 10);
    let rss_total = rss_kib(arena.pid());
    let memory = Memory {
        first_kib: rss_first,
        total_kib: rss_total,
        errors,
    };
    println!(
        "memory: RSS {:.1} MiB after {first} warm meal(id) reads, {:.1} MiB after {total}: \
         **{:.3}×** ({}){}\n",
        rss_first as f64 / 1024.0,
        rss_total as f64 / 1024.0,
        memory.ratio(),
        verdict(Memory::GOAL, memory.ratio()),
        if errors > 0 {
            format!(" ⚠ {errors} errors")
        } else {
            String::new()
        }
    );
    memory
}

// ---------------------------------------------------------------------------------------------
// Output.
// ---------------------------------------------------------------------------------------------

fn print_table(rows: &[Row]) {
    println!(
        "| scenario | conns | req/s | p50 | p99 | errors | server CPU µs/req | server CPU % | wrk CPU % | core0 / core1 busy % | RSS MiB |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for r in rows {
        let errors = r.wrk.errors();
        println!(
            "| {}{} | {} | {:.0} | {} | {} | {} | {:.1} | {:.0} | {:.0} | {:.0} / {:.0} | {:.1} |",
            r.label,
            if errors > 0 { " ⚠" } else { "" },
            r.conns,
            r.wrk.rps,
            fmt_latency(r.wrk.p50_us),
            fmt_latency(r.wrk.p99_us),
            if errors > 0 {
                format!(
                    "{} (socket {}, non-2xx {})",
                    errors, r.wrk.socket_errors, r.wrk.non_2xx
                )
            } else {
                "0".into()
            },
            r.cpu_us_per_req,
            r.server_busy_pct,
            r.wrk_busy_pct,
            r.core_busy_pct[0],
            r.core_busy_pct[1],
            r.rss_kib as f64 / 1024.0,
        );
    }
    if rows.iter().any(|r| r.wrk.errors() > 0) {
        println!("\n⚠ = the run had socket errors or non-2xx responses; its figures are suspect.");
    }
}

/// A ratio of `RATIOS` as one backend set measured it: the value and whether either run had
/// errors, or why it could not be computed.
struct RatioValue {
    spec: &'static RatioSpec,
    value: Result<(f64, bool), String>,
}

fn ratios(rows: &[Row], skipped: &[&str]) -> Vec<RatioValue> {
    let find = |(key, conns, metric): (&str, u32, Metric)| -> Result<(f64, bool), String> {
        let row = rows
            .iter()
            .find(|r| r.key == key && r.conns == conns)
            .ok_or_else(|| {
                if skipped.contains(&key) {
                    format!("{key} skipped")
                } else {
                    format!("{key} not run")
                }
            })?;
        let value = match metric {
            Metric::Rps => row.wrk.rps,
            Metric::P50 => row.wrk.p50_us,
            Metric::CpuPerRequest => row.cpu_us_per_req,
        };
        Ok((value, row.wrk.errors() > 0))
    };
    RATIOS
        .iter()
        .map(|spec| RatioValue {
            spec,
            value: find(spec.num)
                .and_then(|(n, n_err)| find(spec.den).map(|(d, d_err)| (n / d, n_err || d_err))),
        })
        .collect()
}

fn print_ratios(ratios: &[RatioValue]) {
    println!("\nratios:");
    for r in ratios {
        match &r.value {
            Ok((ratio, errors)) => println!(
                "- {}: **{ratio:.2}×**{}{}",
                r.spec.label,
                match r.spec.goal {
                    Goal::Info => String::new(),
                    goal => format!(" ({})", verdict(goal, *ratio)),
                },
                if *errors {
                    " ⚠ from a run with errors"
                } else {
                    ""
                }
            ),
            Err(why) => println!("- {}: n/a ({why})", r.spec.label),
        }
    }
}

/// The `load` section of docs/benchmarks.md: the ratios, one column per backend set, then the
/// median figures of every scenario.
fn write_report(cfg: &Config, sets: &[BackendSet]) {
    let mut section = report::Section::new(
        "load",
        "Read path under load",
        "Every server is a process of its own pinned to core 0; `wrk` (one thread, pinned to \
         core 1) POSTs a fixed GraphQL body over 32 connections, then over 1. The bare endpoint \
         parses the JSON body and answers a constant; PostGraphile v4 reads the same row of the \
         same PostgreSQL database. Ratios compare figures of the same run; ✗ marks a target \
         not met, ⚠ a figure from a run with socket errors or non-2xx answers.",
    );
    section.rounds(format!(
        "{} (each figure is the median round's), {} s per run, {} s warm-up per scenario",
        cfg.rounds, cfg.secs, cfg.warmup_secs
    ));
    section.setting(format!(
        "backends: {}",
        sets.iter().map(|s| s.name).collect::<Vec<_>>().join(", ")
    ));
    if let Some(only) = &cfg.only {
        section.setting(format!("BENCH_ONLY={}", only.join(",")));
    }
    if cfg.postgraphile.is_none() {
        section.setting("PostGraphile not run (POSTGRAPHILE unset)");
    }

    let cell = |value: &Result<(f64, bool), String>, goal: Goal, digits: usize| match value {
        Ok((v, errors)) => format!(
            "{v:.digits$}×{}{}",
            if met(goal, *v) == Some(false) {
                " ✗"
            } else {
                ""
            },
            if *errors { " ⚠" } else { "" }
        ),
        Err(_) => "—".to_owned(),
    };
    let mut headers = vec!["ratio", "target"];
    headers.extend(sets.iter().map(|s| s.name));
    let mut rows: Vec<Vec<String>> = RATIOS
        .iter()
        .enumerate()
        .map(|(i, spec)| {
            let mut row = vec![spec.label.to_owned(), target(spec.goal)];
            row.extend(sets.iter().map(|s| cell(&s.ratios[i].value, spec.goal, 2)));
            row
        })
        .collect();
    if sets.iter().any(|s| s.memory.is_some()) {
        let mut row = vec![
            "RSS after 1 000 000 warm meal(id) ÷ after 10 000".to_owned(),
            target(Memory::GOAL),
        ];
        row.extend(sets.iter().map(|s| match &s.memory {
            Some(m) => format!(
                "{} ({:.1} → {:.1} MiB)",
                cell(&Ok((m.ratio(), m.errors > 0)), Memory::GOAL, 3),
                m.first_kib as f64 / 1024.0,
                m.total_kib as f64 / 1024.0
            ),
            None => "—".to_owned(),
        }));
        rows.push(row);
    }
    section.table(&headers, &rows);

    let rows: Vec<Vec<String>> = sets
        .iter()
        .flat_map(|set| {
            set.rows.iter().map(move |r| {
                let errors = r.wrk.errors();
                vec![
                    set.name.to_owned(),
                    r.label.to_owned(),
                    r.conns.to_string(),
                    format!("{:.0}", r.wrk.rps),
                    fmt_latency(r.wrk.p50_us),
                    fmt_latency(r.wrk.p99_us),
                    format!("{:.1}", r.cpu_us_per_req),
                    format!("{:.1}", r.rss_kib as f64 / 1024.0),
                    if errors > 0 {
                        format!("{errors} ⚠")
                    } else {
                        "0".to_owned()
                    },
                ]
            })
        })
        .collect();
    section.table(
        &[
            "backends",
            "scenario",
            "conns",
            "req/s",
            "p50",
            "p99",
            "server CPU µs/req",
            "server RSS MiB",
            "errors",
        ],
        &rows,
    );
    section.write();
}

/// Whether `value` meets `goal`; `None` for a ratio without a target.
fn met(goal: Goal, value: f64) -> Option<bool> {
    match goal {
        Goal::AtLeast(t) => Some(value >= t),
        Goal::AtMost(t) => Some(value <= t),
        Goal::Below(t) => Some(value < t),
        Goal::Info => None,
    }
}

fn target(goal: Goal) -> String {
    match goal {
        Goal::AtLeast(t) => format!("≥ {t}"),
        Goal::AtMost(t) => format!("≤ {t}"),
        Goal::Below(t) => format!("< {t}"),
        Goal::Info => "—".to_owned(),
    }
}

fn verdict(goal: Goal, value: f64) -> String {
    match met(goal, value) {
        None => String::new(),
        Some(met) => format!(
            "target {}: {}",
            target(goal),
            if met { "met" } else { "NOT met" }
        ),
    }
}

fn fmt_latency(us: f64) -> String {
    if us < 1000.0 {
        format!("{us:.0} µs")
    } else {
        format!("{:.2} ms", us / 1000.0)
    }
}

// ---------------------------------------------------------------------------------------------
// wrk.
// ---------------------------------------------------------------------------------------------

#[derive(Default, Debug)]
struct WrkResult {
    requests: u64,
    rps: f64,
    p50_us: f64,
    p99_us: f64,
    socket_errors: u64,
    non_2xx: u64,
    /// User + system CPU time of the wrk process.
    cpu_secs: f64,
}

impl WrkResult {
    fn errors(&self) -> u64 {
        self.socket_errors + self.non_2xx
    }
}

/// A Lua script that POSTs `body` as JSON; with `stop_after`, wrk's thread stops sending after
/// that many responses (one thread, so one counter), though wrk itself runs out its `-d`.
/// The body as clients write it. serde_json's map sorts keys, which would put `sha256Hash`
/// before `version`; Apollo's clients send `{"variables":…,"extensions":{"persistedQuery":
/// {"version":1,"sha256Hash":…}}}`, and so does this for a hash-only body.
fn body_text(body: &Value) -> String {
    let hash = body
        .pointer("/extensions/persistedQuery/sha256Hash")
        .and_then(Value::as_str);
    match hash {
        Some(hash) if body.get("query").is_none() => {
            let vars = body
                .get("variables")
                .map(|v| format!("\"variables\":{v},"))
                .unwrap_or_default();
            format!(
                r#"{{{vars}"extensions":{{"persistedQuery":{{"version":1,"sha256Hash":"{hash}"}}}}}}"#
            )
        }
        _ => body.to_string(),
    }
}

fn write_lua(dir: &Path, name: &str, body: &Value, stop_after: Option<u64>) -> PathBuf {
    let mut script = format!(
        "wrk.method = \"POST\"\nwrk.headers[\"Content-Type\"] = \"application/json\"\nwrk.body = {}\n",
        lua_string(&body_text(body))
    );
    if let Some(n) = stop_after {
        script.push_str(&format!(
            "local responses = 0\nfunction response(status, headers, body)\n  responses = responses + 1\n  if responses >= {n} then wrk.thread:stop() end\nend\n"
        ));
    }
    let path = dir.join(format!("{name}.lua"));
    std::fs::write(&path, script).expect("the Lua script is written");
    path
}

/// `s` as a double-quoted Lua string literal.
fn lua_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for b in s.bytes() {
        match b {
            b'\\' => out.push_str("\\\\"),
            b'"' => out.push_str("\\\""),
            0x20..=0x7e => out.push(b as char),
            _ => out.push_str(&format!("\\{b:03}")),
        }
    }
    out.push('"');
    out
}

/// `taskset -c 1 wrk -t1 -c<conns> -d<secs>s --latency -s <lua> <url>`, run by a shell whose
/// `times` reports wrk's CPU time once it has exited.
fn run_wrk(url: &str, lua: &Path, conns: u32, secs: u64) -> WrkResult {
    let out = Command::new("sh")
        .args([
            "-c",
            "taskset -c \"$1\" wrk -t1 -c\"$2\" -d\"$3\"s --latency -s \"$4\" \"$5\"; rc=$?; times; exit $rc",
            "sh",
            CLIENT_CORE,
            &conns.to_string(),
            &secs.to_string(),
            &lua.display().to_string(),
            url,
        ])
        .stdin(Stdio::null())
        .output()
        .expect("wrk runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "wrk failed ({}): {stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    parse_wrk(&stdout).unwrap_or_else(|| panic!("could not read wrk's output:\n{stdout}"))
}

/// Reads wrk's report (and the shell's `times` after it). Latencies are printed with units
/// `us`, `ms`, `s`, `m` or `h`; they are returned in µs.
fn parse_wrk(out: &str) -> Option<WrkResult> {
    let mut r = WrkResult::default();
    let mut saw_rps = false;
    for line in out.lines().map(str::trim) {
        if let Some(v) = line.strip_prefix("50%") {
            r.p50_us = parse_latency_us(v.trim())?;
        } else if let Some(v) = line.strip_prefix("99%") {
            r.p99_us = parse_latency_us(v.trim())?;
        } else if let Some(v) = line.strip_prefix("Requests/sec:") {
            r.rps = v.trim().parse().ok()?;
            saw_rps = true;
        } else if line.contains(" requests in ") {
            r.requests = line.split_whitespace().next()?.parse().ok()?;
        } else if let Some(v) = line.strip_prefix("Socket errors:") {
            // "connect 0, read 0, write 0, timeout 0"
            r.socket_errors = v
                .split(',')
                .filter_map(|part| part.split_whitespace().last()?.parse::<u64>().ok())
                .sum();
        } else if let Some(v) = line.strip_prefix("Non-2xx or 3xx responses:") {
            r.non_2xx = v.trim().parse().ok()?;
        }
    }
    // The last line is `times`'s children line: "0m1.230000s 0m0.450000s".
    let children = out.lines().rev().find(|l| !l.trim().is_empty())?;
    r.cpu_secs = children
        .split_whitespace()
        .map(|t| {
            let (m, s) = t.trim_end_matches('s').split_once('m')?;
            Some(m.parse::<f64>().ok()? * 60.0 + s.parse::<f64>().ok()?)
        })
        .sum::<Option<f64>>()?;
    (saw_rps && r.p50_us > 0.0).then_some(r)
}

fn parse_latency_us(v: &str) -> Option<f64> {
    for (unit, scale) in [
        ("us", 1.0),
        ("ms", 1e3),
        ("s", 1e6),
        ("m", 60e6),
        ("h", 3600e6),
    ] {
        if let Some(n) = v.strip_suffix(unit) {
            return Some(n.trim().parse::<f64>().ok()? * scale);
        }
    }
    None
}

// ---------------------------------------------------------------------------------------------
// /proc.
// ---------------------------------------------------------------------------------------------

/// utime + stime of a process, in clock ticks.
fn proc_cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/stat: {e} (did the server exit?)"));
    // The command name may hold spaces; the fields after it are space-separated, starting
    // with field 3 (state). utime and stime are fields 14 and 15.
    let after = &stat[stat.rfind(')').expect("a stat line") + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// (busy, total) jiffies of cpu0, cpu1, … from /proc/stat.
fn core_ticks() -> Vec<(u64, u64)> {
    std::fs::read_to_string("/proc/stat")
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with("cpu") && !l.starts_with("cpu "))
        .map(|l| {
            let v: Vec<u64> = l
                .split_whitespace()
                .skip(1)
                .take(8)
                .filter_map(|x| x.parse().ok())
                .collect();
            let total: u64 = v.iter().sum();
            let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
            (total - idle, total)
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Servers: spawning, readiness, set-up.
// ---------------------------------------------------------------------------------------------

/// A server process pinned to `SERVER_CORE`; killed when dropped.
struct Server {
    name: String,
    child: Child,
    url: String,
    log: PathBuf,
}

impl Server {
    fn pid(&self) -> u32 {
        // `taskset` execs the server, so the child's pid is the server's.
        self.child.id()
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

/// `taskset -c 0 <program> <args>`, with output to `<dir>/<name>.log` and a clean environment
/// as far as Arena's settings go (nothing inherited that would change what is measured).
fn spawn_pinned(
    dir: &Path,
    name: &str,
    program: &Path,
    args: &[&str],
    envs: &[(&str, String)],
    cwd: &Path,
    url: String,
) -> Server {
    let log = dir.join(format!("{name}.log"));
    let file = File::create(&log).expect("a log file");
    let mut cmd = Command::new("taskset");
    cmd.args(["-c", SERVER_CORE])
        .arg(program)
        .args(args)
        .current_dir(cwd)
        .stdin(Stdio::piped())
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
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("{name} does not start: {e}"));
    Server {
        name: name.to_owned(),
        child,
        url,
        log,
    }
}

/// Polls `ready` until it holds; panics (with the server's log) if the server exits or takes
/// more than a minute.
fn wait_until(server: &Server, ready: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if ready() {
            return;
        }
        // `try_wait` needs `&mut`; /proc tells whether the process is still there (a zombie
        // counts as gone).
        let state = std::fs::read_to_string(format!("/proc/{}/stat", server.pid()))
            .ok()
            .and_then(|s| {
                s.rsplit_once(')')
                    .and_then(|(_, rest)| rest.split_whitespace().next().map(str::to_owned))
            });
        if state.as_deref().is_none_or(|s| s == "Z") {
            panic!(
                "{} exited during start-up:\n{}",
                server.name,
                server.log_tail()
            );
        }
        if Instant::now() > deadline {
            panic!(
                "{} did not answer within 60 s:\n{}",
                server.name,
                server.log_tail()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn spawn_bare(dir: &Path) -> Server {
    let port = free_port();
    let exe = std::env::current_exe().expect("the bench's own path");
    spawn_pinned(
        dir,
        "bare",
        &exe,
        &[],
        &[
            ("ARENA_BENCH_ROLE", "bare".into()),
            ("ARENA_BENCH_ADDR", format!("127.0.0.1:{port}")),
        ],
        dir,
        format!("http://127.0.0.1:{port}/graphql"),
    )
}

fn spawn_arena(dir: &Path, db: Option<&ScratchDb>, redis: Option<&str>) -> Server {
    let port = free_port();
    let mut envs = vec![
        ("ARENA_ADDR", format!("127.0.0.1:{port}")),
        ("ARENA_PBKDF2_ITERATIONS", "1000".into()),
        ("ARENA_LOG", "warn".into()),
        ("ARENA_SYNC_ENABLED", "false".into()),
    ];
    let (name, cwd) = match (db, redis) {
        (Some(db), Some(redis)) => {
            envs.push(("DATABASE_URL", db.url.clone()));
            envs.push(("REDIS_URL", redis.to_owned()));
            envs.push((
                "ARENA_CACHE_PREFIX",
                format!("bench:{}:", uuid::Uuid::new_v4().simple()),
            ));
            ("arena-postgres", dir.to_owned())
        }
        _ => {
            let data = dir.join("embedded");
            std::fs::create_dir_all(&data).expect("a data dir");
            envs.push((
                "DATABASE_URL",
                format!("sqlite://{}?mode=rwc", data.join("arena.db").display()),
            ));
            ("arena-embedded", data)
        }
    };
    let server = spawn_pinned(
        dir,
        name,
        Path::new(env!("CARGO_BIN_EXE_arena")),
        &["serve"],
        &envs,
        &cwd,
        format!("http://127.0.0.1:{port}/graphql"),
    );
    let health = format!("http://127.0.0.1:{port}/healthz");
    let http = Http::new();
    wait_until(&server, || http.get_ok(&health));
    server
}

fn spawn_postgraphile(http: &Http, dir: &Path, exe: &Path, db_url: &str) -> Server {
    let port = free_port();
    let port_arg = port.to_string();
    let server = spawn_pinned(
        dir,
        "postgraphile",
        exe,
        &[
            "-c",
            db_url,
            "--host",
            "127.0.0.1",
            "--port",
            &port_arg,
            "--disable-graphiql",
        ],
        &[],
        dir,
        format!("http://127.0.0.1:{port}/graphql"),
    );
    wait_until(&server, || {
        http.post(&server.url, &json!({ "query": TYPENAME_QUERY }), None)
            .is_ok()
    });
    server
}

/// createUser, login, createMeal, then a few `meal(id)` reads to warm the cache.
fn set_up_arena(http: &Http, arena: &Server) -> Fixture {
    let gql = |query: &str, token: Option<&str>| {
        http.post(&arena.url, &json!({ "query": query }), token)
            .unwrap_or_else(|e| panic!("set-up `{query}`: {e}"))
    };
    gql(
        "mutation { createUser(username: \"bench\", password: \"password123\") { id } }",
        None,
    );
    let login = gql(
        "mutation { login(username: \"bench\", password: \"password123\") { token } }",
        None,
    );
    let token = login["data"]["login"]["token"]
        .as_str()
        .expect("a token")
        .to_owned();
    let meal = gql(
        "mutation { createMeal(input: { name: \"Bench Pad Thai\", cuisine: \"Thai\", price: 11, difficulty: MED }) { id } }",
        Some(&token),
    );
    let meal_id = meal["data"]["createMeal"]["id"]
        .as_str()
        .expect("a meal id")
        .to_owned();
    for _ in 0..5 {
        let read = http
            .post(
                &arena.url,
                &json!({ "query": MEAL_QUERY, "variables": { "id": meal_id } }),
                None,
            )
            .expect("a warm-up read");
        assert_eq!(read["data"]["meal"]["id"], json!(meal_id), "{read}");
    }
    Fixture { meal_id }
}

/// Checks a scenario's body once before it is run; `Err` skips it.
fn probe(http: &Http, server: &Server, probe: Probe, body: &Value) -> Result<(), String> {
    match probe {
        Probe::Data => http.post(&server.url, body, None).map(|_| ()),
        Probe::Persisted(document) => {
            let first = match http.post_raw(&server.url, body) {
                Ok(v) if v.get("errors").is_none() && v.get("data").is_some() => return Ok(()),
                Ok(v) => v,
                Err(e) => return Err(e),
            };
            let not_found = first["errors"].as_array().is_some_and(|errors| {
                errors.iter().any(|e| {
                    e["extensions"]["code"] == "PERSISTED_QUERY_NOT_FOUND"
                        || e["message"]
                            .as_str()
                            .is_some_and(|m| m.contains("PersistedQueryNotFound"))
                })
            });
            if !not_found {
                let answer = first["errors"][0]["message"].as_str().map_or_else(
                    || first.to_string(),
                    |m| m.split_whitespace().collect::<Vec<_>>().join(" "),
                );
                return Err(format!(
                    "the server does not support persisted queries (it answered: {answer:.120})"
                ));
            }
            let mut register = body.clone();
            register["query"] = json!(document);
            http.post(&server.url, &register, None)
                .map_err(|e| format!("registering the document: {e}"))?;
            http.post(&server.url, body, None)
                .map(|_| ())
                .map_err(|e| format!("the registered hash: {e}"))
        }
    }
}

/// Blocking JSON-over-HTTP for set-up and probes (the load itself is wrk's).
struct Http {
    rt: tokio::runtime::Runtime,
    client: reqwest::Client,
}

impl Http {
    fn new() -> Self {
        Http {
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime"),
            // No idle connections kept: a server that closes idle ones (Node's keep-alive
            // timeout is 5 s) would otherwise fail the next set-up request or probe.
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .pool_max_idle_per_host(0)
                .build()
                .expect("an HTTP client"),
        }
    }

    /// POSTs a GraphQL body; `Ok` only for a 2xx answer with `data` and no `errors`.
    fn post(&self, url: &str, body: &Value, token: Option<&str>) -> Result<Value, String> {
        let v = self.send(url, body, token)?;
        if v.get("errors").is_some() || v.get("data").is_none_or(Value::is_null) {
            return Err(format!("answered {v}"));
        }
        Ok(v)
    }

    /// POSTs a GraphQL body; any JSON answer is `Ok`.
    fn post_raw(&self, url: &str, body: &Value) -> Result<Value, String> {
        self.send(url, body, None)
    }

    fn send(&self, url: &str, body: &Value, token: Option<&str>) -> Result<Value, String> {
        self.rt.block_on(async {
            let mut req = self.client.post(url).json(body);
            if let Some(t) = token {
                req = req.bearer_auth(t);
            }
            let resp = req.send().await.map_err(|e| e.to_string())?;
            let status = resp.status();
            let text = resp.text().await.map_err(|e| e.to_string())?;
            let v: Value = serde_json::from_str(&text)
                .map_err(|_| format!("HTTP {status}, not JSON: {text:.200}"))?;
            if !status.is_success() && v.get("errors").is_none() {
                return Err(format!("HTTP {status}: {v}"));
            }
            Ok(v)
        })
    }

    fn get_ok(&self, url: &str) -> bool {
        self.rt.block_on(async {
            self.client
                .get(url)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
        })
    }
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
            url: format!("{base}/{name}"),
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

// ---------------------------------------------------------------------------------------------
// The bare endpoint (this binary, re-executed with ARENA_BENCH_ROLE=bare).
// ---------------------------------------------------------------------------------------------

fn bare_server() {
    let addr = std::env::var("ARENA_BENCH_ADDR").expect("ARENA_BENCH_ADDR");
    // Exit when the bench goes away, however it ends: its end of our stdin closes.
    std::thread::spawn(|| {
        let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
        std::process::exit(0);
    });
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a runtime")
        .block_on(async {
            let app = axum::Router::new().route(
                "/graphql",
                axum::routing::post(|axum::Json(_body): axum::Json<Value>| async {
                    (
                        [(axum::http::header::CONTENT_TYPE, "application/json")],
                        r#"{"data":{"__typename":"Query"}}"#,
                    )
                }),
            );
            let listener = tokio::net::TcpListener::bind(&addr)
                .await
                .expect("the bare endpoint's port");
            axum::serve(listener, app).await.expect("serving");
        });
}

fn sha256_hex(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}
