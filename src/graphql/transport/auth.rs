//! Request authentication: turns an `Authorization` value (HTTP header, or the WebSocket
//! `connection_init` payload) into a [`Viewer`], through the users' sessions or the API keys
//! of the credentials domain. Resolvers never call this directly: they ask the leaf
//! [`crate::viewer`] module, which resolves at most once per request.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::http::HeaderMap;
use futures::future::BoxFuture;

use crate::config::Settings;
use crate::error::{AppError, AppResult};
use crate::state::AppState;
use crate::viewer::{Authenticator, ClientAddr, RequestAuth, Viewer};

/// Resolves `Bearer` session tokens and `Basic` API keys against the state's backends.
pub struct HeaderAuthenticator {
    state: AppState,
}

impl HeaderAuthenticator {
    /// An authenticator over `state`, shared by every request of the instance.
    pub fn shared(state: AppState) -> Arc<dyn Authenticator> {
        Arc::new(Self { state })
    }
}

impl Authenticator for HeaderAuthenticator {
    fn authenticate<'a>(
        &'a self,
        header: &'a str,
        client: ClientAddr,
    ) -> BoxFuture<'a, AppResult<Option<Viewer>>> {
        Box::pin(resolve(&self.state, header, client))
    }
}

/// A request's credential, to be resolved on first use.
pub fn request_auth(
    authenticator: &Arc<dyn Authenticator>,
    header: Option<String>,
    client: ClientAddr,
) -> RequestAuth {
    RequestAuth::new(header, client, authenticator.clone())
}

/// The client of a request that reached the server from `peer` with `headers`: `peer`, or
/// whom `X-Forwarded-For` names when `peer` is one of `ARENA_TRUSTED_PROXIES`.
pub fn client_addr(
    settings: &Settings,
    peer: Option<SocketAddr>,
    headers: &HeaderMap,
) -> ClientAddr {
    let forwarded = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok());
    ClientAddr::resolve(peer, forwarded, &settings.trusted_proxies)
}

async fn resolve(state: &AppState, header: &str, client: ClientAddr) -> AppResult<Option<Viewer>> {
    let (scheme, value) = header
        .trim()
        .split_once(' ')
        .ok_or_else(|| AppError::Unauthenticated("malformed Authorization header".into()))?;
    let value = value.trim();
    if scheme.eq_ignore_ascii_case("bearer") {
        crate::users::service::viewer_by_session(state, value)
            .await?
            .map(Some)
            .ok_or_else(|| AppError::Unauthenticated("session is invalid or has expired".into()))
    } else if scheme.eq_ignore_ascii_case("basic") {
        crate::credentials::service::viewer_by_api_key(state, client, value)
            .await?
            .map(Some)
            .ok_or_else(|| {
                AppError::Unauthenticated("API key is invalid, rotated or deleted".into())
            })
    } else {
        Err(AppError::Unauthenticated(format!(
            "unsupported authorization scheme `{scheme}` (use Bearer or Basic)"
        )))
    }
}
