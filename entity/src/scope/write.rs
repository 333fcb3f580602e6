//! Carries the cache effects of writes to cached tables out of their transaction, and makes
//! sure no write to a cached table goes unseen.
//!
//! Entity hooks (`before_save`, `after_save`, …) run inside the database transaction, before
//! it commits, so they must not touch the cache themselves: a rollback would leave a trace.
//! They [`record`] a [`Change`] in the *write scope* of the current task instead; the server's
//! write path opened the scope with [`scope`], and applies the changes to the cache once the
//! transaction has committed (it drops them when it rolls back).
//!
//! Writes that skip the hooks are held to the same rule:
//!
//! * a hooked write outside a scope is refused with a `DbErr` ([`before_write`]);
//! * a bulk statement (`update_many`, `delete_many`, `insert_many`, raw SQL) may write a
//!   cached table only after [`declare_bulk`] named the ids it changes: the write path then
//!   marks those entries before `COMMIT` and deletes them after it;
//! * every statement is shown to [`observe_statement`] (the server's SQL connection calls it
//!   for each one it runs): a write to a cached table inside a scope that neither a hook
//!   announced nor a bulk declaration covers poisons the scope, and the write path rolls the
//!   transaction back instead of committing it. One outside any scope is reported to the
//!   caller, which logs it: it has already run, on a connection the write path does not own.
//!
//! The scope is a task-local, not a global: two Arena instances in one process never see
//! each other's changes.

use std::cell::RefCell;
use std::collections::HashMap;
use std::future::Future;

use sea_orm::DbErr;

/// The tables whose rows are cached, with the cache namespace of each.
pub const CACHED_TABLES: &[(&str, &str)] = &[
    ("meals", crate::meal::CACHE_ENTITY),
    ("trainers", crate::trainer::CACHE_ENTITY),
    ("pokemons", crate::pokemon::CACHE_ENTITY),
];

/// The tables whose rows the server lists: every write to one of them, inside a scope, makes
/// the write path replace the table's *collection version* (marked before `COMMIT`, dropped
/// after it), which cached lists are checked against. A write to one outside any scope is
/// reported as the writes to cached tables are.
pub const COLLECTION_TABLES: &[&str] = &["battles", "meals", "pokemons", "trades", "trainers"];

fn table_of(entity: &str) -> Option<&'static str> {
    CACHED_TABLES
        .iter()
        .find(|(_, e)| *e == entity)
        .map(|(t, _)| *t)
}

/// One cache entry a write changes, as the cache needs to know it.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// The entry's cache namespace, e.g. `meal`.
    pub entity: &'static str,
    /// The entry's id within it, as text.
    pub id: String,
    /// The entry's version after the write (strictly increasing per entry).
    pub version: i64,
    /// The entry's value after the write, or `None` when it is gone (deleted, soft or not).
    pub row: Option<serde_json::Value>,
}

