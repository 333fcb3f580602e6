//! GraphQL types of meals and their validated inputs.

use std::borrow::Cow;

use async_graphql::parser::types::Field;
use async_graphql::resolver_utils::enum_value;
use async_graphql::{ContextSelectionSet, Enum, InputObject, ScalarType, SimpleObject, Value, ID};

use crate::error::{AppError, AppResult};
use crate::pagination::fast::Fields;

/// How hard a meal is to cook.
#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
#[graphql(remote = "entity::meal::Difficulty")]
pub enum Difficulty {
    /// Easy.
    Low,
    /// Medium.
    Med,
    /// Hard.
    High,
}

/// A meal of the catalogue.
#[derive(SimpleObject, Debug, Clone)]
pub struct Meal {
    /// The meal's id.
    pub id: ID,
    /// Unique name; never changes.
    pub name: String,
    /// Cuisine, e.g. `Italian`.
    pub cuisine: String,
    /// Price, greater than 0.
    pub price: f64,
    /// How hard it is to cook.
    pub difficulty: Difficulty,
    /// Battles fought.
    pub battles: i32,
    /// Battles won.
    pub wins: i32,
    /// wins / battles (0 before the first battle).
    pub win_pct: f64,
    /// Row version: goes up by one with every write (useful for optimistic concurrency).
    pub version: i64,
}

impl Fields for Meal {
    fn type_name(&self) -> Cow<'_, str> {
        "Meal".into()
    }

    fn field(&self, _: &ContextSelectionSet<'_>, field: &Field) -> Option<Value> {
        Some(match field.name.node.as_str() {
            "id" => self.id.to_value(),
            "name" => Value::String(self.name.clone()),
            "cuisine" => Value::String(self.cuisine.clone()),
            "price" => self.price.to_value(),
            "difficulty" => enum_value(self.difficulty),
            "battles" => self.battles.to_value(),
            "wins" => self.wins.to_value(),
            "winPct" => self.win_pct.to_value(),
            "version" => self.version.to_value(),
            _ => return None,
        })
    }
}

impl From<entity::meal::Model> for Meal {
    fn from(m: entity::meal::Model) -> Self {
        Self {
            id: ID(m.id.to_string()),
            name: m.name,
            cuisine: m.cuisine,
            price: m.price,
            difficulty: m.difficulty.into(),
            battles: m.battles,
            wins: m.wins,
            win_pct: m.win_pct,
            version: m.version,
        }
    }
}

/// A new meal.
#[derive(InputObject, Debug, Clone)]
pub struct CreateMealInput {
    /// Unique name, 1–100 characters; it can never change and stays taken after deletion.
    pub name: String,
    /// Cuisine, 1–50 characters.
    pub cuisine: String,
    /// Price, greater than 0 and at most 1 000 000.
    pub price: f64,
    /// How hard it is to cook.
    pub difficulty: Difficulty,
}

/// Changes to a meal; omitted fields stay as they are. The name cannot change.
#[derive(InputObject, Debug, Clone, Default)]
pub struct UpdateMealInput {
    /// New cuisine.
    pub cuisine: Option<String>,
    /// New price.
    pub price: Option<f64>,
    /// New difficulty.
    pub difficulty: Option<Difficulty>,
}

/// One row of the leaderboard.
#[derive(SimpleObject, Debug, Clone)]
pub struct LeaderboardEntry {
    /// 1 for the best.
    pub rank: i32,
    /// The meal.
    pub meal: crate::pagination::fast::Fast<Meal>,
}

/// How the leaderboard ranks meals.
#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq, Default)]
#[graphql(remote = "super::service::Ranking")]
pub enum LeaderboardSort {
    /// Most wins first.
    #[default]
    Wins,
    /// Highest win percentage first.
    WinPct,
}

/// Checks a text field's length and that it is not blank; returns it trimmed.
pub fn text(field: &str, raw: &str, max: usize) -> AppResult<String> {
    let t = raw.trim();
    if t.is_empty() {
        return Err(AppError::invalid(field, "must not be blank"));
    }
    if t.chars().count() > max {
        return Err(AppError::invalid(
            field,
            format!("must be at most {max} characters"),
        ));
    }
    Ok(t.to_owned())
}

/// Checks a price: finite, > 0, ≤ 1 000 000.
pub fn price(field: &str, p: f64) -> AppResult<f64> {
    if !p.is_finite() || p <= 0.0 {
        return Err(AppError::invalid(field, "must be greater than 0"));
    }
    if p > 1_000_000.0 {
        return Err(AppError::invalid(field, "must be at most 1000000"));
    }
    Ok(p)
}

/// Parses a meal id argument.
pub fn meal_id(field: &str, id: &ID) -> AppResult<i64> {
    id.parse::<i64>()
        .ok()
        .filter(|i| *i > 0)
        .ok_or_else(|| AppError::invalid(field, format!("`{}` is not a meal id", id.as_str())))
}

impl From<CreateMealInput> for super::service::NewMeal {
    fn from(i: CreateMealInput) -> Self {
        Self {
            name: i.name,
            cuisine: i.cuisine,
            price: i.price,
            difficulty: i.difficulty.into(),
        }
    }
}

impl From<UpdateMealInput> for super::service::MealChanges {
    fn from(i: UpdateMealInput) -> Self {
        Self {
            cuisine: i.cuisine,
            price: i.price,
            difficulty: i.difficulty.map(Into::into),
        }
    }
}
