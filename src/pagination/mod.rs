//! Relay-style pages shared by every list: page-size limits, opaque cursors, one keyset query
//! ([`keyset_page`]) that services run, and the connection resolvers build from its [`Page`].

use async_graphql::connection::{Connection, Edge, EmptyFields};
use async_graphql::{Context, OutputType, SimpleObject};
use base64::Engine;
use sea_orm::{
    ColumnTrait, ConnectionTrait, EntityTrait, FromQueryResult, Order, PaginatorTrait, QueryFilter,
    QueryOrder, QuerySelect, Select,
};

use crate::error::{AppError, AppResult};
use crate::state::state;

/// Extra fields of every connection.
#[derive(SimpleObject, Debug, Clone, Copy)]
pub struct ConnectionFields {
    /// How many items match, across all pages.
    pub total_count: i64,
}

/// A Relay connection of `N` with [`ConnectionFields`].
pub type PageConnection<N> = Connection<String, N, ConnectionFields, EmptyFields>;

/// The page size asked for: `first` (default 20), checked against the configured maximum.
pub fn page_size(ctx: &Context<'_>, first: Option<i32>) -> AppResult<u64> {
    let max = state(ctx).settings.max_page_size;
    match first {
        None => Ok(20.min(max) as u64),
        Some(n) if n < 0 => Err(AppError::invalid("first", "must not be negative")),
        Some(n) if n as usize > max => Err(AppError::invalid(
            "first",
            format!("must be at most {max} (asked for {n})"),
        )),
        Some(n) => Ok(n as u64),
    }
}

/// Whether the connection being resolved selects `totalCount` (a page counts its rows only
/// then).
pub fn wants_total(ctx: &Context<'_>) -> bool {
    ctx.look_ahead().field("totalCount").exists()
}

/// An opaque cursor for `key` in the list `kind`.
pub fn encode_cursor(kind: &str, key: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{kind}:{key}"))
}

/// The key inside a cursor made by [`encode_cursor`] for `kind`.
pub fn decode_cursor(kind: &str, cursor: &str) -> AppResult<String> {
    let bad = || AppError::invalid("after", "is not a cursor of this list");
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(cursor)
        .map_err(|_| bad())?;
    let text = String::from_utf8(raw).map_err(|_| bad())?;
    text.strip_prefix(&format!("{kind}:"))
        .map(str::to_owned)
        .ok_or_else(bad)
}

/// The key inside an `after` cursor of `kind` whose keys are numbers.
pub fn decode_numeric_cursor(kind: &str, cursor: &str) -> AppResult<i64> {
    decode_cursor(kind, cursor)?
        .parse::<i64>()
        .map_err(|_| AppError::invalid("after", format!("is not a {kind} cursor")))
}

/// One page of a list, as a service returns it.
#[derive(Debug, Clone)]
pub struct Page<T> {
    /// The items, in list order.
    pub items: Vec<T>,
    /// Whether items follow this page.
    pub has_next: bool,
    /// Whether the page started after a cursor.
    pub has_previous: bool,
    /// How many items match, across all pages.
    pub total: i64,
}

impl<T> Page<T> {
    /// The Relay connection of this page: each item's cursor is `kind` and its key, each node
    /// made by `node`.
    pub fn into_connection<N: OutputType>(
        self,
        kind: &str,
        key: impl Fn(&T) -> String,
        mut node: impl FnMut(T) -> N,
    ) -> PageConnection<N> {
        let mut conn = Connection::with_additional_fields(
            self.has_previous,
            self.has_next,
            ConnectionFields {
                total_count: self.total,
            },
        );
        conn.edges.extend(
            self.items
                .into_iter()
                .map(|item| Edge::new(encode_cursor(kind, &key(&item)), node(item))),
        );
        conn
    }
}

/// A keyset page of `query`: at most `first` rows ordered by `key` (ascending or
/// descending) strictly after `after`, and the total count of the query when `count` (0
/// otherwise: the caller did not select it).
pub async fn keyset_page<E, C>(
    db: &C,
    query: Select<E>,
    key: E::Column,
    order: Order,
    first: u64,
    count: bool,
    after: Option<sea_orm::Value>,
) -> AppResult<Page<E::Model>>
where
    E: EntityTrait,
    E::Model: FromQueryResult + Send + Sync,
    C: ConnectionTrait,
{
    let total = if count {
        query.clone().count(db).await? as i64
    } else {
        0
    };
    let has_previous = after.is_some();
    let query = match (after, &order) {
        (Some(a), Order::Desc) => query.filter(key.lt(a)),
        (Some(a), _) => query.filter(key.gt(a)),
        (None, _) => query,
    };
    let mut items = query.order_by(key, order).limit(first + 1).all(db).await?;
    let has_next = items.len() as u64 > first;
    items.truncate(first as usize);
    Ok(Page {
        items,
        has_next,
        has_previous,
        total,
    })
}
