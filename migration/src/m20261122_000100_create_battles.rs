//! Creates `battles`: the history of every battle, indexed for a meal's battles (as winner or
//! as loser), newest first.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Battles::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(Battles::Id)
                            .big_integer()
                            .not_null()
                            .auto_increment()
                            .primary_key(),
                    )
                    .col(big_integer(Battles::WinnerId))
                    .col(big_integer(Battles::LoserId))
                    .col(double(Battles::WinnerScore))
                    .col(double(Battles::LoserScore))
                    .col(double(Battles::Delta))
                    .col(double(Battles::Random))
                    .col(timestamp_with_time_zone(Battles::FoughtAt))
                    // No foreign key: the history outlives the account that fought it.
                    .col(big_integer(Battles::UserId))
                    // Meals are only ever soft-deleted, so these always hold.
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_battles_winner")
                            .from(Battles::Table, Battles::WinnerId)
                            .to(Meals::Table, Meals::Id),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_battles_loser")
                            .from(Battles::Table, Battles::LoserId)
                            .to(Meals::Table, Meals::Id),
                    )
                    .to_owned(),
            )
            .await?;
        for (name, col) in [
            ("idx_battles_winner", Battles::WinnerId),
            ("idx_battles_loser", Battles::LoserId),
        ] {
            manager
                .create_index(
                    Index::create()
                        .name(name)
                        .table(Battles::Table)
                        .col(col)
                        .col(Battles::Id)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Battles::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum Battles {
    Table,
    Id,
    WinnerId,
    LoserId,
    WinnerScore,
    LoserScore,
    Delta,
    Random,
    FoughtAt,
    UserId,
}

#[derive(DeriveIden)]
enum Meals {
    Table,
    Id,
}
