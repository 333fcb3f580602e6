//! The read path of cached entities: a lookup takes a lease on its misses, and only a fill
//! that still holds it may store.

use super::Context;
use super::{entry_key, lease_ttl, TOMBSTONE};
use crate::backends::cache::Versioned;

/// A cache lookup's answer for one id.
#[derive(Debug, Clone, PartialEq)]
pub enum Cached<T> {
    /// The entry holds this row.
    Row(T),
    /// The entry says the row is gone.
    Gone,
    /// No usable entry: ask the database.
    Miss,
}

/// The lease a lookup took on its misses; only a fill holding it may store.
#[derive(Debug, Clone)]
pub struct Lease(Option<String>);

/// A lease no other lookup holds: this instance's random prefix and a counter (leases need
/// to be distinct, not secret).
pub(super) fn new_lease() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::OnceLock;
    static PREFIX: OnceLock<String> = OnceLock::new();
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let prefix = PREFIX.get_or_init(|| crate::crypto::random_token(9));
    format!("{prefix}{:x}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// Reads the entries of `ids` in one round trip, taking a lease on every miss; every id is a
/// miss (and nothing may be filled) when the cache is degraded or fails. An entry that does
/// not decode as a `T` counts as a miss.
pub async fn read_many<T: serde::de::DeserializeOwned>(
    state: &impl Context,
    entity: &'static str,
    ids: &[String],
) -> (Vec<Cached<T>>, Lease) {
    let keys: Vec<String> = ids.iter().map(|id| entry_key(entity, id)).collect();
    read_keys(state, entity, &keys).await
}

/// [`read_many`] of entries named by their whole keys; `entity` labels the metrics.
pub async fn read_keys<T: serde::de::DeserializeOwned>(
    state: &impl Context,
    entity: &'static str,
    keys: &[String],
) -> (Vec<Cached<T>>, Lease) {
    let misses = || {
        entity::scope::read::taint();
        ((0..keys.len()).map(|_| Cached::Miss).collect(), Lease(None))
    };
    if !state.health().usable() {
        return misses();
    }
    let lease = new_lease();
    let entries = match state
        .cache()
        .leased_get_many(keys, &lease, lease_ttl(state))
        .await
    {
        Ok(e) => e,
        Err(e) => {
            state.health().read_failed(&e);
            return misses();
        }
    };
    let (mut hit, mut missed) = (0u64, 0u64);
    let cached = entries
        .into_iter()
        .zip(keys)
        .map(|(e, key)| match e {
            Some(v) if v.payload == TOMBSTONE => {
                hit += 1;
                entity::scope::read::record(key, v.version);
                Cached::Gone
            }
            Some(v) => match serde_json::from_str(&v.payload) {
                Ok(row) => {
                    hit += 1;
                    entity::scope::read::record(key, v.version);
                    Cached::Row(row)
                }
                Err(_) => {
                    missed += 1;
                    entity::scope::read::taint();
                    Cached::Miss
                }
            },
            None => {
                missed += 1;
                // Answered from the database: not a version the memo could check again.
                entity::scope::read::taint();
                Cached::Miss
            }
        })
        .collect();
    let m = &state.metrics();
    if hit > 0 {
        m.cache_hits.with_label_values(&[entity]).inc_by(hit);
    }
    if missed > 0 {
        m.cache_misses.with_label_values(&[entity]).inc_by(missed);
    }
    (cached, Lease(Some(lease)))
}

/// Fills entries after a miss, in one round trip; each is stored only while `lease` (from
/// [`read_many`]) still holds, no write is in flight and nothing newer is there. `rows` are
/// `(id, version, row or None when gone)`.
pub async fn fill_many(
    state: &impl Context,
    entity: &'static str,
    lease: &Lease,
    rows: Vec<(String, i64, Option<serde_json::Value>)>,
) {
    let rows = rows
        .into_iter()
        .map(|(id, version, row)| (entry_key(entity, &id), version, row))
        .collect();
    fill_keys(state, lease, rows).await
}

/// [`fill_many`] of entries named by their whole keys.
pub async fn fill_keys(
    state: &impl Context,
    lease: &Lease,
    rows: Vec<(String, i64, Option<serde_json::Value>)>,
) {
    let Some(lease) = &lease.0 else { return };
    if rows.is_empty() || !state.health().usable() {
        return;
    }
    let entries: Vec<(String, Versioned)> = rows
        .into_iter()
        .map(|(key, version, row)| {
            (
                key,
                Versioned {
                    version,
                    payload: row
                        .map(|r| r.to_string())
                        .unwrap_or_else(|| TOMBSTONE.to_owned()),
                },
            )
        })
        .collect();
    if let Err(e) = state
        .cache()
        .leased_fill_many(&entries, lease, state.settings().cache_ttl())
        .await
    {
        state.health().read_failed(&e);
    }
}
