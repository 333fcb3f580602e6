//! The GraphQL schema: merged roots of every domain, limits, and the pipeline operations run
//! through. [`engine`] runs an operation, whatever carried it; [`transport`] carries
//! operations over HTTP and WebSocket.
//!
//! ## What Arena does instead of async-graphql
//!
//! The schema, the resolvers and execution are async-graphql's. These pieces around them are
//! Arena's own; on an async-graphql upgrade, re-check each against the new release.
//!
//! | async-graphql's piece | Arena's replacement | why | re-check on upgrade |
//! |---|---|---|---|
//! | `DataLoader` | `consistency::BatchLoader` | no 1 ms timer and no spawned task per batch: a request with one lookup pays neither | the `Loader` trait's signature |
//! | variable coercion during validation | `engine::variables` | a document validates once (cached), so new variable values of every request are coerced here, from the schema's own SDL | `coercion_agrees_with_async_graphql_on_a_corpus` (`engine/variables.rs`) compares both on a corpus |
//! | validating every request | `engine::documents` + the fast schema build (`ValidationMode::Fast`) | a document is measured in linear time, then validated once by the strict build and run by the fast one afterwards | that the strict build still rejects what the fast one would run (`ValidationWitness`) |
//! | `async-graphql-axum` (`GraphQLRequest`, `GraphQLSubscription`) | `transport::http`, `transport::ws` | content negotiation per GraphQL over HTTP, bounded bodies, batches, close codes and caps of both WebSocket protocols | `async_graphql::http::receive_batch_body` (multipart) and the `Request`/`Response` types |
//! | `ApolloPersistedQueries` extension | `engine::persisted` + `transport::http::request` (APQ matched on the raw body bytes) | the hash is found without parsing the body, and stored across replicas in the cache tier | Apollo's APQ error codes and message text |
//! | resolving a list's connection, edges and items (a future per field) | `pagination::fast` (`FastPage`, `Fast`; async-graphql's resolution for any selection they cannot answer) | a page is in memory: one walk of the selection answers it without a future, a context or a merge per field | `insert_value` and `Fields::add_set` in `resolver_utils/container.rs` (keys, merging, fragments); the `a_list_item_answers_every_selection_…` tests |

pub mod engine;
pub mod loaders;
pub mod transport;

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
use engine::pipeline::Pipeline;

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
    .limit_recursive_depth(engine::documents::MAX_NESTING);
    for directive in read_directives() {
        builder = builder.directive(directive);
    }
    if matches!(mode, ValidationMode::Strict) {
        builder = builder.extension(engine::pipeline::ValidationWitness);
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

/// A directive the pipeline reads from the document itself: registered so that validation,
/// introspection and the SDL know it; async-graphql runs it as a no-op where it runs field
/// directives at all.
///
/// - `@live` on a query: its result is sent again whenever it changes (`engine::live`).
/// - `@defer` on fragments and `@stream` on list fields: incremental delivery
///   (`engine::incremental`).
struct ReadDirective {
    name: &'static str,
    description: &'static str,
    locations: Vec<async_graphql::registry::__DirectiveLocation>,
    /// (name, type, default)
    args: &'static [(&'static str, &'static str, Option<&'static str>)],
}

struct PassThrough;

impl async_graphql::CustomDirective for PassThrough {}

impl async_graphql::CustomDirectiveFactory for ReadDirective {
    fn name(&self) -> std::borrow::Cow<'static, str> {
        self.name.into()
    }

    fn register(&self, registry: &mut async_graphql::registry::Registry) {
        use async_graphql::registry::MetaInputValue;
        let args = self
            .args
            .iter()
            .map(|(name, ty, default)| {
                let value = MetaInputValue {
                    name: (*name).into(),
                    description: None,
                    ty: (*ty).into(),
                    deprecation: Default::default(),
                    default_value: default.map(str::to_owned),
                    visible: None,
                    inaccessible: false,
                    tags: Vec::new(),
                    is_secret: false,
                    directive_invocations: Vec::new(),
                };
                ((*name).to_owned(), value)
            })
            .collect();
        registry.add_directive(async_graphql::registry::MetaDirective {
            name: self.name.into(),
            description: Some(self.description.into()),
            locations: self.locations.clone(),
            args,
            is_repeatable: false,
            visible: None,
            composable: None,
        });
    }

    fn create(
        &self,
        _ctx: &async_graphql::ContextDirective<'_>,
        _directive: &async_graphql::parser::types::Directive,
    ) -> async_graphql::ServerResult<Box<dyn async_graphql::CustomDirective>> {
        Ok(Box::new(PassThrough))
    }
}

fn read_directives() -> [ReadDirective; 3] {
    use async_graphql::registry::__DirectiveLocation as At;
    [
        ReadDirective {
            name: "live",
            description: "Keeps the query's result up to date: it is sent again whenever \
                          something it read changes (over /graphql/ws or /graphql/stream; \
                          refused over plain HTTP).",
            locations: vec![At::QUERY],
            args: &[],
        },
        ReadDirective {
            name: "defer",
            description: "Delivers the fragment after the rest of the result (incremental \
                          delivery: multipart/mixed over HTTP, further `next` messages over \
                          /graphql/ws and /graphql/stream).",
            locations: vec![At::FRAGMENT_SPREAD, At::INLINE_FRAGMENT],
            args: &[("label", "String", None), ("if", "Boolean!", Some("true"))],
        },
        ReadDirective {
            name: "stream",
            description: "Delivers the list's first `initialCount` items with the result and \
                          the others after it (incremental delivery).",
            locations: vec![At::FIELD],
            args: &[
                ("label", "String", None),
                ("initialCount", "Int!", Some("0")),
                ("if", "Boolean!", Some("true")),
            ],
        },
    ]
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
