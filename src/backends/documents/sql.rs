//! The embedded document store: the `documents` table of the SQL database.

use async_trait::async_trait;
use entity::document;
use sea_orm::sea_query::OnConflict;
use sea_orm::{ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter, QueryOrder, Set};
use serde_json::Value;

use super::{DocResult, DocumentError, DocumentStore};

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

fn err(e: impl std::fmt::Display) -> DocumentError {
    DocumentError(e.to_string())
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
