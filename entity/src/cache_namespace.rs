//! `cache_namespace`: the one row (id 1) naming the cache namespace of this database. Every
//! cache key, lease, mark and event channel lives under it, so a re-created database (or
//! another environment sharing the Redis) never reads another's entries.

use sea_orm::entity::prelude::*;

/// The id of the only row.
pub const ROW: i32 = 1;

/// The namespace row.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "cache_namespace")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: i32,
    /// Random, written on the first run and by `arena cache-reset`.
    pub namespace: String,
    pub created_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
