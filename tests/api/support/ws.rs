//! A small GraphQL-over-WebSocket test client speaking `graphql-transport-ws` and the legacy
//! `graphql-ws` (subscriptions-transport-ws). Reusable by every domain's tests:
//!
//! ```ignore
//! use crate::support::ws;
//! let mut ws = ws::connect(&app.ws_url(), ws::TRANSPORT_WS, json!({})).await;
//! ws.subscribe("1", "subscription { battleResults { id } }", json!({})).await;
//! let payload = ws.next_data(Duration::from_secs(5)).await; // Some({"data": …})
//! ```

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

// ------------------------------------------------------------------- raw protocol client

/// A connection that sends nothing on its own, for the protocol's error paths.
pub struct RawWs {
    /// The connection itself, for what the methods do not send.
    pub stream: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

/// What the server did next.
#[derive(Debug)]
pub enum Event {
    /// A JSON text message.
    Message(Value),
    /// A close frame (code and reason), or `None` when the connection just ended.
    Closed(Option<(u16, String)>),
}

/// Opens a connection asking for `protocol`, without `connection_init`.
pub async fn open_raw(url: &str, protocol: &str) -> RawWs {
    try_open_raw(url, protocol)
        .await
        .unwrap_or_else(|e| panic!("WebSocket upgrade to {url} failed: {e}"))
}

/// Like [`open_raw`], returning the refusal (e.g. `HTTP error: 503 …`) instead.
pub async fn try_open_raw(url: &str, protocol: &str) -> Result<RawWs, String> {
    let mut request = url.into_client_request().map_err(|e| e.to_string())?;
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_str(protocol).unwrap(),
    );
    match tokio_tungstenite::connect_async(request).await {
        Ok((stream, _)) => Ok(RawWs { stream }),
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            let body = resp
                .body()
                .as_deref()
                .map(String::from_utf8_lossy)
                .unwrap_or_default()
                .into_owned();
            Err(format!("HTTP {}: {body}", resp.status().as_u16()))
        }
        Err(e) => Err(e.to_string()),
    }
}

impl RawWs {
    /// Sends `text` as it is.
    pub async fn send_text(&mut self, text: &str) {
        self.stream
            .send(Message::text(text.to_owned()))
            .await
            .expect("WebSocket send");
    }

    /// Sends a JSON message.
    pub async fn send(&mut self, msg: Value) {
        self.send_text(&msg.to_string()).await;
    }

    /// The next message or the close, within `timeout` (panics after it).
    pub async fn next_event(&mut self, timeout: Duration) -> Event {
        tokio::time::timeout(timeout, async {
            loop {
                match self.stream.next().await {
                    Some(Ok(Message::Text(t))) => {
                        return Event::Message(serde_json::from_str(t.as_str()).expect("JSON"))
                    }
                    Some(Ok(Message::Close(frame))) => {
                        return Event::Closed(
                            frame.map(|f| (u16::from(f.code), f.reason.as_str().to_owned())),
                        )
                    }
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => panic!("the WebSocket failed instead of closing: {e}"),
                    None => return Event::Closed(None),
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("nothing from the server within {timeout:?}"))
    }

    /// The next message, skipping `ka`; panics if the connection closes.
    pub async fn next_json(&mut self, timeout: Duration) -> Value {
        loop {
            match self.next_event(timeout).await {
                Event::Message(m) if m["type"] == "ka" => continue,
                Event::Message(m) => return m,
                Event::Closed(c) => panic!("closed ({c:?}) while a message was expected"),
            }
        }
    }

    /// Waits for the close frame, skipping messages; its code and reason.
    pub async fn closed(&mut self, timeout: Duration) -> (u16, String) {
        loop {
            match self.next_event(timeout).await {
                Event::Message(_) => continue,
                Event::Closed(Some(c)) => return c,
                Event::Closed(None) => panic!("the connection ended without a close frame"),
            }
        }
    }

    /// `connection_init` with `payload`, then waits for `connection_ack`.
    pub async fn init(&mut self, payload: Value) {
        self.send(json!({ "type": "connection_init", "payload": payload }))
            .await;
        let ack = self.next_json(Duration::from_secs(10)).await;
        assert_eq!(ack["type"], "connection_ack", "{ack}");
    }
}
