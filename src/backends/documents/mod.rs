//! The document store: JSON documents in named collections, keyed by a string id. A table in
//! the SQL database by default, MongoDB when `MONGODB_URL` is set.

pub mod mongo;
pub mod sql;

use async_trait::async_trait;
use serde_json::Value;

/// A document store error, with its cause; callers map it to `INTERNAL`.
#[derive(Debug, thiserror::Error)]
pub enum DocumentError {
    /// The store failed (or could not be reached).
    #[error("document store")]
    Store(#[source] crate::backends::cache::BoxError),
    /// A document that cannot be stored or read as the store keeps it.
    #[error("document cannot be converted")]
    Shape(#[source] crate::backends::cache::BoxError),
}

/// Result of a document store call.
pub type DocResult<T> = Result<T, DocumentError>;

/// JSON documents by collection and id.
#[async_trait]
pub trait DocumentStore: Send + Sync + 'static {
    /// `sql` or `mongodb`.
    fn kind(&self) -> &'static str;
    /// Checks the store answers.
    async fn ping(&self) -> DocResult<()>;
    /// The document, if any.
    async fn get(&self, collection: &str, id: &str) -> DocResult<Option<Value>>;
    /// Inserts or replaces the document.
    async fn put(&self, collection: &str, id: &str, doc: &Value) -> DocResult<()>;
    /// Inserts or replaces the document only if the number at `field` of the stored one is
    /// still `expected` (`None`: only if there is no document yet; a stored document without
    /// the field counts as 0). Returns whether it was written: a compare-and-set, so that
    /// writers with no other lock in common never lose one another's changes.
    async fn put_if(
        &self,
        collection: &str,
        id: &str,
        doc: &Value,
        field: &str,
        expected: Option<i64>,
    ) -> DocResult<bool>;
    /// Removes the document; `true` when it existed.
    async fn delete(&self, collection: &str, id: &str) -> DocResult<bool>;
    /// Every document of the collection, by id.
    async fn list(&self, collection: &str) -> DocResult<Vec<(String, Value)>>;
}
