//! The sync worker: copies the usage counters, `user_set` and the user data documents from the
//! cache tier to the document store every `ARENA_SYNC_INTERVAL`, restores them from the
//! document store when the cache lost them, and flushes on shutdown. It runs inside `serve`
//! (unless `ARENA_SYNC_ENABLED=false`) or alone as `arena sync`.
//!
//! Documents: collection `usage`, ids `counters` (`{counters: {field: n}, updated_time}`) and
//! `user_set` (`{members: [...], updated_time}`); collection `user_data`, ids `user_<id>`.
//!
//! When to restore: when the marker `usage:restored` is missing (the cache is new, was
//! emptied by FLUSHDB, or evicted it), or the cache's `c_:updated_time` is missing or older
//! than the document's (Redis came back from an older snapshot). Otherwise the cache is the
//! newer copy and is never overwritten, only copied.
//!
//! How: counters only grow, so each counter below its stored value is *raised* to it, never
//! added to. Raising is idempotent: a pass that runs twice, or a marker evicted by
//! `allkeys-lru`, can never count twice; the price is that counts made between a wipe and the
//! next pass are absorbed by the stored value. `user_set` is united with the stored members,
//! and user data documents the cache lacks (or holds older) are put back.
//!
//! One writer at a time: every pass holds `usage:sync_lock` (`SET NX` with an expiry, released
//! by compare-and-delete), so replicas and a separate `arena sync` never interleave a restore.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use serde_json::{json, Value};
use tokio::sync::watch;

use super::counting::{
    self, read_counter, read_time, write_time, UsageBuffer, COUNTERS_UPDATED, COUNTER_PREFIX,
    USER_SET, USER_SET_UPDATED,
};
use super::service::{is_user_key, UserData, USER_DATA_COLLECTION};
use crate::backends::cache::lock::{CacheLock, Wait};
use crate::state::AppState;

/// The collection of the counters and `user_set` documents.
pub const USAGE_COLLECTION: &str = "usage";
/// The lock key one sync pass holds.
pub const SYNC_LOCK: &str = "usage:sync_lock";
/// Set once a pass has restored this cache from the documents.
pub const RESTORED: &str = "usage:restored";

const LOCK_TTL: Duration = Duration::from_secs(60);

/// What one pass did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncOutcome {
    /// Another worker held the lock; nothing done.
    Busy,
    /// Copied the cache to the documents.
    Copied,
    /// Raised counters the cache had below their stored values, then copied.
    Restored,
}

/// The worker, as `serve` and `arena sync` run it.
/// `usage` is the instance's count buffer (none for `arena sync` alone, which counts nothing).
pub async fn sync_worker(
    state: AppState,
    usage: Option<Arc<UsageBuffer>>,
    mut stop: watch::Receiver<bool>,
) {
    {
        let every = Duration::from_secs(state.settings.sync_interval_secs.max(1));
        log_pass("start", sync_once(&state).await);
        loop {
            tokio::select! {
                _ = stop.changed() => break,
                _ = tokio::time::sleep(every) => {}
            }
            log_pass("interval", sync_once(&state).await);
        }
        // Shutdown: every count this instance buffered goes to the cache, then to documents.
        if let Some(usage) = &usage {
            counting::flush_on_shutdown(&state, usage).await;
        }
        for _ in 0..50 {
            match sync_once(&state).await {
                Ok(SyncOutcome::Busy) => tokio::time::sleep(Duration::from_millis(100)).await,
                other => {
                    log_pass("shutdown", other);
                    return;
                }
            }
        }
        tracing::warn!("usage sync: the lock stayed busy; another worker will copy the counts");
    }
}

fn log_pass(when: &str, r: anyhow::Result<SyncOutcome>) {
    match r {
        Ok(outcome) => tracing::debug!(when, ?outcome, "usage sync"),
        Err(e) => tracing::warn!(when, error = ?e, "usage sync failed; will retry"),
    }
}

/// One pass under the lock: restore if needed, then copy cache → documents.
pub async fn sync_once(state: &AppState) -> anyhow::Result<SyncOutcome> {
    let Some(lock) = CacheLock::acquire(&state.kv, SYNC_LOCK, LOCK_TTL, Wait::NONE)
        .await
        .context("taking the sync lock")?
    else {
        return Ok(SyncOutcome::Busy);
    };
    let result = sync_locked(state).await;
    lock.release().await;
    result
}

