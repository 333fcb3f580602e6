//! The write path of cached entities, and their read-through helpers. The protocol is
//! described in `docs/cache-consistency.md`; in short:
//!
//! 1. the service writes inside a transaction opened by [`write`]; entity hooks record each
//!    row change in the task's write scope (`entity::write_through`), and a bulk statement
//!    (an import, a cascade) declares the ids it writes first ([`bulk`]); a statement that
//!    writes a cached table any other way makes [`write`] roll back. A bulk write that needs
//!    PostgreSQL's `COPY` (which sea-orm cannot run) gets the transaction's connection itself
//!    from [`write_copy`], which names the ids up front and marks them while it runs; the
//!    commit and everything after it is the same code as [`write`]'s;
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
use sea_orm::sqlx::{PgConnection, Postgres};
use sea_orm::{ConnectionTrait, DatabaseTransaction, DbErr, TransactionTrait};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::backends::cache::{Versioned, WriteOutcome};
use crate::backends::sql::sqlx_error;
use crate::config::Consistency;
use crate::error::{AppError, AppResult, OrInternal};
use crate::state::AppState;

/// How long a reader's lease on a missed key lives (a reader that takes longer than a
/// request may take cannot fill).
pub fn lease_ttl(state: &AppState) -> Duration {
    state.settings.request_timeout() + Duration::from_secs(5)
}

/// How long a write mark protects a key if its writer never clears it (a crash, or a writer
/// cut off from the cache between `COMMIT` and clearing it).
///
/// Under the `strict` policy the mark outlives any entry that was in the cache before the
/// write (entries live [`crate::config::Settings::cache_ttl`]): even if the writer never
/// reaches the cache again, no replica can read the older entry once the mark expires. The
/// price is that such a key is read from the database until then. Under `available` a mark
/// lives as long as a request can.
pub fn mark_ttl(state: &AppState) -> Duration {
    match state.settings.consistency {
        Consistency::Strict => state.settings.cache_ttl() + lease_ttl(state),
        Consistency::Available => lease_ttl(state),
    }
}

/// The error of a write refused under the `strict` policy.
pub fn refused() -> AppError {
    AppError::Unavailable(
        "the cache tier cannot be reached, so other replicas could not be told of this write; \
         nothing was written, try again"
            .into(),
    )
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
        let mut probes: u64 = 0;
        loop {
            probes += 1;
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
            if probes.is_multiple_of(NAMESPACE_CHECK_EVERY) {
                check_namespace(&state).await;
            }
            if degraded {
                recover(&state).await;
            } else if state.cache.ping().await.is_err() {
                state.cache_health.failed(std::iter::empty());
            }
        }
    }
}

/// Every this many probes the health worker checks that the database's cache namespace is
/// still this instance's (every 2 s when healthy).
const NAMESPACE_CHECK_EVERY: u64 = 4;

