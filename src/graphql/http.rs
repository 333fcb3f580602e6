//! GraphQL over HTTP, per the GraphQL-over-HTTP specification: `POST /graphql` with a JSON
//! body (or multipart, for uploads; batches capped), `GET /graphql?query=…` for queries, and
//! the GraphiQL page for a browser. The WebSocket endpoint is [`crate::graphql::ws`].
//!
//! The response's media type follows `Accept`: `application/graphql-response+json` when the
//! client accepts it (then a request refused before it ran — unreadable JSON, a document that
//! does not parse or validate, bad variables — is a `400` without `data`), otherwise
//! `application/json` (the legacy type: such refusals are `200` with `errors`).

use std::sync::Arc;

use async_graphql::http::MultipartOptions;
use async_graphql::{BatchRequest, ParseRequestError, Request};
use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use futures::stream::{FuturesOrdered, StreamExt, TryStreamExt};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use crate::graphql::auth::{client_addr, request_auth};
use crate::graphql::pipeline::{
    Answer, Document, Outcome, Persisted, Pipeline, Transport, PERSISTED_QUERY_NOT_FOUND,
};
use crate::state::AppState;
use crate::viewer::{Authenticator, RequestAuth};

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

/// `application/graphql-response+json`.
pub const GRAPHQL_RESPONSE_JSON: &str = "application/graphql-response+json";

/// The media type of a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaType {
    /// `application/graphql-response+json; charset=utf-8`.
    GraphqlResponse,
    /// `application/json; charset=utf-8`.
    Json,
}

impl MediaType {
    fn header(self) -> HeaderValue {
        HeaderValue::from_static(match self {
            MediaType::GraphqlResponse => "application/graphql-response+json; charset=utf-8",
            MediaType::Json => "application/json; charset=utf-8",
        })
    }

    /// The type `accept` asks for; `None` when it accepts neither. A missing header, `*/*`
    /// and `application/*` get `application/json`, which every client reads.
    pub fn negotiate(accept: Option<&str>) -> Option<Self> {
        let Some(accept) = accept.filter(|a| !a.trim().is_empty()) else {
            return Some(MediaType::Json);
        };
        let mut best: Option<(f32, MediaType)> = None;
        for part in accept.split(',') {
            let mut params = part.split(';');
            let range = params.next().unwrap_or("").trim().to_ascii_lowercase();
            let q = params
                .filter_map(|p| p.trim().strip_prefix("q="))
                .find_map(|q| q.trim().parse::<f32>().ok())
                .unwrap_or(1.0);
            let ty = match range.as_str() {
                GRAPHQL_RESPONSE_JSON => MediaType::GraphqlResponse,
                "application/json" | "application/*" | "*/*" => MediaType::Json,
                _ => continue,
            };
            if q <= 0.0 {
                continue;
            }
            // On equal weight the GraphQL type wins over the legacy one.
            let better = match best {
                None => true,
                Some((bq, bty)) => {
                    q > bq
                        || (q == bq && ty == MediaType::GraphqlResponse && bty == MediaType::Json)
                }
            };
            if better {
                best = Some((q, ty));
            }
        }
        best.map(|(_, ty)| ty)
    }
}

/// A response body: `data` only when the operation ran.
#[derive(Serialize)]
struct Out<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<&'a async_graphql::Value>,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    errors: &'a [async_graphql::ServerError],
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    extensions: &'a std::collections::BTreeMap<String, async_graphql::Value>,
}

impl<'a> Out<'a> {
    fn of(answer: &'a Answer) -> Self {
        let r = &answer.response;
        Out {
            data: (answer.outcome == Outcome::Executed).then_some(&r.data),
            errors: &r.errors,
            extensions: &r.extensions,
        }
    }
}

/// A GraphQL-shaped error response for failures before any operation ran.
pub fn error_response(
    status: StatusCode,
    media: MediaType,
    code: &str,
    message: impl Into<String>,
) -> Response {
    let body = serde_json::json!({
        "errors": [{ "message": message.into(), "extensions": { "code": code } }]
    });
    json_response(status, media, serde_json::to_vec(&body).unwrap_or_default())
}

