//! GraphQL types of credentials and the validated credential id.

use async_graphql::SimpleObject;
use chrono::{DateTime, Utc};

use crate::error::{AppError, AppResult};

/// An API key of the viewer. The secret key is not here: it is shown once, by
/// `createCredential`, and never stored.
#[derive(SimpleObject, Debug, Clone)]
pub struct Credential {
    /// The credential's id, chosen by its owner.
    pub id: String,
    /// The public half of the key, sent as the user name of `Authorization: Basic`.
    pub public_key: String,
    /// The salt of the stored hash of the secret key (16 random bytes, hex).
    pub salt: String,
    /// When the key was created or last rotated.
    pub created_at: DateTime<Utc>,
}

impl From<entity::credential::Model> for Credential {
    fn from(m: entity::credential::Model) -> Self {
        Self {
            id: m.credential_id,
            public_key: m.public_key,
            salt: m.salt,
            created_at: m.created_at,
        }
    }
}

/// A credential just created or rotated, with its secret key: the only time it is shown.
/// Authenticate with `Authorization: Basic base64(publicKey:secretKey)`.
#[derive(SimpleObject, Debug, Clone)]
pub struct NewCredential {
    /// The credential.
    pub credential: Credential,
    /// The secret key. Store it now: Arena keeps only a salted hash and cannot show it again.
    pub secret_key: String,
}

/// A credential id: 1 to 128 characters, not blank, no control characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialId(String);

impl CredentialId {
    /// Validates `raw` for the argument `field`.
    pub fn parse(field: &str, raw: &str) -> AppResult<Self> {
        let n = raw.chars().count();
        if !(1..=128).contains(&n) {
            return Err(AppError::invalid(
                field,
                format!("must be 1 to 128 characters long (got {n})"),
            ));
        }
        if raw.trim().is_empty() {
            return Err(AppError::invalid(field, "must not be blank"));
        }
        if raw.chars().any(char::is_control) {
            return Err(AppError::invalid(
                field,
                "must not contain control characters",
            ));
        }
        Ok(Self(raw.to_owned()))
    }

    /// The id.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credential_ids_must_be_one_to_128_visible_characters() {
        assert!(CredentialId::parse("id", "").is_err());
        assert!(CredentialId::parse("id", "  ").is_err());
        assert!(CredentialId::parse("id", &"k".repeat(129)).is_err());
        assert!(CredentialId::parse("id", "ci-key").is_ok());
    }
}
