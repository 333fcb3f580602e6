//! A history checker for fault-injection tests, in the manner of Porcupine and Knossos.
//!
//! # Model
//! Test clients record operations on keys (meals), each key a register: a write sets its
//! value and a read returns the value of the last write, or the key's initial value.
//! Every write sets a value no other write of that key sets (the recorder uses a global
//! counter), which the checks rely on: a value names the write that produced it. Times
//! are nanoseconds from a monotonic clock; an operation took effect at some instant in
//! [call, ret], and two operations whose intervals touch are taken as concurrent.
//!
//! # Indeterminate and failed operations
//! A write whose client never learnt the result (timeout, lost connection) is
//! *indeterminate*: as in Knossos and Porcupine its return time is +infinity, so it may
//! take effect at any instant after its call, or never. Two exact reductions keep such
//! writes cheap: one whose value no read returned is dropped (it can always go last,
//! where nothing observes it), and one whose value was read must have taken effect
//! before the earliest such read returned, which becomes its return time. The same bound
//! is applied to every write; it only restates what any linearization must satisfy.
//! A *failed* write (the server said nothing was written) is dropped, so reading its
//! value is a violation. Indeterminate and failed reads say nothing and are only counted.
//! An operation marked `Ok` or `Failed` without a return time counts as indeterminate.
//!
//! # Per-key linearizability
//! Linearizability is local (Herlihy & Wing 1990), so each key is checked alone, its
//! list reads counting as reads of it. Cheap, sound pre-checks come first and name the
//! culprit: a value nobody wrote (or only a failed write wrote), a read that returned
//! before its value's write was called, a stale read (see the spans below). Then the
//! search: the Wing & Gong algorithm (J. Parallel Distrib. Comput., 1993) with Lowe's
//! memoization of (linearized set, state) configurations ("Testing for linearizability",
//! Concurrency and Computation, 2017), as Porcupine's `checkSingle` implements it: call
//! and return events in a linked list that linearized operations are lifted out of, a
//! backtracking stack, and a cache. Unique values allow two exact prunings on top: no
//! write while a read of the current value is pending (that value cannot come back),
//! and such a read, once nothing it must follow is left, goes next with no alternative
//! tried. The tests hold all of it to the plain search and to brute force. A key whose
//! search exceeds [`Config::step_budget`] steps is reported unknown rather than hanging.
//!
//! # Snapshot check for list reads
//! A list read must have seen every returned (key, value) at one instant t in its
//! [call, ret]. The value v of write w can be current only from w.call until
//! end(v) = min ret(w') over writes w' of the key called after ret(w): such a w' takes
//! effect after w, and v is never current again once w' has taken effect (values are
//! unique). Here ret is the bounded return time above, +infinity for an unread
//! indeterminate write; an initial value is current from 0 until the first write
//! takes effect. So a list passes iff max(call, starts) <= min(ret, ends). Every bound
//! holds in any linearization of the whole history, so the check never rejects a
//! correct history; being per value rather than a search it can miss some anomalies.

mod report;
#[cfg(test)]
mod tests;
mod wgl;

pub use report::{Counts, Involved, OpId, Report, Violation};

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{self, BufWriter, Write as _};
use std::path::Path;
use wgl::{Action, SearchOp, Verdict};

/// Return time of an operation that never returned.
const INF: u64 = u64::MAX;
/// Violations reported per key before the rest are only counted.
const MAX_PER_KEY: usize = 10;

/// Search steps per key before it is reported unknown.
pub const DEFAULT_STEP_BUDGET: u64 = 5_000_000;

/// What the client learnt about an operation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Acknowledged.
    #[default]
    Ok,
    /// Definitely not applied.
    Failed,
    /// May or may not have been applied.
    Indeterminate,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum OpKind {
    Write {
        value: i64,
        #[serde(default)]
        outcome: Outcome,
    },
    /// `value: None`: the key had no value.
    Read {
        value: Option<i64>,
        #[serde(default)]
        outcome: Outcome,
    },
}

