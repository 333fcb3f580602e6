//! `trainers`: Pokémon trainers, with string ids such as `trainer1`. Every hooked write bumps
//! the version and records the change for the write-through cache.

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

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

crate::by_position!(id, first_name, last_name, date_of_birth, version);

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

crate::time_versioned_hooks!();
