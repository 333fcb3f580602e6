//! The rules of specs. Every read and delete is one indexed query whatever the number of
//! versions (see the `specs` migration for the indexes).

use chrono::Utc;
use entity::spec;
use sea_orm::sea_query::{Alias, Expr, Func, Query, SimpleExpr};
use sea_orm::{
    ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
    TransactionTrait,
};

use super::types::{NewSpecVersion, SpecId};
use crate::consistency;
use crate::error::{is_unique_violation, AppError, AppResult, OrInternal};
use crate::state::AppState;

/// How often a put is retried when a concurrent put of the same spec took its sequence number.
const PUT_ATTEMPTS: usize = 10;

/// Adds a version to `user_id`'s spec `input.id` (creating the spec with its first version).
///
/// The version's `seq` is one more than the spec's highest, computed and inserted in one
/// statement; the unique `(user_id, spec_id, seq)` index makes two concurrent puts of the same
/// spec collide, and the loser retries with the next number. So versions are strictly ordered
/// even when several are put in the same second.
pub async fn put_spec(
    state: &AppState,
    user_id: i64,
    input: NewSpecVersion,
) -> AppResult<spec::Model> {
    let owned = state.clone();
    consistency::write_owned(state, user_id, async move {
        for _ in 0..PUT_ATTEMPTS {
            if let Some(row) = try_put_spec(&owned, user_id, &input).await? {
                return Ok(row);
            }
        }
        Err(AppError::Conflict(format!(
            "id: spec `{}` is being changed by other requests; try again",
            input.id.as_str()
        )))
    })
    .await
}

