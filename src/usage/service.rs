//! The rules of usage stats, dice and user data; no GraphQL types here.
//!
//! User data is one JSON document per user, `user_<id>` (characters and saved rolls). Its
//! truth is the document store; the cache tier holds a versioned copy under the write-through
//! protocol of cached rows (`docs/cache-consistency.md`), with the document's `updated_time`
//! as its version, and the stamp `user_<id>:updated_time` beside it:
//!
//! * a change is a read-modify-write of the stored document, written back with a
//!   compare-and-set on its `updated_time` and retried when another replica's writer got
//!   there first; changes of one user on one instance queue on an in-process lock, so none of
//!   them ever runs out of retries, and no change is lost with or without the cache;
//! * the copy is marked before the document is written and replaced after
//!   ([`consistency::write_outside`]); under `strict` a change the cache cannot hear of is
//!   refused (`UNAVAILABLE`) before anything is written, under `available` it goes ahead
//!   and the copy is owed a deletion;
//! * a read that misses (or finds the copy marked) loads the document and fills the copy
//!   under a lease, so a slow reader can never put an older document back.

use chrono::{TimeZone, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::counting::{
    self, read_counter, read_time, UsageBuffer, COUNTERS_DOC, COUNTERS_UPDATED, COUNTER_PREFIX,
    USAGE_COLLECTION, USER_SET, USER_SET_DOC,
};
use super::dice::{self, DiceError};
use crate::backends::cache::{CacheError, Versioned};
use crate::consistency::{self, Cached, OutsideOutcome, TOMBSTONE};
use crate::error::{AppError, AppResult, OrInternal};
use crate::state::AppState;

/// The document store collection of user data documents (`user_<id>`).
pub const USER_DATA_COLLECTION: &str = "user_data";
/// Most saved rolls per user.
pub const MAX_SAVED_ROLLS: usize = 100;
/// Longest saved-roll name, in characters.
pub const MAX_ROLL_NAME: usize = 64;

/// Most characters per user.
pub const MAX_CHARACTERS: usize = 50;
/// Largest character sheet, in bytes of JSON.
pub const MAX_SHEET_BYTES: usize = 16 * 1024;
/// The metrics label of user data copies in the cache.
const CACHE_ENTITY: &str = "user_data";

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

/// The cache key of the stamp of a user's data: when it last changed (epoch milliseconds).
pub fn user_stamp_key(user_id: i64) -> String {
    format!("user_{user_id}:updated_time")
}

/// The viewer's data: the cache's copy, else the document store's (then filled).
pub async fn user_data(state: &AppState, user_id: i64) -> AppResult<UserData> {
    let key = user_key(user_id);
    let (cached, lease) =
        consistency::read_keys::<UserData>(state, CACHE_ENTITY, std::slice::from_ref(&key)).await;
    match cached.into_iter().next() {
        Some(Cached::Row(doc)) => return Ok(doc),
        Some(Cached::Gone) => return Ok(UserData::default()),
        _ => {}
    }
    let (doc, exists) = load_document(state, &key).await?;
    let row = if exists {
        Some(serde_json::to_value(&doc).or_internal("encoding user data")?)
    } else {
        None
    };
    consistency::fill_keys(state, &lease, vec![(key, doc.updated_time, row)]).await;
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

/// How often a change is tried again when another replica changed the document meanwhile.
const CHANGE_ATTEMPTS: usize = 20;

/// Changes the viewer's data; `change` decides and may refuse (it runs again when another
/// replica changed the document meanwhile). See the module documentation.
async fn modify<T, F>(state: &AppState, user_id: i64, mut change: F) -> AppResult<T>
where
    T: Send + 'static,
    F: FnMut(&mut UserData) -> AppResult<T> + Send + 'static,
{
    let key = user_key(user_id);
    let _queued = state.local_locks.lock(&key).await;
    let docs = state.docs.clone();
    let doc_key = key.clone();
    let (out, version) = consistency::write_outside(state, vec![key], async move {
        for _ in 0..CHANGE_ATTEMPTS {
            let stored = docs.get(USER_DATA_COLLECTION, &doc_key).await?;
            let expected = stored
                .as_ref()
                .map(|d| d.get("updated_time").and_then(Value::as_i64).unwrap_or(0));
            let mut doc: UserData = stored
                .and_then(|v| serde_json::from_value(v).ok())
                .unwrap_or_default();
            let out = match change(&mut doc) {
                Ok(out) => out,
                Err(e) => return Ok(OutsideOutcome::Refused(e)),
            };
            doc.updated_time = Utc::now().timestamp_millis().max(doc.updated_time + 1);
            let value = serde_json::to_value(&doc).or_internal("encoding user data")?;
            if docs
                .put_if(
                    USER_DATA_COLLECTION,
                    &doc_key,
                    &value,
                    "updated_time",
                    expected,
                )
                .await?
            {
                let entry = Versioned {
                    version: doc.updated_time,
                    payload: value.to_string(),
                };
                return Ok(OutsideOutcome::Written(
                    (out, doc.updated_time),
                    vec![(doc_key, entry)],
                ));
            }
        }
        Ok(OutsideOutcome::Refused(AppError::Conflict(
            "your user data is being changed by other requests; try again".into(),
        )))
    })
    .await?;
    // The stamp only ever moves forward; a failure leaves the previous one.
    let _ = state
        .kv
        .raise_many(&[(user_stamp_key(user_id), version)])
        .await;
    Ok(out)
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

/// A character of the viewer's: its name (unique per user) and its sheet, a JSON object kept
/// as given. Stored in the user data document as `{"name": …, "sheet": {…}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CharacterSheet {
    /// Its name, unique per user.
    pub name: String,
    /// Anything the user keeps about it.
    pub sheet: Value,
}

/// The characters of a document that have a name (entries of another shape, kept as they
/// are in the document, are not characters of this API).
fn named_characters(doc: &UserData) -> Vec<CharacterSheet> {
    doc.characters
        .iter()
        .filter_map(|c| {
            let name = c.get("name")?.as_str()?.to_owned();
            let sheet = c.get("sheet").cloned().unwrap_or(Value::Null);
            Some(CharacterSheet { name, sheet })
        })
        .collect()
}

fn is_named(c: &Value, name: &str) -> bool {
    c.get("name").and_then(Value::as_str) == Some(name)
}

/// The viewer's characters, in the order they were first set.
pub async fn characters(state: &AppState, user_id: i64) -> AppResult<Vec<CharacterSheet>> {
    Ok(named_characters(&user_data(state, user_id).await?))
}

/// Sets (creates or replaces) the viewer's character `name`; `sheet` must be a JSON object
/// of at most [`MAX_SHEET_BYTES`].
pub async fn set_character(
    state: &AppState,
    user_id: i64,
    name: &str,
    sheet: Value,
) -> AppResult<CharacterSheet> {
    let name = validate_name(name)?;
    if !sheet.is_object() {
        return Err(AppError::invalid("sheet", "must be a JSON object"));
    }
    let bytes = sheet.to_string().len();
    if bytes > MAX_SHEET_BYTES {
        return Err(AppError::invalid(
            "sheet",
            format!("is {bytes} bytes of JSON; the limit is {MAX_SHEET_BYTES}"),
        ));
    }
    let character = CharacterSheet { name, sheet };
    let stored = serde_json::to_value(&character).or_internal("encoding a character")?;
    let out = character.clone();
    modify(state, user_id, move |doc| {
        let count = named_characters(doc).len();
        match doc
            .characters
            .iter_mut()
            .find(|c| is_named(c, &character.name))
        {
            Some(existing) => *existing = stored.clone(),
            None if count >= MAX_CHARACTERS => {
                return Err(AppError::invalid(
                    "name",
                    format!("you already have {MAX_CHARACTERS} characters; delete one first"),
                ))
            }
            None => doc.characters.push(stored.clone()),
        }
        Ok(())
    })
    .await?;
    Ok(out)
}

/// Deletes the viewer's character `name`; `false` when there was none of that name.
pub async fn delete_character(state: &AppState, user_id: i64, name: &str) -> AppResult<bool> {
    let name = name.trim().to_owned();
    if !named_characters(&user_data(state, user_id).await?)
        .iter()
        .any(|c| c.name == name)
    {
        return Ok(false);
    }
    modify(state, user_id, move |doc| {
        let before = doc.characters.len();
        doc.characters.retain(|c| !is_named(c, &name));
        Ok(doc.characters.len() != before)
    })
    .await
}

/// User data (`user_<id>`, in the cache tier and the document store) goes with its owner's
/// account.
pub struct UsageAccountHook;

#[async_trait::async_trait]
impl crate::users::hooks::AccountHook for UsageAccountHook {
    async fn forget(&self, state: &AppState, user_id: i64) -> AppResult<()> {
        let key = user_key(user_id);
        // The document goes first, whatever the cache: nobody can read a deleted account's
        // data (reads are the viewer's own), so a copy left in the cache only waits to expire.
        let (doc, _) = load_document(state, &key).await?;
        state.docs.delete(USER_DATA_COLLECTION, &key).await?;
        let tombstone = Versioned {
            version: Utc::now().timestamp_millis().max(doc.updated_time + 1),
            payload: TOMBSTONE.to_owned(),
        };
        let entry_key = key.clone();
        consistency::write_outside(state, vec![key], async move {
            Ok(OutsideOutcome::Written((), vec![(entry_key, tombstone)]))
        })
        .await?;
        state
            .kv
            .del(&[user_stamp_key(user_id)])
            .await
            .map_err(cache_err("removing the user data stamp"))?;
        Ok(())
    }
}
