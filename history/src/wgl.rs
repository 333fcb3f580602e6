//! The Wing–Gong search with Lowe's memoization, for one key's register.
//!
//! A transcription of Porcupine's `checkSingle`: call and return events sorted by time
//! in a doubly linked list; the search linearizes the first call it can (lifting the
//! operation's two events out of the list), backtracks when it meets a return event
//! (that operation had to take effect before now), and prunes every
//! (set of linearized operations, register value) configuration seen before.

use std::collections::{HashMap, HashSet};

/// What an operation does to the register.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Action {
    Write(i64),
    Read(Option<i64>),
}

/// One operation as the search sees it; `ret == u64::MAX` is "never returned".
#[derive(Clone, Copy, Debug)]
pub(crate) struct SearchOp {
    pub call: u64,
    pub ret: u64,
    pub action: Action,
}

/// Where the search got furthest before giving up (indices into the input slice).
#[derive(Clone, Debug)]
pub(crate) struct Stuck {
    /// Most operations linearized at once.
    pub depth: usize,
    /// The register value at that point.
    pub state: Option<i64>,
    /// The last few operations linearized to get there, oldest first.
    pub recent: Vec<usize>,
    /// The operation whose return was reached while it could not be linearized.
    pub blocker: Option<usize>,
}

#[derive(Clone, Debug)]
pub(crate) enum Verdict {
    Linearizable,
    /// The step budget ran out first.
    Unknown,
    Violation(Stuck),
}

const NIL: usize = usize::MAX;
const RECENT: usize = 4;

/// The linearized set, stored compactly: operations are numbered by call time, so the
/// set is nearly always a run of ones followed by a few scattered bits. Keep only the
/// index of the first word that is not all ones and the words from there to the last
/// non-zero one: equal sets give equal keys.
#[derive(Hash, PartialEq, Eq)]
struct CacheKey {
    state: Option<i64>,
    first: u32,
    words: Box<[u64]>,
}

fn cache_key(bits: &[u64], state: Option<i64>) -> CacheKey {
    let first = bits
        .iter()
        .position(|&w| w != u64::MAX)
        .unwrap_or(bits.len());
    let last = bits.iter().rposition(|&w| w != 0).map_or(first, |l| l + 1);
    CacheKey {
        state,
        first: first as u32,
        words: bits[first..last.max(first)].into(),
    }
}

fn step(state: Option<i64>, action: Action) -> Option<Option<i64>> {
    match action {
        Action::Write(v) => Some(Some(v)),
        Action::Read(v) => (v == state).then_some(state),
    }
}

/// The search's working state: the event list, the linearized set, the path, the cache.
struct Search<'a> {
    ops: &'a [SearchOp],
    next: Vec<usize>,
    prev: Vec<usize>,
    bits: Vec<u64>,
    cache: HashSet<CacheKey>,
    /// Linearized operations: (operation, state before it, forced).
    stack: Vec<(usize, Option<i64>, bool)>,
    state: Option<i64>,
    /// With unique values: unlinearized reads of each value.
    pending: Option<HashMap<Option<i64>, usize>>,
}

// Node 0 is the head; operation i has call node 2i+1 and return node 2i+2.
fn call_node(i: usize) -> usize {
    2 * i + 1
}

fn ret_node(i: usize) -> usize {
    2 * i + 2
}

fn op_of(node: usize) -> usize {
    (node - 1) / 2
}

fn is_call(node: usize) -> bool {
    node != NIL && node % 2 == 1
}

impl Search<'_> {
    /// Linearizes op `i` if the model allows it and the configuration is new.
    fn try_lift(&mut self, i: usize, forced: bool) -> bool {
        let Some(new_state) = step(self.state, self.ops[i].action) else {
            return false;
        };
        // A pending read of the current value must come before the next write.
        let blocked = |p: &HashMap<Option<i64>, usize>| p.get(&self.state).is_some_and(|&n| n > 0);
        if let Some(p) = &self.pending {
            if matches!(self.ops[i].action, Action::Write(_)) && blocked(p) {
                return false;
            }
        }
        self.bits[i / 64] |= 1 << (i % 64);
        if !self.cache.insert(cache_key(&self.bits, new_state)) {
            self.bits[i / 64] &= !(1 << (i % 64));
            return false;
        }
        self.stack.push((i, self.state, forced));
        self.state = new_state;
        self.count_read(i, false);
        for node in [call_node(i), ret_node(i)] {
            let (p, n) = (self.prev[node], self.next[node]);
            self.next[p] = n;
            if n != NIL {
                self.prev[n] = p;
            }
        }
        true
    }

    /// Undoes the last linearization; returns the operation and whether it was forced.
    fn unlift(&mut self) -> Option<(usize, bool)> {
        let (i, old, forced) = self.stack.pop()?;
        self.state = old;
        self.count_read(i, true);
        self.bits[i / 64] &= !(1 << (i % 64));
        // Reinsert in the reverse order of removal.
        for node in [ret_node(i), call_node(i)] {
            let (p, n) = (self.prev[node], self.next[node]);
            self.next[p] = node;
            if n != NIL {
                self.prev[n] = node;
            }
        }
        Some((i, forced))
    }

    fn count_read(&mut self, i: usize, pending: bool) {
        if let (Some(p), Action::Read(v)) = (&mut self.pending, self.ops[i].action) {
            if let Some(n) = p.get_mut(&v) {
                *n = if pending { *n + 1 } else { *n - 1 };
            }
        }
    }

    /// A pending read that returns the current value and may go next, if any.
    fn matching_read(&self, steps: &mut u64) -> Option<usize> {
        let mut entry = self.next[0];
        while is_call(entry) {
            *steps += 1;
            let i = op_of(entry);
            if matches!(self.ops[i].action, Action::Read(v) if v == self.state) {
                return Some(i);
            }
            entry = self.next[entry];
        }
        None
    }
}

