//! GraphQL over Server-Sent Events at `/graphql/stream`: the `graphql-sse` protocol
//! (its PROTOCOL.md), in both of its modes.
//!
//! - **Distinct connections**: `POST` a GraphQL request with `Accept: text/event-stream`; the
//!   answer is a stream of `next` events (a result each; errors before execution too) and a
//!   `complete` event, or as many results as a subscription or live query has, until the
//!   client closes the connection.
//! - **Single connection**: `PUT` reserves a stream and answers `201` with a token; `GET`
//!   with the token (header `X-GraphQL-Event-Stream-Token`, or `?token=`) opens it; each
//!   `POST` with the token and `extensions.operationId` starts an operation (`202`), whose
//!   `next` events carry `{ id, payload }` and whose `complete` carries `{ id }`; `DELETE
//!   ?operationId=` with the token stops one. Operations posted before the stream opened wait
//!   for it; closing the stream stops them all.
//!
//! Queries, mutations, subscriptions and `@live` queries all run through the same pipeline
//! as over the WebSocket, with the same credential checks (`Authorization` on each request),
//! limits and error codes. An open stream (or a reservation) takes a place under the
//! WebSocket's connection caps, and a single connection runs at most
//! `ARENA_WS_MAX_OPERATIONS` operations at once.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_graphql::Data;
use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use futures::stream::{self, BoxStream, StreamExt};
use parking_lot::Mutex;
use serde::Deserialize;
use tokio::sync::mpsc;
use tokio::task::AbortHandle;

use super::http::{auth_of, error_response, HttpState, MediaType, Peer};
use super::ws::limits::Slot;
use super::ws::protocol::is_request_error;
use super::ws::Connections;
use crate::graphql::engine::pipeline::{Payload, Transport};

/// The header that carries a reservation's token.
pub const TOKEN_HEADER: &str = "x-graphql-event-stream-token";

/// A reservation whose stream has not been opened within this long is dropped.
const RESERVATION_TTL: Duration = Duration::from_secs(60);

/// Events of a single-connection stream waiting for the client to read them.
const STREAM_BUFFER: usize = 64;

/// The reserved single-connection streams of this instance.
#[derive(Clone, Default)]
pub struct Streams(Arc<Mutex<HashMap<String, Reservation>>>);

struct Reservation {
    tx: mpsc::Sender<String>,
    /// Taken by the `GET` that opens the stream.
    rx: Option<mpsc::Receiver<String>>,
    /// Running operations by id.
    ops: HashMap<String, AbortHandle>,
    made: Instant,
    /// Its place under the connection caps.
    _slot: Slot,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        for op in self.ops.values() {
            op.abort();
        }
    }
}

fn token_of(headers: &HeaderMap, query: &HashMap<String, String>) -> Option<String> {
    headers
        .get(TOKEN_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(|| query.get("token").cloned())
        .filter(|t| !t.is_empty())
}

fn refuse(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    error_response(status, MediaType::Json, code, message)
}

fn accepts_event_stream(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.to_ascii_lowercase().contains("text/event-stream"))
}

/// Comments sent while a stream is quiet, so that proxies keep it and a vanished client is
/// noticed.
const KEEP_ALIVE: Duration = Duration::from_secs(12);

/// An SSE response over `events` (each one whole: `event: …\ndata: …\n\n`), with
/// keep-alive comments between them; it ends when `events` does.
fn event_stream(events: BoxStream<'static, String>) -> Response {
    let start = tokio::time::Instant::now() + KEEP_ALIVE;
    let ticks = tokio::time::interval_at(start, KEEP_ALIVE);
    let body = stream::unfold((events, ticks), |(mut events, mut ticks)| async move {
        let chunk = tokio::select! {
            biased;
            event = events.next() => event?,
            _ = ticks.tick() => ":\n\n".to_owned(),
        };
        Some((Ok::<_, Infallible>(chunk), (events, ticks)))
    });
    let mut resp = Body::from_stream(body).into_response();
    let headers = resp.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream; charset=utf-8"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // Proxies that buffer responses (nginx) pass this one through as it comes.
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    resp
}

