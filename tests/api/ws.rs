//! A small GraphQL-over-WebSocket test client speaking `graphql-transport-ws` and the legacy
//! `graphql-ws` (subscriptions-transport-ws). Reusable by every domain's tests:
//!
//! ```ignore
//! let mut ws = ws::connect(&app.ws_url(), ws::TRANSPORT_WS, json!({})).await;
//! ws.subscribe("1", "subscription { battleResults { id } }", json!({})).await;
//! let payload = ws.next_data(Duration::from_secs(5)).await; // Some({"data": …})
//! ```

#![allow(dead_code)]

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// The `graphql-transport-ws` subprotocol (subscribe / next / complete).
pub const TRANSPORT_WS: &str = "graphql-transport-ws";
/// The legacy `graphql-ws` subprotocol (start / data / stop).
pub const LEGACY_WS: &str = "graphql-ws";

/// A connected, acknowledged GraphQL WebSocket client.
pub struct WsClient {
    stream: WebSocketStream<MaybeTlsStream<TcpStream>>,
    protocol: &'static str,
}

/// One message for an operation: its id and payload.
#[derive(Debug, Clone)]
pub struct OperationMessage {
    /// `next`/`data`, `error` or `complete`.
    pub kind: String,
    /// The operation id.
    pub id: String,
    /// The payload (`{"data": …}` for results, the errors for `error`).
    pub payload: Value,
}

/// Connects with `protocol`, sends `connection_init` with `init_payload` (e.g.
/// `{"authorization": "Bearer …"}`) and waits for `connection_ack`. Panics otherwise.
pub async fn connect(url: &str, protocol: &'static str, init_payload: Value) -> WsClient {
    try_connect(url, protocol, init_payload)
        .await
        .unwrap_or_else(|e| panic!("WebSocket connection to {url} failed: {e}"))
}

/// Like [`connect`], returning what went wrong (a refused `connection_init`) instead.
pub async fn try_connect(
    url: &str,
    protocol: &'static str,
    init_payload: Value,
) -> Result<WsClient, String> {
    let mut request = url.into_client_request().map_err(|e| e.to_string())?;
    request
        .headers_mut()
        .insert("Sec-WebSocket-Protocol", HeaderValue::from_static(protocol));
    let (stream, _) = tokio_tungstenite::connect_async(request)
        .await
        .map_err(|e| e.to_string())?;
    let mut client = WsClient { stream, protocol };
    client
        .send(json!({ "type": "connection_init", "payload": init_payload }))
        .await;
    let ack = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match client.recv().await {
                Some(m) if m["type"] == "connection_ack" => return Ok(()),
                Some(m) if m["type"] == "ka" || m["type"] == "ping" || m["type"] == "pong" => {}
                Some(m) => return Err(format!("expected connection_ack, got {m}")),
                None => return Err("closed before connection_ack".to_owned()),
            }
        }
    })
    .await
    .map_err(|_| "no connection_ack within 10 s".to_owned())?;
    ack.map(|()| client)
}

impl WsClient {
    async fn send(&mut self, msg: Value) {
        self.stream
            .send(Message::text(msg.to_string()))
            .await
            .expect("WebSocket send");
    }

    /// The next JSON message from the server; `None` once the connection is closed. Answers
    /// protocol pings on the way.
    async fn recv(&mut self) -> Option<Value> {
        loop {
            match self.stream.next().await? {
                Ok(Message::Text(t)) => {
                    let v: Value = serde_json::from_str(t.as_str()).expect("JSON message");
                    if v["type"] == "ping" {
                        self.send(json!({ "type": "pong" })).await;
                        continue;
                    }
                    return Some(v);
                }
                Ok(Message::Close(_)) | Err(_) => return None,
                Ok(_) => continue,
            }
        }
    }

    /// Starts operation `id` (`subscribe`, or `start` on the legacy protocol).
    pub async fn subscribe(&mut self, id: &str, query: &str, variables: Value) {
        let kind = if self.protocol == LEGACY_WS {
            "start"
        } else {
            "subscribe"
        };
        self.send(json!({
            "type": kind,
            "id": id,
            "payload": { "query": query, "variables": variables },
        }))
        .await;
    }

    /// Stops operation `id` (`complete`, or `stop` on the legacy protocol).
    pub async fn complete(&mut self, id: &str) {
        let kind = if self.protocol == LEGACY_WS {
            "stop"
        } else {
            "complete"
        };
        self.send(json!({ "type": kind, "id": id })).await;
    }

    /// The next message about an operation (result, error or completion) within `timeout`;
    /// keep-alives are skipped. `None` on timeout or when the connection closed.
    pub async fn next_message(&mut self, timeout: Duration) -> Option<OperationMessage> {
        tokio::time::timeout(timeout, async {
            loop {
                let m = self.recv().await?;
                let kind = m["type"].as_str().unwrap_or_default().to_owned();
                if matches!(kind.as_str(), "ka" | "pong" | "connection_ack") {
                    continue;
                }
                return Some(OperationMessage {
                    kind,
                    id: m["id"].as_str().unwrap_or_default().to_owned(),
                    payload: m["payload"].clone(),
                });
            }
        })
        .await
        .ok()
        .flatten()
    }

    /// The payload (`{"data": …}`) of the next result of any operation within `timeout`;
    /// `None` on timeout. Panics on an `error` message or a result carrying errors.
    pub async fn next_data(&mut self, timeout: Duration) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let m = self.next_message(left).await?;
            match m.kind.as_str() {
                "next" | "data" => {
                    assert!(
                        m.payload.get("errors").is_none_or(|e| e.is_null()),
                        "subscription {} failed: {}",
                        m.id,
                        m.payload
                    );
                    return Some(m.payload);
                }
                "error" => panic!("subscription {} refused: {}", m.id, m.payload),
                _ => continue,
            }
        }
    }

    /// Closes the connection.
    pub async fn close(mut self) {
        let _ = self.stream.close(None).await;
    }
}
