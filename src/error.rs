//! One error type for the whole server, mapped to GraphQL `extensions.code` in one place.

use async_graphql::ErrorExtensions;

/// Every failure a request can meet. `Debug` prints the cause chain for the log;
/// [`AppError::message`] is what the client reads, and `Internal` says nothing of internals.
///
/// It deliberately does not implement `Display`: async-graphql converts any `Display` error
/// into a GraphQL error *without* a code, and every error of ours must carry one.
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
    /// Anything else: logged with its cause chain, reported as `INTERNAL` without details.
    Internal(anyhow::Error),
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

    /// An `INTERNAL` error with context for the log.
    pub fn internal(context: impl std::fmt::Display + Send + Sync + 'static) -> Self {
        AppError::Internal(anyhow::anyhow!("{context}"))
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
            | AppError::Timeout(m) => m.clone(),
            AppError::Internal(_) => "internal error".into(),
        }
    }

    /// The `extensions.code` of this error.
    pub fn code(&self) -> &'static str {
        match self {
            AppError::BadInput { .. } => "BAD_USER_INPUT",
            AppError::Unauthenticated(_) => "UNAUTHENTICATED",
            AppError::Forbidden(_) => "FORBIDDEN",
            AppError::NotFound(_) => "NOT_FOUND",
            AppError::Conflict(_) => "CONFLICT",
            AppError::RateLimited(_) => "RATE_LIMITED",
            AppError::Timeout(_) => "TIMEOUT",
            AppError::Internal(_) => "INTERNAL",
        }
    }
}

impl From<anyhow::Error> for AppError {
    fn from(e: anyhow::Error) -> Self {
        AppError::Internal(e)
    }
}

impl From<sea_orm::DbErr> for AppError {
    fn from(e: sea_orm::DbErr) -> Self {
        AppError::Internal(anyhow::Error::new(e).context("database"))
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
        AppError::Internal(anyhow::Error::new(e).context("document store"))
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
            ext.set("code", code);
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
