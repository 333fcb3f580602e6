//! `battles`: the history of battles. Rows are only ever inserted; no cache entry mirrors
//! them, so they need no write-through hooks.

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

/// One fought battle: who won, who lost, and the numbers that decided it.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "battles")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub winner_id: i64,
    pub loser_id: i64,
    pub winner_score: f64,
    pub loser_score: f64,
    /// |score₁ − score₂| / 100.
    pub delta: f64,
    /// The uniform draw in [0, 1) the winner rule compared `delta` with.
    pub random: f64,
    pub fought_at: DateTimeUtc,
    /// The user whose ring fought it.
    pub user_id: i64,
}

crate::by_position!(
    id,
    winner_id,
    loser_id,
    winner_score,
    loser_score,
    delta,
    random,
    fought_at,
    user_id
);

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
