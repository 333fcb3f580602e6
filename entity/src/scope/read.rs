//! What an operation read, for the memo of responses (`graphql::memo`): inside
//! [`tracking`], every versioned cache entry a lookup answered is recorded with its version
//! ([`record`]), and every other read — a SQL statement, a plain cache key, a document, the
//! viewer — marks the operation *impure* ([`taint`]).
//!
//! A pure operation's response is a function of its document, its variables and the entries
//! it read: while each of those entries still holds the version recorded, running it again
//! would answer the same. The log lives in a task-local, so only what the operation's own
//! task does is seen; the readers that could run elsewhere (spawned tasks) are writes, never
//! queries.

use std::cell::RefCell;
use std::future::Future;

/// The reads of one operation.
#[derive(Debug, Default)]
pub struct ReadLog {
    /// Versioned entries read: `(cache key, version)`.
    pub entries: Vec<(String, i64)>,
    /// Set by any read that is not a versioned entry's.
    pub tainted: bool,
}

impl ReadLog {
    /// Whether the operation read only versioned entries.
    pub fn is_pure(&self) -> bool {
        !self.tainted
    }
}

tokio::task_local! {
    static LOG: RefCell<ReadLog>;
}

/// Runs `fut`, returning its output with what it read.
pub async fn tracking<F: Future>(fut: F) -> (F::Output, ReadLog) {
    LOG.scope(RefCell::new(ReadLog::default()), async move {
        let out = fut.await;
        let log = LOG.with(|l| std::mem::take(&mut *l.borrow_mut()));
        (out, log)
    })
    .await
}

/// Records that the operation read the entry `key` at `version`.
pub fn record(key: &str, version: i64) {
    let _ = LOG.try_with(|l| l.borrow_mut().entries.push((key.to_owned(), version)));
}

/// Records that the operation read something that is not a versioned entry.
pub fn taint() {
    let _ = LOG.try_with(|l| l.borrow_mut().tainted = true);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reads_are_logged_only_inside_tracking() {
        record("outside", 1);
        taint();
        let ((), log) = tracking(async {
            record("meal:1", 3);
            tokio::task::yield_now().await;
            record("meal:2", 4);
        })
        .await;
        assert!(log.is_pure());
        assert_eq!(log.entries, [("meal:1".into(), 3), ("meal:2".into(), 4)]);
        let ((), log) = tracking(async { taint() }).await;
        assert!(!log.is_pure());
    }
}
