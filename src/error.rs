//! One error type for the whole server, mapped to GraphQL `extensions.code` in one place.
//! Failures of the backends keep their cause: `From` turns each backend's error into an
//! `INTERNAL` one whose chain the log prints, and [`OrInternal`] adds the context of what was
//! being done.

use std::sync::Arc;

use async_graphql::ErrorExtensions;

/// Every failure a request can meet. `Debug` prints the cause chain for the log;
/// [`AppError::message`] is what the client reads, and `Internal` says nothing of internals.
///
/// It deliberately does not implement `Display`: async-graphql converts any `Display` error
/// into a GraphQL error *without* a code, and every error of ours must carry one. It is cheap
/// to clone (a batch's loader hands one error to every lookup that shared it).
#[derive(Clone)]
pub enum AppError {
    /// The input is wrong; `field` names the argument or input field when there is one.
    BadInput {
        /// The argument or input field at fault.
        field: Option<String>,
        /// What was wrong.
        message: String,
    },
    /// No viewer, or bad credentials.
    Unauthenticated(String),
    /// A viewer who may not do this.
    Forbidden(String),
    /// Nothing with that id (or not the viewer's).
    NotFound(String),
    /// The write clashes with the current state (a taken name, an owned Pokémon …).
    Conflict(String),
    /// Too many attempts; try again later.
    RateLimited(String),
    /// The request ran past its time limit.
    Timeout(String),
    /// A backend this request needs cannot be reached now, and the request was refused
    /// rather than risk a replica serving an older value (the `strict` consistency policy);
    /// nothing was written. Worth retrying.
    Unavailable(String),
    /// Anything else: logged with its cause chain, reported as `INTERNAL` without details.
    Internal(Arc<anyhow::Error>),
}

impl std::fmt::Debug for AppError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AppError::Internal(e) => write!(f, "Internal: {e:?}"),
            other => write!(f, "{}: {}", other.code(), other.message()),
        }
    }
}

impl AppError {
    /// A `BAD_USER_INPUT` error about `field`.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        let field = field.into();
        AppError::BadInput {
            message: format!("{field}: {}", message.into()),
            field: Some(field),
        }
    }

    /// A `BAD_USER_INPUT` error not tied to one field.
    pub fn bad_input(message: impl Into<String>) -> Self {
        AppError::BadInput {
            field: None,
            message: message.into(),
        }
    }

    /// An `INTERNAL` error that has no cause of its own (a broken invariant), with what went
    /// wrong for the log.
    pub fn internal(what: impl std::fmt::Display + Send + Sync + 'static) -> Self {
        AppError::Internal(Arc::new(anyhow::anyhow!("{what}")))
    }

    /// An `INTERNAL` error caused by `cause`, with what was being done for the log.
    pub fn caused_by<E>(context: &'static str, cause: E) -> Self
    where
        E: std::error::Error + Send + Sync + 'static,
    {
        AppError::Internal(Arc::new(anyhow::Error::new(cause).context(context)))
    }

    /// What the client reads.
    pub fn message(&self) -> String {
        match self {
            AppError::BadInput { message, .. } => message.clone(),
            AppError::Unauthenticated(m)
            | AppError::Forbidden(m)
            | AppError::NotFound(m)
            | AppError::Conflict(m)
            | AppError::RateLimited(m)
            | AppError::Timeout(m)
            | AppError::Unavailable(m) => m.clone(),
            AppError::Internal(_) => "internal error".into(),
        }
    }

    /// The `extensions.code` of this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            AppError::BadInput { .. } => ErrorCode::BadUserInput,
            AppError::Unauthenticated(_) => ErrorCode::Unauthenticated,
            AppError::Forbidden(_) => ErrorCode::Forbidden,
            AppError::NotFound(_) => ErrorCode::NotFound,
            AppError::Conflict(_) => ErrorCode::Conflict,
            AppError::RateLimited(_) => ErrorCode::RateLimited,
            AppError::Timeout(_) => ErrorCode::Timeout,
            AppError::Unavailable(_) => ErrorCode::Unavailable,
            AppError::Internal(_) => ErrorCode::Internal,
        }
    }

    /// An error of `code` saying `message` (an `INTERNAL` one keeps `message` for the log
    /// only). The inverse of [`AppError::code`] and [`AppError::message`], for errors that
    /// were remembered as their code and text.
    pub fn from_code(code: ErrorCode, message: String) -> Self {
        match code {
            ErrorCode::BadUserInput => AppError::bad_input(message),
            ErrorCode::Unauthenticated => AppError::Unauthenticated(message),
            ErrorCode::Forbidden => AppError::Forbidden(message),
            ErrorCode::NotFound => AppError::NotFound(message),
            ErrorCode::Conflict => AppError::Conflict(message),
            ErrorCode::RateLimited => AppError::RateLimited(message),
            ErrorCode::Timeout => AppError::Timeout(message),
            ErrorCode::Unavailable => AppError::Unavailable(message),
            ErrorCode::Internal => AppError::internal(message),
        }
    }
}

