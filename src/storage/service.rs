//! The rules of the key-value storage: validate every entry before writing any, then write
//! them all in one cache round trip for the viewer (owner `storage:<userId>`). Each user keeps
//! at most `ARENA_STORAGE_CAPACITY` keys; storing beyond it evicts the user's least recently
//! read or written keys, exactly (see [`crate::backends::cache::LruStore`]).

use crate::backends::cache::CacheError;
use crate::error::{AppError, AppResult};
use crate::state::AppState;

/// A storage call's failure: `UNAVAILABLE` when the cache tier (which holds the values) is
/// unreachable or did not answer in time, `INTERNAL` otherwise.
fn failed(doing: &'static str) -> impl FnOnce(CacheError) -> AppError {
    move |e| match e {
        CacheError::Unavailable(_) => AppError::Unavailable(format!(
            "{doing}: the storage tier is unreachable; stored values are kept, try again"
        )),
        e => AppError::caused_by(doing, e),
    }
}

/// Longest key, in bytes.
pub const MAX_KEY_BYTES: usize = 256;
/// Largest value, in bytes.
pub const MAX_VALUE_BYTES: usize = 64 * 1024;
/// Most entries in one `storageSet`.
pub const MAX_ENTRIES: usize = 100;

/// The storage owner of a user's values.
pub fn owner(user_id: i64) -> String {
    format!("storage:{user_id}")
}

/// Removes every value of a user (their account is being deleted).
pub async fn forget_user(state: &AppState, user_id: i64) -> AppResult<()> {
    state
        .storage
        .forget(&owner(user_id))
        .await
        .map_err(failed("removing values"))
}

/// The viewer's keys, least recently read or written first.
pub async fn keys(state: &AppState, user_id: i64) -> AppResult<Vec<String>> {
    state
        .storage
        .keys(&owner(user_id))
        .await
        .map_err(failed("listing keys"))
}

fn check_key(field: &str, key: &str) -> AppResult<()> {
    if key.is_empty() {
        return Err(AppError::invalid(field, "must not be empty"));
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(AppError::invalid(
            field,
            format!("is {} bytes; the limit is {MAX_KEY_BYTES}", key.len()),
        ));
    }
    Ok(())
}

/// Stores every entry, or none when any is invalid; returns how many were stored.
pub async fn set(state: &AppState, user_id: i64, entries: &[(String, String)]) -> AppResult<usize> {
    if entries.is_empty() {
        return Err(AppError::invalid("entries", "give at least one entry"));
    }
    if entries.len() > MAX_ENTRIES {
        return Err(AppError::invalid(
            "entries",
            format!(
                "has {} entries; the limit is {MAX_ENTRIES} per call",
                entries.len()
            ),
        ));
    }
    for (i, (key, value)) in entries.iter().enumerate() {
        check_key(&format!("entries[{i}].key"), key)?;
        if value.len() > MAX_VALUE_BYTES {
            return Err(AppError::invalid(
                format!("entries[{i}].value"),
                format!("is {} bytes; the limit is {MAX_VALUE_BYTES}", value.len()),
            ));
        }
    }
    state
        .storage
        .put(&owner(user_id), entries, state.settings.storage_capacity)
        .await
        .map_err(failed("storing values"))?;
    Ok(entries.len())
}

/// The viewer's value at `key`; null when absent or evicted.
pub async fn get(state: &AppState, user_id: i64, key: &str) -> AppResult<Option<String>> {
    check_key("key", key)?;
    state
        .storage
        .get(&owner(user_id), key)
        .await
        .map_err(failed("reading a value"))
}

/// Stored values go with their owner's account.
pub struct StorageAccountHook;

#[async_trait::async_trait]
impl crate::users::hooks::AccountHook for StorageAccountHook {
    async fn forget(&self, state: &AppState, user_id: i64) -> AppResult<()> {
        forget_user(state, user_id).await
    }
}
