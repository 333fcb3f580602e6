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

// ------------------------------------------------------------------- raw protocol client

/// A connection that sends nothing on its own, for the protocol's error paths.
pub struct RawWs {
    stream: WebSocketStream<MaybeTlsStream<TcpStream>>,
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

// ----------------------------------------------------------- graphql-transport-ws, row by row

use crate::helpers::{assert_no_errors, wait_until, TestApp};

const STEP: Duration = Duration::from_secs(10);
const BATTLES: &str = "subscription { battleResults { id winner { name } loser { name } } }";

fn subscribe_msg(id: &str, query: &str) -> Value {
    json!({ "type": "subscribe", "id": id, "payload": { "query": query } })
}

/// A signed-in user with two meals in the ring; [`Ring::fight`] fights them and puts the
/// loser back.
struct Ring {
    token: String,
}

impl Ring {
    async fn new(app: &TestApp, who: &str) -> Ring {
        let token = app.login_new_user(who).await;
        for (name, price) in [("Stew", 12.0), ("Soup", 4.0)] {
            let r = app
                .gql_as(
                    &token,
                    "mutation($n: String!, $p: Float!) { createMeal(input: { name: $n, cuisine: \"Any\", price: $p, difficulty: MED }) { id } }",
                    json!({ "n": format!("{name} of {who}"), "p": price }),
                )
                .await;
            assert_no_errors(&r);
            let id = r["data"]["createMeal"]["id"].clone();
            let r = app
                .gql_as(
                    &token,
                    "mutation($id: ID!) { prepCombatant(mealId: $id) { id } }",
                    json!({ "id": id }),
                )
                .await;
            assert_no_errors(&r);
        }
        Ring { token }
    }

