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
//! upload's own file (earlier versions staged them in the cache tier under the import id,
//! which cost a JSON encoding, a round trip per 1 000 rows each way and the staged keys'
//! memory in Redis).
//!
//! The batched and copied writes skip the entity hooks (recording a change per row of a
//! 100 000-row file would hold every row in memory until commit); the bulk declaration is
//! what lets them write the table, and what gets their entries invalidated.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{BufReader, Seek, SeekFrom, Write};
use std::sync::Arc;

use chrono::{Datelike, NaiveDate};
use entity::{pokemon, trainer};
use futures::future::BoxFuture;
use sea_orm::sea_query::{Expr, OnConflict};
use sea_orm::sqlx::postgres::PgRow;
use sea_orm::sqlx::{self, PgConnection, Row as _};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseTransaction, DbBackend, DbErr, EntityTrait, QueryFilter,
    QuerySelect, Set, SqlErr,
};
use tokio::sync::mpsc;

use super::types;
use crate::backends::sql::{lock_rows, sqlx_error};
use crate::consistency::{self, PgBulk};
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

/// One row's fields, by header name.
struct Row<'r> {
    record: &'r csv::StringRecord,
    columns: &'r HashMap<&'static str, usize>,
    row: u32,
    errors: Vec<RowError>,
}

impl<'r> Row<'r> {
    fn fail(&mut self, column: &str, message: impl Into<String>) {
        self.errors.push(RowError {
            row: self.row as i32,
            column: Some(column.to_owned()),
            message: message.into(),
        });
    }

