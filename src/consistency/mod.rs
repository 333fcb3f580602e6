//! The write path of cached entities, and their read-through helpers. The protocol is
//! described in `docs/cache-consistency.md`; in short:
//!
//! 1. the service writes inside a transaction opened by [`write`]; entity hooks record each
//!    row change in the task's write scope (`entity::scope::write`), and a bulk statement
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
//!
//! Where each step lives:
//!
//! | step | file |
//! |---|---|
//! | transaction, marks before `COMMIT`, commit, publish, end of write | [`write`] (`write.rs`) |
//! | bulk writes over PostgreSQL `COPY`, marked while they run | `bulk.rs` |
//! | writes whose truth lives outside SQL (documents, counters) | `outside.rs` |
//! | leased reads and fills | `leased.rs` |
//! | versions of collections (what lets lists be memoized) | `collections.rs` |
//! | versions of a user's own rows (what lets a viewer's answers be memoized) | `owned.rs` |
//! | the loaders' batching | `batch.rs` |
//! | the memo's version check | `versions.rs` |
//! | near caches and their leases | `near/` |
//! | health, owed invalidations, fencing | `health.rs` |
//!
//! The task-local records of what a request wrote and read live in the `entity` crate
//! (`entity::scope`), because sea-orm's hooks record into them and the backends report
//! unversioned reads to them.

mod batch;
mod bulk;
mod collections;
mod health;
mod leased;
pub mod near;
mod outside;
mod owned;
mod versions;
mod write;

use std::sync::Arc;
use std::time::Duration;

use sea_orm::DatabaseConnection;
use tokio_util::task::TaskTracker;

use crate::backends::cache::VersionedCache;
use crate::config::{Consistency, Settings};
use crate::error::AppError;
use crate::metrics::Metrics;

pub use batch::BatchLoader;
pub use bulk::{write_copy, PgBulk};
pub use collections::{collection_key, reading};
pub use health::{check_namespace, health_worker, recover, CacheHealth, Owed};
pub use leased::{fill_keys, fill_many, read_keys, read_many, Cached, Lease};
pub use outside::{write_outside, OutsideOutcome};
pub use owned::{reading_owned, viewer_key, write_owned};
pub use versions::Versions;
pub use write::{bulk, write, write_single};

/// What the consistency core needs of the running instance; `state::AppState` provides it.
/// The core sits below the state it is handed, so it can only reach these.
pub trait Context: Clone + Send + Sync + 'static {
    /// The instance's settings (policy, entry and request lifetimes).
    fn settings(&self) -> &Settings;
    /// The SQL database.
    fn db(&self) -> &DatabaseConnection;
    /// The same database for single statements outside a transaction (no ping on release).
    fn direct(&self) -> &crate::backends::sql_direct::Direct;
    /// The cache tier's write-through entries.
    fn cache(&self) -> &Arc<dyn VersionedCache>;
    /// Whether the cache tier may be used, and what it is owed.
    fn health(&self) -> &CacheHealth;
    /// The instance's metrics.
    fn metrics(&self) -> &Metrics;
    /// What every cache key of this instance starts with (its namespace).
    fn cache_prefix(&self) -> &str;
    /// Work that goes on after its request was answered (a bulk write's cache effects),
    /// which a stopping instance waits for.
    fn deferred_effects(&self) -> &TaskTracker;
    /// Where the write path's transactions queue when the database lets one write at a time
    /// (SQLite); `None` where they run side by side.
    fn write_gate(&self) -> Option<&Arc<tokio::sync::Mutex<()>>> {
        None
    }
    /// Tells the live queries of every replica that the entries and collections `keys`
    /// changed, once the write that changed them committed (best effort: a listener that may
    /// have missed a message is told so by its bus and checks everything again).
    fn changed(&self, keys: &[String]);
    /// [`Self::changed`]'s message as the cache tier can publish it itself, in the call that
    /// ends the write (one round trip fewer); `None` when the event bus is not on it.
    fn change_announcement(
        &self,
        _keys: &[String],
    ) -> Option<crate::backends::cache::Announcement> {
        None
    }
}

/// How long a reader's lease on a missed key lives (a reader that takes longer than a
/// request may take cannot fill).
pub fn lease_ttl(state: &impl Context) -> Duration {
    state.settings().request_timeout() + Duration::from_secs(5)
}

/// How long a write mark protects a key if its writer never clears it (a crash, or a writer
/// cut off from the cache between `COMMIT` and clearing it).
///
/// Under the `strict` policy the mark outlives any entry that was in the cache before the
/// write (entries live [`crate::config::Settings::cache_ttl`]): even if the writer never
/// reaches the cache again, no replica can read the older entry once the mark expires. The
/// price is that such a key is read from the database until then. Under `available` a mark
/// lives as long as a request can.
pub fn mark_ttl(state: &impl Context) -> Duration {
    match state.settings().consistency {
        Consistency::Strict => state.settings().cache_ttl() + lease_ttl(state),
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
