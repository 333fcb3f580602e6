//! GraphQL types of specs and the validated input of `putSpec`.

use async_graphql::{InputObject, SimpleObject};
use chrono::{DateTime, Utc};

use crate::error::{AppError, AppResult};

/// One version of a spec.
#[derive(SimpleObject, Debug, Clone)]
pub struct Spec {
    /// The spec's id, chosen by its owner.
    pub id: String,
    /// The version label given when this version was put.
    pub version: String,
    /// How many models this version describes.
    pub model_count: i32,
    /// An optional title.
    pub title: Option<String>,
    /// An optional description.
    pub description: Option<String>,
    /// When this version was put.
    pub updated_at: DateTime<Utc>,
    /// 1 for the first version of the spec, then 2, 3 …: the order of the versions, strict
    /// even for versions put within the same second.
    pub revision: i64,
}

impl From<entity::spec::Model> for Spec {
    fn from(m: entity::spec::Model) -> Self {
        Self {
            id: m.spec_id,
            version: m.version,
            model_count: i32::try_from(m.model_count).unwrap_or(i32::MAX),
            title: m.title,
            description: m.description,
            updated_at: m.updated_at,
            revision: m.seq,
        }
    }
}

/// A new version of a spec (the spec is created by its first version).
#[derive(InputObject, Debug, Clone)]
pub struct PutSpecInput {
    /// The spec's id: 1 to 128 characters.
    pub id: String,
    /// The version label: 1 to 128 characters.
    pub version: String,
    /// How many models the version describes; 0 or more.
    pub model_count: i32,
    /// An optional title, at most 256 characters.
    pub title: Option<String>,
    /// An optional description, at most 10 000 characters.
    pub description: Option<String>,
}

/// A checked `PutSpecInput`.
#[derive(Debug, Clone)]
pub struct NewSpecVersion {
    /// The spec's id.
    pub id: SpecId,
    /// The version label.
    pub version: String,
    /// The model count, ≥ 0.
    pub model_count: i64,
    /// The title.
    pub title: Option<String>,
    /// The description.
    pub description: Option<String>,
}

impl NewSpecVersion {
    /// Validates every field; the error names the first one at fault.
    pub fn parse(input: PutSpecInput) -> AppResult<Self> {
        let id = SpecId::parse("id", &input.id)?;
        let version = bounded("version", input.version, 1, 128)?;
        if input.model_count < 0 {
            return Err(AppError::invalid(
                "modelCount",
                format!("must be 0 or more (got {})", input.model_count),
            ));
        }
        let title = input
            .title
            .map(|t| bounded("title", t, 0, 256))
            .transpose()?;
        let description = input
            .description
            .map(|d| bounded("description", d, 0, 10_000))
            .transpose()?;
        Ok(Self {
            id,
            version,
            model_count: i64::from(input.model_count),
            title,
            description,
        })
    }
}

fn bounded(field: &str, value: String, min: usize, max: usize) -> AppResult<String> {
    let n = value.chars().count();
    if n < min || n > max {
        return Err(AppError::invalid(
            field,
            format!("must be {min} to {max} characters long (got {n})"),
        ));
    }
    if min > 0 && value.trim().is_empty() {
        return Err(AppError::invalid(field, "must not be blank"));
    }
    Ok(value)
}

/// A spec id: 1 to 128 characters, not blank, no control characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecId(String);

impl SpecId {
    /// Validates `raw` for the argument or input field `field`.
    pub fn parse(field: &str, raw: &str) -> AppResult<Self> {
        let raw = bounded(field, raw.to_owned(), 1, 128)?;
        if raw.chars().any(char::is_control) {
            return Err(AppError::invalid(
                field,
                "must not contain control characters",
            ));
        }
        Ok(Self(raw))
    }

    /// The id.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(id: &str, version: &str, model_count: i32) -> PutSpecInput {
        PutSpecInput {
            id: id.into(),
            version: version.into(),
            model_count,
            title: None,
            description: None,
        }
    }

    #[test]
    fn spec_ids_and_versions_must_be_one_to_128_characters() {
        assert!(NewSpecVersion::parse(input("", "v1", 0)).is_err());
        assert!(NewSpecVersion::parse(input(&"x".repeat(129), "v1", 0)).is_err());
        assert!(NewSpecVersion::parse(input("a", "", 0)).is_err());
        assert!(NewSpecVersion::parse(input("a", "v1", 0)).is_ok());
    }

    #[test]
    fn a_negative_model_count_is_refused() {
        assert!(NewSpecVersion::parse(input("a", "v1", -1)).is_err());
    }
}
