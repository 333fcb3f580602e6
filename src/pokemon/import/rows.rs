//! The two row types an import writes, and their columns, named once: [`Importable::FIELDS`]
//! gives every statement its column list (the `COPY`, the temporary table, the PostgreSQL
//! upsert, SQLite's `ON CONFLICT` update).

use std::collections::HashSet;
use std::io::Write;
use std::str::FromStr;

use entity::{pokemon, trainer};
use futures::future::BoxFuture;
use sea_orm::sea_query::{Expr, OnConflict};
use sea_orm::{
    ActiveModelTrait, ConnectionTrait, DatabaseTransaction, DbErr, EntityTrait, IntoActiveModel,
    Set,
};

use super::existing_ids;
use super::parse::{parse_pokemon, parse_trainer, Row};
use super::postgres::{copy_date, copy_text};
use crate::error::AppResult;

/// A row type that can be imported.
pub(super) trait Importable: Send + Sized + 'static {
    /// The table's entity.
    type Entity: EntityTrait<ActiveModel = Self::Active, Model = Self::Stored>;
    /// Its active model.
    type Active: ActiveModelTrait<Entity = Self::Entity> + Send;
    /// Its model.
    type Stored: IntoActiveModel<Self::Active>;
    /// The cache namespace of the entity.
    const CACHE_ENTITY: &'static str;
    /// The table.
    const TABLE: &'static str;
    /// The columns an import writes, with their PostgreSQL types, in the order of
    /// [`Importable::copy_row`]: `id` first, `version` last; every other one is replaced
    /// when the id exists.
    const FIELDS: &'static [(&'static str, &'static str)];

    fn parse(row: &mut Row<'_>) -> Option<Self>;
    fn id(&self) -> &str;
    fn owner(&self) -> Option<&str> {
        None
    }
    /// Appends the row, at `version`, as a line of `COPY` text ([`Importable::FIELDS`]).
    fn copy_row(&self, version: i64, out: &mut Vec<u8>);
    /// The row as an active model at `version`, for SQLite's batched insert.
    fn active_model(self, version: i64) -> Self::Active;

    /// `id, …, version`.
    fn columns() -> String {
        names(Self::FIELDS).collect::<Vec<_>>().join(", ")
    }

    /// PostgreSQL: the temporary table the rows are copied into when some ids exist.
    fn staging() -> String {
        let columns: Vec<String> = Self::FIELDS
            .iter()
            .map(|(name, ty)| format!("{name} {ty}"))
            .collect();
        format!(
            "CREATE TEMPORARY TABLE import_rows ({}) ON COMMIT DROP",
            columns.join(", ")
        )
    }

    /// PostgreSQL: insert-or-update every row of the temporary table; answers `(inserted,
    /// total)`. Inserted rows keep the version they were copied with; updated ones get their
    /// version + 1 (versions only grow, see `entity::versioning`).
    fn upsert_staged() -> String {
        let columns = Self::columns();
        let replaced: Vec<String> = replaced(Self::FIELDS)
            .map(|c| format!("{c} = EXCLUDED.{c}"))
            .collect();
        format!(
            "WITH up AS (
                INSERT INTO {table} AS t ({columns})
                SELECT {columns} FROM import_rows
                ON CONFLICT (id) DO UPDATE SET {replaced}, version = t.version + 1
                RETURNING (xmax = 0) AS inserted
            )
            SELECT count(*) FILTER (WHERE inserted) AS inserted, count(*) AS total FROM up",
            table = Self::TABLE,
            replaced = replaced.join(", "),
        )
    }
}

