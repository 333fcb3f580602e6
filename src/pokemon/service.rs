//! The rules of trainers, Pokémon and trades. Every write goes through
//! [`consistency::write`]: single rows through the entity hooks (rows are locked first, so
//! the checks hold at commit time), the cascade of a trainer's deletion and the CSV import
//! (see [`super::import`]) as bulk statements whose ids they declare.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use chrono::Utc;
use entity::{pokemon, trade, trainer};
use sea_orm::{
    ActiveModelBehavior, ActiveModelTrait, ColumnTrait, ConnectionTrait, DatabaseTransaction,
    DbBackend, DbErr, EntityTrait, IntoActiveModel, ModelTrait, Order, PaginatorTrait, QueryFilter,
    QueryResult, QuerySelect, Set, SqlErr, Statement,
};
use serde::{Deserialize, Serialize};

use super::types;
use crate::backends::sql::lock_rows;
use crate::consistency;
use crate::error::{is_unique_violation, AppError, AppResult};
use crate::pagination::{into_page, keyset_page, Page};
use crate::state::AppState;

/// The event bus topic every completed trade is published on.
pub const TRADES_TOPIC: &str = "trades";

/// Most Pokémon one side of a trade may give.
pub const MAX_TRADE_SIDE: usize = 100;

fn is_fk_violation(e: &DbErr) -> bool {
    matches!(e.sql_err(), Some(SqlErr::ForeignKeyConstraintViolation(_)))
}

fn trainer_not_found(id: &str) -> AppError {
    AppError::NotFound(format!("no trainer with id `{id}`"))
}

fn pokemon_not_found(id: &str) -> AppError {
    AppError::NotFound(format!("no Pokémon with id `{id}`"))
}

/// A new trainer, as asked for (checked by [`create_trainer`]).
#[derive(Debug, Clone)]
pub struct NewTrainer {
    /// Unique id.
    pub id: String,
    /// First name.
    pub first_name: String,
    /// Last name.
    pub last_name: String,
    /// Date of birth, ISO 8601.
    pub date_of_birth: String,
}

/// Changes to a trainer; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct TrainerChanges {
    /// New first name.
    pub first_name: Option<String>,
    /// New last name.
    pub last_name: Option<String>,
    /// New date of birth, ISO 8601.
    pub date_of_birth: Option<String>,
}

/// A new Pokémon, as asked for (checked by [`create_pokemon`]).
#[derive(Debug, Clone)]
pub struct NewPokemon {
    /// Unique id.
    pub id: String,
    /// Nickname.
    pub nickname: String,
    /// Species.
    pub species: String,
    /// Level.
    pub level: i64,
    /// The owner's trainer id.
    pub owner_id: String,
    /// When the owner got it, ISO 8601; today when `None`.
    pub date_of_ownership: Option<String>,
}

/// Changes to a Pokémon; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct PokemonChanges {
    /// New nickname.
    pub nickname: Option<String>,
    /// New species.
    pub species: Option<String>,
    /// New level.
    pub level: Option<i64>,
    /// New owner's trainer id.
    pub owner_id: Option<String>,
    /// New date of ownership, ISO 8601.
    pub date_of_ownership: Option<String>,
}

/// Checks an optional field with `check`.
fn optional<T>(
    field: &'static str,
    value: Option<&str>,
    check: fn(&str, &str) -> AppResult<T>,
) -> AppResult<Option<T>> {
    value.map(|v| check(field, v)).transpose()
}

/// Locks the trainer row for the rest of `txn` and reads it.
pub async fn lock_trainer(
    txn: &DatabaseTransaction,
    id: &str,
) -> AppResult<Option<trainer::Model>> {
    Ok(
        lock_rows::<trainer::Entity, _>(txn, trainer::Column::Id, [id.to_owned()])
            .await?
            .pop(),
    )
}

/// Locks the Pokémon rows of `ids` (in id order, so concurrent lockers cannot deadlock) for
/// the rest of `txn` and reads them.
pub async fn lock_pokemons(
    txn: &DatabaseTransaction,
    ids: &[String],
) -> AppResult<HashMap<String, pokemon::Model>> {
    let rows =
        lock_rows::<pokemon::Entity, _>(txn, pokemon::Column::Id, ids.iter().cloned()).await?;
    Ok(rows.into_iter().map(|p| (p.id.clone(), p)).collect())
}

