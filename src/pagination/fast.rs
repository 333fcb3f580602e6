//! Lists resolved in one pass.
//!
//! async-graphql resolves an object by making a future per selected field, polling them
//! together and merging their answers: a page of 20 meals with 4 fields makes more than 100
//! boxed futures and contexts (the connection, its edges, their nodes); in the load bench's
//! profile of a cold page, the nodes' alone took a tenth of its CPU. What a list holds is already in
//! memory, so none of that is needed: [`Fast`] and [`FastPage`] answer a selection by walking
//! it once and taking each value from the object ([`Fields`]), and hand any selection they
//! cannot answer that way (a field that needs I/O or arguments, a field or fragment with a
//! directive) to async-graphql unchanged, as they do every selection when resolvers are
//! traced.
//!
//! The answer is the same either way: the walk follows async-graphql's rules for fragments
//! (one applies when its type condition is the object's type or an interface it implements,
//! or when it has none), response keys (an alias, else the name; the first answer for a key
//! stands, objects under one key merge) and an empty selection (`null`). `@skip` and
//! `@include` are already gone: async-graphql drops what they exclude before execution.
//! Tests: `a_list_item_answers_every_selection_as_the_same_object_by_id` (meals) and its
//! Pokémon twin.

use std::borrow::Cow;

use async_graphql::connection::{Connection, CursorType, Edge, EmptyFields};
use async_graphql::indexmap::map::Entry;
use async_graphql::indexmap::IndexMap;
use async_graphql::parser::types::{Field, Selection, SelectionSet};
use async_graphql::registry::Registry;
use async_graphql::{
    ContextSelectionSet, Name, OutputType, Positioned, ScalarType, ServerResult, TypeName, Value,
};

use super::{ConnectionFields, Cursor};
use crate::state::AppState;

/// An object whose fields can be answered from memory.
pub trait Fields: Send + Sync {
    /// The object's GraphQL type name.
    fn type_name(&self) -> Cow<'static, str>;

    /// The answer to `field` (its name is the GraphQL name; an object field's answer is its
    /// selection's, through [`object`] or [`list`]) as async-graphql would give it, or `None`
    /// when this field cannot be answered without async-graphql (the whole selection then
    /// goes to it).
    fn field(&self, ctx: &ContextSelectionSet<'_>, field: &Field) -> Option<Value>;
}

/// The answer to the selection `set` on `object`, or `None` where async-graphql must answer.
pub fn object(
    ctx: &ContextSelectionSet<'_>,
    set: &SelectionSet,
    object: &dyn Fields,
) -> Option<Value> {
    let mut out = IndexMap::with_capacity(set.items.len());
    walk(ctx, set, object, &mut out)?;
    Some(if out.is_empty() {
        Value::Null
    } else {
        Value::Object(out)
    })
}

/// The answer to the selection `set` on each of `items`.
pub fn list<T: Fields>(
    ctx: &ContextSelectionSet<'_>,
    set: &SelectionSet,
    items: impl IntoIterator<Item = T>,
) -> Option<Value> {
    let items = items.into_iter();
    let mut out = Vec::with_capacity(items.size_hint().0);
    for item in items {
        out.push(object(ctx, set, &item)?);
    }
    Some(Value::List(out))
}

impl<T: Fields + ?Sized> Fields for &T {
    fn type_name(&self) -> Cow<'static, str> {
        (**self).type_name()
    }

    fn field(&self, ctx: &ContextSelectionSet<'_>, field: &Field) -> Option<Value> {
        (**self).field(ctx, field)
    }
}

