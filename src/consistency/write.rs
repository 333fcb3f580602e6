//! The write path: a transaction whose changes to cached entities are marked in the cache
//! before `COMMIT`, and stored (or dropped) and unmarked after it.

use super::Context;
use entity::scope::write::{self as scope, Change};
use futures::future::BoxFuture;
use futures::StreamExt;
use sea_orm::sqlx::Postgres;
use sea_orm::{DatabaseTransaction, DbErr, TransactionTrait};

use super::{collection_key, entry_key, mark_ttl, refused, TOMBSTONE};
use crate::backends::cache::{Versioned, WriteOutcome};
use crate::backends::sql::sqlx_error;
use crate::config::Consistency;
use crate::error::{AppError, AppResult, OrInternal};

/// Keys marked or cleared in one cache call.
pub(super) const KEYS_PER_CALL: usize = 1000;
/// Cache calls of one write in flight at the same time.
pub(super) const CALLS_AT_ONCE: usize = 8;

/// Runs `f` in a transaction whose writes to cached entities reach the cache only once
/// committed: single-row writes through the entity hooks, bulk statements through
/// [`bulk`]. A write to a cached table that went around both rolls the transaction back.
pub async fn write<T, F>(state: &impl Context, f: F) -> AppResult<T>
where
    T: Send,
    F: for<'c> FnOnce(&'c DatabaseTransaction) -> BoxFuture<'c, AppResult<T>> + Send,
{
    let db = &state.db();
    // Held until the commit is done (or the transaction rolled back). `f` must not start
    // another write: on SQLite it would wait for this one.
    let gate = queue(state).await;
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
    let effects = CacheEffects::of(recorded.changes, recorded.bulk, &recorded.collections);
    let state = state.clone();
    tokio::spawn(async move {
        let committed = commit_and_publish(&state, txn, effects).await;
        drop(gate);
        committed
    })
    .await
    .or_internal("the commit task failed")??;
    Ok(out)
}

/// Waits for the database's write gate where it has one (SQLite), so that writers queue in
/// order here rather than in the database's busy handler; held until the write is done.
async fn queue(state: &impl Context) -> Option<tokio::sync::OwnedMutexGuard<()>> {
    match state.write_gate() {
        Some(gate) => Some(gate.clone().lock_owned().await),
        None => None,
    }
}

/// A write that is a single statement whose cached keys are known before it runs (`keys`:
/// its entries and collections): they are marked first, then `f` runs its statement on its
/// own, committing as it ends (no `BEGIN`, no `COMMIT`: two database round trips fewer than
/// [`write`]), then the entries are stored and unmarked. The order the rule needs is the
/// same: every key marked before the row changes in the database, stored after. The answer
/// goes out as soon as the statement succeeded, before the entries are stored: until they are,
/// each key is still marked, so every read that starts after the answer goes to the database
/// and sees the write on every replica (as a bulk write's answer, `write_copy`). A statement
/// that fails may still have committed (a lost reply), so its keys are then deleted while
/// still marked, as after a failed `COMMIT`, before the error is answered. A key the
/// statement changed that `keys` does not name is a bug in the caller: it is owed a
/// deletion, and the write fails.
pub async fn write_single<T, F>(state: &impl Context, keys: Vec<String>, f: F) -> AppResult<T>
where
    T: Send + 'static,
    F: for<'c> FnOnce(&'c crate::backends::sql_direct::Direct) -> BoxFuture<'c, AppResult<T>>
        + Send
        + 'static,
{
    let state = state.clone();
    let (answer, answered) = tokio::sync::oneshot::channel();
    // Runs to completion even if the request is cancelled, like `write`'s commit.
    tokio::spawn(async move {
        let begun = begin(&state, &keys).await;
        if !may_commit(&state, &keys, begun).await {
            let _ = answer.send(Err(refused()));
            return;
        }
        let db = state.direct().clone();
        // On SQLite the statement queues behind the other writes.
        let gate = queue(&state).await;
        let (res, recorded) = scope::scope(f(&db)).await;
        drop(gate);
        let out = match res {
            Ok(out) if recorded.bypass.is_none() => out,
            Ok(_) | Err(_) => {
                after_failed_commit(&state, keys, begun).await;
                let _ = answer.send(match (res, recorded.bypass) {
                    (Err(e), _) => Err(e),
                    (Ok(_), bypass) => Err(AppError::internal(bypass.unwrap_or_default())),
                });
                return;
            }
        };
        let effects = CacheEffects::of(recorded.changes, recorded.bulk, &recorded.collections);
        let unmarked: Vec<String> = effects
            .keys
            .iter()
            .filter(|k| !keys.contains(k))
            .cloned()
            .collect();
        if !unmarked.is_empty() {
            tracing::error!(
                ?unmarked,
                "a single-statement write changed keys it did not mark"
            );
            state.health().failed(unmarked);
            after_failed_commit(&state, keys, begun).await;
            let _ = answer.send(Err(AppError::internal(
                "a write changed keys it did not mark",
            )));
            return;
        }
        // Every key is still marked (or, from a refusing server, deleted and unfillable).
        let _ = answer.send(Ok(out));
        // Lets the request write its answer before this task builds and sends the end of the
        // write: on a runtime with one worker it would otherwise go first (the woken request
        // waits for this task to reach an `await`), a syscall and a script's arguments added
        // to every write's latency.
        tokio::task::yield_now().await;
        // Marked but not changed (the row was not there): only the mark goes.
        let untouched: Vec<String> = keys
            .iter()
            .filter(|k| !effects.keys.contains(k))
            .cloned()
            .collect();
        let (_, ()) = futures::join!(
            publish(&state, effects, begun),
            unmark(&state, &untouched, begun)
        );
    });
    answered.await.or_internal("the write task failed")?
}