/// Locks the row of `E` whose key is `id`, lets `apply` change it, and saves it through the
/// hooks: the one update path of trainers and Pokémon. `missing` is the error when there is
/// no such row, `db_error` maps a failed save.
async fn update_locked<E, A>(
    state: &AppState,
    key: E::Column,
    id: String,
    missing: fn(&str) -> AppError,
    db_error: impl Fn(DbErr) -> AppError + Send + 'static,
    apply: impl FnOnce(&mut A) + Send + 'static,
) -> AppResult<E::Model>
where
    E: EntityTrait,
    E::Model: IntoActiveModel<A> + Send + Sync,
    A: ActiveModelTrait<Entity = E> + ActiveModelBehavior + Send + 'static,
{
    consistency::write(state, move |txn| {
        Box::pin(async move {
            let row = lock_rows::<E, _>(txn, key, [id.clone()])
                .await?
                .pop()
                .ok_or_else(|| missing(&id))?;
            let mut am: A = row.into_active_model();
            apply(&mut am);
            am.update(txn).await.map_err(db_error)
        })
    })
    .await
}

/// Creates a trainer.
pub async fn create_trainer(state: &AppState, new: NewTrainer) -> AppResult<trainer::Model> {
    let id = types::entity_id("id", &new.id)?;
    let first_name = types::text("firstName", &new.first_name)?;
    let last_name = types::text("lastName", &new.last_name)?;
    let dob = types::iso_date("dateOfBirth", &new.date_of_birth)?;
    consistency::write(state, move |txn| {
        Box::pin(async move {
            trainer::ActiveModel {
                id: Set(id.clone()),
                first_name: Set(first_name),
                last_name: Set(last_name),
                date_of_birth: Set(dob),
                ..Default::default()
            }
            .insert(txn)
            .await
            .map_err(|e| {
                if is_unique_violation(&e) {
                    AppError::Conflict(format!("id: a trainer `{id}` already exists"))
                } else {
                    e.into()
                }
            })
        })
    })
    .await
}

/// Changes a trainer's names or date of birth.
pub async fn update_trainer(
    state: &AppState,
    id: &str,
    changes: TrainerChanges,
) -> AppResult<trainer::Model> {
    let first_name = optional("firstName", changes.first_name.as_deref(), types::text)?;
    let last_name = optional("lastName", changes.last_name.as_deref(), types::text)?;
    let dob = optional(
        "dateOfBirth",
        changes.date_of_birth.as_deref(),
        types::iso_date,
    )?;
    update_locked::<trainer::Entity, trainer::ActiveModel>(
        state,
        trainer::Column::Id,
        id.to_owned(),
        trainer_not_found,
        AppError::from,
        move |am| {
            if let Some(v) = first_name {
                am.first_name = Set(v);
            }
            if let Some(v) = last_name {
                am.last_name = Set(v);
            }
            if let Some(v) = dob {
                am.date_of_birth = Set(v);
            }
        },
    )
    .await
}

/// Deletes a trainer. One who owns Pokémon is a `CONFLICT`, unless `cascade`, which deletes
/// their Pokémon too, in the same transaction, as one bulk statement through the write path.
pub async fn delete_trainer(state: &AppState, id: &str, cascade: bool) -> AppResult<bool> {
    let id = id.to_owned();
    consistency::write(state, move |txn| {
        Box::pin(async move {
            let row = lock_trainer(txn, &id)
                .await?
                .ok_or_else(|| trainer_not_found(&id))?;
            // The owner's row is locked: no Pokémon can be created for it or traded to it
            // until this transaction ends.
            let owned: Vec<String> = pokemon::Entity::find()
                .select_only()
                .column(pokemon::Column::Id)
                .filter(pokemon::Column::OwnerId.eq(id.as_str()))
                .into_tuple()
                .all(txn)
                .await?;
            if !owned.is_empty() && !cascade {
                return Err(AppError::Conflict(format!(
                    "id: trainer `{id}` owns {} Pokémon; delete or trade them first, or pass \
                     cascade: true",
                    owned.len()
                )));
            }
            if !owned.is_empty() {
                consistency::bulk(pokemon::CACHE_ENTITY, owned.iter().cloned())?;
                pokemon::Entity::delete_many()
                    .filter(pokemon::Column::Id.is_in(owned))
                    .exec(txn)
                    .await?;
            }
            row.delete(txn).await?;
            Ok(true)
        })
    })
    .await
}