    /// The trimmed value of `column`, or an error when it is empty.
    fn value(&mut self, column: &'static str) -> Option<&'r str> {
        let v = self
            .record
            .get(self.columns[column])
            .map(str::trim)
            .filter(|v| !v.is_empty());
        if v.is_none() {
            self.fail(column, "missing value");
        }
        v
    }

    /// Runs a validator of `types`, turning its error into this row's error for `column`.
    fn check<T>(
        &mut self,
        column: &'static str,
        f: impl FnOnce(&'static str, &str) -> AppResult<T>,
    ) -> Option<T> {
        let raw = self.value(column)?;
        match f(column, raw) {
            Ok(v) => Some(v),
            Err(e) => {
                let msg = e.message();
                let msg = msg
                    .strip_prefix(&format!("{column}: "))
                    .map(str::to_owned)
                    .unwrap_or(msg);
                self.fail(column, msg);
                None
            }
        }
    }

    fn date(&mut self, column: &'static str) -> Option<NaiveDate> {
        self.check(column, types::csv_date)
    }
}

fn parse_trainer(r: &mut Row<'_>) -> Option<trainer::Model> {
    let id = r.check("id", types::entity_id);
    let first_name = r.check("firstName", types::text);
    let last_name = r.check("lastName", types::text);
    let date_of_birth = r.date("dateOfBirth");
    Some(trainer::Model {
        id: id?,
        first_name: first_name?,
        last_name: last_name?,
        date_of_birth: date_of_birth?,
        version: 0,
    })
}

fn parse_pokemon(r: &mut Row<'_>) -> Option<pokemon::Model> {
    let id = r.check("id", types::entity_id);
    let nickname = r.check("nickname", types::text);
    let species = r.check("species", types::text);
    let level = r.check("level", |col, raw| {
        let n = raw
            .parse::<i64>()
            .map_err(|_| AppError::invalid(col, format!("`{raw}` is not a whole number")))?;
        types::level(col, n)
    });
    let owner_id = r.check("owner", types::entity_id);
    let date_of_ownership = r.date("dateOfOwnership");
    Some(pokemon::Model {
        id: id?,
        nickname: nickname?,
        species: species?,
        level: level?,
        owner_id: owner_id?,
        date_of_ownership: date_of_ownership?,
        version: 0,
    })
}

/// A row type that can be imported.
trait Importable: Send + Sized + 'static {
    /// The cache namespace of the entity.
    const CACHE_ENTITY: &'static str;
    /// PostgreSQL: the table.
    const TABLE: &'static str;
    /// PostgreSQL: the columns of a `COPY` row, in the order of [`Importable::copy_row`].
    const COLUMNS: &'static str;
    /// PostgreSQL: the temporary table the rows are copied into when some ids exist.
    const STAGING: &'static str;
    /// PostgreSQL: insert-or-update every row of the temporary table; returns `(inserted,
    /// total)`. Inserted rows keep the version they were copied with; updated ones get their
    /// version + 1 (versions only grow, see `entity::versioning`).
    const UPSERT_STAGED: &'static str;
    fn parse(row: &mut Row<'_>) -> Option<Self>;
    fn id(&self) -> &str;
    fn owner(&self) -> Option<&str> {
        None
    }
    /// Appends the row, at `version`, as a line of `COPY` text ([`Importable::COLUMNS`]).
    fn copy_row(&self, version: i64, out: &mut Vec<u8>);
    /// SQLite: which of `ids` exist, asked in chunks.
    fn existing<'a, C: ConnectionTrait + Sync>(
        db: &'a C,
        ids: &'a [String],
    ) -> BoxFuture<'a, AppResult<HashSet<String>>>;
    /// SQLite: one batched insert-or-update. Inserted rows get `version`; updated ones their
    /// version + 1.
    fn upsert(
        txn: &DatabaseTransaction,
        rows: Vec<Self>,
        version: i64,
    ) -> BoxFuture<'_, Result<(), DbErr>>;
}

impl Importable for trainer::Model {
    const CACHE_ENTITY: &'static str = trainer::CACHE_ENTITY;
    const TABLE: &'static str = "trainers";
    const COLUMNS: &'static str = "id, first_name, last_name, date_of_birth, version";
    const STAGING: &'static str = "CREATE TEMPORARY TABLE import_rows (id text, first_name \
        text, last_name text, date_of_birth date, version bigint) ON COMMIT DROP";
    const UPSERT_STAGED: &'static str = "WITH up AS (
        INSERT INTO trainers AS t (id, first_name, last_name, date_of_birth, version)
        SELECT id, first_name, last_name, date_of_birth, version FROM import_rows
        ON CONFLICT (id) DO UPDATE SET
            first_name = EXCLUDED.first_name,
            last_name = EXCLUDED.last_name,
            date_of_birth = EXCLUDED.date_of_birth,
            version = t.version + 1
        RETURNING (xmax = 0) AS inserted
    )
    SELECT count(*) FILTER (WHERE inserted) AS inserted, count(*) AS total FROM up";
    fn parse(row: &mut Row<'_>) -> Option<Self> {
        parse_trainer(row)
    }
    fn id(&self) -> &str {
        &self.id
    }
    fn copy_row(&self, version: i64, out: &mut Vec<u8>) {
        copy_text(out, &self.id);
        out.push(b'\t');
        copy_text(out, &self.first_name);
        out.push(b'\t');
        copy_text(out, &self.last_name);
        out.push(b'\t');
        copy_date(out, self.date_of_birth);
        let _ = writeln!(out, "\t{version}");
    }
    fn existing<'a, C: ConnectionTrait + Sync>(
        db: &'a C,
        ids: &'a [String],
    ) -> BoxFuture<'a, AppResult<HashSet<String>>> {
        Box::pin(existing_ids::<trainer::Entity, C>(
            db,
            trainer::Column::Id,
            ids,
        ))
    }
    fn upsert(
        txn: &DatabaseTransaction,
        rows: Vec<Self>,
        version: i64,
    ) -> BoxFuture<'_, Result<(), DbErr>> {
        let models = rows.into_iter().map(move |r| trainer::ActiveModel {
            id: Set(r.id),
            first_name: Set(r.first_name),
            last_name: Set(r.last_name),
            date_of_birth: Set(r.date_of_birth),
            version: Set(version),
        });
        let on_conflict = OnConflict::column(trainer::Column::Id)
            .update_columns([
                trainer::Column::FirstName,
                trainer::Column::LastName,
                trainer::Column::DateOfBirth,
            ])
            .value(
                trainer::Column::Version,
                Expr::col((trainer::Entity, trainer::Column::Version)).add(1),
            )
            .to_owned();
        let insert = trainer::Entity::insert_many(models).on_conflict(on_conflict);
        Box::pin(async move {
            insert.exec_without_returning(txn).await?;
            Ok(())
        })
    }
}

