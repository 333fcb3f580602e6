//! GraphQL types of trainers, Pokémon, trades and imports, and the validation shared by the
//! mutations and the CSV import.

use std::borrow::Cow;

use async_graphql::parser::types::Field;
use async_graphql::{ContextSelectionSet, InputObject, ScalarType, SimpleObject, Value, ID};
use chrono::NaiveDate;

use crate::error::{AppError, AppResult};
use crate::pagination::fast::{self, Fields};

/// Longest id of a trainer or Pokémon.
pub const MAX_ID_LEN: usize = 64;
/// Longest name, nickname or species.
pub const MAX_TEXT_LEN: usize = 100;

/// `date` as ISO 8601 (`YYYY-MM-DD`), as its `Display` writes it. Written digit by digit for
/// the years 0–9999: `Display` goes through the formatter a character at a time, and a nested
/// list formats a date for every Pokémon (the callgrind profile of a cold 10 × 10 list put it at
/// 9 % of the request's instructions; this way, 4 %).
fn date_text(date: NaiveDate) -> String {
    use chrono::Datelike;
    let year = date.year();
    if !(0..=9999).contains(&year) {
        return date.to_string();
    }
    let digit = |n: u32| char::from(b'0' + (n % 10) as u8);
    let (y, m, d) = (year as u32, date.month(), date.day());
    let mut out = String::with_capacity(10);
    for c in [
        digit(y / 1000),
        digit(y / 100),
        digit(y / 10),
        digit(y),
        '-',
        digit(m / 10),
        digit(m),
        '-',
        digit(d / 10),
        digit(d),
    ] {
        out.push(c);
    }
    out
}

/// A Pokémon trainer.
#[derive(SimpleObject, Debug, Clone)]
#[graphql(complex)]
pub struct Trainer {
    /// The trainer's id, e.g. `trainer1`.
    pub id: ID,
    /// First name.
    pub first_name: String,
    /// Last name.
    pub last_name: String,
    /// Date of birth, ISO 8601 (`YYYY-MM-DD`).
    pub date_of_birth: String,
    /// The trainer's Pokémon, when a listing loaded them for its whole page at once (shared
    /// with the loader: cloning a trainer does not copy them).
    #[graphql(skip)]
    pub pokemons: Option<std::sync::Arc<Vec<entity::pokemon::Model>>>,
}

impl From<entity::trainer::Model> for Trainer {
    fn from(m: entity::trainer::Model) -> Self {
        Self {
            id: ID(m.id),
            first_name: m.first_name,
            last_name: m.last_name,
            date_of_birth: date_text(m.date_of_birth),
            pokemons: None,
        }
    }
}

/// A Pokémon.
#[derive(SimpleObject, Debug, Clone)]
#[graphql(complex)]
pub struct Pokemon {
    /// The Pokémon's id, e.g. `pikachu4`.
    pub id: ID,
    /// Nickname.
    pub nickname: String,
    /// Species, e.g. `Pikachu`.
    pub species: String,
    /// Level, 1–100.
    pub level: i32,
    /// The id of the trainer who owns it.
    pub owner_id: ID,
    /// When the current owner got it, ISO 8601 (`YYYY-MM-DD`).
    pub date_of_ownership: String,
    /// The owner, when this Pokémon was reached through them (`Trainer.pokemons`): `owner`
    /// then answers without another lookup.
    #[graphql(skip)]
    pub known_owner: Option<std::sync::Arc<Trainer>>,
}

impl Fields for Pokemon {
    fn type_name(&self) -> Cow<'_, str> {
        "Pokemon".into()
    }

    fn field(&self, ctx: &ContextSelectionSet<'_>, field: &Field) -> Option<Value> {
        Some(match field.name.node.as_str() {
            "id" => self.id.to_value(),
            "nickname" => Value::String(self.nickname.clone()),
            "species" => Value::String(self.species.clone()),
            "level" => self.level.to_value(),
            "ownerId" => self.owner_id.to_value(),
            "dateOfOwnership" => Value::String(self.date_of_ownership.clone()),
            "owner" => fast::object(
                ctx,
                &field.selection_set.node,
                &**self.known_owner.as_ref()?,
            )?,
            _ => return None,
        })
    }
}

