//! Creates `cache_namespace`: one row naming the cache namespace bound to this database. The
//! row is written by `arena migrate` (and at `serve` start) on the first run, and replaced
//! by `arena cache-reset`.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(CacheNamespace::Table)
                    .if_not_exists()
                    .col(integer(CacheNamespace::Id).primary_key())
                    .col(string(CacheNamespace::Namespace))
                    .col(timestamp_with_time_zone(CacheNamespace::CreatedAt))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(CacheNamespace::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum CacheNamespace {
    Table,
    Id,
    Namespace,
    CreatedAt,
}