fn owner_error(field: &'static str, owner: String) -> impl Fn(DbErr) -> AppError {
    move |e| {
        if is_fk_violation(&e) {
            AppError::invalid(field, format!("no trainer with id `{owner}`"))
        } else {
            e.into()
        }
    }
}

/// Creates a Pokémon owned by an existing trainer.
pub async fn create_pokemon(state: &AppState, new: NewPokemon) -> AppResult<pokemon::Model> {
    let id = types::entity_id("id", &new.id)?;
    let nickname = types::text("nickname", &new.nickname)?;
    let species = types::text("species", &new.species)?;
    let level = types::level("level", new.level)?;
    let owner = types::entity_id("ownerId", &new.owner_id)?;
    let since = match new.date_of_ownership.as_deref() {
        Some(d) => types::iso_date("dateOfOwnership", d)?,
        None => Utc::now().date_naive(),
    };
    consistency::write(state, move |txn| {
        Box::pin(async move {
            // Locking the owner keeps it from being deleted meanwhile (and, on SQLite, starts
            // the transaction with a write).
            lock_trainer(txn, &owner).await?.ok_or_else(|| {
                AppError::invalid("ownerId", format!("no trainer with id `{owner}`"))
            })?;
            pokemon::ActiveModel {
                id: Set(id.clone()),
                nickname: Set(nickname),
                species: Set(species),
                level: Set(level),
                owner_id: Set(owner.clone()),
                date_of_ownership: Set(since),
                ..Default::default()
            }
            .insert(txn)
            .await
            .map_err(|e| {
                if is_unique_violation(&e) {
                    AppError::Conflict(format!("id: a Pokémon `{id}` already exists"))
                } else {
                    owner_error("ownerId", owner.clone())(e)
                }
            })
        })
    })
    .await
}

/// Changes a Pokémon's nickname, species, level, owner or date of ownership. A new owner
/// must exist (the foreign key holds it at commit).
pub async fn update_pokemon(
    state: &AppState,
    id: &str,
    changes: PokemonChanges,
) -> AppResult<pokemon::Model> {
    let nickname = optional("nickname", changes.nickname.as_deref(), types::text)?;
    let species = optional("species", changes.species.as_deref(), types::text)?;
    let level = changes
        .level
        .map(|v| types::level("level", v))
        .transpose()?;
    let owner = optional("ownerId", changes.owner_id.as_deref(), types::entity_id)?;
    let since = optional(
        "dateOfOwnership",
        changes.date_of_ownership.as_deref(),
        types::iso_date,
    )?;
    let db_error = owner_error("ownerId", owner.clone().unwrap_or_default());
    update_locked::<pokemon::Entity, pokemon::ActiveModel>(
        state,
        pokemon::Column::Id,
        id.to_owned(),
        pokemon_not_found,
        db_error,
        move |am| {
            if let Some(v) = nickname {
                am.nickname = Set(v);
            }
            if let Some(v) = species {
                am.species = Set(v);
            }
            if let Some(v) = level {
                am.level = Set(v);
            }
            if let Some(v) = owner {
                am.owner_id = Set(v);
            }
            if let Some(v) = since {
                am.date_of_ownership = Set(v);
            }
        },
    )
    .await
}

/// Deletes a Pokémon.
pub async fn delete_pokemon(state: &AppState, id: &str) -> AppResult<bool> {
    let id = id.to_owned();
    consistency::write(state, move |txn| {
        Box::pin(async move {
            let row = lock_pokemons(txn, std::slice::from_ref(&id))
                .await?
                .remove(&id)
                .ok_or_else(|| pokemon_not_found(&id))?;
            row.delete(txn).await?;
            Ok(true)
        })
    })
    .await
}

