//! Thin resolvers of usage stats, dice and user data.

use async_graphql::{Context, ErrorExtensions, Json, Object, Result};

use std::sync::Arc;

use super::counting::UsageBuffer;
use super::service;
use super::types::{Character, Roll, SavedRoll, UsageStats};
use crate::state::state;
use crate::viewer::require_viewer;

/// Usage and user data queries.
#[derive(Default)]
pub struct UsageQuery;

#[Object]
impl UsageQuery {
    /// How many times each root field ran and how many users ran commands, across every
    /// replica (this instance's buffered counts are flushed first).
    async fn stats(&self, ctx: &Context<'_>) -> Result<UsageStats> {
        let usage = ctx.data_opt::<Arc<UsageBuffer>>().map(|u| u.as_ref());
        Ok(service::stats(state(ctx), usage).await?.into())
    }

    /// The viewer's saved dice expressions.
    async fn saved_rolls(&self, ctx: &Context<'_>) -> Result<Vec<SavedRoll>> {
        let viewer = require_viewer(ctx).await?;
        let doc = service::user_data(state(ctx), viewer.id).await?;
        Ok(doc.saved_rolls.into_iter().map(SavedRoll::from).collect())
    }

    /// The viewer's characters, in the order they were first set.
    async fn characters(&self, ctx: &Context<'_>) -> Result<Vec<Character>> {
        let viewer = require_viewer(ctx).await?;
        let characters = service::characters(state(ctx), viewer.id).await?;
        Ok(characters.into_iter().map(Character::from).collect())
    }

    /// The viewer's user data document (`user_<id>`): characters and saved rolls.
    async fn user_data(&self, ctx: &Context<'_>) -> Result<Json<serde_json::Value>> {
        let viewer = require_viewer(ctx).await?;
        let doc = service::user_data(state(ctx), viewer.id).await?;
        Ok(Json(serde_json::to_value(doc).unwrap_or_default()))
    }
}

/// Dice and saved rolls.
#[derive(Default)]
pub struct UsageMutation;

/// A dice error as `BAD_USER_INPUT` with `extensions.position`.
fn dice_error(field: &str, e: &super::dice::DiceError) -> async_graphql::Error {
    let position = e.position;
    async_graphql::Error::from(service::dice_error(field, e))
        .extend_with(|_, ext| ext.set("position", position as u64))
}

#[Object]
impl UsageMutation {
    /// Rolls a dice expression: `d20`, `3d6+2`, `4d6kh3` (keep the 3 highest), `4d6kl1` (keep
    /// the lowest), `2d10-1d4`, `d%`, constants, `+` and `-`. At most 1000 dice and 1 000 000
    /// sides. Errors are `BAD_USER_INPUT` with `extensions.position` (a character offset).
    async fn roll(&self, ctx: &Context<'_>, expression: String) -> Result<Roll> {
        let rolled =
            service::roll(state(ctx), &expression).map_err(|e| dice_error("expression", &e))?;
        Ok(Roll::new(expression, rolled))
    }

    /// Saves (or replaces) a named dice expression in the viewer's user data.
    async fn save_roll(
        &self,
        ctx: &Context<'_>,
        name: String,
        expression: String,
    ) -> Result<SavedRoll> {
        let viewer = require_viewer(ctx).await?;
        if let Err(e) = super::dice::parse(&expression) {
            return Err(dice_error("expression", &e));
        }
        Ok(
            service::save_roll(state(ctx), viewer.id, &name, &expression)
                .await?
                .into(),
        )
    }

    /// Deletes one of the viewer's saved rolls; false when there was none of that name.
    async fn delete_saved_roll(&self, ctx: &Context<'_>, name: String) -> Result<bool> {
        let viewer = require_viewer(ctx).await?;
        Ok(service::delete_saved_roll(state(ctx), viewer.id, &name).await?)
    }

    /// Sets (creates or replaces) one of the viewer's characters in their user data: a name
    /// (1 to 64 characters, unique per user) and a sheet, any JSON object up to 16 KiB. At
    /// most 50 characters per user.
    async fn set_character(
        &self,
        ctx: &Context<'_>,
        name: String,
        sheet: Json<serde_json::Value>,
    ) -> Result<Character> {
        let viewer = require_viewer(ctx).await?;
        Ok(
            service::set_character(state(ctx), viewer.id, &name, sheet.0)
                .await?
                .into(),
        )
    }

    /// Deletes one of the viewer's characters; false when there was none of that name.
    async fn delete_character(&self, ctx: &Context<'_>, name: String) -> Result<bool> {
        let viewer = require_viewer(ctx).await?;
        Ok(service::delete_character(state(ctx), viewer.id, &name).await?)
    }

    /// Rolls one of the viewer's saved expressions; `NOT_FOUND` when there is none.
    async fn roll_saved(&self, ctx: &Context<'_>, name: String) -> Result<Roll> {
        let viewer = require_viewer(ctx).await?;
        let (expression, rolled) = service::roll_saved(state(ctx), viewer.id, &name).await?;
        Ok(Roll::new(expression, rolled))
    }
}
