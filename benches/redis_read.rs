//! `cargo bench --bench redis_read` (needs `TEST_REDIS_URL`): what a cache hit costs on Redis
//! by each of the two ways to read it, in one run:
//!
//! - **script**: `leased_get_many`, the Lua script every loader read runs (it returns the
//!   entry, or on a miss takes the lease in the same round trip);
//! - **plain**: `entry_versions`, a plain `MGET` of the entry and its write mark (what a hit
//!   needs; a lease would then be taken by a second command only on a miss).
//!
//! Both read the same warm entry from `BENCH_TASKS` (default 32) concurrent tasks, for
//! `BENCH_OPS` (default 200 000) reads each. Printed per path: reads/s, this process's CPU
//! per read (the client side: fred's encoding, decoding and wake-ups) and Redis's CPU per
//! read (`INFO cpu` before and after), then plain ÷ script. Arena reads hits with the plain
//! `MGET` and sends only the keys that missed on to the script; this measures what that saves.
//!
//! The table goes into the `redis_read` section of `docs/benchmarks.md`, with the date, commit
//! and machine (`benches/report/`); `BENCH_NO_WRITE=1` only prints it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arena::backends::cache::redis::RedisCache;
use arena::backends::cache::{Versioned, VersionedCache};

mod report;

/// CPU seconds (user + system) of this process.
fn own_cpu() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    let fields: Vec<&str> = stat[stat.rfind(')').expect("a comm field") + 2..]
        .split_whitespace()
        .collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks / 100.0
}

/// CPU seconds Redis has used (`used_cpu_sys` + `used_cpu_user` of `INFO cpu`).
fn redis_cpu(url: &str) -> f64 {
    let out = std::process::Command::new("redis-cli")
        .args(["-u", url, "info", "cpu"])
        .output()
        .expect("redis-cli on PATH");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k == "used_cpu_sys" || k == "used_cpu_user").then(|| v.trim().parse::<f64>().ok())?
        })
        .sum()
}

struct Run {
    rps: f64,
    client_us: f64,
    redis_us: f64,
}

async fn run(
    url: &str,
    cache: Arc<RedisCache>,
    key: &str,
    script: bool,
    tasks: usize,
    ops: usize,
) -> Run {
    let next = Arc::new(AtomicUsize::new(0));
    let (cpu0, redis0, start) = (own_cpu(), redis_cpu(url), Instant::now());
    let handles: Vec<_> = (0..tasks)
        .map(|_| {
            let (cache, next, key) = (cache.clone(), next.clone(), vec![key.to_owned()]);
            tokio::spawn(async move {
                while next.fetch_add(1, Ordering::Relaxed) < ops {
                    let hit = if script {
                        cache
                            .leased_get_many(&key, "bench-lease", Duration::from_secs(5))
                            .await
                            .expect("a read")[0]
                            .is_some()
                    } else {
                        cache.entry_versions(&key).await.expect("a read")[0].is_some()
                    };
                    assert!(hit, "the entry is warm");
                }
            })
        })
        .collect();
    for h in handles {
        h.await.unwrap();
    }
    let secs = start.elapsed().as_secs_f64();
    let (cpu, redis) = (own_cpu() - cpu0, redis_cpu(url) - redis0);
    Run {
        rps: ops as f64 / secs,
        client_us: cpu * 1e6 / ops as f64,
        redis_us: redis * 1e6 / ops as f64,
    }
}

fn main() {
    let Ok(url) = std::env::var("TEST_REDIS_URL") else {
        println!("redis_read: TEST_REDIS_URL is not set; nothing to measure");
        return;
    };
    let env = |k: &str, d: usize| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    let (tasks, ops) = (env("BENCH_TASKS", 32), env("BENCH_OPS", 200_000));
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let prefix = format!("bench:{}:", uuid::Uuid::new_v4().simple());
        let cache = Arc::new(
            RedisCache::connect(&url, &prefix, Duration::from_millis(500))
                .await
                .expect("connect to TEST_REDIS_URL"),
        );
        let key = "meal:1".to_owned();
        let entry = Versioned {
            version: 3,
            payload: r#"{"id":1,"name":"Bench Pad Thai","cuisine":"Thai","price":11.0}"#.into(),
        };
        assert!(cache
            .leased_get_many(std::slice::from_ref(&key), "fill", Duration::from_secs(5))
            .await
            .unwrap()[0]
            .is_none());
        assert_eq!(
            cache
                .leased_fill_many(&[(key.clone(), entry)], "fill", Duration::from_secs(600))
                .await
                .unwrap(),
            vec![true]
        );
        // Warm both paths (connections, script cache), then measure each once.
        run(&url, cache.clone(), &key, true, tasks, 10_000).await;
        run(&url, cache.clone(), &key, false, tasks, 10_000).await;
        let script = run(&url, cache.clone(), &key, true, tasks, ops).await;
        let plain = run(&url, cache.clone(), &key, false, tasks, ops).await;
        let mut section = report::Section::new(
            "redis_read",
            "A cache hit on Redis",
            "The same warm entry read from concurrent tasks of one process by the two paths: \
             the Lua script `leased_get_many` (which, on a miss, also takes the lease in the \
             same round trip) and a plain `MGET` of the entry and its write mark. Client CPU is \
             this process's (fred's encoding, decoding and wake-ups), Redis CPU is from \
             `INFO cpu` before and after.",
        );
        section.setting(format!(
            "BENCH_TASKS={tasks}, BENCH_OPS={ops} warm hits per path"
        ));
        let mut rows: Vec<Vec<String>> = [
            ("Lua script (`leased_get_many`)", &script),
            ("plain `MGET` (entry + mark)", &plain),
        ]
        .iter()
        .map(|(name, r)| {
            vec![
                name.to_string(),
                format!("{:.0}", r.rps),
                format!("{:.2}", r.client_us),
                format!("{:.2}", r.redis_us),
            ]
        })
        .collect();
        rows.push(vec![
            "plain ÷ script".to_owned(),
            format!("{:.2}×", plain.rps / script.rps),
            format!("{:.2}×", plain.client_us / script.client_us),
            format!("{:.2}×", plain.redis_us / script.redis_us),
        ]);
        section.table(
            &["path", "reads/s", "client CPU µs/read", "Redis CPU µs/read"],
            &rows,
        );
        section.write();
        let _ = VersionedCache::invalidate(cache.as_ref(), std::slice::from_ref(&key)).await;
    });
}
