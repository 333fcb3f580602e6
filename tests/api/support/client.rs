//! Talking to a test app over HTTP: GraphQL operations, metrics, and reading the answers.

use reqwest::RequestBuilder;
use serde_json::{json, Value};

use super::app::TestApp;

impl TestApp {
    /// POSTs one GraphQL operation; returns the whole JSON response.
    pub async fn gql(&self, query: &str, variables: Value) -> Value {
        self.gql_auth(None, query, variables).await
    }

    /// POSTs one GraphQL operation with `Authorization: Bearer <token>`.
    pub async fn gql_as(&self, token: &str, query: &str, variables: Value) -> Value {
        self.gql_auth(Some(format!("Bearer {token}")), query, variables)
            .await
    }

    /// POSTs one GraphQL operation with a raw `Authorization` value.
    pub async fn gql_auth(&self, auth: Option<String>, query: &str, variables: Value) -> Value {
        json_answer(self.graphql_post(auth, query, variables)).await
    }

    /// POSTs one GraphQL operation as the client `from` (`X-Forwarded-For: <from>`; it
    /// counts only when the app trusts 127.0.0.1 as a proxy), with a raw `Authorization`
    /// value.
    pub async fn gql_from(
        &self,
        from: &str,
        auth: Option<String>,
        query: &str,
        variables: Value,
    ) -> Value {
        json_answer(
            self.graphql_post(auth, query, variables)
                .header("X-Forwarded-For", from),
        )
        .await
    }

    /// The request of one GraphQL operation, with a raw `Authorization` value.
    fn graphql_post(&self, auth: Option<String>, query: &str, variables: Value) -> RequestBuilder {
        let req = self
            .client
            .post(format!("{}/graphql", self.url))
            .json(&json!({ "query": query, "variables": variables }));
        match auth {
            Some(a) => req.header("Authorization", a),
            None => req,
        }
    }

    /// The keys of the app's cache tier that start with `prefix`, asked again when a SCAN
    /// page misses the command timeout (a busy machine running tests in parallel).
    pub async fn scan_keys(&self, prefix: &str) -> Vec<String> {
        let mut last = None;
        for _ in 0..5 {
            match self.state.kv.scan_prefix(prefix).await {
                Ok(keys) => return keys,
                Err(e) => last = Some(e),
            }
        }
        panic!("SCAN {prefix}*: {last:?}")
    }

    /// The text of `/metrics`.
    pub async fn metrics_text(&self) -> String {
        self.client
            .get(format!("{}/metrics", self.url))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// The value of one metric sample from `/metrics`, e.g.
    /// `arena_cache_round_trips_total{op="versioned_get_many"}`; 0 when absent.
    pub async fn metric(&self, sample: &str) -> f64 {
        metric_in(&self.metrics_text().await, sample)
    }

    /// The WebSocket URL.
    pub fn ws_url(&self) -> String {
        format!("ws://{}/graphql/ws", self.addr)
    }
}

/// Sends `req`; its JSON answer.
async fn json_answer(req: RequestBuilder) -> Value {
    req.send()
        .await
        .expect("request sent")
        .json()
        .await
        .expect("JSON response")
}

/// Sums the samples of `/metrics` text whose name and labels start with `sample`
/// (so `arena_cache_round_trips_total` sums every `op`).
pub fn metric_in(text: &str, sample: &str) -> f64 {
    let (name, labels) = match sample.split_once('{') {
        Some((n, l)) => (n, Some(l.trim_end_matches('}'))),
        None => (sample, None),
    };
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (key, value) = l.rsplit_once(' ')?;
            let (kname, klabels) = match key.split_once('{') {
                Some((n, l)) => (n, l.trim_end_matches('}')),
                None => (key, ""),
            };
            if kname != name {
                return None;
            }
            if let Some(want) = labels {
                if !want.split(',').all(|w| klabels.split(',').any(|k| k == w)) {
                    return None;
                }
            }
            value.parse::<f64>().ok()
        })
        .sum()
}

/// Panics with the errors when the response has any.
pub fn assert_no_errors(resp: &Value) {
    assert!(
        resp.get("errors").is_none_or(|e| e.is_null()),
        "unexpected errors: {resp:#}"
    );
}

/// The `extensions.code` of the first error.
pub fn error_code(resp: &Value) -> &str {
    resp["errors"][0]["extensions"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("expected an error with a code: {resp:#}"))
}

/// The message of the first error.
pub fn error_message(resp: &Value) -> &str {
    resp["errors"][0]["message"].as_str().unwrap_or("")
}

/// An `Authorization` value for an API key: `Basic base64(publicKey:secretKey)`.
pub fn basic(public_key: &str, secret: &str) -> String {
    use base64::Engine as _;
    let raw = format!("{public_key}:{secret}");
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(raw)
    )
}
