//! The MongoDB document store: one collection per name, `_id` = the document id, the JSON
//! object's fields stored as the BSON document's fields (so the data reads naturally in the
//! Mongo shell). Numbers keep their JSON types: integers become `Int64`, floats `Double`.

use std::time::Duration;

use async_trait::async_trait;
use futures::TryStreamExt;
use mongodb::bson::{doc, Bson, Document};
use mongodb::options::{ClientOptions, ReturnDocument};
use mongodb::{Client, Collection, Database};
use serde_json::Value;

use super::{DocResult, DocumentError, DocumentStore, Update};

/// How long an operation waits for a usable server before failing; short, so that a missing
/// or unreachable MongoDB fails a request (and `/readyz`) clearly instead of hanging.
const SERVER_SELECTION_TIMEOUT: Duration = Duration::from_secs(5);

/// TCP connect timeout for each server.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The MongoDB document store.
#[derive(Debug, Clone)]
pub struct MongoDocuments {
    db: Database,
}

fn map_err(e: mongodb::error::Error) -> DocumentError {
    DocumentError::Store(Box::new(e))
}

/// Whether an insert failed because the `_id` exists.
fn is_duplicate_key(e: &mongodb::error::Error) -> bool {
    use mongodb::error::{ErrorKind, WriteFailure};
    match e.kind.as_ref() {
        ErrorKind::Write(WriteFailure::WriteError(w)) => w.code == 11000,
        ErrorKind::InsertMany(m) => m
            .write_errors
            .as_ref()
            .is_some_and(|errs| errs.iter().any(|w| w.code == 11000)),
        ErrorKind::Command(c) => c.code == 11000,
        _ => false,
    }
}

impl MongoDocuments {
    /// Connects to `url` (`mongodb://` or `mongodb+srv://`) and uses `database`. The driver
    /// connects lazily: this parses the URL and checks the server answers a `ping`.
    pub async fn connect(url: &str, database: &str) -> Result<MongoDocuments, DocumentError> {
        let mut options = ClientOptions::parse(url).await.map_err(map_err)?;
        options.server_selection_timeout = Some(SERVER_SELECTION_TIMEOUT);
        options.connect_timeout = Some(CONNECT_TIMEOUT);
        if options.app_name.is_none() {
            options.app_name = Some("arena".to_owned());
        }
        let client = Client::with_options(options).map_err(map_err)?;
        let store = MongoDocuments {
            db: client.database(database),
        };
        store.ping().await?;
        Ok(store)
    }

    /// The database this store writes to.
    pub fn database(&self) -> &Database {
        &self.db
    }

    fn collection(&self, name: &str) -> Collection<Document> {
        self.db.collection(name)
    }
}

/// The JSON object as a BSON document with `_id` = `id`.
fn to_document(id: &str, value: &Value) -> DocResult<Document> {
    if !value.is_object() {
        return Err(DocumentError::Shape(
            "a MongoDB document must be a JSON object".into(),
        ));
    }
    let mut doc =
        mongodb::bson::to_document(value).map_err(|e| DocumentError::Shape(Box::new(e)))?;
    doc.insert("_id", id);
    Ok(doc)
}

/// The document's id and its fields (without `_id`) as JSON.
fn from_document(mut doc: Document) -> DocResult<(String, Value)> {
    let id = match doc.remove("_id") {
        Some(Bson::String(s)) => s,
        Some(Bson::ObjectId(oid)) => oid.to_hex(),
        Some(other) => other.to_string(),
        None => String::new(),
    };
    let value = mongodb::bson::from_document::<Value>(doc)
        .map_err(|e| DocumentError::Shape(Box::new(e)))?;
    Ok((id, value))
}

