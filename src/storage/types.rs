//! GraphQL input of the key-value storage.

use async_graphql::InputObject;

/// One key and its value.
#[derive(InputObject, Debug, Clone)]
pub struct StorageEntryInput {
    /// The key: 1 to 256 bytes (UTF-8).
    pub key: String,
    /// The value: at most 64 KiB (UTF-8).
    pub value: String,
}