/// An event with a JSON `data` (serialized JSON holds no newline).
fn event(name: &str, data: &impl serde::Serialize) -> String {
    format!(
        "event: {name}\ndata: {}\n\n",
        serde_json::to_string(data).unwrap_or_default()
    )
}

/// `complete` of distinct connections mode: an empty `data` field, which `EventSource`
/// needs to dispatch the event at all.
const COMPLETE: &str = "event: complete\ndata:\n\n";

/// The GraphQL request of a body: `query` a string, `variables` and `extensions` objects.
async fn request_of(
    http: &HttpState,
    body: Body,
) -> Result<(async_graphql::Request, serde_json::Value), Box<Response>> {
    let limit = http.app.settings.max_body_bytes;
    let bytes = axum::body::to_bytes(body, limit).await.map_err(|_| {
        Box::new(refuse(
            StatusCode::PAYLOAD_TOO_LARGE,
            "BAD_USER_INPUT",
            format!("the body is larger than {limit} bytes"),
        ))
    })?;
    let value: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| {
        Box::new(refuse(
            StatusCode::BAD_REQUEST,
            "BAD_USER_INPUT",
            format!("the body is not a GraphQL request: {e}"),
        ))
    })?;
    let request = super::ws::protocol::request_of(Some(&value)).map_err(|why| {
        Box::new(refuse(
            StatusCode::BAD_REQUEST,
            "BAD_USER_INPUT",
            format!(
                "the body is not a GraphQL request: {}",
                why.replace("payload.", "")
                    .replace("\"payload\"", "the body")
            ),
        ))
    })?;
    Ok((*request, value))
}

/// The results of `request`, run with the credential of `headers`.
fn results(
    http: &HttpState,
    peer: Peer,
    headers: &HeaderMap,
    request: async_graphql::Request,
) -> BoxStream<'static, Payload> {
    let mut data = Data::default();
    data.insert(auth_of(http, peer, headers));
    http.pipeline
        .execute_stream(request, Some(Arc::new(data)), Transport::Sse)
}

/// A place under the connection caps, or the `503` that refuses one.
fn open_slot(connections: &Connections) -> Result<Slot, Box<Response>> {
    connections.open().map_err(|full| {
        let mut resp = refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "RATE_LIMITED",
            full.message(),
        );
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        Box::new(resp)
    })
}

/// `PUT /graphql/stream`: reserves a single-connection stream; `201` with its token.
pub async fn reserve(
    Extension(streams): Extension<Streams>,
    Extension(connections): Extension<Connections>,
) -> Response {
    let slot = match open_slot(&connections) {
        Ok(slot) => slot,
        Err(full) => return *full,
    };
    let token = uuid::Uuid::new_v4().simple().to_string();
    let (tx, rx) = mpsc::channel(STREAM_BUFFER);
    {
        let mut reserved = streams.0.lock();
        // Reservations nobody opened in time are dropped (their places freed).
        reserved.retain(|_, r| r.rx.is_none() || r.made.elapsed() < RESERVATION_TTL);
        reserved.insert(
            token.clone(),
            Reservation {
                tx,
                rx: Some(rx),
                ops: HashMap::new(),
                made: Instant::now(),
                _slot: slot,
            },
        );
    }
    (
        StatusCode::CREATED,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        token,
    )
        .into_response()
}

