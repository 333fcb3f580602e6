//! Whether the cache tier may be used now, and which keys it owes an invalidation.
//!
//! Any failed cache call turns the instance *degraded*: reads and writes go to the database
//! alone, and every key whose new state the cache could not receive is remembered. The
//! write path's health worker deletes the remembered keys once the cache answers again, and
//! only then are reads served from it (see `docs/cache-consistency.md`).

use std::collections::HashSet;

use parking_lot::Mutex;

/// The cache tier's health as this instance knows it.
#[derive(Default)]
pub struct CacheHealth {
    inner: Mutex<HealthInner>,
}

#[derive(Default)]
struct HealthInner {
    degraded: bool,
    pending: HashSet<String>,
}

impl CacheHealth {
    /// Whether reads may use the cache now.
    pub fn usable(&self) -> bool {
        !self.inner.lock().degraded
    }

    /// A cache call failed; `owed` are keys whose new state the cache did not receive.
    pub fn failed(&self, owed: impl IntoIterator<Item = String>) {
        let mut h = self.inner.lock();
        if !h.degraded {
            tracing::warn!("cache unreachable: serving from the database until it is back");
        }
        h.degraded = true;
        h.pending.extend(owed);
    }

    /// Whether the instance is in degraded mode (for tests and `/readyz`).
    pub fn degraded(&self) -> bool {
        self.inner.lock().degraded
    }

    /// The keys the cache is owed an invalidation of.
    pub fn owed(&self) -> Vec<String> {
        self.inner.lock().pending.iter().cloned().collect()
    }

    /// `keys` were deleted from the cache; leaves degraded mode when nothing else is owed
    /// (keys owed meanwhile keep it degraded). Returns whether the cache is usable again.
    pub fn delivered(&self, keys: &[String]) -> bool {
        let mut h = self.inner.lock();
        for k in keys {
            h.pending.remove(k);
        }
        if h.pending.is_empty() {
            if h.degraded {
                tracing::info!(invalidated = keys.len(), "cache is back");
            }
            h.degraded = false;
            true
        } else {
            false
        }
    }
}
