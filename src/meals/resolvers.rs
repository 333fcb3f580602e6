//! Thin resolvers of the catalogue.

use async_graphql::{Context, Object, Result, ID};

use super::loaders::MealLoader;
use super::service;
use super::types::{
    meal_id, CreateMealInput, Difficulty, LeaderboardEntry, LeaderboardSort, Meal, UpdateMealInput,
};
use crate::pagination::fast::Fast;
use crate::pagination::{decode_numeric_cursor, page_size, wants_total, PageConnection};
use crate::state::state;
use crate::viewer::require_viewer;

/// A page of meals.
pub type MealConnection = PageConnection<Meal>;

/// Loads a live meal through the request's loader (one cache round trip per batch).
pub async fn load_meal(ctx: &Context<'_>, id: i64) -> Result<Option<Meal>> {
    Ok(MealLoader::load_one(ctx, id).await?.map(Meal::from))
}

/// Catalogue queries; all public.
#[derive(Default)]
pub struct MealQuery;

#[Object]
impl MealQuery {
    /// A meal by id; null when there is none or it was deleted.
    async fn meal(&self, ctx: &Context<'_>, id: ID) -> Result<Option<Meal>> {
        load_meal(ctx, meal_id("id", &id)?).await
    }

    /// A meal by its unique name; null when there is none or it was deleted.
    async fn meal_by_name(&self, ctx: &Context<'_>, name: String) -> Result<Option<Meal>> {
        match service::meal_id_by_name(state(ctx), &name).await? {
            Some(id) => load_meal(ctx, id).await,
            None => Ok(None),
        }
    }

    /// The catalogue, oldest first, optionally filtered by cuisine and difficulty.
    async fn meals(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
        cuisine: Option<String>,
        difficulty: Option<Difficulty>,
    ) -> Result<MealConnection> {
        let first = page_size(ctx, first)?;
        let after = after
            .map(|c| decode_numeric_cursor("meal", &c))
            .transpose()?;
        let difficulty = difficulty.map(Into::into);
        let page = service::list_meals(
            state(ctx),
            first,
            wants_total(ctx),
            after,
            cuisine,
            difficulty,
        )
        .await?;
        Ok(page.into_connection("meal", |m| m.id.to_string(), Meal::from))
    }

    /// Meals with at least one battle, ranked by wins or by win percentage (`sortBy` left
    /// out or `null`: `WINS`).
    async fn leaderboard(
        &self,
        ctx: &Context<'_>,
        #[graphql(default_with = "Some(LeaderboardSort::Wins)")] sort_by: Option<LeaderboardSort>,
        first: Option<i32>,
    ) -> Result<Vec<LeaderboardEntry>> {
        let first = page_size(ctx, first)?;
        let sort_by = sort_by.unwrap_or(LeaderboardSort::Wins);
        let rows = service::leaderboard(state(ctx), sort_by.into(), first).await?;
        Ok(rows
            .into_iter()
            .enumerate()
            .map(|(i, m)| LeaderboardEntry {
                rank: i as i32 + 1,
                meal: Fast(m.into()),
            })
            .collect())
    }
}

/// Catalogue mutations; each needs a signed-in viewer.
#[derive(Default)]
pub struct MealMutation;

#[Object]
impl MealMutation {
    /// Adds a meal to the catalogue.
    async fn create_meal(&self, ctx: &Context<'_>, input: CreateMealInput) -> Result<Meal> {
        require_viewer(ctx).await?;
        Ok(service::create_meal(state(ctx), input.into()).await?.into())
    }

    /// Changes a meal's cuisine, price or difficulty. The name cannot change.
    async fn update_meal(&self, ctx: &Context<'_>, id: ID, input: UpdateMealInput) -> Result<Meal> {
        require_viewer(ctx).await?;
        let id = meal_id("id", &id)?;
        Ok(service::update_meal(state(ctx), id, input.into())
            .await?
            .into())
    }

    /// Deletes a meal (softly: its name stays taken).
    async fn delete_meal(&self, ctx: &Context<'_>, id: ID) -> Result<bool> {
        require_viewer(ctx).await?;
        let id = meal_id("id", &id)?;
        Ok(service::delete_meal(state(ctx), id).await?)
    }
}
