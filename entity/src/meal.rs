//! `meals`: the catalogue. Every write goes through the hooks below, which bump the row
//! version, keep `win_pct` derived, and record the change for the write-through cache: the
//! meal's entry, and on deletion its name → id pair.

use sea_orm::entity::prelude::*;
use sea_orm::ActiveValue::Set;
use serde::{Deserialize, Serialize};

use crate::scope::write::{self as write_through, Change};
use crate::value_of;

/// The cache namespace of meals.
pub const CACHE_ENTITY: &str = "meal";

/// The cache namespace of the name → id pairs of meals.
pub const NAME_ENTITY: &str = "meal_name";

/// How hard a meal is to cook, stored as `LOW`, `MED` or `HIGH`. Any other stored value is
/// an error when the row is read, never a silent default.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, EnumIter, DeriveActiveEnum, Serialize, Deserialize,
)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::N(4))")]
pub enum Difficulty {
    /// Easy.
    #[sea_orm(string_value = "LOW")]
    #[serde(rename = "LOW")]
    Low,
    /// Medium.
    #[sea_orm(string_value = "MED")]
    #[serde(rename = "MED")]
    Med,
    /// Hard.
    #[sea_orm(string_value = "HIGH")]
    #[serde(rename = "HIGH")]
    High,
}

impl crate::position::Field for Difficulty {
    fn at(row: &sea_orm::QueryResult, at: usize) -> Result<Self, DbErr> {
        let value: String = crate::position::Field::at(row, at)?;
        Self::try_from_value(&value)
    }
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
    pub difficulty: Difficulty,
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

crate::by_position!(
    id, name, cuisine, price, difficulty, battles, wins, win_pct, deleted, version, created_at,
    updated_at
);

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

/// The changes a meal's write makes to the cache: its entry, and once it is gone the
/// tombstone of its name → id pair (names never change, so only a deletion touches it).
fn changes(id: i64, name: Option<String>, version: i64, row: Option<&Model>) -> Result<(), DbErr> {
    let value = row
        .map(serde_json::to_value)
        .transpose()
        .map_err(|e| DbErr::Custom(format!("a meal row cannot be cached: {e}")))?;
    let gone = value.is_none();
    write_through::record(Change {
        entity: CACHE_ENTITY,
        id: id.to_string(),
        version,
        row: value,
    })?;
    if let (true, Some(name)) = (gone, name) {
        write_through::record(Change {
            entity: NAME_ENTITY,
            id: name,
            version,
            row: None,
        })?;
    }
    Ok(())
}

/// Changes the columns a client may change (`cuisine`, `price`, `difficulty`) of live meal
/// `id` in one statement, which locks, reads and writes the row (`UPDATE … RETURNING`), and
/// records the change as the hooks would: the version bumped, `updated_at` set, the entry
/// stored after `COMMIT`. `None` when there is no live meal `id`. Only for a database that
/// returns updated rows (`ConnectionTrait::support_returning`, PostgreSQL here); elsewhere the
/// caller reads and locks the row first and updates it through the hooks.
pub async fn update_in_one_statement<C: ConnectionTrait>(
    db: &C,
    id: i64,
    cuisine: Option<String>,
    price: Option<f64>,
    difficulty: Option<Difficulty>,
) -> Result<Option<Model>, DbErr> {
    use sea_orm::sea_query::{Expr, Query};
    use sea_orm::{Iterable, QueryTrait, Statement};
    write_through::before_write(CACHE_ENTITY)?;
    let now = chrono::Utc::now();
    let backend = db.get_database_backend();
    // The statement sea-orm's `exec_with_returning` would send. Its text depends only on which
    // columns are set and on the database, so it is kept per shape (`ShapeSql`), and the row
    // it returns is decoded by position.
    let build = || {
        let mut update = Entity::update_many()
            .col_expr(Column::Version, Expr::col(Column::Version).add(1))
            .col_expr(Column::UpdatedAt, Expr::value(now))
            .filter(Column::Id.eq(id))
            .filter(Column::Deleted.eq(false));
        if let Some(c) = &cuisine {
            update = update.col_expr(Column::Cuisine, Expr::value(c.clone()));
        }
        if let Some(p) = price {
            update = update.col_expr(Column::Price, Expr::value(p));
        }
        if let Some(d) = difficulty {
            update = update.col_expr(Column::Difficulty, Expr::value(d.to_value()));
        }
        let mut query = update.into_query();
        query.returning(
            Query::returning()
                .exprs(Column::iter().map(|c| c.select_as(c.into_returning_expr(backend)))),
        );
        backend.build(&query)
    };
    // The values in the order sea-query binds them: the `SET`s as added above, then the
    // filters.
    let mut values: Vec<Value> = vec![1i32.into(), now.into()];
    let shape = usize::from(cuisine.is_some())
        | usize::from(price.is_some()) << 1
        | usize::from(difficulty.is_some()) << 2;
    if let Some(c) = &cuisine {
        values.push(c.clone().into());
    }
    values.extend(price.map(Value::from));
    values.extend(difficulty.map(|d| d.to_value().into()));
    values.push(id.into());
    values.push(false.into());
    let sql = UPDATE_SQL[shape].text(backend, &values, build);
    let statement = Statement::from_sql_and_values(backend, sql, values);
    let Some(row) = crate::position::rows::<Model, _>(statement, db)
        .await?
        .pop()
    else {
        return Ok(None);
    };
    changes(row.id, Some(row.name.clone()), row.version, Some(&row))?;
    Ok(Some(row))
}

/// The kept texts of [`update_in_one_statement`], one per shape.
static UPDATE_SQL: [crate::position::ShapeSql; 8] = [const { crate::position::ShapeSql::new() }; 8];

#[async_trait::async_trait]
impl ActiveModelBehavior for ActiveModel {
    async fn before_save<C>(mut self, _db: &C, insert: bool) -> Result<Self, DbErr>
    where
        C: ConnectionTrait,
    {
        write_through::before_write(CACHE_ENTITY)?;
        let version = if insert {
            1
        } else {
            value_of(&self.version).ok_or_else(|| {
                DbErr::Custom("a meal update must start from the row it changes".into())
            })? + 1
        };
        self.version = Set(version);
        if let (Some(battles), Some(wins)) = (value_of(&self.battles), value_of(&self.wins)) {
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
        let row = (!model.deleted).then_some(&model);
        changes(model.id, Some(model.name.clone()), model.version, row)?;
        Ok(model)
    }

    async fn before_delete<C>(self, _db: &C) -> Result<Self, DbErr>
    where
        C: ConnectionTrait,
    {
        write_through::before_write(CACHE_ENTITY)?;
        Ok(self)
    }

    async fn after_delete<C>(self, _db: &C) -> Result<Self, DbErr>
    where
        C: ConnectionTrait,
    {
        // A hard delete outranks every version the row ever had.
        let id = value_of(&self.id).unwrap_or_default();
        changes(id, value_of(&self.name), i64::MAX, None)?;
        Ok(self)
    }
}