async fn require_trainer(txn: &DatabaseTransaction, field: &str, id: &str) -> AppResult<()> {
    let exists = trainer::Entity::find_by_id(id.to_owned())
        .count(txn)
        .await?
        > 0;
    if exists {
        Ok(())
    } else {
        Err(AppError::invalid(
            field,
            format!("no trainer with id `{id}`"),
        ))
    }
}

/// A validated trade request.
#[derive(Debug, Clone)]
pub struct TradeRequest {
    /// Trainer A.
    pub trainer_a: String,
    /// Trainer B.
    pub trainer_b: String,
    /// A's Pokémon, going to B.
    pub pokemons_a: Vec<String>,
    /// B's Pokémon, going to A.
    pub pokemons_b: Vec<String>,
}

impl TradeRequest {
    /// Checks the arguments of `exchangePokemons`: valid ids, two different trainers, at least
    /// one Pokémon, none listed twice.
    pub fn parse(
        trainer_a: &str,
        trainer_b: &str,
        pokemons_a: &[String],
        pokemons_b: &[String],
    ) -> AppResult<Self> {
        let trainer_a = types::entity_id("trainerA", trainer_a)?;
        let trainer_b = types::entity_id("trainerB", trainer_b)?;
        if trainer_a == trainer_b {
            return Err(AppError::invalid(
                "trainerB",
                "a trainer cannot trade with themselves",
            ));
        }
        if pokemons_a.is_empty() && pokemons_b.is_empty() {
            return Err(AppError::invalid(
                "pokemonsA",
                "a trade moves at least one Pokémon",
            ));
        }
        let mut seen = HashSet::new();
        let mut side = |field: &str, ids: &[String]| -> AppResult<Vec<String>> {
            if ids.len() > MAX_TRADE_SIDE {
                return Err(AppError::invalid(
                    field,
                    format!("at most {MAX_TRADE_SIDE} Pokémon per side"),
                ));
            }
            ids.iter()
                .map(|raw| {
                    let id = types::entity_id(field, raw)?;
                    if !seen.insert(id.clone()) {
                        return Err(AppError::invalid(
                            field,
                            format!("`{id}` is listed more than once"),
                        ));
                    }
                    Ok(id)
                })
                .collect()
        };
        let pokemons_a = side("pokemonsA", pokemons_a)?;
        let pokemons_b = side("pokemonsB", pokemons_b)?;
        Ok(Self {
            trainer_a,
            trainer_b,
            pokemons_a,
            pokemons_b,
        })
    }
}

/// What the `trades` topic carries: the recorded trade.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TradeEvent {
    /// The trade as recorded.
    pub trade: trade::Model,
}