impl Importable for pokemon::Model {
    const CACHE_ENTITY: &'static str = pokemon::CACHE_ENTITY;
    const TABLE: &'static str = "pokemons";
    const COLUMNS: &'static str =
        "id, nickname, species, level, owner_id, date_of_ownership, version";
    const STAGING: &'static str = "CREATE TEMPORARY TABLE import_rows (id text, nickname text, \
        species text, level integer, owner_id text, date_of_ownership date, version bigint) \
        ON COMMIT DROP";
    const UPSERT_STAGED: &'static str = "WITH up AS (
        INSERT INTO pokemons AS p
            (id, nickname, species, level, owner_id, date_of_ownership, version)
        SELECT id, nickname, species, level, owner_id, date_of_ownership, version
        FROM import_rows
        ON CONFLICT (id) DO UPDATE SET
            nickname = EXCLUDED.nickname,
            species = EXCLUDED.species,
            level = EXCLUDED.level,
            owner_id = EXCLUDED.owner_id,
            date_of_ownership = EXCLUDED.date_of_ownership,
            version = p.version + 1
        RETURNING (xmax = 0) AS inserted
    )
    SELECT count(*) FILTER (WHERE inserted) AS inserted, count(*) AS total FROM up";
    fn parse(row: &mut Row<'_>) -> Option<Self> {
        parse_pokemon(row)
    }
    fn id(&self) -> &str {
        &self.id
    }
    fn owner(&self) -> Option<&str> {
        Some(&self.owner_id)
    }
    fn copy_row(&self, version: i64, out: &mut Vec<u8>) {
        copy_text(out, &self.id);
        out.push(b'\t');
        copy_text(out, &self.nickname);
        out.push(b'\t');
        copy_text(out, &self.species);
        let _ = write!(out, "\t{}\t", self.level);
        copy_text(out, &self.owner_id);
        out.push(b'\t');
        copy_date(out, self.date_of_ownership);
        let _ = writeln!(out, "\t{version}");
    }
    fn existing<'a, C: ConnectionTrait + Sync>(
        db: &'a C,
        ids: &'a [String],
    ) -> BoxFuture<'a, AppResult<HashSet<String>>> {
        Box::pin(existing_ids::<pokemon::Entity, C>(
            db,
            pokemon::Column::Id,
            ids,
        ))
    }
    fn upsert(
        txn: &DatabaseTransaction,
        rows: Vec<Self>,
        version: i64,
    ) -> BoxFuture<'_, Result<(), DbErr>> {
        let models = rows.into_iter().map(move |r| pokemon::ActiveModel {
            id: Set(r.id),
            nickname: Set(r.nickname),
            species: Set(r.species),
            level: Set(r.level),
            owner_id: Set(r.owner_id),
            date_of_ownership: Set(r.date_of_ownership),
            version: Set(version),
        });
        let on_conflict = OnConflict::column(pokemon::Column::Id)
            .update_columns([
                pokemon::Column::Nickname,
                pokemon::Column::Species,
                pokemon::Column::Level,
                pokemon::Column::OwnerId,
                pokemon::Column::DateOfOwnership,
            ])
            .value(
                pokemon::Column::Version,
                Expr::col((pokemon::Entity, pokemon::Column::Version)).add(1),
            )
            .to_owned();
        let insert = pokemon::Entity::insert_many(models).on_conflict(on_conflict);
        Box::pin(async move {
            insert.exec_without_returning(txn).await?;
            Ok(())
        })
    }
}

