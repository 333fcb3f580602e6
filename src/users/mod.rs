//! Users and sessions: sign up, log in and out, change password, delete account.

pub mod hooks;
mod resolvers;
pub mod service;
pub mod throttle;
pub mod types;

pub use resolvers::{UserMutation, UserQuery};
