//! The write path of cached entities, and their read-through helpers. The protocol is
//! described in `docs/cache-consistency.md`; in short:
//!
//! 1. the service writes inside a transaction opened by [`write`]; entity hooks record each
//!    row change in the task's write scope (`entity::write_through`);
//! 2. if the transaction fails, the changes are dropped: the cache never hears of them;
//! 3. before `COMMIT`, every changed key is *marked* in the cache: readers treat a marked key
//!    as a miss and may not fill it, so no read that starts after the commit can be answered
//!    from the older entry;
//! 4. after `COMMIT`, the new versions are stored (each only if newer than what is there) and
//!    the marks cleared; after a failed `COMMIT` only the marks are cleared;
//! 5. a reader's miss takes a *lease* on the key (same round trip); it fills only while the
//!    lease is still its own and with a version newer than the entry present. A write revokes
//!    the leases of its keys before committing, so a slow reader can never put back an older
//!    row — not even when the newer entry has been evicted meanwhile.
//!
//! When the cache cannot be reached, [`CacheHealth`] turns *degraded*: reads and writes go to
//! the database alone, the keys whose invalidation could not be delivered are remembered, and
//! the cache is used again only once they have all been deleted from it.

use std::time::Duration;

use entity::write_through::{self as scope, Change};
use futures::future::BoxFuture;
use sea_orm::{DatabaseTransaction, TransactionTrait};
use tokio::sync::watch;

use crate::backends::cache::{CacheError, Versioned, WriteOutcome};
use crate::error::{AppResult, OrInternal};
use crate::state::AppState;

/// How long a write mark protects a key if its writer never clears it (a crash).
pub fn mark_ttl(state: &AppState) -> Duration {
    state.settings.request_timeout() + Duration::from_secs(5)
}

/// The cache key of an entity's entry.
pub fn entry_key(entity: &str, id: &str) -> String {
    format!("{entity}:{id}")
}

/// The payload stored for a row that is gone.
pub const TOMBSTONE: &str = "null";

/// Background task: probes the cache, and once it answers again deletes every key it owes
/// an invalidation before letting reads use it.
pub async fn health_worker(state: AppState, mut stop: watch::Receiver<bool>) {
    {
        loop {
            let degraded = state.cache_health.degraded();
            let pause = if degraded {
                Duration::from_millis(100)
            } else {
                Duration::from_millis(500)
            };
            tokio::select! {
                _ = stop.changed() => break,
                _ = tokio::time::sleep(pause) => {}
            }
            if degraded {
                recover(&state).await;
            } else if state.cache.ping().await.is_err() {
                state.cache_health.failed(std::iter::empty());
            }
        }
    }
}

/// One recovery attempt: delete the owed keys, then leave degraded mode if nothing new is owed.
pub async fn recover(state: &AppState) -> bool {
    let owed = state.cache_health.owed();
    if state.cache.ping().await.is_err() {
        return false;
    }
    if !owed.is_empty() && state.cache.del(&owed).await.is_err() {
        return false;
    }
    state.cache_health.delivered(&owed)
}

/// Runs `f` in a transaction whose hooked writes reach the cache only once committed.
pub async fn write<T, F>(state: &AppState, f: F) -> AppResult<T>
where
    T: Send,
    F: for<'c> FnOnce(&'c DatabaseTransaction) -> BoxFuture<'c, AppResult<T>> + Send,
{
    let db = &state.db;
    let (res, changes) = scope::scope(async move {
        let txn = db.begin().await?;
        match f(&txn).await {
            Ok(v) => Ok((txn, v)),
            Err(e) => {
                // Dropping would roll back too; doing it here returns the connection at once.
                let _ = txn.rollback().await;
                Err(e)
            }
        }
    })
    .await;
    let (txn, out) = res?;
    // From here on nothing may be cancelled half-way (a request timeout drops the request's
    // future): a commit whose cache effects were never applied would leave a stale entry
    // once its mark expires. The task runs to completion even if nobody awaits it.
    let state = state.clone();
    tokio::spawn(async move { commit_and_publish(&state, txn, changes).await })
        .await
        .or_internal("commit task failed")??;
    Ok(out)
}

async fn commit_and_publish(
    state: &AppState,
    txn: DatabaseTransaction,
    changes: Vec<Change>,
) -> AppResult<()> {
    if changes.is_empty() {
        txn.commit().await?;
        return Ok(());
    }
    let keys: Vec<String> = changes.iter().map(|c| entry_key(c.entity, &c.id)).collect();
    let use_cache = state.cache_health.usable();
    let marked = use_cache && {
        let r = state.cache.begin_write(&keys, mark_ttl(state)).await;
        if let Err(e) = &r {
            state.cache_health.failed(keys.iter().cloned());
            if matches!(e, CacheError::Protocol(_)) {
                // The server answered but refused the marks (a full Redis under `noeviction`
                // refuses every write but DEL): remove the entries before COMMIT, so that no
                // replica serves them after it. Fills need a lease, which a full server
                // refuses too.
                let _ = state.cache.del(&keys).await;
            }
        }
        r.is_ok()
    };
    if let Err(e) = txn.commit().await {
        // A failed COMMIT does not prove nothing was committed (the connection may have
        // dropped after the server committed): the entries are removed while still marked,
        // so the next read goes to the database, then the marks are cleared. Keys a committed
        // change would have removed (a deleted meal's name pair) go too.
        let removable: Vec<String> = keys
            .iter()
            .cloned()
            .chain(changes.iter().flat_map(|c| c.also_remove.iter().cloned()))
            .collect();
        let removed = marked && state.cache.del(&removable).await.is_ok();
        let aborted: Vec<_> = keys
            .iter()
            .map(|k| (k.clone(), WriteOutcome::Aborted))
            .collect();
        let cleared = removed
            && state
                .cache
                .end_write(&aborted, state.settings.cache_ttl())
                .await
                .is_ok();
        if !cleared {
            state.cache_health.failed(removable);
        }
        return Err(e.into());
    }
    publish_committed(state, &changes, marked).await;
    Ok(())
}

