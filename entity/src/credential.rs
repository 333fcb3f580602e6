//! `credentials`: API keys. The secret key itself is never stored, only its salted
//! PBKDF2-HMAC-SHA256 hash.

use sea_orm::entity::prelude::*;

/// An API key of a user.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "credentials")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    /// The owner.
    pub user_id: i64,
    /// The credential's id, chosen by its owner (unique per user).
    pub credential_id: String,
    /// The public half of the key (unique across users).
    #[sea_orm(unique)]
    pub public_key: String,
    /// 16 random bytes, hex.
    pub salt: String,
    /// `pbkdf2-sha256$<iterations>$<salt>$<hash>` of the secret key.
    pub secret_hash: String,
    /// When the key was created or last rotated.
    pub created_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(
        belongs_to = "super::user::Entity",
        from = "Column::UserId",
        to = "super::user::Column::Id"
    )]
    User,
}

impl Related<super::user::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::User.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}
