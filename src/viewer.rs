//! Who is asking: the [`Viewer`] of a request, found lazily (at most once per request) from
//! its credential by an [`Authenticator`].
//!
//! A leaf: resolvers of every domain read the viewer from here, and the code that turns an
//! `Authorization` value into a viewer (sessions, API keys) lives above the domains, in
//! `graphql::auth`, so that no domain has to import another to know who is asking.

use std::sync::Arc;

use async_graphql::Context;
use futures::future::BoxFuture;
use tokio::sync::OnceCell;

use crate::error::{AppError, AppResult, ErrorCode};

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
    Session {
        /// The hex SHA-256 of the token (the session's key).
        token_hash: String,
    },
    /// An API key (`Basic publicKey:secretKey`).
    ApiKey {
        /// The key's public half.
        public_key: String,
    },
}

/// Turns an `Authorization` value into the viewer it names (`None`: no such viewer is an
/// error, which the implementation reports as `UNAUTHENTICATED`).
pub trait Authenticator: Send + Sync + 'static {
    /// The viewer behind `header`.
    fn authenticate<'a>(&'a self, header: &'a str) -> BoxFuture<'a, AppResult<Option<Viewer>>>;
}

/// The request's `Authorization` value and, once asked for, the viewer it names.
#[derive(Clone)]
pub struct RequestAuth {
    header: Option<String>,
    authenticator: Arc<dyn Authenticator>,
    resolved: Arc<OnceCell<Resolved>>,
}

/// The memoized outcome: the viewer, or the error's code and message.
type Resolved = Result<Option<Viewer>, (ErrorCode, String)>;

impl RequestAuth {
    /// From the raw `Authorization` value, if any.
    pub fn new(header: Option<String>, authenticator: Arc<dyn Authenticator>) -> Self {
        Self {
            header: header.filter(|h| !h.trim().is_empty()),
            authenticator,
            resolved: Arc::new(OnceCell::new()),
        }
    }

    /// From a WebSocket `connection_init` payload (`{"authorization": "Bearer …"}`).
    pub fn from_init_payload(
        payload: &serde_json::Value,
        authenticator: Arc<dyn Authenticator>,
    ) -> Self {
        let header = payload
            .get("authorization")
            .or_else(|| payload.get("Authorization"))
            .and_then(|v| v.as_str())
            .map(str::to_owned);
        Self::new(header, authenticator)
    }

    /// The same credential, not yet resolved: each operation of a WebSocket connection checks
    /// it again, so a rotated or deleted API key (or a revoked session) stops working at the
    /// connection's next operation.
    pub fn unresolved(&self) -> Self {
        Self::new(self.header.clone(), self.authenticator.clone())
    }

    /// Whether the viewer has been looked up already (by a resolver).
    pub fn is_resolved(&self) -> bool {
        self.resolved.initialized()
    }

    /// The raw `Authorization` value, if the request carried one.
    pub fn header(&self) -> Option<&str> {
        self.header.as_deref()
    }

    /// Whether the credential is a session token (`Bearer …`).
    pub fn is_bearer(&self) -> bool {
        self.header
            .as_deref()
            .and_then(|h| h.trim().split_once(' '))
            .is_some_and(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
    }

    /// The viewer, resolving the header on first use.
    pub async fn viewer(&self) -> AppResult<Option<Viewer>> {
        let res = self
            .resolved
            .get_or_init(|| async {
                let Some(header) = self.header.as_deref() else {
                    return Ok(None);
                };
                self.authenticator.authenticate(header).await.map_err(|e| {
                    if let AppError::Internal(cause) = &e {
                        tracing::error!(error = ?cause, "resolving the viewer");
                    }
                    (e.code(), e.message())
                })
            })
            .await;
        match res {
            Ok(v) => Ok(v.clone()),
            Err((ErrorCode::Internal, _)) => {
                Err(AppError::internal("could not resolve the viewer"))
            }
            Err((code, message)) => Err(AppError::from_code(*code, message.clone())),
        }
    }

    /// For usage counting: the viewer if it is known already or cheap to find (a session
    /// token: one indexed query). An API key no resolver asked for stays unchecked: checking
    /// it costs a full PBKDF2 verification, which counting must never spend on a request's
    /// behalf (a stream of made-up keys would otherwise keep the CPU busy).
    pub async fn viewer_for_counting(&self) -> Option<Viewer> {
        if let Some(resolved) = self.resolved.get() {
            return resolved.clone().ok().flatten();
        }
        if self.is_bearer() {
            self.viewer().await.ok().flatten()
        } else {
            None
        }
    }
}

/// The viewer of the current request, if any.
pub async fn viewer(ctx: &Context<'_>) -> AppResult<Option<Viewer>> {
    match ctx.data_opt::<RequestAuth>() {
        Some(auth) => auth.viewer().await,
        None => Ok(None),
    }
}

/// The viewer of the current request; `UNAUTHENTICATED` without one.
pub async fn require_viewer(ctx: &Context<'_>) -> AppResult<Viewer> {
    viewer(ctx).await?.ok_or_else(|| {
        AppError::Unauthenticated("sign in first: send `Authorization: Bearer <token>`".into())
    })
}