/// `GET /graphql/stream` with a token: opens the reserved stream.
pub async fn open(
    Extension(streams): Extension<Streams>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let Some(token) = token_of(&headers, &query) else {
        return refuse(
            StatusCode::BAD_REQUEST,
            "BAD_USER_INPUT",
            "GET opens a reserved stream: send its token (PUT reserves one), or POST an \
             operation with Accept: text/event-stream",
        );
    };
    let rx = {
        let mut reserved = streams.0.lock();
        match reserved.get_mut(&token) {
            None => {
                return refuse(
                    StatusCode::NOT_FOUND,
                    "NOT_FOUND",
                    "no stream is reserved with this token",
                )
            }
            Some(r) => match r.rx.take() {
                Some(rx) => rx,
                None => {
                    return refuse(
                        StatusCode::CONFLICT,
                        "BAD_USER_INPUT",
                        "this reservation's stream is open already",
                    )
                }
            },
        }
    };
    // Closing the stream ends the reservation and stops its operations.
    let gone = scopeguard::guard((streams, token), |(streams, token)| {
        let dropped = streams.0.lock().remove(&token);
        drop(dropped);
    });
    let events = stream::unfold((rx, gone), |(mut rx, gone)| async move {
        let event = rx.recv().await?;
        Some((event, (rx, gone)))
    });
    event_stream(events.boxed())
}

/// `?operationId=` of a `DELETE`.
#[derive(Deserialize)]
pub struct Stop {
    #[serde(rename = "operationId")]
    operation_id: Option<String>,
    token: Option<String>,
}

/// `DELETE /graphql/stream?operationId=…` with a token: stops that operation.
pub async fn stop(
    Extension(streams): Extension<Streams>,
    Query(stop): Query<Stop>,
    headers: HeaderMap,
) -> Response {
    let mut query = HashMap::new();
    if let Some(t) = stop.token {
        query.insert("token".to_owned(), t);
    }
    let Some(token) = token_of(&headers, &query) else {
        return refuse(
            StatusCode::BAD_REQUEST,
            "BAD_USER_INPUT",
            "the token is missing",
        );
    };
    let Some(id) = stop.operation_id.filter(|id| !id.is_empty()) else {
        return refuse(
            StatusCode::BAD_REQUEST,
            "BAD_USER_INPUT",
            "`operationId` is missing from the query string",
        );
    };
    let mut reserved = streams.0.lock();
    let Some(r) = reserved.get_mut(&token) else {
        return refuse(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            "no stream is reserved with this token",
        );
    };
    if let Some(op) = r.ops.remove(&id) {
        op.abort();
    }
    StatusCode::OK.into_response()
}

/// `POST /graphql/stream`: an operation, on a reserved stream (with a token) or on a stream
/// of its own (`Accept: text/event-stream`).
pub async fn execute(
    State(http): State<HttpState>,
    Extension(streams): Extension<Streams>,
    Extension(connections): Extension<Connections>,
    Query(query): Query<HashMap<String, String>>,
    peer: Peer,
    headers: HeaderMap,
    body: Body,
) -> Response {
    match token_of(&headers, &query) {
        Some(token) => on_reserved(&http, &streams, token, peer, &headers, body).await,
        None => distinct(&http, &connections, peer, &headers, body).await,
    }
}

async fn distinct(
    http: &HttpState,
    connections: &Connections,
    peer: Peer,
    headers: &HeaderMap,
    body: Body,
) -> Response {
    if !accepts_event_stream(headers) {
        return refuse(
            StatusCode::NOT_ACCEPTABLE,
            "BAD_USER_INPUT",
            "this endpoint answers with Server-Sent Events: send Accept: text/event-stream \
             (or POST to /graphql for a JSON answer)",
        );
    }
    let slot = match open_slot(connections) {
        Ok(slot) => slot,
        Err(full) => return *full,
    };
    let (request, _) = match request_of(http, body).await {
        Ok(r) => r,
        Err(resp) => return *resp,
    };
    let results = results(http, peer, headers, request);
    // The stream holds its place until it ends.
    let events = results
        .map(move |r| {
            let _held = &slot;
            event("next", &r)
        })
        .chain(stream::once(async { COMPLETE.to_owned() }));
    event_stream(events.boxed())
}

