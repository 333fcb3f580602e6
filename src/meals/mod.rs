//! Meals: the catalogue, read through the cache by id and by
//! name, written through it by the entity hooks.

pub mod loaders;
mod resolvers;
pub mod service;
pub mod types;

pub use resolvers::{MealMutation, MealQuery};
