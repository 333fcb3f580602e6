//! Plain values, counters and sets in process memory.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use parking_lot::Mutex;

use super::{Expiring, SWEEP_EVERY};
use crate::backends::cache::{CacheResult, KeyValue};

struct Store {
    values: HashMap<String, Expiring<String>>,
    counters: HashMap<String, Expiring<i64>>,
    sets: HashMap<String, BTreeSet<String>>,
    writes: u64,
}

impl Store {
    /// Counts a write; every [`SWEEP_EVERY`] writes, drops what has expired, so that keys
    /// written once with an expiry (a failed login of a made-up username) do not pile up.
    fn wrote(&mut self, now: Instant) {
        self.writes += 1;
        if self.writes.is_multiple_of(SWEEP_EVERY) {
            self.values.retain(|_, e| e.live(now));
            self.counters.retain(|_, c| c.live(now));
        }
    }

    fn value(&mut self, key: &str, now: Instant) -> Option<String> {
        match self.values.get(key) {
            Some(e) if e.live(now) => Some(e.value.clone()),
            Some(_) => {
                self.values.remove(key);
                None
            }
            None => None,
        }
    }

    fn counter(&mut self, key: &str, now: Instant) -> Option<i64> {
        match self.counters.get(key) {
            Some(c) if c.live(now) => Some(c.value),
            Some(_) => {
                self.counters.remove(key);
                None
            }
            None => None,
        }
    }
}

/// The in-process key-value store.
pub struct MemoryKv {
    store: Mutex<Store>,
}

impl Default for MemoryKv {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryKv {
    /// A store that keeps every value until it expires or is deleted.
    pub fn new() -> Self {
        Self {
            store: Mutex::new(Store {
                values: HashMap::new(),
                counters: HashMap::new(),
                sets: HashMap::new(),
                writes: 0,
            }),
        }
    }

    /// How many values, counters and sets the store holds, expired ones not yet swept
    /// included.
    pub fn len(&self) -> usize {
        let s = self.store.lock();
        s.values.len() + s.counters.len() + s.sets.len()
    }

    /// Whether the store holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[async_trait]
impl KeyValue for MemoryKv {
    fn kind(&self) -> &'static str {
        "memory"
    }

    async fn ping(&self) -> CacheResult<()> {
        Ok(())
    }

    async fn get(&self, key: &str) -> CacheResult<Option<String>> {
        let now = Instant::now();
        let mut s = self.store.lock();
        let v = s.value(key, now);
        Ok(v.or_else(|| s.counter(key, now).map(|n| n.to_string())))
    }

    async fn set(&self, key: &str, value: &str, ttl: Option<Duration>) -> CacheResult<()> {
        self.set_many(&[(key.to_owned(), value.to_owned())], ttl)
            .await
    }

    async fn set_many(
        &self,
        entries: &[(String, String)],
        ttl: Option<Duration>,
    ) -> CacheResult<()> {
        let now = Instant::now();
        let expires_at = ttl.map(|t| now + t);
        let mut s = self.store.lock();
        for (k, v) in entries {
            // A SET replaces whatever the key held.
            s.counters.remove(k);
            s.values.insert(
                k.clone(),
                Expiring {
                    value: v.clone(),
                    expires_at,
                },
            );
            s.wrote(now);
        }
        Ok(())
    }

    async fn set_nx(&self, key: &str, value: &str, ttl: Duration) -> CacheResult<bool> {
        let now = Instant::now();
        let mut s = self.store.lock();
        if s.value(key, now).is_some() || s.counter(key, now).is_some() {
            return Ok(false);
        }
        s.values.insert(
            key.to_owned(),
            Expiring {
                value: value.to_owned(),
                expires_at: Some(now + ttl),
            },
        );
        s.wrote(now);
        Ok(true)
    }

    async fn del_if_equals(&self, key: &str, value: &str) -> CacheResult<bool> {
        let now = Instant::now();
        let mut s = self.store.lock();
        if s.value(key, now).as_deref() == Some(value) {
            s.values.remove(key);
            return Ok(true);
        }
        Ok(false)
    }

    async fn del(&self, keys: &[String]) -> CacheResult<u64> {
        let now = Instant::now();
        let mut s = self.store.lock();
        let mut n = 0;
        for k in keys {
            let value = s.values.remove(k).is_some_and(|e| e.live(now));
            let counter = s.counters.remove(k).is_some_and(|c| c.live(now));
            let set = s.sets.remove(k).is_some();
            n += u64::from(value || counter || set);
        }
        Ok(n)
    }

