//! Relay-style connections: page-size limits and opaque cursors shared by every list.

use async_graphql::{Context, SimpleObject};
use base64::Engine;

use crate::error::{AppError, AppResult};

/// Extra fields of every connection.
#[derive(SimpleObject, Debug, Clone, Copy)]
pub struct ConnectionFields {
    /// How many items match, across all pages.
    pub total_count: i64,
}

/// The page size asked for: `first` (default 20), checked against the configured maximum.
pub fn page_size(ctx: &Context<'_>, first: Option<i32>) -> AppResult<u64> {
    let max = crate::app::state(ctx).settings.max_page_size;
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
