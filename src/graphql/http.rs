//! GraphQL over HTTP (JSON and multipart, batches capped), plus the GraphiQL page. The
//! WebSocket endpoint is [`crate::graphql::ws`].

use async_graphql::http::MultipartOptions;
use async_graphql::{BatchRequest, ParseRequestError};
use async_graphql_axum::GraphQLResponse;
use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use futures::TryStreamExt;

use crate::graphql::auth::request_auth;
use crate::graphql::ArenaSchema;
use crate::state::AppState;
use crate::viewer::Authenticator;
use std::sync::Arc;

/// What the HTTP handlers share: the app state, the schema and the authenticator.
#[derive(Clone)]
pub struct HttpState {
    /// Shared state.
    pub app: AppState,
    /// The schema, built with the state.
    pub schema: ArenaSchema,
    /// Turns a request's credential into its viewer.
    pub auth: Arc<dyn Authenticator>,
}

/// `GET /` and `GET /graphql`: the GraphiQL playground, subscriptions wired to the WS path,
/// its assets from `ARENA_GRAPHIQL_ASSETS`.
pub async fn graphiql(State(http): State<HttpState>) -> impl IntoResponse {
    Html(crate::graphql::graphiql::page(
        &http.app.settings.graphiql_assets,
    ))
}

/// A GraphQL-shaped error response for failures before execution.
pub fn error_response(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    let body = serde_json::json!({
        "errors": [{ "message": message.into(), "extensions": { "code": code } }]
    });
    (status, axum::Json(body)).into_response()
}

/// `POST /graphql`.
pub async fn graphql_post(
    State(http): State<HttpState>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let settings = &http.app.settings;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let multipart = content_type
        .as_deref()
        .is_some_and(|c| c.starts_with("multipart/"));
    let limit = if multipart {
        settings.max_upload_bytes + settings.max_body_bytes
    } else {
        settings.max_body_bytes
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return too_large(limit);
    }
    let limited = http_body_util::Limited::new(body, limit);
    let reader = Body::new(limited)
        .into_data_stream()
        .map_err(std::io::Error::other)
        .into_async_read();
    let opts = MultipartOptions::default()
        .max_file_size(settings.max_upload_bytes)
        .max_num_files(4);
    let batch = match async_graphql::http::receive_batch_body(content_type, reader, opts).await {
        Ok(b) => b,
        Err(ParseRequestError::PayloadTooLarge) => return too_large(limit),
        Err(ParseRequestError::Io(e)) if e.to_string().contains("length limit") => {
            return too_large(limit)
        }
        Err(e) => {
            return error_response(
                StatusCode::BAD_REQUEST,
                "BAD_USER_INPUT",
                format!("could not read the GraphQL request: {e}"),
            )
        }
    };
    if let BatchRequest::Batch(v) = &batch {
        if v.is_empty() || v.len() > settings.max_batch {
            return error_response(
                StatusCode::BAD_REQUEST,
                "BAD_USER_INPUT",
                format!(
                    "a batch holds 1 to {} operations; this one has {}",
                    settings.max_batch,
                    v.len()
                ),
            );
        }
    }
    let auth = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let batch = batch.data(request_auth(&http.auth, auth));
    let batch = crate::graphql::loaders::attach(batch, &http.app);
    match tokio::time::timeout(settings.request_timeout(), http.schema.execute_batch(batch)).await {
        Ok(resp) => GraphQLResponse::from(resp).into_response(),
        Err(_) => {
            http.app
                .metrics
                .graphql_errors
                .with_label_values(&["TIMEOUT"])
                .inc();
            error_response(
                StatusCode::OK,
                "TIMEOUT",
                format!(
                    "the request ran longer than the {} ms limit and was cancelled; a write \
                     that had not reached its commit was rolled back, one already committing \
                     completed (read the data again to know which)",
                    settings.request_timeout_ms
                ),
            )
        }
    }
}

fn too_large(limit: usize) -> Response {
    error_response(
        StatusCode::PAYLOAD_TOO_LARGE,
        "BAD_USER_INPUT",
        format!("the request body is larger than the {limit}-byte limit"),
    )
}
