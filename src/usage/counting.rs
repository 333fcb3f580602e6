//! Counting every command, once for all fields: the GraphQL pipeline records each root field
//! an operation runs (`c_<field>`) and the operation's viewer (`user_set`) in an in-process
//! buffer, and a background task flushes the buffer every [`FLUSH_EVERY`].
//!
//! Why a buffer: counting must never fail or slow a request. Recording is a map update under
//! a mutex; the round trips and the one SQL query that resolving a token may cost happen off
//! the request path.
//!
//! Where counts go (see `docs/usage-counters.md`): each flush *adds* the buffered counts to
//! the document store in one atomic update (`$inc`), which returns the totals; the document
//! store is the truth, so a cache tier that restarts empty (Redis without persistence)
//! loses no count. The totals are then *published* to the cache tier's counters, each raised
//! to the total and never lowered, so replicas publishing in any order converge on the
//! latest totals. A publish that finds the restore marker gone (the cache restarted or was
//! emptied) puts `user_set` back from the documents too. While the document store cannot be
//! reached the counts stay in the buffer and are retried; while only the cache cannot, the
//! next flush publishes the totals again. A count is only ever counted twice if the document
//! store applied an update whose reply was lost.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use parking_lot::Mutex;
use serde_json::Value;

use crate::backends::cache::{CacheResult, KeyValue};
use crate::backends::documents::Update;
use crate::state::AppState;
use crate::viewer::RequestAuth;

/// Most distinct credentials remembered between two flushes.
pub const MAX_PENDING_CREDENTIALS: usize = 10_000;

/// How often the buffer is flushed to the cache tier.
pub const FLUSH_EVERY: Duration = Duration::from_millis(100);

/// Prefix of the per-field counters.
pub const COUNTER_PREFIX: &str = "c_";
/// When the counters last changed (epoch milliseconds), shared by every counter.
pub const COUNTERS_UPDATED: &str = "c_:updated_time";
/// The set of user ids that ran at least one command.
pub const USER_SET: &str = "user_set";
/// When `user_set` last changed (epoch milliseconds).
pub const USER_SET_UPDATED: &str = "user_set:updated_time";
/// The document store collection of the counters and `user_set` documents.
pub const USAGE_COLLECTION: &str = "usage";
/// The document of the counters: `{counters: {field: n}, updated_time}`.
pub const COUNTERS_DOC: &str = "counters";
/// The document of `user_set`: `{members: [...], updated_time}`.
pub const USER_SET_DOC: &str = "user_set";
/// Present while the cache tier holds `user_set` as restored from the documents; a cache
/// that lost it (restarted, emptied) gets `user_set` back at the next publish.
pub const RESTORED: &str = "usage:restored";

/// Increments and viewers not yet written to the cache tier.
#[derive(Default)]
pub struct UsageBuffer {
    pending: Mutex<Pending>,
    /// One flush at a time, so "flush, then read the cache" sees every earlier increment.
    flush_lock: tokio::sync::Mutex<()>,
    /// The last totals could not be published to the cache tier: the next flush does it even
    /// with nothing to count.
    publish_owed: std::sync::atomic::AtomicBool,
}

#[derive(Default)]
struct Pending {
    counts: HashMap<String, i64>,
    /// Requests whose viewer is still to be resolved, one per distinct `Authorization`.
    auths: HashMap<String, RequestAuth>,
    users: HashSet<String>,
}

impl UsageBuffer {
    /// Counts one execution of the root field `field`.
    pub fn record_field(&self, field: &str) {
        let mut p = self.pending.lock();
        match p.counts.get_mut(field) {
            Some(n) => *n += 1,
            None => {
                p.counts.insert(field.to_owned(), 1);
            }
        }
    }

    /// Counts one execution of each of `fields` (an operation's root fields), under one lock.
    pub fn record_fields<S: AsRef<str>>(&self, fields: &[S]) {
        if fields.is_empty() {
            return;
        }
        let mut p = self.pending.lock();
        for field in fields {
            let field = field.as_ref();
            match p.counts.get_mut(field) {
                Some(n) => *n += 1,
                None => {
                    p.counts.insert(field.to_owned(), 1);
                }
            }
        }
    }

