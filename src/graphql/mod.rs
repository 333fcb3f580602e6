//! The GraphQL schema: merged roots of every domain, limits, and the pipeline operations run
//! through.

pub mod auth;
pub mod documents;
pub mod graphiql;
pub mod http;
pub mod loaders;
pub mod memo;
pub mod persisted;
pub mod pipeline;
pub mod variables;
pub mod ws;

use std::sync::Arc;

use async_graphql::{MergedObject, MergedSubscription, Schema, ValidationMode};

use crate::battles::{BattleMutation, BattleQuery, BattleSubscription};
use crate::config::Settings;
use crate::credentials::{CredentialMutation, CredentialQuery};
use crate::meals::{MealMutation, MealQuery};
use crate::pokemon::{PokemonMutation, PokemonQuery, TradeSubscription};
use crate::specs::{SpecMutation, SpecQuery};
use crate::state::AppState;
use crate::storage::{StorageMutation, StorageQuery};
use crate::usage::counting::UsageBuffer;
use crate::usage::{UsageMutation, UsageQuery};
use crate::users::hooks::AccountHooks;
use crate::users::{UserMutation, UserQuery};
use pipeline::Pipeline;

/// Every query root field.
#[derive(MergedObject, Default)]
pub struct Query(
    UserQuery,
    MealQuery,
    BattleQuery,
    SpecQuery,
    CredentialQuery,
    PokemonQuery,
    UsageQuery,
    StorageQuery,
);

/// Every mutation root field.
#[derive(MergedObject, Default)]
pub struct Mutation(
    UserMutation,
    MealMutation,
    BattleMutation,
    SpecMutation,
    CredentialMutation,
    PokemonMutation,
    UsageMutation,
    StorageMutation,
);

/// Every subscription root field.
#[derive(MergedSubscription, Default)]
pub struct Subscription(BattleSubscription, TradeSubscription);

/// Arena's schema type.
pub type ArenaSchema = Schema<Query, Mutation, Subscription>;

/// Builds the schema with the configured limits and `validation` mode; `state` is absent
/// only for exporting SDL. No extension runs on resolvers (see [`pipeline`]): the strict
/// build has one that only watches validation, and tracing (`--trace-resolvers`) adds
/// async-graphql's own.
fn build_schema(
    settings: &Settings,
    state: Option<(&AppState, &Arc<UsageBuffer>)>,
    mode: ValidationMode,
) -> ArenaSchema {
    let mut builder = Schema::build(
        Query::default(),
        Mutation::default(),
        Subscription::default(),
    )
    .validation_mode(mode)
    .limit_depth(settings.max_depth)
    .limit_complexity(settings.max_complexity)
    .limit_recursive_depth(documents::MAX_NESTING);
    if matches!(mode, ValidationMode::Strict) {
        builder = builder.extension(pipeline::ValidationWitness);
    }
    if settings.trace_resolvers {
        builder = builder.extension(async_graphql::extensions::Tracing);
    }
    if let Some((state, usage)) = state {
        builder = builder
            .data(account_hooks())
            .data(state.clone())
            .data(usage.clone());
    }
    builder.finish()
}

/// The pipeline every operation runs through, over the strict and the fast build of the
/// schema, counting into `usage`.
pub fn build_pipeline(state: &AppState, usage: Arc<UsageBuffer>) -> Arc<Pipeline> {
    let settings = &state.settings;
    Arc::new(Pipeline::new(
        build_schema(settings, Some((state, &usage)), ValidationMode::Strict),
        build_schema(settings, Some((state, &usage)), ValidationMode::Fast),
        state.clone(),
        usage,
        settings.trace_resolvers,
    ))
}

/// What each per-user domain does when an account logs in, logs out or is deleted.
pub fn account_hooks() -> AccountHooks {
    AccountHooks::new(vec![
        Arc::new(crate::battles::service::BattleAccountHook),
        Arc::new(crate::specs::service::SpecAccountHook),
        Arc::new(crate::credentials::service::CredentialAccountHook),
        Arc::new(crate::usage::service::UsageAccountHook),
        Arc::new(crate::storage::service::StorageAccountHook),
    ])
}

/// The SDL of the schema, as `arena export-schema` prints it.
pub fn sdl() -> String {
    build_schema(&Settings::defaults(), None, ValidationMode::Strict).sdl()
}