/// Fences the instance when `arena cache-reset` gave its database a new namespace.
pub async fn check_namespace(state: &AppState) {
    if let Ok(current) = crate::backends::sql::cache_namespace(&state.db).await {
        if !state.cache_prefix.ends_with(&format!("{current}:")) {
            state.cache_health.fence();
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

/// The connection of a [`write_copy`] transaction, on PostgreSQL. Every statement goes
/// through [`PgBulk::statement`], which shows it to the write scope (as the server's sea-orm
/// connection shows its own, see `backends::sql::connect`) and counts it.
pub struct PgBulk<'c> {
    conn: &'c mut PgConnection,
    queries: prometheus::IntCounter,
}

impl PgBulk<'_> {
    /// The connection, to run `sql` on (`sqlx::query(sql)…`, `copy_in_raw(sql)`): a write to
    /// a cached table that the write does not declare makes [`write_copy`] roll back.
    pub fn statement(&mut self, sql: &str) -> &mut PgConnection {
        self.queries.inc();
        if let Some(bypass) = scope::observe_statement(sql) {
            tracing::error!("{bypass}");
        }
        &mut *self.conn
    }
}

/// A bulk write of the rows of `entity` with these `ids`, over the transaction's own
/// PostgreSQL connection (for `COPY … FROM STDIN`, which sea-orm cannot run). The same
/// protocol as [`write`]'s bulk statements: the entries of `ids` are marked before `COMMIT`
/// and deleted after it. Since the ids are known before `f` runs, they are marked *while*
/// it runs (the marks only turn reads of the entries into database reads and revoke their
/// leases, so setting them early is as safe as just before `COMMIT`); a write that fails
/// clears them again, leaving every entry as it was. `f` is handed the ids too, and may
/// declare more with [`bulk`].
/// It answers once `COMMIT` is done, with the entries still marked; dropping them and
/// clearing the marks follows in the same task. PostgreSQL only.
pub async fn write_copy<T, F>(
    state: &AppState,
    entity: &'static str,
    ids: Vec<String>,
    f: F,
) -> AppResult<T>
where
    T: Send + 'static,
    F: for<'c> FnOnce(PgBulk<'c>, &'c [String]) -> BoxFuture<'c, AppResult<T>> + Send,
{
    if state.db.get_database_backend() != sea_orm::DbBackend::Postgres {
        return Err(AppError::internal("write_copy runs on PostgreSQL only"));
    }
    let pool = state.db.get_postgres_connection_pool().clone();
    let queries = state
        .metrics
        .sql_queries
        .with_label_values(&[crate::metrics::caller()]);
    let keys: Vec<String> = ids.iter().map(|id| entry_key(entity, id)).collect();
    let ids = &ids;
    let (res, recorded) = scope::scope(async move {
        // The table may be written by bulk statements; the ids are marked here, not recorded.
        scope::declare_bulk(entity, std::iter::empty())?;
        let mut txn = pool.begin().await.map_err(sqlx_error)?;
        let marks = EarlyMarks::start(state, keys);
        match f(
            PgBulk {
                conn: &mut txn,
                queries,
            },
            ids,
        )
        .await
        {
            Ok(v) => Ok((txn, v, marks)),
            Err(e) => {
                let _ = txn.rollback().await;
                marks.abandon().await;
                Err(e)
            }
        }
    })
    .await;
    let (txn, out, marks) = res?;
    if let Some(bypass) = recorded.bypass {
        let _ = txn.rollback().await;
        marks.abandon().await;
        return Err(AppError::internal(bypass));
    }
    let effects = Effects::of(recorded.changes, recorded.bulk);
    let state = state.clone();
    // As in `write`: from here on the task runs to completion even if the request is
    // cancelled. It answers as soon as `COMMIT` is done: every entry the write changed is
    // still marked then, so any read that starts after the answer goes to the database and
    // sees the write, on every replica, until the task has dropped the entries and cleared
    // the marks (for 100 000 ids, a quarter of a second on Redis the client need not wait
    // for). An instance that stops waits for the task; one that dies leaves the marks to
    // expire (`mark_ttl`), as any writer cut off after `COMMIT` does.
    let (answer, committed) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        // A stopping instance waits for this task (`app::Application::run_until`).
        let _running = state.after_answers.start();
        let (keys, begun) = match marks.finish().await {
            Ok(m) => m,
            Err(e) => {
                let _ = txn.rollback().await;
                let _ = answer.send(Err(e));
                return;
            }
        };
        match commit(&state, txn, effects.premarked(keys, begun)).await {
            Ok((effects, begun)) => {
                let _ = answer.send(Ok(()));
                publish(&state, effects, begun).await;
            }
            Err(e) => {
                let _ = answer.send(Err(e));
            }
        }
    });
    committed.await.or_internal("the commit task failed")??;
    Ok(out)
}

/// The marks of a [`write_copy`], set by a task of their own while its statements run.
/// Dropped unfinished (the write failed, or its request was cancelled), they are cleared.
struct EarlyMarks {
    state: AppState,
    task: Option<JoinHandle<(Vec<String>, Begun)>>,
}

impl EarlyMarks {
    fn start(state: &AppState, keys: Vec<String>) -> Self {
        let marking = state.clone();
        let task = tokio::spawn(async move {
            let begun = begin(&marking, &keys).await;
            (keys, begun)
        });
        Self {
            state: state.clone(),
            task: Some(task),
        }
    }

    /// Waits until every key is marked (or the cache refused), for `COMMIT`.
    async fn finish(mut self) -> AppResult<(Vec<String>, Begun)> {
        let task = self.task.take().expect("an unfinished marking");
        task.await.or_internal("the marking task failed")
    }

    /// The write failed before `COMMIT`: nothing changed, so the marks are only cleared.
    async fn abandon(mut self) {
        if let Some(task) = self.task.take() {
            if let Ok((keys, begun)) = task.await {
                unmark(&self.state, &keys, begun).await;
            }
        }
    }
}

