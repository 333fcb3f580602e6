//! The per-request DataLoaders. A new set is made for every HTTP request and WebSocket
//! connection; loaders keep no cache across requests, they only batch.

use std::ops::Deref;
use std::sync::Arc;

use async_graphql::dataloader::DataLoader;

use crate::app::AppState;
use crate::meals::loaders::MealByIdLoader;
use crate::pokemon::loaders::{PokemonByIdLoader, PokemonsByOwnerLoader, TrainerByIdLoader};

/// Every loader of one request (cheap to clone: the operations of one batch share them).
#[derive(Clone)]
pub struct RequestLoaders(Arc<Loaders>);

/// The loaders themselves.
pub struct Loaders {
    /// Meals by id: one cache round trip, then one SQL query for the misses.
    pub meals: DataLoader<MealByIdLoader>,
    /// Trainers by id: one cache round trip, then one SQL query for the misses.
    pub trainers: DataLoader<TrainerByIdLoader>,
    /// Pokémon by id: one cache round trip, then one SQL query for the misses.
    pub pokemons: DataLoader<PokemonByIdLoader>,
    /// Each trainer's Pokémon by owner id: one SQL query per batch.
    pub pokemons_by_owner: DataLoader<PokemonsByOwnerLoader>,
}

impl Deref for RequestLoaders {
    type Target = Loaders;
    fn deref(&self) -> &Loaders {
        &self.0
    }
}

impl RequestLoaders {
    /// A fresh set for one request.
    pub fn new(state: &AppState) -> Self {
        Self(Arc::new(Loaders {
            meals: DataLoader::new(MealByIdLoader::new(state.clone()), tokio::spawn),
            trainers: DataLoader::new(TrainerByIdLoader::new(state.clone()), tokio::spawn),
            pokemons: DataLoader::new(PokemonByIdLoader::new(state.clone()), tokio::spawn),
            pokemons_by_owner: DataLoader::new(
                PokemonsByOwnerLoader::new(state.clone()),
                tokio::spawn,
            ),
        }))
    }
}
