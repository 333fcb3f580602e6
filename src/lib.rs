//! Arena: a GraphQL API server whose write-through cache is never wrong.

pub mod app;
pub mod auth;
pub mod backends;
pub mod battles;
pub mod config;
pub mod credentials;
pub mod crypto;
pub mod error;
pub mod graphql;
pub mod meals;
pub mod metrics;
pub mod pokemon;
pub mod specs;
pub mod storage;
pub mod telemetry;
pub mod usage;
pub mod users;
pub mod workers;
pub mod write_through;

pub use app::{AppState, Application};
pub use config::Settings;
pub mod cli;
pub mod seed;
