//! The rules of usage stats, dice and user data; no GraphQL types here.
//!
//! User data is one JSON document per user, `user_<id>`, in the cache tier. Every change is a
//! read-modify-write under a short per-user lock in the cache (`SET NX` with an expiry,
//! released with compare-and-delete), so two concurrent saves never lose one another. Each
//! change is written to the document store as well as to the cache: the in-process cache is
//! an LRU, and a user's saved rolls must not be lost to an eviction or to a Redis restart
//! between two runs of the sync. A read that misses the cache loads the document store's copy
//! and puts it back in the cache.

use std::time::Duration;

use chrono::{TimeZone, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::counting::{
    self, read_counter, read_time, UsageBuffer, COUNTERS_UPDATED, COUNTER_PREFIX, USER_SET,
};
use super::dice::{self, DiceError};
use super::types::{CommandCount, Roll, SavedRoll, UsageStats};
use crate::backends::cache::CacheError;
use crate::error::{AppError, AppResult};
use crate::state::AppState;

/// The document store collection of user data documents (`user_<id>`).
pub const USER_DATA_COLLECTION: &str = "user_data";
/// Most saved rolls per user.
pub const MAX_SAVED_ROLLS: usize = 100;
/// Longest saved-roll name, in characters.
pub const MAX_ROLL_NAME: usize = 64;

const LOCK_TTL: Duration = Duration::from_secs(5);
const LOCK_WAIT: Duration = Duration::from_secs(3);

fn cache_err(context: &'static str) -> impl FnOnce(CacheError) -> AppError {
    move |e| AppError::caused_by(context, e)
}

/// Flushes this instance's buffered counts (`usage`), then reads every counter and
/// `user_set`.
pub async fn stats(state: &AppState, usage: Option<&UsageBuffer>) -> AppResult<UsageStats> {
    if let Some(usage) = usage {
        usage.flush(state).await;
    }
    let cache = state.cache.as_ref();
    let keys = cache
        .scan_prefix(COUNTER_PREFIX)
        .await
        .map_err(cache_err("listing usage counters"))?;
    let names: Vec<String> = keys
        .into_iter()
        .filter_map(|k| k.strip_prefix(COUNTER_PREFIX).map(str::to_owned))
        .filter(|n| !n.is_empty() && !n.contains(':'))
        .collect();
    let counts = futures::future::join_all(
        names
            .iter()
            .map(|n| async move { read_counter(cache, &counting::counter_key(n)).await }),
    )
    .await;
    let mut commands = Vec::with_capacity(names.len());
    for (name, count) in names.into_iter().zip(counts) {
        let count = count.map_err(cache_err("reading usage counters"))?;
        commands.push(CommandCount { name, count });
    }
    commands.sort_by(|a, b| a.name.cmp(&b.name));
    let users = cache
        .smembers(USER_SET)
        .await
        .map_err(cache_err("reading user_set"))?
        .len() as i64;
    let updated_at = read_time(cache, COUNTERS_UPDATED)
        .await
        .map_err(cache_err("reading the counters' updated_time"))?
        .and_then(|ms| Utc.timestamp_millis_opt(ms).single());
    Ok(UsageStats {
        commands,
        users,
        updated_at,
    })
}

/// A dice error as a `BAD_USER_INPUT` on `field`, with the position in the message.
pub fn dice_error(field: &str, e: &DiceError) -> AppError {
    AppError::invalid(field, format!("at position {}: {}", e.position, e.message))
}

/// Parses and rolls `expression` with the instance's random source.
pub fn roll(state: &AppState, expression: &str) -> Result<Roll, DiceError> {
    let parsed = dice::parse(expression)?;
    let rolled = dice::roll(&parsed, &mut *state.rng.lock());
    Ok(Roll::new(expression.to_owned(), rolled))
}

/// A user's data document.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserData {
    /// The user's characters (free-form, kept as given).
    #[serde(default)]
    pub characters: Vec<Value>,
    /// Named dice expressions.
    #[serde(default)]
    pub saved_rolls: Vec<SavedRoll>,
    /// When the document last changed (epoch milliseconds); the sync compares it.
    #[serde(default, rename = "updated_time")]
    pub updated_time: i64,
    /// Anything else the document holds, kept as is.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, Value>,
}

/// The cache key (and document id) of a user's data.
pub fn user_key(user_id: i64) -> String {
    format!("user_{user_id}")
}

/// Whether `key` is a user data key (`user_<digits>`).
pub fn is_user_key(key: &str) -> bool {
    key.strip_prefix("user_")
        .is_some_and(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()))
}

fn parse_doc(raw: &str) -> Option<UserData> {
    serde_json::from_str(raw).ok()
}

/// The viewer's data: the cache, else the document store (then put back in the cache).
pub async fn user_data(state: &AppState, user_id: i64) -> AppResult<UserData> {
    let key = user_key(user_id);
    match state.cache.get(&key).await {
        Ok(Some(raw)) => {
            if let Some(doc) = parse_doc(&raw) {
                return Ok(doc);
            }
        }
        Ok(None) => {}
        Err(_) => return load_document(state, &key).await,
    }
    let doc = load_document(state, &key).await?;
    if doc.updated_time > 0 {
        if let Ok(raw) = serde_json::to_string(&doc) {
            let _ = state
                .cache
                .set_nx(&key, &raw, state.settings.cache_ttl())
                .await;
        }
    }
    Ok(doc)
}

