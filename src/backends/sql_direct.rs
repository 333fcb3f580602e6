//! PostgreSQL connections kept outside sqlx's pool, for the statements on the request paths
//! that run most: a list's page, a nested list's level, `updateMeal`'s `UPDATE … RETURNING`.
//!
//! sqlx 0.8 pings PostgreSQL every time a pooled connection is given back (sqlx-core
//! `pool/connection.rs`, `return_to_pool`; not configurable), so every statement costs a second
//! round trip: the load bench's profiles put it at 5–8 % of a cold list's or a write's CPU.
//! A [`Direct`] connection is given back without one. It is kept only when its statement
//! completed: one dropped part-way (the request was cancelled) or that failed is closed, so no
//! connection goes back with a statement half-read. A connection the server closed fails its
//! next statement, which is answered as any database error and closes it, as the pool does
//! with `test_before_acquire(false)`.
//!
//! Statements are shown to the same observer as the pool's ([`super::sql::connect`]): the
//! write scope, the memo's purity check and the statement counter see every one.
//!
//! On SQLite (the embedded default) [`Direct`] is the pool itself.

use std::str::FromStr;
use std::sync::Arc;

use parking_lot::Mutex;
use sea_orm::sea_query::Values;
use sea_orm::sqlx::postgres::{PgConnectOptions, PgConnection, Postgres};
use sea_orm::sqlx::ConnectOptions;
use sea_orm::{
    ConnAcquireErr, ConnectionTrait, DatabaseBackend, DatabaseConnection, DbErr, ExecResult,
    QueryResult, RuntimeErr, Statement,
};
use sea_query_binder::SqlxValues;
use tokio::sync::{Semaphore, SemaphorePermit};

use super::sql::Observer;

/// How long a statement waits for a connection before it fails, as long as the pool's.
const ACQUIRE_TIMEOUT: std::time::Duration = super::sql::ACQUIRE_TIMEOUT;

/// A sea-orm connection whose PostgreSQL statements run on connections kept outside sqlx's
/// pool (see the module documentation); on any other database, the pool.
#[derive(Clone)]
pub struct Direct {
    pool: DatabaseConnection,
    own: Option<Arc<Own>>,
}

/// The connections kept, at most one per permit: a statement waits for a permit, then takes
/// an idle connection or opens one.
struct Own {
    options: PgConnectOptions,
    idle: Mutex<Vec<PgConnection>>,
    permits: Semaphore,
    observer: Observer,
}

impl Direct {
    /// Statements of `pool`'s database; on PostgreSQL (`url`), on up to `max` connections of
    /// their own, for which they wait when all are busy (with `max` 0, on the pool).
    pub fn new(
        pool: DatabaseConnection,
        url: &str,
        max: usize,
        observer: Observer,
    ) -> anyhow::Result<Self> {
        let own = if pool.get_database_backend() == DatabaseBackend::Postgres && max > 0 {
            Some(Arc::new(Own {
                options: PgConnectOptions::from_str(url)?.disable_statement_logging(),
                idle: Mutex::new(Vec::new()),
                permits: Semaphore::new(max),
                observer,
            }))
        } else {
            None
        };
        Ok(Self { pool, own })
    }
}

/// A connection taken from [`Own`]; closed when dropped, given back by [`Taken::finish`].
/// Its permit goes back either way (after the connection: a closed one is then gone).
struct Taken<'a> {
    own: &'a Own,
    conn: Option<PgConnection>,
    _permit: SemaphorePermit<'a>,
}

impl Taken<'_> {
    fn conn(&mut self) -> &mut PgConnection {
        self.conn.as_mut().expect("taken until done or dropped")
    }

    /// Ends the statement `sql`: it is shown to the observer, and the connection is idle
    /// again if it succeeded (closed otherwise, when `self` is dropped).
    fn finish<T>(
        mut self,
        sql: &str,
        res: Result<T, sea_orm::sqlx::Error>,
        err: fn(sea_orm::sqlx::Error) -> DbErr,
    ) -> Result<T, DbErr> {
        self.own.observer.observe(sql);
        let out = res.map_err(err)?;
        if let Some(conn) = self.conn.take() {
            self.own.idle.lock().push(conn);
        }
        Ok(out)
    }
}

// Dropped without `finish` (cancelled part-way, or failed), the connection is closed, not
// reused: `conn` is dropped with it.

impl Own {
    /// An idle connection, or a new one; waits while every permit is taken (at most
    /// [`ACQUIRE_TIMEOUT`], as the pool does).
    async fn take(&self) -> Result<Taken<'_>, DbErr> {
        let timeout = DbErr::ConnectionAcquire(ConnAcquireErr::Timeout);
        let permit = tokio::time::timeout(ACQUIRE_TIMEOUT, self.permits.acquire())
            .await
            .map_err(|_| timeout)?
            .map_err(|e| DbErr::Custom(e.to_string()))?;
        let idle = self.idle.lock().pop();
        let conn = match idle {
            Some(conn) => conn,
            None => self
                .options
                .connect()
                .await
                .map_err(|e| DbErr::Conn(RuntimeErr::SqlxError(e)))?,
        };
        Ok(Taken {
            own: self,
            conn: Some(conn),
            _permit: permit,
        })
    }
}

/// `stmt` as sqlx runs it, its values bound as sea-orm binds them.
fn query(stmt: &Statement) -> sea_orm::sqlx::query::Query<'_, Postgres, SqlxValues> {
    let values = SqlxValues(stmt.values.clone().unwrap_or(Values(Vec::new())));
    sea_orm::sqlx::query_with(&stmt.sql, values)
}

fn query_err(e: sea_orm::sqlx::Error) -> DbErr {
    DbErr::Query(RuntimeErr::SqlxError(e))
}

fn exec_err(e: sea_orm::sqlx::Error) -> DbErr {
    DbErr::Exec(RuntimeErr::SqlxError(e))
}

#[async_trait::async_trait]
impl ConnectionTrait for Direct {
    fn get_database_backend(&self) -> DatabaseBackend {
        self.pool.get_database_backend()
    }

    async fn execute(&self, stmt: Statement) -> Result<ExecResult, DbErr> {
        let Some(own) = &self.own else {
            return self.pool.execute(stmt).await;
        };
        let mut taken = own.take().await?;
        let res = query(&stmt).execute(&mut *taken.conn()).await;
        let done = taken.finish(&stmt.sql, res, exec_err)?;
        Ok(done.into())
    }

    async fn execute_unprepared(&self, sql: &str) -> Result<ExecResult, DbErr> {
        self.pool.execute_unprepared(sql).await
    }

    async fn query_one(&self, stmt: Statement) -> Result<Option<QueryResult>, DbErr> {
        let Some(own) = &self.own else {
            return self.pool.query_one(stmt).await;
        };
        let mut taken = own.take().await?;
        let res = query(&stmt).fetch_optional(&mut *taken.conn()).await;
        let row = taken.finish(&stmt.sql, res, query_err)?;
        Ok(row.map(Into::into))
    }

    async fn query_all(&self, stmt: Statement) -> Result<Vec<QueryResult>, DbErr> {
        let Some(own) = &self.own else {
            return self.pool.query_all(stmt).await;
        };
        let mut taken = own.take().await?;
        let res = query(&stmt).fetch_all(&mut *taken.conn()).await;
        let rows = taken.finish(&stmt.sql, res, query_err)?;
        Ok(rows.into_iter().map(Into::into).collect())
    }
}
