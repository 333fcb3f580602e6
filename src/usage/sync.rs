//! The sync worker: keeps the cache tier's copy of the usage counters and `user_set` equal to
//! the document store, which holds their truth (every flush adds the counts to it, see
//! [`super::counting`]). It runs inside `serve` (unless `ARENA_SYNC_ENABLED=false`) or alone as
//! `arena sync`: at start, every `ARENA_SYNC_INTERVAL`, and on shutdown (after the instance's
//! own last flush).
//!
//! Documents: collection `usage`, ids `counters` (`{counters: {field: n}, updated_time}`) and
//! `user_set` (`{members: [...], updated_time}`). User data documents (`user_<id>`) are
//! written to the document store by every change and read through the cache, so they need
//! no copying.
//!
//! A pass raises every cache counter below its stored total to it (never lowering one, so a
//! pass racing a flush, or running twice, can never count twice) and, when the restore marker
//! `usage:restored` is missing (the cache restarted, was emptied or is new), puts `user_set`
//! back. Flushes do the same for the counters they touch, so the pass matters only where
//! nothing is being counted.
//!
//! One writer at a time: every pass holds `usage:sync_lock` (`SET NX` with an expiry, released
//! by compare-and-delete), so replicas and a separate `arena sync` never interleave.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;

use super::counting::{self, read_counter, UsageBuffer, COUNTERS_DOC};
pub use super::counting::{RESTORED, USAGE_COLLECTION};
use crate::backends::cache::lock::{CacheLock, Wait};
use crate::state::AppState;

/// The lock key one sync pass holds.
pub const SYNC_LOCK: &str = "usage:sync_lock";

const LOCK_TTL: Duration = Duration::from_secs(60);

/// What one pass did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncOutcome {
    /// Another worker held the lock; nothing done.
    Busy,
    /// The cache already held every stored total and `user_set`.
    UpToDate,
    /// Raised counters the cache had below their stored totals, or put `user_set` back.
    Restored,
}

/// The worker, as `serve` and `arena sync` run it.
/// `usage` is the instance's count buffer (none for `arena sync` alone, which counts nothing).
pub async fn sync_worker(
    state: AppState,
    usage: Option<Arc<UsageBuffer>>,
    stop: tokio_util::sync::CancellationToken,
) {
    let every = Duration::from_secs(state.settings.sync_interval_secs.max(1));
    log_pass("start", sync_once(&state).await);
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(every) => {}
        }
        log_pass("interval", sync_once(&state).await);
    }
    // Shutdown: every count this instance buffered goes to the documents and the cache.
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
    tracing::warn!("usage sync: the lock stayed busy; another worker will do the pass");
}

fn log_pass(when: &str, r: anyhow::Result<SyncOutcome>) {
    match r {
        Ok(outcome) => tracing::debug!(when, ?outcome, "usage sync"),
        Err(e) => tracing::warn!(when, error = ?e, "usage sync failed; will retry"),
    }
}

/// One pass under the lock (see the module documentation).
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
    let stored = state
        .docs
        .get(USAGE_COLLECTION, COUNTERS_DOC)
        .await
        .context("reading the counters document")?;
    let totals = stored.as_ref().map(counting::totals).unwrap_or_default();
    let mut restored = false;
    for (key, total) in &totals {
        if read_counter(cache, key).await? < *total {
            restored = true;
        }
    }
    cache.raise_many(&totals).await?;
    if cache.get(RESTORED).await?.is_none() {
        counting::restore_user_set(state).await?;
        restored = true;
    }
    Ok(if restored {
        SyncOutcome::Restored
    } else {
        SyncOutcome::UpToDate
    })
}
