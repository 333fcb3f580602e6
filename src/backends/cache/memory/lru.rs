//! The key-value storage in process memory: an exact LRU per owner, under one LRU over every
//! owner's values that bounds the memory the storage takes.

use std::collections::HashMap;
use std::num::NonZeroUsize;

use async_trait::async_trait;
use lru::LruCache;
use parking_lot::Mutex;

use crate::backends::cache::{CacheResult, LruStore};

struct Store {
    /// Each owner's values, least recently used first.
    owners: HashMap<String, LruCache<String, String>>,
    /// Every `(owner, key)`, least recently used first, bounded by the total capacity.
    all: LruCache<(String, String), ()>,
}

impl Store {
    fn remove(&mut self, owner: &str, key: &str) {
        if let Some(values) = self.owners.get_mut(owner) {
            values.pop(key);
            if values.is_empty() {
                self.owners.remove(owner);
            }
        }
    }
}

/// The in-process key-value storage.
pub struct MemoryLru {
    store: Mutex<Store>,
}

impl MemoryLru {
    /// At most `total` values over every owner (at least 1).
    pub fn new(total: u64) -> Self {
        let cap = NonZeroUsize::new(total.max(1) as usize).unwrap_or(NonZeroUsize::MIN);
        Self {
            store: Mutex::new(Store {
                owners: HashMap::new(),
                all: LruCache::new(cap),
            }),
        }
    }
}

#[async_trait]
impl LruStore for MemoryLru {
    fn kind(&self) -> &'static str {
        "memory"
    }

    async fn ping(&self) -> CacheResult<()> {
        Ok(())
    }

    async fn get(&self, owner: &str, key: &str) -> CacheResult<Option<String>> {
        let mut s = self.store.lock();
        let value = s
            .owners
            .get_mut(owner)
            .and_then(|values| values.get(key).cloned());
        if value.is_some() {
            s.all.promote(&(owner.to_owned(), key.to_owned()));
        }
        Ok(value)
    }

    async fn put(
        &self,
        owner: &str,
        entries: &[(String, String)],
        capacity: u64,
    ) -> CacheResult<u64> {
        let mut s = self.store.lock();
        let mut evicted = 0;
        for (key, value) in entries {
            s.owners
                .entry(owner.to_owned())
                .or_insert_with(LruCache::unbounded)
                .put(key.clone(), value.clone());
            // The memory bound: the least recently used value of any owner makes room.
            if let Some(((o, k), ())) = s.all.push((owner.to_owned(), key.clone()), ()) {
                if (o.as_str(), k.as_str()) != (owner, key.as_str()) {
                    s.remove(&o, &k);
                    evicted += 1;
                }
            }
        }
        // The owner's bound, exact.
        let limit = usize::try_from(capacity).unwrap_or(usize::MAX);
        let mut victims = Vec::new();
        if let Some(values) = s.owners.get_mut(owner) {
            while values.len() > limit {
                match values.pop_lru() {
                    Some((k, _)) => victims.push(k),
                    None => break,
                }
            }
            if values.is_empty() {
                s.owners.remove(owner);
            }
        }
        for k in victims {
            s.all.pop(&(owner.to_owned(), k));
            evicted += 1;
        }
        Ok(evicted)
    }

    async fn keys(&self, owner: &str) -> CacheResult<Vec<String>> {
        let s = self.store.lock();
        Ok(s.owners
            .get(owner)
            .map(|values| values.iter().rev().map(|(k, _)| k.clone()).collect())
            .unwrap_or_default())
    }

    async fn forget(&self, owner: &str) -> CacheResult<()> {
        let mut s = self.store.lock();
        if let Some(values) = s.owners.remove(owner) {
            for (k, _) in values.iter() {
                s.all.pop(&(owner.to_owned(), k.clone()));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(pairs: &[&str]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|k| (k.to_string(), k.to_uppercase()))
            .collect()
    }

    #[tokio::test]
    async fn the_memory_bound_evicts_the_least_recently_used_value_of_any_owner() {
        let c = MemoryLru::new(3);
        c.put("alice", &entries(&["a", "b"]), 10).await.unwrap();
        c.put("bob", &entries(&["x"]), 10).await.unwrap();
        assert_eq!(c.get("alice", "a").await.unwrap().as_deref(), Some("A"));
        // Full: bob's y pushes out alice's b, the least recently used of all.
        assert_eq!(c.put("bob", &entries(&["y"]), 10).await.unwrap(), 1);
        assert_eq!(c.keys("alice").await.unwrap(), vec!["a"]);
        assert_eq!(c.keys("bob").await.unwrap(), vec!["x", "y"]);
        c.forget("bob").await.unwrap();
        assert!(c.keys("bob").await.unwrap().is_empty());
        c.put("carol", &entries(&["p", "q"]), 10).await.unwrap();
        assert_eq!(c.keys("alice").await.unwrap(), vec!["a"], "room was freed");
    }
}
