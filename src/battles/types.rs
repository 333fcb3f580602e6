//! GraphQL types of battles.

use std::borrow::Cow;

use async_graphql::parser::types::Field;
use async_graphql::{Context, ContextSelectionSet, Object, Result, ScalarType, Value, ID};
use chrono::{DateTime, Utc};
use entity::{battle, meal};

use super::service::{self, BattleOutcome};
use crate::error::{AppError, AppResult};
use crate::meals::loaders::MealLoader;
use crate::meals::types::Meal;
use crate::pagination::fast::{self, Fields};
use crate::state::state;

/// A fought battle, kept in the history.
#[derive(Clone)]
pub struct Battle {
    row: battle::Model,
    // The meals as the battle left them, when known (the `battle` mutation and live
    // results); otherwise they are loaded when asked for.
    winner: Option<meal::Model>,
    loser: Option<meal::Model>,
}

impl From<battle::Model> for Battle {
    fn from(row: battle::Model) -> Self {
        Self {
            row,
            winner: None,
            loser: None,
        }
    }
}

impl From<BattleOutcome> for Battle {
    fn from(o: BattleOutcome) -> Self {
        Self {
            row: o.battle,
            winner: Some(o.winner),
            loser: Some(o.loser),
        }
    }
}

/// A live meal through the request's loader; a meal deleted since the battle straight from
/// the database (the history keeps naming it).
async fn history_meal(ctx: &Context<'_>, id: i64) -> Result<Meal> {
    let state = state(ctx);
    let live = MealLoader::load_one(ctx, id).await?;
    if let Some(m) = live {
        return Ok(m.into());
    }
    let row = service::meal_for_history(state, id)
        .await?
        .ok_or_else(|| AppError::internal(format!("battle names meal {id}, which has no row")))?;
    Ok(row.into())
}

#[Object]
impl Battle {
    /// The battle's id.
    async fn id(&self) -> ID {
        ID(self.row.id.to_string())
    }

    /// The meal that won. For a meal deleted since, its last state before deletion.
    async fn winner(&self, ctx: &Context<'_>) -> Result<Meal> {
        match &self.winner {
            Some(m) => Ok(m.clone().into()),
            None => history_meal(ctx, self.row.winner_id).await,
        }
    }

    /// The meal that lost (and left the ring). For a meal deleted since, its last state
    /// before deletion.
    async fn loser(&self, ctx: &Context<'_>) -> Result<Meal> {
        match &self.loser {
            Some(m) => Ok(m.clone().into()),
            None => history_meal(ctx, self.row.loser_id).await,
        }
    }

    /// The winner's score: price × len(cuisine) − {HIGH: 1, MED: 2, LOW: 3}[difficulty].
    async fn winner_score(&self) -> f64 {
        self.row.winner_score
    }

    /// The loser's score, computed the same way.
    async fn loser_score(&self) -> f64 {
        self.row.loser_score
    }

    /// |score₁ − score₂| / 100, where combatant 1 is the meal prepped first.
    async fn delta(&self) -> f64 {
        self.row.delta
    }

    /// The uniform draw in [0, 1): combatant 1 won if `delta > random`, else combatant 2.
    async fn random(&self) -> f64 {
        self.row.random
    }

    /// When the battle was fought.
    async fn fought_at(&self) -> DateTime<Utc> {
        self.row.fought_at
    }
}

impl Fields for Battle {
    fn type_name(&self) -> Cow<'_, str> {
        "Battle".into()
    }

    fn field(&self, ctx: &ContextSelectionSet<'_>, field: &Field) -> Option<Value> {
        let meal = |m: &Option<meal::Model>| {
            fast::object(ctx, &field.selection_set.node, &Meal::from(m.clone()?))
        };
        Some(match field.name.node.as_str() {
            "id" => ID(self.row.id.to_string()).to_value(),
            // Only when the battle brought them (otherwise they need the loader).
            "winner" => meal(&self.winner)?,
            "loser" => meal(&self.loser)?,
            "winnerScore" => self.row.winner_score.to_value(),
            "loserScore" => self.row.loser_score.to_value(),
            "delta" => self.row.delta.to_value(),
            "random" => self.row.random.to_value(),
            "foughtAt" => self.row.fought_at.to_value(),
            _ => return None,
        })
    }
}

/// Parses a battle id argument.
pub fn battle_id(field: &str, id: &ID) -> AppResult<i64> {
    id.parse::<i64>()
        .ok()
        .filter(|i| *i > 0)
        .ok_or_else(|| AppError::invalid(field, format!("`{}` is not a battle id", id.as_str())))
}
