//! The write-through entries in process memory: an LRU of entries and read leases, and the
//! write marks beside it.

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use lru::LruCache;
use parking_lot::Mutex;

use super::{Expiring, SWEEP_EVERY};
use crate::backends::cache::{CacheResult, Versioned, VersionedCache, WriteOutcome};

/// What the LRU holds under a key: the entry, or a reader's lease on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Slot {
    Entry,
    Lease,
}

struct Store {
    /// Entries and leases: an evicted lease only means that its reader does not fill.
    lru: LruCache<(String, Slot), Expiring<String>>,
    /// Writes in flight per key, with the safety expiry of the newest mark.
    marks: HashMap<String, Expiring<i64>>,
    writes: u64,
}

impl Store {
    fn marked(&mut self, key: &str, now: Instant) -> bool {
        match self.marks.get(key) {
            Some(m) if m.value > 0 && m.live(now) => true,
            Some(_) => {
                self.marks.remove(key);
                false
            }
            None => false,
        }
    }

    fn entry(&mut self, key: &str, now: Instant) -> Option<Versioned> {
        let k = (key.to_owned(), Slot::Entry);
        match self.lru.get(&k) {
            Some(e) if e.live(now) => Versioned::decode(&e.value),
            Some(_) => {
                self.lru.pop(&k);
                None
            }
            None => None,
        }
    }

    /// The version of the live entry of `key`, without copying its payload.
    fn entry_version(&mut self, key: &str, now: Instant) -> Option<i64> {
        let k = (key.to_owned(), Slot::Entry);
        match self.lru.get(&k) {
            Some(e) if e.live(now) => Versioned::version_of(&e.value),
            _ => None,
        }
    }

    /// Stores `entry` unless the entry present is as new; returns whether it stored.
    fn put_if_newer(&mut self, key: &str, entry: &Versioned, ttl: Duration, now: Instant) -> bool {
        let k = (key.to_owned(), Slot::Entry);
        if let Some(cur) = self.lru.peek(&k).filter(|e| e.live(now)) {
            if Versioned::decode(&cur.value).is_some_and(|c| c.version >= entry.version) {
                return false;
            }
        }
        self.lru.put(
            k,
            Expiring {
                value: entry.encode(),
                expires_at: Some(now + ttl),
            },
        );
        true
    }

    fn wrote(&mut self, now: Instant) {
        self.writes += 1;
        if self.writes.is_multiple_of(SWEEP_EVERY) {
            self.marks.retain(|_, m| m.live(now));
        }
    }
}

/// The in-process versioned cache.
pub struct MemoryVersioned {
    store: Mutex<Store>,
}

impl MemoryVersioned {
    /// At most `capacity` entries and leases (at least 1); marks are never evicted.
    pub fn new(capacity: u64) -> Self {
        let cap = NonZeroUsize::new(capacity.max(1) as usize).unwrap_or(NonZeroUsize::MIN);
        Self {
            store: Mutex::new(Store {
                lru: LruCache::new(cap),
                marks: HashMap::new(),
                writes: 0,
            }),
        }
    }
}