fn json_response(status: StatusCode, media: MediaType, body: impl Into<Bytes>) -> Response {
    let body: Bytes = body.into();
    let mut resp = Response::new(axum::body::Body::from(body));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, media.header());
    resp
}

/// The status of one operation's answer.
fn status_of(answer: &Answer, media: MediaType) -> StatusCode {
    match answer.outcome {
        Outcome::Executed => StatusCode::OK,
        Outcome::MutationOverGet => StatusCode::METHOD_NOT_ALLOWED,
        Outcome::Malformed => StatusCode::BAD_REQUEST,
        Outcome::RequestError => {
            let apq_miss = answer.response.errors.iter().any(|e| {
                e.extensions.as_ref().and_then(|x| x.get("code"))
                    == Some(&async_graphql::Value::String(
                        PERSISTED_QUERY_NOT_FOUND.into(),
                    ))
            });
            // Apollo's clients read a persisted-query miss from a 200 and send the document.
            if media == MediaType::Json || apq_miss {
                StatusCode::OK
            } else {
                StatusCode::BAD_REQUEST
            }
        }
    }
}

/// An answer's body: serialized already (memoized), or now.
fn body_of(answer: &Answer) -> Bytes {
    match &answer.body {
        Some(body) => body.clone(),
        None => serde_json::to_vec(&Out::of(answer))
            .unwrap_or_default()
            .into(),
    }
}

fn answer_response(answer: &Answer, media: MediaType) -> Response {
    let body = body_of(answer);
    let mut resp = json_response(status_of(answer, media), media, body);
    if answer.outcome == Outcome::MutationOverGet {
        resp.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("POST"));
    }
    resp
}

fn batch_response(answers: &[Answer], media: MediaType) -> Response {
    let mut out = Vec::with_capacity(2 + answers.len() * 64);
    out.push(b'[');
    for (i, answer) in answers.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(&body_of(answer));
    }
    out.push(b']');
    json_response(StatusCode::OK, media, out)
}

/// The request's media type, or the `406` that says which ones Arena speaks.
fn media_of(headers: &HeaderMap) -> Result<MediaType, Box<Response>> {
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    MediaType::negotiate(accept).ok_or_else(|| {
        Box::new(error_response(
            StatusCode::NOT_ACCEPTABLE,
            MediaType::Json,
            "BAD_USER_INPUT",
            format!("Accept must allow {GRAPHQL_RESPONSE_JSON} or application/json"),
        ))
    })
}

fn bad_request(media: MediaType, message: impl Into<String>) -> Response {
    error_response(StatusCode::BAD_REQUEST, media, "BAD_USER_INPUT", message)
}

/// `GET /` and `GET /graphql` from a browser: the GraphiQL playground, subscriptions wired to
/// the WebSocket path, its assets from `ARENA_GRAPHIQL_ASSETS`.
pub async fn graphiql(State(http): State<HttpState>) -> Response {
    Html(crate::graphql::graphiql::page(
        &http.app.settings.graphiql_assets,
    ))
    .into_response()
}

/// Whether a `GET` without a query comes from a browser that wants a page.
fn wants_html(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/html"))
}

/// One GraphQL request as a client sends it: in a JSON body (the document borrowed from the
/// body when it holds no escapes) or in a query string. Each parameter must have its type
/// (`query` and `operationName` strings, `variables` and `extensions` maps); `null` is
/// absence.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Wire<'a> {
    #[serde(borrow, default)]
    query: Option<Cow<'a, str>>,
    #[serde(default)]
    operation_name: Option<String>,
    /// Kept as its text: a memoized response is found by it, without parsing it (see
    /// [`Document::variables`]).
    #[serde(borrow, default)]
    variables: Option<&'a serde_json::value::RawValue>,
    /// Read straight from the body's bytes (see [`persisted_of_raw`]).
    #[serde(borrow, default, deserialize_with = "extensions_of")]
    extensions: Option<PersistedOf<'a>>,
}

/// The `extensions` of a body, kept as its text until [`persisted_of_raw`] reads it.
struct PersistedOf<'a>(&'a serde_json::value::RawValue);

