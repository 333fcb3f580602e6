//! Carries the cache effects of hooked writes out of their transaction.
//!
//! Entity hooks (`after_save`, `after_delete`) run inside the database transaction, before it
//! commits, so they must not touch the cache themselves: a rollback would leave a trace. They
//! [`record`] a [`Change`] in the *write scope* of the current task instead; the service that
//! opened the scope with [`scope`] applies the changes to the cache once the transaction has
//! committed, and drops them when it rolls back.
//!
//! A hooked write outside a scope is refused with a `DbErr`, so no write can bypass the
//! write-through by accident. The scope is a task-local, not a global: two Arena instances in
//! one process never see each other's changes.

use std::cell::RefCell;
use std::future::Future;

use sea_orm::DbErr;

/// One row write, as the cache needs to know it.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// The entity's cache namespace, e.g. `meal`.
    pub entity: &'static str,
    /// The row's id, as text.
    pub id: String,
    /// The row version after the write (strictly increasing per row).
    pub version: i64,
    /// The row after the write, or `None` when it is gone (deleted, soft or not).
    pub row: Option<serde_json::Value>,
    /// Further cache keys the write invalidates (e.g. a name → id pair).
    pub also_remove: Vec<String>,
}

tokio::task_local! {
    static WRITES: RefCell<Vec<Change>>;
}

/// Runs `fut` in a write scope and returns its output with every change recorded meanwhile,
/// in order.
pub async fn scope<F: Future>(fut: F) -> (F::Output, Vec<Change>) {
    WRITES
        .scope(RefCell::new(Vec::new()), async move {
            let out = fut.await;
            let changes = WRITES.with(|w| w.take());
            (out, changes)
        })
        .await
}

/// Whether the current task is inside a write scope.
pub fn in_scope() -> bool {
    WRITES.try_with(|_| ()).is_ok()
}

/// Records a change in the current write scope; an error outside any scope.
pub fn record(change: Change) -> Result<(), DbErr> {
    WRITES
        .try_with(|w| w.borrow_mut().push(change))
        .map_err(|_| {
            DbErr::Custom(
                "a cached entity was written outside a write-through scope; \
                 use the service's write path"
                    .into(),
            )
        })
}

/// Refuses the write up front when no scope is open.
pub fn require_scope(entity: &str) -> Result<(), DbErr> {
    if in_scope() {
        Ok(())
    } else {
        Err(DbErr::Custom(format!(
            "{entity} was written outside a write-through scope"
        )))
    }
}
