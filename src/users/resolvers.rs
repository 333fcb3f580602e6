//! Thin resolvers: parse input, call the service, map errors.

use async_graphql::{Context, Object, Result};

use super::hooks::AccountHooks;
use super::service;
use super::types::{Session, User};
use crate::state::state;
use crate::viewer::{client, require_viewer, viewer};

/// Every domain's account hooks, given to the schema with its data (none when absent).
fn hooks<'a>(ctx: &Context<'a>) -> &'a AccountHooks {
    static NONE: std::sync::LazyLock<AccountHooks> =
        std::sync::LazyLock::new(AccountHooks::default);
    ctx.data_opt::<AccountHooks>().unwrap_or(&NONE)
}

/// Account queries.
#[derive(Default)]
pub struct UserQuery;

#[Object]
impl UserQuery {
    /// The signed-in user, or null without a session.
    async fn me(&self, ctx: &Context<'_>) -> Result<Option<User>> {
        let Some(v) = viewer(ctx).await? else {
            return Ok(None);
        };
        Ok(Some(service::me(state(ctx), &v).await?.into()))
    }
}

/// Account mutations.
#[derive(Default)]
pub struct UserMutation;

#[Object]
impl UserMutation {
    /// Signs up. Username: 3–32 of `[A-Za-z0-9_.-]`, unique; password: at least 8 characters.
    async fn create_user(
        &self,
        ctx: &Context<'_>,
        username: String,
        password: String,
    ) -> Result<User> {
        Ok(service::create_user(state(ctx), &username, &password)
            .await?
            .into())
    }

    /// Logs in and returns a bearer token. Repeated failures for one username are slowed,
    /// then refused with `RATE_LIMITED`; so are too many failed checks from one address.
    async fn login(
        &self,
        ctx: &Context<'_>,
        username: String,
        password: String,
    ) -> Result<Session> {
        let s = service::login(state(ctx), hooks(ctx), client(ctx), &username, &password).await?;
        Ok(Session {
            token: s.token,
            expires_at: s.row.expires_at,
            user: s.user.into(),
        })
    }

    /// Logs out: saves the battle ring to the session document and revokes the token.
    async fn logout(&self, ctx: &Context<'_>) -> Result<bool> {
        let v = require_viewer(ctx).await?;
        Ok(service::logout(state(ctx), hooks(ctx), &v).await?)
    }

    /// Changes the password; every other session of the user is revoked.
    async fn change_password(
        &self,
        ctx: &Context<'_>,
        current_password: String,
        new_password: String,
    ) -> Result<bool> {
        let v = require_viewer(ctx).await?;
        Ok(service::change_password(
            state(ctx),
            &v,
            client(ctx),
            &current_password,
            &new_password,
        )
        .await?)
    }

    /// Deletes the signed-in account (the password confirms it).
    async fn delete_user(&self, ctx: &Context<'_>, password: String) -> Result<bool> {
        let v = require_viewer(ctx).await?;
        Ok(service::delete_user(state(ctx), hooks(ctx), &v, client(ctx), &password).await?)
    }
}
