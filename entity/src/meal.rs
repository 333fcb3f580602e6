//! `meals`: the catalogue. Every write goes through the hooks below, which bump the row
//! version, keep `win_pct` derived, and record the change for the write-through cache.

use sea_orm::entity::prelude::*;
use sea_orm::ActiveValue::{self, NotSet, Set, Unchanged};
use serde::{Deserialize, Serialize};

use crate::write_through::{self, Change};

/// The cache namespace of meals.
pub const CACHE_ENTITY: &str = "meal";

/// The cache key of the name → id pair of `name`.
pub fn name_key(name: &str) -> String {
    format!("meal_name:{name}")
}

/// A meal row. `deleted` is a soft delete: the row (and its name) stays.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "meals")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    #[sea_orm(unique)]
    pub name: String,
    pub cuisine: String,
    pub price: f64,
    /// `LOW`, `MED` or `HIGH`.
    pub difficulty: String,
    pub battles: i32,
    pub wins: i32,
    /// wins / battles, 0 without battles; kept by the hooks.
    pub win_pct: f64,
    pub deleted: bool,
    /// Strictly increasing on every write; orders cache entries.
    pub version: i64,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

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
        write_through::require_scope("meal")?;
        let version = if insert {
            1
        } else {
            value(&self.version).ok_or_else(|| {
                DbErr::Custom("a meal update must start from the row it changes".into())
            })? + 1
        };
        self.version = Set(version);
        if let (Some(battles), Some(wins)) = (value(&self.battles), value(&self.wins)) {
            let pct = if battles > 0 {
                f64::from(wins) / f64::from(battles)
            } else {
                0.0
            };
            self.win_pct = Set(pct);
        }
        let now = chrono::Utc::now();
        if insert {
            self.created_at = Set(now);
        }
        self.updated_at = Set(now);
        Ok(self)
    }

    async fn after_save<C>(model: Model, _db: &C, _insert: bool) -> Result<Model, DbErr>
    where
        C: ConnectionTrait,
    {
        let row = if model.deleted {
            None
        } else {
            Some(serde_json::to_value(&model).map_err(|e| DbErr::Custom(e.to_string()))?)
        };
        let also_remove = if model.deleted {
            vec![name_key(&model.name)]
        } else {
            Vec::new()
        };
        write_through::record(Change {
            entity: CACHE_ENTITY,
            id: model.id.to_string(),
            version: model.version,
            row,
            also_remove,
        })?;
        Ok(model)
    }

    async fn before_delete<C>(self, _db: &C) -> Result<Self, DbErr>
    where
        C: ConnectionTrait,
    {
        write_through::require_scope("meal")?;
        Ok(self)
    }

    async fn after_delete<C>(self, _db: &C) -> Result<Self, DbErr>
    where
        C: ConnectionTrait,
    {
        // A hard delete outranks every version the row ever had.
        let id = value(&self.id).map(|i| i.to_string()).unwrap_or_default();
        let also_remove = value::<String>(&self.name)
            .map(|n| vec![name_key(&n)])
            .unwrap_or_default();
        write_through::record(Change {
            entity: CACHE_ENTITY,
            id,
            version: i64::MAX,
            row: None,
            also_remove,
        })?;
        Ok(self)
    }
}
