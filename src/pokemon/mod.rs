//! Pokémon: trainers and their Pokémon, read through the cache by id and written
//! through it by the entity hooks; atomic trades with a subscription; CSV imports streamed into
//! one transaction.

pub mod import;
pub mod loaders;
mod resolvers;
pub mod service;
pub mod types;

pub use resolvers::{PokemonMutation, PokemonQuery, TradeSubscription};
