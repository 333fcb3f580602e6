//! Thin resolvers of the battle ring, battles and live battle results.

use async_graphql::connection::{Connection, Edge, EmptyFields};
use async_graphql::{Context, Object, Result, Subscription, ID};
use futures::{Stream, StreamExt};

use super::service;
use super::types::{battle_id, Battle};
use crate::app::state;
use crate::auth::require_viewer;
use crate::error::AppError;
use crate::graphql::loaders::RequestLoaders;
use crate::graphql::pagination::{decode_cursor, encode_cursor, page_size, ConnectionFields};
use crate::meals::types::{meal_id as parse_meal_id, Meal};

/// A page of battles.
pub type BattleConnection = Connection<String, Battle, ConnectionFields, EmptyFields>;

/// The ring's meals, in ring order, through the request's loader (one round trip); a meal
/// deleted meanwhile is left out.
async fn ring_meals(ctx: &Context<'_>, ids: Vec<i64>) -> Result<Vec<Meal>> {
    let mut found = match ctx.data_opt::<RequestLoaders>() {
        Some(loaders) => loaders.meals.load_many(ids.iter().copied()).await?,
        None => crate::meals::loaders::load_meals(state(ctx), &ids).await?,
    };
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
            .map(|c| {
                decode_cursor("battle", &c)?
                    .parse::<i64>()
                    .map_err(|_| AppError::invalid("after", "is not a battle cursor"))
            })
            .transpose()?;
        let meal_id = meal_id.map(|m| parse_meal_id("mealId", &m)).transpose()?;
        let (rows, has_next, total) =
            service::list_battles(state(ctx), first, after, meal_id).await?;
        let mut conn = Connection::with_additional_fields(
            after.is_some(),
            has_next,
            ConnectionFields { total_count: total },
        );
        conn.edges.extend(
            rows.into_iter()
                .map(|b| Edge::new(encode_cursor("battle", &b.id.to_string()), Battle::from(b))),
        );
        Ok(conn)
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