/// Exchanges Pokémon: A's listed Pokémon go to B and B's to A, all or nothing.
///
/// The listed rows are locked first, so the ownership checked here still holds at commit:
/// of concurrent trades of one Pokémon, the first to lock it wins and the others see the new
/// owner and fail. Every move goes through the hooks, so the cache hears of it on commit.
pub async fn exchange_pokemons(state: &AppState, req: TradeRequest) -> AppResult<trade::Model> {
    let trade = consistency::write(state, move |txn| {
        Box::pin(async move {
            let all: Vec<String> = req
                .pokemons_a
                .iter()
                .chain(&req.pokemons_b)
                .cloned()
                .collect();
            // Lock first: on SQLite the transaction must start with a write (see lock_trainer).
            let mut rows = lock_pokemons(txn, &all).await?;
            require_trainer(txn, "trainerA", &req.trainer_a).await?;
            require_trainer(txn, "trainerB", &req.trainer_b).await?;
            let mut offenders = Vec::new();
            for (field, ids, owner) in [
                ("pokemonsA", &req.pokemons_a, &req.trainer_a),
                ("pokemonsB", &req.pokemons_b, &req.trainer_b),
            ] {
                for id in ids {
                    match rows.get(id) {
                        None => offenders.push(format!("{field}: `{id}` does not exist")),
                        Some(p) if p.owner_id != *owner => {
                            offenders.push(format!("{field}: `{id}` is not owned by `{owner}`"))
                        }
                        Some(_) => {}
                    }
                }
            }
            if !offenders.is_empty() {
                return Err(AppError::Conflict(format!(
                    "nothing was traded: {}",
                    offenders.join("; ")
                )));
            }
            let today = Utc::now().date_naive();
            for (ids, to) in [
                (&req.pokemons_a, &req.trainer_b),
                (&req.pokemons_b, &req.trainer_a),
            ] {
                for id in ids {
                    let row = rows.remove(id).expect("checked above");
                    let mut am: pokemon::ActiveModel = row.into();
                    am.owner_id = Set(to.clone());
                    am.date_of_ownership = Set(today);
                    am.update(txn).await.map_err(|e| {
                        if is_fk_violation(&e) {
                            AppError::Conflict(format!("trainer `{to}` was deleted meanwhile"))
                        } else {
                            e.into()
                        }
                    })?;
                }
            }
            let json = |ids: &Vec<String>| serde_json::to_string(ids).unwrap_or_default();
            Ok(trade::ActiveModel {
                trainer_a: Set(req.trainer_a.clone()),
                trainer_b: Set(req.trainer_b.clone()),
                pokemons_a: Set(json(&req.pokemons_a)),
                pokemons_b: Set(json(&req.pokemons_b)),
                traded_at: Set(Utc::now()),
                ..Default::default()
            }
            .insert(txn)
            .await?)
        })
    })
    .await?;
    let event = TradeEvent {
        trade: trade.clone(),
    };
    match serde_json::to_string(&event) {
        Ok(payload) => {
            if let Err(e) = state.events.publish(TRADES_TOPIC, payload).await {
                // The trade committed; a lost notification must not turn it into an error.
                tracing::warn!(error = %e, trade = trade.id, "could not publish a trade");
            }
        }
        Err(e) => tracing::warn!(error = %e, "could not encode a trade event"),
    }
    Ok(trade)
}

/// A page of trainers by id, with the total count.
pub async fn list_trainers(
    state: &AppState,
    first: u64,
    count: bool,
    after: Option<String>,
) -> AppResult<Page<trainer::Model>> {
    consistency::reading(state, &["trainers"]).await;
    let q = trainer::Entity::find();
    let after = after.map(Into::into);
    keyset_page(
        &state.direct,
        q,
        trainer::Column::Id,
        Order::Asc,
        first,
        count,
        after,
    )
    .await
}

/// The statement of [`list_trainers_with_pokemons`]: a keyset page of trainers (`$1` their
/// count, or with `after`: `$1` the last id seen, `$2` the count), each with its Pokémon as one
/// array per column, ordered by id (`NULL` arrays for a trainer without any). Dates come as
/// days since 2000-01-01, PostgreSQL's own form of a date, which `entity::position::pg_date`
/// reads without calendar arithmetic.
macro_rules! trainers_with_pokemons {
    ($after:literal, $limit:literal) => {
        concat!(
            r#"SELECT t."id", t."first_name", t."last_name", t."date_of_birth", t."version", "#,
            r#"p."ids", p."nicknames", p."species", p."levels", p."dates", p."versions" "#,
            r#"FROM (SELECT "id", "first_name", "last_name", "date_of_birth", "version" "#,
            r#"FROM "trainers" "#,
            $after,
            r#"ORDER BY "id" LIMIT "#,
            $limit,
            r#") AS t LEFT JOIN LATERAL (SELECT array_agg("id" ORDER BY "id") AS "ids", "#,
            r#"array_agg("nickname" ORDER BY "id") AS "nicknames", "#,
            r#"array_agg("species" ORDER BY "id") AS "species", "#,
            r#"array_agg("level" ORDER BY "id") AS "levels", "#,
            r#"array_agg("date_of_ownership" - DATE '2000-01-01' ORDER BY "id") AS "dates", "#,
            r#"array_agg("version" ORDER BY "id") AS "versions" "#,
            r#"FROM "pokemons" WHERE "owner_id" = t."id") AS p ON true ORDER BY t."id""#
        )
    };
}

