//! DataLoaders of the Pokémon domain: trainers and Pokémon by id (N ids → one cache round
//! trip; the misses → one SQL query, then one round trip filling the cache, each fill guarded
//! by the lookup's lease and its row version), and a trainer's Pokémon by owner id (N owners → one SQL query).
//!
//! The per-owner lists are read from SQL in one indexed query per batch, under the version
//! of the `pokemons` collection (`consistency::reading`), so a response built from them can
//! be memoized.

use std::collections::HashMap;
use std::sync::Arc;

use async_graphql::dataloader::Loader;
use async_graphql::Context;
use entity::{pokemon, trainer};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder};

use crate::consistency::BatchLoader;
use crate::consistency::{self, Cached, Lease};
use crate::error::AppError;
use crate::state::AppState;

/// Reads trainers by id through the cache.
pub async fn load_trainers(
    state: &AppState,
    ids: &[String],
) -> Result<HashMap<String, trainer::Model>, AppError> {
    let (mut found, misses, lease) =
        cached(state, trainer::CACHE_ENTITY, ids, |m: &trainer::Model| {
            m.id.clone()
        })
        .await;
    if misses.is_empty() {
        return Ok(found);
    }
    let query = trainer::Entity::find().filter(trainer::Column::Id.is_in(misses));
    let rows = entity::position::all(query, &state.direct).await?;
    let fills = rows
        .iter()
        .map(|m| (m.id.clone(), m.version, serde_json::to_value(m).ok()))
        .collect();
    consistency::fill_many(state, trainer::CACHE_ENTITY, &lease, fills).await;
    found.extend(rows.into_iter().map(|m| (m.id.clone(), m)));
    Ok(found)
}

/// Reads Pokémon by id through the cache.
pub async fn load_pokemons(
    state: &AppState,
    ids: &[String],
) -> Result<HashMap<String, pokemon::Model>, AppError> {
    let (mut found, misses, lease) =
        cached(state, pokemon::CACHE_ENTITY, ids, |m: &pokemon::Model| {
            m.id.clone()
        })
        .await;
    if misses.is_empty() {
        return Ok(found);
    }
    let query = pokemon::Entity::find().filter(pokemon::Column::Id.is_in(misses));
    let rows = entity::position::all(query, &state.direct).await?;
    let fills = rows
        .iter()
        .map(|m| (m.id.clone(), m.version, serde_json::to_value(m).ok()))
        .collect();
    consistency::fill_many(state, pokemon::CACHE_ENTITY, &lease, fills).await;
    found.extend(rows.into_iter().map(|m| (m.id.clone(), m)));
    Ok(found)
}

/// The cache's answers for `ids`: the rows found, the ids to ask the database for, and the
/// lease that lets the caller fill those misses.
async fn cached<M: serde::de::DeserializeOwned>(
    state: &AppState,
    entity: &'static str,
    ids: &[String],
    id_of: impl Fn(&M) -> String,
) -> (HashMap<String, M>, Vec<String>, Lease) {
    let (answers, lease) = consistency::read_many::<M>(state, entity, ids).await;
    let mut found = HashMap::with_capacity(ids.len());
    let mut misses = Vec::new();
    for (id, c) in ids.iter().zip(answers) {
        match c {
            Cached::Row(m) if id_of(&m) == *id => {
                found.insert(id.clone(), m);
            }
            Cached::Gone => {}
            Cached::Row(_) | Cached::Miss => misses.push(id.clone()),
        }
    }
    (found, misses, lease)
}

/// Loads trainers by id.
pub struct TrainerByIdLoader {
    state: AppState,
}

impl TrainerByIdLoader {
    /// A loader over `state`'s cache and database.
    pub fn new(state: AppState) -> Self {
        Self { state }
    }
}

impl Loader<String> for TrainerByIdLoader {
    type Value = trainer::Model;
    type Error = AppError;

    async fn load(&self, keys: &[String]) -> Result<HashMap<String, Self::Value>, Self::Error> {
        load_trainers(&self.state, keys).await
    }
}

/// Loads Pokémon by id.
pub struct PokemonByIdLoader {
    state: AppState,
}

impl PokemonByIdLoader {
    /// A loader over `state`'s cache and database.
    pub fn new(state: AppState) -> Self {
        Self { state }
    }
}

impl Loader<String> for PokemonByIdLoader {
    type Value = pokemon::Model;
    type Error = AppError;

    async fn load(&self, keys: &[String]) -> Result<HashMap<String, Self::Value>, Self::Error> {
        load_pokemons(&self.state, keys).await
    }
}

/// Loads each trainer's Pokémon (ordered by id) by owner id: one SQL query per batch.
pub struct PokemonsByOwnerLoader {
    state: AppState,
}

impl PokemonsByOwnerLoader {
    /// A loader over `state`'s database.
    pub fn new(state: AppState) -> Self {
        Self { state }
    }
}

impl Loader<String> for PokemonsByOwnerLoader {
    /// Shared: the batch hands every caller the same list, without copying it.
    type Value = Arc<Vec<pokemon::Model>>;
    type Error = AppError;

    async fn load(&self, keys: &[String]) -> Result<HashMap<String, Self::Value>, Self::Error> {
        crate::consistency::reading(&self.state, &["pokemons"]).await;
        let query = pokemon::Entity::find()
            .filter(pokemon::Column::OwnerId.is_in(keys.iter().cloned()))
            .order_by_asc(pokemon::Column::Id);
        let rows = entity::position::all(query, &self.state.direct).await?;
        let mut out: HashMap<String, Vec<pokemon::Model>> =
            keys.iter().map(|k| (k.clone(), Vec::new())).collect();
        for p in rows {
            out.entry(p.owner_id.clone()).or_default().push(p);
        }
        Ok(out.into_iter().map(|(k, v)| (k, Arc::new(v))).collect())
    }
}

/// The Pokémon domain's loaders of one request (or WebSocket connection).
#[derive(Clone)]
pub struct PokemonLoaders(Arc<Loaders>);

/// The loaders themselves.
pub struct Loaders {
    /// Trainers by id: one cache round trip, then one SQL query for the misses.
    pub trainers: BatchLoader<String, TrainerByIdLoader>,
    /// Pokémon by id: one cache round trip, then one SQL query for the misses.
    pub pokemons: BatchLoader<String, PokemonByIdLoader>,
    /// Each trainer's Pokémon by owner id: one SQL query per batch.
    pub pokemons_by_owner: BatchLoader<String, PokemonsByOwnerLoader>,
}

impl PokemonLoaders {
    /// A fresh set over `state`.
    pub fn new(state: &AppState) -> Self {
        Self(Arc::new(Loaders {
            trainers: BatchLoader::new(TrainerByIdLoader::new(state.clone())),
            pokemons: BatchLoader::new(PokemonByIdLoader::new(state.clone())),
            pokemons_by_owner: BatchLoader::new(PokemonsByOwnerLoader::new(state.clone())),
        }))
    }

    /// The request's loaders (every request and WebSocket connection gets a set).
    pub fn of<'a>(ctx: &Context<'a>) -> &'a Loaders {
        &ctx.data_unchecked::<PokemonLoaders>().0
    }
}
