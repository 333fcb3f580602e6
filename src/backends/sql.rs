//! The SQL tier: sea-orm over SQLite (embedded default) or PostgreSQL.

use std::time::Duration;

use sea_orm::sea_query::Expr;
use sea_orm::{
    ColumnTrait, ConnectOptions, ConnectionTrait, Database, DatabaseBackend, DatabaseConnection,
    DatabaseTransaction, DbErr, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
};

use crate::metrics::Metrics;

/// Connects, counting every statement in `metrics.sql_queries`.
pub async fn connect(
    url: &str,
    pool: u32,
    metrics: &Metrics,
) -> anyhow::Result<DatabaseConnection> {
    let mut opts = ConnectOptions::new(url.to_owned());
    opts.max_connections(pool)
        .min_connections(1)
        .connect_timeout(Duration::from_secs(10))
        .acquire_timeout(Duration::from_secs(10))
        .sqlx_logging(false);
    let mut db = Database::connect(opts).await?;
    if db.get_database_backend() == DatabaseBackend::Sqlite {
        // WAL lets readers run beside the one writer; it is a property of the file.
        db.execute_unprepared("PRAGMA journal_mode=WAL").await?;
    }
    let counter = metrics.sql_queries.clone();
    db.set_metric_callback(move |info| {
        counter.inc();
        // Every statement is shown to the write scope: a write to a cached table that went
        // around the write path poisons the scope (the write path then rolls back), or, run
        // outside any write, is at least told of.
        if let Some(bypass) = entity::write_through::observe_statement(&info.statement.sql) {
            tracing::error!("{bypass}");
        }
    });
    Ok(db)
}

/// `sqlite` or `postgres` (or `mysql`).
pub fn kind(db: &DatabaseConnection) -> &'static str {
    match db.get_database_backend() {
        DatabaseBackend::Sqlite => "sqlite",
        DatabaseBackend::Postgres => "postgres",
        DatabaseBackend::MySql => "mysql",
    }
}

/// One round trip to check the database answers.
pub async fn ping(db: &DatabaseConnection) -> Result<(), sea_orm::DbErr> {
    db.ping().await
}

/// Locks the rows of `E` whose key column `key` is in `ids`, for the rest of `txn`, and reads
/// them in key order (so that concurrent lockers of several rows cannot deadlock).
///
/// PostgreSQL (and MySQL): `SELECT … FOR UPDATE`. SQLite has no row locks: a no-op `UPDATE`
/// of the rows takes the database's write lock first, so the read below cannot be overtaken
/// by another writer; it changes no column, so it runs no hook. On SQLite a transaction that
/// reads before its first write can fail with "database is locked" when another writer got
/// in between, so a write path that may read first starts with this (even with no ids: the
/// write lock is taken all the same).
pub async fn lock_rows<E, V>(
    txn: &DatabaseTransaction,
    key: E::Column,
    ids: impl IntoIterator<Item = V>,
) -> Result<Vec<E::Model>, DbErr>
where
    E: EntityTrait,
    V: Into<sea_orm::Value>,
{
    let ids: Vec<sea_orm::Value> = ids.into_iter().map(Into::into).collect();
    let read = E::find().filter(key.is_in(ids.clone())).order_by_asc(key);
    match txn.get_database_backend() {
        DatabaseBackend::Sqlite => {
            entity::write_through::announce_row_lock(E::default().table_name());
            E::update_many()
                .col_expr(key, Expr::col(key).into())
                .filter(key.is_in(ids))
                .exec(txn)
                .await?;
            read.all(txn).await
        }
        _ => read.lock_exclusive().all(txn).await,
    }
}