/// What a write scope saw: the changes recorded by hooks, the entries of bulk statements,
/// and the first write that went around both.
#[derive(Debug, Default)]
pub struct Recorded {
    /// Changes recorded by hooks, in order.
    pub changes: Vec<Change>,
    /// Entries changed by declared bulk statements: `(entity, id)`; they are invalidated.
    pub bulk: Vec<(&'static str, String)>,
    /// Set when a statement wrote a cached table without a hook or a bulk declaration: the
    /// transaction must not commit.
    pub bypass: Option<String>,
    /// The [`COLLECTION_TABLES`] the scope wrote (or declared it may write).
    pub collections: Vec<&'static str>,
}

impl Recorded {
    fn wrote(&mut self, table: &str) {
        if let Some(t) = COLLECTION_TABLES.iter().find(|t| **t == table) {
            if !self.collections.contains(t) {
                self.collections.push(t);
            }
        }
    }
}

#[derive(Default)]
struct Scope {
    recorded: Recorded,
    /// Row writes announced by hooks and row locks, per table, not yet seen run.
    announced: HashMap<&'static str, usize>,
    /// Tables declared bulk statements may write.
    bulk_tables: Vec<&'static str>,
}

tokio::task_local! {
    static SCOPE: RefCell<Scope>;
}

/// Runs `fut` in a write scope and returns its output with what the scope recorded.
pub async fn scope<F: Future>(fut: F) -> (F::Output, Recorded) {
    SCOPE
        .scope(RefCell::new(Scope::default()), async move {
            let out = fut.await;
            let recorded = SCOPE.with(|s| std::mem::take(&mut s.borrow_mut().recorded));
            (out, recorded)
        })
        .await
}

/// Whether the current task is inside a write scope.
pub fn in_scope() -> bool {
    SCOPE.try_with(|_| ()).is_ok()
}

fn outside_scope(what: &str) -> DbErr {
    DbErr::Custom(format!(
        "{what} was written outside a write-through scope; use the service's write path"
    ))
}

/// Records a change in the current write scope; an error outside any scope.
pub fn record(change: Change) -> Result<(), DbErr> {
    SCOPE
        .try_with(|s| s.borrow_mut().recorded.changes.push(change))
        .map_err(|_| outside_scope("a cached entity"))
}

/// A hook's first step before writing one row of `entity`: refuses the write outside a
/// scope, and announces the one statement the write runs.
pub fn before_write(entity: &'static str) -> Result<(), DbErr> {
    let table = table_of(entity).ok_or_else(|| DbErr::Custom(format!("{entity} is not cached")))?;
    SCOPE
        .try_with(|s| {
            let mut s = s.borrow_mut();
            *s.announced.entry(table).or_default() += 1;
            s.recorded.wrote(table);
        })
        .map_err(|_| outside_scope(entity))
}

/// Announces one statement that writes rows of `table` without changing them (a row lock
/// taken with a no-op `UPDATE`). Outside a scope, or for a table that is not cached, it
/// announces nothing.
pub fn announce_row_lock(table: &str) {
    let Some((table, _)) = CACHED_TABLES.iter().find(|(t, _)| *t == table) else {
        return;
    };
    let _ = SCOPE.try_with(|s| *s.borrow_mut().announced.entry(table).or_default() += 1);
}

/// Declares that bulk statements of this scope write the rows of `entity` with these ids:
/// the statements are allowed, and the entries are marked before `COMMIT` and deleted after
/// it. Outside a scope it is an error.
pub fn declare_bulk(
    entity: &'static str,
    ids: impl IntoIterator<Item = String>,
) -> Result<(), DbErr> {
    let table = table_of(entity).ok_or_else(|| DbErr::Custom(format!("{entity} is not cached")))?;
    SCOPE
        .try_with(|s| {
            let mut s = s.borrow_mut();
            if !s.bulk_tables.contains(&table) {
                s.bulk_tables.push(table);
            }
            s.recorded.wrote(table);
            s.recorded
                .bulk
                .extend(ids.into_iter().map(|id| (entity, id)));
        })
        .map_err(|_| outside_scope(entity))
}

/// Shown every statement the server runs. Inside a scope, a write to a cached table that no
/// hook announced and no bulk declaration covers poisons the scope. Outside a scope such a
/// write is returned, to be logged.
pub fn observe_statement(sql: &str) -> Option<String> {
    if !may_write(sql) {
        return None;
    }
    let written = write_targets(sql);
    let listed = among(&written, COLLECTION_TABLES.iter().copied());
    let targets = among(&written, CACHED_TABLES.iter().map(|(t, _)| *t));
    if targets.is_empty() && listed.is_empty() {
        return None;
    }
    let outside = SCOPE
        .try_with(|s| {
            let mut s = s.borrow_mut();
            for table in &listed {
                s.recorded.wrote(table);
            }
            for table in &targets {
                if s.bulk_tables.contains(table) {
                    continue;
                }
                match s.announced.get_mut(table) {
                    Some(n) if *n > 0 => *n -= 1,
                    _ => {
                        if s.recorded.bypass.is_none() {
                            s.recorded.bypass = Some(format!(
                                "a statement wrote `{table}` without its hooks or a bulk \
                                 declaration (see entity::scope::write): {}",
                                abbreviate(sql)
                            ));
                        }
                    }
                }
            }
        })
        .is_err();
    outside.then(|| {
        format!(
            "a statement wrote table(s) {listed:?} outside the write path; their cache entries \
             and cached lists may be stale until they expire: {}",
            abbreviate(sql)
        )
    })
}

fn abbreviate(sql: &str) -> String {
    let one_line: String = sql.split_whitespace().collect::<Vec<_>>().join(" ");
    match one_line.char_indices().nth(160) {
        Some((i, _)) => format!("{}…", &one_line[..i]),
        None => one_line,
    }
}

/// Whether `sql` has a word that starts a write (`INSERT`, `UPDATE`, `DELETE`, `COPY`), in
/// any case: without one, [`write_targets`] finds nothing. Checked first without allocating,
/// as most statements are reads.
///
/// A statement whose first word is `SELECT` writes no table: PostgreSQL allows a writing
/// `WITH` only at the top of a statement (which then starts with `WITH`), SQLite's `WITH`
/// never writes, and one prepared statement is one statement. Such a statement, most of them,
/// is not scanned further (a `SELECT … FOR UPDATE` has the word but writes nothing).
fn may_write(sql: &str) -> bool {
    let text = sql.trim_start_matches(|c: char| c.is_ascii_whitespace());
    if text
        .as_bytes()
        .get(..7)
        .is_some_and(|w| w[..6].eq_ignore_ascii_case(b"select") && !is_word_byte(w[6]))
    {
        return false;
    }
    // Bytes, not chars: a statement is scanned on every run, and a non-ASCII byte is never
    // part of a keyword.
    sql.as_bytes().split(|b| !is_word_byte(*b)).any(|w| {
        matches!(w.len(), 4 | 6)
            && [b"insert".as_slice(), b"update", b"delete", b"copy"]
                .iter()
                .any(|k| w.eq_ignore_ascii_case(k))
    })
}

/// Whether `b` can be part of a keyword or an unquoted name.
fn is_word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// The cached tables a statement writes: the targets of `INSERT INTO`, `UPDATE`,
/// `DELETE FROM` and `COPY … FROM`, wherever they stand (a `WITH … INSERT` too).
pub fn written_tables(sql: &str) -> Vec<&'static str> {
    among(&write_targets(sql), CACHED_TABLES.iter().map(|(t, _)| *t))
}

