//! GraphQL over WebSocket on `GET /graphql/ws`: `graphql-transport-ws` (graphql-ws's
//! PROTOCOL.md, with its close codes) and the legacy `graphql-ws` of
//! subscriptions-transport-ws.
//!
//! - [`protocol`]: both protocols as a state machine without I/O;
//! - [`connection`]: the task that serves one socket with it;
//! - [`limits`]: the caps on open connections.
//!
//! Every operation runs through the same pipeline as over HTTP (`graphql::pipeline`): it checks
//! the `connection_init` credential again, gets the limits, error codes and counting, and a
//! message may not exceed `ARENA_MAX_BODY_BYTES`.

pub mod connection;
pub mod limits;
pub mod protocol;

use axum::extract::{State, WebSocketUpgrade};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;

use crate::graphql::transport::auth::client_addr;
use crate::graphql::transport::http::{HttpState, Peer};
pub use limits::Connections;
use protocol::Protocol;

/// The socket's read buffer: small, so that an idle connection costs little (a larger
/// message still arrives whole, up to the message limit).
const READ_BUFFER: usize = 4 * 1024;
/// Frames are written out at once rather than gathered.
const WRITE_BUFFER: usize = 0;

/// `GET /graphql/ws`: upgrades when a connection may be opened (503 otherwise) and serves it.
pub async fn graphql_ws(
    State(http): State<HttpState>,
    Extension(connections): Extension<Connections>,
    peer: Peer,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    let slot = match connections.open() {
        Ok(slot) => slot,
        Err(full) => {
            let body = serde_json::json!({
                "errors": [{ "message": full.message(), "extensions": { "code": "RATE_LIMITED" } }]
            });
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                [(header::RETRY_AFTER, "5")],
                axum::Json(body),
            )
                .into_response();
        }
    };
    let protocol = Protocol::negotiate(
        upgrade
            .requested_protocols()
            .filter_map(|v| v.to_str().ok()),
    );
    let settings = &http.app.settings;
    // A message is an operation: it gets the HTTP body's size limit.
    let limit = settings.max_body_bytes;
    let cx = connection::Context {
        pipeline: http.pipeline.clone(),
        client: client_addr(settings, peer.map(|p| p.0 .0), &headers),
        authenticator: http.auth.clone(),
        max_operations: settings.ws_max_operations,
        init_timeout: settings.ws_init_timeout(),
        max_message: limit,
    };
    let upgrade = upgrade
        .max_message_size(limit)
        .max_frame_size(limit)
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER);
    let upgrade = match protocol {
        Some(p) => upgrade.protocols([p.name()]),
        None => upgrade,
    };
    upgrade.on_upgrade(move |socket| connection::serve(socket, protocol, cx, slot))
}
