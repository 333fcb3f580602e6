//! The write path of cached entities, and their read-through helpers. The protocol is
//! described in `docs/cache-consistency.md`; in short:
//!
//! 1. the service writes inside a transaction opened by [`write`]; entity hooks record each
//!    row change in the task's write scope (`entity::write_through`), and a bulk statement
//!    (an import, a cascade) declares the ids it writes first ([`bulk`]); a statement that
//!    writes a cached table any other way makes [`write`] roll back;
//! 2. if the transaction fails, the changes are dropped: the cache never hears of them;
//! 3. before `COMMIT`, every changed key is *marked* in the cache: readers treat a marked key
//!    as a miss and may not fill it, so no read that starts after the commit can be answered
//!    from the older entry;
//! 4. after `COMMIT`, the new versions are stored (each only if newer than what is there),
//!    a bulk write's entries are deleted, and the marks cleared; after a failed `COMMIT` the
//!    entries are deleted while still marked, then the marks cleared;
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
use futures::StreamExt;
use sea_orm::{DatabaseTransaction, TransactionTrait};
use tokio::sync::watch;

use crate::backends::cache::{Versioned, WriteOutcome};
use crate::error::{AppError, AppResult, OrInternal};
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
    if !owed.entries.is_empty() && state.cache.invalidate(&owed.entries).await.is_err() {
        return false;
    }
    if !owed.plain.is_empty() && state.kv.del(&owed.plain).await.is_err() {
        return false;
    }
    state.cache_health.delivered(&owed)
}

/// Keys marked or cleared in one cache call.
const KEYS_PER_CALL: usize = 1000;
/// Cache calls of one write in flight at the same time.
const CALLS_AT_ONCE: usize = 8;

