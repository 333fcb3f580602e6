//! The per-request DataLoaders of every domain. A new set is made for every operation; loaders keep no cache across requests, they only batch.

use async_graphql::Request;

use crate::meals::loaders::MealLoader;
use crate::pokemon::loaders::PokemonLoaders;
use crate::state::AppState;

/// Gives an operation loaders of its own.
pub fn attach(request: Request, state: &AppState) -> Request {
    request
        .data(MealLoader::new(state))
        .data(PokemonLoaders::new(state))
}
