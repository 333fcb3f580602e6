//! Creates `credentials`: API keys. Only a salted hash of the secret is stored.
//!
//! `public_key` is unique across all users (it is how a request names its key);
//! `(user_id, credential_id)` is unique per user and serves listing and deleting.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Credentials::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(Credentials::Id)
                            .big_integer()
                            .not_null()
                            .auto_increment()
                            .primary_key(),
                    )
                    .col(big_integer(Credentials::UserId))
                    .col(string_len(Credentials::CredentialId, 128))
                    .col(string_len_uniq(Credentials::PublicKey, 64))
                    .col(string_len(Credentials::Salt, 64))
                    .col(string(Credentials::SecretHash))
                    .col(timestamp_with_time_zone(Credentials::CreatedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_credentials_user_credential")
                    .table(Credentials::Table)
                    .col(Credentials::UserId)
                    .col(Credentials::CredentialId)
                    .unique()
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Credentials::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum Credentials {
    Table,
    Id,
    UserId,
    CredentialId,
    PublicKey,
    Salt,
    SecretHash,
    CreatedAt,
}
