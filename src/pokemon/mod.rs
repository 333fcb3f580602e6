//! Pokémon (SPEC §7): trainers and their Pokémon, read through the cache by id and written
//! through it by the entity hooks; atomic trades with a subscription; CSV imports staged in
//! the cache tier and written in one transaction.

pub mod import;
pub mod loaders;
mod resolvers;
pub mod service;
pub mod types;

pub use resolvers::{PokemonMutation, PokemonQuery, TradeSubscription};
