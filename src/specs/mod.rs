//! Specs: every user's versioned specs. Each `putSpec` adds a version; reads see the
//! latest version of each spec, or every version of one, newest first.

mod resolvers;
pub mod service;
pub mod types;

pub use resolvers::{SpecMutation, SpecQuery};
