//! The import's write on SQLite: batches of [`CHUNK_ROWS`] rows through the write path's bulk
//! entry, in one transaction.

use std::fs::File;
use std::sync::Arc;

use entity::trainer;
use tokio::sync::mpsc;

use super::parse::each_row;
use super::rows::{existing, upsert, Importable};
use super::{write_error, ImportKind, CHUNK_ROWS};
use crate::backends::sql::lock_rows;
use crate::consistency;
use crate::error::{AppError, AppResult, OrInternal};
use crate::state::AppState;

/// Step 2 on SQLite: the rows in batches of [`CHUNK_ROWS`], in one transaction, through the
/// write path's bulk entry: the imported ids' entries are marked before `COMMIT` and
/// deleted after it. Returns (inserted, updated).
pub(super) async fn write<M: Importable>(
    state: &AppState,
    kind: ImportKind,
    file: Arc<File>,
    ids: Vec<String>,
) -> AppResult<(usize, usize)> {
    let (tx, mut rx) = mpsc::channel::<Vec<M>>(2);
    let reader = tokio::task::spawn_blocking(move || {
        let mut chunk = Vec::with_capacity(CHUNK_ROWS);
        let mut open_channel = true;
        each_row::<M>(kind, &file, |row| {
            chunk.push(row);
            if chunk.len() == CHUNK_ROWS {
                let full = std::mem::replace(&mut chunk, Vec::with_capacity(CHUNK_ROWS));
                open_channel = tx.blocking_send(full).is_ok();
            }
            open_channel
        })?;
        if !open_channel || (!chunk.is_empty() && tx.blocking_send(chunk).is_err()) {
            return Err(AppError::internal("the import's write stopped"));
        }
        Ok(())
    });
    consistency::write(state, move |txn| {
        Box::pin(async move {
            lock_rows::<trainer::Entity, String>(txn, trainer::Column::Id, []).await?;
            consistency::bulk(M::CACHE_ENTITY, ids)?;
            let version = entity::versioning::next_version(None);
            let (mut inserted, mut updated) = (0, 0);
            while let Some(rows) = rx.recv().await {
                let chunk_ids: Vec<String> = rows.iter().map(|r| r.id().to_owned()).collect();
                let exists = existing::<M, _>(txn, &chunk_ids).await?;
                updated += exists.len();
                inserted += chunk_ids.len() - exists.len();
                upsert::<M>(txn, rows, version).await.map_err(write_error)?;
            }
            // Every row must have been read before this transaction may commit.
            reader.await.or_internal("the CSV reader panicked")??;
            Ok((inserted, updated))
        })
    })
    .await
}
