//! One fault-injection run: the cluster, the clients, the nemesis, and the check of the
//! history ([`run`]), reusable for long schedules.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use history::{History, OpId, Outcome, Report};
use serde::Serialize;
use tokio::time::Instant;

use crate::clients::{self, Meal, OpClass, Recorder, Sample, Workload};
use crate::cluster::{Cluster, ClusterConfig};
use crate::nemesis::{self, Injected, Kind};

/// What a run does.
#[derive(Clone, Debug, Serialize)]
pub struct Config {
    pub seed: u64,
    /// PostgreSQL where the run creates (and drops) a database of its own.
    #[serde(skip)]
    pub admin_url: String,
    pub replicas: usize,
    pub clients: usize,
    pub meals: usize,
    /// Fault-free time before the first fault.
    pub warmup: Duration,
    /// Time the schedule of faults may take.
    pub faults_for: Duration,
    /// Fault-free time after the last heal.
    pub tail: Duration,
    /// `strict` or `available`.
    pub consistency: String,
    /// Near cache entries per replica (0: off).
    pub near_cache: usize,
    pub redis_timeout_ms: u64,
    /// Per-request client timeout; a write timed out is indeterminate.
    pub request_timeout: Duration,
    /// On a Redis Cluster with replicas, under [`nemesis::failover_plan`], instead of a
    /// single Redis under [`nemesis::plan`].
    pub redis_cluster: bool,
    /// Where the processes' logs go.
    pub log_dir: PathBuf,
}

impl Config {
    /// The CI run: 3 replicas, 9 clients, 4 meals, about 45 s of faults (some 50 s in all),
    /// `strict`.
    pub fn ci(seed: u64, admin_url: String) -> Config {
        Config {
            seed,
            admin_url,
            replicas: 3,
            clients: 9,
            meals: 4,
            warmup: Duration::from_secs(1),
            faults_for: Duration::from_secs(52),
            tail: Duration::from_secs(3),
            consistency: "strict".into(),
            near_cache: 10_000,
            redis_timeout_ms: 250,
            request_timeout: Duration::from_secs(2),
            redis_cluster: false,
            log_dir: target_dir().join("tmp").join(format!("faults-{seed}")),
        }
    }

    /// The failover run: as [`Config::ci`], on a Redis Cluster of three primaries and three
    /// replicas whose every primary fails over once.
    pub fn failover(seed: u64, admin_url: String) -> Config {
        Config {
            warmup: Duration::from_secs(2),
            redis_cluster: true,
            log_dir: target_dir()
                .join("tmp")
                .join(format!("faults-failover-{seed}")),
            ..Config::ci(seed, admin_url)
        }
    }
}

/// One failover as the clients saw it (ns since the run's start).
#[derive(Clone, Debug, Serialize)]
pub struct Recovery {
    /// The primary was killed.
    pub killed_ns: u64,
    /// Its replica had taken over (every surviving node agreed).
    pub promoted_ns: u64,
    /// From the promotion until every key had a successful write called after it (at
    /// least one of a write's keys is on the failed-over primary's slots, most often all).
    pub first_write_ns: Option<u64>,
    /// The same for reads by id or by name.
    pub first_read_ns: Option<u64>,
    /// Operations called from 5 s after the promotion until the next fault or the end that
    /// did not succeed.
    pub failed_later: usize,
}

/// The cargo target directory (`target/`).
pub fn target_dir() -> PathBuf {
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    tmp.parent().unwrap_or(tmp).to_path_buf()
}

/// What a run recorded and what the check found.
pub struct RunReport {
    pub config: Config,
    /// The wall clock at t = 0 of the history (the replicas log in UTC).
    pub started_at: chrono::DateTime<chrono::Utc>,
    /// From the first operation to the last return.
    pub elapsed: Duration,
    pub check: Report,
    pub check_time: Duration,
    pub history: History,
    pub samples: Vec<Sample>,
    pub faults: Vec<Injected>,
    /// Redis Cluster runs: each failover.
    pub recoveries: Vec<Recovery>,
    pub meals: Vec<Meal>,
    /// Successful list reads that did not return exactly the workload's meals.
    pub incomplete_lists: usize,
    /// Error answers and transport errors by message.
    pub errors: BTreeMap<String, usize>,
}