/// Appends `s` as a `COPY` text field: backslash, tab, newline and carriage return escaped.
fn copy_text(out: &mut Vec<u8>, s: &str) {
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
fn copy_date(out: &mut Vec<u8>, d: NaiveDate) {
    let _ = write!(out, "{:04}-{:02}-{:02}", d.year(), d.month(), d.day());
}

/// Where each column of the header is.
type Columns = HashMap<&'static str, usize>;

/// The CSV reader of the upload, from its start, and where each column of `kind` is.
fn open(kind: ImportKind, mut file: &File) -> AppResult<(csv::Reader<BufReader<&File>>, Columns)> {
    file.seek(SeekFrom::Start(0))
        .or_internal("rewinding the uploaded file")?;
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(BufReader::with_capacity(64 * 1024, file));
    let header = reader
        .headers()
        .map_err(|e| AppError::invalid("file", format!("could not read the CSV header: {e}")))?
        .clone();
    let mut columns = HashMap::new();
    for name in kind.header() {
        match header.iter().position(|h| h == *name) {
            Some(i) => {
                columns.insert(*name, i);
            }
            None => {
                return Err(AppError::invalid(
                    "file",
                    format!(
                        "the header has no column `{name}`; expected `{}`",
                        kind.header().join(",")
                    ),
                ))
            }
        }
    }
    Ok((reader, columns))
}

/// What validation leaves in memory: counts, errors and ids, never the rows.
struct Validated {
    rows: usize,
    errors: Vec<RowError>,
    /// Every id → the first row naming it; with no errors, exactly the ids to write.
    first_row_of: HashMap<String, u32>,
    /// Owner id → the rows naming it (Pokémon only).
    owners: HashMap<String, Vec<u32>>,
}

/// Step 1: reads the whole file and validates every row.
fn validate<M: Importable>(kind: ImportKind, file: &File) -> AppResult<Validated> {
    let (mut reader, columns) = open(kind, file)?;
    let mut v = Validated {
        rows: 0,
        errors: Vec::new(),
        first_row_of: HashMap::new(),
        owners: HashMap::new(),
    };
    let mut record = csv::StringRecord::new();
    loop {
        let row = v.rows as u32 + 1;
        match reader.read_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) => {
                // A row that is not even CSV (bad UTF-8 …): report it and go on.
                v.rows += 1;
                v.errors.push(RowError {
                    row: row as i32,
                    column: None,
                    message: format!("could not read the row: {e}"),
                });
                if e.is_io_error() {
                    break;
                }
                continue;
            }
        }
        v.rows += 1;
        let mut r = Row {
            record: &record,
            columns: &columns,
            row,
            errors: Vec::new(),
        };
        let model = M::parse(&mut r);
        let mut errors = r.errors;
        if let Some(id) = record
            .get(columns["id"])
            .map(str::trim)
            .filter(|v| !v.is_empty())
        {
            match v.first_row_of.get(id) {
                Some(first) => errors.push(RowError {
                    row: row as i32,
                    column: Some("id".into()),
                    message: format!("`{id}` is already on row {first}"),
                }),
                None => {
                    v.first_row_of.insert(id.to_owned(), row);
                }
            }
        }
        if !errors.is_empty() {
            v.errors.extend(errors);
            continue;
        }
        if let Some(owner) = model.as_ref().and_then(|m| m.owner()) {
            v.owners.entry(owner.to_owned()).or_default().push(row);
        }
    }
    Ok(v)
}

