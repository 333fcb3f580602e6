//! `cargo bench --bench import`: a CSV of 100 000 Pokémon rows through Arena's
//! `importPokemons` over HTTP, inserted, then imported again (every row an update), against
//! `psql \copy` of the same rows into a scratch table of the same database, in the same run.
//! The figures are the rows per second of each and Arena's insert rate ÷ `\copy`'s, and
//! Arena's peak memory.
//!
//! Runs when `TEST_DATABASE_URL` is set (a PostgreSQL URL whose user may create databases;
//! `TEST_REDIS_URL` is used for the cache tier when set). It spawns the `arena` binary on a
//! fresh database, so the peak memory reported (VmHWM) is Arena's alone.
//!
//! Environment: `BENCH_ROWS` (default 100 000), `BENCH_NO_WRITE=1` (print only). The results
//! go into the `import` section of `docs/benchmarks.md`, with the date, commit and machine
//! (`benches/report/`).

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

mod report;

const TRAINERS: usize = 1_000;

fn main() {
    let Ok(admin) = std::env::var("TEST_DATABASE_URL") else {
        eprintln!("import bench skipped: set TEST_DATABASE_URL (and optionally TEST_REDIS_URL)");
        return;
    };
    let rows: usize = std::env::var("BENCH_ROWS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(100_000);
    let rt = tokio::runtime::Runtime::new().expect("a runtime");
    let name = format!("arena_bench_{}", uuid::Uuid::new_v4().simple());
    psql(&admin, &format!("CREATE DATABASE \"{name}\""));
    let base = admin.rsplit_once('/').map(|(b, _)| b).unwrap_or(&admin);
    let db_url = format!("{base}/{name}");
    let outcome = std::panic::catch_unwind(|| rt.block_on(run(&db_url, rows)));
    psql(
        &admin,
        &format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"),
    );
    if let Err(p) = outcome {
        std::panic::resume_unwind(p);
    }
}

fn psql(url: &str, command: &str) -> Duration {
    let start = Instant::now();
    let out = Command::new("psql")
        .arg(url)
        .args(["-v", "ON_ERROR_STOP=1", "-q", "-c", command])
        .env("PGOPTIONS", "-c datestyle=ISO,DMY")
        .output()
        .expect("psql runs");
    let took = start.elapsed();
    assert!(
        out.status.success(),
        "psql {command}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    took
}

/// Stops Arena the way a deployment does (SIGTERM), so that it finishes what it does after
/// answering (the cache effects of the last import) instead of leaving write marks in
/// Redis; killed if it has not stopped within a minute.
fn stop(arena: &mut std::process::Child) {
    // SAFETY: sending a signal to a child process this bench spawned.
    unsafe { libc::kill(arena.id() as libc::pid_t, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = arena.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = arena.kill();
    let _ = arena.wait();
}

fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn trainers_csv() -> String {
    let mut csv = String::from("id,firstName,lastName,dateOfBirth\n");
    for t in 1..=TRAINERS {
        csv.push_str(&format!(
            "trainer{t},First{t},Last{t},{:02}-06-1990\n",
            t % 28 + 1
        ));
    }
    csv
}

fn pokemons_csv(rows: usize) -> String {
    let species = [
        "Pikachu",
        "Bulbasaur",
        "Charmander",
        "Squirtle",
        "Eevee",
        "Onix",
    ];
    let mut csv = String::from("id,nickname,species,level,owner,dateOfOwnership\n");
    for i in 0..rows {
        csv.push_str(&format!(
            "pokemon{i},Nick{i},{},{},trainer{},{:02}-{:02}-2020\n",
            species[i % species.len()],
            i % 100 + 1,
            i % TRAINERS + 1,
            i % 28 + 1,
            i % 12 + 1
        ));
    }
    csv
}

async fn gql(client: &reqwest::Client, url: &str, token: Option<&str>, query: &str) -> Value {
    let mut req = client
        .post(format!("{url}/graphql"))
        .json(&json!({ "query": query }));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let v: Value = req.send().await.unwrap().json().await.unwrap();
    assert!(v.get("errors").is_none(), "{v:#}");
    v
}

async fn import(
    client: &reqwest::Client,
    url: &str,
    token: &str,
    field: &str,
    csv: String,
) -> Value {
    let operations = json!({
        "query": format!("mutation($file: Upload!) {{ {field}(file: $file) {{ rows inserted updated errors {{ row column message }} }} }}"),
        "variables": { "file": null },
    });
    let form = reqwest::multipart::Form::new()
        .text("operations", operations.to_string())
        .text("map", json!({ "0": ["variables.file"] }).to_string())
        .part(
            "0",
            reqwest::multipart::Part::bytes(csv.into_bytes()).file_name("rows.csv"),
        );
    let v: Value = client
        .post(format!("{url}/graphql"))
        .bearer_auth(token)
        .multipart(form)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(v.get("errors").is_none(), "{v:#}");
    let report = v["data"][field].clone();
    assert_eq!(report["errors"], json!([]), "{report:#}");
    report
}

async fn run(db_url: &str, rows: usize) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_arena"));
    cmd.arg("serve")
        .env("ARENA_ADDR", format!("127.0.0.1:{port}"))
        .env("DATABASE_URL", db_url)
        .env(
            "ARENA_CACHE_PREFIX",
            format!("bench:{}:", uuid::Uuid::new_v4().simple()),
        )
        .env("ARENA_SYNC_ENABLED", "false")
        .env("ARENA_REQUEST_TIMEOUT_MS", "600000")
        .env("ARENA_PBKDF2_ITERATIONS", "1000")
        .env("ARENA_LOG", "warn")
        .env_remove("REDIS_URL")
        .env_remove("MONGODB_URL")
        .stdout(Stdio::null());
    let cache = match std::env::var("TEST_REDIS_URL") {
        Ok(redis) => {
            cmd.env("REDIS_URL", redis);
            "Redis"
        }
        Err(_) => "in-process",
    };
    let mut arena = cmd.spawn().expect("the arena binary starts");
    let pid = arena.id();
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while client.get(format!("{url}/healthz")).send().await.is_err() {
        assert!(Instant::now() < deadline, "arena did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    gql(
        &client,
        &url,
        None,
        "mutation { createUser(username: \"bench\", password: \"password123\") { id } }",
    )
    .await;
    let login = gql(
        &client,
        &url,
        None,
        "mutation { login(username: \"bench\", password: \"password123\") { token } }",
    )
    .await;
    let token = login["data"]["login"]["token"].as_str().unwrap().to_owned();
    import(&client, &url, &token, "importTrainers", trainers_csv()).await;
    let idle_kib = peak_rss_kib(pid);

    let csv = pokemons_csv(rows);
    let bytes = csv.len();
    let mut file = tempfile::NamedTempFile::new().unwrap();
    file.write_all(csv.as_bytes()).unwrap();
    file.flush().unwrap();

    let start = Instant::now();
    let report = import(&client, &url, &token, "importPokemons", csv.clone()).await;
    let arena_secs = start.elapsed().as_secs_f64();
    assert_eq!(report["inserted"].as_u64(), Some(rows as u64), "{report:#}");
    let start = Instant::now();
    let report = import(&client, &url, &token, "importPokemons", csv).await;
    let update_secs = start.elapsed().as_secs_f64();
    assert_eq!(report["updated"].as_u64(), Some(rows as u64), "{report:#}");
    let peak_kib = peak_rss_kib(pid);
    stop(&mut arena);

    psql(
        db_url,
        "CREATE TABLE pokemons_copy (id varchar(64) PRIMARY KEY, nickname varchar NOT NULL, \
         species varchar NOT NULL, level integer NOT NULL, owner varchar(64) NOT NULL, \
         date_of_ownership date NOT NULL)",
    );
    let copy_secs = psql(
        db_url,
        &format!(
            "\\copy pokemons_copy FROM '{}' WITH (FORMAT csv, HEADER true)",
            file.path().display()
        ),
    )
    .as_secs_f64();

    let arena_rate = rows as f64 / arena_secs;
    let update_rate = rows as f64 / update_secs;
    let copy_rate = rows as f64 / copy_secs;
    let mib = |kib: u64| kib as f64 / 1024.0;
    println!(
        "import bench: {rows} Pokémon rows ({:.1} MiB of CSV), PostgreSQL + {cache} cache",
        bytes as f64 / 1048576.0
    );
    println!("  arena importPokemons (insert): {arena_secs:>7.2} s  {arena_rate:>9.0} rows/s");
    println!("  arena importPokemons (update): {update_secs:>7.2} s  {update_rate:>9.0} rows/s");
    println!("  psql \\copy (scratch table)   : {copy_secs:>7.2} s  {copy_rate:>9.0} rows/s");
    println!(
        "  ratio arena/psql (insert)    : {:.3} ({:.1}x slower)",
        arena_rate / copy_rate,
        copy_rate / arena_rate
    );
    println!(
        "  arena peak RSS (VmHWM)       : {:.1} MiB (after start-up and the trainer import: {:.1} MiB)",
        mib(peak_kib),
        mib(idle_kib)
    );

    let mut section = report::Section::new(
        "import",
        "CSV import",
        "The release `arena` on a fresh PostgreSQL database, after 1 000 trainers were imported, \
         receives a Pokémon CSV on `importPokemons` twice: new rows, then the same ids again \
         (every row an update). `psql \\copy` loads the same file into a scratch table (primary \
         key only) of the same database. Peak RSS is the Arena process's VmHWM.",
    );
    section.setting(format!(
        "{rows} rows, {:.1} MiB of CSV",
        bytes as f64 / 1048576.0
    ));
    section.setting(format!("PostgreSQL + {cache} cache"));
    let row = |what: &str, secs: f64, rate: f64| {
        vec![
            what.to_owned(),
            format!("{secs:.2} s"),
            format!("{rate:.0}"),
            format!("{:.3}×", rate / copy_rate),
        ]
    };
    section.table(
        &["what", "time", "rows/s", "rate ÷ `\\copy`"],
        &[
            row("Arena `importPokemons`, new rows", arena_secs, arena_rate),
            row(
                "Arena `importPokemons`, the same rows again (updates)",
                update_secs,
                update_rate,
            ),
            row("`psql \\copy` into a scratch table", copy_secs, copy_rate),
        ],
    );
    section.table(
        &[
            "Arena peak RSS (VmHWM)",
            "after start-up and the trainer import",
        ],
        &[vec![
            format!("{:.1} MiB", mib(peak_kib)),
            format!("{:.1} MiB", mib(idle_kib)),
        ]],
    );
    section.write();
}