impl Drop for EarlyMarks {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            let state = self.state.clone();
            tokio::spawn(async move {
                if let Ok((keys, begun)) = task.await {
                    unmark(&state, &keys, begun).await;
                }
            });
        }
    }
}

/// Clears the marks of a write that did not commit (its entries are still right), best
/// effort: marks that cannot be cleared expire.
async fn unmark(state: &AppState, keys: &[String], begun: Begun) {
    if state.cache_health.fenced() || (begun == Begun::Unreached && !state.cache_health.usable()) {
        return;
    }
    let cache = state.cache.as_ref();
    let ttl = state.settings.cache_ttl();
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
        state.cache_health.failed(std::iter::empty());
    }
}

/// A transaction [`commit_and_publish`] can end: sea-orm's, or the connection's own of a
/// [`write_copy`].
trait Txn: Send + 'static {
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
/// to delete (bulk writes), each marked before `COMMIT`.
struct Effects {
    stores: Vec<(String, WriteOutcome)>,
    /// Every key the write changes: the stores' first, then the bulk-written ones (dropped).
    keys: Vec<String>,
    /// How many of the last `keys` were marked already, while the transaction ran, and how
    /// far that got.
    premarked: Option<(usize, Begun)>,
}

impl Effects {
    fn of(changes: Vec<Change>, bulk: Vec<(&'static str, String)>) -> Self {
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
            .collect();
        Self {
            stores,
            keys,
            premarked: None,
        }
    }

    /// Entries to store only.
    fn stores(stores: Vec<(String, WriteOutcome)>) -> Self {
        let keys = stores.iter().map(|(k, _)| k.clone()).collect();
        Self {
            stores,
            keys,
            premarked: None,
        }
    }

    /// Adds bulk-written keys that [`begin`] has marked already (or tried to).
    fn premarked(mut self, keys: Vec<String>, begun: Begun) -> Self {
        let n = keys.len();
        self.keys.extend(keys);
        self.premarked = Some((n, begun));
        self
    }

    /// The keys whose entries are deleted after `COMMIT`.
    fn drops(&self) -> &[String] {
        &self.keys[self.stores.len()..]
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
enum Begun {
    /// Every key is marked: after `COMMIT` the new entries are stored and the marks cleared.
    Marked,
    /// Every key is marked or, where a server that answered refused the marks (a full Redis),
    /// its entry deleted: no replica can read an older entry, but the keys are owed.
    Invalidated,
    /// The cache could not be told of some key (unreachable, or degraded and `available`).
    Unreached,
}

/// Marks `keys` before `COMMIT`. Under `available` a degraded instance does not try (the
/// write goes to the database alone); under `strict` it always tries, since the write may
/// only go ahead if the cache tier hears of it.
async fn begin(state: &AppState, keys: &[String]) -> Begun {
    if state.cache_health.fenced() {
        return Begun::Unreached;
    }
    if state.settings.consistency == Consistency::Available && !state.cache_health.usable() {
        return Begun::Unreached;
    }
    let cache = state.cache.as_ref();
    let ttl = mark_ttl(state);
    let calls: Vec<_> = keys
        .chunks(KEYS_PER_CALL)
        .map(|part| async move {
            match cache.begin_write(part, ttl).await {
                Ok(()) => Begun::Marked,
                Err(e) if e.is_refusal() => {
                    // The server answered but refused the marks (a full Redis under `noeviction`
                    // refuses every write but DEL): remove the entries before COMMIT, so that no
                    // replica serves them after it. Fills need a lease, which a full server
                    // refuses too.
                    if cache.invalidate(part).await.is_ok() {
                        Begun::Invalidated
                    } else {
                        Begun::Unreached
                    }
                }
                Err(_) => Begun::Unreached,
            }
        })
        .collect();
    let parts: Vec<Begun> = futures::stream::iter(calls)
        .buffer_unordered(CALLS_AT_ONCE)
        .collect()
        .await;
    if parts.contains(&Begun::Unreached) {
        Begun::Unreached
    } else if parts.contains(&Begun::Invalidated) {
        Begun::Invalidated
    } else {
        Begun::Marked
    }
}

/// Whether a write that [`begin`] left at `begun` may commit; a refused one has cleared
/// whatever marks it set (best effort: they expire otherwise).
async fn may_commit(state: &AppState, keys: &[String], begun: Begun) -> bool {
    if begun != Begun::Unreached {
        return true;
    }
    if state.cache_health.fenced() {
        // Other replicas read another namespace now: nothing this instance does reaches them.
        return false;
    }
    // The cache is away, or was when this instance last tried.
    state.cache_health.failed(std::iter::empty());
    match state.settings.consistency {
        Consistency::Available => {
            // The write goes ahead from the database alone; the cache still holds whatever it
            // had and owes these keys a deletion.
            state.cache_health.failed(keys.iter().cloned());
            true
        }
        Consistency::Strict => {
            let unmark: Vec<(String, WriteOutcome)> = keys
                .iter()
                .map(|k| (k.clone(), WriteOutcome::Aborted))
                .collect();
            let cache = state.cache.as_ref();
            let ttl = state.settings.cache_ttl();
            let calls = unmark
                .chunks(KEYS_PER_CALL)
                .map(|part| async move { cache.end_write(part, ttl).await.is_ok() })
                .collect();
            // Only chunks that were marked hold a mark; DECR of an absent one is harmless
            // (it is deleted at or below zero).
            all_ok(calls).await;
            false
        }
    }
}

/// After `COMMIT`: store the new entries, drop the bulk-written ones and clear the marks;
/// whatever could not be delivered is owed.
async fn publish(state: &AppState, effects: Effects, begun: Begun) {
    if begun != Begun::Marked {
        // Entries were deleted by hand (a refusing server) or never marked: the keys are owed.
        state.cache_health.failed(effects.keys);
        return;
    }
    let cache = state.cache.as_ref();
    let ttl = state.settings.cache_ttl();
    let delivered = {
        let stored = effects
            .stores
            .chunks(KEYS_PER_CALL)
            .map(|part| async move { cache.end_write(part, ttl).await.is_ok() })
            .collect();
        let dropped = effects
            .drops()
            .chunks(KEYS_PER_CALL)
            .map(|part| drop_entries(state, part))
            .collect();
        all_ok(stored).await && all_ok(dropped).await
    };
    if !delivered {
        state.cache_health.failed(effects.keys);
    }
}

/// A failed `COMMIT` does not prove nothing was committed (the connection may have dropped
/// after the server committed): the entries are removed while still marked, so the next read
/// goes to the database, then the marks are cleared.
async fn after_failed_commit(state: &AppState, keys: Vec<String>, begun: Begun) {
    let cleared = begun == Begun::Marked && {
        let calls = keys
            .chunks(KEYS_PER_CALL)
            .map(|part| drop_entries(state, part))
            .collect();
        all_ok(calls).await
    };
    if !cleared {
        state.cache_health.failed(keys);
    }
}

async fn commit_and_publish(state: &AppState, txn: impl Txn, effects: Effects) -> AppResult<()> {
    let (effects, begun) = commit(state, txn, effects).await?;
    publish(state, effects, begun).await;
    Ok(())
}

/// Marks whatever is not marked yet, then commits; what [`publish`] needs after it.
async fn commit(state: &AppState, txn: impl Txn, effects: Effects) -> AppResult<(Effects, Begun)> {
    if effects.keys.is_empty() {
        // A write that touches no cached entity is never held back.
        txn.commit().await?;
        return Ok((effects, Begun::Marked));
    }
    let (premarked, begun_early) = effects.premarked.unwrap_or((0, Begun::Marked));
    let later = &effects.keys[..effects.keys.len() - premarked];
    let begun = if later.is_empty() {
        begun_early
    } else {
        begun_early.max(begin(state, later).await)
    };
    if !may_commit(state, &effects.keys, begun).await {
        let _ = txn.rollback().await;
        return Err(refused());
    }
    if let Err(e) = txn.commit().await {
        after_failed_commit(state, effects.keys, begun).await;
        return Err(e.into());
    }
    Ok((effects, begun))
}

/// How a change whose truth lives outside SQL ended (see [`write_outside`]).
pub enum Outside<T> {
    /// Written: what to answer, and the entries to store in the cache.
    Written(T, Vec<(String, Versioned)>),
    /// Refused before anything was written: the cache is left as it was.
    Refused(AppError),
}

/// A change whose truth lives outside the SQL database (a document), written under the same
/// protocol as [`write`]: the entries of `keys` are marked, `commit` runs and decides, and
/// the entries it wrote are stored unless newer ones are there. Under `strict` the change is
/// refused, before `commit` runs, when the cache cannot be told of it. An error of `commit`
/// means it may have written (a lost reply): the entries are then deleted, as after a failed
/// `COMMIT`. Like [`write`], it runs to completion even if the request is cancelled.
pub async fn write_outside<T, F>(state: &AppState, keys: Vec<String>, commit: F) -> AppResult<T>
where
    T: Send + 'static,
    F: std::future::Future<Output = AppResult<Outside<T>>> + Send + 'static,
{
    let state = state.clone();
    tokio::spawn(async move {
        let begun = begin(&state, &keys).await;
        if !may_commit(&state, &keys, begun).await {
            return Err(refused());
        }
        let (out, entries) = match commit.await {
            Ok(Outside::Written(out, entries)) => (out, entries),
            Ok(Outside::Refused(e)) => {
                // Nothing changed: only this write's marks go.
                let unmark: Vec<(String, WriteOutcome)> = keys
                    .iter()
                    .map(|k| (k.clone(), WriteOutcome::Aborted))
                    .collect();
                if begun == Begun::Marked
                    && state
                        .cache
                        .end_write(&unmark, state.settings.cache_ttl())
                        .await
                        .is_err()
                {
                    state.cache_health.failed(std::iter::empty());
                }
                return Err(e);
            }
            Err(e) => {
                after_failed_commit(&state, keys, begun).await;
                return Err(e);
            }
        };
        // Every marked key is cleared: a key the change did not store is aborted.
        let mut stores: Vec<(String, WriteOutcome)> = entries
            .into_iter()
            .map(|(k, v)| (k, WriteOutcome::Committed(v)))
            .collect();
        for k in &keys {
            if !stores.iter().any(|(s, _)| s == k) {
                stores.push((k.clone(), WriteOutcome::Aborted));
            }
        }
        publish(&state, Effects::stores(stores), begun).await;
        Ok(out)
    })
    .await
    .or_internal("the write task failed")?
}

/// Deletes entries while they are still marked, then clears only this write's marks (a
/// concurrent writer's mark on the same key stays until that writer ends); one call.
async fn drop_entries(state: &AppState, keys: &[String]) -> bool {
    state.cache.drop_written(keys).await.is_ok()
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
    let keys: Vec<String> = ids.iter().map(|id| entry_key(entity, id)).collect();
    read_keys(state, entity, &keys).await
}

/// [`read_many`] of entries named by their whole keys; `entity` labels the metrics.
pub async fn read_keys<T: serde::de::DeserializeOwned>(
    state: &AppState,
    entity: &'static str,
    keys: &[String],
) -> (Vec<Cached<T>>, Lease) {
    let misses = || {
        crate::reads::taint();
        ((0..keys.len()).map(|_| Cached::Miss).collect(), Lease(None))
    };
    if !state.cache_health.usable() {
        return misses();
    }
    let lease = new_lease();
    let entries = match state
        .cache
        .leased_get_many(keys, &lease, lease_ttl(state))
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
        .zip(keys)
        .map(|(e, key)| match e {
            Some(v) if v.payload == TOMBSTONE => {
                hit += 1;
                crate::reads::record(key, v.version);
                Cached::Gone
            }
            Some(v) => match serde_json::from_str(&v.payload) {
                Ok(row) => {
                    hit += 1;
                    crate::reads::record(key, v.version);
                    Cached::Row(row)
                }
                Err(_) => {
                    missed += 1;
                    crate::reads::taint();
                    Cached::Miss
                }
            },
            None => {
                missed += 1;
                // Answered from the database: not a version the memo could check again.
                crate::reads::taint();
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
    let rows = rows
        .into_iter()
        .map(|(id, version, row)| (entry_key(entity, &id), version, row))
        .collect();
    fill_keys(state, lease, rows).await
}

/// [`fill_many`] of entries named by their whole keys.
pub async fn fill_keys(
    state: &AppState,
    lease: &Lease,
    rows: Vec<(String, i64, Option<serde_json::Value>)>,
) {
    let Some(lease) = &lease.0 else { return };
    if rows.is_empty() || !state.cache_health.usable() {
        return;
    }
    let entries: Vec<(String, Versioned)> = rows
        .into_iter()
        .map(|(key, version, row)| {
            (
                key,
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