/// A page of trainers by id, as [`list_trainers`], with every one of their Pokémon (by id),
/// in one statement: on PostgreSQL each trainer's Pokémon come beside its row, one array per
/// column (a lateral `array_agg`), so `trainers { pokemons }` makes one round trip and decodes
/// one row per trainer. `None` on another database: the caller loads the Pokémon per batch.
pub async fn list_trainers_with_pokemons(
    state: &AppState,
    first: u64,
    count: bool,
    after: Option<String>,
) -> AppResult<
    Option<(
        Page<trainer::Model>,
        HashMap<String, Arc<Vec<pokemon::Model>>>,
    )>,
> {
    if state.direct.get_database_backend() != DbBackend::Postgres {
        return Ok(None);
    }
    consistency::reading(state, &["trainers", "pokemons"]).await;
    let total = if count {
        trainer::Entity::find().count(&state.direct).await? as i64
    } else {
        0
    };
    let has_previous = after.is_some();
    // One more than the page, to tell whether there is a next one.
    let limit = sea_orm::Value::from(first.saturating_add(1).min(i64::MAX as u64) as i64);
    let statement = match after {
        Some(after) => Statement::from_sql_and_values(
            DbBackend::Postgres,
            trainers_with_pokemons!(r#"WHERE "id" > $1 "#, "$2"),
            [after.into(), limit],
        ),
        None => Statement::from_sql_and_values(
            DbBackend::Postgres,
            trainers_with_pokemons!("", "$1"),
            [limit],
        ),
    };
    let rows = state.direct.query_all(statement).await?;
    let mut items = Vec::with_capacity(rows.len());
    let mut owned = HashMap::with_capacity(rows.len());
    for row in &rows {
        let (trainer, pokemons) = trainer_with_pokemons(row)?;
        owned.insert(trainer.id.clone(), Arc::new(pokemons));
        items.push(trainer);
    }
    Ok(Some((into_page(items, first, has_previous, total), owned)))
}

/// A row of [`trainers_with_pokemons!`]: the trainer (its first columns, in its entity's order)
/// and its Pokémon. The arrays are decoded without sqlx's check of their type against the
/// field's, as the statement is this module's.
fn trainer_with_pokemons(
    row: &QueryResult,
) -> Result<(trainer::Model, Vec<pokemon::Model>), DbErr> {
    use entity::position::FromPosition;
    use sea_orm::sqlx::Row;
    let trainer = trainer::Model::from_position(row)?;
    let row = row
        .try_as_pg_row()
        .ok_or_else(|| DbErr::Type("a PostgreSQL row was expected".into()))?;
    let get = |e: sea_orm::sqlx::Error| DbErr::Query(sea_orm::RuntimeErr::SqlxError(e));
    let ids: Option<Vec<String>> = row.try_get_unchecked(5).map_err(get)?;
    let Some(ids) = ids else {
        return Ok((trainer, Vec::new()));
    };
    let nicknames: Vec<String> = row.try_get_unchecked(6).map_err(get)?;
    let species: Vec<String> = row.try_get_unchecked(7).map_err(get)?;
    let levels: Vec<i32> = row.try_get_unchecked(8).map_err(get)?;
    let days: Vec<i32> = row.try_get_unchecked(9).map_err(get)?;
    let versions: Vec<i64> = row.try_get_unchecked(10).map_err(get)?;
    let dates = days
        .into_iter()
        .map(|d| {
            entity::position::pg_date(d)
                .ok_or_else(|| DbErr::Type(format!("date of ownership out of range: {d}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let pokemons = ids
        .into_iter()
        .zip(nicknames)
        .zip(species)
        .zip(levels)
        .zip(dates)
        .zip(versions)
        .map(
            |(((((id, nickname), species), level), date_of_ownership), version)| pokemon::Model {
                id,
                nickname,
                species,
                level,
                owner_id: trainer.id.clone(),
                date_of_ownership,
                version,
            },
        )
        .collect();
    Ok((trainer, pokemons))
}

/// A page of Pokémon by id, optionally of one owner and/or species, with the total count.
pub async fn list_pokemons(
    state: &AppState,
    first: u64,
    count: bool,
    after: Option<String>,
    owner: Option<String>,
    species: Option<String>,
) -> AppResult<Page<pokemon::Model>> {
    consistency::reading(state, &["pokemons"]).await;
    let mut q = pokemon::Entity::find();
    if let Some(o) = owner {
        q = q.filter(pokemon::Column::OwnerId.eq(o));
    }
    if let Some(s) = species {
        q = q.filter(pokemon::Column::Species.eq(s));
    }
    let after = after.map(Into::into);
    keyset_page(
        &state.direct,
        q,
        pokemon::Column::Id,
        Order::Asc,
        first,
        count,
        after,
    )
    .await
}

/// A page of trades, newest first, optionally those where `trainer` took part.
pub async fn list_trades(
    state: &AppState,
    first: u64,
    count: bool,
    after: Option<i64>,
    trainer: Option<String>,
) -> AppResult<Page<trade::Model>> {
    consistency::reading(state, &["trades"]).await;
    let mut q = trade::Entity::find();
    if let Some(t) = trainer {
        q = q.filter(
            trade::Column::TrainerA
                .eq(t.clone())
                .or(trade::Column::TrainerB.eq(t)),
        );
    }
    let after = after.map(Into::into);
    keyset_page(
        &state.direct,
        q,
        trade::Column::Id,
        Order::Desc,
        first,
        count,
        after,
    )
    .await
}

/// Sample trainers: (id, first name, last name, date of birth).
const SAMPLE_TRAINERS: &[(&str, &str, &str, &str)] = &[
    ("trainer1", "Ash", "Ketchum", "1997-05-22"),
    ("trainer2", "Misty", "Waterflower", "1996-04-01"),
    ("trainer3", "Brock", "Harrison", "1994-07-15"),
    ("trainer4", "Gary", "Oak", "1997-02-11"),
];

/// Sample Pokémon: (id, nickname, species, level, owner).
const SAMPLE_POKEMONS: &[(&str, &str, &str, i32, &str)] = &[
    ("pikachu1", "Sparky", "Pikachu", 25, "trainer1"),
    ("bulbasaur1", "Bulby", "Bulbasaur", 14, "trainer1"),
    ("charmander1", "Flame", "Charmander", 18, "trainer1"),
    ("starmie1", "Star", "Starmie", 30, "trainer2"),
    ("psyduck1", "Duck", "Psyduck", 12, "trainer2"),
    ("onix1", "Rocky", "Onix", 28, "trainer3"),
    ("geodude1", "Pebble", "Geodude", 16, "trainer3"),
    ("eevee1", "Fluff", "Eevee", 22, "trainer4"),
];

/// Creates whichever sample trainers and Pokémon are missing; returns how many of each.
pub async fn seed_samples(state: &AppState) -> anyhow::Result<(usize, usize)> {
    let (mut trainers, mut pokemons) = (0, 0);
    for (id, first, last, dob) in SAMPLE_TRAINERS {
        let input = NewTrainer {
            id: (*id).into(),
            first_name: (*first).into(),
            last_name: (*last).into(),
            date_of_birth: (*dob).into(),
        };
        match create_trainer(state, input).await {
            Ok(_) => trainers += 1,
            Err(AppError::Conflict(_)) => {}
            Err(e) => anyhow::bail!("seeding trainer {id}: {e:?}"),
        }
    }
    for (id, nickname, species, level, owner) in SAMPLE_POKEMONS {
        let input = NewPokemon {
            id: (*id).into(),
            nickname: (*nickname).into(),
            species: (*species).into(),
            level: i64::from(*level),
            owner_id: (*owner).into(),
            date_of_ownership: None,
        };
        match create_pokemon(state, input).await {
            Ok(_) => pokemons += 1,
            Err(AppError::Conflict(_)) => {}
            Err(e) => anyhow::bail!("seeding Pokémon {id}: {e:?}"),
        }
    }
    Ok((trainers, pokemons))
}
