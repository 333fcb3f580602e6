//! The embedded document store: the `documents` table of the SQL database.

use async_trait::async_trait;
use entity::document;
use sea_orm::sea_query::{Expr, OnConflict};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DatabaseBackend, DatabaseConnection,
    EntityTrait, QueryFilter, QueryOrder, QuerySelect, Set, SqlErr, TransactionTrait,
};
use serde_json::Value;

use super::{DocResult, DocumentError, DocumentStore, Update};

/// Documents as JSON text in SQL.
pub struct SqlDocuments {
    db: DatabaseConnection,
}

impl SqlDocuments {
    /// Uses `db`, whose migrations created `documents`.
    pub fn new(db: DatabaseConnection) -> Self {
        Self { db }
    }
}

fn err(e: impl std::error::Error + Send + Sync + 'static) -> DocumentError {
    DocumentError::Store(Box::new(e))
}

/// Reads the document with its row locked for the rest of `txn` (SQLite: the database's write
/// lock taken first), so that a read-modify-write is one step.
async fn locked(
    txn: &sea_orm::DatabaseTransaction,
    collection: &str,
    id: &str,
) -> DocResult<Option<document::Model>> {
    if txn.get_database_backend() == DatabaseBackend::Sqlite {
        document::Entity::update_many()
            .col_expr(document::Column::Id, Expr::col(document::Column::Id).into())
            .filter(document::Column::Collection.eq(collection))
            .filter(document::Column::Id.eq(id))
            .exec(txn)
            .await
            .map_err(err)?;
    }
    let mut current = document::Entity::find_by_id((collection.to_owned(), id.to_owned()));
    if txn.get_database_backend() != DatabaseBackend::Sqlite {
        current = current.lock_exclusive();
    }
    current.one(txn).await.map_err(err)
}

#[async_trait]
impl DocumentStore for SqlDocuments {
    fn kind(&self) -> &'static str {
        "sql"
    }

    async fn ping(&self) -> DocResult<()> {
        self.db.ping().await.map_err(err)
    }

    async fn get(&self, collection: &str, id: &str) -> DocResult<Option<Value>> {
        let row = document::Entity::find_by_id((collection.to_owned(), id.to_owned()))
            .one(&self.db)
            .await
            .map_err(err)?;
        row.map(|r| serde_json::from_str(&r.body).map_err(err))
            .transpose()
    }

    async fn put(&self, collection: &str, id: &str, doc: &Value) -> DocResult<()> {
        let row = document::ActiveModel {
            collection: Set(collection.to_owned()),
            id: Set(id.to_owned()),
            body: Set(doc.to_string()),
            updated_at: Set(chrono::Utc::now()),
        };
        document::Entity::insert(row)
            .on_conflict(
                OnConflict::columns([document::Column::Collection, document::Column::Id])
                    .update_columns([document::Column::Body, document::Column::UpdatedAt])
                    .to_owned(),
            )
            .exec(&self.db)
            .await
            .map_err(err)?;
        Ok(())
    }

    async fn put_if(
        &self,
        collection: &str,
        id: &str,
        doc: &Value,
        field: &str,
        expected: Option<i64>,
    ) -> DocResult<bool> {
        let txn = self.db.begin().await.map_err(err)?;
        let current = locked(&txn, collection, id).await?;
        let found = match &current {
            None => None,
            Some(row) => {
                let body: Value = serde_json::from_str(&row.body).map_err(err)?;
                Some(body.get(field).and_then(Value::as_i64).unwrap_or(0))
            }
        };
        if found != expected {
            return Ok(false);
        }
        let row = document::ActiveModel {
            collection: Set(collection.to_owned()),
            id: Set(id.to_owned()),
            body: Set(doc.to_string()),
            updated_at: Set(chrono::Utc::now()),
        };
        let written = if current.is_some() {
            row.update(&txn).await.map(drop)
        } else {
            row.insert(&txn).await.map(drop)
        };
        match written {
            Ok(()) => {}
            // A concurrent first write of the same document won.
            Err(e) if matches!(e.sql_err(), Some(SqlErr::UniqueConstraintViolation(_))) => {
                return Ok(false)
            }
            Err(e) => return Err(err(e)),
        }
        txn.commit().await.map_err(err)?;
        Ok(true)
    }

    async fn update(&self, collection: &str, id: &str, update: &Update) -> DocResult<Value> {
        if update.is_empty() {
            return Ok(self
                .get(collection, id)
                .await?
                .unwrap_or_else(|| Value::Object(Default::default())));
        }
        // Two first writes of one document can both find none; the loser retries.
        for _ in 0..3 {
            let txn = self.db.begin().await.map_err(err)?;
            let current = locked(&txn, collection, id).await?;
            let mut body = match &current {
                Some(row) => serde_json::from_str(&row.body).map_err(err)?,
                None => Value::Object(Default::default()),
            };
            update.apply(&mut body);
            let row = document::ActiveModel {
                collection: Set(collection.to_owned()),
                id: Set(id.to_owned()),
                body: Set(body.to_string()),
                updated_at: Set(chrono::Utc::now()),
            };
            let written = if current.is_some() {
                row.update(&txn).await.map(drop)
            } else {
                row.insert(&txn).await.map(drop)
            };
            match written {
                Ok(()) => {}
                Err(e) if matches!(e.sql_err(), Some(SqlErr::UniqueConstraintViolation(_))) => {
                    continue
                }
                Err(e) => return Err(err(e)),
            }
            txn.commit().await.map_err(err)?;
            return Ok(body);
        }
        Err(DocumentError::Store(
            "the document kept being created by another writer".into(),
        ))
    }

    async fn delete(&self, collection: &str, id: &str) -> DocResult<bool> {
        let res = document::Entity::delete_by_id((collection.to_owned(), id.to_owned()))
            .exec(&self.db)
            .await
            .map_err(err)?;
        Ok(res.rows_affected > 0)
    }

    async fn list(&self, collection: &str) -> DocResult<Vec<(String, Value)>> {
        let rows = document::Entity::find()
            .filter(document::Column::Collection.eq(collection))
            .order_by_asc(document::Column::Id)
            .all(&self.db)
            .await
            .map_err(err)?;
        rows.into_iter()
            .map(|r| Ok((r.id, serde_json::from_str(&r.body).map_err(err)?)))
            .collect()
    }
}
