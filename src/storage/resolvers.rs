//! Thin resolvers of the key-value storage.

use async_graphql::{Context, Object, Result};

use super::service;
use super::types::StorageEntryInput;
use crate::state::state;
use crate::viewer::require_viewer;

/// Storage reads.
#[derive(Default)]
pub struct StorageQuery;

#[Object]
impl StorageQuery {
    /// The viewer's value at `key`; null when there is none or it was evicted (each user
    /// keeps at most `ARENA_STORAGE_CAPACITY` keys; the least recently read or written goes
    /// first). Reading a key makes it the most recently used.
    async fn storage_get(&self, ctx: &Context<'_>, key: String) -> Result<Option<String>> {
        let viewer = require_viewer(ctx).await?;
        Ok(service::get(state(ctx), viewer.id, &key).await?)
    }

    /// The viewer's keys, least recently read or written first: the next to be evicted comes
    /// first. Listing them reads no value, so it changes no key's place.
    async fn storage_keys(&self, ctx: &Context<'_>) -> Result<Vec<String>> {
        let viewer = require_viewer(ctx).await?;
        Ok(service::keys(state(ctx), viewer.id).await?)
    }
}

/// Storage writes.
#[derive(Default)]
pub struct StorageMutation;

#[Object]
impl StorageMutation {
    /// Stores up to 100 entries for the viewer (key ≤ 256 bytes, value ≤ 64 KiB); every
    /// entry is checked before any is written. Returns how many were stored.
    async fn storage_set(&self, ctx: &Context<'_>, entries: Vec<StorageEntryInput>) -> Result<i32> {
        let viewer = require_viewer(ctx).await?;
        let entries: Vec<(String, String)> =
            entries.into_iter().map(|e| (e.key, e.value)).collect();
        Ok(service::set(state(ctx), viewer.id, &entries).await? as i32)
    }
}
