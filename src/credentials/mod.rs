//! Credentials: every user's API keys, and API-key authentication
//! (`Authorization: Basic base64(publicKey:secretKey)`).

mod resolvers;
pub mod service;
pub mod types;

pub use resolvers::{CredentialMutation, CredentialQuery};