    /// Fights once; the battle's id.
    async fn fight(&self, app: &TestApp) -> String {
        let r = app
            .gql_as(
                &self.token,
                "mutation { battle { id loser { id } } }",
                json!({}),
            )
            .await;
        assert_no_errors(&r);
        let loser = r["data"]["battle"]["loser"]["id"].clone();
        let again = app
            .gql_as(
                &self.token,
                "mutation($id: ID!) { prepCombatant(mealId: $id) { id } }",
                json!({ "id": loser }),
            )
            .await;
        assert_no_errors(&again);
        r["data"]["battle"]["id"].as_str().unwrap().to_owned()
    }
}

/// Fights until every one of `ids` on `ws` has delivered a battle (subscribers get no
/// acknowledgement, so the first battles may come before a subscription is live). Bounded.
async fn fight_until_delivered(app: &TestApp, ring: &Ring, ws: &mut RawWs, ids: &[&str]) {
    let mut waiting: std::collections::HashSet<String> =
        ids.iter().map(|s| s.to_string()).collect();
    for _ in 0..40 {
        ring.fight(app).await;
        let deadline = tokio::time::Instant::now() + Duration::from_millis(300);
        while let Ok(event) =
            tokio::time::timeout_at(deadline, ws.next_event(Duration::from_secs(60))).await
        {
            match event {
                Event::Message(m) if m["type"] == "next" => {
                    assert!(
                        m["payload"]["data"]["battleResults"]["id"].is_string(),
                        "{m}"
                    );
                    waiting.remove(m["id"].as_str().unwrap());
                }
                Event::Message(m) => panic!("unexpected {m}"),
                Event::Closed(c) => panic!("closed: {c:?}"),
            }
        }
        if waiting.is_empty() {
            return;
        }
    }
    panic!("no battle arrived for {waiting:?}");
}

async fn no_connection_init_closes_4408_after_the_init_timeout(app: TestApp) {
    let started = std::time::Instant::now();
    let mut ws = open_raw(&app.ws_url(), TRANSPORT_WS).await;
    let (code, reason) = ws.closed(STEP).await;
    assert_eq!(code, 4408, "{reason}");
    assert!(
        started.elapsed() >= Duration::from_millis(app.settings.ws_init_timeout_ms),
        "closed before the init timeout"
    );
    // The legacy protocol has the same bound.
    let mut ws = open_raw(&app.ws_url(), LEGACY_WS).await;
    assert_eq!(ws.closed(STEP).await.0, 4408);
}

async fn a_connection_init_in_time_stops_the_init_timeout(app: TestApp) {
    let mut ws = open_raw(&app.ws_url(), TRANSPORT_WS).await;
    ws.init(json!({})).await;
    // A connection opened after it, without init, is closed: the timeout has passed for the
    // first one too, and it still answers.
    let mut late = open_raw(&app.ws_url(), TRANSPORT_WS).await;
    assert_eq!(late.closed(STEP).await.0, 4408);
    ws.send(json!({ "type": "ping" })).await;
    assert_eq!(ws.next_json(STEP).await["type"], "pong");
}

async fn subscribe_before_connection_ack_closes_4401(app: TestApp) {
    let mut ws = open_raw(&app.ws_url(), TRANSPORT_WS).await;
    ws.send(subscribe_msg("1", BATTLES)).await;
    assert_eq!(ws.closed(STEP).await, (4401, "Unauthorized".into()));
}

async fn an_invalid_message_closes_4400_with_a_reason_that_fits_a_close_frame(app: TestApp) {
    let long_type = json!({ "type": "x".repeat(400) }).to_string();
    let long_json_error = format!("{{\"type\": \"connection_init\", {}", "é".repeat(300));
    for (label, text, ack) in [
        (
            "not JSON, before init",
            "this is not json".to_owned(),
            false,
        ),
        ("a long unknown type", long_type, true),
        ("broken JSON with multibyte text", long_json_error, false),
        (
            "subscribe without payload",
            json!({ "type": "subscribe", "id": "1" }).to_string(),
            true,
        ),
        (
            "subscribe without id",
            json!({ "type": "subscribe", "payload": { "query": "{ me { id } }" } }).to_string(),
            true,
        ),
        (
            "a server-only message",
            json!({ "type": "next", "id": "1", "payload": {} }).to_string(),
            true,
        ),
    ] {
        let mut ws = open_raw(&app.ws_url(), TRANSPORT_WS).await;
        if ack {
            ws.init(json!({})).await;
        }
        ws.send_text(&text).await;
        // A reason over 123 bytes would make the close frame invalid: tungstenite fails the
        // read instead of yielding it (`next_event` panics).
        let (code, reason) = ws.closed(STEP).await;
        assert_eq!(code, 4400, "{label}: {reason}");
        assert!(reason.len() <= 123, "{label}: {} bytes", reason.len());
        assert!(
            reason.starts_with("Invalid message received"),
            "{label}: {reason}"
        );
    }
}

async fn a_duplicate_subscription_id_closes_4409(app: TestApp) {
    let mut ws = open_raw(&app.ws_url(), TRANSPORT_WS).await;
    ws.init(json!({})).await;
    ws.send(subscribe_msg("dup", BATTLES)).await;
    ws.send(subscribe_msg("dup", BATTLES)).await;
    assert_eq!(
        ws.closed(STEP).await,
        (4409, "Subscriber for dup already exists".into())
    );
}

async fn a_bad_credential_in_connection_init_closes_4403(app: TestApp) {
    for auth in [
        "Bearer nope".to_owned(),
        crate::helpers::basic("pk_made_up", "secret"),
        "Digest whatever".to_owned(),
    ] {
        let mut ws = open_raw(&app.ws_url(), TRANSPORT_WS).await;
        ws.send(json!({ "type": "connection_init", "payload": { "authorization": auth } }))
            .await;
        let (code, reason) = ws.closed(STEP).await;
        assert_eq!(code, 4403, "{auth}: {reason}");
        assert!(reason.starts_with("Forbidden"), "{reason}");
    }
    // The legacy protocol says why in connection_error, then closes.
    let mut ws = open_raw(&app.ws_url(), LEGACY_WS).await;
    ws.send(json!({ "type": "connection_init", "payload": { "authorization": "Bearer nope" } }))
        .await;
    let m = ws.next_json(STEP).await;
    assert_eq!(m["type"], "connection_error", "{m}");
    assert_eq!(m["payload"]["extensions"]["code"], "UNAUTHENTICATED");
    ws.closed(STEP).await;
}

async fn a_second_connection_init_closes_4429(app: TestApp) {
    let mut ws = open_raw(&app.ws_url(), TRANSPORT_WS).await;
    ws.init(json!({})).await;
    ws.send(json!({ "type": "connection_init" })).await;
    assert_eq!(ws.closed(STEP).await.0, 4429);
}

async fn ping_gets_pong_and_pong_is_accepted(app: TestApp) {
    let mut ws = open_raw(&app.ws_url(), TRANSPORT_WS).await;
    // Before connection_init too.
    ws.send(json!({ "type": "ping" })).await;
    assert_eq!(ws.next_json(STEP).await, json!({ "type": "pong" }));
    ws.init(json!({})).await;
    ws.send(json!({ "type": "ping", "payload": { "n": 7 } }))
        .await;
    assert_eq!(
        ws.next_json(STEP).await,
        json!({ "type": "pong", "payload": { "n": 7 } })
    );
    ws.send(json!({ "type": "pong" })).await;
    ws.send(json!({ "type": "pong", "payload": { "any": true } }))
        .await;
    // Still open: a query answers.
    ws.send(subscribe_msg("q", "{ meals(first: 1) { totalCount } }"))
        .await;
    assert_eq!(ws.next_json(STEP).await["type"], "next");
}

/// The close handshake: a client's close frame is answered with one (the graphql-ws client
/// saw 1006 instead).
async fn a_close_from_the_client_is_answered_with_a_close(app: TestApp) {
    let mut ws = open_raw(&app.ws_url(), TRANSPORT_WS).await;
    ws.init(json!({})).await;
    ws.stream
        .send(Message::Close(Some(
            tokio_tungstenite::tungstenite::protocol::CloseFrame {
                code: 1000.into(),
                reason: "bye".into(),
            },
        )))
        .await
        .unwrap();
    assert!(matches!(
        ws.next_event(STEP).await,
        Event::Closed(Some((1000, _)))
    ));
}

async fn the_server_completes_an_operation_when_it_ends(app: TestApp) {
    let mut ws = open_raw(&app.ws_url(), TRANSPORT_WS).await;
    ws.init(json!({})).await;
    ws.send(subscribe_msg("q", "{ meals(first: 1) { totalCount } }"))
        .await;
    let next = ws.next_json(STEP).await;
    assert_eq!(next["type"], "next", "{next}");
    assert_eq!(next["id"], "q");
    assert_eq!(next["payload"]["data"]["meals"]["totalCount"], 0);
    assert_eq!(
        ws.next_json(STEP).await,
        json!({ "type": "complete", "id": "q" })
    );
    // Errors before execution are an `error` with codes, and no `complete` follows.
    ws.send(subscribe_msg("bad", "{ nope }")).await;
    let err = ws.next_json(STEP).await;
    assert_eq!(err["type"], "error", "{err}");
    assert_eq!(err["payload"][0]["extensions"]["code"], "BAD_USER_INPUT");
    ws.send(json!({ "type": "ping" })).await;
    assert_eq!(
        ws.next_json(STEP).await["type"],
        "pong",
        "no complete after error"
    );
}

/// Complete from the client stops the operation: with room for one operation, a new one
/// fits only if the first was stopped, and the first's results no longer arrive.
async fn complete_from_the_client_stops_the_operation(app: TestApp) {
    let ring = Ring::new(&app, "chef").await;
    let mut ws = open_raw(&app.ws_url(), TRANSPORT_WS).await;
    ws.init(json!({})).await;
    ws.send(subscribe_msg("first", BATTLES)).await;
    fight_until_delivered(&app, &ring, &mut ws, &["first"]).await;
    ws.send(json!({ "type": "complete", "id": "first" })).await;
    ws.send(subscribe_msg("second", BATTLES)).await;
    fight_until_delivered(&app, &ring, &mut ws, &["second"]).await;
    // Only `second` delivers from here on (fight_until_delivered fails on anything else
    // than `next`; check the ids too).
    let id = ring.fight(&app).await;
    let m = ws.next_json(STEP).await;
    assert_eq!(m["id"], "second", "{m}");
    assert_eq!(m["payload"]["data"]["battleResults"]["id"], id.as_str());
    wait_until(STEP, || async {
        app.metric("arena_ws_operations").await == 1.0
    })
    .await;
}

async fn the_legacy_protocol_keeps_working(app: TestApp) {
    let mut ws = open_raw(&app.ws_url(), LEGACY_WS).await;
    ws.send(json!({ "type": "connection_init", "payload": {} }))
        .await;
    // subscriptions-transport-ws starts before the ack arrives.
    ws.send(json!({ "type": "start", "id": "q", "payload": { "query": "{ meals(first: 1) { totalCount } }" } }))
        .await;
    let mut ack = ws.next_event(STEP).await;
    assert!(
        matches!(&ack, Event::Message(m) if m["type"] == "connection_ack"),
        "{ack:?}"
    );
    ack = ws.next_event(STEP).await;
    assert!(
        matches!(&ack, Event::Message(m) if m["type"] == "ka"),
        "{ack:?}"
    );
    let data = ws.next_json(STEP).await;
    assert_eq!(data["type"], "data", "{data}");
    assert_eq!(data["payload"]["data"]["meals"]["totalCount"], 0);
    assert_eq!(
        ws.next_json(STEP).await,
        json!({ "type": "complete", "id": "q" })
    );
    // stop → complete.
    ws.send(json!({ "type": "start", "id": "s", "payload": { "query": BATTLES } }))
        .await;
    ws.send(json!({ "type": "stop", "id": "s" })).await;
    assert_eq!(
        ws.next_json(STEP).await,
        json!({ "type": "complete", "id": "s" })
    );
    // connection_terminate ends it.
    ws.send(json!({ "type": "connection_terminate" })).await;
    assert_eq!(ws.closed(STEP).await.0, 1000);
}

// ------------------------------------------------------------------------------- caps

async fn a_subscribe_over_the_operation_cap_gets_an_error_and_the_others_go_on(app: TestApp) {
    assert_eq!(app.settings.ws_max_operations, 2);
    let ring = Ring::new(&app, "chef").await;
    let mut ws = open_raw(&app.ws_url(), TRANSPORT_WS).await;
    ws.init(json!({})).await;
    ws.send(subscribe_msg("a", BATTLES)).await;
    ws.send(subscribe_msg("b", BATTLES)).await;
    ws.send(subscribe_msg("c", BATTLES)).await;
    let refused = ws.next_json(STEP).await;
    assert_eq!(refused["type"], "error", "{refused}");
    assert_eq!(refused["id"], "c");
    assert_eq!(refused["payload"][0]["extensions"]["code"], "RATE_LIMITED");
    // The two under the cap go on.
    fight_until_delivered(&app, &ring, &mut ws, &["a", "b"]).await;
    // Once one is complete there is room again, under the same id too.
    ws.send(json!({ "type": "complete", "id": "b" })).await;
    ws.send(subscribe_msg("c", "{ meals(first: 1) { totalCount } }"))
        .await;
    loop {
        let m = ws.next_json(STEP).await;
        if m["id"] == "c" {
            assert_eq!(m["type"], "next", "{m}");
            break;
        }
    }
}

/// Connections without a verified credential have a smaller cap than all of them; refused
/// upgrades get 503 with `RATE_LIMITED`.
async fn websocket_connections_are_capped_and_unauthenticated_ones_sooner(app: TestApp) {
    assert_eq!(
        (
            app.settings.ws_max_connections,
            app.settings.ws_max_unauthenticated
        ),
        (3, 2)
    );
    let token = app.login_new_user("alice").await;
    let url = app.ws_url();
    let mut signed_in = open_raw(&url, TRANSPORT_WS).await;
    signed_in
        .init(json!({ "authorization": format!("Bearer {token}") }))
        .await;
    let mut anonymous = open_raw(&url, TRANSPORT_WS).await;
    anonymous.init(json!({})).await;
    let mut waiting = open_raw(&url, TRANSPORT_WS).await;
    // Two unauthenticated (one acknowledged without a credential, one before init): full.
    let refused = try_open_raw(&url, TRANSPORT_WS)
        .await
        .err()
        .expect("refused");
    assert!(refused.starts_with("HTTP 503"), "{refused}");
    assert!(refused.contains("RATE_LIMITED"), "{refused}");
    // The waiting one authenticates: it frees an unauthenticated place, but all three
    // places are taken now.
    waiting
        .init(json!({ "authorization": format!("Bearer {token}") }))
        .await;
    let refused = try_open_raw(&url, TRANSPORT_WS)
        .await
        .err()
        .expect("refused");
    assert!(refused.starts_with("HTTP 503"), "{refused}");
    // A closed connection frees its place.
    anonymous.send(json!({ "type": "connection_init" })).await; // 4429 closes it
    anonymous.closed(STEP).await;
    wait_until(STEP, || async {
        app.metric("arena_ws_connections{auth=\"unauthenticated\"}")
            .await
            == 0.0
    })
    .await;
    let mut again = open_raw(&url, TRANSPORT_WS).await;
    again.init(json!({})).await;
    assert_eq!(app.metric("arena_ws_connections").await, 3.0);
    assert!(
        app.metric("arena_ws_refused_total{what=\"connection\"}")
            .await
            >= 2.0
    );
    signed_in.send(json!({ "type": "ping" })).await;
    assert_eq!(signed_in.next_json(STEP).await["type"], "pong");
}

crate::both_backends!(
    subscribe_before_connection_ack_closes_4401,
    an_invalid_message_closes_4400_with_a_reason_that_fits_a_close_frame,
    a_duplicate_subscription_id_closes_4409,
    a_bad_credential_in_connection_init_closes_4403,
    a_second_connection_init_closes_4429,
    ping_gets_pong_and_pong_is_accepted,
    the_server_completes_an_operation_when_it_ends,
    a_close_from_the_client_is_answered_with_a_close,
    complete_from_the_client_stops_the_operation,
    the_legacy_protocol_keeps_working,
);

crate::both_backends_with!(
    no_connection_init_closes_4408_after_the_init_timeout => |s| s.ws_init_timeout_ms = 300,
    a_connection_init_in_time_stops_the_init_timeout => |s| s.ws_init_timeout_ms = 300,
    a_subscribe_over_the_operation_cap_gets_an_error_and_the_others_go_on => |s| s.ws_max_operations = 2,
    websocket_connections_are_capped_and_unauthenticated_ones_sooner => |s| {
        s.ws_max_connections = 3;
        s.ws_max_unauthenticated = 2;
    },
);

/// This process's resident memory (the app runs in it), in KiB.
fn resident_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("a VmRSS line")
}