    async fn incr_by(&self, key: &str, by: i64) -> CacheResult<i64> {
        let now = Instant::now();
        let mut s = self.store.lock();
        let current = match s.counter(key, now) {
            Some(n) => n,
            // INCR of a plain value holding a number goes on from it, as in Redis.
            None => s
                .values
                .remove(key)
                .filter(|e| e.live(now))
                .and_then(|e| e.value.parse().ok())
                .unwrap_or(0),
        };
        let expires_at = s.counters.get(key).and_then(|c| c.expires_at);
        let value = current + by;
        s.counters
            .insert(key.to_owned(), Expiring { value, expires_at });
        s.wrote(now);
        Ok(value)
    }

    async fn raise_many(&self, counters: &[(String, i64)]) -> CacheResult<()> {
        let now = Instant::now();
        let mut s = self.store.lock();
        for (key, value) in counters {
            let current = match s.counter(key, now) {
                Some(n) => n,
                None => s.value(key, now).and_then(|v| v.parse().ok()).unwrap_or(0),
            };
            if *value > current {
                let expires_at = s.counters.get(key).and_then(|c| c.expires_at);
                s.values.remove(key);
                s.counters.insert(
                    key.clone(),
                    Expiring {
                        value: *value,
                        expires_at,
                    },
                );
                s.wrote(now);
            }
        }
        Ok(())
    }

    async fn incr_with_ttl(&self, key: &str, ttl: Duration) -> CacheResult<i64> {
        let now = Instant::now();
        let mut s = self.store.lock();
        let slot = match s.counter(key, now) {
            Some(n) => Expiring {
                value: n + 1,
                expires_at: s
                    .counters
                    .get(key)
                    .and_then(|c| c.expires_at)
                    .or(Some(now + ttl)),
            },
            None => Expiring {
                value: 1,
                expires_at: Some(now + ttl),
            },
        };
        let value = slot.value;
        s.counters.insert(key.to_owned(), slot);
        s.wrote(now);
        Ok(value)
    }

    async fn sadd(&self, key: &str, member: &str) -> CacheResult<bool> {
        let mut s = self.store.lock();
        Ok(s.sets
            .entry(key.to_owned())
            .or_default()
            .insert(member.to_owned()))
    }

    async fn smembers(&self, key: &str) -> CacheResult<Vec<String>> {
        let s = self.store.lock();
        Ok(s.sets
            .get(key)
            .map(|m| m.iter().cloned().collect())
            .unwrap_or_default())
    }

    async fn scan_prefix(&self, prefix: &str) -> CacheResult<Vec<String>> {
        let now = Instant::now();
        let s = self.store.lock();
        let mut out: Vec<String> = s
            .values
            .iter()
            .filter(|(k, e)| k.starts_with(prefix) && e.live(now))
            .map(|(k, _)| k.clone())
            .collect();
        out.extend(
            s.counters
                .iter()
                .filter(|(k, c)| k.starts_with(prefix) && c.live(now))
                .map(|(k, _)| k.clone()),
        );
        out.extend(s.sets.keys().filter(|k| k.starts_with(prefix)).cloned());
        out.sort();
        out.dedup();
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn expired_counters_are_swept_so_one_off_keys_do_not_pile_up() {
        // A failed login of a made-up username leaves a counter that expires with the
        // lockout window; a stream of them must not grow the store without bound.
        let c = MemoryKv::new();
        let ttl = Duration::from_millis(200);
        let started = Instant::now();
        for i in 0..5_000 {
            c.incr_with_ttl(&format!("login_failures:nobody{i}"), ttl)
                .await
                .unwrap();
        }
        // All there, unless the writes took longer than the TTL (a busy machine), in which
        // case a sweep may already have taken the first ones.
        if started.elapsed() < ttl {
            assert!(c.len() >= 5_000);
        }
        // Wait until they have all expired (the last one written expires last).
        let deadline = Instant::now() + Duration::from_secs(10);
        while c.get("login_failures:nobody4999").await.unwrap().is_some() {
            assert!(Instant::now() < deadline, "the counters never expired");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // Writes go on (to one long-lived key): a sweep runs within SWEEP_EVERY of them.
        for _ in 0..SWEEP_EVERY {
            c.incr_by("c_login", 1).await.unwrap();
        }
        assert!(c.len() < 10, "{} keys left after a sweep", c.len());
    }

    #[tokio::test]
    async fn a_counter_reads_as_its_number_and_a_set_replaces_it() {
        let c = MemoryKv::new();
        assert_eq!(c.incr_by("n", 5).await.unwrap(), 5);
        assert_eq!(c.get("n").await.unwrap().as_deref(), Some("5"));
        c.set("n", "12", None).await.unwrap();
        assert_eq!(c.incr_by("n", 1).await.unwrap(), 13);
    }
}
