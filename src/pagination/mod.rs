//! Relay-style pages shared by every list: page-size limits, opaque cursors, one keyset query
//! ([`keyset_page`]) that services run, and the connection resolvers build from its [`Page`],
//! answered in one pass where it can be ([`fast`]).

pub mod fast;

use std::borrow::Cow;

use async_graphql::connection::CursorType;
use async_graphql::{Context, SimpleObject};
use base64::Engine;
use entity::position::FromPosition;
pub use entity::position::ShapeSql;

use sea_orm::{
    ColumnTrait, ConnectionTrait, EntityTrait, Order, PaginatorTrait, QueryFilter, QueryOrder,
    QuerySelect, QueryTrait, Select, Statement,
};

use crate::error::{AppError, AppResult};
use crate::state::state;
use fast::FastPage;

/// Extra fields of every connection.
#[derive(SimpleObject, Debug, Clone, Copy)]
pub struct ConnectionFields {
    /// How many items match, across all pages.
    pub total_count: i64,
}

/// A Relay connection of `N` with [`ConnectionFields`], answered in one pass where it can
/// be ([`FastPage`]).
pub type PageConnection<N> = FastPage<N>;

/// An item's cursor: its list's kind and its key, encoded ([`encode_cursor`]) only when a
/// client selects `cursor` (most pages are read without it).
#[derive(Debug, Clone)]
pub struct Cursor {
    kind: Cow<'static, str>,
    key: String,
}

impl CursorType for Cursor {
    type Error = &'static str;

    fn decode_cursor(s: &str) -> Result<Self, Self::Error> {
        let bad = || "is not a cursor";
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(s)
            .map_err(|_| bad())?;
        let text = String::from_utf8(raw).map_err(|_| bad())?;
        let (kind, key) = text.split_once(':').ok_or_else(bad)?;
        Ok(Self {
            kind: Cow::Owned(kind.to_owned()),
            key: key.to_owned(),
        })
    }

    fn encode_cursor(&self) -> String {
        encode_cursor(&self.kind, &self.key)
    }
}

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
    pub fn into_connection<N>(
        self,
        kind: &'static str,
        key: impl Fn(&T) -> String,
        mut node: impl FnMut(T) -> N,
    ) -> PageConnection<N> {
        FastPage {
            has_previous: self.has_previous,
            has_next: self.has_next,
            total: self.total,
            edges: self
                .items
                .into_iter()
                .map(|item| {
                    let cursor = Cursor {
                        kind: Cow::Borrowed(kind),
                        key: key(&item),
                    };
                    (cursor, node(item))
                })
                .collect(),
        }
    }
}

/// A keyset page of `query` (the entity's columns, as `Entity::find()` selects them, decoded
/// by position): at most `first` rows ordered by `key` (ascending or
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
    E::Model: FromPosition + Send + Sync,
    C: ConnectionTrait,
{
    let total = if count {
        query.clone().count(db).await? as i64
    } else {
        0
    };
    let has_previous = after.is_some();
    let query = page_query(query, key, order, first, after);
    let items = entity::position::all(query, db).await?;
    Ok(into_page(items, first, has_previous, total))
}

/// `query`'s rows after the cursor `after` by `key` in `order`, one more than `first`.
fn page_query<E: EntityTrait>(
    query: Select<E>,
    key: E::Column,
    order: Order,
    first: u64,
    after: Option<sea_orm::Value>,
) -> Select<E> {
    let query = match (after, &order) {
        (Some(a), Order::Desc) => query.filter(key.lt(a)),
        (Some(a), _) => query.filter(key.gt(a)),
        (None, _) => query,
    };
    query.order_by(key, order).limit(first + 1)
}

/// The page of `rows`, read as [`page_query`] reads them: one more than `first` when more
/// follow.
pub fn into_page<T>(mut rows: Vec<T>, first: u64, has_previous: bool, total: i64) -> Page<T> {
    let has_next = rows.len() as u64 > first;
    rows.truncate(first as usize);
    Page {
        items: rows,
        has_next,
        has_previous,
        total,
    }
}

/// [`keyset_page`] of a query whose SQL text depends only on its shape, kept in `shape`
/// (one `ShapeSql` per shape: the caller picks it by the filters `query` adds and whether
/// `after` is set). `values` are the values of `query`'s filters in the order it adds them;
/// the cursor and the limit follow, as sea-query binds them. `query` runs only to count and to
/// make the text ([`ShapeSql::text`]).
#[allow(clippy::too_many_arguments)]
pub async fn keyset_page_shaped<E, C>(
    db: &C,
    shape: &ShapeSql,
    query: impl Fn() -> Select<E>,
    mut values: Vec<sea_orm::Value>,
    key: E::Column,
    order: Order,
    first: u64,
    count: bool,
    after: Option<sea_orm::Value>,
) -> AppResult<Page<E::Model>>
where
    E: EntityTrait,
    E::Model: FromPosition + Send + Sync,
    C: ConnectionTrait,
{
    let total = if count {
        query().count(db).await? as i64
    } else {
        0
    };
    let has_previous = after.is_some();
    let backend = db.get_database_backend();
    values.extend(after.clone());
    values.push(sea_orm::Value::BigUnsigned(Some(first + 1)));
    let sql = shape.text(backend, &values, || {
        page_query(query(), key, order, first, after).build(backend)
    });
    let statement = Statement::from_sql_and_values(backend, sql, values);
    let items = entity::position::rows(statement, db).await?;
    Ok(into_page(items, first, has_previous, total))
}