/// The `extensions.code` values Arena answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// The input is wrong (parse, validation, a bad argument).
    BadUserInput,
    /// No viewer, or bad credentials.
    Unauthenticated,
    /// A viewer who may not do this.
    Forbidden,
    /// Nothing with that id.
    NotFound,
    /// The write clashes with the current state.
    Conflict,
    /// Too many attempts.
    RateLimited,
    /// The request hit its time limit.
    Timeout,
    /// Refused because a backend it needs is unreachable; nothing was written.
    Unavailable,
    /// Anything else.
    Internal,
}

impl ErrorCode {
    /// As written in `extensions.code`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadUserInput => "BAD_USER_INPUT",
            ErrorCode::Unauthenticated => "UNAUTHENTICATED",
            ErrorCode::Forbidden => "FORBIDDEN",
            ErrorCode::NotFound => "NOT_FOUND",
            ErrorCode::Conflict => "CONFLICT",
            ErrorCode::RateLimited => "RATE_LIMITED",
            ErrorCode::Timeout => "TIMEOUT",
            ErrorCode::Unavailable => "UNAVAILABLE",
            ErrorCode::Internal => "INTERNAL",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<anyhow::Error> for AppError {
    fn from(e: anyhow::Error) -> Self {
        AppError::Internal(Arc::new(e))
    }
}

impl From<sea_orm::DbErr> for AppError {
    fn from(e: sea_orm::DbErr) -> Self {
        AppError::caused_by("database", e)
    }
}

impl From<crate::backends::cache::CacheError> for AppError {
    fn from(e: crate::backends::cache::CacheError) -> Self {
        AppError::caused_by("cache tier", e)
    }
}

impl From<crate::backends::events::EventError> for AppError {
    fn from(e: crate::backends::events::EventError) -> Self {
        AppError::caused_by("event bus", e)
    }
}

impl From<tokio::task::JoinError> for AppError {
    fn from(e: tokio::task::JoinError) -> Self {
        AppError::caused_by("a task of the request failed", e)
    }
}

impl From<sea_orm::TransactionError<AppError>> for AppError {
    fn from(e: sea_orm::TransactionError<AppError>) -> Self {
        match e {
            sea_orm::TransactionError::Connection(db) => db.into(),
            sea_orm::TransactionError::Transaction(app) => app,
        }
    }
}

impl From<crate::backends::documents::DocumentError> for AppError {
    fn from(e: crate::backends::documents::DocumentError) -> Self {
        AppError::caused_by("document store", e)
    }
}

/// Adds what was being done to a failure that becomes `INTERNAL`, keeping it as the cause.
pub trait OrInternal<T> {
    /// `INTERNAL`, caused by the error, while doing `context`.
    fn or_internal(self, context: &'static str) -> AppResult<T>;
}

impl<T, E> OrInternal<T> for Result<T, E>
where
    E: std::error::Error + Send + Sync + 'static,
{
    fn or_internal(self, context: &'static str) -> AppResult<T> {
        self.map_err(|e| AppError::caused_by(context, e))
    }
}

impl From<AppError> for async_graphql::Error {
    fn from(e: AppError) -> Self {
        if let AppError::Internal(cause) = &e {
            tracing::error!(error = ?cause, "internal error");
        }
        let code = e.code();
        let field = match &e {
            AppError::BadInput { field, .. } => field.clone(),
            _ => None,
        };
        async_graphql::Error::new(e.message()).extend_with(|_, ext| {
            ext.set("code", code.as_str());
            if let Some(field) = field {
                ext.set("field", field);
            }
        })
    }
}

/// Result of service and resolver functions.
pub type AppResult<T> = Result<T, AppError>;

/// Whether a database error is a unique-constraint violation (on any backend).
pub fn is_unique_violation(e: &sea_orm::DbErr) -> bool {
    matches!(
        e.sql_err(),
        Some(sea_orm::SqlErr::UniqueConstraintViolation(_))
    )
}
