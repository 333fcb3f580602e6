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
//!   1 000 000, then the same for the mixed workload, whose lists fill the memo (on each
//!   Arena instance, before the other scenarios; takes minutes);
//! - `TEST_DATABASE_URL`, `TEST_REDIS_URL`, `POSTGRAPHILE`: see above;
//! - `BENCH_NO_WRITE=1`: print the results only, leaving `docs/benchmarks.md` alone;
//! - `BENCH_PERF=<key>[,<key>…]` (with `BENCH_ONLY=<key>` and one round, say): `perf record` (DWARF call
//!   graphs) of the servers during each measured run of that scenario, into
//!   `target/perf-<key>-<conns>.data` (`perf report -i …`; the release build has symbols);
//! - `BENCH_ARENA_BIN=<path>`: run that `arena` binary instead of this checkout's (another
//!   commit's build, for an A/B of one change on this noisy host: alternate runs of the two;
//!   with `BENCH_NO_WRITE=1`, as the report would name this checkout's commit).
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
    /// A second Arena on the same database and Redis with the memo of responses off, started
    /// for the scenario: every request runs its SQL (PostgreSQL only).
    ArenaCold,
    PostGraphile,
    /// Three Arena replicas on the same database and Redis, started for the scenario; the
    /// load is split evenly over them, one `wrk` each (PostgreSQL only).
    ArenaReplicas,
    /// Three PostGraphile processes on the same database, loaded the same way.
    PostGraphileReplicas,
    /// No server: the bench itself sends the `UPDATE` over one sqlx connection.
    SqlFloor,
}