fn names(fields: &'static [(&'static str, &'static str)]) -> impl Iterator<Item = &'static str> {
    fields.iter().map(|(name, _)| *name)
}

/// The columns an existing id gets from the file: all but `id` and `version`.
fn replaced(fields: &'static [(&'static str, &'static str)]) -> impl Iterator<Item = &'static str> {
    names(fields).filter(|c| !matches!(*c, "id" | "version"))
}

fn column<M: Importable>(name: &str) -> <M::Entity as EntityTrait>::Column {
    <M::Entity as EntityTrait>::Column::from_str(name)
        .unwrap_or_else(|_| panic!("`{name}` is a column of {}", M::TABLE))
}

/// Which of `ids` exist, asked in chunks.
pub(super) async fn existing<M: Importable, C: ConnectionTrait + Sync>(
    db: &C,
    ids: &[String],
) -> AppResult<HashSet<String>> {
    existing_ids::<M::Entity, C>(db, column::<M>("id"), ids).await
}

/// SQLite: one batched insert-or-update. Inserted rows get `version`; updated ones their
/// version + 1.
pub(super) fn upsert<M: Importable>(
    txn: &DatabaseTransaction,
    rows: Vec<M>,
    version: i64,
) -> BoxFuture<'_, Result<(), DbErr>> {
    let models = rows.into_iter().map(move |r| r.active_model(version));
    let version_column = column::<M>("version");
    let on_conflict = OnConflict::column(column::<M>("id"))
        .update_columns(replaced(M::FIELDS).map(column::<M>))
        .value(
            version_column,
            Expr::col((M::Entity::default(), version_column)).add(1),
        )
        .to_owned();
    let insert = M::Entity::insert_many(models).on_conflict(on_conflict);
    Box::pin(async move {
        insert.exec_without_returning(txn).await?;
        Ok(())
    })
}

impl Importable for trainer::Model {
    type Entity = trainer::Entity;
    type Active = trainer::ActiveModel;
    type Stored = trainer::Model;
    const CACHE_ENTITY: &'static str = trainer::CACHE_ENTITY;
    const TABLE: &'static str = "trainers";
    const FIELDS: &'static [(&'static str, &'static str)] = &[
        ("id", "text"),
        ("first_name", "text"),
        ("last_name", "text"),
        ("date_of_birth", "date"),
        ("version", "bigint"),
    ];
    fn parse(row: &mut Row<'_>) -> Option<Self> {
        parse_trainer(row)
    }
    fn id(&self) -> &str {
        &self.id
    }
    fn copy_row(&self, version: i64, out: &mut Vec<u8>) {
        copy_text(out, &self.id);
        out.push(b'\t');
        copy_text(out, &self.first_name);
        out.push(b'\t');
        copy_text(out, &self.last_name);
        out.push(b'\t');
        copy_date(out, self.date_of_birth);
        let _ = writeln!(out, "\t{version}");
    }
    fn active_model(self, version: i64) -> trainer::ActiveModel {
        trainer::ActiveModel {
            id: Set(self.id),
            first_name: Set(self.first_name),
            last_name: Set(self.last_name),
            date_of_birth: Set(self.date_of_birth),
            version: Set(version),
        }
    }
}

impl Importable for pokemon::Model {
    type Entity = pokemon::Entity;
    type Active = pokemon::ActiveModel;
    type Stored = pokemon::Model;
    const CACHE_ENTITY: &'static str = pokemon::CACHE_ENTITY;
    const TABLE: &'static str = "pokemons";
    const FIELDS: &'static [(&'static str, &'static str)] = &[
        ("id", "text"),
        ("nickname", "text"),
        ("species", "text"),
        ("level", "integer"),
        ("owner_id", "text"),
        ("date_of_ownership", "date"),
        ("version", "bigint"),
    ];
    fn parse(row: &mut Row<'_>) -> Option<Self> {
        parse_pokemon(row)
    }
    fn id(&self) -> &str {
        &self.id
    }
    fn owner(&self) -> Option<&str> {
        Some(&self.owner_id)
    }
    fn copy_row(&self, version: i64, out: &mut Vec<u8>) {
        copy_text(out, &self.id);
        out.push(b'\t');
        copy_text(out, &self.nickname);
        out.push(b'\t');
        copy_text(out, &self.species);
        let _ = write!(out, "\t{}\t", self.level);
        copy_text(out, &self.owner_id);
        out.push(b'\t');
        copy_date(out, self.date_of_ownership);
        let _ = writeln!(out, "\t{version}");
    }
    fn active_model(self, version: i64) -> pokemon::ActiveModel {
        pokemon::ActiveModel {
            id: Set(self.id),
            nickname: Set(self.nickname),
            species: Set(self.species),
            level: Set(self.level),
            owner_id: Set(self.owner_id),
            date_of_ownership: Set(self.date_of_ownership),
            version: Set(version),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_statements_name_every_column_of_the_fields() {
        assert_eq!(
            trainer::Model::columns(),
            "id, first_name, last_name, date_of_birth, version"
        );
        assert_eq!(
            trainer::Model::staging(),
            "CREATE TEMPORARY TABLE import_rows (id text, first_name text, last_name text, \
             date_of_birth date, version bigint) ON COMMIT DROP"
        );
        let upsert = pokemon::Model::upsert_staged();
        assert!(upsert.contains("INSERT INTO pokemons AS t (id, nickname, species, level, owner_id, date_of_ownership, version)"));
        assert!(upsert.contains("SET nickname = EXCLUDED.nickname, species = EXCLUDED.species, level = EXCLUDED.level, owner_id = EXCLUDED.owner_id, date_of_ownership = EXCLUDED.date_of_ownership, version = t.version + 1"));
        // Every field is a column of the entity.
        for (name, _) in pokemon::Model::FIELDS {
            column::<pokemon::Model>(name);
        }
        for (name, _) in trainer::Model::FIELDS {
            column::<trainer::Model>(name);
        }
    }
}