/// One operation on one key. `ret: None`: the client never learnt the result.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Op {
    pub process: u64,
    pub key: String,
    pub call: u64,
    pub ret: Option<u64>,
    pub kind: OpKind,
}

impl Op {
    fn new(process: u64, key: impl Into<String>, call: u64, ret: Option<u64>, kind: OpKind) -> Op {
        Op {
            process,
            key: key.into(),
            call,
            ret,
            kind,
        }
    }

    pub fn write(process: u64, key: impl Into<String>, call: u64, ret: u64, value: i64) -> Op {
        let outcome = Outcome::Ok;
        Op::new(
            process,
            key,
            call,
            Some(ret),
            OpKind::Write { value, outcome },
        )
    }

    pub fn write_failed(
        process: u64,
        key: impl Into<String>,
        call: u64,
        ret: u64,
        value: i64,
    ) -> Op {
        let outcome = Outcome::Failed;
        Op::new(
            process,
            key,
            call,
            Some(ret),
            OpKind::Write { value, outcome },
        )
    }

    pub fn write_indeterminate(process: u64, key: impl Into<String>, call: u64, value: i64) -> Op {
        let outcome = Outcome::Indeterminate;
        Op::new(process, key, call, None, OpKind::Write { value, outcome })
    }

    pub fn read(
        process: u64,
        key: impl Into<String>,
        call: u64,
        ret: u64,
        value: Option<i64>,
    ) -> Op {
        let outcome = Outcome::Ok;
        Op::new(
            process,
            key,
            call,
            Some(ret),
            OpKind::Read { value, outcome },
        )
    }

    pub fn read_failed(process: u64, key: impl Into<String>, call: u64, ret: u64) -> Op {
        let outcome = Outcome::Failed;
        Op::new(
            process,
            key,
            call,
            Some(ret),
            OpKind::Read {
                value: None,
                outcome,
            },
        )
    }

    pub fn read_indeterminate(process: u64, key: impl Into<String>, call: u64) -> Op {
        let outcome = Outcome::Indeterminate;
        Op::new(
            process,
            key,
            call,
            None,
            OpKind::Read {
                value: None,
                outcome,
            },
        )
    }

    /// The outcome the checker uses: indeterminate when there is no return time.
    pub fn outcome(&self) -> Outcome {
        let (OpKind::Write { outcome, .. } | OpKind::Read { outcome, .. }) = self.kind;
        effective(outcome, self.ret)
    }
}

/// One list query and the (key, value) pairs it returned.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListRead {
    pub process: u64,
    pub call: u64,
    pub ret: Option<u64>,
    #[serde(default)]
    pub outcome: Outcome,
    pub items: Vec<(String, i64)>,
}

impl ListRead {
    pub fn new(process: u64, call: u64, ret: u64, items: Vec<(String, i64)>) -> ListRead {
        let (ret, outcome) = (Some(ret), Outcome::Ok);
        ListRead {
            process,
            call,
            ret,
            outcome,
            items,
        }
    }

    pub fn failed(process: u64, call: u64, ret: u64) -> ListRead {
        let (ret, outcome, items) = (Some(ret), Outcome::Failed, Vec::new());
        ListRead {
            process,
            call,
            ret,
            outcome,
            items,
        }
    }

    pub fn indeterminate(process: u64, call: u64) -> ListRead {
        let (ret, outcome, items) = (None, Outcome::Indeterminate, Vec::new());
        ListRead {
            process,
            call,
            ret,
            outcome,
            items,
        }
    }

    /// The outcome the checker uses: indeterminate when there is no return time.
    pub fn outcome(&self) -> Outcome {
        effective(self.outcome, self.ret)
    }
}

fn effective(outcome: Outcome, ret: Option<u64>) -> Outcome {
    if ret.is_none() {
        Outcome::Indeterminate
    } else {
        outcome
    }
}