async fn publish_committed(state: &AppState, changes: &[Change], marked: bool) {
    let mut writes: Vec<(String, WriteOutcome)> = Vec::with_capacity(changes.len());
    let mut also_remove = Vec::new();
    for c in changes {
        let payload = c
            .row
            .as_ref()
            .map(|r| r.to_string())
            .unwrap_or_else(|| TOMBSTONE.to_owned());
        writes.push((
            entry_key(c.entity, &c.id),
            WriteOutcome::Committed(Versioned {
                version: c.version,
                payload,
            }),
        ));
        also_remove.extend(c.also_remove.iter().cloned());
    }
    let keys: Vec<String> = writes.iter().map(|(k, _)| k.clone()).collect();
    if !marked {
        // The mark could not be set (or the cache is degraded): the cache still holds
        // whatever it had; it owes these keys an invalidation.
        state
            .cache_health
            .failed(keys.into_iter().chain(also_remove));
        return;
    }
    if state
        .cache
        .end_write(&writes, state.settings.cache_ttl())
        .await
        .is_err()
    {
        state
            .cache_health
            .failed(keys.into_iter().chain(also_remove));
        return;
    }
    if !also_remove.is_empty() && state.cache.del(&also_remove).await.is_err() {
        state.cache_health.failed(also_remove);
    }
}

/// A cache lookup's answer for one id.
#[derive(Debug, Clone, PartialEq)]
pub enum Cached {
    /// The entry holds this row.
    Row(serde_json::Value),
    /// The entry says the row is gone.
    Gone,
    /// No usable entry: ask the database.
    Miss,
}

/// The lease a lookup took on its misses; only a fill holding it may store.
#[derive(Debug, Clone)]
pub struct Lease(Option<String>);

/// Reads the entries of `ids` in one round trip, taking a lease on every miss; every id is a
/// miss (and nothing may be filled) when the cache is degraded or fails.
pub async fn read_many(
    state: &AppState,
    entity: &'static str,
    ids: &[String],
) -> (Vec<Cached>, Lease) {
    let misses = || (vec![Cached::Miss; ids.len()], Lease(None));
    if !state.cache_health.usable() {
        return misses();
    }
    let keys: Vec<String> = ids.iter().map(|id| entry_key(entity, id)).collect();
    let lease = crate::crypto::random_token(12);
    let entries = match state
        .cache
        .leased_get_many(&keys, &lease, mark_ttl(state))
        .await
    {
        Ok(e) => e,
        Err(_) => {
            state.cache_health.failed(std::iter::empty());
            return misses();
        }
    };
    let hits = &state.metrics.cache_hits;
    let miss_count = &state.metrics.cache_misses;
    let cached = entries
        .into_iter()
        .map(|e| match e {
            Some(v) if v.payload == TOMBSTONE => {
                hits.with_label_values(&[entity]).inc();
                Cached::Gone
            }
            Some(v) => match serde_json::from_str(&v.payload) {
                Ok(row) => {
                    hits.with_label_values(&[entity]).inc();
                    Cached::Row(row)
                }
                Err(_) => {
                    miss_count.with_label_values(&[entity]).inc();
                    Cached::Miss
                }
            },
            None => {
                miss_count.with_label_values(&[entity]).inc();
                Cached::Miss
            }
        })
        .collect();
    (cached, Lease(Some(lease)))
}

/// Fills entries after a miss, in one round trip; each is stored only while `lease` (from
/// [`read_many`]) still holds, no write is in flight and nothing newer is there. `rows` are
/// `(id, version, row or None when gone)`.
pub async fn fill_many(
    state: &AppState,
    entity: &'static str,
    lease: &Lease,
    rows: Vec<(String, i64, Option<serde_json::Value>)>,
) {
    let Some(lease) = &lease.0 else { return };
    if rows.is_empty() || !state.cache_health.usable() {
        return;
    }
    let entries: Vec<(String, Versioned)> = rows
        .into_iter()
        .map(|(id, version, row)| {
            (
                entry_key(entity, &id),
                Versioned {
                    version,
                    payload: row
                        .map(|r| r.to_string())
                        .unwrap_or_else(|| TOMBSTONE.to_owned()),
                },
            )
        })
        .collect();
    if state
        .cache
        .leased_fill_many(&entries, lease, state.settings.cache_ttl())
        .await
        .is_err()
    {
        state.cache_health.failed(std::iter::empty());
    }
}
