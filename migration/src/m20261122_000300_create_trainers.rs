//! Creates `trainers` (string ids such as `trainer1`).

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Trainers::Table)
                    .if_not_exists()
                    .col(string_len(Trainers::Id, 64).primary_key())
                    .col(string(Trainers::FirstName))
                    .col(string(Trainers::LastName))
                    .col(date(Trainers::DateOfBirth))
                    .col(big_integer(Trainers::Version).default(1))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Trainers::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
pub enum Trainers {
    Table,
    Id,
    FirstName,
    LastName,
    DateOfBirth,
    Version,
}
