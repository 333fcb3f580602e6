//! Creates `specs`: every version of every spec of every user, one row per version.
//!
//! Each access pattern of SPEC §5 is one indexed query, whatever the number of versions:
//! - `(user_id, spec_id, seq)` (unique): one spec's versions in order, its newest version,
//!   the next sequence number, and deleting a spec; the uniqueness orders concurrent puts;
//! - `(user_id, latest, spec_id)`: the latest version of each spec (`specs`, `modelCount`)
//!   and deleting every spec of a user.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Specs::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(Specs::Id)
                            .big_integer()
                            .not_null()
                            .auto_increment()
                            .primary_key(),
                    )
                    .col(big_integer(Specs::UserId))
                    .col(string_len(Specs::SpecId, 128))
                    .col(big_integer(Specs::Seq))
                    .col(string_len(Specs::Version, 128))
                    .col(big_integer(Specs::ModelCount))
                    .col(string_len_null(Specs::Title, 256))
                    .col(text_null(Specs::Description))
                    .col(boolean(Specs::Latest))
                    .col(timestamp_with_time_zone(Specs::UpdatedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_specs_user_spec_seq")
                    .table(Specs::Table)
                    .col(Specs::UserId)
                    .col(Specs::SpecId)
                    .col(Specs::Seq)
                    .unique()
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_specs_user_latest")
                    .table(Specs::Table)
                    .col(Specs::UserId)
                    .col(Specs::Latest)
                    .col(Specs::SpecId)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Specs::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum Specs {
    Table,
    Id,
    UserId,
    SpecId,
    Seq,
    Version,
    ModelCount,
    Title,
    Description,
    Latest,
    UpdatedAt,
}
