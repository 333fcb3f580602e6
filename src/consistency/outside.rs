//! Writes whose truth lives outside SQL (a document, a counter), under the same protocol.

use super::refused;
use super::write::{after_failed_commit, begin, may_commit, publish, CacheEffects, Marking};
use super::Context;
use crate::backends::cache::{Versioned, WriteOutcome};
use crate::error::{AppError, AppResult, OrInternal};

/// How a change whose truth lives outside SQL ended (see [`write_outside`]).
pub enum OutsideOutcome<T> {
    /// Written: what to answer, and the entries to store in the cache.
    Written(T, Vec<(String, Versioned)>),
    /// Refused before anything was written: the cache is left as it was.
    Refused(AppError),
}

/// A change whose truth lives outside the SQL database (a document), written under the same
/// protocol as [`write`]: the entries of `keys` are marked, `commit` runs and decides, and
/// the entries it wrote are stored unless newer ones are there. Under `strict` the change is
/// refused, before `commit` runs, when the cache cannot be told of it. An error of `commit`
/// means it may have written (a lost reply): the entries are then deleted, as after a failed
/// `COMMIT`. Like [`write`], it runs to completion even if the request is cancelled.
pub async fn write_outside<T, F>(state: &impl Context, keys: Vec<String>, commit: F) -> AppResult<T>
where
    T: Send + 'static,
    F: std::future::Future<Output = AppResult<OutsideOutcome<T>>> + Send + 'static,
{
    let state = state.clone();
    tokio::spawn(async move {
        let begun = begin(&state, &keys).await;
        if !may_commit(&state, &keys, begun).await {
            return Err(refused());
        }
        let (out, entries) = match commit.await {
            Ok(OutsideOutcome::Written(out, entries)) => (out, entries),
            Ok(OutsideOutcome::Refused(e)) => {
                // Nothing changed: only this write's marks go.
                let unmark: Vec<(String, WriteOutcome)> = keys
                    .iter()
                    .map(|k| (k.clone(), WriteOutcome::Aborted))
                    .collect();
                if begun == Marking::Marked
                    && state
                        .cache()
                        .end_write(&unmark, state.settings().cache_ttl())
                        .await
                        .is_err()
                {
                    state.health().failed(std::iter::empty());
                }
                return Err(e);
            }
            Err(e) => {
                after_failed_commit(&state, keys, begun).await;
                return Err(e);
            }
        };
        // Every marked key is cleared: a key the change did not store is aborted.
        let mut stores: Vec<(String, WriteOutcome)> = entries
            .into_iter()
            .map(|(k, v)| (k, WriteOutcome::Committed(v)))
            .collect();
        for k in &keys {
            if !stores.iter().any(|(s, _)| s == k) {
                stores.push((k.clone(), WriteOutcome::Aborted));
            }
        }
        publish(&state, CacheEffects::stores(stores), begun).await;
        Ok(out)
    })
    .await
    .or_internal("the write task failed")?
}
