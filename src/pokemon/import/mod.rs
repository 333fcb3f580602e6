//! CSV imports of trainers and Pokémon: the whole file is validated first, then every row
//! is written in one database transaction.
//!
//! 1. **Validation.** The upload (async-graphql keeps it in a temporary file) is read as a
//!    stream (the `csv` crate, on a blocking thread) and every row validated. What stays in
//!    memory is the row count, the errors, each id's first row (for duplicates; they are the
//!    ids written) and, for Pokémon, each owner's rows (for the unknown-owner check, one
//!    query); never the rows. A file with any bad row, or a dry run, ends here: nothing was
//!    written, and neither the database nor the cache was touched.
//! 2. **Write.** The file is read again, now known valid, and its rows written in ONE
//!    transaction ("insert or update by id") through the write path's bulk entry
//!    (`consistency`): every imported id's entry is *marked* before `COMMIT`, so readers
//!    treat it as a miss and may not fill it (marking revokes every reader's fill lease),
//!    and after `COMMIT` the entries are deleted while still marked, then this import's
//!    marks are cleared. A reader that read a row before the commit cannot fill its older
//!    copy afterwards. Deleted entries leave no tombstone with a huge version, so later
//!    writes and fills of these ids work as usual.
//!    - PostgreSQL (`consistency::write_copy`, on the transaction's own connection): the
//!      ids are marked by a task of their own while the transaction runs, and the import
//!      answers once `COMMIT` is done (the entries are dropped and the marks cleared right
//!      after, in the same task; until then reads of these ids go to the database). The
//!      rows are streamed as `COPY … FROM STDIN` text. When none of the ids exists yet (one
//!      `= ANY` query), they go straight into the table; otherwise into a temporary table
//!      (`ON COMMIT DROP`), then
//!      one `INSERT … SELECT … ON CONFLICT (id) DO UPDATE` that also counts the inserted
//!      rows (`xmax = 0`). Pokémon owners are checked set-wise: one statement locks every
//!      owner named in the file (`FOR KEY SHARE`, what the foreign key's trigger takes row
//!      by row) and counts them, so none can be deleted until `COMMIT`; where the database
//!      role may set `session_replication_role` (a superuser, or one granted `SET` on it),
//!      the per-row trigger is then switched off for the `COPY`/`INSERT` alone, since it
//!      would check again what is already checked and locked. Without that right the
//!      trigger runs as usual.
//!    - SQLite: batches of [`CHUNK_ROWS`] rows, each asked which of its ids exist, then
//!      written with sea-orm's `insert_many … ON CONFLICT`.
//!
//! All-or-nothing is the transaction's: any failure rolls it back (a temporary table goes
//! with it), and marks set while it ran are cleared, so the database and the cache are as
//! they were. Nothing is staged elsewhere: the validated rows are read back from the
//! upload's own file.
//!
//! The batched and copied writes skip the entity hooks (recording a change per row of a
//! 100 000-row file would hold every row in memory until commit); the bulk declaration is
//! what lets them write the table, and what gets their entries invalidated.
//!
//! Where it lives: CSV reading and validation in `parse.rs`, the two row types and their
//! columns (named once, in [`rows::Importable::FIELDS`]) in `rows.rs`, the PostgreSQL write
//! in `postgres.rs`, the SQLite one in `sqlite.rs`.

mod parse;
mod postgres;
mod rows;
mod sqlite;

use std::collections::HashSet;
use std::fs::File;
use std::sync::Arc;

use entity::{pokemon, trainer};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DbBackend, DbErr, EntityTrait, QueryFilter, QuerySelect, SqlErr,
};

use self::rows::Importable;
use crate::error::{AppError, AppResult, OrInternal};
use crate::state::AppState;

/// Rows per batched insert on SQLite, and ids per existence query.
pub const CHUNK_ROWS: usize = 1000;

/// One bad row of an imported file.
#[derive(Debug, Clone, PartialEq)]
pub struct RowError {
    /// The row, 1 for the first row after the header.
    pub row: i32,
    /// The column at fault (as named in the header), when there is one.
    pub column: Option<String>,
    /// What is wrong.
    pub message: String,
}

/// The outcome of an import.
#[derive(Debug, Clone)]
pub struct ImportOutcome {
    /// The import's id (in the server's log with the outcome).
    pub import_id: String,
    /// Data rows read (the header excluded).
    pub rows: i32,
    /// Rows inserted (on a dry run: that would be). 0 when there are errors.
    pub inserted: i32,
    /// Rows that updated an existing id (on a dry run: that would). 0 when there are errors.
    pub updated: i32,
    /// Every bad row; when there is any, nothing was written.
    pub errors: Vec<RowError>,
}