/// A recorded run: initial values, operations and list reads, in any order.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    /// Keys not listed start with no value.
    #[serde(default)]
    pub initial: BTreeMap<String, Option<i64>>,
    #[serde(default)]
    pub ops: Vec<Op>,
    #[serde(default)]
    pub lists: Vec<ListRead>,
}

impl History {
    pub fn new() -> History {
        History::default()
    }

    pub fn initial(&mut self, key: impl Into<String>, value: Option<i64>) -> &mut History {
        self.initial.insert(key.into(), value);
        self
    }

    pub fn push(&mut self, op: Op) -> &mut History {
        self.ops.push(op);
        self
    }

    pub fn push_list(&mut self, list: ListRead) -> &mut History {
        self.lists.push(list);
        self
    }

    /// Writes the history as JSON.
    pub fn save(&self, path: impl AsRef<Path>) -> io::Result<()> {
        let mut out = BufWriter::new(File::create(path)?);
        serde_json::to_writer(&mut out, self)?;
        out.flush()
    }

    pub fn load(path: impl AsRef<Path>) -> io::Result<History> {
        let text = std::fs::read_to_string(path)?;
        Ok(serde_json::from_str(&text)?)
    }
}

/// Limits of a check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// Search steps per key before the key is reported unknown.
    pub step_budget: u64,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            step_budget: DEFAULT_STEP_BUDGET,
        }
    }
}

/// Checks `history` with the default [`Config`].
pub fn check(history: &History) -> Report {
    check_with(history, &Config::default())
}

pub fn check_with(history: &History, config: &Config) -> Report {
    run(history, config.step_budget, Mode::Full)
}

struct KWrite {
    id: usize,
    call: u64,
    ret: u64,
    value: i64,
    indeterminate: bool,
}

struct KRead {
    id: OpId,
    call: u64,
    ret: u64,
    value: Option<i64>,
}

/// One key's operations.
#[derive(Default)]
struct KeyOps {
    writes: Vec<KWrite>,
    failed: Vec<(usize, i64)>,
    reads: Vec<KRead>,
}

/// The write that ends a value's span: it took effect by `by`, its return or the
/// return of `seen_by`, a read of its value.
#[derive(Clone, Copy)]
struct Ender {
    op: usize,
    by: u64,
    seen_by: Option<OpId>,
}

/// When a value of a key can have been current: [start, end].
#[derive(Clone, Copy)]
struct Span {
    start: u64,
    end: u64,
    /// The write of the value; `None` for the initial value.
    write: Option<usize>,
    ender: Option<Ender>,
}

/// Spans by value, `None` where the key broke the uniqueness of values.
type Spans = Option<HashMap<Option<i64>, Span>>;

/// How much of the checker runs; all of it but in tests.
#[derive(Clone, Copy, PartialEq, Eq)]
#[cfg_attr(not(test), allow(dead_code))]
enum Mode {
    Full,
    /// The search with its reductions, without pre-checks.
    Search,
    /// Porcupine's search as it is: no pre-checks, no reductions.
    Plain,
}

