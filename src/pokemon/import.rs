//! CSV imports of trainers and Pokémon, as a transaction staged in the cache tier.
//!
//! 1. The upload is parsed as a stream (the `csv` crate, on a blocking thread); every row is
//!    validated and the valid ones are sent on in chunks of [`CHUNK_ROWS`], each staged in
//!    the cache under `import:<importId>:<chunk>` with an expiry. Only the ids seen (for
//!    duplicates, and the owners for the unknown-owner check) stay in memory, never the rows.
//! 2. When the file has no bad row and this is not a dry run, the chunks are read back one by
//!    one and written in ONE database transaction, as batched inserts that update on an id
//!    conflict ("insert or update by id"). On PostgreSQL each staged chunk (JSON) is handed to
//!    the database as it is — one parameter, expanded by `jsonb_to_recordset` — and the
//!    statement itself returns how many rows it inserted (`xmax = 0`); on SQLite the chunk is
//!    decoded, which ids already exist is read first, and sea-orm's `insert_many` writes it.
//! 3. The staged keys are removed, whatever the outcome.
//!
//! Cache invalidation: the batched upserts skip the entity hooks (recording a change per row
//! of a 100 000-row file would hold every row in memory until commit). The transaction runs
//! in the one write path, `write_through::write`, and declares the imported ids as a bulk
//! write (`write_through::bulk`): right before `COMMIT` every imported id's entry is *marked*
//! (in chunks), so readers treat it as a miss and may not fill it, and marking revokes every
//! reader's fill lease; after `COMMIT` the entries are deleted while still marked, then this
//! import's marks are cleared. A reader that read a row before the commit cannot fill its
//! older copy afterwards. Deleted entries leave no tombstone with a huge version, so later
//! writes and fills of these ids work as usual.

use std::collections::{HashMap, HashSet};
use std::fs::File;

use chrono::NaiveDate;
use entity::{pokemon, trainer};
use futures::future::BoxFuture;
use sea_orm::sea_query::{Expr, OnConflict};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseTransaction, DbBackend, DbErr, EntityTrait, QueryFilter,
    QuerySelect, Set, SqlErr, Statement,
};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::mpsc;

use super::types;
use crate::backends::sql::lock_rows;
use crate::error::{AppError, AppResult, OrInternal};
use crate::state::AppState;
use crate::write_through;

/// Rows per staged cache entry and per batched insert.
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
    /// The id the rows were staged under.
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

/// The key of one staged chunk.
pub fn chunk_key(import_id: &str, chunk: usize) -> String {
    format!("import:{import_id}:{chunk}")
}

/// What the parse leaves in memory: counts, errors and ids, never the rows.
struct Parsed {
    rows: usize,
    errors: Vec<RowError>,
    /// Ids of the valid rows, for counting and invalidation.
    ids: Vec<String>,
    /// Owner id → the rows naming it (Pokémon only).
    owners: HashMap<String, Vec<u32>>,
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
trait Importable: Serialize + DeserializeOwned + Send + 'static {
    /// The cache namespace of the entity.
    const CACHE_ENTITY: &'static str;
    fn parse(row: &mut Row<'_>) -> Option<Self>;
    fn id(&self) -> &str;
    fn owner(&self) -> Option<&str> {
        None
    }
    /// Which of `ids` exist, asked in chunks.
    fn existing<'a, C: ConnectionTrait + Sync>(
        db: &'a C,
        ids: &'a [String],
    ) -> BoxFuture<'a, AppResult<HashSet<String>>>;
    /// PostgreSQL: insert-or-update every row of a staged chunk (`$1`, the chunk's JSON),
    /// inserted rows at version `$2`; returns `(inserted, total)`.
    const PG_UPSERT: &'static str;
    /// One batched insert-or-update. Inserted rows get `version`; updated ones their version
    /// + 1 (versions only grow, see `entity::versioning`).
    fn upsert(
        txn: &DatabaseTransaction,
        rows: Vec<Self>,
        version: i64,
    ) -> BoxFuture<'_, Result<(), DbErr>>;
}