/// Adds the answers of `set` to `out`; `None` when a selection needs async-graphql.
fn walk(
    ctx: &ContextSelectionSet<'_>,
    set: &SelectionSet,
    object: &dyn Fields,
    out: &mut IndexMap<Name, Value>,
) -> Option<()> {
    for selection in &set.items {
        if !selection.node.directives().is_empty() {
            return None;
        }
        // A fragment: its type condition (none on an inline fragment without one) and set.
        let (on, inner) = match &selection.node {
            Selection::Field(field) => {
                let field = &field.node;
                if !field.arguments.is_empty() {
                    return None;
                }
                let value = if field.name.node == "__typename" {
                    Value::String(object.type_name().into_owned())
                } else {
                    object.field(ctx, field)?
                };
                merge(out, field.response_key().node.clone(), value);
                continue;
            }
            Selection::FragmentSpread(spread) => {
                let fragment = ctx
                    .query_env
                    .fragments
                    .get(&spread.node.fragment_name.node)?;
                let on = fragment.node.type_condition.node.on.node.as_str();
                (Some(on), &fragment.node.selection_set.node)
            }
            Selection::InlineFragment(inline) => {
                let on = inline.node.type_condition.as_ref();
                let on = on.map(|c| c.node.on.node.as_str());
                (on, &inline.node.selection_set.node)
            }
        };
        if applies(ctx, object, on) {
            walk(ctx, inner, object, out)?;
        }
    }
    Some(())
}

/// Adds `value` under `key` as async-graphql does: a key seen before keeps its answer, and
/// two objects (or two lists of objects) under one key merge.
fn merge(out: &mut IndexMap<Name, Value>, key: Name, value: Value) {
    // One hash per key: the entry, not a lookup then an insert.
    let before = match out.entry(key) {
        Entry::Vacant(slot) => {
            slot.insert(value);
            return;
        }
        Entry::Occupied(slot) => slot.into_mut(),
    };
    match (before, value) {
        (Value::Object(before), Value::Object(more)) => {
            for (k, v) in more {
                merge(before, k, v);
            }
        }
        (Value::List(before), Value::List(more)) => {
            for (item, more) in before.iter_mut().zip(more) {
                if let (Value::Object(item), Value::Object(more)) = (item, more) {
                    for (k, v) in more {
                        merge(item, k, v);
                    }
                }
            }
        }
        _ => {}
    }
}

/// Whether lists may be answered in one pass: not when resolvers are traced
/// (`--trace-resolvers`), whose spans are per field.
fn one_pass(ctx: &ContextSelectionSet<'_>) -> bool {
    !ctx.data_opt::<AppState>()
        .is_some_and(|s| s.settings.trace_resolvers)
}

/// Whether a fragment on `on` (none: no type condition) applies to `object`.
fn applies(ctx: &ContextSelectionSet<'_>, object: &dyn Fields, on: Option<&str>) -> bool {
    let Some(on) = on else { return true };
    let name = object.type_name();
    name == on
        || ctx
            .schema_env
            .registry
            .implements
            .get(name.as_ref())
            .is_some_and(|interfaces| interfaces.contains(on))
}

/// `T` as the GraphQL object it is, answered in one pass where [`Fields`] can.
#[derive(Debug, Clone)]
pub struct Fast<T>(pub T);

impl<T: Fields + OutputType> OutputType for Fast<T> {
    fn type_name() -> Cow<'static, str> {
        <T as OutputType>::type_name()
    }

    fn qualified_type_name() -> String {
        T::qualified_type_name()
    }

    fn introspection_type_name(&self) -> Cow<'static, str> {
        self.0.introspection_type_name()
    }

    fn create_type_info(registry: &mut Registry) -> String {
        T::create_type_info(registry)
    }

    async fn resolve(
        &self,
        ctx: &ContextSelectionSet<'_>,
        field: &Positioned<Field>,
    ) -> ServerResult<Value> {
        match one_pass(ctx).then(|| object(ctx, &ctx.item.node, &self.0)) {
            Some(Some(value)) => Ok(value),
            _ => self.0.resolve(ctx, field).await,
        }
    }
}