fn run(h: &History, budget: u64, mode: Mode) -> Report {
    let mut report = Report::default();
    let mut keys: BTreeMap<&str, KeyOps> = BTreeMap::new();
    for (i, op) in h.ops.iter().enumerate() {
        let outcome = op.outcome();
        bump(
            match op.kind {
                OpKind::Write { .. } => &mut report.writes,
                OpKind::Read { .. } => &mut report.reads,
            },
            outcome,
        );
        let k = keys.entry(op.key.as_str()).or_default();
        if op.ret.is_some_and(|ret| ret < op.call) {
            let reason = "malformed: returned before it was called".to_string();
            let ops = vec![involve(h, OpId::Op(i), None)];
            report
                .violations
                .push(violation(Some(&op.key), None, reason, ops));
            continue;
        }
        let (call, ret) = (op.call, op.ret.unwrap_or(INF));
        match (op.kind, outcome) {
            (OpKind::Write { value, .. }, Outcome::Failed) => k.failed.push((i, value)),
            (OpKind::Write { value, .. }, _) => k.writes.push(KWrite {
                id: i,
                call,
                ret,
                value,
                indeterminate: outcome == Outcome::Indeterminate,
            }),
            (OpKind::Read { value, .. }, Outcome::Ok) => k.reads.push(KRead {
                id: OpId::Op(i),
                call,
                ret,
                value,
            }),
            (OpKind::Read { .. }, _) => {}
        }
    }
    for (i, list) in h.lists.iter().enumerate() {
        let outcome = list.outcome();
        bump(&mut report.lists, outcome);
        let Some(ret) = list.ret.filter(|_| outcome == Outcome::Ok) else {
            continue;
        };
        if ret < list.call {
            let reason = "malformed: returned before it was called".to_string();
            let ops = vec![involve(h, OpId::List(i), None)];
            report
                .violations
                .push(violation(None, Some(i), reason, ops));
            continue;
        }
        report.list_items += list.items.len();
        for (key, value) in &list.items {
            keys.entry(key.as_str()).or_default().reads.push(KRead {
                id: OpId::List(i),
                call: list.call,
                ret,
                value: Some(*value),
            });
        }
    }
    report.keys_checked = keys.len();

    let mut facts: HashMap<&str, Spans> = HashMap::new();
    for (key, k) in &keys {
        let init = h.initial.get(*key).copied().flatten();
        let spans = check_key(h, key, init, k, budget, mode, &mut report);
        facts.insert(key, spans);
    }
    for (i, list) in h.lists.iter().enumerate() {
        check_list(h, i, list, &facts, &mut report);
    }
    report
}

fn bump(counts: &mut Counts, outcome: Outcome) {
    match outcome {
        Outcome::Ok => counts.ok += 1,
        Outcome::Failed => counts.failed += 1,
        Outcome::Indeterminate => counts.indeterminate += 1,
    }
}

