//! `trainers`: Pokémon trainers, with string ids such as `trainer1`. Every hooked write bumps
//! the version and records the change for the write-through cache.

use sea_orm::entity::prelude::*;
use sea_orm::ActiveValue::{self, NotSet, Set, Unchanged};
use serde::{Deserialize, Serialize};

use crate::versioning::next_version;
use crate::write_through::{self, Change};

/// The cache namespace of trainers.
pub const CACHE_ENTITY: &str = "trainer";

/// A trainer row.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "trainers")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub first_name: String,
    pub last_name: String,
    pub date_of_birth: Date,
    /// Strictly increasing across the life of the id (see `versioning`).
    pub version: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(has_many = "super::pokemon::Entity")]
    Pokemon,
}

impl Related<super::pokemon::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Pokemon.def()
    }
}

fn value<T: Clone + Into<sea_orm::Value>>(v: &ActiveValue<T>) -> Option<T> {
    match v {
        Set(x) | Unchanged(x) => Some(x.clone()),
        NotSet => None,
    }
}

#[async_trait::async_trait]
impl ActiveModelBehavior for ActiveModel {
    async fn before_save<C>(mut self, _db: &C, insert: bool) -> Result<Self, DbErr>
    where
        C: ConnectionTrait,
    {
        write_through::require_scope(CACHE_ENTITY)?;
        let prev = if insert { None } else { value(&self.version) };
        self.version = Set(next_version(prev));
        Ok(self)
    }

    async fn after_save<C>(model: Model, _db: &C, _insert: bool) -> Result<Model, DbErr>
    where
        C: ConnectionTrait,
    {
        write_through::record(Change {
            entity: CACHE_ENTITY,
            id: model.id.clone(),
            version: model.version,
            row: Some(serde_json::to_value(&model).map_err(|e| DbErr::Custom(e.to_string()))?),
            also_remove: Vec::new(),
        })?;
        Ok(model)
    }

    async fn before_delete<C>(self, _db: &C) -> Result<Self, DbErr>
    where
        C: ConnectionTrait,
    {
        write_through::require_scope(CACHE_ENTITY)?;
        Ok(self)
    }

    async fn after_delete<C>(self, _db: &C) -> Result<Self, DbErr>
    where
        C: ConnectionTrait,
    {
        // A time-based tombstone: newer than the row ever was, older than a re-creation.
        write_through::record(Change {
            entity: CACHE_ENTITY,
            id: value(&self.id).unwrap_or_default(),
            version: next_version(value(&self.version)),
            row: None,
            also_remove: Vec::new(),
        })?;
        Ok(self)
    }
}
