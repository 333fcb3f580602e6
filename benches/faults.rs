//! `cargo bench --bench faults`: the fault-injection suite of `tests/faults` as a long run of
//! many seeded schedules, under `strict` and optionally `available`, with the figures pooled.
//!
//! Each schedule is one `harness::run` of the suite (its modules are included below with
//! `#[path]`, unchanged): a private `redis-server`, a scratch PostgreSQL database, 3 release
//! `arena` replicas each reaching Redis through its own fault proxy, 9 clients writing unique
//! prices to 4 meals and reading them back by id, by name and as a list, while the seeded
//! nemesis drops, black-holes and delays the replicas' links, restarts Redis empty, pauses it
//! and kills replicas, alone and in overlapping pairs. The history is checked by the `history`
//! crate (linearizability per key, a snapshot check for list reads). A schedule is the CI one
//! (`Config::ci`) with its seed, its policy and the length of its fault phase changed.
//!
//! Reported, per policy, pooled over the schedules: operations by kind and outcome; faults
//! injected by kind, alone and in overlapping pairs; violations, undecided keys and incomplete
//! lists (`strict` must have none: the bench exits 1 after writing its report otherwise, and
//! saves the failing history as `target/faults-<seed>.json` beside its `.meta.json`); read
//! availability (successful reads of all reads attempted, list reads included); p50/p99 of
//! successful reads; the run time of each schedule.
//!
//! Staleness (for violations, which `available` is expected to have), measured two ways.
//! *Named*: the checker's `Violation` names the operations that show it. For a stale read
//! (per key, a list item counting as a read of its key) and for a list that returned a value
//! overwritten before it began, the bench takes the read and the *missed* write among them
//! (the write of the key whose value the read did not return) and measures
//! `staleness = read.call − effect(missed)`, where `effect(w) = max(w.call, min(w.ret,
//! earliest return of a successful read of w's value))`: the checker's own bound on when a
//! write had certainly taken effect, recomputed from the history (for an acknowledged write
//! that no read saw earlier, its acknowledgement). For a list that is not a snapshot, the
//! earliest instant it can have been taken is the latest call of the writes of the values it
//! returned, and staleness is that instant − the earliest effect of a missed write. A
//! violation the checker does not tie to one missed write (`not linearizable` from the
//! search, a value nobody wrote …) is counted as not measured. The checker names at most 10
//! violations per key and only counts the rest, so under `available` most stale reads are
//! not named; hence *scan*: every successful read (list items included) is held against the
//! checker's value spans recomputed from the history (the value of write `w` is current
//! until the earliest effect of a write of the key called after `effect(w)`; a read that
//! began after that missed that write), which finds the same stale reads as the checker,
//! hidden ones included (the bench prints both counts), and gives the whole distribution.
//! Each is compared with the bound stated in docs/cache-consistency.md, "the partition's
//! length plus at most 3 s": the partition is every fault interval (injection to end of
//! heal, any kind, any target) that overlaps `[missed.call, effect(missed)]`, together with
//! the faults chained to it by overlap; its length is the length of that union, 0 (a bound
//! of 3 s) when no fault overlapped the missed write.
//!
//! Environment:
//! - `TEST_DATABASE_URL`: PostgreSQL whose user may create databases (skipped without it);
//!   `redis-server` on the PATH;
//! - `FAULT_SCHEDULES` (default 10): schedules per policy;
//! - `FAULT_SEED_BASE` (default 1): the seeds are `FAULT_SEED_BASE ..` (decimal or 0x-hex);
//! - `FAULT_SECS` (default: the CI run's, 52): the fault phase of each schedule, in seconds
//!   (the run adds 1 s of warm-up and 3 s of tail; the schedule's mandatory episodes, every
//!   kind alone and two pairs, run even when they exceed it);
//! - `FAULT_POLICIES` (default `strict`): a comma-separated list of `strict`, `available` and
//!   `failover` (`strict` on a private Redis Cluster of three primaries and three replicas,
//!   `ARENA_REDIS_REPLICAS=1`, whose every primary is killed once and fails over, one of
//!   them while a replica is killed: `FAULT_SECS` does not apply);
//! - `BENCH_NO_WRITE=1`: print only, leaving `docs/benchmarks.md` alone.
//!
//! The tables go into the `faults` section of `docs/benchmarks.md`, with the date, commit and
//! machine (`benches/report/`). The processes' logs are in
//! `target/tmp/faults-bench-<policy>-<seed>/`.

// The suite's modules, under the names their `crate::` paths use. The bench does not use all
// of what the test does (nor what may be added there for the test alone).
#[path = "../tests/faults/clients.rs"]
#[allow(dead_code)]
mod clients;
#[path = "../tests/faults/cluster.rs"]
#[allow(dead_code)]
mod cluster;
#[path = "../tests/faults/harness.rs"]
#[allow(dead_code)]
mod harness;
#[path = "../tests/faults/nemesis.rs"]
#[allow(dead_code)]
mod nemesis;
#[path = "../tests/faults/proxy.rs"]
#[allow(dead_code)]
mod proxy;
#[path = "../tests/faults/redis_cluster.rs"]
#[allow(dead_code)]
mod redis_cluster;
#[path = "../tests/faults/rng.rs"]
#[allow(dead_code)]
mod rng;

mod report;

use std::collections::{BTreeMap, HashMap};
use std::process::Command;
use std::time::{Duration, Instant};

use history::{History, OpId, OpKind, Outcome, Violation};

use clients::OpClass;
use harness::{Config, RunReport};
use nemesis::Kind;

/// The stated bound's slack after a partition heals (docs/cache-consistency.md).
const BOUND_SLACK_NS: u64 = 3_000_000_000;

/// Violations listed one by one in the section, stalest first.
const WORST: usize = 10;