/// Is there an order of `ops`, consistent with real time, in which every read returns
/// the value of the last write before it (or `init`)? At most `budget` steps.
///
/// `unique`: every value is written at most once, and never the initial one. Then a
/// value once overwritten never comes back, so any completion places the pending reads
/// of the current value before the next write, and two exact reductions follow: no
/// write while such a read is pending; and such a read, once it may go (nothing it must
/// follow is left), goes next, with no alternative tried if that fails (only reads could
/// precede it, and it can be moved ahead of them).
pub(crate) fn search(init: Option<i64>, ops: &[SearchOp], budget: u64, unique: bool) -> Verdict {
    let n = ops.len();
    if n == 0 {
        return Verdict::Linearizable;
    }
    // Number operations by call time (for the compact cache key).
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by_key(|&i| (ops[i].call, ops[i].ret, i));
    let sorted: Vec<SearchOp> = order.iter().map(|&i| ops[i]).collect();

    // Events by time; at equal times calls come first, so touching intervals overlap.
    let mut events: Vec<(u64, bool, usize)> = Vec::with_capacity(2 * n);
    for (i, op) in sorted.iter().enumerate() {
        events.push((op.call, false, i));
        events.push((op.ret, true, i));
    }
    events.sort_unstable();
    let mut s = Search {
        ops: &sorted,
        next: vec![NIL; 2 * n + 1],
        prev: vec![NIL; 2 * n + 1],
        bits: vec![0; n.div_ceil(64)],
        cache: HashSet::new(),
        stack: Vec::new(),
        state: init,
        pending: None,
    };
    if unique {
        let mut pending = HashMap::new();
        for op in &sorted {
            if let Action::Read(v) = op.action {
                *pending.entry(v).or_insert(0) += 1;
            }
        }
        s.pending = Some(pending);
    }
    let mut last = 0;
    for &(_, is_ret, i) in &events {
        let node = if is_ret { ret_node(i) } else { call_node(i) };
        s.next[last] = node;
        s.prev[node] = last;
        last = node;
    }

    let mut best: Option<Stuck> = None;
    let mut entry = s.next[0];
    let mut fresh = true;
    let mut steps = 0u64;
    while s.next[0] != NIL {
        steps += 1;
        if steps > budget {
            return Verdict::Unknown;
        }
        let mut failed = false;
        if fresh && unique {
            fresh = false;
            if let Some(i) = s.matching_read(&mut steps) {
                if s.try_lift(i, true) {
                    (entry, fresh) = (s.next[0], true);
                    continue;
                }
                // Seen before, so it failed, and with it this configuration.
                failed = true;
            }
        }
        if !failed {
            if is_call(entry) {
                if s.try_lift(op_of(entry), false) {
                    (entry, fresh) = (s.next[0], true);
                } else {
                    entry = s.next[entry];
                }
                continue;
            }
            // A return event: that operation had to take effect by now.
            if best.as_ref().is_none_or(|b| s.stack.len() > b.depth) {
                let from = s.stack.len().saturating_sub(RECENT);
                best = Some(Stuck {
                    depth: s.stack.len(),
                    state: s.state,
                    recent: s.stack[from..].iter().map(|&(i, _, _)| order[i]).collect(),
                    blocker: (entry != NIL).then(|| order[op_of(entry)]),
                });
            }
        }
        // Backtrack, past forced steps: their parent configuration failed too.
        loop {
            let Some((i, forced)) = s.unlift() else {
                let none = Stuck {
                    depth: 0,
                    state: init,
                    recent: Vec::new(),
                    blocker: None,
                };
                return Verdict::Violation(best.unwrap_or(none));
            };
            entry = s.next[call_node(i)];
            if !forced {
                break;
            }
        }
    }
    Verdict::Linearizable
}
