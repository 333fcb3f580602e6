//! Thin resolvers of the battle ring, battles and live battle results.

use async_graphql::{Context, Object, Result, Subscription, ID};
use futures::{Stream, StreamExt};

use super::service;
use super::types::{battle_id, Battle};
use crate::meals::loaders::MealLoader;
use crate::meals::types::{meal_id as parse_meal_id, Meal};
use crate::pagination::{decode_numeric_cursor, page_size, wants_total, PageConnection};
use crate::state::state;
use crate::viewer::require_viewer;

/// A page of battles.
pub type BattleConnection = PageConnection<Battle>;

/// The ring's meals, in ring order, through the request's loader (one round trip); a meal
/// deleted meanwhile is left out.
async fn ring_meals(ctx: &Context<'_>, ids: Vec<i64>) -> Result<Vec<Meal>> {
    let mut found = MealLoader::load_many(ctx, ids.iter().copied()).await?;
    Ok(ids
        .iter()
        .filter_map(|id| found.remove(id))
        .map(Meal::from)
        .collect())
}

/// Battle queries: the viewer's ring, and the public history.
#[derive(Default)]
pub struct BattleQuery;

#[Object]
impl BattleQuery {
    /// The signed-in user's battle ring: up to two meals, combatant 1 first.
    async fn combatants(&self, ctx: &Context<'_>) -> Result<Vec<Meal>> {
        let viewer = require_viewer(ctx).await?;
        let ids = service::combatant_ids(state(ctx), viewer.id).await?;
        ring_meals(ctx, ids).await
    }

    /// A battle of the history by id; null when there is none.
    async fn battle(&self, ctx: &Context<'_>, id: ID) -> Result<Option<Battle>> {
        let id = battle_id("id", &id)?;
        Ok(service::battle_by_id(state(ctx), id)
            .await?
            .map(Battle::from))
    }

    /// The history of battles, newest first; only those `mealId` fought in (won or lost)
    /// when given.
    async fn battles(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
        meal_id: Option<ID>,
    ) -> Result<BattleConnection> {
        let first = page_size(ctx, first)?;
        let after = after
            .map(|c| decode_numeric_cursor("battle", &c))
            .transpose()?;
        let meal_id = meal_id.map(|m| parse_meal_id("mealId", &m)).transpose()?;
        let page =
            service::list_battles(state(ctx), first, wants_total(ctx), after, meal_id).await?;
        Ok(page.into_connection("battle", |b| b.id.to_string(), Battle::from))
    }
}

/// Battle mutations; each needs a signed-in viewer and acts on the viewer's own ring.
#[derive(Default)]
pub struct BattleMutation;

#[Object]
impl BattleMutation {
    /// Puts a meal in the viewer's ring and returns the ring. At most two combatants, no meal
    /// twice (`BAD_USER_INPUT`), no unknown or deleted meal (`NOT_FOUND`).
    async fn prep_combatant(&self, ctx: &Context<'_>, meal_id: ID) -> Result<Vec<Meal>> {
        let viewer = require_viewer(ctx).await?;
        let meal_id = parse_meal_id("mealId", &meal_id)?;
        let ids = service::prep_combatant(state(ctx), viewer.id, meal_id).await?;
        ring_meals(ctx, ids).await
    }

    /// Empties the viewer's ring.
    async fn clear_combatants(&self, ctx: &Context<'_>) -> Result<bool> {
        let viewer = require_viewer(ctx).await?;
        Ok(service::clear_combatants(state(ctx), viewer.id).await?)
    }

    /// Fights the battle of the viewer's two combatants. score = price × len(cuisine) −
    /// {HIGH: 1, MED: 2, LOW: 3}[difficulty]; delta = |score₁ − score₂| / 100; combatant 1
    /// wins if delta > r (r uniform in [0, 1)), else combatant 2. Both meals' stats change in
    /// one transaction; the loser leaves the ring; the battle is stored and published.
    async fn battle(&self, ctx: &Context<'_>) -> Result<Battle> {
        let viewer = require_viewer(ctx).await?;
        Ok(service::fight(state(ctx), viewer.id).await?.into())
    }
}

/// Live battle results.
#[derive(Default)]
pub struct BattleSubscription;

#[Subscription]
impl BattleSubscription {
    /// Every battle as it is fought, on any replica; only those `mealId` fought in (won or
    /// lost) when given.
    async fn battle_results(
        &self,
        ctx: &Context<'_>,
        meal_id: Option<ID>,
    ) -> Result<impl Stream<Item = Battle>> {
        let meal_id = meal_id.map(|m| parse_meal_id("mealId", &m)).transpose()?;
        Ok(service::battle_results(state(ctx), meal_id).map(Battle::from))
    }
}