/// One kind of request of a scripted scenario: each request picks an arm by weight, then one
/// of its bodies at random.
struct Arm {
    weight: u32,
    /// Sent with the fixture's `Authorization` header.
    auth: bool,
    bodies: Vec<String>,
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

/// What a scenario body may refer to: the rows created during set-up.
struct Fixture {
    /// The meal of the by-id scenarios.
    meal_id: String,
    /// Every meal of the list fixture (1 000), for writes spread over them.
    meal_ids: Vec<String>,
    /// A session of the set-up user, for writes.
    token: String,
    /// Arena's `after` cursor of each page of 10 trainers (`None` for the first).
    trainer_pages: Vec<Option<String>>,
}

/// The cuisines of the list fixture: meal `i` has `CUISINES[i % 10]`.
const CUISINES: [&str; 10] = [
    "Thai", "Lao", "Khmer", "Viet", "Malay", "Burmese", "Sichuan", "Hunan", "Korean", "Nepali",
];
const LIST_MEALS: usize = 1000;
const TRAINERS: usize = 100;
const POKEMONS_EACH: usize = 10;
const BATTLES: usize = 20;

const LIST_QUERY: &str =
    "{ meals(first: 20, cuisine: \"Thai\") { edges { node { id name cuisine price } } } }";
const NESTED_QUERY: &str =
    "{ trainers(first: 10) { edges { node { id firstName pokemons { id nickname level } } } } }";
const LEADERBOARD_QUERY: &str =
    "{ leaderboard(sortBy: WINS, first: 10) { rank meal { id name wins battles winPct } } }";
const UPDATE_QUERY: &str = "mutation($id: ID!, $p: Float!) { updateMeal(id: $id, input: { price: $p }) { id price version } }";
const PG_LIST_QUERY: &str = "{ allMeals(first: 20, orderBy: ID_ASC, condition: { cuisine: \"Thai\", deleted: false }) { nodes { id name cuisine price } } }";
const PG_NESTED_QUERY: &str = "{ allTrainers(first: 10, orderBy: ID_ASC) { nodes { id firstName pokemonsByOwnerId(orderBy: ID_ASC) { nodes { id nickname level } } } } }";
const PG_LEADERBOARD_QUERY: &str = "{ allMeals(first: 10, orderBy: [WINS_DESC, WIN_PCT_DESC, ID_ASC], condition: { deleted: false }) { nodes { id name wins battles winPct } } }";

/// `updateMeal` bodies: two prices for each meal, so that a write almost always changes it.
fn arena_updates(f: &Fixture) -> Vec<String> {
    f.meal_ids
        .iter()
        .flat_map(|id| {
            [1, 2].map(|p| {
                json!({ "query": UPDATE_QUERY, "variables": { "id": id, "p": p } }).to_string()
            })
        })
        .collect()
}

fn pg_updates(f: &Fixture) -> Vec<String> {
    f.meal_ids
        .iter()
        .flat_map(|id| {
            [1, 2].map(|p| {
                json!({ "query": format!("mutation {{ updateMealById(input: {{ id: \"{id}\", mealPatch: {{ price: {p} }} }}) {{ meal {{ id price version }} }} }}") }).to_string()
            })
        })
        .collect()
}

/// The mixed workload: 40 % by id, 25 % lists, 25 % nested lists and 10 % writes over the
/// 1 000 meals, from each kind's bodies.
fn mixed(by_id: Vec<String>, lists: Vec<String>, nested: Vec<String>, writes: Arm) -> Vec<Arm> {
    let arm = |weight, bodies| Arm {
        weight,
        auth: false,
        bodies,
    };
    vec![arm(40, by_id), arm(25, lists), arm(25, nested), writes]
}

fn query_body(query: String) -> String {
    json!({ "query": query }).to_string()
}

fn arena_mixed(f: &Fixture) -> Vec<Arm> {
    mixed(
        f.meal_ids
            .iter()
            .map(|id| json!({ "query": MEAL_QUERY, "variables": { "id": id } }).to_string())
            .collect(),
        CUISINES
            .iter()
            .map(|c| query_body(LIST_QUERY.replace("Thai", c)))
            .collect(),
        f.trainer_pages
            .iter()
            .map(|after| match after {
                Some(a) => query_body(
                    NESTED_QUERY.replace("first: 10", &format!("first: 10, after: \"{a}\"")),
                ),
                None => query_body(NESTED_QUERY.to_owned()),
            })
            .collect(),
        Arm {
            weight: 10,
            auth: true,
            bodies: arena_updates(f),
        },
    )
}

fn pg_mixed(f: &Fixture) -> Vec<Arm> {
    mixed(
        f.meal_ids
            .iter()
            .map(|id| query_body(format!("query {{ mealById(id: \"{id}\") {{ id name cuisine price difficulty battles wins winPct }} }}")))
            .collect(),
        CUISINES
            .iter()
            .map(|c| query_body(PG_LIST_QUERY.replace("Thai", c)))
            .collect(),
        (0..TRAINERS / 10)
            .map(|page| {
                query_body(
                    PG_NESTED_QUERY.replace("first: 10", &format!("first: 10, offset: {}", page * 10)),
                )
            })
            .collect(),
        Arm {
            weight: 10,
            auth: false,
            bodies: pg_updates(f),
        },
    )
}

struct Scenario {
    /// Short name, used by `BENCH_ONLY` and by the ratios.
    key: &'static str,
    label: &'static str,
    target: Target,
    connections: &'static [u32],
    probe: Probe,
    body: fn(&Fixture) -> Value,
    /// Requests drawn at random instead of `body` (which is then only the probe's).
    script: Option<fn(&Fixture) -> Vec<Arm>>,
}

const SCENARIOS: &[Scenario] = &[
    Scenario {
        key: "bare",
        label: "bare axum JSON endpoint",
        target: Target::Bare,
        connections: &[32, 1],
        probe: Probe::Data,
        body: |_| json!({ "query": TYPENAME_QUERY }),
        script: None,
    },
    Scenario {
        key: "typename",
        label: "Arena { __typename }",
        target: Target::Arena,
        connections: &[32, 1],
        probe: Probe::Data,
        body: |_| json!({ "query": TYPENAME_QUERY }),
        script: None,
    },
    Scenario {
        key: "meal",
        label: "Arena warm meal(id)",
        target: Target::Arena,
        connections: &[32, 1],
        probe: Probe::Data,
        body: |f| json!({ "query": MEAL_QUERY, "variables": { "id": f.meal_id } }),
        script: None,
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
        script: None,
    },
    Scenario {
        key: "postgraphile",
        label: "PostGraphile v4 mealById",
        target: Target::PostGraphile,
        connections: &[32, 1],
        probe: Probe::Data,
        body: |f| json!({ "query": format!("query {{ mealById(id: \"{}\") {{ id name cuisine price }} }}", f.meal_id) }),
        script: None,
    },
    Scenario {
        key: "list",
        label: "Arena warm meals(first: 20, cuisine)",
        target: Target::Arena,
        connections: &[32],
        probe: Probe::Data,
        body: |_| json!({ "query": LIST_QUERY }),
        script: None,
    },
    Scenario {
        key: "pg_list",
        label: "PostGraphile allMeals(first: 20, condition: cuisine)",
        target: Target::PostGraphile,
        connections: &[32],
        probe: Probe::Data,
        body: |_| json!({ "query": PG_LIST_QUERY }),
        script: None,
    },
    Scenario {
        key: "nested",
        label: "Arena warm trainers(first: 10) { pokemons }",
        target: Target::Arena,
        connections: &[32],
        probe: Probe::Data,
        body: |_| json!({ "query": NESTED_QUERY }),
        script: None,
    },
    Scenario {
        key: "pg_nested",
        label: "PostGraphile allTrainers(first: 10) { pokemonsByOwnerId }",
        target: Target::PostGraphile,
        connections: &[32],
        probe: Probe::Data,
        body: |_| json!({ "query": PG_NESTED_QUERY }),
        script: None,
    },
    Scenario {
        key: "leaderboard",
        label: "Arena warm leaderboard(first: 10)",
        target: Target::Arena,
        connections: &[32],
        probe: Probe::Data,
        body: |_| json!({ "query": LEADERBOARD_QUERY }),
        script: None,
    },
    Scenario {
        key: "pg_leaderboard",
        label: "PostGraphile allMeals(orderBy: WINS_DESC, first: 10)",
        target: Target::PostGraphile,
        connections: &[32],
        probe: Probe::Data,
        body: |_| json!({ "query": PG_LEADERBOARD_QUERY }),
        script: None,
    },
    Scenario {
        key: "write",
        label: "Arena updateMeal over 1 000 rows",
        target: Target::Arena,
        connections: &[32, 1],
        probe: Probe::Data,
        body: |_| json!({ "query": TYPENAME_QUERY }),
        script: Some(|f| {
            vec![Arm {
                weight: 1,
                auth: true,
                bodies: arena_updates(f),
            }]
        }),
    },
    Scenario {
        key: "pg_write",
        label: "PostGraphile updateMealById over 1 000 rows",
        target: Target::PostGraphile,
        connections: &[32, 1],
        probe: Probe::Data,
        body: |_| json!({ "query": TYPENAME_QUERY }),
        script: Some(|f| {
            vec![Arm {
                weight: 1,
                auth: false,
                bodies: pg_updates(f),
            }]
        }),
    },
    Scenario {
        key: "sqlx_write",
        label: "plain sqlx UPDATE of one meal's price, one connection",
        target: Target::SqlFloor,
        connections: &[1],
        probe: Probe::Data,
        body: |_| json!({}),
        script: None,
    },
    Scenario {
        key: "list_cold",
        label: "Arena cold meals(first: 20, cuisine), memo off",
        target: Target::ArenaCold,
        connections: &[32, 1],
        probe: Probe::Data,
        body: |_| json!({ "query": LIST_QUERY }),
        script: None,
    },
    Scenario {
        key: "nested_cold",
        label: "Arena cold trainers(first: 10) { pokemons }, memo off",
        target: Target::ArenaCold,
        connections: &[32],
        probe: Probe::Data,
        body: |_| json!({ "query": NESTED_QUERY }),
        script: None,
    },
    Scenario {
        key: "mixed",
        label: "Arena mixed (40 % by id, 25 % lists, 25 % nested, 10 % writes), 3 replicas",
        target: Target::ArenaReplicas,
        connections: &[48],
        probe: Probe::Data,
        body: |_| json!({ "query": TYPENAME_QUERY }),
        script: Some(arena_mixed),
    },
    Scenario {
        key: "pg_mixed",
        label: "PostGraphile mixed, 3 processes",
        target: Target::PostGraphileReplicas,
        connections: &[48],
        probe: Probe::Data,
        body: |_| json!({ "query": TYPENAME_QUERY }),
        script: Some(pg_mixed),
    },
];

/// Which figure of a run a ratio compares.
#[derive(Clone, Copy)]
enum Metric {
    Rps,
    P50,
    P99,
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
    /// (scenario key, connections, metric) over the same of the denominator; with no
    /// denominator the figure itself (server CPU µs per request) is held to the goal.
    num: (&'static str, u32, Metric),
    den: Option<(&'static str, u32, Metric)>,
    goal: Goal,
}

const RATIOS: &[RatioSpec] = &[
    RatioSpec {
        label: "warm meal(id) ÷ { __typename }, throughput, 32 conns",
        num: ("meal", 32, Metric::Rps),
        den: Some(("typename", 32, Metric::Rps)),
        goal: Goal::AtLeast(0.9),
    },
    RatioSpec {
        label: "warm meal(id) ÷ bare endpoint, throughput, 32 conns",
        num: ("meal", 32, Metric::Rps),
        den: Some(("bare", 32, Metric::Rps)),
        goal: Goal::AtLeast(0.5),
    },
    RatioSpec {
        label: "{ __typename } ÷ bare endpoint, throughput, 32 conns",
        num: ("typename", 32, Metric::Rps),
        den: Some(("bare", 32, Metric::Rps)),
        goal: Goal::Info,
    },
    RatioSpec {
        label: "warm meal(id) p50 ÷ { __typename } p50, 1 conn",
        num: ("meal", 1, Metric::P50),
        den: Some(("typename", 1, Metric::P50)),
        goal: Goal::AtMost(1.2),
    },
    RatioSpec {
        label: "persisted ÷ full document, server CPU per request, 32 conns",
        num: ("persisted", 32, Metric::CpuPerRequest),
        den: Some(("meal", 32, Metric::CpuPerRequest)),
        goal: Goal::Below(1.0),
    },
    RatioSpec {
        label: "Arena warm meal(id) ÷ PostGraphile mealById, throughput, 32 conns",
        num: ("meal", 32, Metric::Rps),
        den: Some(("postgraphile", 32, Metric::Rps)),
        goal: Goal::AtLeast(5.0),
    },
    RatioSpec {
        label: "warm meals list ÷ { __typename }, throughput, 32 conns",
        num: ("list", 32, Metric::Rps),
        den: Some(("typename", 32, Metric::Rps)),
        goal: Goal::AtLeast(0.5),
    },
    RatioSpec {
        label: "warm nested trainers { pokemons } ÷ { __typename }, throughput, 32 conns",
        num: ("nested", 32, Metric::Rps),
        den: Some(("typename", 32, Metric::Rps)),
        goal: Goal::AtLeast(0.5),
    },
    RatioSpec {
        label: "warm leaderboard ÷ { __typename }, throughput, 32 conns",
        num: ("leaderboard", 32, Metric::Rps),
        den: Some(("typename", 32, Metric::Rps)),
        goal: Goal::AtLeast(0.5),
    },
    RatioSpec {
        label: "Arena warm meals list ÷ PostGraphile allMeals, throughput, 32 conns",
        num: ("list", 32, Metric::Rps),
        den: Some(("pg_list", 32, Metric::Rps)),
        goal: Goal::AtLeast(10.0),
    },
    RatioSpec {
        label: "Arena warm nested ÷ PostGraphile nested, throughput, 32 conns",
        num: ("nested", 32, Metric::Rps),
        den: Some(("pg_nested", 32, Metric::Rps)),
        goal: Goal::AtLeast(10.0),
    },
    RatioSpec {
        label: "Arena warm leaderboard ÷ PostGraphile, throughput, 32 conns",
        num: ("leaderboard", 32, Metric::Rps),
        den: Some(("pg_leaderboard", 32, Metric::Rps)),
        goal: Goal::AtLeast(10.0),
    },
    RatioSpec {
        label: "cold 20-row page, Arena CPU µs per request",
        num: ("list_cold", 32, Metric::CpuPerRequest),
        den: None,
        goal: Goal::AtMost(100.0),
    },
    RatioSpec {
        label: "cold 10 × 10 nested list, Arena CPU µs per request",
        num: ("nested_cold", 32, Metric::CpuPerRequest),
        den: None,
        goal: Goal::AtMost(200.0),
    },
    RatioSpec {
        label: "updateMeal over 1 000 rows ÷ PostGraphile, throughput, 32 conns",
        num: ("write", 32, Metric::Rps),
        den: Some(("pg_write", 32, Metric::Rps)),
        goal: Goal::AtLeast(1.5),
    },
    RatioSpec {
        label: "updateMeal p50, 1 conn ÷ plain sqlx UPDATE p50",
        num: ("write", 1, Metric::P50),
        den: Some(("sqlx_write", 1, Metric::P50)),
        goal: Goal::AtMost(1.1),
    },
    // The ratio above can go no lower than 1 + this: an HTTP request answered with nothing
    // read or written, before any statement runs.
    RatioSpec {
        label: "{ __typename } p50, 1 conn ÷ plain sqlx UPDATE p50 (the write's floor is 1 + this)",
        num: ("typename", 1, Metric::P50),
        den: Some(("sqlx_write", 1, Metric::P50)),
        goal: Goal::Info,
    },
    RatioSpec {
        label: "updateMeal, Arena CPU µs per request, 32 conns",
        num: ("write", 32, Metric::CpuPerRequest),
        den: None,
        goal: Goal::AtMost(150.0),
    },
    RatioSpec {
        label: "mixed workload, 3 Arena replicas ÷ 3 PostGraphile, throughput",
        num: ("mixed", 48, Metric::Rps),
        den: Some(("pg_mixed", 48, Metric::Rps)),
        goal: Goal::AtLeast(5.0),
    },
    RatioSpec {
        label: "mixed workload p99, Arena ÷ PostGraphile",
        num: ("mixed", 48, Metric::P99),
        den: Some(("pg_mixed", 48, Metric::P99)),
        goal: Goal::AtMost(1.0),
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
    perf: Option<String>,
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
            perf: std::env::var("BENCH_PERF").ok(),
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
    /// (workload, figures) when `BENCH_MEMORY=1`.
    memory: Vec<(&'static str, Memory)>,
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
    let prefix = format!("bench:{}:", uuid::Uuid::new_v4().simple());
    let redis = pg.map(|(_, redis)| (redis.as_str(), prefix.as_str()));
    let arena = spawn_arena(dir, "arena", scratch.as_ref(), redis, &[]);
    let fixture = set_up_arena(http, &arena);

    let postgraphile = match (&scratch, &cfg.postgraphile) {
        (Some(db), Some(exe)) => Some(spawn_postgraphile(http, dir, "postgraphile", exe, &db.url)),
        _ => None,
    };

    let memory = if cfg.memory {
        memory_scenarios(dir, &arena, &fixture)
    } else {
        Vec::new()
    };

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
            // Servers of this scenario alone (replicas, a memo-less Arena), dropped after it.
            let mut own: Vec<Server> = Vec::new();
            let servers: Vec<&Server> = match sc.target {
                Target::Bare => vec![bare],
                Target::Arena => vec![&arena],
                Target::PostGraphile => match &postgraphile {
                    Some(p) => vec![p],
                    None => continue,
                },
                Target::ArenaCold => match &scratch {
                    Some(db) => {
                        let memo_off = [("ARENA_RESPONSE_MEMO", "0".to_owned())];
                        own.push(spawn_arena(dir, "arena-cold", Some(db), redis, &memo_off));
                        own.iter().collect()
                    }
                    None => continue,
                },
                Target::ArenaReplicas => match &scratch {
                    Some(db) => {
                        for i in 1..3 {
                            own.push(spawn_arena(
                                dir,
                                &format!("arena-{i}"),
                                Some(db),
                                redis,
                                &[],
                            ));
                        }
                        std::iter::once(&arena).chain(own.iter()).collect()
                    }
                    None => continue,
                },
                Target::PostGraphileReplicas => {
                    match (&scratch, &cfg.postgraphile, &postgraphile) {
                        (Some(db), Some(exe), Some(first)) => {
                            for i in 1..3 {
                                own.push(spawn_postgraphile(
                                    http,
                                    dir,
                                    &format!("postgraphile-{i}"),
                                    exe,
                                    &db.url,
                                ));
                            }
                            std::iter::once(first).chain(own.iter()).collect()
                        }
                        _ => continue,
                    }
                }
                Target::SqlFloor => match &scratch {
                    Some(db) => {
                        let row = measure_sqlx_floor(cfg, http, &db.url, &fixture, sc);
                        eprintln!(
                            "  round {} {}: {:.0} req/s, p50 {}",
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
                        continue;
                    }
                    None => continue,
                },
            };
            if skipped.contains(&sc.key) {
                continue;
            }
            let body = (sc.body)(&fixture);
            let arms = sc.script.map(|script| script(&fixture));
            if round == 0 {
                let checked = match &arms {
                    Some(arms) => probe_arms(http, servers[0], arms, &fixture.token),
                    None => probe(http, servers[0], sc.probe, &body),
                };
                if let Err(why) = checked {
                    println!("skipped {}: {why}", sc.key);
                    skipped.push(sc.key);
                    continue;
                }
            }
            let lua = match &arms {
                Some(arms) => write_script(dir, sc.key, arms, &fixture.token, None),
                None => write_lua(dir, sc.key, &body, None),
            };
            if cfg.warmup_secs > 0 && (round == 0 || !own.is_empty()) {
                run_wrk_on(&servers, &lua, sc.connections[0], cfg.warmup_secs);
            }
            for &conns in sc.connections {
                let row = measure(cfg, &servers, &lua, conns, sc);
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

/// Runs `wrk` against the servers (one `wrk` each, sharing `conns`, all on the client
/// core), reading the servers' CPU time, the cores' busy time and the servers' RSS around it.
fn measure(cfg: &Config, servers: &[&Server], lua: &Path, conns: u32, sc: &Scenario) -> Row {
    let cpu = || -> u64 { servers.iter().map(|s| proc_cpu_ticks(s.pid())).sum() };
    let cpu_before = cpu();
    let cores_before = core_ticks();
    let _perf = cfg
        .perf
        .as_deref()
        .is_some_and(|p| p.split(',').any(|k| k == sc.key))
        .then(|| perf_record(servers, sc.key, conns));
    let start = Instant::now();
    let wrk = run_wrk_on(servers, lua, conns, cfg.secs);
    let wall = start.elapsed().as_secs_f64();
    let cpu_secs = (cpu() - cpu_before) as f64 / cfg.clk_tck;
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
        rss_kib: servers.iter().map(|s| rss_kib(s.pid())).sum(),
        wrk,
    }
}

/// `perf record` of the servers until the guard is dropped (`BENCH_PERF`).
fn perf_record(servers: &[&Server], key: &str, conns: u32) -> ChildGuard {
    let pids: Vec<String> = servers.iter().map(|s| s.pid().to_string()).collect();
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("target/perf-{key}-{conns}.data"));
    let child = Command::new("perf")
        .args(["record", "--call-graph", "dwarf,16384", "-F", "999", "-o"])
        .arg(&out)
        .args(["-p", &pids.join(",")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("perf runs (BENCH_PERF)");
    eprintln!("perf: recording into {}", out.display());
    ChildGuard(child)
}

/// Stops a child with SIGINT when dropped, and waits for it (`perf` writes its file then).
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-INT", &self.0.id().to_string()])
            .status();
        let _ = self.0.wait();
    }
}

/// One `wrk` per server at once, `conns` split evenly; their results added up (latencies:
/// the highest of the runs, as the slowest server bounds what clients see).
fn run_wrk_on(servers: &[&Server], lua: &Path, conns: u32, secs: u64) -> WrkResult {
    if let [one] = servers {
        return run_wrk(&one.url, lua, conns, secs);
    }
    let each = (conns / servers.len() as u32).max(1);
    let runs: Vec<WrkResult> = std::thread::scope(|scope| {
        let handles: Vec<_> = servers
            .iter()
            .map(|s| scope.spawn(move || run_wrk(&s.url, lua, each, secs)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("wrk"))
            .collect()
    });
    WrkResult {
        requests: runs.iter().map(|r| r.requests).sum(),
        rps: runs.iter().map(|r| r.rps).sum(),
        p50_us: runs.iter().map(|r| r.p50_us).fold(0.0, f64::max),
        p99_us: runs.iter().map(|r| r.p99_us).fold(0.0, f64::max),
        socket_errors: runs.iter().map(|r| r.socket_errors).sum(),
        non_2xx: runs.iter().map(|r| r.non_2xx).sum(),
        cpu_secs: runs.iter().map(|r| r.cpu_secs).sum(),
    }
}

/// The floor of a write: the `UPDATE` of one meal's price that `updateMeal` makes, sent by a
/// plain sqlx client over one connection for `BENCH_SECS`, one at a time, ids at random.
/// It writes behind Arena's back, as any outside client would, so Arena's cached copies of
/// those meals keep their older price until Arena writes them again; no figure depends on it.
fn measure_sqlx_floor(
    cfg: &Config,
    http: &Http,
    db_url: &str,
    fixture: &Fixture,
    sc: &Scenario,
) -> Row {
    use rand::Rng;
    use sea_orm::sqlx::{self, Connection};
    let ids: Vec<i64> = fixture
        .meal_ids
        .iter()
        .map(|i| i.parse().expect("a numeric id"))
        .collect();
    let mut latencies: Vec<f64> = http.rt.block_on(async {
        let mut conn = sqlx::PgConnection::connect(db_url)
            .await
            .expect("a sqlx connection");
        let mut out = Vec::new();
        let mut rng = rand::rng();
        let end = Instant::now() + Duration::from_secs(cfg.secs);
        while Instant::now() < end {
            let id = ids[rng.random_range(0..ids.len())];
            let price = f64::from(rng.random_range(1..3));
            let t = Instant::now();
            sqlx::query("UPDATE meals SET price = $1 WHERE id = $2")
                .bind(price)
                .bind(id)
                .execute(&mut conn)
                .await
                .expect("the UPDATE");
            out.push(t.elapsed().as_secs_f64() * 1e6);
        }
        out
    });
    latencies.sort_by(f64::total_cmp);
    let at = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    Row {
        key: sc.key,
        label: sc.label,
        conns: 1,
        cpu_us_per_req: 0.0,
        server_busy_pct: 0.0,
        wrk_busy_pct: 0.0,
        core_busy_pct: [0.0, 0.0],
        rss_kib: 0,
        wrk: WrkResult {
            requests: latencies.len() as u64,
            rps: latencies.len() as f64 / cfg.secs as f64,
            p50_us: at(0.5),
            p99_us: at(0.99),
            ..Default::default()
        },
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

/// RSS after the first 10 000 requests of a workload, and after 1 000 000: warm `meal(id)`
/// reads, then the mixed workload (by id, lists, nested lists, 10 % writes), which fills
/// the memo with lists.
fn memory_scenarios(dir: &Path, arena: &Server, fixture: &Fixture) -> Vec<(&'static str, Memory)> {
    let body = json!({ "query": MEAL_QUERY, "variables": { "id": fixture.meal_id } });
    let mixed = arena_mixed(fixture);
    vec![
        (
            "warm meal(id)",
            memory_scenario(arena, "warm meal(id) reads", |n| {
                write_lua(dir, "memory", &body, Some(n))
            }),
        ),
        (
            "mixed requests (lists in the memo)",
            memory_scenario(arena, "mixed requests", |n| {
                write_script(dir, "memory-mixed", &mixed, &fixture.token, Some(n))
            }),
        ),
    ]
}

/// RSS after the first 10 000 requests made by the scripts of `lua` (given how many to make
/// at most), and after 1 000 000.
fn memory_scenario(arena: &Server, what: &str, lua: impl Fn(u64) -> PathBuf) -> Memory {
    const FIRST: u64 = 10_000;
    const TOTAL: u64 = 1_000_000;
    let mut reads = 0;
    let mut errors = 0;
    // wrk runs for its whole `-d` even when the script stops its thread, so the reads are
    // made in short runs, each stopping after what is still missing, and counted.
    let mut read_until = |goal: u64, chunk_secs: u64| {
        while reads < goal {
            let script = lua(goal - reads);
            let run = run_wrk(&arena.url, &script, 32, chunk_secs);
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
        "memory: RSS {:.1} MiB after {first} {what}, {:.1} MiB after {total}: \
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
            Metric::P99 => row.wrk.p99_us,
            Metric::CpuPerRequest => row.cpu_us_per_req,
        };
        Ok((value, row.wrk.errors() > 0))
    };
    RATIOS
        .iter()
        .map(|spec| RatioValue {
            spec,
            value: find(spec.num).and_then(|(n, n_err)| match spec.den {
                Some(den) => find(den).map(|(d, d_err)| (n / d, n_err || d_err)),
                None => Ok((n, n_err)),
            }),
        })
        .collect()
}

fn print_ratios(ratios: &[RatioValue]) {
    println!("\nratios:");
    for r in ratios {
        match &r.value {
            Ok((ratio, errors)) => println!(
                "- {}: **{ratio:.2}{}**{}{}",
                r.spec.label,
                unit(r.spec),
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
        "Reads, lists and writes under load",
        "Every server is a process of its own pinned to core 0; `wrk` (one thread, pinned to \
         core 1) POSTs GraphQL over 32 connections (and over 1 where a row says so): a fixed \
         body, or for writes and the mixed workload a body drawn at random per request. The \
         fixture: 1 000 meals in 10 cuisines, 100 trainers with 10 Pokémon each, 20 battles. \
         The bare endpoint parses the JSON body and answers a constant; PostGraphile v4 reads \
         and writes the same rows of the same PostgreSQL database (both connect without TLS); \
         `cold` rows run on a second Arena with the memo off; the mixed workload splits the \
         load over 3 Arena replicas (or 3 PostGraphile processes), one `wrk` each. The floor \
         of a write is the same `UPDATE` sent by the bench over one sqlx connection. Server \
         CPU µs/req is the servers' own CPU (PostgreSQL and Redis not included). Ratios \
         compare figures of the same run; ✗ marks a target not met, ⚠ a figure from a run \
         with socket errors or non-2xx answers.",
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

    let cell =
        |value: &Result<(f64, bool), String>, goal: Goal, digits: usize, unit: &str| match value {
            Ok((v, errors)) => format!(
                "{v:.digits$}{unit}{}{}",
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
            row.extend(
                sets.iter()
                    .map(|s| cell(&s.ratios[i].value, spec.goal, 2, unit(spec))),
            );
            row
        })
        .collect();
    let workloads: Vec<&str> = sets
        .iter()
        .flat_map(|s| s.memory.iter().map(|(w, _)| *w))
        .fold(Vec::new(), |mut all, w| {
            if !all.contains(&w) {
                all.push(w);
            }
            all
        });
    for workload in workloads {
        let mut row = vec![
            format!("RSS after 1 000 000 {workload} ÷ after 10 000"),
            target(Memory::GOAL),
        ];
        row.extend(
            sets.iter()
                .map(|s| match s.memory.iter().find(|(w, _)| *w == workload) {
                    Some((_, m)) => format!(
                        "{} ({:.1} → {:.1} MiB)",
                        cell(&Ok((m.ratio(), m.errors > 0)), Memory::GOAL, 3, "×"),
                        m.first_kib as f64 / 1024.0,
                        m.total_kib as f64 / 1024.0
                    ),
                    None => "—".to_owned(),
                }),
        );
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

/// `×` for a ratio, ` µs` for a figure held to its goal alone.
fn unit(spec: &RatioSpec) -> &'static str {
    if spec.den.is_some() {
        "×"
    } else {
        " µs"
    }
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

/// An Arena process named `name`: embedded in a data dir of `dir`, or on `db` and
/// `redis` (its URL and the key prefix every replica of the run shares), with `extra`
/// settings.
fn spawn_arena(
    dir: &Path,
    name: &str,
    db: Option<&ScratchDb>,
    redis: Option<(&str, &str)>,
    extra: &[(&str, String)],
) -> Server {
    let port = free_port();
    let mut envs = vec![
        ("ARENA_ADDR", format!("127.0.0.1:{port}")),
        ("ARENA_PBKDF2_ITERATIONS", "1000".into()),
        ("ARENA_LOG", "warn".into()),
        ("ARENA_SYNC_ENABLED", "false".into()),
    ];
    envs.extend(extra.iter().cloned());
    let cwd = match (db, redis) {
        (Some(db), Some((redis, prefix))) => {
            envs.push(("DATABASE_URL", db.url.clone()));
            envs.push(("REDIS_URL", redis.to_owned()));
            envs.push(("ARENA_CACHE_PREFIX", prefix.to_owned()));
            dir.to_owned()
        }
        _ => {
            let data = dir.join("embedded");
            std::fs::create_dir_all(&data).expect("a data dir");
            envs.push((
                "DATABASE_URL",
                format!("sqlite://{}?mode=rwc", data.join("arena.db").display()),
            ));
            data
        }
    };
    let bin = std::env::var_os("BENCH_ARENA_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_arena")));
    let server = spawn_pinned(
        dir,
        name,
        &bin,
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

fn spawn_postgraphile(http: &Http, dir: &Path, name: &str, exe: &Path, db_url: &str) -> Server {
    let port = free_port();
    let port_arg = port.to_string();
    let server = spawn_pinned(
        dir,
        name,
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
    let started = Instant::now();
    let post = |query: &str, variables: Value, token: Option<&str>| {
        let r = http
            .post(
                &arena.url,
                &json!({ "query": query, "variables": variables }),
                token,
            )
            .unwrap_or_else(|e| panic!("set-up `{query}`: {e}"));
        assert!(r.get("errors").is_none(), "set-up `{query}`: {r}");
        r
    };
    let meal_ids: Vec<String> = (0..LIST_MEALS)
        .map(|i| {
            let r = post(
                "mutation($i: CreateMealInput!) { createMeal(input: $i) { id } }",
                json!({ "i": { "name": format!("Listed {i}"), "cuisine": CUISINES[i % CUISINES.len()], "price": (i % 50 + 1) as f64, "difficulty": "LOW" } }),
                Some(&token),
            );
            r["data"]["createMeal"]["id"].as_str().expect("an id").to_owned()
        })
        .collect();
    let trainer_id = |t: usize| format!("t{t:03}");
    for t in 0..TRAINERS {
        post(
            "mutation($i: CreateTrainerInput!) { createTrainer(input: $i) { id } }",
            json!({ "i": { "id": trainer_id(t), "firstName": format!("Trainer {t}"), "lastName": "Bench", "dateOfBirth": "1990-01-01" } }),
            Some(&token),
        );
        for p in 0..POKEMONS_EACH {
            post(
                "mutation($i: CreatePokemonInput!) { createPokemon(input: $i) { id } }",
                json!({ "i": { "id": format!("p{t:03}-{p}"), "nickname": format!("Mon {p}"), "species": "Pikachu", "level": p + 1, "ownerId": trainer_id(t) } }),
                Some(&token),
            );
        }
    }
    // Battles between pairs of listed meals, each in a ring of its own, for the leaderboard.
    for b in 0..BATTLES {
        let user = format!("fighter{b}");
        post(
            "mutation($u: String!) { createUser(username: $u, password: \"password123\") { id } }",
            json!({ "u": user }),
            None,
        );
        let login = post(
            "mutation($u: String!) { login(username: $u, password: \"password123\") { token } }",
            json!({ "u": user }),
            None,
        );
        let fighter = login["data"]["login"]["token"]
            .as_str()
            .expect("a token")
            .to_owned();
        for m in [&meal_ids[2 * b], &meal_ids[2 * b + 1]] {
            post(
                "mutation($m: ID!) { prepCombatant(mealId: $m) { id } }",
                json!({ "m": m }),
                Some(&fighter),
            );
        }
        post("mutation { battle { id } }", json!({}), Some(&fighter));
    }
    let trainer_pages = (0..TRAINERS / 10)
        .map(|page| {
            (page > 0).then(|| {
                use base64::Engine;
                base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .encode(format!("trainer:{}", trainer_id(page * 10 - 1)))
            })
        })
        .collect();
    println!(
        "fixture: {LIST_MEALS} meals in {} cuisines, {TRAINERS} trainers with {POKEMONS_EACH} Pokémon each, {BATTLES} battles ({:.1} s)",
        CUISINES.len(),
        started.elapsed().as_secs_f64()
    );
    Fixture {
        meal_id,
        meal_ids,
        token,
        trainer_pages,
    }
}

/// Checks the first body of each arm of a scripted scenario once; `Err` skips it.
fn probe_arms(http: &Http, server: &Server, arms: &[Arm], token: &str) -> Result<(), String> {
    for arm in arms {
        let body: Value = serde_json::from_str(&arm.bodies[0]).expect("a JSON body");
        let r = http.post(&server.url, &body, arm.auth.then_some(token))?;
        if let Some(errors) = r.get("errors") {
            return Err(format!("{:.200}", errors.to_string()));
        }
    }
    Ok(())
}

/// A Lua script whose every request picks an arm by weight, then one of its bodies.
fn write_script(
    dir: &Path,
    name: &str,
    arms: &[Arm],
    token: &str,
    stop_after: Option<u64>,
) -> PathBuf {
    let mut script = String::from(
        "wrk.method = \"POST\"\nwrk.headers[\"Content-Type\"] = \"application/json\"\n",
    );
    script.push_str(&format!(
        "local auth = {{ [\"Content-Type\"] = \"application/json\", [\"Authorization\"] = {} }}\n",
        lua_string(&format!("Bearer {token}"))
    ));
    script.push_str("local arms = {\n");
    for arm in arms {
        script.push_str(&format!(
            "  {{ w = {}, auth = {}, bodies = {{\n",
            arm.weight, arm.auth
        ));
        for b in &arm.bodies {
            script.push_str(&format!("    {},\n", lua_string(b)));
        }
        script.push_str("  } },\n");
    }
    script.push_str(
        "}\nlocal total = 0\nfor _, a in ipairs(arms) do total = total + a.w end\n\
         math.randomseed(os.time() + math.floor(os.clock() * 1000000))\n\
         request = function()\n\
         \x20 local r = math.random(total)\n\
         \x20 for _, a in ipairs(arms) do\n\
         \x20   if r <= a.w then\n\
         \x20     local body = a.bodies[math.random(#a.bodies)]\n\
         \x20     if a.auth then return wrk.format(nil, nil, auth, body) end\n\
         \x20     return wrk.format(nil, nil, nil, body)\n\
         \x20   end\n\
         \x20   r = r - a.w\n\
         \x20 end\n\
         end\n",
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
            // Without TLS, for every server alike: PostGraphile's node-postgres connects in
            // the clear unless told otherwise, while sqlx would negotiate TLS with a server
            // that offers it (Debian's does), which costs Arena ~60 µs per request.
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
