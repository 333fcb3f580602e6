//! The embedded cache: an in-process LRU bounded by `ARENA_CACHE_CAPACITY` entries, with a
//! per-entry expiry. One mutex makes every method atomic, which is all the versioned-entry
//! protocol needs in a single process. Counters and sets are kept apart from the LRU so that
//! usage counts are never evicted.
//!
//! As the cache tier ([`MemoryCache::new`]) only cached rows and read leases are evicted;
//! plain values (`set`, `set_many`, `set_nx`: locks, battle rings, user data, staged imports)
//! are kept until they expire or are deleted, as on a Redis run with `noeviction`, so that
//! reading many meals can never drop a user's ring or free a lock someone holds. The
//! key-value storage's own instance ([`MemoryCache::evicting`]) evicts plain values too.

use std::collections::{HashMap, HashSet};
use std::num::NonZeroUsize;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use lru::LruCache;
use parking_lot::Mutex;

use super::{Cache, CacheResult, Versioned, WriteOutcome};

struct Entry {
    value: String,
    expires_at: Option<Instant>,
}

impl Entry {
    fn live(&self, now: Instant) -> bool {
        self.expires_at.is_none_or(|t| t > now)
    }
}

#[derive(Default)]
struct Counters {
    ints: HashMap<String, (i64, Option<Instant>)>,
    sets: HashMap<String, HashSet<String>>,
}

/// Plain values kept out of the LRU, with the number of writes since the last sweep.
#[derive(Default)]
struct Pinned {
    map: HashMap<String, Entry>,
    writes: u64,
}

/// Expired pinned values are swept every this many writes.
const SWEEP_EVERY: u64 = 1024;

impl Pinned {
    fn put(&mut self, key: String, entry: Entry, now: Instant) {
        self.map.insert(key, entry);
        self.writes += 1;
        if self.writes.is_multiple_of(SWEEP_EVERY) {
            self.map.retain(|_, e| e.live(now));
        }
    }

    fn read(&mut self, key: &str, now: Instant) -> Option<String> {
        match self.map.get(key) {
            Some(e) if e.live(now) => Some(e.value.clone()),
            Some(_) => {
                self.map.remove(key);
                None
            }
            None => None,
        }
    }
}

/// The in-process cache.
pub struct MemoryCache {
    prefix: String,
    lru: Mutex<LruCache<String, Entry>>,
    /// Plain values, when they are not to be evicted (the cache tier).
    pinned: Option<Mutex<Pinned>>,
    counters: Mutex<Counters>,
}

impl MemoryCache {
    /// The cache tier: at most `capacity` cached rows and leases (at least 1); plain values
    /// are never evicted.
    pub fn new(capacity: u64, prefix: &str) -> Self {
        Self::build(capacity, prefix, true)
    }

    /// A cache whose plain values are evicted least recently used first, at most `capacity`
    /// entries in all: the key-value storage's.
    pub fn evicting(capacity: u64, prefix: &str) -> Self {
        Self::build(capacity, prefix, false)
    }

    fn build(capacity: u64, prefix: &str, pin_plain_values: bool) -> Self {
        let cap = NonZeroUsize::new(capacity.max(1) as usize).unwrap_or(NonZeroUsize::MIN);
        Self {
            prefix: prefix.to_owned(),
            lru: Mutex::new(LruCache::new(cap)),
            pinned: pin_plain_values.then(|| Mutex::new(Pinned::default())),
            counters: Mutex::new(Counters::default()),
        }
    }

    /// Stores a plain value where it belongs.
    fn put_plain(&self, key: String, entry: Entry, now: Instant) {
        match &self.pinned {
            Some(p) => p.lock().put(key, entry, now),
            None => {
                self.lru.lock().put(key, entry);
            }
        }
    }

    /// A plain or cached value (LRU first, then the pinned values).
    fn read_any(&self, key: &str, now: Instant) -> Option<String> {
        let v = Self::read(&mut self.lru.lock(), key, now);
        v.or_else(|| self.pinned.as_ref().and_then(|p| p.lock().read(key, now)))
    }

    fn k(&self, key: &str) -> String {
        format!("{}{}", self.prefix, key)
    }

    fn mark(&self, key: &str) -> String {
        format!("{}{}:w", self.prefix, key)
    }

    fn lease(&self, key: &str) -> String {
        format!("{}{}:l", self.prefix, key)
    }

    fn read(lru: &mut LruCache<String, Entry>, key: &str, now: Instant) -> Option<String> {
        match lru.get(key) {
            Some(e) if e.live(now) => Some(e.value.clone()),
            Some(_) => {
                lru.pop(key);
                None
            }
            None => None,
        }
    }

