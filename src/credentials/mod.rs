//! Credentials (SPEC §6): every user's API keys, and API-key authentication (SPEC §2,
//! `Authorization: Basic base64(publicKey:secretKey)`).

mod resolvers;
pub mod service;
pub mod types;

pub use resolvers::{CredentialMutation, CredentialQuery};