/// The tables among `tables` named in `written`, once each, in `written`'s order.
fn among(
    written: &[String],
    tables: impl Iterator<Item = &'static str> + Clone,
) -> Vec<&'static str> {
    let mut out = Vec::new();
    for name in written {
        if let Some(table) = tables.clone().find(|t| t == name) {
            if !out.contains(&table) {
                out.push(table);
            }
        }
    }
    out
}

/// The (unqualified, lowercased) names of the tables a statement writes, in order. Words are
/// compared in place, without a lowercased copy of the statement.
fn write_targets(sql: &str) -> Vec<String> {
    let words: Vec<&str> = sql
        .split(|c: char| {
            c.is_whitespace() || matches!(c, '"' | '`' | '[' | ']' | '(' | ')' | ',' | ';')
        })
        .filter(|w| !w.is_empty())
        .collect();
    let is = |at: usize, keyword: &str| {
        words
            .get(at)
            .is_some_and(|w| w.eq_ignore_ascii_case(keyword))
    };
    let mut out = Vec::new();
    for (i, w) in words.iter().enumerate() {
        let target = if w.eq_ignore_ascii_case("insert") && is(i + 1, "into") {
            words.get(i + 2)
        } else if w.eq_ignore_ascii_case("update") {
            words.get(if is(i + 1, "only") { i + 2 } else { i + 1 })
        } else if w.eq_ignore_ascii_case("delete") && is(i + 1, "from") {
            words.get(if is(i + 2, "only") { i + 3 } else { i + 2 })
        } else if w.eq_ignore_ascii_case("copy")
            && words[i + 1..]
                .iter()
                .any(|w| w.eq_ignore_ascii_case("from"))
        {
            // `COPY t (cols) FROM STDIN` writes `t`; `COPY t TO …` only reads it.
            words.get(i + 1)
        } else {
            None
        };
        let Some(target) = target else { continue };
        out.push(
            target
                .rsplit('.')
                .next()
                .unwrap_or(target)
                .to_ascii_lowercase(),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_written_tables_of_a_statement_are_found_wherever_they_stand() {
        assert_eq!(
            written_tables(r#"UPDATE "meals" SET "price" = $1 WHERE "meals"."id" = $2"#),
            vec!["meals"]
        );
        assert_eq!(
            written_tables("WITH up AS (INSERT INTO pokemons AS p (id) SELECT 1 ON CONFLICT (id) DO UPDATE SET version = 2) SELECT 1"),
            vec!["pokemons"]
        );
        assert_eq!(
            written_tables(r#"DELETE FROM "trainers" WHERE 1 = 1"#),
            vec!["trainers"]
        );
        assert_eq!(
            written_tables("COPY pokemons (id, nickname) FROM STDIN"),
            vec!["pokemons"]
        );
        assert!(written_tables("COPY pokemons TO STDOUT").is_empty());
        assert!(written_tables(r#"SELECT * FROM "meals" WHERE id = 1 FOR UPDATE"#).is_empty());
        assert!(written_tables(r#"UPDATE "credentials" SET x = 1"#).is_empty());
    }

    #[test]
    fn a_statement_without_a_write_keyword_is_passed_over_and_every_write_is_not() {
        for sql in [
            r#"SELECT "meals"."updated_at", "meals"."deleted" FROM "meals" WHERE "id" = $1"#,
            "SELECT copying, inserted_at FROM trainers",
            // A SELECT writes nothing, whatever words it has.
            r#"SELECT 1 FROM "meals" FOR UPDATE"#,
            " \n select\t\"update\" FROM copy",
            "SELECT(1)",
        ] {
            assert!(!may_write(sql), "{sql}");
        }
        for sql in [
            r#"update "meals" SET x = 1"#,
            "WITH x AS (Insert INTO pokemons (id) VALUES (1)) SELECT 1",
            "DELETE FROM trainers",
            "COPY pokemons FROM STDIN",
            // Not a SELECT: a name that starts with the word, or a comment first.
            "SELECTED_ROWS; UPDATE meals SET x = 1",
            "/* select */ UPDATE meals SET x = 1",
        ] {
            assert!(may_write(sql), "{sql}");
        }
    }

    #[tokio::test]
    async fn an_unannounced_write_to_a_cached_table_poisons_the_scope() {
        let ((), rec) = scope(async {
            before_write("meal").unwrap();
            assert!(observe_statement(r#"UPDATE "meals" SET price = 1 WHERE id = 1"#).is_none());
            // A second statement nobody announced: an update_many.
            observe_statement(r#"UPDATE "meals" SET price = 2"#);
        })
        .await;
        assert!(rec.bypass.is_some());
    }

    #[tokio::test]
    async fn a_declared_bulk_write_is_allowed_and_its_ids_recorded() {
        let ((), rec) = scope(async {
            declare_bulk("pokemon", ["p1".to_owned(), "p2".to_owned()]).unwrap();
            observe_statement(r#"DELETE FROM "pokemons" WHERE owner_id = 't1'"#);
        })
        .await;
        assert!(rec.bypass.is_none());
        assert_eq!(rec.bulk.len(), 2);
        assert_eq!(rec.collections, ["pokemons"]);
    }

    #[tokio::test]
    async fn every_listed_table_a_scope_writes_is_recorded() {
        let ((), rec) = scope(async {
            observe_statement(r#"INSERT INTO "battles" ("a") VALUES ($1)"#);
            before_write("meal").unwrap();
            observe_statement(r#"UPDATE "meals" SET wins = 1 WHERE id = 1"#);
            observe_statement(r#"INSERT INTO "users" ("a") VALUES ($1)"#);
        })
        .await;
        assert!(rec.bypass.is_none());
        assert_eq!(rec.collections, ["battles", "meals"]);
    }

    #[test]
    fn a_write_outside_any_scope_is_reported() {
        assert!(observe_statement(r#"UPDATE "meals" SET price = 2"#).is_some());
        assert!(observe_statement(r#"UPDATE "users" SET x = 2"#).is_none());
        assert!(observe_statement(r#"INSERT INTO "trades" (x) VALUES (1)"#).is_some());
    }
}