impl Importable for trainer::Model {
    const CACHE_ENTITY: &'static str = trainer::CACHE_ENTITY;
    const PG_UPSERT: &'static str = "WITH up AS (
        INSERT INTO trainers AS t (id, first_name, last_name, date_of_birth, version)
        SELECT id, first_name, last_name, date_of_birth, $2
        FROM jsonb_to_recordset($1::jsonb)
            AS r(id text, first_name text, last_name text, date_of_birth date)
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
    const PG_UPSERT: &'static str = "WITH up AS (
        INSERT INTO pokemons AS p
            (id, nickname, species, level, owner_id, date_of_ownership, version)
        SELECT id, nickname, species, level, owner_id, date_of_ownership, $2
        FROM jsonb_to_recordset($1::jsonb)
            AS r(id text, nickname text, species text, level integer, owner_id text,
                 date_of_ownership date)
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

/// Streams the file: validates each row and sends the valid ones on in chunks.
fn parse_file<M: Importable>(
    kind: ImportKind,
    file: File,
    tx: mpsc::Sender<Vec<M>>,
) -> AppResult<Parsed> {
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(std::io::BufReader::new(file));
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
    let mut parsed = Parsed {
        rows: 0,
        errors: Vec::new(),
        ids: Vec::new(),
        owners: HashMap::new(),
    };
    let mut first_row_of: HashMap<String, u32> = HashMap::new();
    let mut chunk = Vec::with_capacity(CHUNK_ROWS);
    let mut record = csv::StringRecord::new();
    loop {
        let row = parsed.rows as u32 + 1;
        match reader.read_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) => {
                // A row that is not even CSV (bad UTF-8 …): report it and go on.
                parsed.rows += 1;
                parsed.errors.push(RowError {
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
        parsed.rows += 1;
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
            match first_row_of.get(id) {
                Some(first) => errors.push(RowError {
                    row: row as i32,
                    column: Some("id".into()),
                    message: format!("`{id}` is already on row {first}"),
                }),
                None => {
                    first_row_of.insert(id.to_owned(), row);
                }
            }
        }
        if !errors.is_empty() {
            parsed.errors.extend(errors);
            continue;
        }
        let Some(model) = model else { continue };
        if let Some(owner) = model.owner() {
            parsed.owners.entry(owner.to_owned()).or_default().push(row);
        }
        parsed.ids.push(model.id().to_owned());
        chunk.push(model);
        if chunk.len() == CHUNK_ROWS {
            let full = std::mem::replace(&mut chunk, Vec::with_capacity(CHUNK_ROWS));
            if tx.blocking_send(full).is_err() {
                return Err(AppError::internal("the import's staging stopped"));
            }
        }
    }
    if !chunk.is_empty() && tx.blocking_send(chunk).is_err() {
        return Err(AppError::internal("the import's staging stopped"));
    }
    Ok(parsed)
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
    let (tx, mut rx) = mpsc::channel::<Vec<M>>(2);
    let parser = tokio::task::spawn_blocking(move || parse_file::<M>(kind, file, tx));
    // Stage every chunk as it comes; the parser waits when two are queued.
    let ttl = state.settings.request_timeout() + std::time::Duration::from_secs(60);
    let mut chunks = 0usize;
    let mut staging: AppResult<()> = Ok(());
    while let Some(chunk) = rx.recv().await {
        if staging.is_err() {
            continue;
        }
        let key = chunk_key(&import_id, chunks);
        chunks += 1;
        staging = match serde_json::to_string(&chunk) {
            Ok(json) => state
                .kv
                .set_many(&[(key, json)], Some(ttl))
                .await
                .or_internal("staging the import in the cache"),
            Err(e) => Err(AppError::caused_by("encoding a staged chunk", e)),
        };
        if staging.is_err() {
            // Stop the parser early: it fails on its next send.
            rx.close();
        }
    }
    let parsed = parser.await.or_internal("the CSV parser panicked");
    let outcome = match (staging, parsed) {
        (Err(e), _) | (_, Err(e)) => Err(e),
        (Ok(()), Ok(Err(e))) => Err(e),
        (Ok(()), Ok(Ok(parsed))) => {
            finish::<M>(state, kind, &import_id, chunks, parsed, dry_run).await
        }
    };
    let keys: Vec<String> = (0..chunks).map(|c| chunk_key(&import_id, c)).collect();
    for part in keys.chunks(500) {
        if let Err(e) = state.kv.del(part).await {
            tracing::warn!(error = %e, import = %import_id, "staged rows left to expire");
            break;
        }
    }
    outcome
}

/// Checks owners, then reports (errors, dry run) or writes the staged chunks.
async fn finish<M: Importable>(
    state: &AppState,
    kind: ImportKind,
    import_id: &str,
    chunks: usize,
    mut parsed: Parsed,
    dry_run: bool,
) -> AppResult<ImportOutcome> {
    if kind == ImportKind::Pokemons && !parsed.owners.is_empty() {
        let owners: Vec<String> = parsed.owners.keys().cloned().collect();
        let known =
            existing_ids::<trainer::Entity, _>(&state.db, trainer::Column::Id, &owners).await?;
        for owner in owners.iter().filter(|o| !known.contains(*o)) {
            for row in &parsed.owners[owner] {
                parsed.errors.push(RowError {
                    row: *row as i32,
                    column: Some("owner".into()),
                    message: format!("no trainer with id `{owner}`"),
                });
            }
        }
    }
    let mut report = ImportOutcome {
        import_id: import_id.to_owned(),
        rows: parsed.rows as i32,
        inserted: 0,
        updated: 0,
        errors: Vec::new(),
    };
    if !parsed.errors.is_empty() {
        parsed
            .errors
            .sort_by(|a, b| (a.row, &a.column).cmp(&(b.row, &b.column)));
        report.errors = parsed.errors;
        return Ok(report);
    }
    if dry_run {
        let existing = M::existing(&state.db, &parsed.ids).await?;
        report.updated = existing.len() as i32;
        report.inserted = (parsed.ids.len() - existing.len()) as i32;
        return Ok(report);
    }
    let (inserted, updated) = write_staged::<M>(state, import_id, chunks, parsed.ids).await?;
    report.inserted = inserted as i32;
    report.updated = updated as i32;
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

fn write_error(e: DbErr) -> AppError {
    if matches!(e.sql_err(), Some(SqlErr::ForeignKeyConstraintViolation(_))) {
        AppError::Conflict(
            "owner: a trainer named in the file was deleted during the import; nothing was \
             written"
                .into(),
        )
    } else {
        e.into()
    }
}

/// Writes every staged chunk in one transaction, through the write path's bulk entry: the
/// imported ids' entries are marked before `COMMIT` and deleted after it. Returns
/// (inserted, updated).
async fn write_staged<M: Importable>(
    state: &AppState,
    import_id: &str,
    chunks: usize,
    ids: Vec<String>,
) -> AppResult<(usize, usize)> {
    let kv = state.kv.clone();
    let import_id = import_id.to_owned();
    write_through::write(state, move |txn| {
        Box::pin(async move {
            lock_rows::<trainer::Entity, String>(txn, trainer::Column::Id, []).await?;
            write_through::bulk(M::CACHE_ENTITY, ids)?;
            let version = entity::versioning::next_version(None);
            let (mut inserted, mut updated) = (0, 0);
            for c in 0..chunks {
                let raw = kv
                    .get(&chunk_key(&import_id, c))
                    .await
                    .or_internal("reading a staged chunk")?
                    .ok_or_else(|| {
                        AppError::Conflict(
                            "file: the staged rows expired before they were written; nothing \
                             was written, import the file again"
                                .into(),
                        )
                    })?;
                if txn.get_database_backend() == DbBackend::Postgres {
                    let counts = txn
                        .query_one(Statement::from_sql_and_values(
                            DbBackend::Postgres,
                            M::PG_UPSERT,
                            [raw.into(), version.into()],
                        ))
                        .await
                        .map_err(write_error)?
                        .ok_or_else(|| {
                            AppError::internal("the import's upsert returned no counts")
                        })?;
                    let chunk_inserted: i64 = counts.try_get("", "inserted")?;
                    let chunk_total: i64 = counts.try_get("", "total")?;
                    inserted += chunk_inserted as usize;
                    updated += (chunk_total - chunk_inserted) as usize;
                    continue;
                }
                let rows: Vec<M> =
                    serde_json::from_str(&raw).or_internal("decoding a staged chunk")?;
                let chunk_ids: Vec<String> = rows.iter().map(|r| r.id().to_owned()).collect();
                let exists = M::existing(txn, &chunk_ids).await?;
                updated += exists.len();
                inserted += chunk_ids.len() - exists.len();
                M::upsert(txn, rows, version).await.map_err(write_error)?;
            }
            Ok((inserted, updated))
        })
    })
    .await
}
