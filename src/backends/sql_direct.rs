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
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use sea_orm::sea_query::Values;
use sea_orm::sqlx::postgres::{PgConnectOptions, PgConnection};
use sea_orm::sqlx::ConnectOptions;
use sea_orm::{
    ConnectionTrait, DatabaseBackend, DatabaseConnection, DbErr, ExecResult, QueryResult,
    RuntimeErr, Statement,
};
use sea_query_binder::SqlxValues;

use super::sql::Observer;

/// A sea-orm connection whose PostgreSQL statements run on connections kept outside sqlx's
/// pool (see the module documentation); on any other database, the pool.
#[derive(Clone)]
pub struct Direct {
    pool: DatabaseConnection,
    own: Option<Arc<Own>>,
}

/// The connections kept, and how many may be open at once.
struct Own {
    options: PgConnectOptions,
    idle: Mutex<Vec<PgConnection>>,
    /// Open connections, idle or in use.
    open: AtomicUsize,
    max: usize,
    observer: Observer,
}

impl Direct {
    /// Statements of `pool`'s database; on PostgreSQL (`url`), on up to `max` connections of
    /// their own, beyond which a statement uses the pool (with `max` 0, always).
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
                open: AtomicUsize::new(0),
                max,
                observer,
            }))
        } else {
            None
        };
        Ok(Self { pool, own })
    }

    /// The pool, for what needs it (transactions).
    pub fn pool(&self) -> &DatabaseConnection {
        &self.pool
    }
}

/// A connection taken from [`Own`]; closed when dropped, given back by [`Taken::done`].
struct Taken<'a> {
    own: &'a Own,
    conn: Option<PgConnection>,
}

impl Taken<'_> {
    fn conn(&mut self) -> &mut PgConnection {
        self.conn.as_mut().expect("taken until done or dropped")
    }

    /// The statement completed: the connection is idle again.
    fn done(mut self) {
        if let Some(conn) = self.conn.take() {
            self.own.idle.lock().push(conn);
        }
    }
}

impl Drop for Taken<'_> {
    fn drop(&mut self) {
        if self.conn.take().is_some() {
            // Cancelled part-way, or failed: closed, not reused.
            self.own.open.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

impl Own {
    /// An idle connection, a new one, or `None` when `max` are open.
    async fn take(&self) -> Result<Option<Taken<'_>>, DbErr> {
        if let Some(conn) = self.idle.lock().pop() {
            return Ok(Some(Taken {
                own: self,
                conn: Some(conn),
            }));
        }
        if self
            .open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max).then_some(n + 1)
            })
            .is_err()
        {
            return Ok(None);
        }
        match self.options.connect().await {
            Ok(conn) => Ok(Some(Taken {
                own: self,
                conn: Some(conn),
            })),
            Err(e) => {
                self.open.fetch_sub(1, Ordering::AcqRel);
                Err(DbErr::Conn(RuntimeErr::SqlxError(e)))
            }
        }
    }
}

fn values(stmt: &Statement) -> SqlxValues {
    SqlxValues(stmt.values.clone().unwrap_or(Values(Vec::new())))
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
        let Some(mut taken) = own.take().await? else {
            return self.pool.execute(stmt).await;
        };
        let res = sea_orm::sqlx::query_with(&stmt.sql, values(&stmt))
            .execute(&mut *taken.conn())
            .await;
        own.observer.observe(&stmt.sql);
        let done = res.map_err(exec_err)?;
        taken.done();
        Ok(done.into())
    }

    async fn execute_unprepared(&self, sql: &str) -> Result<ExecResult, DbErr> {
        self.pool.execute_unprepared(sql).await
    }

    async fn query_one(&self, stmt: Statement) -> Result<Option<QueryResult>, DbErr> {
        let Some(own) = &self.own else {
            return self.pool.query_one(stmt).await;
        };
        let Some(mut taken) = own.take().await? else {
            return self.pool.query_one(stmt).await;
        };
        let res = sea_orm::sqlx::query_with(&stmt.sql, values(&stmt))
            .fetch_optional(&mut *taken.conn())
            .await;
        own.observer.observe(&stmt.sql);
        let row = res.map_err(query_err)?;
        taken.done();
        Ok(row.map(Into::into))
    }

    async fn query_all(&self, stmt: Statement) -> Result<Vec<QueryResult>, DbErr> {
        let Some(own) = &self.own else {
            return self.pool.query_all(stmt).await;
        };
        let Some(mut taken) = own.take().await? else {
            return self.pool.query_all(stmt).await;
        };
        let res = sea_orm::sqlx::query_with(&stmt.sql, values(&stmt))
            .fetch_all(&mut *taken.conn())
            .await;
        own.observer.observe(&stmt.sql);
        let rows = res.map_err(query_err)?;
        taken.done();
        Ok(rows.into_iter().map(Into::into).collect())
    }
}