    /// A live counter's value, as Redis would return an INCR'd key.
    fn counter(counters: &Counters, key: &str, now: Instant) -> Option<String> {
        counters
            .ints
            .get(key)
            .filter(|(_, exp)| exp.is_none_or(|t| t > now))
            .map(|(n, _)| n.to_string())
    }

    fn marked(counters: &mut Counters, mark: &str, now: Instant) -> bool {
        match counters.ints.get(mark) {
            Some((n, exp)) if *n > 0 && exp.is_none_or(|t| t > now) => true,
            Some(_) => {
                counters.ints.remove(mark);
                false
            }
            None => false,
        }
    }

    fn put_if_newer(
        lru: &mut LruCache<String, Entry>,
        key: String,
        entry: &Versioned,
        ttl: Duration,
        now: Instant,
    ) -> bool {
        if let Some(cur) = lru.peek(&key).filter(|e| e.live(now)) {
            if Versioned::decode(&cur.value).is_some_and(|c| c.version >= entry.version) {
                return false;
            }
        }
        lru.put(
            key,
            Entry {
                value: entry.encode(),
                expires_at: Some(now + ttl),
            },
        );
        true
    }
}

#[async_trait]
impl Cache for MemoryCache {
    fn kind(&self) -> &'static str {
        "memory"
    }

    async fn ping(&self) -> CacheResult<()> {
        Ok(())
    }

    async fn get(&self, key: &str) -> CacheResult<Option<String>> {
        let now = Instant::now();
        let key = self.k(key);
        let v = self.read_any(&key, now);
        Ok(v.or_else(|| Self::counter(&self.counters.lock(), &key, now)))
    }

    async fn mget(&self, keys: &[String]) -> CacheResult<Vec<Option<String>>> {
        let now = Instant::now();
        let mut lru = self.lru.lock();
        let mut pinned = self.pinned.as_ref().map(|p| p.lock());
        let counters = self.counters.lock();
        Ok(keys
            .iter()
            .map(|k| {
                let k = self.k(k);
                Self::read(&mut lru, &k, now)
                    .or_else(|| pinned.as_mut().and_then(|p| p.read(&k, now)))
                    .or_else(|| Self::counter(&counters, &k, now))
            })
            .collect())
    }

    async fn set(&self, key: &str, value: &str, ttl: Option<Duration>) -> CacheResult<()> {
        let now = Instant::now();
        let entry = Entry {
            value: value.to_owned(),
            expires_at: ttl.map(|t| now + t),
        };
        self.put_plain(self.k(key), entry, now);
        Ok(())
    }

    async fn set_many(
        &self,
        entries: &[(String, String)],
        ttl: Option<Duration>,
    ) -> CacheResult<()> {
        let now = Instant::now();
        let expires_at = ttl.map(|t| now + t);
        for (k, v) in entries {
            let entry = Entry {
                value: v.clone(),
                expires_at,
            };
            self.put_plain(self.k(k), entry, now);
        }
        Ok(())
    }

    async fn set_nx(&self, key: &str, value: &str, ttl: Duration) -> CacheResult<bool> {
        let now = Instant::now();
        let key = self.k(key);
        let entry = Entry {
            value: value.to_owned(),
            expires_at: Some(now + ttl),
        };
        match &self.pinned {
            Some(p) => {
                let mut p = p.lock();
                if p.read(&key, now).is_some() {
                    return Ok(false);
                }
                p.put(key, entry, now);
            }
            None => {
                let mut lru = self.lru.lock();
                if Self::read(&mut lru, &key, now).is_some() {
                    return Ok(false);
                }
                lru.put(key, entry);
            }
        }
        Ok(true)
    }

    async fn del_if_equals(&self, key: &str, value: &str) -> CacheResult<bool> {
        let now = Instant::now();
        let key = self.k(key);
        let mut lru = self.lru.lock();
        if Self::read(&mut lru, &key, now).as_deref() == Some(value) {
            lru.pop(&key);
            return Ok(true);
        }
        if let Some(p) = &self.pinned {
            let mut p = p.lock();
            if p.read(&key, now).as_deref() == Some(value) {
                p.map.remove(&key);
                return Ok(true);
            }
        }
        Ok(false)
    }

    async fn del(&self, keys: &[String]) -> CacheResult<u64> {
        let now = Instant::now();
        let mut lru = self.lru.lock();
        let mut pinned = self.pinned.as_ref().map(|p| p.lock());
        let mut counters = self.counters.lock();
        let mut n = 0;
        for k in keys {
            let k = self.k(k);
            if lru.pop(&k).is_some_and(|e| e.live(now)) {
                n += 1;
            }
            if let Some(p) = pinned.as_mut() {
                if p.map.remove(&k).is_some_and(|e| e.live(now)) {
                    n += 1;
                }
            }
            if counters.ints.remove(&k).is_some() || counters.sets.remove(&k).is_some() {
                n += 1;
            }
        }
        Ok(n)
    }

    async fn incr_by(&self, key: &str, by: i64) -> CacheResult<i64> {
        let mut c = self.counters.lock();
        let slot = c.ints.entry(self.k(key)).or_insert((0, None));
        slot.0 += by;
        Ok(slot.0)
    }

    async fn incr_with_ttl(&self, key: &str, ttl: Duration) -> CacheResult<i64> {
        let now = Instant::now();
        let mut c = self.counters.lock();
        let slot = c.ints.entry(self.k(key)).or_insert((0, None));
        if slot.1.is_some_and(|t| t <= now) {
            *slot = (0, None);
        }
        slot.0 += 1;
        if slot.0 == 1 {
            slot.1 = Some(now + ttl);
        }
        Ok(slot.0)
    }

    async fn sadd(&self, key: &str, member: &str) -> CacheResult<bool> {
        let mut c = self.counters.lock();
        Ok(c.sets
            .entry(self.k(key))
            .or_default()
            .insert(member.to_owned()))
    }

    async fn smembers(&self, key: &str) -> CacheResult<Vec<String>> {
        let c = self.counters.lock();
        let mut v: Vec<String> = c
            .sets
            .get(&self.k(key))
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default();
        v.sort();
        Ok(v)
    }

    async fn scan_prefix(&self, prefix: &str) -> CacheResult<Vec<String>> {
        let now = Instant::now();
        let full = self.k(prefix);
        let strip = |k: &String| k[self.prefix.len()..].to_owned();
        let mut out: Vec<String> = self
            .lru
            .lock()
            .iter()
            .filter(|(k, e)| k.starts_with(&full) && e.live(now))
            .map(|(k, _)| strip(k))
            .collect();
        if let Some(p) = &self.pinned {
            out.extend(
                p.lock()
                    .map
                    .iter()
                    .filter(|(k, e)| k.starts_with(&full) && e.live(now))
                    .map(|(k, _)| strip(k)),
            );
        }
        let c = self.counters.lock();
        out.extend(c.ints.keys().filter(|k| k.starts_with(&full)).map(strip));
        out.extend(c.sets.keys().filter(|k| k.starts_with(&full)).map(strip));
        out.sort();
        out.dedup();
        Ok(out)
    }

    async fn versioned_get_many(&self, keys: &[String]) -> CacheResult<Vec<Option<Versioned>>> {
        let now = Instant::now();
        let mut lru = self.lru.lock();
        let mut counters = self.counters.lock();
        Ok(keys
            .iter()
            .map(|k| {
                if Self::marked(&mut counters, &self.mark(k), now) {
                    return None;
                }
                Self::read(&mut lru, &self.k(k), now).and_then(|raw| Versioned::decode(&raw))
            })
            .collect())
    }

    async fn versioned_fill(
        &self,
        key: &str,
        entry: &Versioned,
        ttl: Duration,
    ) -> CacheResult<bool> {
        let now = Instant::now();
        let mut lru = self.lru.lock();
        let mut counters = self.counters.lock();
        if Self::marked(&mut counters, &self.mark(key), now) {
            return Ok(false);
        }
        Ok(Self::put_if_newer(&mut lru, self.k(key), entry, ttl, now))
    }

    async fn versioned_fill_many(
        &self,
        entries: &[(String, Versioned)],
        ttl: Duration,
    ) -> CacheResult<Vec<bool>> {
        let now = Instant::now();
        let mut lru = self.lru.lock();
        let mut counters = self.counters.lock();
        Ok(entries
            .iter()
            .map(|(key, entry)| {
                !Self::marked(&mut counters, &self.mark(key), now)
                    && Self::put_if_newer(&mut lru, self.k(key), entry, ttl, now)
            })
            .collect())
    }

    async fn leased_get_many(
        &self,
        keys: &[String],
        lease: &str,
        lease_ttl: Duration,
    ) -> CacheResult<Vec<Option<Versioned>>> {
        let now = Instant::now();
        let mut lru = self.lru.lock();
        let mut counters = self.counters.lock();
        Ok(keys
            .iter()
            .map(|k| {
                if Self::marked(&mut counters, &self.mark(k), now) {
                    return None;
                }
                let hit = Self::read(&mut lru, &self.k(k), now).and_then(|r| Versioned::decode(&r));
                if hit.is_none() {
                    // Leases live in the LRU too: an evicted lease only means no fill.
                    lru.put(
                        self.lease(k),
                        Entry {
                            value: lease.to_owned(),
                            expires_at: Some(now + lease_ttl),
                        },
                    );
                }
                hit
            })
            .collect())
    }

    async fn leased_fill_many(
        &self,
        entries: &[(String, Versioned)],
        lease: &str,
        ttl: Duration,
    ) -> CacheResult<Vec<bool>> {
        let now = Instant::now();
        let mut lru = self.lru.lock();
        let mut counters = self.counters.lock();
        Ok(entries
            .iter()
            .map(|(key, entry)| {
                let lease_key = self.lease(key);
                if lru
                    .peek(&lease_key)
                    .filter(|e| e.live(now))
                    .map(|e| e.value.as_str())
                    != Some(lease)
                {
                    return false;
                }
                lru.pop(&lease_key);
                !Self::marked(&mut counters, &self.mark(key), now)
                    && Self::put_if_newer(&mut lru, self.k(key), entry, ttl, now)
            })
            .collect())
    }

    async fn begin_write(&self, keys: &[String], mark_ttl: Duration) -> CacheResult<()> {
        let now = Instant::now();
        let mut lru = self.lru.lock();
        let mut counters = self.counters.lock();
        for k in keys {
            lru.pop(&self.lease(k));
            let slot = counters.ints.entry(self.mark(k)).or_insert((0, None));
            if slot.1.is_some_and(|t| t <= now) {
                slot.0 = 0;
            }
            slot.0 += 1;
            slot.1 = Some(now + mark_ttl);
        }
        Ok(())
    }

    async fn end_write(&self, writes: &[(String, WriteOutcome)], ttl: Duration) -> CacheResult<()> {
        let now = Instant::now();
        let mut lru = self.lru.lock();
        let mut counters = self.counters.lock();
        for (k, outcome) in writes {
            let mark = self.mark(k);
            if let Some(slot) = counters.ints.get_mut(&mark) {
                slot.0 -= 1;
                if slot.0 <= 0 {
                    counters.ints.remove(&mark);
                }
            }
            if let WriteOutcome::Committed(entry) = outcome {
                Self::put_if_newer(&mut lru, self.k(k), entry, ttl, now);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_least_recently_used_entry_is_evicted_first() {
        let c = MemoryCache::evicting(2, "t:");
        c.set("a", "1", None).await.unwrap();
        c.set("b", "2", None).await.unwrap();
        assert_eq!(c.get("a").await.unwrap().as_deref(), Some("1"));
        c.set("c", "3", None).await.unwrap();
        assert_eq!(c.get("b").await.unwrap(), None);
        assert_eq!(c.get("a").await.unwrap().as_deref(), Some("1"));
    }

    #[tokio::test]
    async fn the_cache_tier_evicts_cached_rows_but_never_locks_or_rings() {
        let c = MemoryCache::new(2, "t:");
        assert!(c
            .set_nx("lock", "me", Duration::from_secs(60))
            .await
            .unwrap());
        c.set("ring:1", "[1,2]", None).await.unwrap();
        for v in 1..=10 {
            let key = format!("meal:{v}");
            let row = Versioned {
                version: v,
                payload: "{}".into(),
            };
            assert!(c
                .versioned_fill(&key, &row, Duration::from_secs(60))
                .await
                .unwrap());
        }
        // Only two cached rows fit; the lock and the ring are still there.
        assert_eq!(read_rows(&c, 10).await, 2);
        assert!(!c
            .set_nx("lock", "you", Duration::from_secs(60))
            .await
            .unwrap());
        assert_eq!(c.get("ring:1").await.unwrap().as_deref(), Some("[1,2]"));
        assert!(c.del_if_equals("lock", "me").await.unwrap());
        assert!(c
            .set_nx("lock", "you", Duration::from_secs(60))
            .await
            .unwrap());
        assert_eq!(
            c.scan_prefix("ring:").await.unwrap(),
            vec!["ring:1".to_owned()]
        );
    }

    async fn read_rows(c: &MemoryCache, n: i64) -> usize {
        let keys: Vec<String> = (1..=n).map(|v| format!("meal:{v}")).collect();
        c.versioned_get_many(&keys)
            .await
            .unwrap()
            .into_iter()
            .flatten()
            .count()
    }
}
