//! Versions of collections: what lets a list be memoized under the same rule as an entry.
//!
//! Every table that lists read (`entity::scope::write::COLLECTION_TABLES`) has one cache
//! entry, `coll:<table>`, whose version is a random number standing for "the table as of
//! the last write". The write path treats it as a bulk-written key: every write to the table
//! marks it before `COMMIT` (so it reads as a miss while the write is in flight, on every
//! replica and near cache) and deletes it after. A reader that finds it missing fills a new
//! random version under its lease, as any fill.
//!
//! A list's resolver calls [`reading`] *before* its SQL statements: the versions read are
//! recorded with the operation's reads, and `entity::scope::read::statement` lets a
//! statement over those tables leave the operation pure. The memo then serves the response
//! again only while every version is unchanged. Why it holds: a write the statement did not
//! see committed after the statement began, so after the version was read; it marked the
//! version before its `COMMIT` and deletes it after, so from its acknowledgement on the
//! version read is gone (a new one is another random number), and the memo runs the query
//! again.

use super::leased::new_lease;
use super::{lease_ttl, Context};
use crate::backends::cache::Versioned;

/// The cache key of a table's collection version.
pub fn collection_key(table: &str) -> String {
    format!("coll:{table}")
}

/// The payload of a collection version (only its version matters).
const PAYLOAD: &str = "c";

/// Reads (or makes) the collection versions of `tables` and records them as the operation's
/// reads, so that its statements over them keep it pure. Only when the operation is
/// tracked for the memo and not tainted already; a version that is being written (marked)
/// or cannot be read is not recorded, and the statements then taint the operation.
pub async fn reading(state: &impl Context, tables: &[&'static str]) {
    if !entity::scope::read::is_tracking() || !state.health().usable() {
        return;
    }
    let keys: Vec<String> = tables.iter().map(|t| collection_key(t)).collect();
    let versions = versions_of(state, &keys, "collection").await;
    for ((table, key), version) in tables.iter().zip(&keys).zip(versions) {
        if let Some(version) = version {
            entity::scope::read::record_collection(table, key, version);
        }
    }
}

/// The current versions of `keys`, each made (a new random number, filled under a lease)
/// where there is none; `None` where a write has it marked or the cache could not answer.
pub(super) async fn versions_of(
    state: &impl Context,
    keys: &[String],
    label: &str,
) -> Vec<Option<i64>> {
    let lease = new_lease();
    let cache = state.cache();
    let found = match cache.leased_get_many(keys, &lease, lease_ttl(state)).await {
        Ok(found) => found,
        Err(e) => {
            state.health().read_failed(&e);
            return vec![None; keys.len()];
        }
    };
    let counts = &state.metrics();
    let mut versions = Vec::with_capacity(keys.len());
    let mut fills = Vec::new();
    for (i, (key, got)) in keys.iter().zip(found).enumerate() {
        match got {
            Some(v) => {
                counts.cache_hits.with_label_values(&[label]).inc();
                versions.push(Some(v.version));
            }
            None => {
                counts.cache_misses.with_label_values(&[label]).inc();
                versions.push(None);
                let version = (rand::random::<u64>() >> 1) as i64;
                let payload = PAYLOAD.to_owned();
                fills.push((i, (key.clone(), Versioned { version, payload })));
            }
        }
    }
    if fills.is_empty() {
        return versions;
    }
    let entries: Vec<(String, Versioned)> = fills.iter().map(|(_, e)| e.clone()).collect();
    match cache
        .leased_fill_many(&entries, &lease, state.settings().cache_ttl())
        .await
    {
        Ok(stored) => {
            // A fill refused (a write marked the version or revoked the lease since) leaves
            // the version unknown.
            for ((i, (_, v)), stored) in fills.iter().zip(stored) {
                if stored {
                    versions[*i] = Some(v.version);
                }
            }
        }
        Err(e) => state.health().read_failed(&e),
    }
    versions
}
