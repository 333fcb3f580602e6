//! `pokemons`: Pokémon and their owner. Every hooked write bumps the version and records the
//! change for the write-through cache; bulk writes (imports, cascades) declare
//! their ids to the write scope instead (see `scope::write`).

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

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

crate::by_position!(
    id,
    nickname,
    species,
    level,
    owner_id,
    date_of_ownership,
    version
);

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

crate::time_versioned_hooks!();
