//! The per-request DataLoaders of every domain. A new set is made for every HTTP request
//! and WebSocket connection; loaders keep no cache across requests, they only batch.

use async_graphql::{BatchRequest, Data};

use crate::meals::loaders::MealLoader;
use crate::pokemon::loaders::PokemonLoaders;
use crate::state::AppState;

/// Gives every operation of `batch` the loaders of one request.
pub fn attach(batch: BatchRequest, state: &AppState) -> BatchRequest {
    batch
        .data(MealLoader::new(state))
        .data(PokemonLoaders::new(state))
}

/// Puts the loaders of one WebSocket connection in its data.
pub fn insert(data: &mut Data, state: &AppState) {
    data.insert(MealLoader::new(state));
    data.insert(PokemonLoaders::new(state));
}
