//! Reading a request: the body (bounded), JSON or multipart, its parameters, and persisted
//! queries matched on the raw bytes.

use std::borrow::Cow;

use async_graphql::http::MultipartOptions;
use async_graphql::{BatchRequest, ParseRequestError, Request};
use axum::body::{Body, Bytes};
use axum::http::StatusCode;
use axum::response::Response;
use futures::stream::TryStreamExt;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde::Deserialize;

use super::negotiate::MediaType;
use super::response::{bad_request, error_response};
use crate::graphql::engine::pipeline::Persisted;

/// One GraphQL request as a client sends it: in a JSON body (the document borrowed from the
/// body when it holds no escapes) or in a query string. Each parameter must have its type
/// (`query` and `operationName` strings, `variables` and `extensions` maps); `null` is
/// absence.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub(super) struct RequestParams<'a> {
    #[serde(borrow, default)]
    pub(super) query: Option<Cow<'a, str>>,
    #[serde(default)]
    operation_name: Option<String>,
    /// Kept as its text: a memoized response is found by it, without parsing it (see
    /// [`Document::variables`]).
    #[serde(borrow, default)]
    variables: Option<&'a serde_json::value::RawValue>,
    /// Read straight from the body's bytes (see [`persisted_of_raw`]).
    #[serde(borrow, default, deserialize_with = "extensions_of")]
    pub(super) extensions: Option<PersistedOf<'a>>,
}

/// The `extensions` of a body, kept as its text until [`persisted_of_raw`] reads it.
pub(super) struct PersistedOf<'a>(&'a serde_json::value::RawValue);

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
pub(super) fn split_canonical_apq(body: &[u8]) -> Option<(&str, Vec<u8>)> {
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

impl<'a> RequestParams<'a> {
    /// Reads the query string of a `GET` (`variables` and `extensions` as JSON text).
    pub(super) fn from_query_string(
        raw: &str,
    ) -> Result<(RequestParams<'static>, Persisted, async_graphql::Variables), String> {
        let mut w = RequestParams::default();
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
    pub(super) fn split(
        self,
    ) -> Result<(Cow<'a, str>, Persisted, Option<&'a str>, Request), String> {
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

pub(super) type BodyRefusal = Box<dyn FnOnce(MediaType) -> Response + Send>;

fn too_large(limit: usize) -> BodyRefusal {
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
pub(super) async fn read_body(mut body: Body, limit: usize) -> Result<Bytes, BodyRefusal> {
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
pub(super) enum Parsed<'a> {
    Single(RequestParams<'a>),
    Batch(Vec<RequestParams<'a>>),
}

/// One request object, or a batch (an array of them).
pub(super) fn parse_json_body(bytes: &[u8], max_batch: usize) -> Result<Parsed<'_>, String> {
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
    let explain = |e: serde_json::Error| match e.classify() {
        serde_json::error::Category::Data => format!("the body is not a GraphQL request: {e}"),
        _ => format!("the request body is not JSON: {e}"),
    };
    match first {
        None => Err("the request body is empty: send a JSON object with a `query`".into()),
        Some(b'[') => {
            let batch: Vec<RequestParams<'_>> = serde_json::from_slice(bytes).map_err(explain)?;
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
pub(super) async fn read_multipart(
    content_type: &str,
    body: Body,
    settings: &crate::config::Settings,
) -> Result<BatchRequest, BodyRefusal> {
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