    /// Remembers the request's credentials; the viewer is found at the next flush (see
    /// [`RequestAuth::viewer_for_counting`]). At most [`MAX_PENDING_CREDENTIALS`] distinct
    /// credentials wait between flushes; beyond that a request's viewer is not counted.
    pub fn record_viewer(&self, auth: &RequestAuth) {
        if let Some(header) = auth.header() {
            let mut p = self.pending.lock();
            let room = p.auths.len() < MAX_PENDING_CREDENTIALS;
            match p.auths.get_mut(header) {
                // Keep the one that knows its viewer: an API key is only ever checked by a
                // resolver that asked for it (see `viewer_for_counting`).
                Some(known) if !known.is_resolved() && auth.is_resolved() => {
                    *known = auth.clone();
                }
                Some(_) => {}
                None if room => {
                    p.auths.insert(header.to_owned(), auth.clone());
                }
                None => {}
            }
        }
    }

    /// Whether nothing waits to be flushed.
    pub fn is_empty(&self) -> bool {
        let p = self.pending.lock();
        p.counts.is_empty() && p.auths.is_empty() && p.users.is_empty()
    }

    /// Adds the buffer to the document store, then publishes the totals to the cache tier;
    /// counts the document store did not take stay for the next flush. Returns whether
    /// everything reached both.
    pub async fn flush(&self, state: &AppState) -> bool {
        use std::sync::atomic::Ordering;
        let _one_at_a_time = self.flush_lock.lock().await;
        let (counts, auths, mut users) = {
            let mut p = self.pending.lock();
            (
                std::mem::take(&mut p.counts),
                std::mem::take(&mut p.auths),
                std::mem::take(&mut p.users),
            )
        };
        let owed = self.publish_owed.load(Ordering::SeqCst);
        if counts.is_empty() && auths.is_empty() && users.is_empty() && !owed {
            return true;
        }
        // Resolving a token is one SQL query unless a resolver already did it.
        let viewers: Vec<_> = futures::stream::iter(auths.into_values())
            .map(|auth| async move { auth.viewer_for_counting().await })
            .buffer_unordered(8)
            .collect()
            .await;
        users.extend(viewers.into_iter().flatten().map(|v| v.id.to_string()));

        let durable = match add_to_documents(state, &counts, &users).await {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(error = ?e, "usage counts wait for the document store");
                let mut p = self.pending.lock();
                for (field, n) in counts {
                    *p.counts.entry(field).or_insert(0) += n;
                }
                p.users.extend(users);
                return false;
            }
        };
        // After a failed publish the new members of that flush never reached `user_set`:
        // this one puts every member back.
        let published = publish(state, &durable, owed).await.is_ok();
        self.publish_owed.store(!published, Ordering::SeqCst);
        published
    }
}

/// What the document store holds after a flush added to it.
struct Durable {
    /// Every counter's total, and the counters' stamp.
    counters: Value,
    /// `user_set`'s new members, and the stamp (present when there were some).
    new_users: Vec<String>,
    users_time: Option<i64>,
}

/// Adds `counts` and `users` to the documents in one atomic update each; the counters
/// document after it.
async fn add_to_documents(
    state: &AppState,
    counts: &HashMap<String, i64>,
    users: &HashSet<String>,
) -> anyhow::Result<Durable> {
    let now = chrono::Utc::now().timestamp_millis();
    let mut update = Update::default();
    for (field, n) in counts {
        update.inc.push((format!("counters.{field}"), *n));
    }
    if !counts.is_empty() {
        update.max.push(("updated_time".into(), now));
    }
    let counters = state
        .docs
        .update(USAGE_COLLECTION, COUNTERS_DOC, &update)
        .await?;
    let mut users_time = None;
    let new_users: Vec<String> = users.iter().cloned().collect();
    if !new_users.is_empty() {
        let doc = state
            .docs
            .update(
                USAGE_COLLECTION,
                USER_SET_DOC,
                &Update {
                    max: vec![("updated_time".into(), now)],
                    add_to_set: vec![("members".into(), new_users.clone())],
                    ..Update::default()
                },
            )
            .await?;
        users_time = doc.get("updated_time").and_then(Value::as_i64);
    }
    Ok(Durable {
        counters,
        new_users,
        users_time,
    })
}

