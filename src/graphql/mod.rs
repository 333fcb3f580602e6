//! The GraphQL schema: merged roots of every domain, limits and extensions.

pub mod extensions;
pub mod http;
pub mod loaders;
pub mod pagination;

use async_graphql::{MergedObject, MergedSubscription, Schema};

use crate::app::AppState;
use crate::battles::{BattleMutation, BattleQuery, BattleSubscription};
use crate::config::Settings;
use crate::credentials::{CredentialMutation, CredentialQuery};
use crate::meals::{MealMutation, MealQuery};
use crate::pokemon::{PokemonMutation, PokemonQuery, TradeSubscription};
use crate::specs::{SpecMutation, SpecQuery};
use crate::storage::{StorageMutation, StorageQuery};
use crate::usage::{UsageMutation, UsageQuery};
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

/// Builds the schema with the configured limits; `state` is absent only for exporting SDL.
pub fn build_schema(settings: &Settings, state: Option<AppState>) -> ArenaSchema {
    let metrics = state.as_ref().map(|s| s.metrics.clone());
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
    if let Some(state) = state {
        builder = builder.extension(crate::usage::counting::Counting::new(state.clone()));
        builder = builder.data(state);
    }
    builder.finish()
}

/// The SDL of the schema, as `arena export-schema` prints it.
pub fn sdl() -> String {
    build_schema(&Settings::defaults(), None).sdl()
}
