//! Reading the upload: the CSV header, each row parsed and validated into its model, and the
//! second pass that hands the validated rows to the write.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Seek, SeekFrom};

use chrono::NaiveDate;
use entity::{pokemon, trainer};

use super::rows::Importable;
use super::{ImportKind, RowError};
use crate::error::{AppError, AppResult, OrInternal};
use crate::pokemon::types;

/// One row's fields, by header name.
pub(super) struct Row<'r> {
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

pub(super) fn parse_trainer(r: &mut Row<'_>) -> Option<trainer::Model> {
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

pub(super) fn parse_pokemon(r: &mut Row<'_>) -> Option<pokemon::Model> {
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
pub(super) struct Validated {
    pub(super) rows: usize,
    pub(super) errors: Vec<RowError>,
    /// Every id → the first row naming it; with no errors, exactly the ids to write.
    pub(super) first_row_of: HashMap<String, u32>,
    /// Owner id → the rows naming it (Pokémon only).
    pub(super) owners: HashMap<String, Vec<u32>>,
}

/// Step 1: reads the whole file and validates every row.
pub(super) fn validate<M: Importable>(kind: ImportKind, file: &File) -> AppResult<Validated> {
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
pub(super) fn each_row<M: Importable>(
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
