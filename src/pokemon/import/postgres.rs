//! The import's write on PostgreSQL: the rows streamed as `COPY` text on the transaction's own
//! connection (`consistency::write_copy`), straight into the table or through a temporary
//! one and an upsert.

use std::fs::File;
use std::io::Write;
use std::sync::Arc;

use chrono::{Datelike, NaiveDate};
use futures::future::BoxFuture;
use sea_orm::sqlx::postgres::PgRow;
use sea_orm::sqlx::{self, PgConnection, Row as _};
use tokio::sync::mpsc;

use super::parse::each_row;
use super::rows::Importable;
use super::{deleted_owner, write_error, ImportKind};
use crate::backends::sql::sqlx_error;
use crate::consistency::{self, PgBulk};
use crate::error::{AppError, AppResult, OrInternal};
use crate::state::AppState;

/// Appends `s` as a `COPY` text field: backslash, tab, newline and carriage return escaped.
pub(super) fn copy_text(out: &mut Vec<u8>, s: &str) {
    for b in s.bytes() {
        match b {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\t' => out.extend_from_slice(b"\\t"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b => out.push(b),
        }
    }
}

/// Appends a date as `YYYY-MM-DD`, which PostgreSQL reads whatever its `DateStyle`.
pub(super) fn copy_date(out: &mut Vec<u8>, d: NaiveDate) {
    let _ = write!(out, "{:04}-{:02}-{:02}", d.year(), d.month(), d.day());
}

/// Bytes of `COPY` text sent at a time.
const COPY_BUFFER: usize = 64 * 1024;

/// Step 2 on PostgreSQL, on a blocking thread: the rows as `COPY` text, in buffers of about
/// [`COPY_BUFFER`] bytes; returns how many rows were sent.
fn copy_buffers<M: Importable>(
    kind: ImportKind,
    file: &File,
    version: i64,
    tx: mpsc::Sender<Vec<u8>>,
) -> AppResult<usize> {
    let mut buf = Vec::with_capacity(COPY_BUFFER + 1024);
    let mut sent = 0;
    let mut open_channel = true;
    each_row::<M>(kind, file, |row| {
        row.copy_row(version, &mut buf);
        sent += 1;
        if buf.len() >= COPY_BUFFER {
            let full = std::mem::replace(&mut buf, Vec::with_capacity(COPY_BUFFER + 1024));
            open_channel = tx.blocking_send(full).is_ok();
        }
        open_channel
    })?;
    if !open_channel || (!buf.is_empty() && tx.blocking_send(buf).is_err()) {
        return Err(AppError::internal("the import's COPY stopped"));
    }
    Ok(sent)
}

/// PostgreSQL: how many of `ids` exist, in one query (a dry run's count).
pub(super) async fn existing_count<M: Importable>(
    state: &AppState,
    ids: &[String],
) -> AppResult<usize> {
    let sql = format!("SELECT count(*) FROM {} WHERE id = ANY($1)", M::TABLE);
    let mut conn = state
        .db
        .get_postgres_connection_pool()
        .acquire()
        .await
        .map_err(sqlx_error)?;
    state
        .metrics
        .sql_queries
        .with_label_values(&[crate::metrics::caller()])
        .inc();
    let n = count(&mut conn, &sql, ids).await.map_err(sqlx_error)?;
    Ok(n as usize)
}

/// Step 2 on PostgreSQL: `COPY`, in one transaction on its own connection, through the
/// write path's bulk entry for `COPY` (`consistency::write_copy`). Returns (inserted,
/// updated).
pub(super) async fn write<M: Importable>(
    state: &AppState,
    kind: ImportKind,
    file: Arc<File>,
    ids: Vec<String>,
    owners: Vec<String>,
) -> AppResult<(usize, usize)> {
    let rows = ids.len();
    consistency::write_copy(state, M::CACHE_ENTITY, ids, move |mut db, ids| {
        Box::pin(async move {
            // While the ids are being marked: which of them exist already.
            let sql = format!("SELECT count(*) FROM {} WHERE id = ANY($1)", M::TABLE);
            let existing = count(db.statement(&sql), &sql, ids)
                .await
                .map_err(sqlx_error)?;
            let version = entity::versioning::next_version(None);
            let unchecked = !owners.is_empty() && lock_owners(&mut db, &owners).await?;
            let copied = if existing == 0 {
                // Every id is new: straight into the table.
                let sql = format!("COPY {} ({}) FROM STDIN", M::TABLE, M::columns());
                let copied = copy_in::<M>(&mut db, &sql, kind, file, version).await?;
                (copied, 0)
            } else {
                let staging = M::staging();
                execute(db.statement(&staging), &staging)
                    .await
                    .map_err(sqlx_error)?;
                let sql = format!("COPY import_rows ({}) FROM STDIN", M::columns());
                copy_in::<M>(&mut db, &sql, kind, file, version).await?;
                let upsert = M::upsert_staged();
                let counts = fetch_one(db.statement(&upsert), &upsert)
                    .await
                    .map_err(|e| write_error(sqlx_error(e)))?;
                let inserted: i64 = counts.try_get("inserted").map_err(sqlx_error)?;
                let total: i64 = counts.try_get("total").map_err(sqlx_error)?;
                (inserted as usize, (total - inserted) as usize)
            };
            if unchecked {
                run_sql(&mut db, "SET LOCAL session_replication_role = origin").await?;
            }
            if copied.0 + copied.1 != rows {
                return Err(AppError::internal(format!(
                    "the import wrote {} rows of {rows}",
                    copied.0 + copied.1
                )));
            }
            Ok(copied)
        })
    })
    .await
}

