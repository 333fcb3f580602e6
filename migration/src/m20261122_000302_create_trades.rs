//! Creates `trades`, the exchange history (kept when a trainer or Pokémon is deleted, so no
//! foreign keys), indexed by each side's trainer.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Trades::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(Trades::Id)
                            .big_integer()
                            .not_null()
                            .auto_increment()
                            .primary_key(),
                    )
                    .col(string_len(Trades::TrainerA, 64))
                    .col(string_len(Trades::TrainerB, 64))
                    .col(text(Trades::PokemonsA))
                    .col(text(Trades::PokemonsB))
                    .col(timestamp_with_time_zone(Trades::TradedAt))
                    .to_owned(),
            )
            .await?;
        for (name, col) in [
            ("idx_trades_trainer_a", Trades::TrainerA),
            ("idx_trades_trainer_b", Trades::TrainerB),
        ] {
            manager
                .create_index(
                    Index::create()
                        .name(name)
                        .table(Trades::Table)
                        .col(col)
                        .col(Trades::Id)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Trades::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum Trades {
    Table,
    Id,
    TrainerA,
    TrainerB,
    PokemonsA,
    PokemonsB,
    TradedAt,
}
