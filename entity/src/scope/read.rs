//! What an operation read, for the memo of responses (`graphql::memo`): inside
//! [`tracking`], every versioned cache entry a lookup answered is recorded with its version
//! ([`record`]), and every other read — a plain cache key, a document, the viewer — marks
//! the operation *impure* ([`taint`]).
//!
//! A SQL statement is shown to [`statement`]: it leaves the operation pure only when every
//! table it names is a collection whose version the operation recorded *before* running it
//! ([`record_collection`]). Every write to such a table marks its collection before `COMMIT`
//! and replaces its version after it (`entity::scope::write::COLLECTION_TABLES`), so a
//! statement that ran after the version was read saw every write that version stands for:
//! while the version is unchanged, running it again would answer the same.
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
    /// Tables whose collection version is among `entries`: statements reading only these
    /// leave the operation pure.
    pub collections: Vec<&'static str>,
    /// Set when the answer depends on who asked: the viewer was resolved under a version of
    /// their own data ([`record_viewer`]), so a memoized answer may be served again only to
    /// the same credential.
    pub keyed: bool,
    /// The earliest instant (epoch milliseconds) at which something read stops being true by
    /// itself, with no write (a session expires).
    pub until: Option<i64>,
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

/// Whether the current task records what it reads (the memo may keep its response): a
/// collection version is worth reading only then.
pub fn is_tracking() -> bool {
    LOG.try_with(|l| !l.borrow().tainted).unwrap_or(false)
}

/// Records that the operation read the version of `table`'s collection, at `key`: its
/// statements may read `table` from now on.
pub fn record_collection(table: &'static str, key: &str, version: i64) {
    record_covering(key, version, &[table]);
}

/// Records that the operation read the version at `key`, which stands for every row of
/// `tables` the operation may read: its statements may read them from now on.
pub fn record_covering(key: &str, version: i64, tables: &[&'static str]) {
    let _ = LOG.try_with(|l| {
        let mut l = l.borrow_mut();
        l.entries.push((key.to_owned(), version));
        for table in tables {
            if !l.collections.contains(table) {
                l.collections.push(table);
            }
        }
    });
}

/// Records that the operation's answer depends on its viewer, as resolved under `pinned`
/// (the key and version of the viewer's own data, recorded with the tables it covers,
/// [`crate::OWNED_TABLES`]; `None` for a request with no credential). `until` is when the
/// credential stops being valid by itself.
pub fn record_viewer(pinned: Option<(&str, i64)>, until: Option<i64>) {
    if let Some((key, version)) = pinned {
        record_covering(key, version, crate::OWNED_TABLES);
    }
    let _ = LOG.try_with(|l| {
        let mut l = l.borrow_mut();
        l.keyed = true;
        if let Some(until) = until {
            l.until = Some(l.until.map_or(until, |u| u.min(until)));
        }
    });
}

/// Shown every SQL statement the operation runs: one that names a table whose collection
/// version was not recorded first (or names no known table at all) taints it.
pub fn statement(sql: &str) {
    let _ = LOG.try_with(|l| {
        let mut l = l.borrow_mut();
        if l.tainted {
            return;
        }
        let tables = crate::tables_named(sql);
        if tables.is_empty() || tables.iter().any(|t| !l.collections.contains(t)) {
            l.tainted = true;
        }
    });
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

    #[tokio::test]
    async fn a_statement_is_pure_only_over_collections_read_before_it() {
        let sql =
            r#"SELECT "meals"."id", "meals"."battles" FROM "meals" WHERE "meals"."cuisine" = $1"#;
        let ((), log) = tracking(async { statement(sql) }).await;
        assert!(!log.is_pure(), "no collection version was read");
        let ((), log) = tracking(async {
            record_collection("meals", "coll:meals", 7);
            statement(sql);
            statement(r#"SELECT COUNT(*) AS num_items FROM (SELECT "meals"."id" FROM "meals") AS "sub_query""#);
        })
        .await;
        assert!(log.is_pure());
        assert_eq!(log.entries, [("coll:meals".into(), 7)]);
        let ((), log) = tracking(async {
            record_collection("meals", "coll:meals", 7);
            statement(r#"SELECT * FROM meals m, users u WHERE m.id = u.id"#);
        })
        .await;
        assert!(!log.is_pure(), "users has no collection version");
        let ((), log) = tracking(async {
            record_collection("meals", "coll:meals", 7);
            statement("SELECT 1");
        })
        .await;
        assert!(!log.is_pure(), "a statement naming no known table");
    }
}
