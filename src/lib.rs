//! Arena: a GraphQL API server whose write-through cache is never wrong.

pub mod app;
pub mod backends;
pub mod battles;
pub mod config;
pub mod consistency;
pub mod credentials;
pub mod crypto;
pub mod error;
pub mod graphql;
pub mod meals;
pub mod metrics;
pub mod pagination;
pub mod pokemon;
pub mod specs;
pub mod state;
pub mod storage;
pub mod telemetry;
pub mod usage;
pub mod users;
pub mod viewer;

pub use app::Application;
pub use config::Settings;
pub use state::AppState;
pub mod cli;
pub mod seed;
