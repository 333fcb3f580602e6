//! `trades`: the history of Pokémon exchanges. Append-only and not cached, so no hooks.

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

/// A trade row; the Pokémon lists are JSON arrays of ids, as traded.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "trades")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub trainer_a: String,
    pub trainer_b: String,
    /// JSON array of the ids A gave to B.
    pub pokemons_a: String,
    /// JSON array of the ids B gave to A.
    pub pokemons_b: String,
    pub traded_at: DateTimeUtc,
}

crate::by_position!(id, trainer_a, trainer_b, pokemons_a, pokemons_b, traded_at);

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
