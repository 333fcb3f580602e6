//! GraphQL types of users and sessions, and the validated username / password newtypes.

use async_graphql::{SimpleObject, ID};
use chrono::{DateTime, Utc};

use crate::error::{AppError, AppResult};

/// A user account.
#[derive(SimpleObject, Debug, Clone)]
pub struct User {
    /// The user's id.
    pub id: ID,
    /// The unique username.
    pub username: String,
    /// When the account was created.
    pub created_at: DateTime<Utc>,
}

impl From<entity::user::Model> for User {
    fn from(m: entity::user::Model) -> Self {
        Self {
            id: ID(m.id.to_string()),
            username: m.username,
            created_at: m.created_at,
        }
    }
}

/// A signed-in session: send `Authorization: Bearer <token>` with later requests.
#[derive(SimpleObject, Debug, Clone)]
pub struct Session {
    /// The bearer token; shown only here.
    pub token: String,
    /// The signed-in user.
    pub user: User,
    /// When the token stops working.
    pub expires_at: DateTime<Utc>,
}

/// A username: 3–32 of `[A-Za-z0-9_.-]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Username(String);

impl Username {
    /// Validates `raw`.
    pub fn parse(raw: &str) -> AppResult<Self> {
        let n = raw.chars().count();
        if !(3..=32).contains(&n) {
            return Err(AppError::invalid(
                "username",
                format!("must be 3 to 32 characters long (got {n})"),
            ));
        }
        if let Some(c) = raw
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')))
        {
            return Err(AppError::invalid(
                "username",
                format!("may only contain letters, digits, `_`, `.` and `-` (found `{c}`)"),
            ));
        }
        Ok(Self(raw.to_owned()))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A new password: at least 8 characters, at most 1024 bytes.
#[derive(Clone)]
pub struct NewPassword(String);

impl NewPassword {
    /// Validates `raw` for the input field `field`.
    pub fn parse(field: &str, raw: &str) -> AppResult<Self> {
        if raw.chars().count() < 8 {
            return Err(AppError::invalid(
                field,
                "must be at least 8 characters long",
            ));
        }
        if raw.len() > 1024 {
            return Err(AppError::invalid(field, "must be at most 1024 bytes long"));
        }
        Ok(Self(raw.to_owned()))
    }

    /// The password.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames_outside_the_alphabet_or_length_are_refused() {
        assert!(Username::parse("ab").is_err());
        assert!(Username::parse(&"a".repeat(33)).is_err());
        assert!(Username::parse("bad name").is_err());
        assert!(Username::parse("good_name.-1").is_ok());
    }

    #[test]
    fn short_passwords_are_refused() {
        assert!(NewPassword::parse("password", "1234567").is_err());
        assert!(NewPassword::parse("password", "12345678").is_ok());
    }
}