/// Time a schedule may take beyond its warm-up, faults and tail: cluster start, replica
/// restarts, shut-down and the check.
const OVERHEAD_CAP: Duration = Duration::from_secs(180);

/// What the environment asks for.
struct Settings {
    admin: String,
    schedules: u64,
    seed_base: u64,
    faults_for: Duration,
    /// Whether `FAULT_SECS` was set (recorded in the section when it was).
    secs_set: bool,
    policies: Vec<String>,
}

fn env_u64(name: &str) -> Option<u64> {
    let text = std::env::var(name).ok()?;
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    let parsed = match text.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => text.parse(),
    };
    Some(parsed.unwrap_or_else(|_| panic!("{name}={text:?} is not a number")))
}

impl Settings {
    /// `None` (after saying why) when the bench cannot run here.
    fn from_env() -> Option<Settings> {
        let admin = match std::env::var("TEST_DATABASE_URL") {
            Ok(url) if !url.is_empty() => url,
            _ => {
                eprintln!("faults: SKIPPED: TEST_DATABASE_URL is not set (PostgreSQL is needed)");
                return None;
            }
        };
        let redis = Command::new("redis-server")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        if !redis {
            eprintln!("faults: SKIPPED: `redis-server --version` failed (redis-server is needed)");
            return None;
        }
        let schedules = env_u64("FAULT_SCHEDULES").unwrap_or(10);
        assert!(schedules > 0, "FAULT_SCHEDULES must be at least 1");
        let seed_base = env_u64("FAULT_SEED_BASE").unwrap_or(1);
        let secs = env_u64("FAULT_SECS");
        let faults_for = secs.map_or_else(
            || Config::ci(0, String::new()).faults_for,
            Duration::from_secs,
        );
        let policies: Vec<String> = std::env::var("FAULT_POLICIES")
            .unwrap_or_else(|_| "strict".into())
            .split(',')
            .map(|p| p.trim().to_owned())
            .filter(|p| !p.is_empty())
            .collect();
        for p in &policies {
            assert!(
                ["strict", "available", "failover"].contains(&p.as_str()),
                "FAULT_POLICIES: {p:?} is not `strict`, `available` or `failover`"
            );
        }
        assert!(!policies.is_empty(), "FAULT_POLICIES names no policy");
        Some(Settings {
            admin,
            schedules,
            seed_base,
            faults_for,
            secs_set: secs.is_some(),
            policies,
        })
    }

    fn seeds(&self) -> std::ops::Range<u64> {
        self.seed_base..self.seed_base + self.schedules
    }
}

/// A read that missed a write: a violation the checker named, or one found by the scan of
/// every read.
struct Stale {
    seed: u64,
    /// What kind of violation it was.
    class: Class,
    /// Earliest instant the read can have taken effect − the missed write's effect bound.
    staleness_ns: u64,
    /// The missed write was acknowledged (rather than indeterminate, known to have taken
    /// effect because a read returned its value).
    acknowledged: bool,
    /// Length of the faults overlapping the missed write (their union, chained by overlap);
    /// 0 when no fault overlapped it.
    partition_ns: u64,
    /// The read's earliest instant − the end of that partition's last heal (negative: the
    /// read began before the heal ended); `None` when no fault overlapped the missed write.
    after_heal_ns: Option<i64>,
    /// When no fault overlapped the missed write: its call − the end of the last heal before
    /// it (`None`: no fault had ended yet).
    since_heal_ns: Option<u64>,
    /// Replicas that served the read and the missed write.
    read_on: Option<usize>,
    write_on: Option<usize>,
    /// The checker's one-line reason (empty for the scan).
    reason: String,
}

impl Stale {
    fn within_bound(&self) -> bool {
        self.staleness_ns <= self.partition_ns + BOUND_SLACK_NS
    }
}

/// The kinds of violation the bench tells apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Class {
    /// A read (or a list item) of a value overwritten before it began.
    StaleRead,
    /// A list that returned a value overwritten before it began.
    StaleList,
    /// A list whose values were never current together.
    NotSnapshot,
    /// `not linearizable` from the search: no single missed write.
    NotLinearizable,
    /// A value nobody wrote, a read before its write, a malformed history …
    Other,
}

impl Class {
    fn name(self) -> &'static str {
        match self {
            Class::StaleRead => "stale read",
            Class::StaleList => "stale list",
            Class::NotSnapshot => "list not a snapshot",
            Class::NotLinearizable => "not linearizable (search)",
            Class::Other => "other",
        }
    }

    fn of(v: &Violation) -> Class {
        let r = v.reason.as_str();
        if v.key.is_some() && r.starts_with("stale read of") {
            Class::StaleRead
        } else if v.list.is_some() && r.contains("before the list began") {
            Class::StaleList
        } else if v.list.is_some() && r.starts_with("not a snapshot") {
            Class::NotSnapshot
        } else if r.starts_with("not linearizable") {
            Class::NotLinearizable
        } else {
            Class::Other
        }
    }
}

/// The violations of one schedule, measured where the checker ties them to a missed write,
/// and the scan of every read.
#[derive(Default)]
struct Violations {
    measured: Vec<Stale>,
    /// Violations not tied to one missed write, by class.
    unmeasured: BTreeMap<Class, usize>,
    /// Violations the checker only counted (beyond 10 per key).
    hidden: usize,
    /// Per-key `stale read` violations the checker found, named or hidden by its cap
    /// (`None` when a hidden one may be of another kind).
    stale_reads_found: Option<usize>,
    /// Every successful read (list items included) of a value already overwritten when it
    /// began, by the checker's spans recomputed from the history.
    scanned: Vec<Stale>,
}

/// What the measurements of one run share.
struct Ctx<'a> {
    r: &'a RunReport,
    /// `effect(w)` of every write that was not refused, by op index.
    eff: HashMap<usize, u64>,
    /// The replica that served each operation.
    replica: HashMap<OpId, usize>,
    /// The fault intervals, merged where they overlap, in order.
    merged: Vec<(u64, u64)>,
}

