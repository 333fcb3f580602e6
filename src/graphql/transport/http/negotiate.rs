//! Content negotiation: the response's media type from `Accept`.

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;

use super::response::error_response;

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
    pub(super) fn header(self) -> HeaderValue {
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

/// The request's media type, or the `406` that says which ones Arena speaks.
pub(super) fn media_of(headers: &HeaderMap) -> Result<MediaType, Box<Response>> {
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

/// Whether a `GET` without a query comes from a browser that wants a page.
pub(super) fn wants_html(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/html"))
}