async fn sync_locked(state: &AppState) -> anyhow::Result<SyncOutcome> {
    let cache = state.kv.as_ref();
    let docs = state.docs.as_ref();
    let stored_counters = docs
        .get(USAGE_COLLECTION, "counters")
        .await
        .context("reading the counters document")?;
    let stored_time = stored_counters
        .as_ref()
        .and_then(|d| d.get("updated_time"))
        .and_then(Value::as_i64);
    let stored_counts: BTreeMap<String, i64> = stored_counters
        .as_ref()
        .and_then(|d| d.get("counters"))
        .and_then(|c| serde_json::from_value(c.clone()).ok())
        .unwrap_or_default();
    let marked = read_counter(cache, RESTORED).await? > 0;
    let cache_time = read_time(cache, COUNTERS_UPDATED).await?;

    // Counters only grow: one below its stored value lost counts, one at or above it is the
    // newer copy and is left alone.
    let older = matches!((cache_time, stored_time), (Some(c), Some(s)) if c < s);
    let restore = !marked || cache_time.is_none() || older;
    let mut raised = false;
    for (field, n) in stored_counts.iter().filter(|_| restore) {
        let key = counting::counter_key(field);
        let current = read_counter(cache, &key).await?;
        if current < *n {
            cache.incr_by(&key, n - current).await?;
            raised = true;
        }
    }
    if restore {
        restore_sets_and_users(state).await?;
        if let Some(t) = stored_time {
            write_time(cache, COUNTERS_UPDATED, t.max(cache_time.unwrap_or(0))).await?;
        }
    }
    if !marked {
        cache.incr_by(RESTORED, 1).await?;
    }
    copy_to_documents(state, stored_time).await?;
    Ok(if raised {
        SyncOutcome::Restored
    } else {
        SyncOutcome::Copied
    })
}

/// `user_set` gets the stored members; user data documents the cache lacks (or holds older)
/// are put back.
async fn restore_sets_and_users(state: &AppState) -> anyhow::Result<()> {
    let cache = state.kv.as_ref();
    if let Some(doc) = state.docs.get(USAGE_COLLECTION, USER_SET).await? {
        let members: Vec<String> = doc
            .get("members")
            .and_then(|m| serde_json::from_value(m.clone()).ok())
            .unwrap_or_default();
        for m in &members {
            cache.sadd(USER_SET, m).await?;
        }
        if let Some(t) = doc.get("updated_time").and_then(Value::as_i64) {
            write_time(cache, USER_SET_UPDATED, t).await?;
        }
    }
    for (id, doc) in state.docs.list(USER_DATA_COLLECTION).await? {
        if !is_user_key(&id) {
            continue;
        }
        let stored: UserData = match serde_json::from_value(doc.clone()) {
            Ok(d) => d,
            Err(_) => continue,
        };
        let cached: Option<UserData> = cache
            .get(&id)
            .await?
            .and_then(|raw| serde_json::from_str(&raw).ok());
        if cached.is_none_or(|c| c.updated_time < stored.updated_time) {
            cache.set(&id, &doc.to_string(), None).await?;
        }
    }
    Ok(())
}

/// Copies counters, `user_set` and the user data documents to the document store.
async fn copy_to_documents(state: &AppState, stored_time: Option<i64>) -> anyhow::Result<()> {
    let cache = state.kv.as_ref();
    let docs = state.docs.as_ref();
    let mut counters = BTreeMap::new();
    for key in cache.scan_prefix(COUNTER_PREFIX).await? {
        let Some(field) = key.strip_prefix(COUNTER_PREFIX) else {
            continue;
        };
        if field.is_empty() || field.contains(':') {
            continue;
        }
        counters.insert(field.to_owned(), read_counter(cache, &key).await?);
    }
    let cache_time = read_time(cache, COUNTERS_UPDATED).await?;
    let updated_time = cache_time.max(stored_time).unwrap_or(0);
    docs.put(
        USAGE_COLLECTION,
        "counters",
        &json!({ "counters": counters, "updated_time": updated_time }),
    )
    .await
    .context("writing the counters document")?;

    let members = cache.smembers(USER_SET).await?;
    let users_time = read_time(cache, USER_SET_UPDATED).await?.unwrap_or(0);
    docs.put(
        USAGE_COLLECTION,
        USER_SET,
        &json!({ "members": members, "updated_time": users_time }),
    )
    .await
    .context("writing the user_set document")?;

    for key in cache.scan_prefix("user_").await? {
        if !is_user_key(&key) {
            continue;
        }
        let Some(raw) = cache.get(&key).await? else {
            continue;
        };
        let Ok(value) = serde_json::from_str::<Value>(&raw) else {
            continue;
        };
        let cached_time = value
            .get("updated_time")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        let stored = docs.get(USER_DATA_COLLECTION, &key).await?;
        let stored_time = stored
            .as_ref()
            .map(|d| d.get("updated_time").and_then(Value::as_i64).unwrap_or(0));
        if stored_time.is_none_or(|t| cached_time > t) {
            // Only over the version read: a change written meanwhile is newer and wins.
            docs.put_if(
                USER_DATA_COLLECTION,
                &key,
                &value,
                "updated_time",
                stored_time,
            )
            .await?;
        }
    }
    Ok(())
}
