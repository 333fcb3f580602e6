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

/// An atomic change of one document, applied by [`DocumentStore::update`]. Paths are field
/// names, or `parent.child` for a field of an object field (created when missing).
#[derive(Debug, Clone, Default)]
pub struct Update {
    /// Adds each number to the one at its path (a missing one counts as 0).
    pub inc: Vec<(String, i64)>,
    /// Raises the number at each path to at least this value.
    pub max: Vec<(String, i64)>,
    /// Adds the strings missing from the array at each path.
    pub add_to_set: Vec<(String, Vec<String>)>,
}

impl Update {
    /// Whether it changes nothing.
    pub fn is_empty(&self) -> bool {
        self.inc.is_empty() && self.max.is_empty() && self.add_to_set.is_empty()
    }

    /// Applies the change to `doc` (made an object if it is not one), as the stores do.
    pub fn apply(&self, doc: &mut Value) {
        fn slot<'a>(doc: &'a mut Value, path: &str) -> &'a mut Value {
            let mut at = doc;
            for part in path.split('.') {
                if !at.is_object() {
                    *at = Value::Object(Default::default());
                }
                at = at
                    .as_object_mut()
                    .expect("made an object above")
                    .entry(part.to_owned())
                    .or_insert(Value::Null);
            }
            at
        }
        for (path, n) in &self.inc {
            let at = slot(doc, path);
            *at = Value::from(at.as_i64().unwrap_or(0).saturating_add(*n));
        }
        for (path, n) in &self.max {
            let at = slot(doc, path);
            if at.as_i64().is_none_or(|cur| cur < *n) {
                *at = Value::from(*n);
            }
        }
        for (path, members) in &self.add_to_set {
            let at = slot(doc, path);
            if !at.is_array() {
                *at = Value::Array(Vec::new());
            }
            let array = at.as_array_mut().expect("made an array above");
            for m in members {
                if !array.iter().any(|v| v.as_str() == Some(m)) {
                    array.push(Value::from(m.as_str()));
                }
            }
        }
    }
}

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
    /// Applies `update` to the document (created empty when missing) as one atomic step, so
    /// that concurrent updates from every replica all count; returns the document after it.
    async fn update(&self, collection: &str, id: &str, update: &Update) -> DocResult<Value>;
    /// Removes the document; `true` when it existed.
    async fn delete(&self, collection: &str, id: &str) -> DocResult<bool>;
    /// Every document of the collection, by id.
    async fn list(&self, collection: &str) -> DocResult<Vec<(String, Value)>>;
}