/// The Relay connection of a page (`MealConnection`, `PokemonConnection`, …: the same type
/// as async-graphql's `Connection` with [`ConnectionFields`]), answered in one pass when its
/// nodes can be.
pub struct FastPage<N> {
    /// Whether the page started after a cursor.
    pub has_previous: bool,
    /// Whether items follow the page.
    pub has_next: bool,
    /// How many items match, across all pages.
    pub total: i64,
    /// Each item with its cursor.
    pub edges: Vec<(Cursor, N)>,
}

type Generic<N> = Connection<Cursor, N, ConnectionFields, EmptyFields>;

impl<N: Fields + OutputType + Clone> FastPage<N> {
    /// The same page as async-graphql's connection.
    fn generic(&self) -> Generic<N> {
        let mut conn = Connection::with_additional_fields(
            self.has_previous,
            self.has_next,
            ConnectionFields {
                total_count: self.total,
            },
        );
        conn.edges.extend(
            self.edges
                .iter()
                .map(|(cursor, node)| Edge::new(cursor.clone(), node.clone())),
        );
        conn
    }
}

/// One edge of a [`FastPage`].
struct EdgeView<'a, N> {
    cursor: &'a Cursor,
    node: &'a N,
}

impl<N: Fields + OutputType> Fields for EdgeView<'_, N> {
    fn type_name(&self) -> Cow<'static, str> {
        <Edge<Cursor, N, EmptyFields> as TypeName>::type_name()
    }

    fn field(&self, ctx: &ContextSelectionSet<'_>, field: &Field) -> Option<Value> {
        match field.name.node.as_str() {
            "cursor" => Some(Value::String(self.cursor.encode_cursor())),
            "node" => object(ctx, &field.selection_set.node, self.node),
            _ => None,
        }
    }
}

/// The `pageInfo` of a [`FastPage`].
struct PageInfoView<'a, N>(&'a FastPage<N>);

impl<N: Send + Sync> Fields for PageInfoView<'_, N> {
    fn type_name(&self) -> Cow<'static, str> {
        "PageInfo".into()
    }

    fn field(&self, _: &ContextSelectionSet<'_>, field: &Field) -> Option<Value> {
        let page = self.0;
        let cursor = |edge: Option<&(Cursor, N)>| {
            edge.map_or(Value::Null, |(c, _)| Value::String(c.encode_cursor()))
        };
        Some(match field.name.node.as_str() {
            "hasPreviousPage" => Value::Boolean(page.has_previous),
            "hasNextPage" => Value::Boolean(page.has_next),
            "startCursor" => cursor(page.edges.first()),
            "endCursor" => cursor(page.edges.last()),
            _ => return None,
        })
    }
}

impl<N: Fields + OutputType + Clone> Fields for FastPage<N> {
    fn type_name(&self) -> Cow<'static, str> {
        <Generic<N> as TypeName>::type_name()
    }

    fn field(&self, ctx: &ContextSelectionSet<'_>, field: &Field) -> Option<Value> {
        let set = &field.selection_set.node;
        match field.name.node.as_str() {
            "edges" => list(
                ctx,
                set,
                self.edges
                    .iter()
                    .map(|(cursor, node)| EdgeView { cursor, node }),
            ),
            "nodes" => list(ctx, set, self.edges.iter().map(|(_, node)| node)),
            "pageInfo" => object(ctx, set, &PageInfoView(self)),
            "totalCount" => Some(self.total.to_value()),
            _ => None,
        }
    }
}

impl<N: Fields + OutputType + Clone> OutputType for FastPage<N> {
    fn type_name() -> Cow<'static, str> {
        <Generic<N> as OutputType>::type_name()
    }

    fn create_type_info(registry: &mut Registry) -> String {
        Generic::<N>::create_type_info(registry)
    }

    async fn resolve(
        &self,
        ctx: &ContextSelectionSet<'_>,
        field: &Positioned<Field>,
    ) -> ServerResult<Value> {
        match one_pass(ctx).then(|| object(ctx, &ctx.item.node, self)) {
            Some(Some(value)) => Ok(value),
            _ => self.generic().resolve(ctx, field).await,
        }
    }
}
