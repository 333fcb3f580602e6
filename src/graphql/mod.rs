//! The GraphQL schema: merged roots of every domain, limits and extensions.

pub mod auth;
pub mod extensions;
pub mod graphiql;
pub mod http;
pub mod loaders;
pub mod ws;

use std::sync::Arc;

use async_graphql::{MergedObject, MergedSubscription, Schema};

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

/// What the schema runs with: the state, and the buffer usage counts go to.
pub struct SchemaState {
    /// Shared state.
    pub state: AppState,
    /// Where root fields and viewers are counted.
    pub usage: Arc<UsageBuffer>,
}

/// Builds the schema with the configured limits; `state` is absent only for exporting SDL.
pub fn build_schema(settings: &Settings, state: Option<SchemaState>) -> ArenaSchema {
    let metrics = state.as_ref().map(|s| s.state.metrics.clone());
    let mut builder = Schema::build(
        Query::default(),
        Mutation::default(),
        Subscription::default(),
    )
    .limit_depth(settings.max_depth)
    .limit_complexity(settings.max_complexity)
    .limit_recursive_depth(64)
    .extension(extensions::PerOperationAuth)
    .extension(extensions::ErrorCodes::new(metrics))
    .extension(extensions::RootFieldLimit::new(
        settings.max_root_fields,
        // Every field costs at least 1 of complexity: more selections than 10× the limit
        // could never pass it, whatever the fragments' type conditions.
        settings.max_complexity.saturating_mul(10),
    ));
    if let Some(SchemaState { state, usage }) = state {
        builder = builder
            .extension(crate::usage::counting::Counting::new(usage.clone()))
            .data(usage)
            .data(account_hooks())
            .data(state);
    }
    builder.finish()
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
    build_schema(&Settings::defaults(), None).sdl()
}
