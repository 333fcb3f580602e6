//! Thin resolvers of credentials; every field is the viewer's own credentials only.

use async_graphql::{Context, Object, Result};

use super::service;
use super::types::{Credential, CredentialId, NewCredential};
use crate::state::state;
use crate::viewer::require_viewer;

/// Credential queries; each needs a viewer and sees only the viewer's credentials.
#[derive(Default)]
pub struct CredentialQuery;

#[Object]
impl CredentialQuery {
    /// The viewer's credentials, by id (never their secret keys).
    async fn credentials(&self, ctx: &Context<'_>) -> Result<Vec<Credential>> {
        let v = require_viewer(ctx).await?;
        Ok(service::credentials(state(ctx), v.id)
            .await?
            .into_iter()
            .map(Credential::from)
            .collect())
    }

    /// The viewer's credential `id`; null when the viewer has no such credential.
    async fn credential(&self, ctx: &Context<'_>, id: String) -> Result<Option<Credential>> {
        let v = require_viewer(ctx).await?;
        let id = CredentialId::parse("id", &id)?;
        Ok(service::credential(state(ctx), v.id, &id)
            .await?
            .map(Credential::from))
    }
}

/// Credential mutations; each needs a viewer and touches only the viewer's credentials.
#[derive(Default)]
pub struct CredentialMutation;

#[Object]
impl CredentialMutation {
    /// Creates the viewer's credential `id`, or rotates it (new public key and secret key;
    /// the old pair stops working at once). The secret key is shown here only.
    async fn create_credential(&self, ctx: &Context<'_>, id: String) -> Result<NewCredential> {
        let v = require_viewer(ctx).await?;
        let id = CredentialId::parse("id", &id)?;
        let (row, secret_key) = service::create_credential(state(ctx), v.id, &id).await?;
        Ok(NewCredential {
            credential: row.into(),
            secret_key,
        })
    }

    /// Deletes the viewer's credential `id`; its key stops working at once. False when the
    /// viewer has no such credential.
    async fn delete_credential(&self, ctx: &Context<'_>, id: String) -> Result<bool> {
        let v = require_viewer(ctx).await?;
        let id = CredentialId::parse("id", &id)?;
        Ok(service::delete_credential(state(ctx), v.id, &id).await?)
    }

    /// Deletes every credential of the viewer; returns how many were removed.
    async fn delete_all_credentials(&self, ctx: &Context<'_>) -> Result<i64> {
        let v = require_viewer(ctx).await?;
        Ok(service::delete_every_credential(state(ctx), v.id).await? as i64)
    }
}