/// `extensions` as its raw text: the map is read once, by [`persisted_of_raw`], instead of
/// through serde's visitors here.
fn extensions_of<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<PersistedOf<'de>>, D::Error> {
    let raw: Option<&'de serde_json::value::RawValue> = Deserialize::deserialize(d)?;
    Ok(raw.map(PersistedOf))
}

/// The `extensions` value of a persisted query as Apollo's clients send it: this, the 64 hex
/// digits of the hash, then [`APQ_TAIL`].
const APQ_HEAD: &[u8] = br#"{"persistedQuery":{"version":1,"sha256Hash":""#;
/// And after the hash.
const APQ_TAIL: &[u8] = br#""}}"#;
/// Its length.
const APQ_LEN: usize = APQ_HEAD.len() + 64 + APQ_TAIL.len();
/// The key before it in a body.
const EXTENSIONS_KEY: &[u8] = br#""extensions":"#;

/// The hash of `value` if it is exactly the `extensions` value Apollo's clients send.
fn canonical_apq(value: &[u8]) -> Option<&str> {
    if value.len() != APQ_LEN || !value.starts_with(APQ_HEAD) || !value.ends_with(APQ_TAIL) {
        return None;
    }
    std::str::from_utf8(&value[APQ_HEAD.len()..APQ_LEN - APQ_TAIL.len()]).ok()
}

/// A JSON body whose `extensions` member is exactly the one Apollo's clients send, as the
/// object's first member or its last: the hash, and the body without that member, so that
/// the persisted query costs no JSON parse of its own. Anything else (another shape,
/// whitespace, a batch) is `None` and parsed as it is.
fn split_canonical_apq(body: &[u8]) -> Option<(&str, Vec<u8>)> {
    let member = EXTENSIONS_KEY.len() + APQ_LEN;
    // The hash of the member starting at `start`, if it is the canonical one.
    let hash_at = |start: usize| {
        let m = body.get(start..start + member)?;
        canonical_apq(m.strip_prefix(EXTENSIONS_KEY)?)
    };
    // First: `{"extensions":{…},…}` or `{"extensions":{…}}`.
    if body.first() == Some(&b'{') {
        if let Some(hash) = hash_at(1) {
            let rest = match body.get(1 + member) {
                Some(b',') => &body[2 + member..],
                Some(b'}') => &body[1 + member..],
                _ => return None,
            };
            let mut out = Vec::with_capacity(rest.len() + 1);
            out.push(b'{');
            out.extend_from_slice(rest);
            return Some((hash, out));
        }
    }
    // Last: `{…,"extensions":{…}}`: the member right before the root's closing brace (the
    // value of a nested key would be followed by that object's own brace first).
    let end = body.len().checked_sub(1)?;
    if body[end] == b'}' && end > member {
        let start = end - member;
        if body[start - 1] == b',' {
            let hash = hash_at(start)?;
            let mut out = Vec::with_capacity(start);
            out.extend_from_slice(&body[..start - 1]);
            out.push(b'}');
            return Some((hash, out));
        }
    }
    None
}

/// The persisted query named by the text of an `extensions` map. The form every Apollo client
/// sends ([`canonical_apq`]) is recognised by its bytes; anything else (spaces, other keys,
/// another order) is read as JSON.
fn persisted_of_raw(text: &str) -> Result<Persisted, serde_json::Error> {
    if let Some(hash) = canonical_apq(text.as_bytes()) {
        return Ok(Persisted::parse(Some(1), Some(hash)));
    }
    let ext: Option<WireExtensions<'_>> = serde_json::from_str(text)?;
    Ok(ext.map(|e| e.persisted()).unwrap_or(Persisted::No))
}

/// The `extensions` of a request: Arena reads only `persistedQuery`.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct WireExtensions<'a> {
    #[serde(borrow, default)]
    persisted_query: Option<WirePersisted<'a>>,
}

/// `{ version: 1, sha256Hash }`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WirePersisted<'a> {
    #[serde(default)]
    version: Option<serde_json::Value>,
    #[serde(borrow, default)]
    sha256_hash: Option<Cow<'a, str>>,
}

impl WireExtensions<'_> {
    fn persisted(&self) -> Persisted {
        match &self.persisted_query {
            None => Persisted::No,
            Some(p) => Persisted::parse(
                p.version.as_ref().and_then(|v| v.as_u64()),
                p.sha256_hash.as_deref(),
            ),
        }
    }
}