async fn on_reserved(
    http: &HttpState,
    streams: &Streams,
    token: String,
    peer: Peer,
    headers: &HeaderMap,
    body: Body,
) -> Response {
    let (request, raw) = match request_of(http, body).await {
        Ok(r) => r,
        Err(resp) => return *resp,
    };
    let id = match raw.pointer("/extensions/operationId") {
        Some(serde_json::Value::String(id)) if !id.is_empty() => id.clone(),
        _ => {
            return refuse(
                StatusCode::BAD_REQUEST,
                "BAD_USER_INPUT",
                "an operation on a reserved stream needs `extensions.operationId` (a string)",
            )
        }
    };
    let max = http.app.settings.ws_max_operations;
    let verdict_rx = {
        let mut reserved = streams.0.lock();
        let Some(r) = reserved.get_mut(&token) else {
            return refuse(
                StatusCode::NOT_FOUND,
                "NOT_FOUND",
                "no stream is reserved with this token",
            );
        };
        r.ops.retain(|_, op| !op.is_finished());
        if r.ops.contains_key(&id) {
            return refuse(
                StatusCode::CONFLICT,
                "BAD_USER_INPUT",
                format!("operation `{id}` is running already on this stream"),
            );
        }
        if r.ops.len() >= max {
            return refuse(
                StatusCode::TOO_MANY_REQUESTS,
                "RATE_LIMITED",
                format!(
                    "this stream already runs {max} operations, the most it may; stop one first"
                ),
            );
        }
        let tx = r.tx.clone();
        let mut data = Data::default();
        data.insert(auth_of(http, peer, headers));
        let (mut results, mut began) =
            http.pipeline
                .execute_stream_checked(request, Some(Arc::new(data)), Transport::Sse);
        // Whether the operation began (202) or was refused before it ran (400 with its errors,
        // as GraphQL over HTTP answers them): known at its first payload or once it validated.
        let (verdict, verdict_rx) = tokio::sync::oneshot::channel::<Option<Payload>>();
        let streams_of_op = streams.clone();
        let (op_id, op_token) = (id.clone(), token.clone());
        let task = tokio::spawn(async move {
            // `Some(first payload or the end)`, or `None` once it began with no payload yet.
            let first = tokio::select! {
                biased;
                first = results.next() => Some(first),
                began = async { began.wait_for(|b| *b).await.is_ok() } => {
                    if began {
                        None
                    } else {
                        // No validation to wait for (a live query): its first payload decides.
                        Some(results.next().await)
                    }
                }
            };
            let (mut pending, ended) = match first {
                Some(Some(p)) => (Some(p), false),
                Some(None) => (None, true),
                None => (None, false),
            };
            if let Some(p) = &pending {
                if p.response().is_some_and(is_request_error) {
                    let _ = verdict.send(pending.take());
                    return;
                }
            }
            let _ = verdict.send(None);
            let send = |payload: Payload| {
                let tx = tx.clone();
                let op_id = op_id.clone();
                async move {
                    let data = serde_json::json!({ "id": op_id, "payload": payload });
                    tx.send(event("next", &data)).await.is_ok()
                }
            };
            if let Some(p) = pending {
                if !send(p).await {
                    return;
                }
            }
            while let Some(payload) = if ended { None } else { results.next().await } {
                if !send(payload).await {
                    return;
                }
            }
            let _ = tx
                .send(event("complete", &serde_json::json!({ "id": op_id })))
                .await;
            if let Some(r) = streams_of_op.0.lock().get_mut(&op_token) {
                r.ops.remove(&op_id);
            }
        });
        r.ops.insert(id.clone(), task.abort_handle());
        verdict_rx
    };
    match verdict_rx.await {
        Ok(None) => StatusCode::ACCEPTED.into_response(),
        Ok(Some(refused)) => {
            if let Some(r) = streams.0.lock().get_mut(&token) {
                r.ops.remove(&id);
            }
            let mut resp = axum::Json(&refused).into_response();
            *resp.status_mut() = StatusCode::BAD_REQUEST;
            resp
        }
        // The stream closed meanwhile (its operations were stopped).
        Err(_) => refuse(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            "no stream is reserved with this token",
        ),
    }
}
