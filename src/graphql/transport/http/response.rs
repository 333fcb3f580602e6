//! Response bodies and statuses: one answer, a batch, or an error before anything ran.

use axum::body::Bytes;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use serde::Serialize;

use super::negotiate::MediaType;
use crate::graphql::engine::pipeline::{Answer, Outcome, PERSISTED_QUERY_NOT_FOUND};

/// A response body: `data` only when the operation ran.
#[derive(Serialize)]
struct ResponseBody<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<&'a async_graphql::Value>,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    errors: &'a [async_graphql::ServerError],
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    extensions: &'a std::collections::BTreeMap<String, async_graphql::Value>,
}

impl<'a> ResponseBody<'a> {
    fn of(answer: &'a Answer) -> Self {
        let r = &answer.response;
        ResponseBody {
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

pub(super) fn json_response(
    status: StatusCode,
    media: MediaType,
    body: impl Into<Bytes>,
) -> Response {
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
        None => serde_json::to_vec(&ResponseBody::of(answer))
            .unwrap_or_default()
            .into(),
    }
}

pub(super) fn answer_response(answer: &Answer, media: MediaType) -> Response {
    let body = body_of(answer);
    let mut resp = json_response(status_of(answer, media), media, body);
    if answer.outcome == Outcome::MutationOverGet {
        resp.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("POST"));
    }
    resp
}

pub(super) fn batch_response(answers: &[Answer], media: MediaType) -> Response {
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

/// A `400` for a request that is not a GraphQL request.
pub(super) fn bad_request(media: MediaType, message: impl Into<String>) -> Response {
    error_response(StatusCode::BAD_REQUEST, media, "BAD_USER_INPUT", message)
}

/// The boundary of incremental-delivery responses (as Apollo Router and graphql-helix use).
const BOUNDARY: &str = "-";

/// Incremental delivery over HTTP: each payload a part of a `multipart/mixed` body, in order.
pub fn multipart_response(payloads: &[serde_json::Value]) -> Response {
    let mut body = Vec::new();
    for payload in payloads {
        body.extend_from_slice(
            format!("\r\n--{BOUNDARY}\r\nContent-Type: application/json; charset=utf-8\r\n\r\n")
                .as_bytes(),
        );
        body.extend_from_slice(&serde_json::to_vec(payload).unwrap_or_default());
    }
    body.extend_from_slice(format!("\r\n--{BOUNDARY}--\r\n").as_bytes());
    let mut resp = Response::new(axum::body::Body::from(body));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("multipart/mixed; boundary=\"-\"; deferSpec=20220824"),
    );
    resp
}