impl<'a> Wire<'a> {
    /// Reads the query string of a `GET` (`variables` and `extensions` as JSON text).
    fn from_query_string(
        raw: &str,
    ) -> Result<(Wire<'static>, Persisted, async_graphql::Variables), String> {
        let mut w = Wire::default();
        let mut persisted = Persisted::No;
        let mut variables = async_graphql::Variables::default();
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(raw)
            .map_err(|e| format!("the query string is not form-encoded: {e}"))?;
        for (k, v) in pairs {
            match k.as_str() {
                "query" => w.query = Some(Cow::Owned(v)),
                "operationName" => w.operation_name = Some(v).filter(|s| !s.is_empty()),
                "variables" => {
                    variables = serde_json::from_str(&v)
                        .map_err(|_| "`variables` must be a JSON object".to_owned())?
                }
                "extensions" => {
                    let ext: Option<WireExtensions<'_>> = serde_json::from_str(&v)
                        .map_err(|_| "`extensions` must be a JSON object".to_owned())?;
                    persisted = ext.map(|e| e.persisted()).unwrap_or(Persisted::No);
                }
                _ => {}
            }
        }
        Ok((w, persisted, variables))
    }

    /// The document, the variables' text, and the rest as async-graphql's request (without
    /// the variables); `Err` when `extensions` is not a map of the right shape.
    #[allow(clippy::type_complexity)]
    fn split(self) -> Result<(Cow<'a, str>, Persisted, Option<&'a str>, Request), String> {
        let persisted = match &self.extensions {
            None => Persisted::No,
            Some(PersistedOf(raw)) => persisted_of_raw(raw.get())
                .map_err(|e| format!("the body is not a GraphQL request: `extensions`: {e}"))?,
        };
        let mut r = Request::new(String::new());
        r.operation_name = self.operation_name;
        let variables = self.variables.map(|v| v.get());
        Ok((self.query.unwrap_or_default(), persisted, variables, r))
    }
}

/// The request's credential, and the client address its failed checks count against.
fn auth_of(http: &HttpState, peer: Peer, headers: &HeaderMap) -> RequestAuth {
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
    let (params, persisted, variables) = match Wire::from_query_string(&raw) {
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
            Document::new(&query, persisted),
            request,
            auth,
            Transport::Get,
        )
        .await;
    answer_response(&answer, media)
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
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_owned();
    let requests = match essence.as_str() {
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
                Err(resp) => return resp(media),
            };
            let auth = auth_of(&http, peer, &headers);
            let canonical = split_canonical_apq(&bytes);
            let (json, hash) = match &canonical {
                Some((hash, rest)) => (rest.as_slice(), Some(*hash)),
                None => (&bytes[..], None),
            };
            return match parse_json_body(json, settings.max_batch) {
                Ok(Parsed::Single(wire)) => {
                    if hash.is_some() && wire.extensions.is_some() {
                        return bad_request(
                            media,
                            "the body is not a GraphQL request: duplicate field `extensions`",
                        );
                    }
                    let (query, persisted, variables, request) = match wire.split() {
                        Ok(split) => split,
                        Err(message) => return bad_request(media, message),
                    };
                    let persisted = match hash {
                        Some(hash) => Persisted::parse(Some(1), Some(hash)),
                        None => persisted,
                    };
                    let answer = http
                        .pipeline
                        .execute(
                            Document::new(&query, persisted).with_variables(variables),
                            request,
                            auth,
                            Transport::Post,
                        )
                        .await;
                    answer_response(&answer, media)
                }
                Ok(Parsed::Batch(wires)) => {
                    let split: Result<Vec<_>, String> =
                        wires.into_iter().map(Wire::split).collect();
                    let split = match split {
                        Ok(split) => split,
                        Err(message) => return bad_request(media, message),
                    };
                    let answers: Vec<Answer> = split
                        .into_iter()
                        .map(|(query, persisted, variables, request)| {
                            let pipeline = &http.pipeline;
                            let auth = auth.clone();
                            async move {
                                let doc =
                                    Document::new(&query, persisted).with_variables(variables);
                                pipeline.execute(doc, request, auth, Transport::Post).await
                            }
                        })
                        .collect::<FuturesOrdered<_>>()
                        .collect()
                        .await;
                    batch_response(&answers, media)
                }
                Err(message) => bad_request(media, message),
            };
        }
        "multipart/form-data" => match read_multipart(&content_type, body, settings).await {
            Ok(r) => r,
            Err(resp) => return resp(media),
        },
        other => {
            return error_response(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                media,
                "BAD_USER_INPUT",
                format!(
                    "Content-Type `{other}` is not supported: send application/json (or \
                     multipart/form-data for uploads)"
                ),
            )
        }
    };
    let auth = auth_of(&http, peer, &headers);
    match requests {
        BatchRequest::Single(mut request) => {
            let query = std::mem::take(&mut request.query);
            let persisted = Persisted::of(&request.extensions);
            let answer = http
                .pipeline
                .execute(
                    Document::new(&query, persisted),
                    request,
                    auth,
                    Transport::Post,
                )
                .await;
            answer_response(&answer, media)
        }
        BatchRequest::Batch(requests) => {
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
            let answers: Vec<Answer> = requests
                .into_iter()
                .map(|mut r| {
                    let pipeline = &http.pipeline;
                    let auth = auth.clone();
                    async move {
                        let query = std::mem::take(&mut r.query);
                        let doc = Document::new(&query, Persisted::of(&r.extensions));
                        pipeline.execute(doc, r, auth, Transport::Post).await
                    }
                })
                .collect::<FuturesOrdered<_>>()
                .collect()
                .await;
            batch_response(&answers, media)
        }
    }
}