/// The counters' totals (and their stamp) of a counters document, as cache counters.
pub fn totals(counters_doc: &Value) -> Vec<(String, i64)> {
    let mut out: Vec<(String, i64)> = counters_doc
        .get("counters")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(field, n)| Some((counter_key(field), n.as_i64()?)))
                .collect()
        })
        .unwrap_or_default();
    if let Some(t) = counters_doc.get("updated_time").and_then(Value::as_i64) {
        out.push((COUNTERS_UPDATED.to_owned(), t));
    }
    out
}

/// Raises the cache tier's counters to the totals, adds the new members to `user_set`, and
/// puts all of `user_set` back when the cache lost it (or `full`).
async fn publish(state: &AppState, durable: &Durable, full: bool) -> CacheResult<()> {
    let cache = state.kv.as_ref();
    let mut raise = totals(&durable.counters);
    if let Some(t) = durable.users_time {
        raise.push((USER_SET_UPDATED.to_owned(), t));
    }
    cache.raise_many(&raise).await?;
    for u in &durable.new_users {
        cache.sadd(USER_SET, u).await?;
    }
    if full || cache.get(RESTORED).await?.is_none() {
        restore_user_set(state).await?;
    }
    Ok(())
}

/// Puts every member of the `user_set` document back into the cache tier, then sets the
/// restore marker (idempotent: replicas may do it at the same time).
pub async fn restore_user_set(state: &AppState) -> CacheResult<()> {
    let cache = state.kv.as_ref();
    let doc = match state.docs.get(USAGE_COLLECTION, USER_SET_DOC).await {
        Ok(d) => d,
        // Not a cache failure: leave the marker unset, the next publish tries again.
        Err(e) => {
            tracing::warn!(error = ?e, "user_set could not be read from the document store");
            return Ok(());
        }
    };
    if let Some(doc) = doc {
        let members: Vec<String> = doc
            .get("members")
            .and_then(|m| serde_json::from_value(m.clone()).ok())
            .unwrap_or_default();
        for m in &members {
            cache.sadd(USER_SET, m).await?;
        }
        if let Some(t) = doc.get("updated_time").and_then(Value::as_i64) {
            cache
                .raise_many(&[(USER_SET_UPDATED.to_owned(), t)])
                .await?;
        }
    }
    cache.set(RESTORED, "1", None).await
}

/// The cache key of a root field's counter.
pub fn counter_key(field: &str) -> String {
    format!("{COUNTER_PREFIX}{field}")
}

/// Reads a counter (0 when absent).
pub async fn read_counter(kv: &dyn KeyValue, key: &str) -> CacheResult<i64> {
    Ok(kv.get(key).await?.and_then(|v| v.parse().ok()).unwrap_or(0))
}

/// Reads an epoch-milliseconds stamp.
pub async fn read_time(kv: &dyn KeyValue, key: &str) -> CacheResult<Option<i64>> {
    Ok(kv.get(key).await?.and_then(|v| v.parse().ok()))
}

/// The background flush: every [`FLUSH_EVERY`], and once more on shutdown.
pub async fn flush_worker(
    state: AppState,
    usage: Arc<UsageBuffer>,
    stop: tokio_util::sync::CancellationToken,
) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(FLUSH_EVERY) => {}
        }
        usage.flush(&state).await;
    }
    flush_on_shutdown(&state, &usage).await;
}

/// Flushes, retrying for a little while if the cache is away (shutdown must not lose counts
/// it can still deliver).
pub async fn flush_on_shutdown(state: &AppState, usage: &UsageBuffer) -> bool {
    for _ in 0..20 {
        if usage.flush(state).await {
            return true;
        }
        tokio::time::sleep(FLUSH_EVERY).await;
    }
    tracing::warn!("usage counts could not be flushed to the cache before stopping");
    false
}
