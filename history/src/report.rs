//! What a check found.

use serde::{Deserialize, Serialize};
use std::fmt;

/// An operation of the history: an index into `History::ops` or `History::lists`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OpId {
    Op(usize),
    List(usize),
}

impl fmt::Display for OpId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OpId::Op(i) => write!(f, "op#{i}"),
            OpId::List(i) => write!(f, "list#{i}"),
        }
    }
}

/// An operation named in a violation, with a one-line description.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Involved {
    pub id: OpId,
    pub desc: String,
}

/// One thing the history shows went wrong.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Violation {
    /// The key, for a per-key violation.
    pub key: Option<String>,
    /// The list read, for a snapshot violation.
    pub list: Option<usize>,
    /// One line: what is impossible.
    pub reason: String,
    /// The few operations that show it.
    pub ops: Vec<Involved>,
}

/// Operations of one kind, by outcome.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub ok: usize,
    pub failed: usize,
    pub indeterminate: usize,
}

impl Counts {
    pub fn total(&self) -> usize {
        self.ok + self.failed + self.indeterminate
    }
}

impl fmt::Display for Counts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} (ok {}, failed {}, indeterminate {})",
            self.total(),
            self.ok,
            self.failed,
            self.indeterminate
        )
    }
}

/// The result of [`crate::check`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    pub writes: Counts,
    pub reads: Counts,
    pub lists: Counts,
    /// (key, value) pairs returned by successful list reads.
    pub list_items: usize,
    /// Keys that some operation touched.
    pub keys_checked: usize,
    /// Keys whose search ran out of budget: neither proven nor refuted.
    pub keys_unknown: Vec<String>,
    pub violations: Vec<Violation>,
}

impl Report {
    /// No violation, and every key decided.
    pub fn is_ok(&self) -> bool {
        self.violations.is_empty() && self.keys_unknown.is_empty()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verdict = if !self.violations.is_empty() {
            "VIOLATED"
        } else if !self.keys_unknown.is_empty() {
            "UNKNOWN"
        } else {
            "OK"
        };
        writeln!(f, "history check: {verdict}")?;
        writeln!(f, "  writes: {}", self.writes)?;
        writeln!(f, "  reads:  {}", self.reads)?;
        writeln!(f, "  lists:  {}, {} items", self.lists, self.list_items)?;
        write!(
            f,
            "  keys: {} checked, {} unknown",
            self.keys_checked,
            self.keys_unknown.len()
        )?;
        if !self.keys_unknown.is_empty() {
            write!(f, " ({})", self.keys_unknown.join(", "))?;
        }
        for v in &self.violations {
            match (&v.key, v.list) {
                (Some(key), _) => write!(f, "\n  - key {key:?}: {}", v.reason)?,
                (None, Some(list)) => write!(f, "\n  - list#{list}: {}", v.reason)?,
                (None, None) => write!(f, "\n  - {}", v.reason)?,
            }
            for op in &v.ops {
                write!(f, "\n      {}", op.desc)?;
            }
        }
        Ok(())
    }
}
