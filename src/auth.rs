//! Who is asking: the viewer behind `Authorization` (HTTP) or the `connection_init` payload
//! (WebSocket). Resolved lazily, at most once per request.

use std::sync::Arc;

use async_graphql::Context;
use tokio::sync::OnceCell;

use crate::app::AppState;
use crate::error::{AppError, AppResult};

/// The authenticated user of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Viewer {
    /// The user's id.
    pub id: i64,
    /// The user's name.
    pub username: String,
    /// How the viewer authenticated.
    pub via: AuthMethod,
}

/// The credential a request carried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthMethod {
    /// A session token from `login`; the SHA-256 of the token.
    Session { token_hash: String },
    /// An API key (`Basic publicKey:secretKey`).
    ApiKey { public_key: String },
}

/// The request's `Authorization` value and, once asked for, the viewer it names.
#[derive(Default, Clone)]
pub struct RequestAuth {
    header: Option<String>,
    resolved: Arc<OnceCell<Resolved>>,
}

/// The memoized outcome: the viewer, or the error's message and code.
type Resolved = Result<Option<Viewer>, (String, &'static str)>;

impl RequestAuth {
    /// From the raw `Authorization` value, if any.
    pub fn new(header: Option<String>) -> Self {
        Self {
            header: header.filter(|h| !h.trim().is_empty()),
            resolved: Arc::new(OnceCell::new()),
        }
    }

    /// From a WebSocket `connection_init` payload (`{"authorization": "Bearer …"}`).
    pub fn from_init_payload(payload: &serde_json::Value) -> Self {
        let header = payload
            .get("authorization")
            .or_else(|| payload.get("Authorization"))
            .and_then(|v| v.as_str())
            .map(str::to_owned);
        Self::new(header)
    }

    /// The same credential, not yet resolved: each operation of a WebSocket connection checks
    /// it again, so a rotated or deleted API key (or a revoked session) stops working at the
    /// connection's next operation.
    pub fn unresolved(&self) -> Self {
        Self::new(self.header.clone())
    }

    /// Whether the viewer has been looked up already (by a resolver).
    pub fn is_resolved(&self) -> bool {
        self.resolved.initialized()
    }

    /// The raw `Authorization` value, if the request carried one.
    pub fn header(&self) -> Option<&str> {
        self.header.as_deref()
    }

    /// The viewer, resolving the header on first use.
    pub async fn viewer(&self, state: &AppState) -> AppResult<Option<Viewer>> {
        let res = self
            .resolved
            .get_or_init(|| async {
                match resolve(state, self.header.as_deref()).await {
                    Ok(v) => Ok(v),
                    Err(AppError::Unauthenticated(m)) => Err((m, "UNAUTHENTICATED")),
                    Err(e) => {
                        let code = e.code();
                        if let AppError::Internal(cause) = &e {
                            tracing::error!(error = ?cause, "resolving the viewer");
                        }
                        Err((e.message(), code))
                    }
                }
            })
            .await;
        match res {
            Ok(v) => Ok(v.clone()),
            Err((m, "UNAUTHENTICATED")) => Err(AppError::Unauthenticated(m.clone())),
            Err((m, "RATE_LIMITED")) => Err(AppError::RateLimited(m.clone())),
            Err(_) => Err(AppError::internal("could not resolve the viewer")),
        }
    }
}

impl RequestAuth {
    /// For usage counting: the viewer if it is known already or cheap to find (a session
    /// token: one indexed query). An API key no resolver asked for stays unchecked: checking
    /// it costs a full PBKDF2 verification, which counting must never spend on a request's
    /// behalf (a stream of made-up keys would otherwise keep the CPU busy).
    pub async fn viewer_for_counting(&self, state: &AppState) -> Option<Viewer> {
        if let Some(resolved) = self.resolved.get() {
            return resolved.clone().ok().flatten();
        }
        let bearer = self
            .header
            .as_deref()
            .and_then(|h| h.trim().split_once(' '))
            .is_some_and(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"));
        if bearer {
            self.viewer(state).await.ok().flatten()
        } else {
            None
        }
    }
}

async fn resolve(state: &AppState, header: Option<&str>) -> AppResult<Option<Viewer>> {
    let Some(header) = header else {
        return Ok(None);
    };
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
        crate::credentials::service::viewer_by_api_key(state, value)
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

/// The viewer of the current request, if any.
pub async fn viewer(ctx: &Context<'_>) -> AppResult<Option<Viewer>> {
    let state = crate::app::state(ctx);
    match ctx.data_opt::<RequestAuth>() {
        Some(auth) => auth.viewer(state).await,
        None => Ok(None),
    }
}

/// The viewer of the current request; `UNAUTHENTICATED` without one.
pub async fn require_viewer(ctx: &Context<'_>) -> AppResult<Viewer> {
    viewer(ctx).await?.ok_or_else(|| {
        AppError::Unauthenticated("sign in first: send `Authorization: Bearer <token>`".into())
    })
}