async fn load_document(state: &AppState, key: &str) -> AppResult<UserData> {
    Ok(state
        .docs
        .get(USER_DATA_COLLECTION, key)
        .await?
        .and_then(|v| serde_json::from_value(v).ok())
        .unwrap_or_default())
}

/// Changes the viewer's data under the per-user lock; `change` decides and may refuse.
async fn modify<T>(
    state: &AppState,
    user_id: i64,
    change: impl FnOnce(&mut UserData) -> AppResult<T>,
) -> AppResult<T> {
    let key = user_key(user_id);
    let lock_key = format!("{key}:lock");
    let token = uuid::Uuid::new_v4().simple().to_string();
    let deadline = tokio::time::Instant::now() + LOCK_WAIT;
    let locked = loop {
        match state.cache.set_nx(&lock_key, &token, LOCK_TTL).await {
            Ok(true) => break true,
            // The cache is away: the document store alone serves (and is the truth anyway).
            Err(_) => break false,
            Ok(false) if tokio::time::Instant::now() >= deadline => {
                return Err(AppError::Conflict(
                    "your user data is being changed by another request; try again".into(),
                ))
            }
            Ok(false) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    };
    let result = async {
        // Under the lock the document store holds the latest version: every change writes it.
        let cached = if locked {
            state
                .cache
                .get(&key)
                .await
                .ok()
                .flatten()
                .and_then(|r| parse_doc(&r))
        } else {
            None
        };
        let stored = load_document(state, &key).await?;
        let mut doc = match cached {
            Some(c) if c.updated_time >= stored.updated_time => c,
            _ => stored,
        };
        let out = change(&mut doc)?;
        doc.updated_time = Utc::now().timestamp_millis().max(doc.updated_time + 1);
        let value = serde_json::to_value(&doc).map_err(AppError::internal)?;
        state.docs.put(USER_DATA_COLLECTION, &key, &value).await?;
        if locked
            && state
                .cache
                .set(&key, &value.to_string(), None)
                .await
                .is_err()
        {
            // Do not leave an older copy behind in the cache.
            let _ = state.cache.del(std::slice::from_ref(&key)).await;
        }
        Ok(out)
    }
    .await;
    if locked {
        let _ = state.cache.del_if_equals(&lock_key, &token).await;
    }
    result
}

fn validate_name(name: &str) -> AppResult<String> {
    let name = name.trim();
    if name.is_empty() {
        return Err(AppError::invalid("name", "must not be empty"));
    }
    if name.chars().count() > MAX_ROLL_NAME {
        return Err(AppError::invalid(
            "name",
            format!("must be at most {MAX_ROLL_NAME} characters"),
        ));
    }
    Ok(name.to_owned())
}

/// Saves (or replaces) a named expression; the expression must parse.
pub async fn save_roll(
    state: &AppState,
    user_id: i64,
    name: &str,
    expression: &str,
) -> AppResult<SavedRoll> {
    let name = validate_name(name)?;
    dice::parse(expression).map_err(|e| dice_error("expression", &e))?;
    let saved = SavedRoll {
        name,
        expression: expression.to_owned(),
    };
    let out = saved.clone();
    modify(state, user_id, move |doc| {
        let count = doc.saved_rolls.len();
        match doc.saved_rolls.iter_mut().find(|r| r.name == saved.name) {
            Some(existing) => *existing = saved,
            None if count >= MAX_SAVED_ROLLS => {
                return Err(AppError::invalid(
                    "name",
                    format!("you already have {MAX_SAVED_ROLLS} saved rolls; delete one first"),
                ))
            }
            None => doc.saved_rolls.push(saved),
        }
        Ok(())
    })
    .await?;
    Ok(out)
}

/// Removes a saved roll; `false` when there was none of that name.
pub async fn delete_saved_roll(state: &AppState, user_id: i64, name: &str) -> AppResult<bool> {
    let name = name.trim().to_owned();
    if !user_data(state, user_id)
        .await?
        .saved_rolls
        .iter()
        .any(|r| r.name == name)
    {
        return Ok(false);
    }
    modify(state, user_id, move |doc| {
        let before = doc.saved_rolls.len();
        doc.saved_rolls.retain(|r| r.name != name);
        Ok(doc.saved_rolls.len() != before)
    })
    .await
}

/// Rolls the viewer's saved expression `name`.
pub async fn roll_saved(state: &AppState, user_id: i64, name: &str) -> AppResult<Roll> {
    let name = name.trim();
    let doc = user_data(state, user_id).await?;
    let saved = doc
        .saved_rolls
        .into_iter()
        .find(|r| r.name == name)
        .ok_or_else(|| AppError::NotFound(format!("name: you have no saved roll `{name}`")))?;
    roll(state, &saved.expression).map_err(|e| dice_error("expression", &e))
}

/// User data (`user_<id>`, in the cache tier and the document store) goes with its owner's
/// account.
pub struct UsageAccountHook;

#[async_trait::async_trait]
impl crate::users::hooks::AccountHook for UsageAccountHook {
    async fn forget(&self, state: &AppState, user_id: i64) -> AppResult<()> {
        let key = user_key(user_id);
        state.docs.delete(USER_DATA_COLLECTION, &key).await?;
        state
            .cache
            .del(std::slice::from_ref(&key))
            .await
            .map_err(cache_err("removing user data"))?;
        Ok(())
    }
}
