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
//! Inside a list, the response keys of each selection are hashed for the first object of each
//! type only: the others follow the shape it left ([`shapes`]).
//!
//! Tests: `a_list_item_answers_every_selection_as_the_same_object_by_id` (meals) and its
//! Pokémon twin, with several items per list.

use std::borrow::Cow;

use async_graphql::connection::{Connection, CursorType, Edge, EmptyFields};
use async_graphql::indexmap::map::raw_entry_v1::{RawEntryApiV1, RawEntryMut};
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
    fn type_name(&self) -> Cow<'_, str>;

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
    let shape = shapes::of(set, object);
    let mut out = match &shape {
        Some(Shaped::Known(shape)) => match replay(ctx, set, object, shape) {
            Ok(answer) => return answer,
            Err(Astray) => Out::hashing(set.items.len(), None),
        },
        Some(Shaped::New) => Out::hashing(set.items.len(), Some(Vec::new())),
        None => Out::hashing(set.items.len(), None),
    };
    walk(ctx, set, object, &mut out)?;
    let (map, steps) = match out {
        Out::Hashing { map, steps } => (map, steps),
        Out::Replay { map, .. } => (map, None),
    };
    if let (Some(Shaped::New), Some(steps)) = (shape, steps) {
        shapes::learn(set, object, &map, steps);
    }
    Some(if map.is_empty() {
        Value::Null
    } else {
        Value::Object(map)
    })
}

/// The answer of `object` walked along a shape learnt from an object of its type before:
/// no key is hashed, as the shape has each key's hash. `None` where async-graphql must
/// answer, and [`Astray`] if the walk went another way than the shape says (it cannot, as
/// the walk depends only on the selection and the type; the caller would then walk again,
/// hashing).
fn replay(
    ctx: &ContextSelectionSet<'_>,
    set: &SelectionSet,
    object: &dyn Fields,
    shape: &Shape,
) -> Result<Option<Value>, Astray> {
    let mut out = Out::Replay {
        map: IndexMap::with_capacity_and_hasher(shape.hashes.len(), shape.hasher.clone()),
        shape,
        at: 0,
        astray: false,
    };
    if walk(ctx, set, object, &mut out).is_none() {
        return Ok(None);
    }
    match out {
        Out::Replay {
            map, at, astray, ..
        } if !astray && at == shape.steps.len() && map.len() == shape.hashes.len() => {
            Ok(Some(if map.is_empty() {
                Value::Null
            } else {
                Value::Object(map)
            }))
        }
        _ => Err(Astray),
    }
}

/// A replay that did not follow its shape.
struct Astray;

/// The answer to the selection `set` on each of `items`. While it runs, the objects it
/// answers (its items, and the objects and lists inside them) learn the shape of each
/// selection on each type once and follow it after: a page of 20 meals hashes its response
/// keys for one meal, not for 20.
pub fn list<T: Fields>(
    ctx: &ContextSelectionSet<'_>,
    set: &SelectionSet,
    items: impl IntoIterator<Item = T>,
) -> Option<Value> {
    let _shapes = shapes::Learning::begin();
    let items = items.into_iter();
    let mut out = Vec::with_capacity(items.size_hint().0);
    for item in items {
        out.push(object(ctx, set, &item)?);
    }
    Some(Value::List(out))
}

impl<T: Fields + ?Sized> Fields for &T {
    fn type_name(&self) -> Cow<'_, str> {
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
    out: &mut Out<'_>,
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
                out.put(&field.response_key().node, value);
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

/// Where a walk puts its answers.
enum Out<'s> {
    /// Into a map by key, hashing each; `steps` records the index each answer went to, when
    /// the walk learns a shape.
    Hashing {
        map: IndexMap<Name, Value>,
        steps: Option<Vec<u32>>,
    },
    /// Into a map with a shape's hasher, each answer at the index of its step: a new key
    /// goes in with the hash the shape has for it.
    Replay {
        map: IndexMap<Name, Value>,
        shape: &'s Shape,
        /// The next step.
        at: usize,
        /// Whether the walk left the shape's steps.
        astray: bool,
    },
}

impl Out<'_> {
    fn hashing(capacity: usize, steps: Option<Vec<u32>>) -> Self {
        Out::Hashing {
            map: IndexMap::with_capacity(capacity),
            steps,
        }
    }

    /// Adds `value` under `key` as async-graphql does: a key seen before keeps its answer,
    /// and two objects (or two lists of objects) under one key merge.
    fn put(&mut self, key: &Name, value: Value) {
        match self {
            Out::Hashing { map, steps } => {
                // One hash per key: the entry, not a lookup then an insert.
                let entry = map.entry(key.clone());
                if let Some(steps) = steps {
                    steps.push(u32::try_from(entry.index()).unwrap_or(u32::MAX));
                }
                match entry {
                    Entry::Vacant(slot) => {
                        slot.insert(value);
                    }
                    Entry::Occupied(slot) => merge_into(slot.into_mut(), value),
                }
            }
            Out::Replay {
                map,
                shape,
                at,
                astray,
            } => {
                let step = shape.steps.get(*at).map(|&i| i as usize);
                *at += 1;
                match step {
                    // The next new key, as in the walk the shape was learnt from.
                    Some(i) if i == map.len() => {
                        let Some(&hash) = shape.hashes.get(i) else {
                            *astray = true;
                            return;
                        };
                        if let RawEntryMut::Vacant(slot) =
                            map.raw_entry_mut_v1().from_hash(hash, |k| k == key)
                        {
                            slot.insert_hashed_nocheck(hash, key.clone(), value);
                        } else {
                            *astray = true;
                        }
                    }
                    Some(i) if i < map.len() => match map.get_index_mut(i) {
                        Some((k, before)) if k == key => merge_into(before, value),
                        _ => *astray = true,
                    },
                    _ => *astray = true,
                }
            }
        }
    }
}

