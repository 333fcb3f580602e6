//! The rules of usage stats, dice and user data; no GraphQL types here.
//!
//! User data is one JSON document per user, `user_<id>`, in the cache tier and in the
//! document store, which is the truth: every change is a read-modify-write of the stored
//! document, written back with a compare-and-set on its `updated_time` and retried when
//! another writer got there first, so two concurrent saves never lose one another, whether
//! or not the cache tier can be reached. While it can, the change also runs under a short
//! per-user lock in the cache tier ([`CacheLock`]), so that the cache's copies are written in
//! the order of the changes. A change made while the cache is away leaves the cache's copy
//! owed an invalidation, delivered before the cache is read again. A read that misses the
//! cache loads the document store's copy and puts it back in the cache.

use std::time::Duration;

use chrono::{TimeZone, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::counting::{
    self, read_counter, read_time, UsageBuffer, COUNTERS_DOC, COUNTERS_UPDATED, COUNTER_PREFIX,
    USAGE_COLLECTION, USER_SET, USER_SET_DOC,
};
use super::dice::{self, DiceError};
use crate::backends::cache::lock::{CacheLock, Wait};
use crate::backends::cache::CacheError;
use crate::error::{AppError, AppResult, OrInternal};
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

/// Usage across the deployment.
#[derive(Debug, Clone)]
pub struct Stats {
    /// `(root field, times it ran)`, by name.
    pub commands: Vec<(String, i64)>,
    /// How many distinct signed-in users ran a command.
    pub users: i64,
    /// When the counters last changed.
    pub updated_at: Option<chrono::DateTime<Utc>>,
}

/// Flushes this instance's buffered counts (`usage`), then reads every counter and
/// `user_set` from the cache tier; from the document store, their truth, when the flush
/// could not publish to the cache or the cache cannot be read (an outage).
pub async fn stats(state: &AppState, usage: Option<&UsageBuffer>) -> AppResult<Stats> {
    let published = match usage {
        Some(usage) => usage.flush(state).await,
        None => true,
    };
    if published {
        match stats_from_cache(state).await {
            Ok(stats) => return Ok(stats),
            Err(e) => tracing::warn!(error = ?e, "stats read from the document store"),
        }
    }
    stats_from_documents(state).await
}

async fn stats_from_cache(state: &AppState) -> Result<Stats, CacheError> {
    let cache = state.kv.as_ref();
    let keys = cache.scan_prefix(COUNTER_PREFIX).await?;
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
        commands.push((name, count?));
    }
    commands.sort();
    let users = cache.smembers(USER_SET).await?.len() as i64;
    let updated_at = read_time(cache, COUNTERS_UPDATED)
        .await?
        .and_then(|ms| Utc.timestamp_millis_opt(ms).single());
    Ok(Stats {
        commands,
        users,
        updated_at,
    })
}

