//! The memo of responses: the serialized response of a *pure* query, kept with the versions
//! of the cache entries it read, and served again while every one of those entries still holds
//! that version.
//!
//! A query is pure when everything it read was a versioned entry of the write-through cache
//! (`entity::scope::read`): no plain cache key, no document, and SQL statements only over
//! tables whose versions it read first. Its response is then a function of its document, its
//! variables and those entries. A query that asked who its viewer is depends on the
//! credential too: it is pure only when the viewer was resolved under the version of the
//! viewer's own rows, and its response is kept *for that credential* (a hash of the
//! `Authorization` value is part of its key) and only until the credential expires. Before a memoized
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
use crate::viewer::Viewer;

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
    /// For a response that depends on its viewer: who asked (see [`Key`]), and whom the
    /// credential named (`None`: nobody, a request without one).
    pub viewer: Option<(String, Option<Viewer>)>,
    /// When it stops being true by itself (epoch milliseconds): the viewer's session ends.
    pub until: Option<i64>,
}

impl Entry {
    fn is_for(&self, key: &Key<'_>) -> bool {
        Arc::ptr_eq(&self.prepared, key.prepared)
            && self.operation.as_deref() == key.operation
            && self.variables == key.variables
            && self.viewer.as_ref().map(|(who, _)| who.as_str()) == key.who
    }

    fn size(&self) -> usize {
        self.body.len()
            + self.variables.len()
            + self.viewer.as_ref().map_or(0, |(who, _)| who.len() + 64)
            + self.reads.iter().map(|(k, _)| k.len() + 8).sum::<usize>()
    }

    /// Whether nothing it read has expired by itself at `now_ms`.
    pub fn in_time(&self, now_ms: i64) -> bool {
        self.until.is_none_or(|until| now_ms < until)
    }
}

/// What a memoized response is looked up by.
pub struct Key<'a> {
    /// The document.
    pub prepared: &'a Arc<Prepared>,
    /// The operation's name.
    pub operation: Option<&'a str>,
    /// The variables, serialized.
    pub variables: &'a str,
    /// For a document whose responses depend on their viewer: who asks (a hash of the
    /// `Authorization` value, [`who`]).
    pub who: Option<&'a str>,
}

/// Who asks, as a memo key holds it: the SHA-256 of the `Authorization` value, or `-` for a
/// request without one.
pub fn who(header: Option<&str>) -> String {
    header.map_or_else(|| "-".to_owned(), crate::crypto::sha256_hex)
}

/// A response to keep (see [`Memo::put`]).
pub struct Computed {
    /// The response body, serialized.
    pub body: Bytes,
    /// The entries it was computed from, with their versions.
    pub reads: Vec<(String, i64)>,
    /// The root fields it ran.
    pub fields: Arc<[async_graphql::Name]>,
    /// Who asked and whom the credential named, when the response depends on it.
    pub viewer: Option<(String, Option<Viewer>)>,
    /// When it stops being true by itself.
    pub until: Option<i64>,
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

    fn hash(&self, key: &Key<'_>) -> u64 {
        let mut h = self.hasher.build_hasher();
        (Arc::as_ptr(key.prepared) as usize).hash(&mut h);
        key.operation.hash(&mut h);
        key.variables.hash(&mut h);
        key.who.hash(&mut h);
        h.finish()
    }

    /// The memoized response for `key`, if any.
    pub fn get(&self, key: &Key<'_>) -> Option<Arc<Entry>> {
        let hash = self.hash(key);
        self.inner
            .lock()
            .entries
            .get(&hash)
            .filter(|e| e.is_for(key))
            .cloned()
    }

    /// Keeps a response for `key` (whose `variables` it takes).
    pub fn put(&self, key: &Key<'_>, computed: Computed) {
        let hash = self.hash(key);
        let entry = Arc::new(Entry {
            prepared: key.prepared.clone(),
            operation: key.operation.map(str::to_owned),
            variables: key.variables.to_owned(),
            body: computed.body,
            reads: computed.reads,
            fields: computed.fields,
            viewer: computed.viewer,
            until: computed.until,
        });
        let size = entry.size();
        if size > self.max_bytes / 4 {
            return;
        }
        let mut lru = self.inner.lock();
        if let Some(old) = lru.entries.put(hash, entry) {
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

    /// Forgets the response for `key` (its reads are no longer current).
    pub fn forget(&self, key: &Key<'_>) {
        let hash = self.hash(key);
        let mut lru = self.inner.lock();
        let ours = lru.entries.peek(&hash).is_some_and(|e| e.is_for(key));
        if ours {
            if let Some(old) = lru.entries.pop(&hash) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graphql::engine::documents::DocumentLimits;

    fn lru_bytes(memo: &Memo) -> usize {
        memo.inner.lock().bytes
    }

    /// Pages of a list, each a response of about 4 KiB read from 21 entries and a collection
    /// version, kept for many cursors and viewers: the memo never holds more than its bytes,
    /// and its count of bytes is the sum of what it holds.
    #[test]
    fn a_memo_full_of_lists_stays_within_its_bytes() {
        let limits = DocumentLimits {
            max_root_fields: 10,
            max_expanded: 1_000,
        };
        let prepared = Arc::new(
            Prepared::parse(
                "query($after: String) { meals(first: 20, after: $after) { edges { node { id name } } } }"
                    .into(),
                limits,
            )
            .unwrap(),
        );
        let max_bytes = 256 << 10;
        let memo = Memo::new(10_000, max_bytes);
        let page = |i: usize| Computed {
            body: Bytes::from(format!("{{\"data\":{}}}", "x".repeat(4_000 + i % 97))),
            reads: (0..21)
                .map(|k| (format!("meal:{}", i * 20 + k), 1))
                .chain([("collection:meals".to_owned(), i as i64)])
                .collect(),
            fields: Arc::from(vec![async_graphql::Name::new("meals")]),
            viewer: i
                .is_multiple_of(3)
                .then(|| (format!("viewer{}", i % 7), None)),
            until: None,
        };
        for i in 0..5_000usize {
            let variables = format!("{{\"after\":\"{i}\"}}");
            let who = format!("viewer{}", i % 7);
            let key = Key {
                prepared: &prepared,
                operation: None,
                variables: &variables,
                who: i.is_multiple_of(3).then_some(who.as_str()),
            };
            memo.put(&key, page(i));
            assert!(
                lru_bytes(&memo) <= max_bytes,
                "{} > {max_bytes}",
                lru_bytes(&memo)
            );
        }
        let held: usize = memo
            .inner
            .lock()
            .entries
            .iter()
            .map(|(_, e)| e.size())
            .sum();
        assert_eq!(held, lru_bytes(&memo));
        // Full: about as many pages as fit, the oldest gone, the newest kept.
        assert!(memo.len() > max_bytes / 6_000, "{}", memo.len());
        let newest = "{\"after\":\"4999\"}".to_owned();
        let key = Key {
            prepared: &prepared,
            operation: None,
            variables: &newest,
            who: None,
        };
        assert!(memo.get(&key).is_some());
    }
}
