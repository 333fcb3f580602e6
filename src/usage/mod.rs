//! Usage: every command counted once for all fields, dice rolls, per-user data
//! (`user_<id>`: saved rolls) and the cache → document store sync worker.

pub mod counting;
pub mod dice;
mod resolvers;
pub mod service;
pub mod sync;
pub mod types;

pub use counting::UsageBuffer;
pub use resolvers::{UsageMutation, UsageQuery};