async fn stats_from_documents(state: &AppState) -> AppResult<Stats> {
    let counters = state
        .docs
        .get(USAGE_COLLECTION, COUNTERS_DOC)
        .await?
        .unwrap_or_default();
    let mut commands: Vec<(String, i64)> = counters
        .get("counters")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(name, n)| Some((name.clone(), n.as_i64()?)))
                .collect()
        })
        .unwrap_or_default();
    commands.sort();
    let users = state
        .docs
        .get(USAGE_COLLECTION, USER_SET_DOC)
        .await?
        .and_then(|d| d.get("members").and_then(Value::as_array).map(Vec::len))
        .unwrap_or(0) as i64;
    let updated_at = counters
        .get("updated_time")
        .and_then(Value::as_i64)
        .and_then(|ms| Utc.timestamp_millis_opt(ms).single());
    Ok(Stats {
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
pub fn roll(state: &AppState, expression: &str) -> Result<dice::Rolled, DiceError> {
    let parsed = dice::parse(expression)?;
    Ok(dice::roll(&parsed, &mut *state.rng.lock()))
}

/// A named dice expression, as stored in the user's data document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredRoll {
    /// Its name, unique per user.
    pub name: String,
    /// The dice expression.
    pub expression: String,
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
    pub saved_rolls: Vec<StoredRoll>,
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
/// While the cache is owed invalidations (an outage), straight from the document store.
pub async fn user_data(state: &AppState, user_id: i64) -> AppResult<UserData> {
    let key = user_key(user_id);
    if !state.cache_health.usable() {
        return Ok(load_document(state, &key).await?.0);
    }
    match state.kv.get(&key).await {
        Ok(Some(raw)) => {
            if let Some(doc) = parse_doc(&raw) {
                return Ok(doc);
            }
        }
        Ok(None) => {}
        Err(_) => {
            state.cache_health.failed(std::iter::empty());
            return Ok(load_document(state, &key).await?.0);
        }
    }
    let (doc, _) = load_document(state, &key).await?;
    if doc.updated_time > 0 {
        if let Ok(raw) = serde_json::to_string(&doc) {
            let _ = state
                .kv
                .set_nx(&key, &raw, state.settings.cache_ttl())
                .await;
        }
    }
    Ok(doc)
}

/// The stored document (empty when there is none) and whether there is one.
async fn load_document(state: &AppState, key: &str) -> AppResult<(UserData, bool)> {
    let stored = state.docs.get(USER_DATA_COLLECTION, key).await?;
    let exists = stored.is_some();
    let doc = stored
        .and_then(|v| serde_json::from_value(v).ok())
        .unwrap_or_default();
    Ok((doc, exists))
}

/// How often a change is tried again when another writer changed the document meanwhile.
const CHANGE_ATTEMPTS: usize = 20;

/// Changes the viewer's data; `change` decides and may refuse (it runs again when another
/// writer changed the document meanwhile). See the module documentation.
async fn modify<T>(
    state: &AppState,
    user_id: i64,
    mut change: impl FnMut(&mut UserData) -> AppResult<T>,
) -> AppResult<T> {
    let key = user_key(user_id);
    let lock = if state.cache_health.usable() {
        match CacheLock::acquire(
            &state.kv,
            format!("{key}:lock"),
            LOCK_TTL,
            Wait::up_to(LOCK_WAIT),
        )
        .await
        {
            Ok(Some(lock)) => Some(lock),
            Ok(None) => {
                return Err(AppError::Conflict(
                    "your user data is being changed by another request; try again".into(),
                ))
            }
            // The cache is away: the document store's compare-and-set alone orders changes.
            Err(_) => {
                state.cache_health.failed(std::iter::empty());
                None
            }
        }
    } else {
        None
    };
    let result = async {
        for _ in 0..CHANGE_ATTEMPTS {
            let (mut doc, exists) = load_document(state, &key).await?;
            let expected = exists.then_some(doc.updated_time);
            let out = change(&mut doc)?;
            doc.updated_time = Utc::now().timestamp_millis().max(doc.updated_time + 1);
            let value = serde_json::to_value(&doc).or_internal("encoding user data")?;
            if !state
                .docs
                .put_if(USER_DATA_COLLECTION, &key, &value, "updated_time", expected)
                .await?
            {
                continue;
            }
            let cached =
                lock.is_some() && state.kv.set(&key, &value.to_string(), None).await.is_ok();
            if !cached {
                // Whatever copy the cache holds is older now: it is owed a deletion before
                // the cache is read again.
                state.cache_health.failed_kv([key.clone()]);
            }
            return Ok(out);
        }
        Err(AppError::Conflict(
            "your user data is being changed by other requests; try again".into(),
        ))
    }
    .await;
    if let Some(lock) = lock {
        lock.release().await;
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
) -> AppResult<StoredRoll> {
    let name = validate_name(name)?;
    dice::parse(expression).map_err(|e| dice_error("expression", &e))?;
    let saved = StoredRoll {
        name,
        expression: expression.to_owned(),
    };
    let out = saved.clone();
    modify(state, user_id, move |doc| {
        let saved = saved.clone();
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

/// Rolls the viewer's saved expression `name`; the expression and its roll.
pub async fn roll_saved(
    state: &AppState,
    user_id: i64,
    name: &str,
) -> AppResult<(String, dice::Rolled)> {
    let name = name.trim();
    let doc = user_data(state, user_id).await?;
    let saved = doc
        .saved_rolls
        .into_iter()
        .find(|r| r.name == name)
        .ok_or_else(|| AppError::NotFound(format!("name: you have no saved roll `{name}`")))?;
    let rolled = roll(state, &saved.expression).map_err(|e| dice_error("expression", &e))?;
    Ok((saved.expression, rolled))
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
            .kv
            .del(std::slice::from_ref(&key))
            .await
            .map_err(cache_err("removing user data"))?;
        Ok(())
    }
}