impl<'a> Ctx<'a> {
    fn new(r: &'a RunReport) -> Ctx<'a> {
        let mut spans: Vec<(u64, u64)> = r.faults.iter().map(|f| (f.start_ns, f.end_ns)).collect();
        spans.sort_unstable();
        let mut merged: Vec<(u64, u64)> = Vec::new();
        for (s, e) in spans {
            match merged.last_mut() {
                Some(last) if s <= last.1 => last.1 = last.1.max(e),
                _ => merged.push((s, e)),
            }
        }
        Ctx {
            r,
            eff: effects(&r.history),
            replica: r.samples.iter().map(|s| (s.op, s.replica)).collect(),
            merged,
        }
    }

    /// The read `reader`, whose earliest instant is `at`, missed the write `missed`.
    fn stale(&self, class: Class, reader: OpId, missed: usize, at: u64, reason: &str) -> Stale {
        let write = &self.r.history.ops[missed];
        let effect = self.eff[&missed];
        // The merged fault intervals overlapping [missed.call, effect].
        let hit: Vec<&(u64, u64)> = self
            .merged
            .iter()
            .filter(|(s, e)| *s <= effect && *e >= write.call)
            .collect();
        let end = hit.iter().map(|(_, e)| *e).max();
        let since_heal_ns = match end {
            Some(_) => None,
            None => self
                .merged
                .iter()
                .map(|(_, e)| *e)
                .filter(|e| *e <= write.call)
                .max()
                .map(|e| write.call - e),
        };
        Stale {
            seed: self.r.config.seed,
            class,
            staleness_ns: at - effect,
            acknowledged: write.outcome() == Outcome::Ok,
            partition_ns: hit.iter().map(|(s, e)| e - s).sum(),
            after_heal_ns: end.map(|end| at as i64 - end as i64),
            since_heal_ns,
            read_on: self.replica.get(&reader).copied(),
            write_on: self.replica.get(&OpId::Op(missed)).copied(),
            reason: reason.to_owned(),
        }
    }
}

/// `effect(w)` of every write of the history that was not refused (by op index): see the
/// module documentation.
fn effects(h: &History) -> HashMap<usize, u64> {
    // Earliest return of a successful read of each (key, value), list items included.
    let mut seen: HashMap<(&str, i64), u64> = HashMap::new();
    for (key, value, _, ret, _) in reads(h) {
        let Some(value) = value else { continue };
        let e = seen.entry((key, value)).or_insert(u64::MAX);
        *e = (*e).min(ret);
    }
    h.ops
        .iter()
        .enumerate()
        .filter_map(|(i, op)| {
            let OpKind::Write { value, .. } = op.kind else {
                return None;
            };
            let ret = match op.outcome() {
                Outcome::Failed => return None,
                _ => op.ret.unwrap_or(u64::MAX),
            };
            let read = seen
                .get(&(op.key.as_str(), value))
                .copied()
                .unwrap_or(u64::MAX);
            Some((i, ret.min(read).max(op.call)))
        })
        .collect()
}

/// Every successful read as the checker sees it: (key, value, call, ret, id), a list read
/// giving one per item.
fn reads(h: &History) -> impl Iterator<Item = (&str, Option<i64>, u64, u64, OpId)> {
    let ops =
        h.ops
            .iter()
            .enumerate()
            .filter_map(|(i, op)| match (op.kind, op.outcome(), op.ret) {
                (OpKind::Read { value, .. }, Outcome::Ok, Some(ret)) if ret >= op.call => {
                    Some((op.key.as_str(), value, op.call, ret, OpId::Op(i)))
                }
                _ => None,
            });
    let lists = h
        .lists
        .iter()
        .enumerate()
        .filter(|(_, l)| l.outcome() == Outcome::Ok)
        .filter_map(|(i, l)| l.ret.filter(|&ret| ret >= l.call).map(|ret| (i, l, ret)))
        .flat_map(|(i, l, ret)| {
            l.items
                .iter()
                .map(move |(k, v)| (k.as_str(), Some(*v), l.call, ret, OpId::List(i)))
        });
    ops.chain(lists)
}

/// Measures the violations of one run, and scans every read (see the module documentation).
fn measure(r: &RunReport) -> Violations {
    let ctx = Ctx::new(r);
    let h = &r.history;
    // The value the read `id` returned for `key`.
    let read_value = |id: OpId, key: &str| -> Option<i64> {
        match id {
            OpId::Op(i) => match h.ops.get(i)?.kind {
                OpKind::Read { value, .. } => value,
                OpKind::Write { .. } => None,
            },
            OpId::List(i) => h
                .lists
                .get(i)?
                .items
                .iter()
                .find(|(k, _)| k == key)?
                .1
                .into(),
        }
    };
    let call_of = |id: OpId| match id {
        OpId::Op(i) => h.ops.get(i).map(|o| o.call),
        OpId::List(i) => h.lists.get(i).map(|l| l.call),
    };
    // The writes named by `v` besides its read: those of a value the read returned, and the
    // others (missed) with their effect bound.
    let writes = |v: &Violation, reader: OpId| {
        let (mut returned, mut missed) = (Vec::new(), Vec::new());
        for inv in &v.ops[1..] {
            let OpId::Op(i) = inv.id else { continue };
            let Some(op) = h.ops.get(i) else { continue };
            let OpKind::Write { value, .. } = op.kind else {
                continue;
            };
            if v.key.as_ref().is_some_and(|k| *k != op.key) {
                continue;
            }
            if read_value(reader, &op.key) == Some(value) {
                returned.push(i);
            } else if let Some(&e) = ctx.eff.get(&i) {
                missed.push((i, e));
            }
        }
        (returned, missed)
    };
    let mut out = Violations::default();
    let mut stale_reads = 0;
    let mut hidden_exact = true;
    for v in &r.check.violations {
        if v.ops.is_empty() {
            if let Some(n) = v
                .reason
                .strip_prefix("and ")
                .and_then(|s| s.split_whitespace().next())
                .and_then(|n| n.parse::<usize>().ok())
            {
                out.hidden += n;
                // Hidden violations of a key whose named ones are all stale reads are
                // stale reads too (the search runs only when the pre-checks found none).
                let key = v.key.as_deref();
                let named_stale = r
                    .check
                    .violations
                    .iter()
                    .filter(|w| w.key.as_deref() == key && !w.ops.is_empty())
                    .all(|w| Class::of(w) == Class::StaleRead);
                if named_stale {
                    stale_reads += n;
                } else {
                    hidden_exact = false;
                }
                continue;
            }
        }
        let class = Class::of(v);
        stale_reads += usize::from(class == Class::StaleRead);
        let reader = v.ops.first().map(|o| o.id);
        let measured = match (class, reader) {
            (Class::StaleRead | Class::StaleList, Some(reader)) => {
                let (_, missed) = writes(v, reader);
                let first = missed.iter().min_by_key(|m| m.1).copied();
                first.zip(call_of(reader)).map(|(m, at)| (reader, m, at))
            }
            (Class::NotSnapshot, Some(reader)) => {
                let (returned, missed) = writes(v, reader);
                let latest = returned
                    .iter()
                    .filter_map(|&i| h.ops.get(i))
                    .map(|o| o.call)
                    .max();
                let first = missed.iter().min_by_key(|m| m.1).copied();
                first.zip(latest).map(|(m, at)| (reader, m, at))
            }
            _ => None,
        };
        match measured.filter(|(_, (_, e), at)| at >= e) {
            Some((reader, (missed, _), at)) => {
                out.measured
                    .push(ctx.stale(class, reader, missed, at, &v.reason));
            }
            None => *out.unmeasured.entry(class).or_default() += 1,
        }
    }
    out.stale_reads_found = hidden_exact.then_some(stale_reads);
    out.scanned = scan(&ctx);
    out
}

/// Every successful read (list items included) that began after its value was overwritten:
/// the checker's spans, recomputed. Per key, the value of write `w` (the initial value: of
/// no write, from 0) is current until `end = min effect(w')` over the writes `w'` of the key
/// called after `effect(w)` (every write, for the initial value); a read of it is stale when
/// it began after `end`, the write setting `end` being the one it missed.
fn scan(ctx: &Ctx) -> Vec<Stale> {
    let h = &ctx.r.history;
    // Per key: its writes (index, call, effect) by call, the suffix minimum of effects, and
    // the write of each value.
    struct Key {
        writes: Vec<(usize, u64, u64)>,
        /// `suffix[j]`: the write of `writes[j..]` with the earliest effect.
        suffix: Vec<Option<usize>>,
        by_value: HashMap<i64, usize>,
    }
    let mut keys: HashMap<&str, Key> = HashMap::new();
    for (i, op) in h.ops.iter().enumerate() {
        let (OpKind::Write { value, .. }, Some(&e)) = (op.kind, ctx.eff.get(&i)) else {
            continue;
        };
        let k = keys.entry(op.key.as_str()).or_insert_with(|| Key {
            writes: Vec::new(),
            suffix: Vec::new(),
            by_value: HashMap::new(),
        });
        k.writes.push((i, op.call, e));
        k.by_value.insert(value, i);
    }
    for k in keys.values_mut() {
        k.writes.sort_unstable_by_key(|w| w.1);
        k.suffix = vec![None; k.writes.len() + 1];
        for j in (0..k.writes.len()).rev() {
            k.suffix[j] = match k.suffix[j + 1] {
                Some(b) if k.writes[b].2 <= k.writes[j].2 => Some(b),
                _ => Some(j),
            };
        }
    }
    let mut out = Vec::new();
    for (key, value, call, ret, id) in reads(h) {
        let Some(k) = keys.get(key) else { continue };
        let initial = h.initial.get(key).copied().flatten();
        // (start, effect) of the write of the value read; the initial value from 0.
        let (start, from) = match value.and_then(|v| k.by_value.get(&v)) {
            Some(&w) => (h.ops[w].call, ctx.eff[&w]),
            None if value == initial => (0, 0),
            // A value no write wrote: another kind of violation.
            None => continue,
        };
        if ret < start {
            continue;
        }
        let after = k.writes.partition_point(|w| w.1 <= from);
        let Some(ender) = k.suffix[after] else {
            continue;
        };
        let (missed, _, end) = k.writes[ender];
        if call > end {
            let class = match id {
                OpId::Op(_) => Class::StaleRead,
                OpId::List(_) => Class::StaleList,
            };
            out.push(ctx.stale(class, id, missed, call, ""));
        }
    }
    out
}

/// What one schedule gave.
struct Schedule {
    policy: String,
    seed: u64,
    /// Cluster start to the end of the check.
    wall: Duration,
    result: Result<Summary, String>,
}

struct Summary {
    /// From the first operation to the last return.
    elapsed: Duration,
    check_time: Duration,
    /// Per kind: (ok, failed, indeterminate).
    ops: BTreeMap<OpClass, [usize; 3]>,
    /// Per kind of fault: (alone, in an overlapping pair).
    faults: BTreeMap<Kind, (usize, usize)>,
    single: usize,
    pairs: usize,
    kinds_missing: Vec<Kind>,
    /// `RunReport::ok`: no violation, every key decided, every list complete.
    passed: bool,
    violations: usize,
    keys_unknown: usize,
    incomplete_lists: usize,
    measured: Violations,
    reads_ok: usize,
    reads_all: usize,
    /// Latencies of successful reads (list reads included), ns.
    read_ns: Vec<u64>,
    errors: BTreeMap<String, usize>,
}

impl Summary {
    /// No violation, every key decided, every list complete.
    fn ok(&self) -> bool {
        self.passed
    }