/// Clears the marks of a write that did not commit (its entries are still right), best
/// effort: marks that cannot be cleared expire.
pub(super) async fn unmark(state: &impl Context, keys: &[String], begun: Marking) {
    // Only a fully marked write knows every key holds its mark: a decrement of a key it did
    // not mark could clear another write's (see `begin`). Other marks expire.
    if state.health().fenced() || begun != Marking::Marked {
        return;
    }
    let cache = state.cache().as_ref();
    let ttl = state.settings().cache_ttl();
    let calls = keys
        .chunks(KEYS_PER_CALL)
        .map(|part| async move {
            let unmark: Vec<(String, WriteOutcome)> = part
                .iter()
                .map(|k| (k.clone(), WriteOutcome::Aborted))
                .collect();
            cache.end_write(&unmark, ttl).await.is_ok()
        })
        .collect();
    if !all_ok(calls).await {
        state.health().failed(std::iter::empty());
    }
}

/// A transaction [`commit_and_publish`] can end: sea-orm's, or the connection's own of a
/// [`write_copy`].
pub(super) trait Txn: Send + 'static {
    fn commit(self) -> BoxFuture<'static, Result<(), DbErr>>;
    fn rollback(self) -> BoxFuture<'static, Result<(), DbErr>>;
}

impl Txn for DatabaseTransaction {
    fn commit(self) -> BoxFuture<'static, Result<(), DbErr>> {
        Box::pin(DatabaseTransaction::commit(self))
    }
    fn rollback(self) -> BoxFuture<'static, Result<(), DbErr>> {
        Box::pin(DatabaseTransaction::rollback(self))
    }
}

impl Txn for sea_orm::sqlx::Transaction<'static, Postgres> {
    fn commit(self) -> BoxFuture<'static, Result<(), DbErr>> {
        Box::pin(async move {
            sea_orm::sqlx::Transaction::commit(self)
                .await
                .map_err(sqlx_error)
        })
    }
    fn rollback(self) -> BoxFuture<'static, Result<(), DbErr>> {
        Box::pin(async move {
            sea_orm::sqlx::Transaction::rollback(self)
                .await
                .map_err(sqlx_error)
        })
    }
}

/// Declares, inside [`write`], that the bulk statements that follow write the rows of
/// `entity` with these ids: the statements may run, and the ids' entries are marked before
/// `COMMIT` and deleted after it (a bulk write leaves no entry to update, only ones to drop).
pub fn bulk(entity: &'static str, ids: impl IntoIterator<Item = String>) -> AppResult<()> {
    Ok(scope::declare_bulk(entity, ids)?)
}

/// What a committed write does to the cache: entries to store (hooked writes) and entries
/// to delete (bulk writes, and the versions of the collections written), each marked before
/// `COMMIT`.
pub(super) struct CacheEffects {
    pub(super) stores: Vec<(String, WriteOutcome)>,
    /// Every key the write changes: the stores' first, then the bulk-written ones (dropped).
    pub(super) keys: Vec<String>,
    /// How many of the last `keys` were marked already, while the transaction ran, and how
    /// far that got.
    pub(super) premarked: Option<(usize, Marking)>,
}

