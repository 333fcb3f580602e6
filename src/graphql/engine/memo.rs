//! The memo of responses: the serialized response of a *pure* query, kept with the versions
//! of the cache entries it read, and served again while every one of those entries still holds
//! that version.
//!
//! A query is pure when everything it read was a versioned entry of the write-through cache
//! (`entity::scope::read`): no SQL statement, no plain cache key, no document, no viewer. Its response
//! is then a function of its document, its variables and those entries. Before a memoized
//! response is served, the entries' current versions are read from the cache tier (one round
//! trip, the same a cached read costs); a write in flight (a mark), an eviction or a newer
//! version means the query runs again. So a read that starts after a write committed never
//! gets an older response: the write marked or replaced the entry before its commit was
//! acknowledged, exactly as for a read through the loaders. The memo is per instance and
//! bounded by entries and by bytes.

use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::Arc;

use axum::body::Bytes;
use lru::LruCache;
use parking_lot::Mutex;

use super::documents::Prepared;

/// A memoized response.
pub struct Entry {
    prepared: Arc<Prepared>,
    operation: Option<String>,
    variables: String,
    /// The response body, serialized.
    pub body: Bytes,
    /// The entries it was computed from, with their versions.
    pub reads: Vec<(String, i64)>,
    /// The root fields it ran (with its variables), which a hit counts again.
    pub fields: Arc<[async_graphql::Name]>,
}

impl Entry {
    fn is_for(&self, prepared: &Arc<Prepared>, operation: Option<&str>, variables: &str) -> bool {
        Arc::ptr_eq(&self.prepared, prepared)
            && self.operation.as_deref() == operation
            && self.variables == variables
    }

    fn size(&self) -> usize {
        self.body.len()
            + self.variables.len()
            + self.reads.iter().map(|(k, _)| k.len() + 8).sum::<usize>()
    }
}

/// Memoized responses, at most `max_entries` of them and `max_bytes` in all.
pub struct Memo {
    inner: Mutex<Lru>,
    hasher: std::collections::hash_map::RandomState,
    max_entries: usize,
    max_bytes: usize,
}

struct Lru {
    entries: LruCache<u64, Arc<Entry>>,
    bytes: usize,
}

impl Memo {
    /// A memo of at most `max_entries` responses and `max_bytes`; off when either is 0.
    pub fn new(max_entries: usize, max_bytes: usize) -> Self {
        Self {
            inner: Mutex::new(Lru {
                entries: LruCache::unbounded(),
                bytes: 0,
            }),
            hasher: Default::default(),
            max_entries,
            max_bytes,
        }
    }

    /// Whether responses are memoized at all.
    pub fn enabled(&self) -> bool {
        self.max_entries > 0 && self.max_bytes > 0
    }

    fn key(&self, prepared: &Arc<Prepared>, operation: Option<&str>, variables: &str) -> u64 {
        let mut h = self.hasher.build_hasher();
        (Arc::as_ptr(prepared) as usize).hash(&mut h);
        operation.hash(&mut h);
        variables.hash(&mut h);
        h.finish()
    }

    /// The memoized response of this operation with these (serialized) variables, if any.
    pub fn get(
        &self,
        prepared: &Arc<Prepared>,
        operation: Option<&str>,
        variables: &str,
    ) -> Option<Arc<Entry>> {
        let key = self.key(prepared, operation, variables);
        self.inner
            .lock()
            .entries
            .get(&key)
            .filter(|e| e.is_for(prepared, operation, variables))
            .cloned()
    }

    /// Keeps a response computed from `reads`.
    pub fn put(
        &self,
        prepared: &Arc<Prepared>,
        operation: Option<&str>,
        variables: String,
        body: Bytes,
        reads: Vec<(String, i64)>,
        fields: Arc<[async_graphql::Name]>,
    ) {
        let key = self.key(prepared, operation, &variables);
        let entry = Arc::new(Entry {
            prepared: prepared.clone(),
            operation: operation.map(str::to_owned),
            variables,
            body,
            reads,
            fields,
        });
        let size = entry.size();
        if size > self.max_bytes / 4 {
            return;
        }
        let mut lru = self.inner.lock();
        if let Some(old) = lru.entries.put(key, entry) {
            lru.bytes -= old.size();
        }
        lru.bytes += size;
        while lru.entries.len() > self.max_entries || lru.bytes > self.max_bytes {
            match lru.entries.pop_lru() {
                Some((_, old)) => lru.bytes -= old.size(),
                None => break,
            }
        }
    }

    /// Forgets the response of this operation (its reads are no longer current).
    pub fn forget(&self, prepared: &Arc<Prepared>, operation: Option<&str>, variables: &str) {
        let key = self.key(prepared, operation, variables);
        let mut lru = self.inner.lock();
        let ours = lru
            .entries
            .peek(&key)
            .is_some_and(|e| e.is_for(prepared, operation, variables));
        if ours {
            if let Some(old) = lru.entries.pop(&key) {
                lru.bytes -= old.size();
            }
        }
    }

    /// How many responses are memoized.
    pub fn len(&self) -> usize {
        self.inner.lock().entries.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