    fn of(r: &RunReport) -> Summary {
        let mut ops: BTreeMap<OpClass, [usize; 3]> = BTreeMap::new();
        let mut read_ns = Vec::new();
        for s in &r.samples {
            let slot = match s.outcome {
                Outcome::Ok => 0,
                Outcome::Failed => 1,
                Outcome::Indeterminate => 2,
            };
            ops.entry(s.class).or_default()[slot] += 1;
            if s.class.is_read() && s.outcome == Outcome::Ok {
                read_ns.extend(s.latency_ns);
            }
        }
        let mut faults: BTreeMap<Kind, (usize, usize)> = BTreeMap::new();
        for f in &r.faults {
            let e = faults.entry(f.fault.kind()).or_default();
            if f.overlapping {
                e.1 += 1;
            } else {
                e.0 += 1;
            }
        }
        let (single, pairs) = r.fault_counts();
        let (reads_ok, reads_all) = r.read_availability();
        Summary {
            elapsed: r.elapsed,
            check_time: r.check_time,
            ops,
            faults,
            single,
            pairs,
            kinds_missing: r.kinds_missing(),
            passed: r.ok(),
            violations: r.check.violations.len(),
            keys_unknown: r.check.keys_unknown.len(),
            incomplete_lists: r.incomplete_lists,
            measured: measure(r),
            reads_ok,
            reads_all,
            read_ns,
            errors: r.errors.clone(),
        }
    }