/// Which file is imported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImportKind {
    /// `id,firstName,lastName,dateOfBirth`.
    Trainers,
    /// `id,nickname,species,level,owner,dateOfOwnership`.
    Pokemons,
}

impl ImportKind {
    fn header(self) -> &'static [&'static str] {
        match self {
            ImportKind::Trainers => &["id", "firstName", "lastName", "dateOfBirth"],
            ImportKind::Pokemons => &[
                "id",
                "nickname",
                "species",
                "level",
                "owner",
                "dateOfOwnership",
            ],
        }
    }
}

/// Imports trainers from a CSV upload.
pub async fn import_trainers(
    state: &AppState,
    file: File,
    dry_run: bool,
) -> AppResult<ImportOutcome> {
    run::<trainer::Model>(state, ImportKind::Trainers, file, dry_run).await
}

/// Imports Pokémon from a CSV upload.
pub async fn import_pokemons(
    state: &AppState,
    file: File,
    dry_run: bool,
) -> AppResult<ImportOutcome> {
    run::<pokemon::Model>(state, ImportKind::Pokemons, file, dry_run).await
}

async fn run<M: Importable>(
    state: &AppState,
    kind: ImportKind,
    file: File,
    dry_run: bool,
) -> AppResult<ImportOutcome> {
    let import_id = uuid::Uuid::new_v4().simple().to_string();
    let file = Arc::new(file);
    let reading = file.clone();
    let mut v = tokio::task::spawn_blocking(move || parse::validate::<M>(kind, &reading))
        .await
        .or_internal("the CSV parser panicked")??;
    if kind == ImportKind::Pokemons && !v.owners.is_empty() {
        let owners: Vec<String> = v.owners.keys().cloned().collect();
        let known =
            existing_ids::<trainer::Entity, _>(&state.db, trainer::Column::Id, &owners).await?;
        for owner in owners.iter().filter(|o| !known.contains(*o)) {
            for row in &v.owners[owner] {
                v.errors.push(RowError {
                    row: *row as i32,
                    column: Some("owner".into()),
                    message: format!("no trainer with id `{owner}`"),
                });
            }
        }
    }
    let mut report = ImportOutcome {
        import_id,
        rows: v.rows as i32,
        inserted: 0,
        updated: 0,
        errors: Vec::new(),
    };
    if !v.errors.is_empty() {
        v.errors
            .sort_by(|a, b| (a.row, &a.column).cmp(&(b.row, &b.column)));
        report.errors = v.errors;
        return Ok(report);
    }
    let ids: Vec<String> = v.first_row_of.into_keys().collect();
    let postgres = state.db.get_database_backend() == DbBackend::Postgres;
    let (inserted, updated) = if dry_run {
        let existing = if postgres {
            postgres::existing_count::<M>(state, &ids).await?
        } else {
            rows::existing::<M, _>(&state.db, &ids).await?.len()
        };
        (ids.len() - existing, existing)
    } else if postgres {
        let owners = v.owners.into_keys().collect();
        postgres::write::<M>(state, kind, file, ids, owners).await?
    } else {
        sqlite::write::<M>(state, kind, file, ids).await?
    };
    report.inserted = inserted as i32;
    report.updated = updated as i32;
    tracing::info!(
        import = %report.import_id,
        entity = M::CACHE_ENTITY,
        rows = report.rows,
        inserted,
        updated,
        dry_run,
        "import done"
    );
    Ok(report)
}

/// Which of `ids` exist in `E`'s table, asked in chunks.
async fn existing_ids<E, C>(db: &C, col: E::Column, ids: &[String]) -> AppResult<HashSet<String>>
where
    E: EntityTrait,
    C: ConnectionTrait + Sync,
{
    let mut found = HashSet::new();
    for part in ids.chunks(CHUNK_ROWS) {
        let rows: Vec<String> = E::find()
            .select_only()
            .column(col)
            .filter(col.is_in(part.iter().cloned()))
            .into_tuple()
            .all(db)
            .await?;
        found.extend(rows);
    }
    Ok(found)
}

fn deleted_owner() -> AppError {
    AppError::Conflict(
        "owner: a trainer named in the file was deleted during the import; nothing was written"
            .into(),
    )
}

fn write_error(e: DbErr) -> AppError {
    match e.sql_err() {
        Some(SqlErr::ForeignKeyConstraintViolation(_)) => deleted_owner(),
        Some(SqlErr::UniqueConstraintViolation(_)) => AppError::Conflict(
            "id: a row of the file was created by another write during the import; nothing \
             was written, import the file again"
                .into(),
        ),
        _ => e.into(),
    }
}