impl Fields for Trainer {
    fn type_name(&self) -> Cow<'_, str> {
        "Trainer".into()
    }

    fn field(&self, ctx: &ContextSelectionSet<'_>, field: &Field) -> Option<Value> {
        Some(match field.name.node.as_str() {
            "id" => self.id.to_value(),
            "firstName" => Value::String(self.first_name.clone()),
            "lastName" => Value::String(self.last_name.clone()),
            "dateOfBirth" => Value::String(self.date_of_birth.clone()),
            // Only when a listing loaded them (otherwise they need the loader).
            "pokemons" => {
                let owned = self.pokemons.as_ref()?.iter().map(|model| OwnedPokemon {
                    model,
                    owner: OwnerOfListed(self),
                });
                fast::list(ctx, &field.selection_set.node, owned)?
            }
            _ => return None,
        })
    }
}

/// A Pokémon of a trainer's loaded list, answered from its row as [`Pokemon`] (which
/// [`Trainer::pokemons_of`] makes) would answer: nothing is copied or formatted that the
/// selection does not ask for.
struct OwnedPokemon<'a> {
    model: &'a entity::pokemon::Model,
    owner: OwnerOfListed<'a>,
}

impl Fields for OwnedPokemon<'_> {
    fn type_name(&self) -> Cow<'_, str> {
        "Pokemon".into()
    }

    fn field(&self, ctx: &ContextSelectionSet<'_>, field: &Field) -> Option<Value> {
        let m = self.model;
        Some(match field.name.node.as_str() {
            "id" => Value::String(m.id.clone()),
            "nickname" => Value::String(m.nickname.clone()),
            "species" => Value::String(m.species.clone()),
            "level" => m.level.to_value(),
            "ownerId" => Value::String(m.owner_id.clone()),
            "dateOfOwnership" => Value::String(date_text(m.date_of_ownership)),
            "owner" => fast::object(ctx, &field.selection_set.node, &self.owner)?,
            _ => return None,
        })
    }
}

/// The owner of a listed Pokémon, as its `known_owner` (made by [`Trainer::pokemons_of`])
/// answers: the trainer without its loaded Pokémon, whose `pokemons` then go to the loader.
struct OwnerOfListed<'a>(&'a Trainer);

impl Fields for OwnerOfListed<'_> {
    fn type_name(&self) -> Cow<'_, str> {
        self.0.type_name()
    }

    fn field(&self, ctx: &ContextSelectionSet<'_>, field: &Field) -> Option<Value> {
        match field.name.node.as_str() {
            "pokemons" => None,
            _ => self.0.field(ctx, field),
        }
    }
}

impl Trainer {
    /// `models` (this trainer's Pokémon) as the schema's objects, sharing one owner (this
    /// trainer) rather than a copy each.
    pub fn pokemons_of(&self, models: &[entity::pokemon::Model]) -> Vec<Pokemon> {
        let owner = std::sync::Arc::new(Trainer {
            pokemons: None,
            ..self.clone()
        });
        models
            .iter()
            .map(|m| Pokemon {
                known_owner: Some(owner.clone()),
                ..Pokemon::from(m.clone())
            })
            .collect()
    }
}

impl Fields for Trade {
    fn type_name(&self) -> Cow<'_, str> {
        "Trade".into()
    }

    fn field(&self, _: &ContextSelectionSet<'_>, field: &Field) -> Option<Value> {
        let ids = |ids: &[ID]| Value::List(ids.iter().map(ScalarType::to_value).collect());
        Some(match field.name.node.as_str() {
            "id" => self.id.to_value(),
            "trainerAId" => self.trainer_a_id.to_value(),
            "trainerBId" => self.trainer_b_id.to_value(),
            "pokemonIdsA" => ids(&self.pokemon_ids_a),
            "pokemonIdsB" => ids(&self.pokemon_ids_b),
            "tradedAt" => self.traded_at.to_value(),
            _ => return None,
        })
    }
}

impl From<entity::pokemon::Model> for Pokemon {
    fn from(m: entity::pokemon::Model) -> Self {
        Self {
            id: ID(m.id),
            nickname: m.nickname,
            species: m.species,
            level: m.level,
            owner_id: ID(m.owner_id),
            date_of_ownership: date_text(m.date_of_ownership),
            known_owner: None,
        }
    }
}

