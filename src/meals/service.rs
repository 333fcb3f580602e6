//! The rules of the catalogue. Every write goes through [`consistency::write`] and the
//! entity hooks; there is no bulk update of meals anywhere (one would be refused).

use entity::meal::{self, Difficulty};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DatabaseTransaction, EntityName, EntityTrait,
    Order, QueryFilter, QueryOrder, QuerySelect, Set,
};

use super::types;
use crate::backends::sql::lock_rows;
use crate::consistency::{self, Cached};
use crate::error::{is_unique_violation, AppError, AppResult};
use crate::pagination::{keyset_page_shaped, Page, ShapeSql};
use crate::state::AppState;

/// A new meal, as asked for (checked by [`create_meal`]).
#[derive(Debug, Clone)]
pub struct NewMeal {
    /// Unique name.
    pub name: String,
    /// Cuisine.
    pub cuisine: String,
    /// Price.
    pub price: f64,
    /// Difficulty.
    pub difficulty: Difficulty,
}

/// Changes to a meal; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct MealChanges {
    /// New cuisine.
    pub cuisine: Option<String>,
    /// New price.
    pub price: Option<f64>,
    /// New difficulty.
    pub difficulty: Option<Difficulty>,
}

/// How the leaderboard ranks meals.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Ranking {
    /// Most wins first.
    #[default]
    Wins,
    /// Highest win percentage first.
    WinPct,
}

/// Locks the meal row for the rest of `txn` and reads it.
pub async fn lock_meal(txn: &DatabaseTransaction, id: i64) -> AppResult<Option<meal::Model>> {
    Ok(lock_rows::<meal::Entity, _>(txn, meal::Column::Id, [id])
        .await?
        .pop())
}

/// Creates a meal.
pub async fn create_meal(state: &AppState, new: NewMeal) -> AppResult<meal::Model> {
    let name = types::text("name", &new.name, 100)?;
    let cuisine = types::text("cuisine", &new.cuisine, 50)?;
    let price = types::price("price", new.price)?;
    let difficulty = new.difficulty;
    consistency::write(state, move |txn| {
        Box::pin(async move {
            meal::ActiveModel {
                name: Set(name.clone()),
                cuisine: Set(cuisine),
                price: Set(price),
                difficulty: Set(difficulty),
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
    changes: MealChanges,
) -> AppResult<meal::Model> {
    let cuisine = changes
        .cuisine
        .as_deref()
        .map(|c| types::text("cuisine", c, 50))
        .transpose()?;
    let price = changes
        .price
        .map(|p| types::price("price", p))
        .transpose()?;
    if state.db.support_returning() {
        // One statement locks, reads and writes the row; it commits on its own, its entry and
        // the meals' lists marked before it runs.
        let keys = vec![
            consistency::entry_key(meal::CACHE_ENTITY, &id.to_string()),
            consistency::collection_key(meal::Entity.table_name()),
        ];
        let difficulty = changes.difficulty;
        return consistency::write_single(state, keys, move |db| {
            Box::pin(async move {
                Ok(meal::update_in_one_statement(db, id, cuisine, price, difficulty).await?)
            })
        })
        .await?
        .ok_or_else(|| not_found(id));
    }
    consistency::write(state, move |txn| {
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
            if let Some(d) = changes.difficulty {
                am.difficulty = Set(d);
            }
            Ok(am.update(txn).await?)
        })
    })
    .await
}

/// Soft-deletes a meal: gone from every read, its name stays taken.
pub async fn delete_meal(state: &AppState, id: i64) -> AppResult<bool> {
    consistency::write(state, move |txn| {
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

/// The id of the live meal named `name`: the cached name → id pair (a tombstone once the meal
/// is deleted), else SQL, filling the pair under the lookup's lease. A name never moves to
/// another meal, so only a deletion changes the pair, through the write path.
pub async fn meal_id_by_name(state: &AppState, name: &str) -> AppResult<Option<i64>> {
    let names = [name.to_owned()];
    let (mut cached, lease) = consistency::read_many::<i64>(state, meal::NAME_ENTITY, &names).await;
    match cached.pop() {
        Some(Cached::Row(id)) => return Ok(Some(id)),
        Some(Cached::Gone) => return Ok(None),
        _ => {}
    }
    let Some(row) = meal::Entity::find()
        .filter(meal::Column::Name.eq(name))
        .one(&state.direct)
        .await?
    else {
        return Ok(None);
    };
    let pair = (!row.deleted).then(|| serde_json::Value::from(row.id));
    consistency::fill_many(
        state,
        meal::NAME_ENTITY,
        &lease,
        vec![(name.to_owned(), row.version, pair)],
    )
    .await;
    Ok((!row.deleted).then_some(row.id))
}

/// A page of live meals, by id, optionally filtered; with the total count.
pub async fn list_meals(
    state: &AppState,
    first: u64,
    count: bool,
    after: Option<i64>,
    cuisine: Option<String>,
    difficulty: Option<Difficulty>,
) -> AppResult<Page<meal::Model>> {
    // The statement's text per shape: which filters, whether after a cursor.
    static SHAPES: [ShapeSql; 8] = [const { ShapeSql::new() }; 8];
    consistency::reading(state, &["meals"]).await;
    let shape = usize::from(cuisine.is_some())
        | usize::from(difficulty.is_some()) << 1
        | usize::from(after.is_some()) << 2;
    let query = || {
        let mut q = meal::Entity::find().filter(meal::Column::Deleted.eq(false));
        if let Some(c) = &cuisine {
            q = q.filter(meal::Column::Cuisine.eq(c.as_str()));
        }
        if let Some(d) = &difficulty {
            q = q.filter(meal::Column::Difficulty.eq(*d));
        }
        q
    };
    // The filters' values, in the order `query` adds them.
    let mut values = vec![sea_orm::Value::from(false)];
    values.extend(cuisine.clone().map(sea_orm::Value::from));
    values.extend(difficulty.map(|d| sea_orm::Value::from(sea_orm::ActiveEnum::to_value(&d))));
    let after = after.map(Into::into);
    keyset_page_shaped(
        &state.direct,
        &SHAPES[shape],
        query,
        values,
        meal::Column::Id,
        Order::Asc,
        first,
        count,
        after,
    )
    .await
}

/// Meals with at least one battle, best first.
pub async fn leaderboard(
    state: &AppState,
    ranking: Ranking,
    first: u64,
) -> AppResult<Vec<meal::Model>> {
    consistency::reading(state, &["meals"]).await;
    let q = meal::Entity::find()
        .filter(meal::Column::Deleted.eq(false))
        .filter(meal::Column::Battles.gte(1));
    let q = match ranking {
        Ranking::Wins => q
            .order_by_desc(meal::Column::Wins)
            .order_by_desc(meal::Column::WinPct),
        Ranking::WinPct => q
            .order_by_desc(meal::Column::WinPct)
            .order_by_desc(meal::Column::Wins),
    };
    let q = q.order_by_asc(meal::Column::Id).limit(first);
    Ok(entity::position::all(q, &state.direct).await?)
}
