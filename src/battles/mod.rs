//! Battles: the per-user battle ring in the cache tier, the
//! battle itself and its history, and live battle results over the event bus.

mod resolvers;
pub mod rules;
pub mod service;
pub mod types;

pub use resolvers::{BattleMutation, BattleQuery, BattleSubscription};