// sqlx's calls are boxed in the functions below: inside the write path's higher-ranked
// closure the compiler cannot otherwise prove their futures `Send` for every lifetime.

/// Runs `sql` (statements without parameters).
fn execute<'a>(conn: &'a mut PgConnection, sql: &'a str) -> BoxFuture<'a, Result<(), sqlx::Error>> {
    let run = sqlx::Executor::execute(conn, sqlx::raw_sql(sql));
    Box::pin(async move { run.await.map(drop) })
}

/// Runs `sql`, a count with the text array `$1`.
fn count<'a>(
    conn: &'a mut PgConnection,
    sql: &'a str,
    values: &'a [String],
) -> BoxFuture<'a, Result<i64, sqlx::Error>> {
    Box::pin(async move { sqlx::query_scalar(sql).bind(values).fetch_one(conn).await })
}

/// Runs `sql`, which answers one row.
fn fetch_one<'a>(
    conn: &'a mut PgConnection,
    sql: &'a str,
) -> BoxFuture<'a, Result<PgRow, sqlx::Error>> {
    Box::pin(async move { sqlx::query(sql).fetch_one(conn).await })
}

/// Runs one statement without parameters.
async fn run_sql(db: &mut PgBulk<'_>, sql: &'static str) -> AppResult<()> {
    execute(db.statement(sql), sql).await.map_err(sqlx_error)?;
    Ok(())
}

/// Locks every owner of the file against deletion until `COMMIT` (`FOR KEY SHARE`, as the
/// foreign key's trigger does row by row) and checks they all exist; then, where the role
/// may, switches off the per-row trigger for the rest of the transaction (until
/// `session_replication_role` is set back): the check it would make is done. Returns
/// whether it was switched off.
async fn lock_owners(db: &mut PgBulk<'_>, owners: &[String]) -> AppResult<bool> {
    const LOCK: &str = "SELECT count(*) FROM \
        (SELECT 1 FROM trainers WHERE id = ANY($1) FOR KEY SHARE) AS owners";
    let locked = count(db.statement(LOCK), LOCK, owners)
        .await
        .map_err(sqlx_error)?;
    if locked as usize != owners.len() {
        return Err(deleted_owner());
    }
    const SKIP: &str = "SAVEPOINT import_fk; SET LOCAL session_replication_role = replica; \
        RELEASE SAVEPOINT import_fk";
    match execute(db.statement(SKIP), SKIP).await {
        Ok(()) => Ok(true),
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42501") => {
            // Not allowed: the foreign key's trigger checks every row again.
            run_sql(db, "ROLLBACK TO SAVEPOINT import_fk").await?;
            Ok(false)
        }
        Err(e) => Err(sqlx_error(e).into()),
    }
}

/// Streams the rows of the file into `sql` (a `COPY … FROM STDIN`), read on a blocking
/// thread; returns the rows copied.
async fn copy_in<M: Importable>(
    db: &mut PgBulk<'_>,
    sql: &str,
    kind: ImportKind,
    file: Arc<File>,
    version: i64,
) -> AppResult<usize> {
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(4);
    let reader = tokio::task::spawn_blocking(move || copy_buffers::<M>(kind, &file, version, tx));
    let mut copy = db
        .statement(sql)
        .copy_in_raw(sql)
        .await
        .map_err(|e| write_error(sqlx_error(e)))?;
    let mut sending = Ok(());
    while let Some(buf) = rx.recv().await {
        if let Err(e) = copy.send(buf).await {
            sending = Err(e);
            break;
        }
    }
    drop(rx);
    let read = reader.await.or_internal("the CSV reader panicked");
    match (sending, read) {
        (Ok(()), Ok(Ok(sent))) => {
            let copied = copy
                .finish()
                .await
                .map_err(|e| write_error(sqlx_error(e)))?;
            if copied as usize != sent {
                return Err(AppError::internal(format!(
                    "COPY took {copied} rows of {sent}"
                )));
            }
            Ok(sent)
        }
        (Err(e), _) => {
            let _ = copy.abort("the import stopped").await;
            Err(write_error(sqlx_error(e)))
        }
        (Ok(()), Err(e)) | (Ok(()), Ok(Err(e))) => {
            let _ = copy.abort("the import stopped").await;
            Err(e)
        }
    }
}
