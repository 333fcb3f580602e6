//! sea-orm entities of Arena, one file per table, and the hooks that feed the cache.
//!
//! No GraphQL derives live here: the server converts models into its own types, so a column
//! such as a password hash can never reach the schema by accident.

pub mod battle;
pub mod cache_namespace;
pub mod credential;
pub mod document;
pub mod meal;
pub mod pokemon;
pub mod scope;
pub mod session;
pub mod spec;
pub mod trade;
pub mod trainer;
pub mod user;
pub mod versioning;

/// The value an active model holds for a column, if it holds one.
pub fn value_of<T: Clone + Into<sea_orm::Value>>(v: &sea_orm::ActiveValue<T>) -> Option<T> {
    match v {
        sea_orm::ActiveValue::Set(x) | sea_orm::ActiveValue::Unchanged(x) => Some(x.clone()),
        sea_orm::ActiveValue::NotSet => None,
    }
}