/// Checks one key; returns its value spans for the snapshot check.
fn check_key(
    h: &History,
    key: &str,
    init: Option<i64>,
    k: &KeyOps,
    budget: u64,
    mode: Mode,
    report: &mut Report,
) -> Spans {
    let mut found = Vec::new();
    let mut owner: HashMap<i64, usize> = HashMap::new();
    let all_writes = k.writes.iter().map(|w| (w.id, w.value));
    for (id, value) in all_writes.chain(k.failed.iter().copied()) {
        if Some(value) == init {
            let reason =
                format!("malformed: writes {value}, the initial value (values must be unique)");
            let ops = vec![involve(h, OpId::Op(id), None)];
            found.push(violation(Some(key), None, reason, ops));
        } else if let Some(first) = owner.insert(value, id) {
            let reason = format!("malformed: {value} written twice (values must be unique)");
            let ops = vec![
                involve(h, OpId::Op(first), None),
                involve(h, OpId::Op(id), None),
            ];
            found.push(violation(Some(key), None, reason, ops));
        }
    }
    if !found.is_empty() {
        // The pre-checks and spans rest on unique values: decide by the search alone.
        search_key(h, key, init, k, None, budget, &mut found, report);
        push_capped(report, key, found);
        return None;
    }

    let by_value: HashMap<i64, usize> = k
        .writes
        .iter()
        .enumerate()
        .map(|(i, w)| (w.value, i))
        .collect();
    // A write took effect before any read of its value returned.
    let mut eff: Vec<(u64, Option<OpId>)> = k.writes.iter().map(|w| (w.ret, None)).collect();
    for r in &k.reads {
        if let Some(&wi) = r.value.and_then(|v| by_value.get(&v)) {
            if r.ret < eff[wi].0 {
                eff[wi] = (r.ret, Some(r.id));
            }
        }
    }
    for (e, w) in eff.iter_mut().zip(&k.writes) {
        // A read that returned before the call is reported below.
        e.0 = e.0.max(w.call);
    }

    // suffix[j]: among the writes by_call[j..], the one with the earliest effect bound.
    let mut by_call: Vec<usize> = (0..k.writes.len()).collect();
    by_call.sort_by_key(|&i| k.writes[i].call);
    let mut suffix: Vec<Option<usize>> = vec![None; by_call.len() + 1];
    for j in (0..by_call.len()).rev() {
        let wi = by_call[j];
        suffix[j] = match suffix[j + 1] {
            Some(b) if eff[b].0 <= eff[wi].0 => Some(b),
            _ => Some(wi),
        };
    }
    let span = |start: u64, write: Option<usize>, ender: Option<usize>| Span {
        start,
        end: ender.map_or(INF, |e| eff[e].0),
        write,
        ender: ender.map(|e| Ender {
            op: k.writes[e].id,
            by: eff[e].0,
            seen_by: eff[e].1,
        }),
    };
    let mut spans = HashMap::new();
    spans.insert(init, span(0, None, suffix[0]));
    for (i, w) in k.writes.iter().enumerate() {
        let after = by_call.partition_point(|&j| k.writes[j].call <= eff[i].0);
        spans.insert(Some(w.value), span(w.call, Some(w.id), suffix[after]));
    }

    if mode == Mode::Full {
        let failed: HashMap<i64, usize> = k.failed.iter().map(|&(id, v)| (v, id)).collect();
        for r in &k.reads {
            if let Some(v) = precheck_read(h, key, init, r, &spans, &failed) {
                found.push(v);
            }
        }
    }
    if found.is_empty() {
        let eff = (mode != Mode::Plain).then_some(eff.as_slice());
        search_key(h, key, init, k, eff, budget, &mut found, report);
    }
    push_capped(report, key, found);
    Some(spans)
}

/// The cheap checks of one read against the spans of its key's values.
fn precheck_read(
    h: &History,
    key: &str,
    init: Option<i64>,
    r: &KRead,
    spans: &HashMap<Option<i64>, Span>,
    failed: &HashMap<i64, usize>,
) -> Option<Violation> {
    let mut ops = vec![involve(h, r.id, Some(key))];
    let reason = match (spans.get(&r.value), r.value) {
        (None, None) => format!(
            "read found no value, but the key started at {} and nothing deletes",
            show(init)
        ),
        (None, Some(v)) => match failed.get(&v) {
            Some(&id) => {
                ops.push(involve(h, OpId::Op(id), None));
                format!("read {v}, written only by a write that failed (was not applied)")
            }
            None => format!("read {v}, which no write of this key wrote"),
        },
        (Some(s), _) if r.ret < s.start => {
            ops.extend(s.write.map(|w| involve(h, OpId::Op(w), None)));
            format!(
                "read {} returned at t={}, before its write was called at t={}",
                show(r.value),
                r.ret,
                s.start
            )
        }
        (Some(s), _) if r.call > s.end => {
            ops.extend(s.write.map(|w| involve(h, OpId::Op(w), None)));
            let e = s.ender?;
            ops.push(involve(h, OpId::Op(e.op), None));
            ops.extend(e.seen_by.map(|id| involve(h, id, Some(key))));
            format!(
                "stale read of {}: overwritten by op#{}, which took effect by t={} ({}), before the read began at t={}",
                show(r.value),
                e.op,
                e.by,
                seen(e.seen_by),
                r.call
            )
        }
        (Some(_), _) => return None,
    };
    Some(violation(Some(key), None, reason, ops))
}

