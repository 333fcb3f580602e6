//! Fault injection: three Arena replicas (separate processes) on one PostgreSQL and one
//! private Redis, each behind a fault proxy; nine clients write unique prices and read them
//! back three ways while a seeded nemesis drops, black-holes and delays the replicas' links,
//! restarts and pauses Redis and kills replicas. The recorded history is checked by the
//! `history` crate (linearizability per key, snapshots for list reads).
//!
//! `cargo test --test faults -- --nocapture`; `FAULT_SEED=<n>` replays another schedule.
//! Needs `TEST_DATABASE_URL` (PostgreSQL) and `redis-server` on the PATH.

mod clients;
mod cluster;
mod harness;
mod nemesis;
mod proxy;
mod redis_cluster;
mod rng;

use std::io::Write as _;
use std::time::Duration;

use harness::Config;

/// The schedule CI replays unless `FAULT_SEED` names another.
const DEFAULT_SEED: u64 = 0x5EED_FA17;

/// Most a run may take, cluster start and check included.
const HARD_CAP: Duration = Duration::from_secs(120);

/// A line on the terminal even when libtest captures output.
fn say(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// The test's name (libtest names its thread after it).
fn test_name() -> String {
    std::thread::current().name().unwrap_or("faults").to_owned()
}

/// PostgreSQL's admin URL; `None` (the case skipped) without `TEST_DATABASE_URL`, except in
/// CI (`CI=true`), where that fails (tests/api/support/report.rs's convention).
fn database_url() -> Option<String> {
    match std::env::var("TEST_DATABASE_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            let why = "TEST_DATABASE_URL is not set (PostgreSQL is needed)";
            let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
            assert!(!ci, "{}: {why}; CI runs every suite", test_name());
            say(&format!("SKIPPED {}: {why}", test_name()));
            None
        }
    }
}

/// `FAULT_SEED` (decimal or 0x-hex), else [`DEFAULT_SEED`].
fn seed() -> u64 {
    let Ok(text) = std::env::var("FAULT_SEED") else {
        return DEFAULT_SEED;
    };
    let text = text.trim();
    let parsed = match text.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => text.parse(),
    };
    parsed.unwrap_or_else(|_| panic!("FAULT_SEED={text:?} is not a number"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_seeded_schedule_under_strict_has_no_violation() {
    let Some(admin) = database_url() else {
        return;
    };
    let seed = seed();
    let report = run_and_check(Config::ci(seed, admin)).await;
    let missing = report.kinds_missing();
    assert!(
        missing.is_empty(),
        "seed {seed}: no fault of kinds {missing:?}"
    );
    assert!(
        report.fault_counts().1 >= 1,
        "seed {seed}: no overlapping pair of faults"
    );
}

/// A Redis Cluster of three primaries and three replicas; each primary is killed once (one
/// of them while a replica is killed too). Reads and writes come back once a replica took
/// over, and nothing read across the failovers is stale.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_primary_of_a_redis_cluster_failing_over_leaves_no_stale_read() {
    let Some(admin) = database_url() else {
        return;
    };
    let seed = seed();
    let report = run_and_check(Config::failover(seed, admin)).await;
    assert_eq!(report.recoveries.len(), 3, "seed {seed}: three failovers");
    for (i, r) in report.recoveries.iter().enumerate() {
        assert!(
            r.first_write_ns.is_some() && r.first_read_ns.is_some(),
            "seed {seed}: after failover {i}, no successful write or read: {r:?}"
        );
    }
}

/// Runs `config`, prints what was injected and what the check found (a `FIGURE` line), and
/// fails on a violation, an undecided key or an incomplete list, saving the history.
async fn run_and_check(config: Config) -> harness::RunReport {
    let seed = config.seed;
    let report = tokio::time::timeout(HARD_CAP, harness::run(&config))
        .await
        .unwrap_or_else(|_| panic!("seed {seed}: the run took more than {HARD_CAP:?}"))
        .unwrap_or_else(|e| {
            panic!(
                "seed {seed}: the harness failed: {e} (logs in {})",
                config.log_dir.display()
            )
        });

    say(&format!(
        "faults injected (seed {seed}; t = 0 at {} UTC; logs in {}):",
        report.started_at.format("%Y-%m-%dT%H:%M:%S%.3f"),
        config.log_dir.display()
    ));
    for f in &report.faults {
        say(&format!("  {f}"));
    }
    for (error, n) in &report.errors {
        say(&format!("  {n} × {error}"));
    }
    say(&report.check.to_string());
    for line in report.violation_context() {
        say(&format!("  violation at {line}"));
    }
    say(&format!("FIGURE {}: {}", test_name(), report.figure()));

    if !report.ok() {
        let saved = report
            .save()
            .unwrap_or_else(|e| panic!("seed {seed}: saving the history failed: {e}"));
        panic!(
            "seed {seed}: {} violation(s), {} undecided key(s), {} incomplete list(s); history \
             saved to {} (see the report above; faults and replicas per op in the .meta.json \
             beside it)",
            report.check.violations.len(),
            report.check.keys_unknown.len(),
            report.incomplete_lists,
            saved.display()
        );
    }
    report
}