/// Starts a cluster, runs the workload under the nemesis, shuts everything down, and checks
/// the history.
pub async fn run(config: &Config) -> Result<RunReport, String> {
    let cluster = Cluster::start(&ClusterConfig {
        admin_url: config.admin_url.clone(),
        replicas: config.replicas,
        consistency: config.consistency.clone(),
        near_cache: config.near_cache,
        redis_timeout_ms: config.redis_timeout_ms,
        redis_cluster: config.redis_cluster,
        log_dir: config.log_dir.clone(),
    })
    .await?;
    let recorded = drive(&cluster, config).await;
    let promotions = cluster
        .redis_cluster
        .as_ref()
        .map(|c| c.promotions())
        .unwrap_or_default();
    let shut = cluster.shut_down().await;
    let (history, samples, faults, meals, incomplete_lists, errors, elapsed, start, started_at) =
        recorded?;
    shut?;
    let ns = |t: Instant| t.saturating_duration_since(start).as_nanos() as u64;
    let promotions: Vec<(u64, u64)> = promotions
        .iter()
        .map(|p| (ns(p.killed), ns(p.promoted)))
        .collect();
    let recoveries = recoveries(&history, &samples, &faults, &promotions);
    let checking = Instant::now();
    let (check, history) = tokio::task::spawn_blocking(move || (history::check(&history), history))
        .await
        .map_err(|e| format!("the check panicked: {e}"))?;
    Ok(RunReport {
        config: config.clone(),
        started_at,
        elapsed,
        check,
        check_time: checking.elapsed(),
        history,
        samples,
        faults,
        recoveries,
        meals,
        incomplete_lists,
        errors,
    })
}

/// (call, return) of a recorded operation.
fn times(history: &History, id: OpId) -> Option<(u64, Option<u64>)> {
    match id {
        OpId::Op(i) => history.ops.get(i).map(|o| (o.call, o.ret)),
        OpId::List(i) => history.lists.get(i).map(|l| (l.call, l.ret)),
    }
}

/// What the clients saw of each failover (`(killed, promoted)` in ns).
fn recoveries(
    history: &History,
    samples: &[Sample],
    faults: &[Injected],
    promotions: &[(u64, u64)],
) -> Vec<Recovery> {
    promotions
        .iter()
        .map(|&(killed_ns, promoted_ns)| {
            // Until every key had a successful operation of the kind called after it.
            let first = |write: bool| {
                let mut per_key: BTreeMap<&str, u64> = BTreeMap::new();
                for s in samples
                    .iter()
                    .filter(|s| (s.class == OpClass::Write) == write && s.outcome == Outcome::Ok)
                {
                    let OpId::Op(i) = s.op else { continue };
                    let Some(op) = history.ops.get(i) else {
                        continue;
                    };
                    let Some(ret) = op.ret.filter(|_| op.call >= promoted_ns) else {
                        continue;
                    };
                    let first = per_key.entry(op.key.as_str()).or_insert(ret);
                    *first = (*first).min(ret);
                }
                let keys = history.initial.len();
                (per_key.len() == keys)
                    .then(|| per_key.values().max().map(|ret| ret - promoted_ns))
                    .flatten()
            };
            let from = promoted_ns + 5_000_000_000;
            let to = faults
                .iter()
                .map(|f| f.start_ns)
                .filter(|&s| s > promoted_ns)
                .min()
                .unwrap_or(u64::MAX);
            let failed_later = samples
                .iter()
                .filter(|s| s.outcome != Outcome::Ok)
                .filter_map(|s| times(history, s.op))
                .filter(|(call, _)| (from..to).contains(call))
                .count();
            Recovery {
                killed_ns,
                promoted_ns,
                first_write_ns: first(true),
                first_read_ns: first(false),
                failed_later,
            }
        })
        .collect()
}

type Recorded = (
    History,
    Vec<Sample>,
    Vec<Injected>,
    Vec<Meal>,
    usize,
    BTreeMap<String, usize>,
    Duration,
    Instant,
    chrono::DateTime<chrono::Utc>,
);

