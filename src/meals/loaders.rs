//! `MealByIdLoader`: N ids → one cache round trip (leasing the misses); the misses → one SQL
//! query, then one round trip filling the cache (each fill guarded by its lease and version).

use std::collections::HashMap;
use std::sync::Arc;

use async_graphql::dataloader::Loader;
use async_graphql::Context;
use entity::meal;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};

use crate::consistency::BatchLoader;
use crate::consistency::{self, Cached};
use crate::error::{AppError, AppResult};
use crate::state::AppState;

/// Loads live (not deleted) meals by id.
pub struct MealByIdLoader {
    state: AppState,
}

impl MealByIdLoader {
    /// A loader over `state`'s cache and database.
    pub fn new(state: AppState) -> Self {
        Self { state }
    }
}

/// Reads meals by id through the cache: the batch behind [`MealByIdLoader`], also used by
/// services that need fresh-as-committed meals outside a request.
pub async fn load_meals(state: &AppState, ids: &[i64]) -> AppResult<HashMap<i64, meal::Model>> {
    let keys: Vec<String> = ids.iter().map(|i| i.to_string()).collect();
    let (cached, lease) =
        consistency::read_many::<meal::Model>(state, meal::CACHE_ENTITY, &keys).await;
    let mut found = HashMap::with_capacity(ids.len());
    let mut misses = Vec::new();
    for (id, c) in ids.iter().zip(cached) {
        match c {
            Cached::Row(m) if m.id == *id => {
                found.insert(*id, m);
            }
            Cached::Gone => {}
            Cached::Row(_) | Cached::Miss => misses.push(*id),
        }
    }
    if misses.is_empty() {
        return Ok(found);
    }
    let query = meal::Entity::find().filter(meal::Column::Id.is_in(misses));
    let rows = entity::position::all(query, &state.direct).await?;
    let mut fills = Vec::with_capacity(rows.len());
    for m in rows {
        let row = if m.deleted {
            None
        } else {
            serde_json::to_value(&m).ok()
        };
        fills.push((m.id.to_string(), m.version, row));
        if !m.deleted {
            found.insert(m.id, m);
        }
    }
    consistency::fill_many(state, meal::CACHE_ENTITY, &lease, fills).await;
    Ok(found)
}

impl Loader<i64> for MealByIdLoader {
    type Value = meal::Model;
    type Error = AppError;

    async fn load(&self, keys: &[i64]) -> Result<HashMap<i64, Self::Value>, Self::Error> {
        load_meals(&self.state, keys).await
    }
}

/// The meal loader of one request (or WebSocket connection): its lookups batch together.
#[derive(Clone)]
pub struct MealLoader(Arc<BatchLoader<i64, MealByIdLoader>>);

impl MealLoader {
    /// A fresh loader over `state`.
    pub fn new(state: &AppState) -> Self {
        Self(Arc::new(BatchLoader::new(MealByIdLoader::new(
            state.clone(),
        ))))
    }

    /// Live meals by id, through the request's loader when it has one, else in one batch of
    /// their own.
    pub async fn load_many(
        ctx: &Context<'_>,
        ids: impl IntoIterator<Item = i64>,
    ) -> AppResult<HashMap<i64, meal::Model>> {
        match ctx.data_opt::<MealLoader>() {
            Some(loader) => loader.0.load_many(ids).await,
            None => {
                let ids: Vec<i64> = ids.into_iter().collect();
                load_meals(crate::state::state(ctx), &ids).await
            }
        }
    }

    /// A live meal by id (see [`MealLoader::load_many`]).
    pub async fn load_one(ctx: &Context<'_>, id: i64) -> AppResult<Option<meal::Model>> {
        Ok(Self::load_many(ctx, [id]).await?.remove(&id))
    }
}
