//! Whether the cache tier may be used now, and which keys it owes an invalidation.
//!
//! Any failed cache call turns the instance *degraded*: reads and writes go to the database
//! alone, and every key whose new state the cache could not receive is remembered. The
//! write path's health worker deletes the remembered keys once the cache answers again, and
//! only then are reads served from it (see `docs/cache-consistency.md`).
//!
//! An instance whose database was given a new cache namespace while it ran (`arena
//! cache-reset`) is *fenced*: it never uses the cache again and refuses writes to cached
//! entities, since the other replicas no longer read the namespace it would invalidate.

use super::Context;
use std::collections::HashMap;

use parking_lot::Mutex;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The cache tier's health as this instance knows it.
#[derive(Default)]
pub struct CacheHealth {
    inner: Mutex<HealthInner>,
}

#[derive(Default)]
struct HealthInner {
    degraded: bool,
    /// Degraded because a call found the cache away (not merely refusing, as a full Redis
    /// does): writes are then refused at once under `strict`, without waiting on it.
    away: bool,
    fenced: bool,
    /// Write-through entries owed a deletion, each with the number of the latest time it
    /// was owed: a key owed again while its deletion is on the way stays owed.
    pending: HashMap<String, u64>,
    /// Counts the times keys were owed.
    owings: u64,
}

impl HealthInner {
    /// Degraded until `owed` are deleted; each numbered with this owing.
    fn owe(&mut self, owed: impl IntoIterator<Item = String>) {
        self.degraded = true;
        self.owings += 1;
        let n = self.owings;
        for k in owed {
            self.pending.insert(k, n);
        }
    }
}

impl CacheHealth {
    /// Whether reads may use the cache now.
    pub fn usable(&self) -> bool {
        !self.inner.lock().degraded
    }

    /// The database's cache namespace is no longer this instance's: from now on it is
    /// degraded for good (a restart picks up the new namespace).
    pub fn fence(&self) {
        let mut h = self.inner.lock();
        if !h.fenced {
            tracing::error!(
                "the database was given a new cache namespace (arena cache-reset): this \
                 instance no longer uses the cache and refuses writes to cached entities; \
                 restart it"
            );
        }
        h.fenced = true;
        h.degraded = true;
    }

    /// Whether [`CacheHealth::fence`] was called.
    pub fn fenced(&self) -> bool {
        self.inner.lock().fenced
    }

    /// A cache call failed; `owed` are keys whose new state the cache did not receive.
    pub fn failed(&self, owed: impl IntoIterator<Item = String>) {
        let mut h = self.inner.lock();
        if !h.degraded {
            tracing::warn!("cache unreachable: serving from the database until it is back");
        }
        h.away = true;
        h.owe(owed);
    }

    /// The cache answered but refused `owed` their new state (a full Redis refusing marks,
    /// whose entries were deleted instead): reads keep off the cache until the deletion is
    /// delivered again, but writes still try it, since it answers.
    pub fn owe(&self, owed: impl IntoIterator<Item = String>) {
        self.inner.lock().owe(owed);
    }

    /// Whether the last failed call found the cache away (unreachable or timed out) and it
    /// has not answered since.
    pub fn away(&self) -> bool {
        let h = self.inner.lock();
        h.away || h.fenced
    }

    /// A read's cache call failed with `e`. A cache that is away turns the instance
    /// degraded; one that answered but refused (a full Redis refusing a lease or a fill) does
    /// not: the read goes to the database and nothing is owed.
    pub fn read_failed(&self, e: &crate::backends::cache::CacheError) {
        if !e.is_refusal() {
            self.failed(std::iter::empty());
        }
    }

    /// Whether the instance is in degraded mode (for tests and `/readyz`).
    pub fn degraded(&self) -> bool {
        self.inner.lock().degraded
    }

    /// The entries the cache is owed a deletion of.
    pub fn owed(&self) -> Owed {
        let h = self.inner.lock();
        let (entries, owings) = h.pending.iter().map(|(k, n)| (k.clone(), *n)).unzip();
        Owed { entries, owings }
    }

    /// `owed` was deleted from the cache; leaves degraded mode when nothing else is owed
    /// (keys owed meanwhile, including again, keep it degraded). Returns whether the cache
    /// is usable again.
    pub fn delivered(&self, owed: &Owed) -> bool {
        let mut h = self.inner.lock();
        // The cache answered the deletion.
        h.away = false;
        for (k, n) in owed.entries.iter().zip(&owed.owings) {
            if h.pending.get(k) == Some(n) {
                h.pending.remove(k);
            }
        }
        let keys = owed.entries.len();
        if h.fenced {
            return false;
        }
        if h.pending.is_empty() {
            if h.degraded {
                tracing::info!(invalidated = keys, "cache is back");
            }
            h.degraded = false;
            true
        } else {
            false
        }
    }
}

/// What the cache is owed, as [`CacheHealth::owed`] reports it.
#[derive(Debug, Clone, Default)]
pub struct Owed {
    /// Write-through entries.
    pub entries: Vec<String>,
    /// When each was last owed (see [`CacheHealth::failed`]).
    owings: Vec<u64>,
}

/// Background task: probes the cache, and once it answers again deletes every key it owes
/// an invalidation before letting reads use it.
pub async fn health_worker(state: impl Context, stop: CancellationToken) {
    {
        let mut probes: u64 = 0;
        loop {
            probes += 1;
            let degraded = state.health().degraded();
            let pause = if degraded {
                Duration::from_millis(100)
            } else {
                Duration::from_millis(500)
            };
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep(pause) => {}
            }
            if probes.is_multiple_of(NAMESPACE_CHECK_EVERY) {
                check_namespace(&state).await;
            }
            if degraded {
                recover(&state).await;
            } else if state.cache().ping().await.is_err() {
                state.health().failed(std::iter::empty());
            }
        }
    }
}

/// Every this many probes the health worker checks that the database's cache namespace is
/// still this instance's (every 2 s when healthy).
const NAMESPACE_CHECK_EVERY: u64 = 4;

/// Fences the instance when `arena cache-reset` gave its database a new namespace.
pub async fn check_namespace(state: &impl Context) {
    if let Ok(current) = crate::backends::sql::cache_namespace(state.db()).await {
        if !state.cache_prefix().ends_with(&format!("{current}:")) {
            state.health().fence();
        }
    }
}

/// One recovery attempt: delete the owed keys, then leave degraded mode if nothing new is owed.
pub async fn recover(state: &impl Context) -> bool {
    let owed = state.health().owed();
    if state.cache().ping().await.is_err() {
        return false;
    }
    if !owed.entries.is_empty() && state.cache().invalidate(&owed.entries).await.is_err() {
        return false;
    }
    state.health().delivered(&owed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_owed_again_while_its_deletion_is_on_the_way_stays_owed() {
        let h = CacheHealth::default();
        h.failed(["a".to_owned(), "b".to_owned()]);
        let sent = h.owed();
        // A write owes "a" again after the recovery read what was owed, before it finished.
        h.failed(["a".to_owned()]);
        assert!(!h.delivered(&sent), "still owed: a");
        assert!(h.degraded());
        let again = h.owed();
        assert_eq!(again.entries, vec!["a".to_owned()]);
        assert!(h.delivered(&again));
        assert!(!h.degraded());
    }
}