/// Runs the search on one key. `eff`: the writes' effect bounds, to use as their return
/// times (dropping unread indeterminate writes); `None` for the plain search.
#[allow(clippy::too_many_arguments)]
fn search_key(
    h: &History,
    key: &str,
    init: Option<i64>,
    k: &KeyOps,
    eff: Option<&[(u64, Option<OpId>)]>,
    budget: u64,
    found: &mut Vec<Violation>,
    report: &mut Report,
) {
    let mut ops = Vec::new();
    let mut ids = Vec::new();
    for (i, w) in k.writes.iter().enumerate() {
        let ret = eff.map_or(w.ret, |eff| eff[i].0);
        if w.indeterminate && ret == INF && eff.is_some() {
            continue;
        }
        let action = Action::Write(w.value);
        ops.push(SearchOp {
            call: w.call,
            ret,
            action,
        });
        ids.push(OpId::Op(w.id));
    }
    for r in &k.reads {
        let action = Action::Read(r.value);
        ops.push(SearchOp {
            call: r.call,
            ret: r.ret,
            action,
        });
        ids.push(r.id);
    }
    // Values are unique wherever the reductions are used.
    let stuck = match wgl::search(init, &ops, budget, eff.is_some()) {
        Verdict::Linearizable => return,
        Verdict::Unknown => return report.keys_unknown.push(key.to_string()),
        Verdict::Violation(stuck) => stuck,
    };
    let mut involved: Vec<Involved> = Vec::new();
    let mut add = |id: OpId| {
        if !involved.iter().any(|i| i.id == id) {
            involved.push(involve(h, id, Some(key)));
        }
    };
    let mut what = String::new();
    if let Some(b) = stuck.blocker {
        add(ids[b]);
        if let Action::Read(Some(v)) = ops[b].action {
            if let Some(w) = k.writes.iter().find(|w| w.value == v) {
                add(OpId::Op(w.id));
            }
        }
        let ret = if ops[b].ret == INF {
            "never".to_string()
        } else {
            format!("t={}", ops[b].ret)
        };
        what = format!("; then {} cannot take effect by its return ({ret})", ids[b]);
    }
    for &r in &stuck.recent {
        add(ids[r]);
    }
    let reason = format!(
        "not linearizable: at most {} of {} operations can be ordered, the register then holding {}{what}",
        stuck.depth,
        ops.len(),
        show(stuck.state)
    );
    found.push(violation(Some(key), None, reason, involved));
}

/// The snapshot check of one list read.
fn check_list(
    h: &History,
    i: usize,
    list: &ListRead,
    facts: &HashMap<&str, Spans>,
    report: &mut Report,
) {
    let Some(ret) = list
        .ret
        .filter(|&ret| list.outcome() == Outcome::Ok && ret >= list.call)
    else {
        return;
    };
    let mut seen_values: HashMap<&str, i64> = HashMap::new();
    // The latest start and the earliest end, with the item that sets them.
    let mut lo: (u64, Option<(usize, Span)>) = (list.call, None);
    let mut hi: (u64, Option<(usize, Span)>) = (ret, None);
    for (j, (key, value)) in list.items.iter().enumerate() {
        if let Some(&other) = seen_values.get(key.as_str()) {
            if other != *value {
                let reason = format!("returned {key} twice, as {other} and {value}");
                let ops = vec![involve(h, OpId::List(i), None)];
                report
                    .violations
                    .push(violation(None, Some(i), reason, ops));
            }
            continue;
        }
        seen_values.insert(key, *value);
        // Values the per-key check rejected outright have no span.
        let Some(s) = facts
            .get(key.as_str())
            .and_then(|s| s.as_ref()?.get(&Some(*value)))
        else {
            continue;
        };
        if s.start > lo.0 {
            lo = (s.start, Some((j, *s)));
        }
        if s.end < hi.0 {
            hi = (s.end, Some((j, *s)));
        }
    }
    if lo.0 <= hi.0 {
        return;
    }
    let item = |j: usize| format!("{}={}", list.items[j].0, list.items[j].1);
    let mut ops = vec![involve(h, OpId::List(i), None)];
    let mut add_span = |s: &Span| {
        ops.extend(s.write.map(|w| involve(h, OpId::Op(w), None)));
        if let Some(e) = s.ender {
            ops.push(involve(h, OpId::Op(e.op), None));
        }
    };
    let overwritten = |s: &Span| match s.ender {
        Some(e) => format!(
            "overwritten by op#{}, which took effect by t={} ({})",
            e.op,
            e.by,
            seen(e.seen_by)
        ),
        None => "overwritten".to_string(),
    };
    let reason = match (lo.1, hi.1) {
        (Some((a, sa)), None) => {
            add_span(&sa);
            format!(
                "returned {}, whose write {} was called at t={}, after the list returned at t={ret}",
                item(a),
                written_by(&sa),
                sa.start
            )
        }
        (None, Some((b, sb))) => {
            add_span(&sb);
            format!(
                "returned {}, {}, before the list began at t={}",
                item(b),
                overwritten(&sb),
                list.call
            )
        }
        (Some((a, sa)), Some((b, sb))) => {
            add_span(&sa);
            add_span(&sb);
            format!(
                "not a snapshot: {} was {}, before {} was written ({} called at t={})",
                item(b),
                overwritten(&sb),
                item(a),
                written_by(&sa),
                sa.start
            )
        }
        // lo.0 > hi.0 needs a span to set one of them (call <= ret).
        (None, None) => return,
    };
    report
        .violations
        .push(violation(None, Some(i), reason, ops));
}