/// A completed exchange of Pokémon between two trainers.
#[derive(SimpleObject, Debug, Clone)]
#[graphql(complex)]
pub struct Trade {
    /// The trade's id.
    pub id: ID,
    /// The id of trainer A.
    pub trainer_a_id: ID,
    /// The id of trainer B.
    pub trainer_b_id: ID,
    /// The ids of the Pokémon A gave to B.
    pub pokemon_ids_a: Vec<ID>,
    /// The ids of the Pokémon B gave to A.
    pub pokemon_ids_b: Vec<ID>,
    /// When the trade committed.
    pub traded_at: chrono::DateTime<chrono::Utc>,
}

impl From<entity::trade::Model> for Trade {
    fn from(m: entity::trade::Model) -> Self {
        let ids = |raw: &str| {
            serde_json::from_str::<Vec<String>>(raw)
                .unwrap_or_default()
                .into_iter()
                .map(ID)
                .collect()
        };
        Self {
            id: ID(m.id.to_string()),
            trainer_a_id: ID(m.trainer_a),
            trainer_b_id: ID(m.trainer_b),
            pokemon_ids_a: ids(&m.pokemons_a),
            pokemon_ids_b: ids(&m.pokemons_b),
            traded_at: m.traded_at,
        }
    }
}

/// A new trainer.
#[derive(InputObject, Debug, Clone)]
pub struct CreateTrainerInput {
    /// Unique id, 1–64 characters of `A-Z a-z 0-9 _ . -`.
    pub id: ID,
    /// First name, 1–100 characters.
    pub first_name: String,
    /// Last name, 1–100 characters.
    pub last_name: String,
    /// Date of birth, ISO 8601 (`YYYY-MM-DD`).
    pub date_of_birth: String,
}

/// Changes to a trainer; omitted fields stay as they are.
#[derive(InputObject, Debug, Clone, Default)]
pub struct UpdateTrainerInput {
    /// New first name.
    pub first_name: Option<String>,
    /// New last name.
    pub last_name: Option<String>,
    /// New date of birth, ISO 8601.
    pub date_of_birth: Option<String>,
}

/// A new Pokémon.
#[derive(InputObject, Debug, Clone)]
pub struct CreatePokemonInput {
    /// Unique id, 1–64 characters of `A-Z a-z 0-9 _ . -`.
    pub id: ID,
    /// Nickname, 1–100 characters.
    pub nickname: String,
    /// Species, 1–100 characters.
    pub species: String,
    /// Level, 1–100.
    pub level: i32,
    /// The owner's trainer id.
    pub owner_id: ID,
    /// When the owner got it, ISO 8601; today when omitted.
    pub date_of_ownership: Option<String>,
}

/// Changes to a Pokémon; omitted fields stay as they are. Ownership changes through
/// `exchangePokemons`, or here by setting `ownerId`.
#[derive(InputObject, Debug, Clone, Default)]
pub struct UpdatePokemonInput {
    /// New nickname.
    pub nickname: Option<String>,
    /// New species.
    pub species: Option<String>,
    /// New level, 1–100.
    pub level: Option<i32>,
    /// New owner's trainer id.
    pub owner_id: Option<ID>,
    /// New date of ownership, ISO 8601.
    pub date_of_ownership: Option<String>,
}

/// One bad row of an imported file.
#[derive(SimpleObject, Debug, Clone, PartialEq)]
pub struct ImportError {
    /// The row, 1 for the first row after the header.
    pub row: i32,
    /// The column at fault (as named in the header), when there is one.
    pub column: Option<String>,
    /// What is wrong.
    pub message: String,
}

/// The outcome of an import.
#[derive(SimpleObject, Debug, Clone)]
pub struct ImportReport {
    /// The import's id (in the server's log with the outcome).
    pub import_id: ID,
    /// Data rows read (the header excluded).
    pub rows: i32,
    /// Rows inserted (with `dryRun`: that would be inserted). 0 when there are errors.
    pub inserted: i32,
    /// Rows that updated an existing id (with `dryRun`: that would). 0 when there are errors.
    pub updated: i32,
    /// Every bad row; when there is any, nothing was written.
    pub errors: Vec<ImportError>,
}

