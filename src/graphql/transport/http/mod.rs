//! GraphQL over HTTP, per the GraphQL-over-HTTP specification: `POST /graphql` with a JSON
//! body (or multipart, for uploads; batches capped), `GET /graphql?query=…` for queries, and
//! the GraphiQL page for a browser. The WebSocket endpoint is [`crate::graphql::ws`].
//!
//! The response's media type follows `Accept`: `application/graphql-response+json` when the
//! client accepts it (then a request refused before it ran — unreadable JSON, a document that
//! does not parse or validate, bad variables — is a `400` without `data`), otherwise
//! `application/json` (the legacy type: such refusals are `200` with `errors`).

mod negotiate;
mod request;
mod response;

use std::borrow::Cow;
use std::sync::Arc;

use async_graphql::{BatchRequest, Request};
use axum::body::Body;
use axum::extract::{ConnectInfo, RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use futures::stream::{FuturesOrdered, StreamExt};

use crate::graphql::engine::pipeline::{Answer, Document, Persisted, Pipeline, Transport};
use crate::graphql::transport::auth::{client_addr, request_auth};
use crate::state::AppState;
use crate::viewer::{Authenticator, RequestAuth};
use negotiate::{media_of, wants_html};
pub use negotiate::{MediaType, GRAPHQL_RESPONSE_JSON};
use request::{
    parse_json_body, read_body, read_multipart, split_canonical_apq, Parsed, RequestParams,
};
pub use response::error_response;
use response::{answer_response, bad_request, batch_response, multipart_response};

/// Whether the client reads incremental delivery (`@defer` / `@stream`) as `multipart/mixed`
/// (Apollo Client sends `multipart/mixed;deferSpec=20220824`). Without it a deferring
/// operation is answered whole.
fn accepts_multipart(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|range| {
            let mut parts = range.split(';').map(|p| p.trim().to_ascii_lowercase());
            parts.next().as_deref() == Some("multipart/mixed")
                && !parts.any(|p| {
                    p.strip_prefix("q=")
                        .is_some_and(|q| q.parse::<f32>().is_ok_and(|q| q <= 0.0))
                })
        })
}

/// The connection's peer address (present when the router is served with connect info).
pub type Peer = Option<axum::Extension<ConnectInfo<std::net::SocketAddr>>>;

/// What the HTTP handlers share, behind one `Arc`: every request clones the router's state
/// (once per extractor), and one reference count costs less than one per field.
#[derive(Clone)]
pub struct HttpState(Arc<HttpShared>);

impl HttpState {
    /// The state of the HTTP handlers.
    pub fn new(app: AppState, pipeline: Arc<Pipeline>, auth: Arc<dyn Authenticator>) -> Self {
        Self(Arc::new(HttpShared {
            app,
            pipeline,
            auth,
        }))
    }
}

impl std::ops::Deref for HttpState {
    type Target = HttpShared;
    fn deref(&self) -> &HttpShared {
        &self.0
    }
}

/// The app state, the pipeline and the authenticator.
pub struct HttpShared {
    /// Shared state.
    pub app: AppState,
    /// Where every operation runs.
    pub pipeline: Arc<Pipeline>,
    /// Turns a request's credential into its viewer.
    pub auth: Arc<dyn Authenticator>,
}

/// `GET /` and `GET /graphql` from a browser: the GraphiQL playground, subscriptions wired to
/// the WebSocket path, its assets from `ARENA_GRAPHIQL_ASSETS`.
pub async fn graphiql(State(http): State<HttpState>) -> Response {
    Html(crate::graphql::transport::graphiql::page(
        &http.app.settings.graphiql_assets,
    ))
    .into_response()
}

/// The request's credential, and the client address its failed checks count against.
pub(crate) fn auth_of(http: &HttpState, peer: Peer, headers: &HeaderMap) -> RequestAuth {
    let header = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let client = client_addr(&http.app.settings, peer.map(|p| p.0 .0), headers);
    request_auth(&http.auth, header, client)
}

/// `GET /graphql`: a query from the query string, or GraphiQL for a browser.
pub async fn graphql_get(
    State(http): State<HttpState>,
    peer: Peer,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    let raw = raw.unwrap_or_default();
    let (params, persisted, variables) = match RequestParams::from_query_string(&raw) {
        Ok(p) => p,
        Err(e) => {
            let media = media_of(&headers).unwrap_or(MediaType::Json);
            return bad_request(media, e);
        }
    };
    if params.query.is_none() && persisted == Persisted::No && wants_html(&headers) {
        return graphiql(State(http)).await;
    }
    let media = match media_of(&headers) {
        Ok(m) => m,
        Err(resp) => return *resp,
    };
    let auth = auth_of(&http, peer, &headers);
    // `extensions` of a query string were read above (`persisted`).
    let (query, _, _, mut request) = match params.split() {
        Ok(split) => split,
        Err(message) => return bad_request(media, message),
    };
    request.variables = variables;
    let answer = http
        .pipeline
        .execute(
            Document::new(&query, persisted).with_incremental(accepts_multipart(&headers)),
            request,
            auth,
            Transport::Get,
        )
        .await;
    respond(&answer, media)
}