fn push_capped(report: &mut Report, key: &str, mut found: Vec<Violation>) {
    if found.len() > MAX_PER_KEY {
        let more = found.len() - MAX_PER_KEY;
        found.truncate(MAX_PER_KEY);
        let reason = format!("and {more} more violations of this key");
        found.push(violation(Some(key), None, reason, Vec::new()));
    }
    report.violations.extend(found);
}

fn violation(
    key: Option<&str>,
    list: Option<usize>,
    reason: String,
    ops: Vec<Involved>,
) -> Violation {
    Violation {
        key: key.map(str::to_string),
        list,
        reason,
        ops,
    }
}

fn show(value: Option<i64>) -> String {
    value.map_or_else(|| "no value".to_string(), |v| v.to_string())
}

fn seen(by: Option<OpId>) -> String {
    by.map_or_else(|| "its return".to_string(), |id| format!("{id} saw it"))
}

fn written_by(s: &Span) -> String {
    s.write
        .map_or_else(|| "(initial value)".to_string(), |w| format!("op#{w}"))
}

fn time(t: Option<u64>) -> String {
    t.map_or_else(|| "?".to_string(), |t| t.to_string())
}

/// One line on an operation; for a list read as a read of `key`, the item of that key.
fn involve(h: &History, id: OpId, key: Option<&str>) -> Involved {
    let desc = match id {
        OpId::Op(i) => {
            let op = &h.ops[i];
            let at = format!("p{} [{}, {}]", op.process, op.call, time(op.ret));
            let outcome = format!("{:?}", op.outcome()).to_lowercase();
            match op.kind {
                OpKind::Write { value, .. } => {
                    format!("{id} {at} write {}={value} {outcome}", op.key)
                }
                OpKind::Read { value, .. } => {
                    format!("{id} {at} read {} -> {} {outcome}", op.key, show(value))
                }
            }
        }
        OpId::List(i) => {
            let list = &h.lists[i];
            let at = format!("p{} [{}, {}]", list.process, list.call, time(list.ret));
            let n = list.items.len();
            match key.and_then(|key| list.items.iter().find(|(k, _)| k == key)) {
                Some((k, v)) => format!("{id} {at} list returned {k}={v} (of {n} items)"),
                None => format!("{id} {at} list returned {n} items"),
            }
        }
    };
    Involved { id, desc }
}
