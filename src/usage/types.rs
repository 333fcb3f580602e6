//! GraphQL types of usage, dice and user data.

use async_graphql::{Json, SimpleObject};
use chrono::{DateTime, Utc};

use super::dice;

/// How many times one root field ran.
#[derive(SimpleObject, Debug, Clone)]
pub struct CommandCount {
    /// The root field (`roll`, `meal`, `createUser` …).
    pub name: String,
    /// How many times it ran, across every replica.
    pub count: i64,
}

/// Usage across the deployment.
#[derive(SimpleObject, Debug, Clone)]
pub struct UsageStats {
    /// Every root field that ran at least once, by name.
    pub commands: Vec<CommandCount>,
    /// How many distinct signed-in users ran a command.
    pub users: i64,
    /// When the counters last changed; null before the first count.
    pub updated_at: Option<DateTime<Utc>>,
}

/// One die of a roll.
#[derive(SimpleObject, Debug, Clone)]
pub struct Die {
    /// Its number of sides (`d%` has 100).
    pub sides: i32,
    /// The face that came up.
    pub value: i32,
    /// Whether it counts towards the total (keep-highest/lowest drops the others).
    pub kept: bool,
    /// Whether its group is subtracted (`2d10-1d4`: the d4).
    pub subtracted: bool,
}

/// The outcome of rolling a dice expression.
#[derive(SimpleObject, Debug, Clone)]
pub struct Roll {
    /// The expression as given.
    pub expression: String,
    /// The total of the kept dice and the constants.
    pub total: i32,
    /// Every die rolled, kept or not, in the order of the expression.
    pub dice: Vec<Die>,
}

impl Roll {
    /// From the roller's outcome (totals fit an `Int`: the limits keep them under 2^31).
    pub fn new(expression: String, rolled: dice::Rolled) -> Self {
        Self {
            expression,
            total: rolled.total.clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32,
            dice: rolled
                .dice
                .into_iter()
                .map(|d| Die {
                    sides: d.sides as i32,
                    value: d.value as i32,
                    kept: d.kept,
                    subtracted: d.subtracted,
                })
                .collect(),
        }
    }
}

/// A named dice expression kept in the viewer's user data.
#[derive(SimpleObject, Debug, Clone, PartialEq, Eq)]
pub struct SavedRoll {
    /// Its name, unique per user.
    pub name: String,
    /// The dice expression.
    pub expression: String,
}

impl From<super::service::StoredRoll> for SavedRoll {
    fn from(r: super::service::StoredRoll) -> Self {
        Self {
            name: r.name,
            expression: r.expression,
        }
    }
}

/// One of the viewer's characters, kept in their user data document.
#[derive(SimpleObject, Debug, Clone)]
pub struct Character {
    /// Its name, unique per user.
    pub name: String,
    /// Anything kept about it: a JSON object, as it was set.
    pub sheet: Json<serde_json::Value>,
}

impl From<super::service::CharacterSheet> for Character {
    fn from(c: super::service::CharacterSheet) -> Self {
        Self {
            name: c.name,
            sheet: Json(c.sheet),
        }
    }
}

impl From<super::service::Stats> for UsageStats {
    fn from(s: super::service::Stats) -> Self {
        Self {
            commands: s
                .commands
                .into_iter()
                .map(|(name, count)| CommandCount { name, count })
                .collect(),
            users: s.users,
            updated_at: s.updated_at,
        }
    }
}