    fn ops_total(&self) -> usize {
        self.ops.values().map(|c| c.iter().sum::<usize>()).sum()
    }
}

/// Runs one schedule and prints what it found.
fn run_one(rt: &tokio::runtime::Runtime, s: &Settings, policy: &str, seed: u64) -> Schedule {
    let mut config = if policy == "failover" {
        // `strict` on a Redis Cluster with replicas, each primary failing over once.
        Config::failover(seed, s.admin.clone())
    } else {
        let mut config = Config::ci(seed, s.admin.clone());
        config.consistency = policy.to_owned();
        config.faults_for = s.faults_for;
        config
    };
    config.log_dir = harness::target_dir()
        .join("tmp")
        .join(format!("faults-bench-{policy}-{seed}"));
    // The logs append across restarts of a process; a schedule starts with none.
    let _ = std::fs::remove_dir_all(&config.log_dir);
    let cap = config.warmup + config.faults_for + config.tail + OVERHEAD_CAP;
    eprintln!(
        "faults: {policy} seed {seed}: {} s of faults (logs in {})",
        config.faults_for.as_secs(),
        config.log_dir.display()
    );
    let started = Instant::now();
    let result = rt.block_on(async { tokio::time::timeout(cap, harness::run(&config)).await });
    let wall = started.elapsed();
    let result = match result {
        Err(_) => Err(format!("took more than {cap:?}")),
        Ok(Err(e)) => Err(format!("the harness failed: {e}")),
        Ok(Ok(report)) => {
            eprintln!("FIGURE faults {policy}: {}", report.figure());
            let summary = Summary::of(&report);
            let m = &summary.measured;
            let mut st: Vec<u64> = m.scanned.iter().map(|s| s.staleness_ns).collect();
            st.sort_unstable();
            if summary.violations > 0 || !m.scanned.is_empty() {
                eprintln!(
                    "  violations {}: {} named and measured, {} not tied to one missed write, \
                     {} hidden by the checker's cap; stale reads: checker {}, scan {} \
                     (staleness p50 {} s, p99 {} s, max {} s; {} above partition + 3 s)",
                    summary.violations,
                    m.measured.len(),
                    m.unmeasured.values().sum::<usize>(),
                    m.hidden,
                    m.stale_reads_found
                        .map_or_else(|| "?".into(), |n| n.to_string()),
                    m.scanned.len(),
                    secs(quantile(&st, 0.5)),
                    secs(quantile(&st, 0.99)),
                    secs(st.last().copied()),
                    m.scanned.iter().filter(|s| !s.within_bound()).count(),
                );
            }
            // The named violations above the bound, and the stalest few.
            let mut named: Vec<&Stale> = m.measured.iter().collect();
            named.sort_by_key(|s| std::cmp::Reverse(s.staleness_ns));
            for (n, st) in named.iter().enumerate() {
                if n >= 3 && st.within_bound() {
                    continue;
                }
                eprintln!(
                    "  {} (read on r{}, missed write on r{}): {:.3} s after the missed write's \
                     effect, partition {:.3} s{}",
                    st.class.name(),
                    show_replica(st.read_on),
                    show_replica(st.write_on),
                    st.staleness_ns as f64 / 1e9,
                    st.partition_ns as f64 / 1e9,
                    if st.within_bound() {
                        ""
                    } else {
                        "  ABOVE partition + 3 s"
                    }
                );
                eprintln!("    {}", st.reason);
            }
            if !summary.ok() && policy == "strict" {
                for line in report.violation_context() {
                    eprintln!("  violation at {line}");
                }
                eprintln!("{}", report.check);
                match report.save() {
                    Ok(path) => eprintln!("  history saved to {}", path.display()),
                    Err(e) => eprintln!("  saving the history failed: {e}"),
                }
            }
            Ok(summary)
        }
    };
    if let Err(e) = &result {
        eprintln!(
            "faults: {policy} seed {seed}: FAILED: {e} (logs in {})",
            config.log_dir.display()
        );
    }
    eprintln!(
        "faults: {policy} seed {seed}: {:.1} s in all",
        wall.as_secs_f64()
    );
    Schedule {
        policy: policy.to_owned(),
        seed,
        wall,
        result,
    }
}

/// The summaries of the schedules that completed.
fn done<'a>(schedules: &[&'a Schedule]) -> Vec<&'a Summary> {
    schedules
        .iter()
        .filter_map(|s| s.result.as_ref().ok())
        .collect()
}