/// One socket, no credential, 100 000 `subscribe` messages with distinct ids (the flood of
/// issue 16 grew the server by 964 MB): the first `ARENA_WS_MAX_OPERATIONS` run, every other
/// one gets its `error` (`RATE_LIMITED`), the socket stays usable, and the process's
/// resident memory stays within a bound far below what the flood used to cost.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_flood_of_subscribes_on_one_socket_is_capped_and_memory_stays_bounded() {
    const FLOOD: usize = 100_000;
    let app = crate::helpers::spawn_app(crate::helpers::Backends::Embedded)
        .await
        .unwrap();
    let cap = app.settings.ws_max_operations;
    let before = resident_kib();
    let mut ws = open_raw(&app.ws_url(), TRANSPORT_WS).await;
    ws.init(json!({})).await;
    let (mut sink, mut stream) = ws.stream.split();
    let writer = tokio::spawn(async move {
        let mut messages = futures::stream::iter((0..FLOOD).map(|i| {
            Ok::<_, tokio_tungstenite::tungstenite::Error>(Message::text(
                subscribe_msg(&format!("op{i}"), BATTLES).to_string(),
            ))
        }));
        sink.send_all(&mut messages)
            .await
            .expect("the flood is sent");
        sink
    });
    let mut refused = std::collections::HashSet::new();
    let mut peak = before;
    let reading = async {
        while refused.len() < FLOOD - cap {
            let msg = stream.next().await.expect("open").expect("a message");
            let Message::Text(t) = msg else { continue };
            let m: Value = serde_json::from_str(t.as_str()).unwrap();
            assert_eq!(m["type"], "error", "{m}");
            assert_eq!(m["payload"][0]["extensions"]["code"], "RATE_LIMITED", "{m}");
            let id: usize = m["id"].as_str().unwrap()[2..].parse().unwrap();
            assert!(id >= cap, "op{id} is under the cap but was refused");
            assert!(refused.insert(id), "op{id} refused twice");
            if refused.len() % 10_000 == 0 {
                peak = peak.max(resident_kib());
            }
        }
    };
    // A bound so that a hang fails the test; not a performance assertion.
    tokio::time::timeout(Duration::from_secs(600), reading)
        .await
        .expect("every refusal arrives");
    let mut sink = writer.await.unwrap();
    peak = peak.max(resident_kib());
    assert_eq!(refused.len(), FLOOD - cap);
    assert_eq!(app.metric("arena_ws_operations").await, cap as f64);
    // The socket still answers.
    sink.send(Message::text(json!({ "type": "ping" }).to_string()))
        .await
        .unwrap();
    let pong = loop {
        match stream.next().await.unwrap().unwrap() {
            Message::Text(t) => break serde_json::from_str::<Value>(t.as_str()).unwrap(),
            _ => continue,
        }
    };
    assert_eq!(pong["type"], "pong");
    let grew = peak.saturating_sub(before);
    eprintln!(
        "flood of {FLOOD} subscribes: resident {before} KiB before, peak {peak} KiB (+{grew} KiB)"
    );
    // Other tests run in this process at the same time, so the bound leaves room for them;
    // unbounded, the flood alone grew the server by ~960 MiB.
    assert!(grew < 128 * 1024, "resident memory grew by {grew} KiB");
}
