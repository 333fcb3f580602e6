//! The GraphQL WebSocket protocols row by row (`graphql-transport-ws`, and the legacy
//! `graphql-ws`): the closes and their codes, pings, completion, and the caps on connections
//! and operations.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use crate::fixtures::battles::prep_ok;
use crate::fixtures::id_of;
use crate::fixtures::meals::create_meal;
use crate::support::ws::{open_raw, try_open_raw, Event, RawWs, LEGACY_WS, TRANSPORT_WS};
use crate::support::*;

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
            let name = format!("{name} of {who}");
            let meal = create_meal(app, &token, &name, "Any", price, "MED").await;
            prep_ok(app, &token, &id_of(&meal)).await;
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
        prep_ok(app, &self.token, &id_of(&r["data"]["battle"]["loser"])).await;
        id_of(&r["data"]["battle"])
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
        basic("pk_made_up", "secret"),
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

crate::scenario! {
    backends: [embedded, postgres_redis];
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
    no_connection_init_closes_4408_after_the_init_timeout => |s| s.ws_init_timeout_ms = 300,
    a_connection_init_in_time_stops_the_init_timeout => |s| s.ws_init_timeout_ms = 300,
    a_subscribe_over_the_operation_cap_gets_an_error_and_the_others_go_on => |s| s.ws_max_operations = 2,
    websocket_connections_are_capped_and_unauthenticated_ones_sooner => |s| {
        s.ws_max_connections = 3;
        s.ws_max_unauthenticated = 2;
    },
}

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
    let app = TestApp::builder(Backends::Embedded).spawn().await;
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
