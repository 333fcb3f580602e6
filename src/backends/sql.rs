//! The SQL tier: sea-orm over SQLite (embedded default) or PostgreSQL.

use std::time::Duration;

use entity::cache_namespace;
use migration::MigratorTrait;
use sea_orm::sea_query::{Expr, OnConflict};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectOptions, ConnectionTrait, Database, DatabaseBackend,
    DatabaseConnection, DatabaseTransaction, DbErr, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect, Set,
};

use crate::metrics::Metrics;

/// How long a statement waits for a pooled connection before it fails.
pub const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

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
        .acquire_timeout(ACQUIRE_TIMEOUT)
        // No ping before handing out a pooled connection: it cost a round trip per statement
        // (a quarter of a cold list's CPU). A connection the server closed fails its next
        // statement instead, which is answered as any database error, and is not reused.
        .test_before_acquire(false)
        .sqlx_logging(false);
    let mut db = Database::connect(opts).await?;
    if db.get_database_backend() == DatabaseBackend::Sqlite {
        // WAL lets readers run beside the one writer; it is a property of the file.
        db.execute_unprepared("PRAGMA journal_mode=WAL").await?;
    }
    let observer = Observer::new(metrics);
    db.set_metric_callback(move |info| observer.observe(&info.statement.sql));
    Ok(db)
}

/// What every statement run on a request's behalf is shown to, whichever connection runs it
/// (the pool's, or [`super::sql_direct::Direct`]'s).
#[derive(Clone)]
pub struct Observer {
    on_request: prometheus::IntCounter,
    in_background: prometheus::IntCounter,
}

impl Observer {
    /// Counting into `metrics.sql_queries`.
    pub fn new(metrics: &Metrics) -> Self {
        Self {
            on_request: metrics.sql_queries.with_label_values(&["request"]),
            in_background: metrics.sql_queries.with_label_values(&["background"]),
        }
    }

    /// Shows a statement that ran to the read and write scopes, and counts it.
    pub fn observe(&self, sql: &str) {
        // A statement makes the running operation's response depend on more than cache
        // entries, unless every table it names has a collection version the operation read
        // before it: otherwise it cannot be memoized.
        entity::scope::read::statement(sql);
        if crate::metrics::caller() == "background" {
            self.in_background.inc();
        } else {
            self.on_request.inc();
        }
        // Every statement is shown to the write scope: a write to a cached table that went
        // around the write path poisons the scope (the write path then rolls back), or, run
        // outside any write, is at least told of.
        if let Some(bypass) = entity::scope::write::observe_statement(sql) {
            tracing::error!("{bypass}");
        }
    }
}

/// A failure of a statement run on sqlx directly (`COPY`, which sea-orm cannot run), as
/// sea-orm reports its own: [`DbErr::sql_err`] tells its constraint violations apart.
pub fn sqlx_error(e: sea_orm::sqlx::Error) -> DbErr {
    DbErr::Exec(sea_orm::RuntimeErr::SqlxError(e))
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
            entity::scope::write::announce_row_lock(E::default().table_name());
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

/// Applies pending migrations and, on the first run, names the database's cache namespace;
/// returns the namespace. Replicas starting together agree on it: the first insert wins.
pub async fn migrate(db: &DatabaseConnection) -> Result<String, DbErr> {
    migration::Migrator::up(db, None).await?;
    let row = cache_namespace::ActiveModel {
        id: Set(cache_namespace::ROW),
        namespace: Set(new_namespace()),
        created_at: Set(chrono::Utc::now()),
    };
    cache_namespace::Entity::insert(row)
        .on_conflict(
            OnConflict::column(cache_namespace::Column::Id)
                .do_nothing()
                .to_owned(),
        )
        .do_nothing()
        .exec(db)
        .await?;
    cache_namespace(db).await
}

/// The database's cache namespace, as [`migrate`] or [`reset_cache_namespace`] wrote it.
pub async fn cache_namespace(db: &DatabaseConnection) -> Result<String, DbErr> {
    cache_namespace::Entity::find_by_id(cache_namespace::ROW)
        .one(db)
        .await?
        .map(|row| row.namespace)
        .ok_or_else(|| DbErr::RecordNotFound("the cache namespace row".into()))
}

/// Gives the database a fresh cache namespace (`arena cache-reset`); returns it. Nothing
/// cached under the old one is read again by an Arena started afterwards.
pub async fn reset_cache_namespace(db: &DatabaseConnection) -> Result<String, DbErr> {
    let namespace = new_namespace();
    cache_namespace::ActiveModel {
        id: Set(cache_namespace::ROW),
        namespace: Set(namespace.clone()),
        created_at: Set(chrono::Utc::now()),
    }
    .update(db)
    .await?;
    Ok(namespace)
}

/// 48 random bits, as 12 hex digits.
fn new_namespace() -> String {
    format!("{:012x}", rand::random::<u64>() & 0xffff_ffff_ffff)
}
