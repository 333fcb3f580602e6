//! Creates `meals`, with the indexes the catalogue and the leaderboard read by.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Meals::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(Meals::Id)
                            .big_integer()
                            .not_null()
                            .auto_increment()
                            .primary_key(),
                    )
                    .col(string_uniq(Meals::Name))
                    .col(string(Meals::Cuisine))
                    .col(double(Meals::Price))
                    .col(string_len(Meals::Difficulty, 4))
                    .col(integer(Meals::Battles).default(0))
                    .col(integer(Meals::Wins).default(0))
                    .col(double(Meals::WinPct).default(0.0))
                    .col(boolean(Meals::Deleted).default(false))
                    .col(big_integer(Meals::Version).default(1))
                    .col(timestamp_with_time_zone(Meals::CreatedAt))
                    .col(timestamp_with_time_zone(Meals::UpdatedAt))
                    .to_owned(),
            )
            .await?;
        for (name, cols) in [
            ("idx_meals_cuisine", vec![Meals::Cuisine, Meals::Id]),
            ("idx_meals_wins", vec![Meals::Wins, Meals::Id]),
            ("idx_meals_win_pct", vec![Meals::WinPct, Meals::Id]),
        ] {
            let mut index = Index::create();
            index.name(name).table(Meals::Table);
            for c in cols {
                index.col(c);
            }
            manager.create_index(index.to_owned()).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Meals::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum Meals {
    Table,
    Id,
    Name,
    Cuisine,
    Price,
    Difficulty,
    Battles,
    Wins,
    WinPct,
    Deleted,
    Version,
    CreatedAt,
    UpdatedAt,
}