/// One attempt; `None` when a concurrent put took the sequence number (nothing was written).
async fn try_put_spec(
    state: &AppState,
    user_id: i64,
    input: &NewSpecVersion,
) -> AppResult<Option<spec::Model>> {
    let now = Utc::now();
    let spec_id = input.id.as_str().to_owned();
    let txn = state.db.begin().await?;
    let backend = txn.get_database_backend();
    let next_seq: SimpleExpr = Expr::expr(Func::coalesce([
        Expr::col(spec::Column::Seq).max(),
        Expr::val(0i64).into(),
    ]))
    .add(1i64);
    let select = Query::select()
        .expr(Expr::val(user_id))
        .expr(Expr::val(spec_id.clone()))
        .expr(next_seq)
        .expr(Expr::val(input.version.clone()))
        .expr(Expr::val(input.model_count))
        .expr(Expr::val(input.title.clone()))
        .expr(Expr::val(input.description.clone()))
        .expr(Expr::val(true))
        .expr(Expr::val(now))
        .from(spec::Entity)
        .and_where(spec::Column::UserId.eq(user_id))
        .and_where(spec::Column::SpecId.eq(spec_id.clone()))
        .to_owned();
    let insert = Query::insert()
        .into_table(spec::Entity)
        .columns([
            spec::Column::UserId,
            spec::Column::SpecId,
            spec::Column::Seq,
            spec::Column::Version,
            spec::Column::ModelCount,
            spec::Column::Title,
            spec::Column::Description,
            spec::Column::Latest,
            spec::Column::UpdatedAt,
        ])
        .select_from(select)
        .or_internal("building the spec insert")?
        .returning(Query::returning().columns([spec::Column::Id, spec::Column::Seq]))
        .to_owned();
    let row = match txn.query_one(backend.build(&insert)).await {
        Ok(row) => row,
        Err(e) if is_unique_violation(&e) => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    .ok_or_else(|| AppError::internal("the spec insert returned no row"))?;
    let id: i64 = row.try_get("", "id")?;
    let seq: i64 = row.try_get("", "seq")?;
    // The older versions stop being the latest. `seq < new` (rather than "every other") also
    // covers a version a concurrent put committed just before ours.
    spec::Entity::update_many()
        .col_expr(spec::Column::Latest, Expr::value(false))
        .filter(spec::Column::UserId.eq(user_id))
        .filter(spec::Column::SpecId.eq(spec_id.clone()))
        .filter(spec::Column::Latest.eq(true))
        .filter(spec::Column::Seq.lt(seq))
        .exec(&txn)
        .await?;
    txn.commit().await?;
    Ok(Some(spec::Model {
        id,
        user_id,
        spec_id,
        seq,
        version: input.version.clone(),
        model_count: input.model_count,
        title: input.title.clone(),
        description: input.description.clone(),
        latest: true,
        updated_at: now,
    }))
}

/// The latest version of `user_id`'s spec `id`, if there is one.
pub async fn spec(state: &AppState, user_id: i64, id: &SpecId) -> AppResult<Option<spec::Model>> {
    Ok(spec::Entity::find()
        .filter(spec::Column::UserId.eq(user_id))
        .filter(spec::Column::SpecId.eq(id.as_str()))
        .order_by_desc(spec::Column::Seq)
        .limit(1)
        .one(&state.db)
        .await?)
}

/// The latest version of each of `user_id`'s specs, by id.
pub async fn specs(state: &AppState, user_id: i64) -> AppResult<Vec<spec::Model>> {
    Ok(spec::Entity::find()
        .filter(spec::Column::UserId.eq(user_id))
        .filter(spec::Column::Latest.eq(true))
        .order_by_asc(spec::Column::SpecId)
        .all(&state.db)
        .await?)
}

/// The versions of `user_id`'s spec `id`, newest first; at most `limit` when given.
pub async fn spec_versions(
    state: &AppState,
    user_id: i64,
    id: &SpecId,
    limit: Option<u64>,
) -> AppResult<Vec<spec::Model>> {
    Ok(spec::Entity::find()
        .filter(spec::Column::UserId.eq(user_id))
        .filter(spec::Column::SpecId.eq(id.as_str()))
        .order_by_desc(spec::Column::Seq)
        .limit(limit)
        .all(&state.db)
        .await?)
}

/// The sum of the latest `modelCount` of each of `user_id`'s specs (0 without specs).
pub async fn model_count(state: &AppState, user_id: i64) -> AppResult<i64> {
    // SUM of a bigint is a numeric in PostgreSQL: cast it back.
    let total = Func::cast_as(
        Func::coalesce([
            Expr::col(spec::Column::ModelCount).sum(),
            Expr::val(0i64).into(),
        ]),
        Alias::new("BIGINT"),
    );
    let sum: Option<i64> = spec::Entity::find()
        .select_only()
        .column_as(SimpleExpr::from(total), "total")
        .filter(spec::Column::UserId.eq(user_id))
        .filter(spec::Column::Latest.eq(true))
        .into_tuple()
        .one(&state.db)
        .await?;
    Ok(sum.unwrap_or(0))
}

/// Deletes every version of `user_id`'s spec `id`; returns how many were removed (0 when the
/// spec does not exist or is someone else's).
pub async fn delete_spec(state: &AppState, user_id: i64, id: &SpecId) -> AppResult<u64> {
    let delete = spec::Entity::delete_many()
        .filter(spec::Column::UserId.eq(user_id))
        .filter(spec::Column::SpecId.eq(id.as_str()));
    let db = state.db.clone();
    consistency::write_owned(state, user_id, async move {
        Ok(delete.exec(&db).await?.rows_affected)
    })
    .await
}

/// Deletes every version of every spec of `user_id`; returns how many versions were removed.
pub async fn delete_all_specs(conn: &impl ConnectionTrait, user_id: i64) -> AppResult<u64> {
    let res = spec::Entity::delete_many()
        .filter(spec::Column::UserId.eq(user_id))
        .exec(conn)
        .await?;
    Ok(res.rows_affected)
}

/// Specs go with their owner's account (in the same transaction).
pub struct SpecAccountHook;

#[async_trait::async_trait]
impl crate::users::hooks::AccountHook for SpecAccountHook {
    async fn delete_rows(&self, txn: &sea_orm::DatabaseTransaction, user_id: i64) -> AppResult<()> {
        delete_all_specs(txn, user_id).await.map(drop)
    }
}