fn show_replica(r: Option<usize>) -> String {
    r.map_or_else(|| "?".into(), |r| r.to_string())
}

/// The `q` quantile of sorted values (nearest rank, as the harness's `read_latency`).
fn quantile(sorted: &[u64], q: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    Some(sorted[i])
}

fn ms(ns: Option<u64>) -> String {
    ns.map_or_else(|| "–".into(), |ns| format!("{:.2}", ns as f64 / 1e6))
}

fn secs(ns: Option<u64>) -> String {
    ns.map_or_else(|| "–".into(), |ns| format!("{:.2}", ns as f64 / 1e9))
}

fn pct(ok: usize, all: usize) -> String {
    if all == 0 {
        "–".into()
    } else {
        format!("{:.2} % ({ok} of {all})", 100.0 * ok as f64 / all as f64)
    }
}

fn main() {
    // `cargo bench` passes `--bench`; no argument is used.
    let Some(settings) = Settings::from_env() else {
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    let mut schedules = Vec::new();
    for policy in &settings.policies {
        for seed in settings.seeds() {
            schedules.push(run_one(&rt, &settings, policy, seed));
        }
    }
    drop(rt);

    let mut errors: BTreeMap<&str, usize> = BTreeMap::new();
    for s in &schedules {
        if let Ok(sum) = &s.result {
            for (e, n) in &sum.errors {
                *errors.entry(e.as_str()).or_default() += n;
            }
        }
    }
    if !errors.is_empty() {
        eprintln!("\nerror answers and transport errors, all schedules:");
        for (e, n) in &errors {
            eprintln!("  {n} × {e}");
        }
    }

    let section = section(&settings, &schedules);
    section.write();

    let strict_bad: Vec<String> = schedules
        .iter()
        .filter(|s| s.policy != "available")
        .filter(|s| !s.result.as_ref().is_ok_and(Summary::ok))
        .map(|s| s.seed.to_string())
        .collect();
    let failed: Vec<String> = schedules
        .iter()
        .filter(|s| s.result.is_err())
        .map(|s| format!("{} {}", s.policy, s.seed))
        .collect();
    if !strict_bad.is_empty() || !failed.is_empty() {
        eprintln!(
            "faults: FAILED: strict schedules with a violation, an undecided key, an incomplete \
             list or no result: [{}]; schedules that did not complete: [{}]",
            strict_bad.join(", "),
            failed.join(", ")
        );
        std::process::exit(1);
    }
}

/// The `faults` section: the pooled figures per policy, then each schedule.
fn section(settings: &Settings, schedules: &[Schedule]) -> report::Section {
    let mut section = report::Section::new(
        "faults",
        "Fault injection: long seeded schedules",
        "The fault suite (`tests/faults`) run over many seeded schedules: 3 release `arena` \
         replicas on one PostgreSQL and a private `redis-server`, each replica reaching Redis \
         through its own fault proxy; 9 clients write unique prices to 4 meals and read them \
         back by id, by name and as a list, on random replicas, while a seeded nemesis drops, \
         black-holes and delays a replica's link, restarts Redis empty, pauses it, and kills \
         replicas, alone and in overlapping pairs. Every history is checked by the `history` \
         crate (linearizability per key, snapshots for lists). `strict` must show no \
         violation; `available` may serve another replica's older value for the partition's \
         length plus at most 3 s (docs/cache-consistency.md), which the staleness table \
         measures.",
    );
    let seeds = settings.seeds();
    section.rounds(format!(
        "{} schedule(s) per policy, seeds {}..={}, each run once; figures pooled over the \
         schedules (quantiles over all their samples)",
        settings.schedules,
        seeds.start,
        seeds.end - 1
    ));
    let ci = Config::ci(0, String::new());
    section.setting(format!("FAULT_POLICIES={}", settings.policies.join(",")));
    section.setting(format!(
        "{} s of faults per schedule{} (+ {} s warm-up, {} s tail)",
        settings.faults_for.as_secs(),
        if settings.secs_set {
            format!(" (FAULT_SECS={})", settings.faults_for.as_secs())
        } else {
            ", as in CI".into()
        },
        ci.warmup.as_secs(),
        ci.tail.as_secs()
    ));
    section.setting(format!(
        "{} replicas, {} clients, {} meals, near cache {} entries, ARENA_REDIS_TIMEOUT_MS={}, \
         client timeout {} s",
        ci.replicas,
        ci.clients,
        ci.meals,
        ci.near_cache,
        ci.redis_timeout_ms,
        ci.request_timeout.as_secs()
    ));

    let by_policy =
        |p: &str| -> Vec<&Schedule> { schedules.iter().filter(|s| s.policy == p).collect() };

    // Summary per policy.
    let mut rows = Vec::new();
    for p in &settings.policies {
        let all = by_policy(p);
        let sums = done(&all);
        let mut walls: Vec<u64> = all.iter().map(|s| s.wall.as_nanos() as u64).collect();
        walls.sort_unstable();
        let mean_wall = walls.iter().sum::<u64>() / walls.len().max(1) as u64;
        let ops: usize = sums.iter().map(|s| s.ops_total()).sum();
        let violations: usize = sums.iter().map(|s| s.violations).sum();
        let unknown: usize = sums.iter().map(|s| s.keys_unknown).sum();
        let incomplete: usize = sums.iter().map(|s| s.incomplete_lists).sum();
        let ok: usize = sums.iter().map(|s| s.reads_ok).sum();
        let reads: usize = sums.iter().map(|s| s.reads_all).sum();
        let mut lat: Vec<u64> = sums
            .iter()
            .flat_map(|s| s.read_ns.iter().copied())
            .collect();
        lat.sort_unstable();
        let verdict = if p == "strict" {
            if violations == 0 && unknown == 0 && incomplete == 0 && sums.len() == all.len() {
                " ✓"
            } else {
                " ✗"
            }
        } else {
            ""
        };
        rows.push(vec![
            p.clone(),
            format!("{} of {}", sums.len(), all.len()),
            format!(
                "{} / {}",
                secs(Some(mean_wall)),
                secs(walls.last().copied())
            ),
            ops.to_string(),
            format!("{violations}{verdict}"),
            format!("{unknown} / {incomplete}"),
            pct(ok, reads),
            format!("{} / {}", ms(quantile(&lat, 0.5)), ms(quantile(&lat, 0.99))),
        ]);
    }
    section.table(
        &[
            "policy",
            "schedules completed",
            "run time per schedule, mean / max s",
            "operations checked",
            "violations",
            "undecided keys / incomplete lists",
            "read availability (lists included)",
            "successful reads p50 / p99 ms",
        ],
        &rows,
    );

    // Operations by kind and outcome.
    let mut rows = Vec::new();
    for p in &settings.policies {
        let sums = done(&by_policy(p));
        for class in OpClass::ALL {
            let mut c = [0usize; 3];
            for s in &sums {
                if let Some(x) = s.ops.get(&class) {
                    for i in 0..3 {
                        c[i] += x[i];
                    }
                }
            }
            rows.push(vec![
                p.clone(),
                format!("`{}`", class.name()),
                c.iter().sum::<usize>().to_string(),
                c[0].to_string(),
                c[1].to_string(),
                c[2].to_string(),
            ]);
        }
    }
    section.table(
        &[
            "policy",
            "operation",
            "checked",
            "ok",
            "failed (writes: refused with `UNAVAILABLE`, nothing written; reads: an error answer)",
            "indeterminate (no answer)",
        ],
        &rows,
    );

    // Faults by kind.
    let mut rows = Vec::new();
    for p in &settings.policies {
        let sums = done(&by_policy(p));
        for kind in Kind::ALL {
            let (alone, paired) = sums
                .iter()
                .filter_map(|s| s.faults.get(&kind))
                .fold((0, 0), |a, f| (a.0 + f.0, a.1 + f.1));
            let missing = sums
                .iter()
                .filter(|s| s.kinds_missing.contains(&kind))
                .count();
            rows.push(vec![
                p.clone(),
                kind.name().to_owned(),
                (alone + paired).to_string(),
                alone.to_string(),
                paired.to_string(),
                missing.to_string(),
            ]);
        }
        let single: usize = sums.iter().map(|s| s.single).sum();
        let pairs: usize = sums.iter().map(|s| s.pairs).sum();
        rows.push(vec![
            p.clone(),
            "**all**".into(),
            (single + 2 * pairs).to_string(),
            single.to_string(),
            format!("{} ({pairs} pairs)", 2 * pairs),
            String::new(),
        ]);
    }
    section.table(
        &[
            "policy",
            "fault",
            "injected",
            "alone",
            "in an overlapping pair",
            "schedules without it",
        ],
        &rows,
    );

    // Violations, and staleness.
    let class_list = |m: &BTreeMap<Class, usize>| {
        let parts: Vec<String> = m.iter().map(|(c, n)| format!("{n} {}", c.name())).collect();
        if parts.is_empty() {
            "0".into()
        } else {
            parts.join(", ")
        }
    };
    let signed =
        |ns: Option<i64>| ns.map_or_else(|| "–".into(), |ns| format!("{:+.2}", ns as f64 / 1e9));
    let mut rows = Vec::new();
    let mut stale_rows = Vec::new();
    for p in &settings.policies {
        let sums = done(&by_policy(p));
        let violations: usize = sums.iter().map(|s| s.violations).sum();
        let named: Vec<&Stale> = sums.iter().flat_map(|s| &s.measured.measured).collect();
        let scanned: Vec<&Stale> = sums.iter().flat_map(|s| &s.measured.scanned).collect();
        let hidden: usize = sums.iter().map(|s| s.measured.hidden).sum();
        let mut unmeasured: BTreeMap<Class, usize> = BTreeMap::new();
        for s in &sums {
            for (c, n) in &s.measured.unmeasured {
                *unmeasured.entry(*c).or_default() += n;
            }
        }
        let by_class = |v: &[&Stale]| {
            let mut m: BTreeMap<Class, usize> = BTreeMap::new();
            for s in v {
                *m.entry(s.class).or_default() += 1;
            }
            m
        };
        let found: Option<usize> = sums.iter().map(|s| s.measured.stale_reads_found).sum();
        rows.push(vec![
            p.clone(),
            violations.to_string(),
            format!("{} ({})", named.len(), class_list(&by_class(&named))),
            class_list(&unmeasured),
            hidden.to_string(),
            found.map_or_else(|| "?".into(), |n| n.to_string()),
            format!("{} ({})", scanned.len(), class_list(&by_class(&scanned))),
        ]);
        for (source, v) in [
            ("violations named by the checker", &named),
            ("every read (scan)", &scanned),
        ] {
            let mut st: Vec<u64> = v.iter().map(|m| m.staleness_ns).collect();
            st.sort_unstable();
            let within = v.iter().filter(|m| m.within_bound()).count();
            let excess = v
                .iter()
                .map(|m| m.staleness_ns as i64 - (m.partition_ns + BOUND_SLACK_NS) as i64)
                .max();
            let after_heal = v.iter().filter_map(|m| m.after_heal_ns).max();
            let no_fault: Vec<&&Stale> = v.iter().filter(|m| m.after_heal_ns.is_none()).collect();
            let since = no_fault.iter().filter_map(|m| m.since_heal_ns).max();
            let never = no_fault
                .iter()
                .filter(|m| m.since_heal_ns.is_none())
                .count();
            stale_rows.push(vec![
                p.clone(),
                source.to_owned(),
                v.len().to_string(),
                v.iter().filter(|m| !m.acknowledged).count().to_string(),
                format!(
                    "{} / {} / {}",
                    secs(quantile(&st, 0.5)),
                    secs(quantile(&st, 0.99)),
                    secs(st.last().copied())
                ),
                format!("{within} of {}", v.len()),
                signed(excess),
                signed(after_heal),
                format!(
                    "{}{}",
                    no_fault.len(),
                    match (since, never) {
                        (Some(s), 0) => format!(", ≤ {} s after a heal", secs(Some(s))),
                        (Some(s), n) => format!(
                            ", ≤ {} s after a heal, {n} before any fault ended",
                            secs(Some(s))
                        ),
                        (None, 0) => String::new(),
                        (None, n) => format!(", {n} before any fault ended"),
                    }
                ),
            ]);
        }
    }
    section.table(
        &[
            "policy",
            "violations",
            "named and tied to one missed write",
            "not tied to one missed write",
            "hidden by the checker's cap (10 per key)",
            "stale reads the checker found (named + hidden)",
            "stale reads the scan found",
        ],
        &rows,
    );
    let any_stale = schedules.iter().any(|s| {
        s.result
            .as_ref()
            .is_ok_and(|sum| !sum.measured.measured.is_empty() || !sum.measured.scanned.is_empty())
    });
    if any_stale {
        section.table(
            &[
                "policy",
                "reads that missed a write",
                "n",
                "missed write not acknowledged",
                "staleness p50 / p99 / max s",
                "within partition + 3 s",
                "max (staleness − (partition + 3 s)) s",
                "max (read − end of heal) s",
                "missed write overlapped by no fault",
            ],
            &stale_rows,
        );
        section.note(
            "Staleness: the earliest instant the read can have taken effect (its call; for a list \
             that is not a snapshot, the latest call of the writes of the values it returned) − \
             the instant the write it missed had certainly taken effect (its acknowledgement, or \
             the return of an earlier read of its value if sooner), both from the history. \
             *Named*: the violations the checker reports with their operations (at most 10 per \
             key; the rest it only counts). *Scan*: every successful read, list items included, \
             against the checker's value spans recomputed from the history (a read is stale when \
             it began after the earliest effect of a write of its key called after its value's \
             write took effect); it finds the checker's stale reads, hidden ones included, and \
             gives the complete distribution. Partition: the union of the fault intervals \
             (injection to end of heal, any kind and target) overlapping the missed write, \
             chained by overlap; 0, so a bound of 3 s, when none did (the last column: how many, \
             and how long after the last heal the missed write was called). Nearest-rank \
             quantiles.",
        );
    } else {
        section.note(
            "No read missed a write: neither the checker's violations nor the scan of every \
             read (each successful read, list items included, against the checker's value \
             spans recomputed from the history) found one.",
        );
    }

    // The stalest reads of the scan.
    let mut worst: Vec<(&str, &Stale)> = schedules
        .iter()
        .filter_map(|s| Some((s.policy.as_str(), s.result.as_ref().ok()?)))
        .flat_map(|(p, sum)| sum.measured.scanned.iter().map(move |m| (p, m)))
        .collect();
    worst.sort_by_key(|(_, m)| std::cmp::Reverse(m.staleness_ns));
    if !worst.is_empty() {
        let rows: Vec<Vec<String>> = worst
            .iter()
            .take(WORST)
            .map(|(p, m)| {
                vec![
                    (*p).to_owned(),
                    m.seed.to_string(),
                    m.class.name().to_owned(),
                    format!(
                        "r{} / r{}",
                        show_replica(m.read_on),
                        show_replica(m.write_on)
                    ),
                    if m.acknowledged { "yes" } else { "no" }.to_owned(),
                    secs(Some(m.staleness_ns)),
                    secs(Some(m.partition_ns)),
                    signed(m.after_heal_ns),
                    m.since_heal_ns
                        .map_or_else(|| "–".into(), |ns| secs(Some(ns))),
                ]
            })
            .collect();
        section.table(
            &[
                "policy",
                "seed",
                "stalest reads (scan)",
                "read on / missed write on",
                "missed write acknowledged",
                "staleness s",
                "partition s",
                "read − end of heal s",
                "no fault: missed write − last heal s",
            ],
            &rows,
        );
    }

    // Per schedule.
    let mut rows = Vec::new();
    for s in schedules {
        let row = match &s.result {
            Ok(sum) => {
                let mut lat = sum.read_ns.clone();
                lat.sort_unstable();
                vec![
                    s.policy.clone(),
                    s.seed.to_string(),
                    format!(
                        "{:.1} ({:.1} + check {:.2})",
                        s.wall.as_secs_f64(),
                        sum.elapsed.as_secs_f64(),
                        sum.check_time.as_secs_f64()
                    ),
                    sum.ops_total().to_string(),
                    format!("{} + {} pairs", sum.single, sum.pairs),
                    sum.violations.to_string(),
                    pct(sum.reads_ok, sum.reads_all),
                    format!("{} / {}", ms(quantile(&lat, 0.5)), ms(quantile(&lat, 0.99))),
                ]
            }
            Err(e) => vec![
                s.policy.clone(),
                s.seed.to_string(),
                format!("{:.1}", s.wall.as_secs_f64()),
                format!("did not complete: {e}"),
                String::new(),
                String::new(),
                String::new(),
                String::new(),
            ],
        };
        rows.push(row);
    }
    section.table(
        &[
            "policy",
            "seed",
            "run time s (history span + check)",
            "operations",
            "faults alone + overlapping pairs",
            "violations",
            "read availability",
            "reads p50 / p99 ms",
        ],
        &rows,
    );
    section
}