/// Adds `value` under `key` to `out` as [`Out::put`] does.
fn merge(out: &mut IndexMap<Name, Value>, key: Name, value: Value) {
    match out.entry(key) {
        Entry::Vacant(slot) => {
            slot.insert(value);
        }
        Entry::Occupied(slot) => merge_into(slot.into_mut(), value),
    }
}

/// A second answer for a key already answered: objects (or lists of objects) merge, anything
/// else keeps the first answer.
fn merge_into(before: &mut Value, value: Value) {
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

/// The shapes learnt while a [`list`] runs.
///
/// A walk's answers depend on the object, but which keys it makes, in which order, and
/// which answer goes under which key depend only on the selection and on the object's type
/// (fragments apply by type; `@skip` and `@include` are gone before execution; a selection
/// that needs async-graphql ends every walk of it). So the first walk of a selection on a
/// type records them: its map's hasher, each key's hash, and per answer, the index of its
/// key. Later walks make their map with that hasher and put each new key in with its hash,
/// checking that it is the key the shape expects.
///
/// Selections are told apart by address, which is only sound while the document cannot
/// change: shapes live in a thread-local list from the start of the outermost [`list`] to
/// its end, and a list is answered synchronously, on one thread, with no `await` between.
mod shapes {
    use std::cell::RefCell;
    use std::hash::{BuildHasher, RandomState};
    use std::rc::Rc;

    use async_graphql::indexmap::IndexMap;
    use async_graphql::parser::types::SelectionSet;
    use async_graphql::{Name, Value};

    use super::Fields;

    pub(super) struct Shape {
        set: *const SelectionSet,
        type_name: String,
        /// The hasher of the map it was learnt from, which made `hashes`.
        pub(super) hasher: RandomState,
        /// Each key's hash, in the map's order.
        pub(super) hashes: Vec<u64>,
        /// Per answer of the walk, the index of its key.
        pub(super) steps: Vec<u32>,
    }

    /// What is known of a selection on a type, inside a [`super::list`].
    pub(super) enum Shaped {
        Known(Rc<Shape>),
        /// Not yet: the walk should record its steps for [`learn`].
        New,
    }

    thread_local! {
        static SHAPES: RefCell<Option<Vec<Rc<Shape>>>> = const { RefCell::new(None) };
    }

    /// The shape of `set` on `object`'s type; `None` outside a list.
    pub(super) fn of(set: &SelectionSet, object: &dyn Fields) -> Option<Shaped> {
        SHAPES.with_borrow(|shapes| {
            let shapes = shapes.as_ref()?;
            let name = object.type_name();
            Some(
                match shapes
                    .iter()
                    .find(|s| std::ptr::eq(s.set, set) && s.type_name == name)
                {
                    Some(s) => Shaped::Known(Rc::clone(s)),
                    None => Shaped::New,
                },
            )
        })
    }

    /// Records the shape of `set` on `object`'s type from a walk that made `map`.
    pub(super) fn learn(
        set: &SelectionSet,
        object: &dyn Fields,
        map: &IndexMap<Name, Value>,
        steps: Vec<u32>,
    ) {
        let hasher = map.hasher().clone();
        let hashes = map.keys().map(|k| hasher.hash_one(k)).collect();
        let shape = Rc::new(Shape {
            set,
            type_name: object.type_name().into_owned(),
            hasher,
            hashes,
            steps,
        });
        SHAPES.with_borrow_mut(|shapes| {
            if let Some(shapes) = shapes {
                shapes.push(shape);
            }
        });
    }

    /// Shapes are learnt from [`Learning::begin`] until the outermost one is dropped.
    pub(super) struct Learning {
        outermost: bool,
    }

    impl Learning {
        pub(super) fn begin() -> Self {
            let outermost = SHAPES.with_borrow_mut(|shapes| {
                let outermost = shapes.is_none();
                if outermost {
                    *shapes = Some(Vec::new());
                }
                outermost
            });
            Learning { outermost }
        }
    }

    impl Drop for Learning {
        fn drop(&mut self) {
            if self.outermost {
                SHAPES.with_borrow_mut(|shapes| *shapes = None);
            }
        }
    }
}

use shapes::{Shape, Shaped};

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
    /// `<N>Edge`, made once for the page.
    type_name: &'a str,
}

impl<N: Fields + OutputType> Fields for EdgeView<'_, N> {
    fn type_name(&self) -> Cow<'_, str> {
        Cow::Borrowed(self.type_name)
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
    fn type_name(&self) -> Cow<'_, str> {
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
    fn type_name(&self) -> Cow<'_, str> {
        <Generic<N> as TypeName>::type_name()
    }

    fn field(&self, ctx: &ContextSelectionSet<'_>, field: &Field) -> Option<Value> {
        let set = &field.selection_set.node;
        match field.name.node.as_str() {
            "edges" => {
                let type_name = <Edge<Cursor, N, EmptyFields> as TypeName>::type_name();
                list(
                    ctx,
                    set,
                    self.edges.iter().map(|(cursor, node)| EdgeView {
                        cursor,
                        node,
                        type_name: &type_name,
                    }),
                )
            }
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
