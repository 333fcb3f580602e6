//! Apollo's automatic persisted queries: a client sends the SHA-256 of a document instead of
//! the document; on `PERSISTED_QUERY_NOT_FOUND` it sends both, and the server registers the
//! pair. Registered documents live in the cache tier (so a hash registered through one
//! replica works on every replica), with this instance's recent ones kept in memory beside.
//!
//! With `ARENA_PERSISTED_ONLY=true` the server runs from an allow-list: it answers only
//! documents registered by the operator (`arena register-queries`), refuses every other
//! document, and registers nothing a client sends.

use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

use lru::LruCache;
use parking_lot::Mutex;
use sha2::{Digest, Sha256};

use crate::backends::cache::{CacheResult, KeyValue};

/// The cache-tier key of a document a client registered.
fn key(hash: &[u8; 32]) -> String {
    format!("pq:{}", hex::encode(hash))
}

/// The cache-tier key of a document the operator registered (the allow-list): kept apart, so
/// that a client registration from before the allow-list mode was turned on never counts.
fn allowed_key(hash: &[u8; 32]) -> String {
    format!("pqa:{}", hex::encode(hash))
}

/// The SHA-256 of a document text.
pub fn sha256(text: &str) -> [u8; 32] {
    Sha256::digest(text.as_bytes()).into()
}

/// Parses a hex SHA-256 as clients send it.
pub fn parse_hash(hex_hash: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(hex_hash, &mut out).ok()?;
    Some(out)
}

/// The registered documents.
pub struct PersistedQueries {
    kv: Arc<dyn KeyValue>,
    local: Mutex<LruCache<[u8; 32], Arc<str>>>,
    ttl: Option<Duration>,
    /// The allow-list mode: only registered documents run, clients register nothing.
    pub only: bool,
}

impl PersistedQueries {
    /// Documents in `kv`, the recent `local` ones also in memory; client registrations
    /// expire after `ttl` (operator registrations never do).
    pub fn new(kv: Arc<dyn KeyValue>, local: usize, ttl: Option<Duration>, only: bool) -> Self {
        Self {
            kv,
            local: Mutex::new(LruCache::new(
                NonZeroUsize::new(local.max(1)).unwrap_or(NonZeroUsize::MIN),
            )),
            ttl,
            only,
        }
    }

    /// The document registered under `hash`, if any: in the allow-list mode only one the
    /// operator registered, otherwise one a client or the operator registered.
    pub async fn get(&self, hash: &[u8; 32]) -> CacheResult<Option<Arc<str>>> {
        if let Some(text) = self.local.lock().get(hash) {
            return Ok(Some(text.clone()));
        }
        let found = match self.only {
            true => None,
            false => self.kv.get(&key(hash)).await?,
        };
        let found = match found {
            Some(text) => Some(text),
            None => self.kv.get(&allowed_key(hash)).await?,
        };
        let Some(text) = found else {
            return Ok(None);
        };
        // A value that is not this hash's document (tampered with, or another format) is not
        // served.
        if sha256(&text) != *hash {
            return Ok(None);
        }
        let text: Arc<str> = Arc::from(text);
        self.local.lock().put(*hash, text.clone());
        Ok(Some(text))
    }

    /// Registers `text` (whose hash the caller checked) as a client's registration.
    pub async fn register(&self, hash: &[u8; 32], text: &str) -> CacheResult<()> {
        self.kv.set(&key(hash), text, self.ttl).await?;
        self.local.lock().put(*hash, Arc::from(text));
        Ok(())
    }

    /// Registers `text` for good (the operator's allow-list); returns its hash.
    pub async fn register_permanently(&self, text: &str) -> CacheResult<[u8; 32]> {
        let hash = sha256(text);
        self.kv.set(&allowed_key(&hash), text, None).await?;
        Ok(hash)
    }
}

/// The documents of a file given to `arena register-queries`: an Apollo persisted-query
/// manifest (`{ "operations": [{ "body": … }] }`), or the file's text as one document.
pub fn documents_in(path: &std::path::Path) -> anyhow::Result<Vec<String>> {
    use anyhow::Context as _;
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    if let Ok(serde_json::Value::Object(manifest)) = serde_json::from_str(&text) {
        let operations = manifest
            .get("operations")
            .and_then(|o| o.as_array())
            .with_context(|| format!("{}: a manifest has `operations`", path.display()))?;
        return operations
            .iter()
            .map(|op| {
                op.get("body")
                    .and_then(|b| b.as_str())
                    .map(str::to_owned)
                    .with_context(|| format!("{}: an operation without `body`", path.display()))
            })
            .collect();
    }
    Ok(vec![text])
}