/// Runs `f` in a transaction whose writes to cached entities reach the cache only once
/// committed: single-row writes through the entity hooks, bulk statements through
/// [`bulk`]. A write to a cached table that went around both rolls the transaction back.
pub async fn write<T, F>(state: &AppState, f: F) -> AppResult<T>
where
    T: Send,
    F: for<'c> FnOnce(&'c DatabaseTransaction) -> BoxFuture<'c, AppResult<T>> + Send,
{
    let db = &state.db;
    let (res, recorded) = scope::scope(async move {
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
    if let Some(bypass) = recorded.bypass {
        let _ = txn.rollback().await;
        return Err(AppError::internal(bypass));
    }
    // From here on nothing may be cancelled half-way (a request timeout drops the request's
    // future): a commit whose cache effects were never applied would leave a stale entry
    // once its mark expires. The task runs to completion even if nobody awaits it.
    let effects = Effects::of(recorded.changes, recorded.bulk);
    let state = state.clone();
    tokio::spawn(async move { commit_and_publish(&state, txn, effects).await })
        .await
        .or_internal("the commit task failed")??;
    Ok(out)
}

/// Declares, inside [`write`], that the bulk statements that follow write the rows of
/// `entity` with these ids: the statements may run, and the ids' entries are marked before
/// `COMMIT` and deleted after it (a bulk write leaves no entry to update, only ones to drop).
pub fn bulk(entity: &'static str, ids: impl IntoIterator<Item = String>) -> AppResult<()> {
    Ok(scope::declare_bulk(entity, ids)?)
}

/// What a committed write does to the cache: entries to store (hooked writes) and entries
/// to delete (bulk writes), each marked before `COMMIT`.
struct Effects {
    stores: Vec<(String, WriteOutcome)>,
    drops: Vec<String>,
}

impl Effects {
    fn of(changes: Vec<Change>, bulk: Vec<(&'static str, String)>) -> Self {
        let stores = changes
            .into_iter()
            .map(|c| {
                let payload = c
                    .row
                    .as_ref()
                    .map(|r| r.to_string())
                    .unwrap_or_else(|| TOMBSTONE.to_owned());
                (
                    entry_key(c.entity, &c.id),
                    WriteOutcome::Committed(Versioned {
                        version: c.version,
                        payload,
                    }),
                )
            })
            .collect();
        let drops = bulk.iter().map(|(e, id)| entry_key(e, id)).collect();
        Self { stores, drops }
    }

    fn keys(&self) -> impl Iterator<Item = &String> {
        self.stores.iter().map(|(k, _)| k).chain(&self.drops)
    }

    fn is_empty(&self) -> bool {
        self.stores.is_empty() && self.drops.is_empty()
    }
}

/// Runs cache calls, [`CALLS_AT_ONCE`] at a time; whether every one succeeded.
async fn all_ok<F>(calls: Vec<F>) -> bool
where
    F: std::future::Future<Output = bool>,
{
    futures::stream::iter(calls)
        .buffer_unordered(CALLS_AT_ONCE)
        .all(std::future::ready)
        .await
}

async fn commit_and_publish(
    state: &AppState,
    txn: DatabaseTransaction,
    effects: Effects,
) -> AppResult<()> {
    if effects.is_empty() {
        txn.commit().await?;
        return Ok(());
    }
    let keys: Vec<String> = effects.keys().cloned().collect();
    let cache = state.cache.as_ref();
    let marked = state.cache_health.usable() && {
        let ttl = mark_ttl(state);
        let marks = keys
            .chunks(KEYS_PER_CALL)
            .map(|part| async move {
                match cache.begin_write(part, ttl).await {
                    Ok(()) => true,
                    Err(e) => {
                        if e.is_refusal() {
                            // The server answered but refused the marks (a full Redis under
                            // `noeviction` refuses every write but DEL): remove the entries
                            // before COMMIT, so that no replica serves them after it. Fills
                            // need a lease, which a full server refuses too.
                            let _ = cache.invalidate(part).await;
                        }
                        false
                    }
                }
            })
            .collect();
        all_ok(marks).await
    };
    if !marked {
        // The marks could not all be set (or the cache is degraded): the cache still holds
        // whatever it had; it owes these keys an invalidation.
        state.cache_health.failed(keys.iter().cloned());
    }
    if let Err(e) = txn.commit().await {
        // A failed COMMIT does not prove nothing was committed (the connection may have
        // dropped after the server committed): the entries are removed while still marked,
        // so the next read goes to the database, then the marks are cleared.
        let cleared = marked && {
            let calls = keys
                .chunks(KEYS_PER_CALL)
                .map(|part| drop_entries(state, part))
                .collect();
            all_ok(calls).await
        };
        if !cleared {
            state.cache_health.failed(keys);
        }
        return Err(e.into());
    }
    if !marked {
        return Ok(());
    }
    let ttl = state.settings.cache_ttl();
    let stored = effects
        .stores
        .chunks(KEYS_PER_CALL)
        .map(|part| async move { cache.end_write(part, ttl).await.is_ok() })
        .collect();
    let dropped = effects
        .drops
        .chunks(KEYS_PER_CALL)
        .map(|part| drop_entries(state, part))
        .collect();
    if !(all_ok(stored).await && all_ok(dropped).await) {
        state.cache_health.failed(keys);
    }
    Ok(())
}

/// Deletes entries while they are still marked, then clears only this write's marks (a
/// concurrent writer's mark on the same key stays until that writer ends).
async fn drop_entries(state: &AppState, keys: &[String]) -> bool {
    let cache = state.cache.as_ref();
    let unmark: Vec<(String, WriteOutcome)> = keys
        .iter()
        .map(|k| (k.clone(), WriteOutcome::Aborted))
        .collect();
    cache.invalidate(keys).await.is_ok()
        && cache
            .end_write(&unmark, state.settings.cache_ttl())
            .await
            .is_ok()
}

/// A cache lookup's answer for one id.
#[derive(Debug, Clone, PartialEq)]
pub enum Cached<T> {
    /// The entry holds this row.
    Row(T),
    /// The entry says the row is gone.
    Gone,
    /// No usable entry: ask the database.
    Miss,
}

/// The lease a lookup took on its misses; only a fill holding it may store.
#[derive(Debug, Clone)]
pub struct Lease(Option<String>);

/// A lease no other lookup holds: this instance's random prefix and a counter (leases need
/// to be distinct, not secret).
fn new_lease() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::OnceLock;
    static PREFIX: OnceLock<String> = OnceLock::new();
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let prefix = PREFIX.get_or_init(|| crate::crypto::random_token(9));
    format!("{prefix}{:x}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// Reads the entries of `ids` in one round trip, taking a lease on every miss; every id is a
/// miss (and nothing may be filled) when the cache is degraded or fails. An entry that does
/// not decode as a `T` counts as a miss.
pub async fn read_many<T: serde::de::DeserializeOwned>(
    state: &AppState,
    entity: &'static str,
    ids: &[String],
) -> (Vec<Cached<T>>, Lease) {
    let misses = || ((0..ids.len()).map(|_| Cached::Miss).collect(), Lease(None));
    if !state.cache_health.usable() {
        return misses();
    }
    let keys: Vec<String> = ids.iter().map(|id| entry_key(entity, id)).collect();
    let lease = new_lease();
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
    let (mut hit, mut missed) = (0u64, 0u64);
    let cached = entries
        .into_iter()
        .map(|e| match e {
            Some(v) if v.payload == TOMBSTONE => {
                hit += 1;
                Cached::Gone
            }
            Some(v) => match serde_json::from_str(&v.payload) {
                Ok(row) => {
                    hit += 1;
                    Cached::Row(row)
                }
                Err(_) => {
                    missed += 1;
                    Cached::Miss
                }
            },
            None => {
                missed += 1;
                Cached::Miss
            }
        })
        .collect();
    let m = &state.metrics;
    if hit > 0 {
        m.cache_hits.with_label_values(&[entity]).inc_by(hit);
    }
    if missed > 0 {
        m.cache_misses.with_label_values(&[entity]).inc_by(missed);
    }
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
