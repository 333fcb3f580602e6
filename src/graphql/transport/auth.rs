//! Request authentication: turns an `Authorization` value (HTTP header, or the WebSocket
//! `connection_init` payload) into a [`Viewer`], through the users' sessions or the API keys
//! of the credentials domain. Resolvers never call this directly: they ask the leaf
//! [`crate::viewer`] module, which resolves at most once per request.

use std::hash::BuildHasher;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::sync::Arc;

use axum::http::HeaderMap;
use futures::future::BoxFuture;
use lru::LruCache;
use parking_lot::Mutex;

use crate::config::Settings;
use crate::error::{AppError, AppResult};
use crate::state::AppState;
use crate::viewer::{Authenticated, Authenticator, ClientAddr, Pinned, RequestAuth, Viewer};

/// How many credentials the instance remembers the user of.
const HINTS: usize = 10_000;

/// Resolves `Bearer` session tokens and `Basic` API keys against the state's backends.
///
/// It remembers whom each credential named last time (a hint, keyed by a hash of the
/// `Authorization` value). When it has a hint and the memo of responses is on, it reads the
/// version of that user's own rows *before* looking the credential up: if the credential
/// still names that user, the viewer is *pinned* to the version, and an answer that depends
/// on the viewer can be memoized for this credential (a later logout, rotation or deletion
/// replaces the version first). A credential's first request is never pinned.
pub struct HeaderAuthenticator {
    state: AppState,
    hints: Mutex<LruCache<u64, i64>>,
    hasher: std::collections::hash_map::RandomState,
}

impl HeaderAuthenticator {
    /// An authenticator over `state`, shared by every request of the instance.
    pub fn shared(state: AppState) -> Arc<dyn Authenticator> {
        Arc::new(Self {
            state,
            hints: Mutex::new(LruCache::new(
                NonZeroUsize::new(HINTS).expect("HINTS is not zero"),
            )),
            hasher: Default::default(),
        })
    }

    async fn authenticated(
        &self,
        header: &str,
        client: ClientAddr,
    ) -> AppResult<Option<Authenticated>> {
        let state = &self.state;
        let hash = self.hasher.hash_one(header);
        let hint = self.hints.lock().get(&hash).copied();
        // Only an operation the memo may keep is worth the round trip.
        let pinned = match hint {
            Some(user) if entity::scope::read::is_tracking() => {
                crate::consistency::reading_owned(state, user)
                    .await
                    .map(|version| (user, version))
            }
            _ => None,
        };
        let (viewer, until) = resolve(state, header, client).await?;
        if hint != Some(viewer.id) {
            self.hints.lock().put(hash, viewer.id);
        }
        let pinned = pinned
            .filter(|(user, _)| *user == viewer.id)
            .map(|(user, version)| Pinned {
                key: crate::consistency::viewer_key(user),
                version,
                until,
            });
        Ok(Some(Authenticated { viewer, pinned }))
    }
}

impl Authenticator for HeaderAuthenticator {
    fn authenticate<'a>(
        &'a self,
        header: &'a str,
        client: ClientAddr,
    ) -> BoxFuture<'a, AppResult<Option<Authenticated>>> {
        Box::pin(self.authenticated(header, client))
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

/// The viewer `header` names, and when the credential expires by itself (epoch ms).
async fn resolve(
    state: &AppState,
    header: &str,
    client: ClientAddr,
) -> AppResult<(Viewer, Option<i64>)> {
    let (scheme, value) = header
        .trim()
        .split_once(' ')
        .ok_or_else(|| AppError::Unauthenticated("malformed Authorization header".into()))?;
    let value = value.trim();
    if scheme.eq_ignore_ascii_case("bearer") {
        crate::users::service::viewer_by_session(state, value)
            .await?
            .map(|(viewer, expires)| (viewer, Some(expires.timestamp_millis())))
            .ok_or_else(|| AppError::Unauthenticated("session is invalid or has expired".into()))
    } else if scheme.eq_ignore_ascii_case("basic") {
        crate::credentials::service::viewer_by_api_key(state, client, value)
            .await?
            .map(|viewer| (viewer, None))
            .ok_or_else(|| {
                AppError::Unauthenticated("API key is invalid, rotated or deleted".into())
            })
    } else {
        Err(AppError::Unauthenticated(format!(
            "unsupported authorization scheme `{scheme}` (use Bearer or Basic)"
        )))
    }
}
