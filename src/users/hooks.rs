//! What other domains do when an account logs in, logs out or is deleted.
//!
//! Accounts are the floor the per-user domains stand on (the battle ring, specs, credentials,
//! user data, storage): they know users, users know none of them. A domain that keeps
//! something per user implements [`AccountHook`], and the schema (`graphql`) hands the set of
//! hooks to the users' resolvers; the users' service calls each at the right moment.

use std::sync::Arc;

use async_trait::async_trait;
use sea_orm::DatabaseTransaction;

use crate::error::AppResult;
use crate::state::AppState;

/// One domain's part in an account's life. Every method does nothing by default.
#[async_trait]
pub trait AccountHook: Send + Sync + 'static {
    /// The password was right; runs before the session is opened. An error fails the log in.
    async fn logged_in(&self, _state: &AppState, _user_id: i64) -> AppResult<()> {
        Ok(())
    }

    /// Runs before the session is revoked. An error fails the log out (nothing is revoked).
    async fn logging_out(&self, _state: &AppState, _user_id: i64) -> AppResult<()> {
        Ok(())
    }

    /// Inside the transaction that deletes the account: removes the user's rows, which
    /// commit or roll back with the account.
    async fn delete_rows(&self, _txn: &DatabaseTransaction, _user_id: i64) -> AppResult<()> {
        Ok(())
    }

    /// After the account is gone: removes what the user kept outside SQL. The account no
    /// longer exists and ids are never reused, so a failure is logged, never returned.
    async fn forget(&self, _state: &AppState, _user_id: i64) -> AppResult<()> {
        Ok(())
    }
}

/// Every domain's hook, in the order they run.
#[derive(Clone, Default)]
pub struct AccountHooks(Arc<Vec<Arc<dyn AccountHook>>>);

impl AccountHooks {
    /// The given hooks, run in this order.
    pub fn new(hooks: Vec<Arc<dyn AccountHook>>) -> Self {
        Self(Arc::new(hooks))
    }

    /// Each hook, in order.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<dyn AccountHook>> {
        self.0.iter()
    }
}
