//! The database's query plans.

use sea_orm::{ConnectionTrait, DatabaseBackend, Statement, TransactionTrait};

use super::TestApp;

/// Asserts that `sql` (literal values, no parameters) is planned as an index search: no
/// sequential scan on PostgreSQL (with sequential scans discouraged, as on a big table), no
/// table scan nor extra sort on SQLite.
pub async fn assert_indexed(app: &TestApp, sql: &str) {
    let txn = app.state.db.begin().await.unwrap();
    let backend = txn.get_database_backend();
    let explain = match backend {
        DatabaseBackend::Postgres => {
            txn.execute_unprepared("SET LOCAL enable_seqscan = off")
                .await
                .unwrap();
            format!("EXPLAIN {sql}")
        }
        _ => format!("EXPLAIN QUERY PLAN {sql}"),
    };
    let rows = txn
        .query_all(Statement::from_string(backend, explain))
        .await
        .unwrap();
    let plan: Vec<String> = rows
        .iter()
        .map(|r| match backend {
            DatabaseBackend::Postgres => r.try_get_by_index::<String>(0).unwrap(),
            _ => r.try_get::<String>("", "detail").unwrap(),
        })
        .collect();
    let plan = plan.join("\n");
    let bad = ["Seq Scan", "SCAN specs", "SCAN credentials", "TEMP B-TREE"];
    assert!(
        !bad.iter().any(|b| plan.contains(b)) && plan.to_lowercase().contains("index"),
        "not an index search: {sql}\n{plan}"
    );
    txn.rollback().await.unwrap();
}
