//! Bulk writes over the transaction's own PostgreSQL connection (`COPY`), whose ids are
//! known up front and marked while the statements run.

use super::Context;
use entity::scope::write as scope;
use futures::future::BoxFuture;
use sea_orm::sqlx::PgConnection;
use sea_orm::ConnectionTrait;
use tokio::task::JoinHandle;

use super::entry_key;
use super::write::{begin, commit, publish, unmark, CacheEffects, Marking};
use crate::backends::sql::sqlx_error;
use crate::error::{AppError, AppResult, OrInternal};

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
    state: &impl Context,
    entity: &'static str,
    ids: Vec<String>,
    f: F,
) -> AppResult<T>
where
    T: Send + 'static,
    F: for<'c> FnOnce(PgBulk<'c>, &'c [String]) -> BoxFuture<'c, AppResult<T>> + Send,
{
    if state.db().get_database_backend() != sea_orm::DbBackend::Postgres {
        return Err(AppError::internal("write_copy runs on PostgreSQL only"));
    }
    let pool = state.db().get_postgres_connection_pool().clone();
    let queries = state
        .metrics()
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
    let effects = CacheEffects::of(recorded.changes, recorded.bulk, &recorded.collections);
    let state = state.clone();
    // As in `write`: from here on the task runs to completion even if the request is
    // cancelled. It answers as soon as `COMMIT` is done: every entry the write changed is
    // still marked then, so any read that starts after the answer goes to the database and
    // sees the write, on every replica, until the task has dropped the entries and cleared
    // the marks (for 100 000 ids, a quarter of a second on Redis the client need not wait
    // for). An instance that stops waits for the task; one that dies leaves the marks to
    // expire (`mark_ttl`), as any writer cut off after `COMMIT` does.
    let (answer, committed) = tokio::sync::oneshot::channel();
    // A stopping instance waits for this task (`app::Application::run_until`).
    let tracker = state.deferred_effects().clone();
    tracker.spawn(async move {
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
struct EarlyMarks<C: Context> {
    state: C,
    task: Option<JoinHandle<(Vec<String>, Marking)>>,
}

impl<C: Context> EarlyMarks<C> {
    fn start(state: &C, keys: Vec<String>) -> Self {
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
    async fn finish(mut self) -> AppResult<(Vec<String>, Marking)> {
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

impl<C: Context> Drop for EarlyMarks<C> {
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
