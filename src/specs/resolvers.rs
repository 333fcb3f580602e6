//! Thin resolvers of specs; every field is the viewer's own specs only.

use async_graphql::{Context, Object, Result};

use super::service;
use super::types::{NewSpecVersion, PutSpecInput, Spec, SpecId};
use crate::pagination::page_size;
use crate::state::state;
use crate::viewer::require_viewer;

/// Spec queries; each needs a viewer and sees only the viewer's specs.
#[derive(Default)]
pub struct SpecQuery;

#[Object]
impl SpecQuery {
    /// The latest version of the viewer's spec `id`; null when the viewer has no such spec.
    async fn spec(&self, ctx: &Context<'_>, id: String) -> Result<Option<Spec>> {
        let v = require_viewer(ctx).await?;
        let id = SpecId::parse("id", &id)?;
        Ok(service::spec(state(ctx), v.id, &id).await?.map(Spec::from))
    }

    /// The latest version of each of the viewer's specs, by id.
    async fn specs(&self, ctx: &Context<'_>) -> Result<Vec<Spec>> {
        let v = require_viewer(ctx).await?;
        Ok(service::specs(state(ctx), v.id)
            .await?
            .into_iter()
            .map(Spec::from)
            .collect())
    }

    /// Every version of the viewer's spec `id`, newest first (the newest `first` when given);
    /// empty when the viewer has no such spec.
    async fn spec_versions(
        &self,
        ctx: &Context<'_>,
        id: String,
        first: Option<i32>,
    ) -> Result<Vec<Spec>> {
        let v = require_viewer(ctx).await?;
        let id = SpecId::parse("id", &id)?;
        let limit = first.map(|f| page_size(ctx, Some(f))).transpose()?;
        Ok(service::spec_versions(state(ctx), v.id, &id, limit)
            .await?
            .into_iter()
            .map(Spec::from)
            .collect())
    }

    /// The sum of the latest `modelCount` of each of the viewer's specs.
    async fn model_count(&self, ctx: &Context<'_>) -> Result<i64> {
        let v = require_viewer(ctx).await?;
        Ok(service::model_count(state(ctx), v.id).await?)
    }
}

/// Spec mutations; each needs a viewer and touches only the viewer's specs.
#[derive(Default)]
pub struct SpecMutation;

#[Object]
impl SpecMutation {
    /// Creates or updates a spec: every call adds a new version, even several in one second.
    async fn put_spec(&self, ctx: &Context<'_>, input: PutSpecInput) -> Result<Spec> {
        let v = require_viewer(ctx).await?;
        let input = NewSpecVersion::parse(input)?;
        Ok(service::put_spec(state(ctx), v.id, input).await?.into())
    }

    /// Deletes the viewer's spec `id` with all its versions; returns how many versions were
    /// removed (0 when the viewer has no such spec).
    async fn delete_spec(&self, ctx: &Context<'_>, id: String) -> Result<i64> {
        let v = require_viewer(ctx).await?;
        let id = SpecId::parse("id", &id)?;
        Ok(service::delete_spec(state(ctx), v.id, &id).await? as i64)
    }

    /// Deletes every spec of the viewer; returns how many versions were removed.
    async fn delete_all_specs(&self, ctx: &Context<'_>) -> Result<i64> {
        let v = require_viewer(ctx).await?;
        Ok(service::delete_all_specs(&state(ctx).db, v.id).await? as i64)
    }
}