type Refusal = Box<dyn FnOnce(MediaType) -> Response + Send>;

fn too_large(limit: usize) -> Refusal {
    Box::new(move |media| {
        error_response(
            StatusCode::PAYLOAD_TOO_LARGE,
            media,
            "BAD_USER_INPUT",
            format!("the request body is larger than the {limit}-byte limit"),
        )
    })
}

/// Bytes of an oversized body read (and dropped) before the refusal is sent. A server that
/// answers 413 and closes while the client is still sending makes the client's kernel reset
/// the connection, and the client may never see the answer; past this, it may.
const DRAIN_LIMIT: usize = 16 << 20;

/// The whole body, at most `limit` bytes. A longer one is refused once it has been read to
/// its end (at most [`DRAIN_LIMIT`] bytes of it), so that the client reads the refusal.
async fn read_body(mut body: Body, limit: usize) -> Result<Bytes, Refusal> {
    // One frame (the usual small body) is kept as it came, without a copy.
    let mut first: Option<Bytes> = None;
    let mut joined: Option<Vec<u8>> = None;
    let mut seen = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = match frame {
            Ok(frame) => frame,
            Err(e) => {
                let message = format!("could not read the request body: {e}");
                return Err(Box::new(move |media| bad_request(media, message)));
            }
        };
        let Ok(data) = frame.into_data() else {
            continue; // trailers
        };
        seen = seen.saturating_add(data.len());
        if seen > limit {
            (first, joined) = (None, None);
            if seen > DRAIN_LIMIT {
                break;
            }
            continue;
        }
        match (&mut first, &mut joined) {
            (None, None) => first = Some(data),
            (Some(_), None) => {
                let mut buf = first.take().unwrap_or_default().to_vec();
                buf.extend_from_slice(&data);
                joined = Some(buf);
            }
            (_, Some(buf)) => buf.extend_from_slice(&data),
        }
    }
    if seen > limit {
        return Err(too_large(limit));
    }
    Ok(joined.map(Bytes::from).or(first).unwrap_or_default())
}