#[async_trait]
impl VersionedCache for MemoryVersioned {
    fn kind(&self) -> &'static str {
        "memory"
    }

    async fn ping(&self) -> CacheResult<()> {
        Ok(())
    }

    async fn leased_get_many(
        &self,
        keys: &[String],
        lease: &str,
        lease_ttl: Duration,
    ) -> CacheResult<Vec<Option<Versioned>>> {
        let now = Instant::now();
        let mut s = self.store.lock();
        Ok(keys
            .iter()
            .map(|k| {
                if s.marked(k, now) {
                    return None;
                }
                let hit = s.entry(k, now);
                if hit.is_none() {
                    s.lru.put(
                        (k.clone(), Slot::Lease),
                        Expiring {
                            value: lease.to_owned(),
                            expires_at: Some(now + lease_ttl),
                        },
                    );
                }
                hit
            })
            .collect())
    }

    async fn entries(&self, keys: &[String]) -> CacheResult<Vec<Option<Versioned>>> {
        let now = Instant::now();
        let mut s = self.store.lock();
        Ok(keys
            .iter()
            .map(|k| {
                if s.marked(k, now) {
                    None
                } else {
                    s.entry(k, now)
                }
            })
            .collect())
    }

    async fn entry_versions(&self, keys: &[String]) -> CacheResult<Vec<Option<i64>>> {
        let now = Instant::now();
        let mut s = self.store.lock();
        Ok(keys
            .iter()
            .map(|k| {
                if s.marked(k, now) {
                    return None;
                }
                s.entry_version(k, now)
            })
            .collect())
    }

    fn still_at_now(&self, reads: &[(String, i64)]) -> Option<bool> {
        let now = Instant::now();
        let mut s = self.store.lock();
        Some(
            reads
                .iter()
                .all(|(k, v)| !s.marked(k, now) && s.entry_version(k, now) == Some(*v)),
        )
    }

    async fn leased_fill_many(
        &self,
        entries: &[(String, Versioned)],
        lease: &str,
        ttl: Duration,
    ) -> CacheResult<Vec<bool>> {
        let now = Instant::now();
        let mut s = self.store.lock();
        Ok(entries
            .iter()
            .map(|(key, entry)| {
                let lease_key = (key.clone(), Slot::Lease);
                let ours = s
                    .lru
                    .peek(&lease_key)
                    .filter(|e| e.live(now))
                    .is_some_and(|e| e.value == lease);
                if !ours {
                    return false;
                }
                s.lru.pop(&lease_key);
                !s.marked(key, now) && s.put_if_newer(key, entry, ttl, now)
            })
            .collect())
    }

    async fn begin_write(&self, keys: &[String], mark_ttl: Duration) -> CacheResult<()> {
        let now = Instant::now();
        let mut s = self.store.lock();
        for k in keys {
            s.lru.pop(&(k.clone(), Slot::Lease));
            let live = s.marked(k, now);
            let mark = s.marks.entry(k.clone()).or_insert(Expiring {
                value: 0,
                expires_at: None,
            });
            if !live {
                mark.value = 0;
            }
            mark.value += 1;
            mark.expires_at = Some(now + mark_ttl);
            s.wrote(now);
        }
        Ok(())
    }

    async fn end_write(&self, writes: &[(String, WriteOutcome)], ttl: Duration) -> CacheResult<()> {
        let now = Instant::now();
        let mut s = self.store.lock();
        for (k, outcome) in writes {
            if matches!(outcome, WriteOutcome::Dropped) {
                s.lru.pop(&(k.clone(), Slot::Entry));
            }
            if let Some(mark) = s.marks.get_mut(k) {
                mark.value -= 1;
                if mark.value <= 0 {
                    s.marks.remove(k);
                }
            }
            if let WriteOutcome::Committed(entry) = outcome {
                s.put_if_newer(k, entry, ttl, now);
            }
        }
        Ok(())
    }

    async fn invalidate(&self, keys: &[String]) -> CacheResult<()> {
        let mut s = self.store.lock();
        for k in keys {
            s.lru.pop(&(k.clone(), Slot::Entry));
            // A reader that missed before this deletion cannot fill its older row.
            s.lru.pop(&(k.clone(), Slot::Lease));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ver(version: i64) -> Versioned {
        Versioned {
            version,
            payload: "{}".into(),
        }
    }

    #[tokio::test]
    async fn only_capacity_entries_are_kept_and_marks_are_never_evicted() {
        let c = MemoryVersioned::new(2);
        let ttl = Duration::from_secs(60);
        c.begin_write(&["meal:99".into()], ttl).await.unwrap();
        for v in 1..=10 {
            let key = format!("meal:{v}");
            assert_eq!(
                c.leased_get_many(std::slice::from_ref(&key), "l", ttl)
                    .await
                    .unwrap(),
                vec![None]
            );
            assert_eq!(
                c.leased_fill_many(&[(key, ver(v))], "l", ttl)
                    .await
                    .unwrap(),
                vec![true]
            );
        }
        let keys: Vec<String> = (1..=10).map(|v| format!("meal:{v}")).collect();
        let hits = c.leased_get_many(&keys, "l2", ttl).await.unwrap();
        assert!(hits.iter().flatten().count() <= 2);
        // The mark of meal:99 survived every eviction: its key still reads as a miss that
        // cannot be filled.
        let miss = c
            .leased_get_many(&["meal:99".into()], "l3", ttl)
            .await
            .unwrap();
        assert_eq!(miss, vec![None]);
        let filled = c
            .leased_fill_many(&[("meal:99".into(), ver(1))], "l3", ttl)
            .await
            .unwrap();
        assert_eq!(filled, vec![false]);
    }
}
