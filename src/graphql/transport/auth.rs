//! Request authentication: turns an `Authorization` value (HTTP header, or the WebSocket
//! `connection_init` payload) into a [`Viewer`], through the users' sessions or the API keys
//! of the credentials domain. Resolvers never call this directly: they ask the leaf
//! [`crate::viewer`] module, which resolves at most once per request.

use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::sync::Arc;

use axum::http::HeaderMap;
use futures::future::BoxFuture;
use lru::LruCache;
use parking_lot::Mutex;
use sha2::{Digest, Sha256};

use crate::config::Settings;
use crate::error::{AppError, AppResult};
use crate::state::AppState;
use crate::viewer::{Authenticated, Authenticator, ClientAddr, Pinned, RequestAuth, Viewer};

/// How many credentials the instance remembers the user of.
const HINTS: usize = 10_000;

/// What the instance remembers of a credential (keyed by the SHA-256 of the whole
/// `Authorization` value).
#[derive(Clone)]
struct Hint {
    /// The user it named last time.
    user: i64,
    /// The viewer it resolved to, under the version of the user's own rows read *before*
    /// that lookup, and when the credential expires by itself (epoch ms).
    known: Option<(Viewer, i64, Option<i64>)>,
}

/// Resolves `Bearer` session tokens and `Basic` API keys against the state's backends.
///
/// It remembers whom each credential named last time (a hint, keyed by the SHA-256 of the
/// `Authorization` value). When it has a hint, it reads the version of that user's own rows
/// *before* looking the credential up: if the credential
/// still names that user, the viewer is *pinned* to the version, and an answer that depends
/// on the viewer can be memoized for this credential (a later logout, rotation or deletion
/// replaces the version first). A credential's first request is never pinned.
///
/// The same version lets it skip the lookup: a credential resolved under version `v` (read
/// before the lookup) names the same viewer for as long as `v` is still the version and the
/// credential has not expired, since every change to a user's sessions, API keys or account
/// replaces the version before it commits. So a credential's third request on, while a
/// shared cache (Redis) is reachable, costs a version read (from the near cache when warm)
/// and no SQL.
pub struct HeaderAuthenticator {
    state: AppState,
    hints: Mutex<LruCache<[u8; 32], Hint>>,
}

impl HeaderAuthenticator {
    /// An authenticator over `state`, shared by every request of the instance.
    pub fn shared(state: AppState) -> Arc<dyn Authenticator> {
        Arc::new(Self {
            state,
            hints: Mutex::new(LruCache::new(
                NonZeroUsize::new(HINTS).expect("HINTS is not zero"),
            )),
        })
    }

    async fn authenticated(
        &self,
        header: &str,
        client: ClientAddr,
    ) -> AppResult<Option<Authenticated>> {
        let state = &self.state;
        let hash: [u8; 32] = Sha256::digest(header.as_bytes()).into();
        let hint = self.hints.lock().get(&hash).cloned();
        // Only a cache the replicas share sees every replica's writes: an in-process one
        // vouches for this process alone, whose database other processes may write.
        let shared = state.cache.kind() != "memory";
        // The version is worth its round trip when it can skip the lookup (a shared cache)
        // or when the memo may keep this operation's answer.
        let pinned = match &hint {
            Some(hint) if shared || entity::scope::read::is_tracking() => {
                crate::consistency::reading_owned(state, hint.user)
                    .await
                    .map(|version| (hint.user, version))
            }
            _ => None,
        };
        let now = chrono::Utc::now().timestamp_millis();
        if let (Some((user, version)), Some((viewer, known, until))) =
            (pinned, hint.and_then(|h| h.known))
        {
            if shared && version == known && until.is_none_or(|u| now < u) {
                let pinned = Pinned {
                    key: crate::consistency::viewer_key(user),
                    version,
                    until,
                };
                return Ok(Some(Authenticated {
                    viewer,
                    pinned: Some(pinned),
                }));
            }
        }
        let (viewer, until) = resolve(state, header, client).await?;
        let pinned = pinned
            .filter(|(user, _)| *user == viewer.id)
            .map(|(user, version)| Pinned {
                key: crate::consistency::viewer_key(user),
                version,
                until,
            });
        let known = pinned
            .as_ref()
            .map(|p| (viewer.clone(), p.version, p.until));
        self.hints.lock().put(
            hash,
            Hint {
                user: viewer.id,
                known,
            },
        );
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
