//! The document store: JSON documents in named collections, keyed by a string id. A table in
//! the SQL database by default, MongoDB when `MONGODB_URL` is set.

pub mod mongo;
pub mod sql;

use async_trait::async_trait;
use serde_json::Value;

/// A document store error; callers map it to `INTERNAL`.
#[derive(Debug, thiserror::Error)]
#[error("document store: {0}")]
pub struct DocumentError(pub String);

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
    /// Removes the document; `true` when it existed.
    async fn delete(&self, collection: &str, id: &str) -> DocResult<bool>;
    /// Every document of the collection, by id.
    async fn list(&self, collection: &str) -> DocResult<Vec<(String, Value)>>;
}