/// `POST /graphql`.
pub async fn graphql_post(
    State(http): State<HttpState>,
    peer: Peer,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let media = match media_of(&headers) {
        Ok(m) => m,
        Err(resp) => return *resp,
    };
    let settings = &http.app.settings;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_ascii_lowercase);
    let Some(content_type) = content_type else {
        return error_response(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            media,
            "BAD_USER_INPUT",
            "Content-Type is missing: send application/json (or multipart/form-data for uploads)",
        );
    };
    let essence = content_type.split(';').next().unwrap_or("").trim();
    match essence {
        "application/json" | "application/graphql+json" => {
            let charset = content_type
                .split(';')
                .skip(1)
                .filter_map(|p| p.trim().strip_prefix("charset="))
                .next()
                .map(|c| c.trim_matches('"').to_ascii_lowercase());
            if charset
                .as_deref()
                .is_some_and(|c| c != "utf-8" && c != "utf8")
            {
                return error_response(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    media,
                    "BAD_USER_INPUT",
                    "the request body must be UTF-8",
                );
            }
            let bytes = match read_body(body, settings.max_body_bytes).await {
                Ok(b) => b,
                Err(refusal) => return refusal(media),
            };
            let canonical = split_canonical_apq(&bytes);
            let (json, hash) = match &canonical {
                Some((hash, rest)) => (rest.as_slice(), Some(*hash)),
                None => (&bytes[..], None),
            };
            let operations = match parse_json_body(json, settings.max_batch) {
                Ok(Parsed::Single(params)) => {
                    if hash.is_some() && params.extensions.is_some() {
                        return bad_request(
                            media,
                            "the body is not a GraphQL request: duplicate field `extensions`",
                        );
                    }
                    match Operation::of_params(params) {
                        Ok(mut op) => {
                            if let Some(hash) = hash {
                                op.persisted = Persisted::parse(Some(1), Some(hash));
                            }
                            Operations::Single(Box::new(op))
                        }
                        Err(message) => return bad_request(media, message),
                    }
                }
                Ok(Parsed::Batch(params)) => {
                    match params.into_iter().map(Operation::of_params).collect() {
                        Ok(ops) => Operations::Batch(ops),
                        Err(message) => return bad_request(media, message),
                    }
                }
                Err(message) => return bad_request(media, message),
            };
            let incremental = accepts_multipart(&headers);
            run(
                &http,
                operations,
                auth_of(&http, peer, &headers),
                media,
                incremental,
            )
            .await
        }
        "multipart/form-data" => {
            let operations = match read_multipart(&content_type, body, settings).await {
                Ok(BatchRequest::Single(request)) => {
                    Operations::Single(Box::new(Operation::of_request(request)))
                }
                Ok(BatchRequest::Batch(requests)) => {
                    if requests.is_empty() || requests.len() > settings.max_batch {
                        return bad_request(
                            media,
                            format!(
                                "a batch holds 1 to {} operations; this one has {}",
                                settings.max_batch,
                                requests.len()
                            ),
                        );
                    }
                    Operations::Batch(requests.into_iter().map(Operation::of_request).collect())
                }
                Err(refusal) => return refusal(media),
            };
            let incremental = accepts_multipart(&headers);
            run(
                &http,
                operations,
                auth_of(&http, peer, &headers),
                media,
                incremental,
            )
            .await
        }
        other => error_response(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            media,
            "BAD_USER_INPUT",
            format!(
                "Content-Type `{other}` is not supported: send application/json (or \
                 multipart/form-data for uploads)"
            ),
        ),
    }
}

/// One operation of a `POST`, read from JSON or multipart.
struct Operation<'a> {
    query: Cow<'a, str>,
    persisted: Persisted,
    /// The variables' JSON text (a JSON body); a multipart request's are in `request`.
    variables: Option<&'a str>,
    request: Request,
}

impl<'a> Operation<'a> {
    fn of_params(params: RequestParams<'a>) -> Result<Self, String> {
        let (query, persisted, variables, request) = params.split()?;
        Ok(Self {
            query,
            persisted,
            variables,
            request,
        })
    }

    fn of_request(mut request: Request) -> Self {
        Self {
            query: Cow::Owned(std::mem::take(&mut request.query)),
            persisted: Persisted::of(&request.extensions),
            variables: None,
            request,
        }
    }
}

/// A `POST`'s operations: one, or a batch (answered as an array, in order).
enum Operations<'a> {
    Single(Box<Operation<'a>>),
    Batch(Vec<Operation<'a>>),
}

/// One operation's answer: its incremental payloads as `multipart/mixed` when it has them,
/// else the response in `media`.
fn respond(answer: &Answer, media: MediaType) -> Response {
    match &answer.incremental {
        Some(payloads) => multipart_response(payloads),
        None => answer_response(answer, media),
    }
}

/// Runs the operations of a `POST`, a batch's concurrently, and answers them.
async fn run(
    http: &HttpState,
    operations: Operations<'_>,
    auth: RequestAuth,
    media: MediaType,
    incremental: bool,
) -> Response {
    match operations {
        Operations::Single(op) => respond(&run_one(http, *op, auth, incremental).await, media),
        // A batch is answered as one JSON array: its operations are delivered whole.
        Operations::Batch(ops) => {
            let answers: Vec<_> = ops
                .into_iter()
                .map(|op| run_one(http, op, auth.clone(), false))
                .collect::<FuturesOrdered<_>>()
                .collect()
                .await;
            batch_response(&answers, media)
        }
    }
}

async fn run_one(
    http: &HttpState,
    op: Operation<'_>,
    auth: RequestAuth,
    incremental: bool,
) -> Answer {
    let doc = Document::new(&op.query, op.persisted)
        .with_variables(op.variables)
        .with_incremental(incremental);
    http.pipeline
        .execute(doc, op.request, auth, Transport::Post)
        .await
}
