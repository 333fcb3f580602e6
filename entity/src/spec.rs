//! `specs`: every version of every user's specs. `seq` orders the versions of one spec
//! (strictly, even within one second); `latest` marks the newest version of each spec.

use sea_orm::entity::prelude::*;

/// One version of a spec.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "specs")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    /// The owner (`sub`).
    pub user_id: i64,
    /// The spec's id, chosen by its owner.
    pub spec_id: String,
    /// 1, 2, 3 … per (user, spec): the order of the versions.
    pub seq: i64,
    /// The version label given by the owner.
    pub version: String,
    pub model_count: i64,
    pub title: Option<String>,
    pub description: Option<String>,
    /// Whether this is the newest version of its spec.
    pub latest: bool,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