impl CacheEffects {
    pub(super) fn of(
        changes: Vec<Change>,
        bulk: Vec<(&'static str, String)>,
        collections: &[&'static str],
    ) -> Self {
        let stores: Vec<(String, WriteOutcome)> = changes
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
        let keys = stores
            .iter()
            .map(|(k, _)| k.clone())
            .chain(bulk.into_iter().map(|(e, id)| entry_key(e, &id)))
            .chain(collections.iter().map(|t| collection_key(t)))
            .collect();
        Self {
            stores,
            keys,
            premarked: None,
        }
    }

    /// Entries to store only.
    pub(super) fn stores(stores: Vec<(String, WriteOutcome)>) -> Self {
        let keys = stores.iter().map(|(k, _)| k.clone()).collect();
        Self {
            stores,
            keys,
            premarked: None,
        }
    }

    /// Adds bulk-written keys that [`begin`] has marked already (or tried to).
    pub(super) fn premarked(mut self, keys: Vec<String>, begun: Marking) -> Self {
        let n = keys.len();
        self.keys.extend(keys);
        self.premarked = Some((n, begun));
        self
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

/// How far the invalidation of a write's keys got before `COMMIT` (in order of worsening).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Marking {
    /// Every key is marked: after `COMMIT` the new entries are stored and the marks cleared.
    Marked,
    /// Every key is marked or, where a server that answered refused the marks (a full Redis),
    /// its entry deleted: no replica can read an older entry, but the keys are owed.
    Invalidated,
    /// The cache could not be told of some key (unreachable, or degraded and `available`).
    Unreached,
}

/// Marks `keys` before `COMMIT`. An instance that found the cache away (not merely
/// refusing writes, as a full Redis does) does not try: under `available` the
/// write goes to the database alone, under `strict` it is refused at once (a paused Redis
/// would otherwise hold every refusal for a command timeout). The health worker probes
/// every 100 ms and leaves degraded mode once every connection answers, so writes are
/// accepted again within a probe of the cache coming back.
pub(super) async fn begin(state: &impl Context, keys: &[String]) -> Marking {
    if state.health().away() {
        return Marking::Unreached;
    }
    let cache = state.cache().as_ref();
    let ttl = mark_ttl(state);
    let calls: Vec<_> = keys
        .chunks(KEYS_PER_CALL)
        .map(|part| async move {
            let marking = match cache.begin_write(part, ttl).await {
                Ok(()) => Marking::Marked,
                Err(e) if e.is_refusal() => {
                    // The server answered but refused the marks (a full Redis under `noeviction`
                    // refuses every write but DEL): remove the entries before COMMIT, so that no
                    // replica serves them after it. Fills need a lease, which a full server
                    // refuses too.
                    if cache.invalidate(part).await.is_ok() {
                        Marking::Invalidated
                    } else {
                        Marking::Unreached
                    }
                }
                Err(_) => Marking::Unreached,
            };
            (part, marking)
        })
        .collect();
    let parts: Vec<(&[String], Marking)> = futures::stream::iter(calls)
        .buffer_unordered(CALLS_AT_ONCE)
        .collect()
        .await;
    let worst = parts
        .iter()
        .map(|(_, m)| *m)
        .max()
        .unwrap_or(Marking::Marked);
    if worst == Marking::Unreached && state.settings().consistency == Consistency::Strict {
        // The write will be refused: clear the marks of the parts known to be set, and only
        // those. A part that failed may or may not have been marked (a reply lost to a
        // timeout): a decrement there could clear a mark another write holds (one cut off
        // between `COMMIT` and `end_write`, whose stale entry the mark hides), so it is left
        // to expire; until then its keys are read from the database.
        let marked: Vec<(String, WriteOutcome)> = parts
            .iter()
            .filter(|(_, m)| *m == Marking::Marked)
            .flat_map(|(part, _)| part.iter())
            .map(|k| (k.clone(), WriteOutcome::Aborted))
            .collect();
        if !marked.is_empty() {
            let state = state.clone();
            tokio::spawn(async move {
                let cache = state.cache().as_ref();
                let ttl = state.settings().cache_ttl();
                let calls = marked
                    .chunks(KEYS_PER_CALL)
                    .map(|part| async move { cache.end_write(part, ttl).await.is_ok() })
                    .collect();
                all_ok(calls).await;
            });
        }
    }
    worst
}

/// Whether a write that [`begin`] left at `begun` may commit; a refused one has cleared
/// whatever marks it set (best effort: they expire otherwise).
pub(super) async fn may_commit(state: &impl Context, keys: &[String], begun: Marking) -> bool {
    if begun != Marking::Unreached {
        return true;
    }
    if state.health().fenced() {
        // Other replicas read another namespace now: nothing this instance does reaches them.
        return false;
    }
    // The cache is away, or was when this instance last tried.
    state.health().failed(std::iter::empty());
    match state.settings().consistency {
        Consistency::Available => {
            // The write goes ahead from the database alone; the cache still holds whatever it
            // had and owes these keys a deletion.
            state.health().failed(keys.iter().cloned());
            true
        }
        // Refused: `begin` has cleared the marks it knows it set.
        Consistency::Strict => false,
    }
}

/// After `COMMIT`: store the new entries, drop the bulk-written ones and clear the marks;
/// whatever could not be delivered is owed.
pub(super) async fn publish(state: &impl Context, effects: CacheEffects, begun: Marking) {
    let keys = effects.keys.clone();
    if !store_and_unmark(state, effects, begun).await {
        state.changed(&keys);
    }
}

/// Whether the write's change event was published with its end (else the caller does).
async fn store_and_unmark(state: &impl Context, effects: CacheEffects, begun: Marking) -> bool {
    match begun {
        Marking::Marked => {}
        // Entries were deleted by hand (a refusing server): delete them again once it takes
        // writes, in case a fill raced the deletion.
        Marking::Invalidated => {
            state.health().owe(effects.keys);
            return false;
        }
        // Never marked (`available`): the keys are owed.
        Marking::Unreached => {
            state.health().failed(effects.keys);
            return false;
        }
    }
    let cache = state.cache().as_ref();
    let ttl = state.settings().cache_ttl();
    // The new entries and the dropped ones (a bulk write's, the collections') in one call.
    let CacheEffects { stores, keys, .. } = effects;
    let stored = stores.len();
    let ends: Vec<(String, WriteOutcome)> = stores
        .into_iter()
        .chain(
            keys[stored..]
                .iter()
                .map(|k| (k.clone(), WriteOutcome::Dropped)),
        )
        .collect();
    if ends.len() <= KEYS_PER_CALL {
        // One call: the change event goes with it where the cache tier can publish it.
        if let Some(announcement) = state.change_announcement(&keys) {
            return match cache.end_write_announced(&ends, ttl, &announcement).await {
                Ok(announced) => announced,
                Err(_) => {
                    state.health().failed(keys);
                    false
                }
            };
        }
    }
    let calls = ends
        .chunks(KEYS_PER_CALL)
        .map(|part| async move { cache.end_write(part, ttl).await.is_ok() })
        .collect();
    if !all_ok(calls).await {
        state.health().failed(keys);
    }
    false
}

/// A failed `COMMIT` does not prove nothing was committed (the connection may have dropped
/// after the server committed): the entries are removed while still marked, so the next read
/// goes to the database, then the marks are cleared.
pub(super) async fn after_failed_commit(state: &impl Context, keys: Vec<String>, begun: Marking) {
    // It may have committed: live queries over these keys check.
    state.changed(&keys);
    let cleared = begun == Marking::Marked && {
        let calls = keys
            .chunks(KEYS_PER_CALL)
            .map(|part| drop_entries(state, part))
            .collect();
        all_ok(calls).await
    };
    if !cleared {
        state.health().failed(keys);
    }
}

async fn commit_and_publish(
    state: &impl Context,
    txn: impl Txn,
    effects: CacheEffects,
) -> AppResult<()> {
    let (effects, begun) = commit(state, txn, effects).await?;
    publish(state, effects, begun).await;
    Ok(())
}

/// Marks whatever is not marked yet, then commits; what [`publish`] needs after it.
pub(super) async fn commit(
    state: &impl Context,
    txn: impl Txn,
    effects: CacheEffects,
) -> AppResult<(CacheEffects, Marking)> {
    if effects.keys.is_empty() {
        // A write that touches no cached entity is never held back.
        txn.commit().await?;
        return Ok((effects, Marking::Marked));
    }
    let (premarked, begun_early) = effects.premarked.unwrap_or((0, Marking::Marked));
    let later = &effects.keys[..effects.keys.len() - premarked];
    let begun = if later.is_empty() {
        begun_early
    } else {
        begun_early.max(begin(state, later).await)
    };
    if !may_commit(state, &effects.keys, begun).await {
        let _ = txn.rollback().await;
        if premarked > 0 && begun_early == Marking::Marked {
            // Marked while the statements ran; the later keys' marks `begin` cleared.
            let keys = effects.keys[effects.keys.len() - premarked..].to_vec();
            let state = state.clone();
            tokio::spawn(async move { unmark(&state, &keys, Marking::Marked).await });
        }
        return Err(refused());
    }
    if let Err(e) = txn.commit().await {
        after_failed_commit(state, effects.keys, begun).await;
        return Err(e.into());
    }
    Ok((effects, begun))
}

/// Deletes entries while they are still marked, then clears only this write's marks (a
/// concurrent writer's mark on the same key stays until that writer ends); one call.
pub(super) async fn drop_entries(state: &impl Context, keys: &[String]) -> bool {
    state.cache().drop_written(keys).await.is_ok()
}