/// Seeds the meals, then runs the clients through warm-up, the schedule and the tail.
async fn drive(cluster: &Cluster, config: &Config) -> Result<Recorded, String> {
    let (token, cuisine, meals) = clients::seed(&cluster.replicas[0].url, config.meals).await?;
    let rec = Arc::new(Recorder::new(&meals));
    let work = Arc::new(Workload {
        replicas: cluster.replicas.iter().map(|r| r.url.clone()).collect(),
        meals: meals.clone(),
        cuisine,
        token,
        clients: config.clients,
        request_timeout: config.request_timeout,
    });
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..config.clients)
        .map(|i| {
            tokio::spawn(clients::client(
                i,
                config.seed,
                work.clone(),
                rec.clone(),
                stop.clone(),
            ))
        })
        .collect();
    let plan = if config.redis_cluster {
        nemesis::failover_plan(config.seed, config.replicas)
    } else {
        nemesis::plan(config.seed, config.replicas, config.faults_for)
    };
    tokio::time::sleep(config.warmup).await;
    let until = Instant::now() + config.faults_for;
    let faults = nemesis::run(cluster, &plan, rec.start(), until).await;
    if faults.is_ok() {
        tokio::time::sleep(config.tail).await;
    }
    stop.store(true, Ordering::SeqCst);
    for w in workers {
        w.await.map_err(|e| format!("a client panicked: {e}"))?;
    }
    let elapsed = rec.start().elapsed();
    let faults = faults?;
    let (history, samples, incomplete, errors) = rec.finish();
    let started_at = rec.started_at();
    Ok((
        history,
        samples,
        faults,
        meals,
        incomplete,
        errors,
        elapsed,
        rec.start(),
        started_at,
    ))
}

/// Operations of one class by outcome.
#[derive(Clone, Copy, Default)]
struct Tally {
    ok: usize,
    failed: usize,
    indeterminate: usize,
}

impl Tally {
    fn total(self) -> usize {
        self.ok + self.failed + self.indeterminate
    }
}

impl RunReport {
    /// No violation, every key decided, every list complete.
    pub fn ok(&self) -> bool {
        self.check.is_ok() && self.incomplete_lists == 0
    }

    fn tally(&self, class: OpClass) -> Tally {
        let mut t = Tally::default();
        for s in self.samples.iter().filter(|s| s.class == class) {
            match s.outcome {
                Outcome::Ok => t.ok += 1,
                Outcome::Failed => t.failed += 1,
                Outcome::Indeterminate => t.indeterminate += 1,
            }
        }
        t
    }

    /// (successful reads, reads attempted), list reads included.
    pub fn read_availability(&self) -> (usize, usize) {
        let reads = self.samples.iter().filter(|s| s.class.is_read());
        let (mut ok, mut all) = (0, 0);
        for s in reads {
            all += 1;
            ok += usize::from(s.outcome == Outcome::Ok);
        }
        (ok, all)
    }

    /// The `q` quantile (0..=1) of successful read latency, list reads included.
    pub fn read_latency(&self, q: f64) -> Option<Duration> {
        let mut ns: Vec<u64> = self
            .samples
            .iter()
            .filter(|s| s.class.is_read() && s.outcome == Outcome::Ok)
            .filter_map(|s| s.latency_ns)
            .collect();
        if ns.is_empty() {
            return None;
        }
        ns.sort_unstable();
        let i = ((ns.len() - 1) as f64 * q).round() as usize;
        Some(Duration::from_nanos(ns[i]))
    }

    /// Faults injected: (alone, in overlapping pairs).
    pub fn fault_counts(&self) -> (usize, usize) {
        let pairs = self.faults.iter().filter(|f| f.overlapping).count();
        (self.faults.len() - pairs, pairs / 2)
    }

    /// Kinds of fault never injected.
    pub fn kinds_missing(&self) -> Vec<Kind> {
        Kind::ALL
            .into_iter()
            .filter(|k| !self.faults.iter().any(|f| f.fault.kind() == *k))
            .collect()
    }

    /// Per violation: its key or list, the time span of the operations it names, and the
    /// faults active from 3 s before that span to its end (a fault's effects can outlast
    /// its heal by a recovery).
    pub fn violation_context(&self) -> Vec<String> {
        let times = |id: OpId| times(&self.history, id);
        let replica = |id: OpId| self.samples.iter().find(|s| s.op == id).map(|s| s.replica);
        self.check
            .violations
            .iter()
            .map(|v| {
                let spans: Vec<(u64, Option<u64>)> =
                    v.ops.iter().filter_map(|o| times(o.id)).collect();
                let from = spans.iter().map(|s| s.0).min().unwrap_or(0);
                let to = spans.iter().map(|s| s.1.unwrap_or(s.0)).max().unwrap_or(0);
                let near: Vec<String> = self
                    .faults
                    .iter()
                    .filter(|f| f.end_ns + 3_000_000_000 >= from && f.start_ns <= to)
                    .map(ToString::to_string)
                    .collect();
                let served: Vec<String> = v
                    .ops
                    .iter()
                    .filter_map(|o| replica(o.id).map(|r| format!("{} on r{r}", o.id)))
                    .collect();
                let what = match (&v.key, v.list) {
                    (Some(k), _) => format!("key {k}"),
                    (None, Some(l)) => format!("list#{l}"),
                    (None, None) => "history".to_string(),
                };
                format!(
                    "{what}, ops {:.3}–{:.3} s ({}); faults around it: {}",
                    from as f64 / 1e9,
                    to as f64 / 1e9,
                    served.join(", "),
                    if near.is_empty() {
                        "none".to_string()
                    } else {
                        near.join("; ")
                    }
                )
            })
            .collect()
    }

