//! Creates `pokemons`, owned by trainers (a trainer who owns Pokémon cannot be deleted), with
//! the indexes the owner and species lists read by.

use sea_orm_migration::{prelude::*, schema::*};

use super::m20261122_000300_create_trainers::Trainers;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Pokemons::Table)
                    .if_not_exists()
                    .col(string_len(Pokemons::Id, 64).primary_key())
                    .col(string(Pokemons::Nickname))
                    .col(string(Pokemons::Species))
                    .col(integer(Pokemons::Level))
                    .col(string_len(Pokemons::OwnerId, 64))
                    .col(date(Pokemons::DateOfOwnership))
                    .col(big_integer(Pokemons::Version).default(1))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_pokemons_owner")
                            .from(Pokemons::Table, Pokemons::OwnerId)
                            .to(Trainers::Table, Trainers::Id)
                            .on_delete(ForeignKeyAction::Restrict),
                    )
                    .to_owned(),
            )
            .await?;
        for (name, col) in [
            ("idx_pokemons_owner", Pokemons::OwnerId),
            ("idx_pokemons_species", Pokemons::Species),
        ] {
            manager
                .create_index(
                    Index::create()
                        .name(name)
                        .table(Pokemons::Table)
                        .col(col)
                        .col(Pokemons::Id)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Pokemons::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum Pokemons {
    Table,
    Id,
    Nickname,
    Species,
    Level,
    OwnerId,
    DateOfOwnership,
    Version,
}
