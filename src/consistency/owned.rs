//! A user's own rows (`entity::OWNED_TABLES`: their account, sessions, API keys and specs)
//! under one version per user, `viewer:<id>`: what lets the answers a viewer gets about
//! themselves (`credentials`, `specs`, `me`, …) be memoized for that viewer.
//!
//! The version works as a collection's (`collections.rs`) scoped to one user: every write to
//! the user's rows runs in [`write_owned`], which marks it before the change commits and
//! deletes it after; a reader resolves the viewer and reads their rows only after reading it
//! ([`reading_owned`]). Opening a session is the one write left out: no answer can have been
//! memoized for a token that did not exist yet.

use std::future::Future;

use super::collections::versions_of;
use super::write::{after_failed_commit, begin, may_commit, publish, CacheEffects};
use super::{refused, Context};
use crate::error::{AppResult, OrInternal};

/// The cache key of the version of `user_id`'s own rows.
pub fn viewer_key(user_id: i64) -> String {
    format!("viewer:{user_id}")
}

/// The version of `user_id`'s own rows, read (or made) before any of them is: recorded, when
/// the operation is tracked, as covering [`entity::OWNED_TABLES`]. `None` when it is being
/// written or the cache cannot vouch for it.
pub async fn reading_owned(state: &impl Context, user_id: i64) -> Option<i64> {
    if !state.health().usable() {
        return None;
    }
    let key = viewer_key(user_id);
    let version = versions_of(state, std::slice::from_ref(&key), "viewer")
        .await
        .pop()
        .flatten()?;
    entity::scope::read::record_covering(&key, version, entity::OWNED_TABLES);
    Some(version)
}

/// Runs `change`, which writes (and commits) rows of `user_id`'s own, under their version:
/// marked before it runs, deleted after it ends. Under `strict` a change the cache cannot hear
/// of is refused (`UNAVAILABLE`) before it runs; a change that fails may have committed (a
/// lost reply), so the version is deleted then too. Like every write, it runs to completion
/// even if the request is cancelled.
pub async fn write_owned<T, F>(state: &impl Context, user_id: i64, change: F) -> AppResult<T>
where
    T: Send + 'static,
    F: Future<Output = AppResult<T>> + Send + 'static,
{
    let state = state.clone();
    let keys = vec![viewer_key(user_id)];
    tokio::spawn(async move {
        let begun = begin(&state, &keys).await;
        if !may_commit(&state, &keys, begun).await {
            return Err(refused());
        }
        match change.await {
            Ok(out) => {
                let effects = CacheEffects::stores(Vec::new()).premarked(keys, begun);
                publish(&state, effects, begun).await;
                Ok(out)
            }
            Err(e) => {
                after_failed_commit(&state, keys, begun).await;
                Err(e)
            }
        }
    })
    .await
    .or_internal("the write task failed")?
}