#[async_trait]
impl DocumentStore for MongoDocuments {
    fn kind(&self) -> &'static str {
        "mongodb"
    }

    async fn ping(&self) -> DocResult<()> {
        self.db
            .run_command(doc! { "ping": 1 })
            .await
            .map(drop)
            .map_err(map_err)
    }

    async fn get(&self, collection: &str, id: &str) -> DocResult<Option<Value>> {
        entity::scope::read::taint();
        let found = self
            .collection(collection)
            .find_one(doc! { "_id": id })
            .await
            .map_err(map_err)?;
        found
            .map(|doc| from_document(doc).map(|(_, value)| value))
            .transpose()
    }

    async fn put(&self, collection: &str, id: &str, doc: &Value) -> DocResult<()> {
        entity::scope::read::taint();
        let document = to_document(id, doc)?;
        self.collection(collection)
            .replace_one(doc! { "_id": id }, document)
            .upsert(true)
            .await
            .map(drop)
            .map_err(map_err)
    }

    async fn put_if(
        &self,
        collection: &str,
        id: &str,
        doc: &Value,
        field: &str,
        expected: Option<i64>,
    ) -> DocResult<bool> {
        entity::scope::read::taint();
        let document = to_document(id, doc)?;
        let coll = self.collection(collection);
        let Some(expected) = expected else {
            return match coll.insert_one(document).await {
                Ok(_) => Ok(true),
                Err(e) if is_duplicate_key(&e) => Ok(false),
                Err(e) => Err(map_err(e)),
            };
        };
        let version = if expected == 0 {
            doc! { "$or": [ { field: 0_i64 }, { field: { "$exists": false } } ] }
        } else {
            doc! { field: expected }
        };
        let filter = doc! { "$and": [ { "_id": id }, version ] };
        let result = coll.replace_one(filter, document).await.map_err(map_err)?;
        Ok(result.matched_count > 0)
    }

    async fn update(&self, collection: &str, id: &str, update: &Update) -> DocResult<Value> {
        entity::scope::read::taint();
        let mut ops = Document::new();
        if !update.inc.is_empty() {
            let inc: Document = update
                .inc
                .iter()
                .map(|(path, n)| (path.clone(), Bson::Int64(*n)))
                .collect();
            ops.insert("$inc", inc);
        }
        if !update.max.is_empty() {
            let max: Document = update
                .max
                .iter()
                .map(|(path, n)| (path.clone(), Bson::Int64(*n)))
                .collect();
            ops.insert("$max", max);
        }
        if !update.add_to_set.is_empty() {
            let add: Document = update
                .add_to_set
                .iter()
                .map(|(path, members)| (path.clone(), Bson::Document(doc! { "$each": members })))
                .collect();
            ops.insert("$addToSet", add);
        }
        if ops.is_empty() {
            return Ok(self
                .get(collection, id)
                .await?
                .unwrap_or_else(|| Value::Object(Default::default())));
        }
        let coll = self.collection(collection);
        // Two first upserts of one `_id` can race; the loser's retry updates the winner's.
        for _ in 0..3 {
            match coll
                .find_one_and_update(doc! { "_id": id }, ops.clone())
                .upsert(true)
                .return_document(ReturnDocument::After)
                .await
            {
                Ok(Some(found)) => return from_document(found).map(|(_, value)| value),
                Ok(None) => return Ok(Value::Object(Default::default())),
                Err(e) if is_duplicate_key(&e) => continue,
                Err(e) => return Err(map_err(e)),
            }
        }
        Err(DocumentError::Store(
            "the document kept being created by another writer".into(),
        ))
    }

    async fn delete(&self, collection: &str, id: &str) -> DocResult<bool> {
        entity::scope::read::taint();
        let result = self
            .collection(collection)
            .delete_one(doc! { "_id": id })
            .await
            .map_err(map_err)?;
        Ok(result.deleted_count > 0)
    }

    async fn list(&self, collection: &str) -> DocResult<Vec<(String, Value)>> {
        entity::scope::read::taint();
        let docs: Vec<Document> = self
            .collection(collection)
            .find(doc! {})
            .sort(doc! { "_id": 1 })
            .await
            .map_err(map_err)?
            .try_collect()
            .await
            .map_err(map_err)?;
        docs.into_iter().map(from_document).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_document_round_trips_through_bson_without_its_id() {
        let value = json!({ "name": "x", "count": 3, "price": 12.0, "ok": true, "tags": ["a"] });
        let doc = to_document("u1", &value).expect("object converts");
        assert_eq!(doc.get_str("_id").ok(), Some("u1"));
        let (id, back) = from_document(doc).expect("document converts");
        assert_eq!(id, "u1");
        assert_eq!(back, value);
        assert!(back["price"].is_f64(), "a float stays a float");
    }

    #[test]
    fn a_non_object_is_refused() {
        assert!(to_document("u1", &json!([1, 2])).is_err());
    }
}
