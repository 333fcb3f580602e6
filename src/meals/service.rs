//! The rules of the catalogue. Every write goes through [`write_through::write`] and the
//! entity hooks; there is no bulk update of meals anywhere.

use entity::meal;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DatabaseBackend, DatabaseTransaction,
    EntityTrait, Order, QueryFilter, QueryOrder, QuerySelect, Set, Statement,
};

use super::types::{self, CreateMealInput, Difficulty, LeaderboardSort, UpdateMealInput};
use crate::error::{is_unique_violation, AppError, AppResult};
use crate::pagination::{keyset_page, Page};
use crate::state::AppState;
use crate::write_through;

/// Locks the meal row for the rest of `txn` and reads it.
///
/// PostgreSQL: `SELECT … FOR UPDATE`. SQLite has no row locks: a no-op `UPDATE` of the row
/// takes the database's write lock first, so the read below cannot be overtaken by another
/// writer (it changes no column, so it needs no hook).
pub async fn lock_meal(txn: &DatabaseTransaction, id: i64) -> AppResult<Option<meal::Model>> {
    match txn.get_database_backend() {
        DatabaseBackend::Sqlite => {
            txn.execute(Statement::from_sql_and_values(
                DatabaseBackend::Sqlite,
                "UPDATE meals SET version = version WHERE id = ?",
                [id.into()],
            ))
            .await?;
            Ok(meal::Entity::find_by_id(id).one(txn).await?)
        }
        _ => Ok(meal::Entity::find_by_id(id)
            .lock_exclusive()
            .one(txn)
            .await?),
    }
}

/// Creates a meal.
pub async fn create_meal(state: &AppState, input: CreateMealInput) -> AppResult<meal::Model> {
    let name = types::text("name", &input.name, 100)?;
    let cuisine = types::text("cuisine", &input.cuisine, 50)?;
    let price = types::price("price", input.price)?;
    let difficulty = input.difficulty.as_db();
    write_through::write(state, move |txn| {
        Box::pin(async move {
            meal::ActiveModel {
                name: Set(name.clone()),
                cuisine: Set(cuisine),
                price: Set(price),
                difficulty: Set(difficulty.to_owned()),
                battles: Set(0),
                wins: Set(0),
                deleted: Set(false),
                ..Default::default()
            }
            .insert(txn)
            .await
            .map_err(|e| {
                if is_unique_violation(&e) {
                    AppError::Conflict(format!("name: a meal named `{name}` already exists"))
                } else {
                    e.into()
                }
            })
        })
    })
    .await
}

fn not_found(id: i64) -> AppError {
    AppError::NotFound(format!("no meal with id {id}"))
}

/// Changes a meal's cuisine, price or difficulty (never its name).
pub async fn update_meal(
    state: &AppState,
    id: i64,
    input: UpdateMealInput,
) -> AppResult<meal::Model> {
    let cuisine = input
        .cuisine
        .as_deref()
        .map(|c| types::text("cuisine", c, 50))
        .transpose()?;
    let price = input.price.map(|p| types::price("price", p)).transpose()?;
    write_through::write(state, move |txn| {
        Box::pin(async move {
            let row = lock_meal(txn, id)
                .await?
                .filter(|m| !m.deleted)
                .ok_or_else(|| not_found(id))?;
            let mut am: meal::ActiveModel = row.into();
            if let Some(c) = cuisine {
                am.cuisine = Set(c);
            }
            if let Some(p) = price {
                am.price = Set(p);
            }
            if let Some(d) = input.difficulty {
                am.difficulty = Set(d.as_db().to_owned());
            }
            Ok(am.update(txn).await?)
        })
    })
    .await
}

/// Soft-deletes a meal: gone from every read, its name stays taken.
pub async fn delete_meal(state: &AppState, id: i64) -> AppResult<bool> {
    write_through::write(state, move |txn| {
        Box::pin(async move {
            let row = lock_meal(txn, id)
                .await?
                .filter(|m| !m.deleted)
                .ok_or_else(|| not_found(id))?;
            let mut am: meal::ActiveModel = row.into();
            am.deleted = Set(true);
            am.update(txn).await?;
            Ok(true)
        })
    })
    .await
}

/// The id of the meal named `name` (deleted or not): the cached name → id pair, else SQL.
/// Names never change, so the pair never goes stale.
pub async fn meal_id_by_name(state: &AppState, name: &str) -> AppResult<Option<i64>> {
    let key = meal::name_key(name);
    if state.cache_health.usable() {
        match state.cache.get(&key).await {
            Ok(Some(id)) => {
                if let Ok(id) = id.parse() {
                    state
                        .metrics
                        .cache_hits
                        .with_label_values(&["meal_name"])
                        .inc();
                    return Ok(Some(id));
                }
            }
            Ok(None) => {}
            Err(_) => state.cache_health.failed(std::iter::empty()),
        }
    }
    state
        .metrics
        .cache_misses
        .with_label_values(&["meal_name"])
        .inc();
    let Some(row) = meal::Entity::find()
        .filter(meal::Column::Name.eq(name))
        .one(&state.db)
        .await?
    else {
        return Ok(None);
    };
    if !row.deleted && state.cache_health.usable() {
        let _ = state
            .cache
            .set(&key, &row.id.to_string(), Some(state.settings.cache_ttl()))
            .await;
    }
    Ok(Some(row.id))
}

/// A page of live meals, by id, optionally filtered; with the total count.
pub async fn list_meals(
    state: &AppState,
    first: u64,
    after: Option<i64>,
    cuisine: Option<String>,
    difficulty: Option<Difficulty>,
) -> AppResult<Page<meal::Model>> {
    let mut q = meal::Entity::find().filter(meal::Column::Deleted.eq(false));
    if let Some(c) = cuisine {
        q = q.filter(meal::Column::Cuisine.eq(c));
    }
    if let Some(d) = difficulty {
        q = q.filter(meal::Column::Difficulty.eq(d.as_db()));
    }
    let after = after.map(Into::into);
    keyset_page(&state.db, q, meal::Column::Id, Order::Asc, first, after).await
}

/// Meals with at least one battle, best first.
pub async fn leaderboard(
    state: &AppState,
    sort: LeaderboardSort,
    first: u64,
) -> AppResult<Vec<meal::Model>> {
    let q = meal::Entity::find()
        .filter(meal::Column::Deleted.eq(false))
        .filter(meal::Column::Battles.gte(1));
    let q = match sort {
        LeaderboardSort::Wins => q
            .order_by_desc(meal::Column::Wins)
            .order_by_desc(meal::Column::WinPct),
        LeaderboardSort::WinPct => q
            .order_by_desc(meal::Column::WinPct)
            .order_by_desc(meal::Column::Wins),
    };
    Ok(q.order_by_asc(meal::Column::Id)
        .limit(first)
        .all(&state.db)
        .await?)
}