/// A JSON body: one request, or a batch.
enum Parsed<'a> {
    Single(Wire<'a>),
    Batch(Vec<Wire<'a>>),
}

/// One request object, or a batch (an array of them).
fn parse_json_body(bytes: &[u8], max_batch: usize) -> Result<Parsed<'_>, String> {
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
    let explain = |e: serde_json::Error| match e.classify() {
        serde_json::error::Category::Data => format!("the body is not a GraphQL request: {e}"),
        _ => format!("the request body is not JSON: {e}"),
    };
    match first {
        None => Err("the request body is empty: send a JSON object with a `query`".into()),
        Some(b'[') => {
            let batch: Vec<Wire<'_>> = serde_json::from_slice(bytes).map_err(explain)?;
            if batch.is_empty() || batch.len() > max_batch {
                return Err(format!(
                    "a batch holds 1 to {max_batch} operations; this one has {}",
                    batch.len()
                ));
            }
            Ok(Parsed::Batch(batch))
        }
        Some(_) => Ok(Parsed::Single(
            serde_json::from_slice(bytes).map_err(explain)?,
        )),
    }
}

/// A multipart request (the GraphQL multipart request spec): operations, map and files.
async fn read_multipart(
    content_type: &str,
    body: Body,
    settings: &crate::config::Settings,
) -> Result<BatchRequest, Refusal> {
    let limit = settings.max_upload_bytes + settings.max_body_bytes;
    let reader = TryStreamExt::map_err(
        Body::new(Limited::new(body, limit)).into_data_stream(),
        std::io::Error::other,
    );
    let reader = TryStreamExt::into_async_read(reader);
    let opts = MultipartOptions::default()
        .max_file_size(settings.max_upload_bytes)
        .max_num_files(4);
    match async_graphql::http::receive_batch_body(Some(content_type), reader, opts).await {
        Ok(b) => Ok(b),
        Err(ParseRequestError::PayloadTooLarge) => Err(too_large(limit)),
        Err(ParseRequestError::Io(e))
            if e.get_ref()
                .is_some_and(|inner| inner.downcast_ref::<LengthLimitError>().is_some()) =>
        {
            Err(too_large(limit))
        }
        Err(e) => {
            let message = format!("could not read the GraphQL request: {e}");
            Err(Box::new(move |media| bad_request(media, message)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::split_canonical_apq;

    const H: &str = "ecf4edb46db40b5132295c0291d62fb65d6759a9eedfa4d5d612dd5ec54a6b38";

    fn ext() -> String {
        format!(r#""extensions":{{"persistedQuery":{{"version":1,"sha256Hash":"{H}"}}}}"#)
    }

    fn split(body: &str) -> Option<(String, String)> {
        split_canonical_apq(body.as_bytes())
            .map(|(h, rest)| (h.to_owned(), String::from_utf8(rest).unwrap()))
    }

    #[test]
    fn the_canonical_member_first_last_or_alone_is_taken_out() {
        let v = r#""variables":{"id":"1"}"#;
        let expected = Some((H.to_owned(), format!("{{{v}}}")));
        assert_eq!(split(&format!("{{{},{v}}}", ext())), expected);
        assert_eq!(split(&format!("{{{v},{}}}", ext())), expected);
        assert_eq!(
            split(&format!("{{{}}}", ext())),
            Some((H.to_owned(), "{}".to_owned()))
        );
    }

    #[test]
    fn anything_else_is_left_to_the_json_parser() {
        // Nested in another object, at its end or its start.
        assert_eq!(
            split(&format!(r#"{{"variables":{{"a":1,{}}}}}"#, ext())),
            None
        );
        assert_eq!(
            split(&format!(r#"{{"variables":{{{},"a":1}}}}"#, ext())),
            None
        );
        // Whitespace, another order, another version, a short hash, a batch.
        assert_eq!(split(&format!("{{ {}}}", ext())), None);
        assert_eq!(split(&format!("{{{} }}", ext())), None);
        // (After the root object, whitespace is the parser's to read.)
        assert_eq!(
            split(&format!("{{{}}} ", ext())),
            Some((H.to_owned(), "{} ".to_owned()))
        );
        let other =
            format!(r#"{{"extensions":{{"persistedQuery":{{"sha256Hash":"{H}","version":1}}}}}}"#);
        assert_eq!(split(&other), None);
        assert_eq!(split(&format!("{{{}}}", ext().replace(":1,", ":2,"))), None);
        assert_eq!(split(&format!("{{{}}}", ext().replace(H, &H[1..]))), None);
        assert_eq!(split(&format!("[{{{}}}]", ext())), None);
        assert_eq!(split(""), None);
        assert_eq!(split("}"), None);
    }
}
