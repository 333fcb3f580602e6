//! Creates `documents`, the embedded document store.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Documents::Table)
                    .if_not_exists()
                    .col(string(Documents::Collection))
                    .col(string(Documents::Id))
                    .col(text(Documents::Body))
                    .col(timestamp_with_time_zone(Documents::UpdatedAt))
                    .primary_key(
                        Index::create()
                            .col(Documents::Collection)
                            .col(Documents::Id),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Documents::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum Documents {
    Table,
    Collection,
    Id,
    Body,
    UpdatedAt,
}