    /// The one-line summary (after `FIGURE <test>: `).
    pub fn figure(&self) -> String {
        let c = &self.config;
        let mut s = format!(
            "seed {}, {}, {} replicas, {} clients, run {:.1} s (check {:.2} s); ops {}:",
            c.seed,
            c.consistency,
            c.replicas,
            c.clients,
            self.elapsed.as_secs_f64(),
            self.check_time.as_secs_f64(),
            self.samples.len()
        );
        for class in OpClass::ALL {
            let t = self.tally(class);
            let _ = write!(
                s,
                " {} {} (ok {}, failed {}, indeterminate {}),",
                class.name(),
                t.total(),
                t.ok,
                t.failed,
                t.indeterminate
            );
        }
        let (single, pairs) = self.fault_counts();
        let _ = write!(
            s,
            " faults {} ({single} single, {pairs} overlapping pairs:",
            self.faults.len()
        );
        let kinds = Kind::ALL
            .into_iter()
            .chain(self.config.redis_cluster.then_some(Kind::FailOver));
        for kind in kinds {
            let n = self
                .faults
                .iter()
                .filter(|f| f.fault.kind() == kind)
                .count();
            let _ = write!(s, " {} {n},", kind.name());
        }
        s.pop();
        let (ok, all) = self.read_availability();
        let pct = if all == 0 {
            0.0
        } else {
            100.0 * ok as f64 / all as f64
        };
        let ms = |d: Option<Duration>| d.map_or(f64::NAN, |d| d.as_secs_f64() * 1e3);
        let _ = write!(
            s,
            "); violations {} (unknown keys {}, incomplete lists {}); read availability {pct:.2}% ({ok} of {all}); read latency p50 {:.2} ms, p99 {:.2} ms",
            self.check.violations.len(),
            self.check.keys_unknown.len(),
            self.incomplete_lists,
            ms(self.read_latency(0.5)),
            ms(self.read_latency(0.99)),
        );
        for (i, r) in self.recoveries.iter().enumerate() {
            let after = |ns: Option<u64>| {
                ns.map_or("never".into(), |n| format!("{:.0} ms", n as f64 / 1e6))
            };
            let _ = write!(
                s,
                "; failover {i}: promoted {:.2} s after the kill, writes to every meal back {} and reads {} after the promotion, {} failed from 5 s after it",
                (r.promoted_ns - r.killed_ns) as f64 / 1e9,
                after(r.first_write_ns),
                after(r.first_read_ns),
                r.failed_later
            );
        }
        s
    }

    /// Saves the history as `target/faults-<seed>.json` (for `History::load`), and beside it
    /// `target/faults-<seed>.meta.json`: faults, meals, which replica served each op, the check.
    pub fn save(&self) -> Result<PathBuf, String> {
        let dir = target_dir();
        let path = dir.join(format!("faults-{}.json", self.config.seed));
        self.history
            .save(&path)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        #[derive(Serialize)]
        struct Meta<'a> {
            config: &'a Config,
            started_at: String,
            meals: &'a [Meal],
            faults: &'a [Injected],
            samples: &'a [Sample],
            incomplete_lists: usize,
            errors: &'a BTreeMap<String, usize>,
            check: &'a Report,
        }
        let meta = Meta {
            config: &self.config,
            started_at: self.started_at.to_rfc3339(),
            meals: &self.meals,
            faults: &self.faults,
            samples: &self.samples,
            incomplete_lists: self.incomplete_lists,
            errors: &self.errors,
            check: &self.check,
        };
        let meta_path = dir.join(format!("faults-{}.meta.json", self.config.seed));
        let text = serde_json::to_string(&meta).map_err(|e| e.to_string())?;
        std::fs::write(&meta_path, text).map_err(|e| format!("{}: {e}", meta_path.display()))?;
        Ok(path)
    }
}