/// Checks an id: 1–64 characters of `A-Z a-z 0-9 _ . -`.
pub fn entity_id(field: &str, raw: &str) -> AppResult<String> {
    let t = raw.trim();
    if t.is_empty() {
        return Err(AppError::invalid(field, "must not be blank"));
    }
    if t.len() > MAX_ID_LEN {
        return Err(AppError::invalid(
            field,
            format!("must be at most {MAX_ID_LEN} characters"),
        ));
    }
    if !t
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
    {
        return Err(AppError::invalid(
            field,
            "may only hold letters, digits, `_`, `.` and `-`",
        ));
    }
    Ok(t.to_owned())
}

/// Checks a name-like text: not blank, at most 100 characters; returns it trimmed.
pub fn text(field: &str, raw: &str) -> AppResult<String> {
    crate::meals::types::text(field, raw, MAX_TEXT_LEN)
}

/// Checks a level: 1–100.
pub fn level(field: &str, level: i64) -> AppResult<i32> {
    if (1..=100).contains(&level) {
        Ok(level as i32)
    } else {
        Err(AppError::invalid(
            field,
            format!("must be between 1 and 100 (got {level})"),
        ))
    }
}

/// Parses an ISO 8601 date (`YYYY-MM-DD`), as GraphQL carries them.
pub fn iso_date(field: &str, raw: &str) -> AppResult<NaiveDate> {
    NaiveDate::parse_from_str(raw.trim(), "%Y-%m-%d").map_err(|_| {
        AppError::invalid(
            field,
            format!("`{raw}` is not a date in the form YYYY-MM-DD"),
        )
    })
}

/// Parses a CSV date (`DD-MM-YYYY`).
pub fn csv_date(field: &str, raw: &str) -> AppResult<NaiveDate> {
    NaiveDate::parse_from_str(raw.trim(), "%d-%m-%Y").map_err(|_| {
        AppError::invalid(
            field,
            format!("`{raw}` is not a date in the form DD-MM-YYYY"),
        )
    })
}

impl From<CreateTrainerInput> for super::service::NewTrainer {
    fn from(i: CreateTrainerInput) -> Self {
        Self {
            id: i.id.0,
            first_name: i.first_name,
            last_name: i.last_name,
            date_of_birth: i.date_of_birth,
        }
    }
}

impl From<UpdateTrainerInput> for super::service::TrainerChanges {
    fn from(i: UpdateTrainerInput) -> Self {
        Self {
            first_name: i.first_name,
            last_name: i.last_name,
            date_of_birth: i.date_of_birth,
        }
    }
}

impl From<CreatePokemonInput> for super::service::NewPokemon {
    fn from(i: CreatePokemonInput) -> Self {
        Self {
            id: i.id.0,
            nickname: i.nickname,
            species: i.species,
            level: i64::from(i.level),
            owner_id: i.owner_id.0,
            date_of_ownership: i.date_of_ownership,
        }
    }
}

impl From<UpdatePokemonInput> for super::service::PokemonChanges {
    fn from(i: UpdatePokemonInput) -> Self {
        Self {
            nickname: i.nickname,
            species: i.species,
            level: i.level.map(i64::from),
            owner_id: i.owner_id.map(|o| o.0),
            date_of_ownership: i.date_of_ownership,
        }
    }
}

impl From<super::import::RowError> for ImportError {
    fn from(e: super::import::RowError) -> Self {
        Self {
            row: e.row,
            column: e.column,
            message: e.message,
        }
    }
}

impl From<super::import::ImportOutcome> for ImportReport {
    fn from(o: super::import::ImportOutcome) -> Self {
        Self {
            import_id: ID(o.import_id),
            rows: o.rows,
            inserted: o.inserted,
            updated: o.updated,
            errors: o.errors.into_iter().map(Into::into).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Datelike;

    #[test]
    fn a_date_is_written_as_display_writes_it() {
        let days = [
            (2026, 12, 7),
            (1997, 5, 22),
            (0, 1, 1),
            (9999, 12, 31),
            (-1, 6, 30),
            (10000, 1, 1),
        ];
        for (y, m, d) in days {
            let date = NaiveDate::from_ymd_opt(y, m, d).expect("a date");
            assert_eq!(date_text(date), date.to_string());
        }
        let mut date = NaiveDate::from_ymd_opt(1899, 1, 1).expect("a date");
        while date.year() < 2101 {
            assert_eq!(date_text(date), date.to_string());
            date = date.succ_opt().expect("a next day");
        }
    }
}
