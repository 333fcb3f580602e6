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

/// Parses a hex SHA-256 as clients send it (either case). On the persisted-query path of
/// every request, so a table lookup per digit rather than a general decoder.
pub fn parse_hash(hex_hash: &str) -> Option<[u8; 32]> {
    const fn digit(c: u8) -> u8 {
        match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            b'A'..=b'F' => c - b'A' + 10,
            _ => 0xff,
        }
    }
    const TABLE: [u8; 256] = {
        let mut t = [0xff; 256];
        let mut c = 0;
        while c < 256 {
            t[c] = digit(c as u8);
            c += 1;
        }
        t
    };
    let bytes: &[u8; 64] = hex_hash.as_bytes().try_into().ok()?;
    let mut out = [0u8; 32];
    let mut bad = 0u8;
    for (o, pair) in out.iter_mut().zip(bytes.chunks_exact(2)) {
        let (hi, lo) = (TABLE[pair[0] as usize], TABLE[pair[1] as usize]);
        bad |= hi | lo;
        *o = (hi << 4) | (lo & 0x0f);
    }
    // A valid digit is < 16; any 0xff sets the high bits.
    (bad & 0xf0 == 0).then_some(out)
}

/// Hashes a SHA-256 for a hash map by taking its first eight bytes: they are already
/// uniformly distributed, so running them through SipHash again buys nothing.
#[derive(Default, Clone, Copy)]
pub struct DigestHasher(u64);

impl std::hash::Hasher for DigestHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // `[u8; 32]` hashes as its length, then its bytes: the first eight of each write.
        for (i, b) in bytes.iter().take(8).enumerate() {
            self.0 ^= u64::from(*b) << (8 * i);
        }
    }
}

/// The `BuildHasher` of [`DigestHasher`].
pub type DigestState = std::hash::BuildHasherDefault<DigestHasher>;

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_parse_in_either_case_and_nothing_else_does() {
        let text = "{ __typename }";
        let hash = sha256(text);
        let lower = hex::encode(hash);
        assert_eq!(parse_hash(&lower), Some(hash));
        assert_eq!(parse_hash(&lower.to_uppercase()), Some(hash));
        assert_eq!(parse_hash(&lower[..62]), None, "too short");
        assert_eq!(parse_hash(&format!("{lower}00")), None, "too long");
        for bad in ['g', 'z', ' ', '-', 'é'] {
            let mut s = lower.clone();
            s.replace_range(10..11, &bad.to_string());
            assert_eq!(parse_hash(&s), None, "{s}");
        }
        assert_eq!(parse_hash(&"0".repeat(64)), Some([0; 32]));
        assert_eq!(parse_hash(&"f".repeat(64)), Some([0xff; 32]));
    }
}
