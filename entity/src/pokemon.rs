//! `pokemons`: Pokémon and their owner. Every hooked write bumps the version and records the
//! change for the write-through cache; bulk imports bypass the hooks and invalidate
//! explicitly (see the server's `pokemon::import`).

use sea_orm::entity::prelude::*;
use sea_orm::ActiveValue::{self, NotSet, Set, Unchanged};
use serde::{Deserialize, Serialize};

use crate::versioning::next_version;
use crate::write_through::{self, Change};

/// The cache namespace of Pokémon.
pub const CACHE_ENTITY: &str = "pokemon";

/// A Pokémon row.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "pokemons")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub nickname: String,
    pub species: String,
    /// 1–100.
    pub level: i32,
    pub owner_id: String,
    pub date_of_ownership: Date,
    /// Strictly increasing across the life of the id (see `versioning`).
    pub version: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(
        belongs_to = "super::trainer::Entity",
        from = "Column::OwnerId",
        to = "super::trainer::Column::Id"
    )]
    Owner,
}

impl Related<super::trainer::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Owner.def()
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
