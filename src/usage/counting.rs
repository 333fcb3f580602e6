//! Counting every command, once for all fields: the GraphQL pipeline records each root field an
//! operation runs (`c_<field>`) and the operation's viewer (`user_set`) in an in-process buffer, and a
//! background task flushes the buffer to the cache tier every [`FLUSH_EVERY`].
//!
//! Why a buffer: counting must never fail or slow a request. Recording is a map update under
//! a mutex; the cache round trips (`INCRBY`, `SADD`, the `…:updated_time` stamps) and the one
//! SQL query that resolving a token may cost happen off the request path. When the cache is
//! unreachable the increments stay in the buffer and are retried on the next flush, so a cache
//! outage delays counts but loses none (a command that timed out *after* Redis applied it may
//! be counted twice; that is the only imprecision).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use parking_lot::Mutex;
use tokio::sync::watch;

use crate::backends::cache::{CacheResult, KeyValue};
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

/// Increments and viewers not yet written to the cache tier.
#[derive(Default)]
pub struct UsageBuffer {
    pending: Mutex<Pending>,
    /// One flush at a time, so "flush, then read the cache" sees every earlier increment.
    flush_lock: tokio::sync::Mutex<()>,
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

    /// Writes the buffer to the cache tier; what could not be written stays for the next
    /// flush. Returns whether everything was written.
    pub async fn flush(&self, state: &AppState) -> bool {
        let _one_at_a_time = self.flush_lock.lock().await;
        let (counts, auths, mut users) = {
            let mut p = self.pending.lock();
            (
                std::mem::take(&mut p.counts),
                std::mem::take(&mut p.auths),
                std::mem::take(&mut p.users),
            )
        };
        if counts.is_empty() && auths.is_empty() && users.is_empty() {
            return true;
        }
        // Resolving a token is one SQL query unless a resolver already did it.
        let viewers: Vec<_> = futures::stream::iter(auths.into_values())
            .map(|auth| async move { auth.viewer_for_counting().await })
            .buffer_unordered(8)
            .collect()
            .await;
        users.extend(viewers.into_iter().flatten().map(|v| v.id.to_string()));

        let cache = &state.kv;
        let now = chrono::Utc::now().timestamp_millis();
        let counted = futures::future::join_all(
            counts
                .iter()
                .map(|(field, n)| async move { cache.incr_by(&counter_key(field), *n).await }),
        )
        .await;
        let mut failed_counts = HashMap::new();
        let mut any_count = false;
        for ((field, n), r) in counts.into_iter().zip(counted) {
            match r {
                Ok(_) => any_count = true,
                Err(_) => {
                    failed_counts.insert(field, n);
                }
            }
        }
        let added = futures::future::join_all(users.iter().map(|u| cache.sadd(USER_SET, u))).await;
        let mut failed_users = HashSet::new();
        let mut any_user = false;
        for (u, r) in users.into_iter().zip(added) {
            match r {
                Ok(_) => any_user = true,
                Err(_) => {
                    failed_users.insert(u);
                }
            }
        }
        // Stamps are best effort: a missing stamp only makes the sync copy, never restore.
        if any_count {
            let _ = write_time(cache.as_ref(), COUNTERS_UPDATED, now).await;
        }
        if any_user {
            let _ = write_time(cache.as_ref(), USER_SET_UPDATED, now).await;
        }
        let all_ok = failed_counts.is_empty() && failed_users.is_empty();
        if !all_ok {
            let mut p = self.pending.lock();
            for (field, n) in failed_counts {
                *p.counts.entry(field).or_insert(0) += n;
            }
            p.users.extend(failed_users);
        }
        all_ok
    }
}

/// The cache key of a root field's counter.
pub fn counter_key(field: &str) -> String {
    format!("{COUNTER_PREFIX}{field}")
}

/// Reads a counter (0 when absent).
pub async fn read_counter(kv: &dyn KeyValue, key: &str) -> CacheResult<i64> {
    Ok(kv.get(key).await?.and_then(|v| v.parse().ok()).unwrap_or(0))
}

/// Stores an epoch-milliseconds stamp.
pub async fn write_time(kv: &dyn KeyValue, key: &str, millis: i64) -> CacheResult<()> {
    kv.set(key, &millis.to_string(), None).await
}

/// Reads an epoch-milliseconds stamp written by [`write_time`].
pub async fn read_time(kv: &dyn KeyValue, key: &str) -> CacheResult<Option<i64>> {
    Ok(kv.get(key).await?.and_then(|v| v.parse().ok()))
}

/// The background flush: every [`FLUSH_EVERY`], and once more on shutdown.
pub async fn flush_worker(
    state: AppState,
    usage: Arc<UsageBuffer>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = stop.changed() => break,
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