/// Step 2: reads the validated file again and hands every row to `each`, which returns
/// false to stop. A row that does not parse now means the file changed under the import.
fn each_row<M: Importable>(
    kind: ImportKind,
    file: &File,
    mut each: impl FnMut(M) -> bool,
) -> AppResult<usize> {
    let (mut reader, columns) = open(kind, file)?;
    let mut record = csv::StringRecord::new();
    let mut rows = 0;
    while reader
        .read_record(&mut record)
        .or_internal("reading the uploaded file again")?
    {
        rows += 1;
        let mut r = Row {
            record: &record,
            columns: &columns,
            row: rows as u32,
            errors: Vec::new(),
        };
        let Some(model) = M::parse(&mut r) else {
            return Err(AppError::internal(
                "the uploaded file changed between its validation and its write",
            ));
        };
        if !each(model) {
            break;
        }
    }
    Ok(rows)
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
    let mut v = tokio::task::spawn_blocking(move || validate::<M>(kind, &reading))
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
            existing_count::<M>(state, &ids).await?
        } else {
            M::existing(&state.db, &ids).await?.len()
        };
        (ids.len() - existing, existing)
    } else if postgres {
        let owners = v.owners.into_keys().collect();
        write_postgres::<M>(state, kind, file, ids, owners).await?
    } else {
        write_batches::<M>(state, kind, file, ids).await?
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

/// Step 2 on SQLite: the rows in batches of [`CHUNK_ROWS`], in one transaction, through the
/// write path's bulk entry: the imported ids' entries are marked before `COMMIT` and
/// deleted after it. Returns (inserted, updated).
async fn write_batches<M: Importable>(
    state: &AppState,
    kind: ImportKind,
    file: Arc<File>,
    ids: Vec<String>,
) -> AppResult<(usize, usize)> {
    let (tx, mut rx) = mpsc::channel::<Vec<M>>(2);
    let reader = tokio::task::spawn_blocking(move || {
        let mut chunk = Vec::with_capacity(CHUNK_ROWS);
        let mut open_channel = true;
        each_row::<M>(kind, &file, |row| {
            chunk.push(row);
            if chunk.len() == CHUNK_ROWS {
                let full = std::mem::replace(&mut chunk, Vec::with_capacity(CHUNK_ROWS));
                open_channel = tx.blocking_send(full).is_ok();
            }
            open_channel
        })?;
        if !open_channel || (!chunk.is_empty() && tx.blocking_send(chunk).is_err()) {
            return Err(AppError::internal("the import's write stopped"));
        }
        Ok(())
    });
    consistency::write(state, move |txn| {
        Box::pin(async move {
            lock_rows::<trainer::Entity, String>(txn, trainer::Column::Id, []).await?;
            consistency::bulk(M::CACHE_ENTITY, ids)?;
            let version = entity::versioning::next_version(None);
            let (mut inserted, mut updated) = (0, 0);
            while let Some(rows) = rx.recv().await {
                let chunk_ids: Vec<String> = rows.iter().map(|r| r.id().to_owned()).collect();
                let exists = M::existing(txn, &chunk_ids).await?;
                updated += exists.len();
                inserted += chunk_ids.len() - exists.len();
                M::upsert(txn, rows, version).await.map_err(write_error)?;
            }
            // Every row must have been read before this transaction may commit.
            reader.await.or_internal("the CSV reader panicked")??;
            Ok((inserted, updated))
        })
    })
    .await
}

/// PostgreSQL: how many of `ids` exist, in one query (a dry run's count).
async fn existing_count<M: Importable>(state: &AppState, ids: &[String]) -> AppResult<usize> {
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
async fn write_postgres<M: Importable>(
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
                let sql = format!("COPY {} ({}) FROM STDIN", M::TABLE, M::COLUMNS);
                let copied = copy_in::<M>(&mut db, &sql, kind, file, version).await?;
                (copied, 0)
            } else {
                run_sql(&mut db, M::STAGING).await?;
                let sql = format!("COPY import_rows ({}) FROM STDIN", M::COLUMNS);
                copy_in::<M>(&mut db, &sql, kind, file, version).await?;
                let counts = fetch_one(db.statement(M::UPSERT_STAGED), M::UPSERT_STAGED)
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
fn execute<'a>(
    conn: &'a mut PgConnection,
    sql: &'static str,
) -> BoxFuture<'a, Result<(), sqlx::Error>> {
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
    sql: &'static str,
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
