//! The HTTP surface, errors and limits (SPEC §1–§2). After every abuse the server still
//! answers `{ __typename }`.

use futures::{SinkExt, StreamExt};
use sea_orm::EntityTrait;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

use crate::support::*;

async fn still_answers(app: &TestApp) {
    let r = app.gql("{ __typename }", json!({})).await;
    assert_eq!(r["data"]["__typename"], "Query", "{r:#}");
}

async fn graphiql_is_served_on_root_and_on_get_graphql(app: TestApp) {
    for path in ["/", "/graphql"] {
        let r = app
            .client
            .get(format!("{}{path}", app.url))
            .header("Accept", "text/html,application/xhtml+xml")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let body = r.text().await.unwrap();
        assert!(body.contains("graphiql"), "no GraphiQL at {path}");
        assert!(
            body.contains("/graphql/ws"),
            "subscriptions not wired at {path}"
        );
    }
    still_answers(&app).await;
}

async fn health_readiness_and_metrics_report_every_backend(app: TestApp) {
    let r = app
        .client
        .get(format!("{}/healthz", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = app
        .client
        .get(format!("{}/readyz", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    let kinds: Vec<(String, String)> = body["backends"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["tier"].as_str().unwrap().into(),
                b["kind"].as_str().unwrap().into(),
            )
        })
        .collect();
    let expect = match app.backends {
        Backends::Embedded => [
            ("sql", "sqlite"),
            ("cache", "memory"),
            ("documents", "sql"),
            ("events", "local"),
        ],
        Backends::Real | Backends::RealCluster => [
            ("sql", "postgres"),
            ("cache", "redis"),
            (
                "documents",
                if app.settings.mongodb_url.is_some() {
                    "mongodb"
                } else {
                    "sql"
                },
            ),
            ("events", "redis"),
        ],
    };
    for (tier, kind) in expect {
        assert!(
            kinds.contains(&(tier.into(), kind.into())),
            "{tier}={kind} missing from {body}"
        );
    }
    still_answers(&app).await;
    let m = app.metrics_text().await;
    assert!(
        metric_in(&m, "arena_http_requests_total{path=\"/graphql\"}") >= 1.0,
        "{m}"
    );
    assert!(m.contains("arena_http_request_duration_seconds"));
}

async fn every_error_carries_a_code(app: TestApp) {
    // Syntax error, unknown field, wrong argument type: all the client's input.
    for q in ["{ me { ", "{ nope }", "{ meal(id: {}) { id } }"] {
        let r = app.gql(q, json!({})).await;
        assert_eq!(error_code(&r), "BAD_USER_INPUT", "{q}: {r}");
    }
    let r = app.gql("{ meal(id: \"x\") { id } }", json!({})).await;
    assert_eq!(error_code(&r), "BAD_USER_INPUT");
    assert_eq!(r["errors"][0]["extensions"]["field"], "id");
    let r = app
        .gql("mutation { deleteMeal(id: \"1\") }", json!({}))
        .await;
    assert_eq!(error_code(&r), "UNAUTHENTICATED");
    let token = app.login_new_user("codes").await;
    let r = app
        .gql_as(&token, "mutation { deleteMeal(id: \"999\") }", json!({}))
        .await;
    assert_eq!(error_code(&r), "NOT_FOUND");
    // A malformed body is answered in GraphQL's shape too.
    let r = app
        .client
        .post(format!("{}/graphql", app.url))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert_eq!(error_code(&body), "BAD_USER_INPUT");
    still_answers(&app).await;
}

async fn a_too_deep_query_is_refused(app: TestApp) {
    let mut q = String::from("{ __schema { types { ");
    for _ in 0..10 {
        q.push_str("ofType { ");
    }
    q.push_str("name");
    q.push_str(&" }".repeat(12));
    q.push_str(" }");
    let r = app.gql(&q, json!({})).await;
    assert_eq!(error_code(&r), "BAD_USER_INPUT", "{r}");
    assert!(error_message(&r).to_lowercase().contains("deep"), "{r}");
    still_answers(&app).await;
}

async fn a_too_complex_query_is_refused(app: TestApp) {
    let fields: String = (0..30)
        .map(|i| format!("a{i}: meal(id: \"1\") {{ id name }} "))
        .collect();
    let r = app.gql(&format!("{{ {fields} }}"), json!({})).await;
    assert_eq!(error_code(&r), "BAD_USER_INPUT");
    assert!(error_message(&r).to_lowercase().contains("complex"), "{r}");
    still_answers(&app).await;
}

async fn too_many_aliased_root_fields_are_refused(app: TestApp) {
    let n = app.settings.max_root_fields + 1;
    let fields: String = (0..n)
        .map(|i| format!("m{i}: meal(id: \"1\") {{ id }} "))
        .collect();
    let r = app.gql(&format!("{{ {fields} }}"), json!({})).await;
    assert_eq!(error_code(&r), "BAD_USER_INPUT");
    assert!(error_message(&r).contains("root fields"), "{r}");
    // Hidden in a fragment counts too.
    let frag: String = (0..n).map(|i| format!("m{i}: __typename ")).collect();
    let r = app
        .gql(
            &format!("query {{ ...F }} fragment F on Query {{ {frag} }}"),
            json!({}),
        )
        .await;
    assert_eq!(error_code(&r), "BAD_USER_INPUT");
    still_answers(&app).await;
}

/// Posts `query` with `client` (whose timeout turns a hung server into a failure).
async fn post_query(client: &reqwest::Client, app: &TestApp, query: &str) -> Value {
    client
        .post(format!("{}/graphql", app.url))
        .json(&json!({ "query": query }))
        .send()
        .await
        .expect("the server answers")
        .json()
        .await
        .unwrap()
}

/// Fragments that spread the next one 50 times, nine deep: 50^8 selections if each spread
/// were walked again, a few KiB of text. Refused at once — whether the bomb sits at the root
/// or below one field — and the server keeps answering.
async fn a_fragment_bomb_is_refused_and_the_server_keeps_answering(app: TestApp) {
    let bomb = |root: &str, on: &str, leaf: &str| {
        let names: Vec<String> = (0..9).map(|i| format!("F{i}")).collect();
        let mut query = format!("query {{ {} }}\n", root.replace("SPREAD", "...F0"));
        for (i, name) in names.iter().enumerate() {
            let body = match names.get(i + 1) {
                Some(next) => std::iter::repeat_n(format!("...{next} "), 50).collect::<String>(),
                None => leaf.to_owned(),
            };
            query.push_str(&format!("fragment {name} on {on} {{ {body} }}\n"));
        }
        assert!(query.len() < 32 * 1024);
        query
    };
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(30))
        .build()
        .unwrap();
    for (query, says) in [
        (bomb("SPREAD", "Query", "__typename"), "root fields"),
        (
            bomb("meals(first: 1) { SPREAD }", "MealConnection", "totalCount"),
            "once its fragments are expanded",
        ),
    ] {
        let r = post_query(&client, &app, &query).await;
        assert_eq!(error_code(&r), "BAD_USER_INPUT", "{r}");
        assert!(error_message(&r).contains(says), "{r}");
    }
    // A chain of 20 000 fragments, each spreading the next: refused at the nesting limit
    // (walking it to the end would overflow the stack).
    let mut chain = String::from("query { ...C0 }\n");
    for i in 0..20_000 {
        chain.push_str(&format!("fragment C{i} on Query {{ ...C{} }}\n", i + 1));
    }
    chain.push_str("fragment C20000 on Query { __typename }\n");
    assert!(chain.len() < app.settings.max_body_bytes);
    let r = post_query(&client, &app, &chain).await;
    assert_eq!(error_code(&r), "BAD_USER_INPUT", "{r}");
    assert!(error_message(&r).contains("deeper than"), "{r}");
    // A fragment used normally still works.
    let r = app
        .gql(
            "query { meals(first: 2) { ...C } } fragment C on MealConnection { totalCount }",
            json!({}),
        )
        .await;
    assert_no_errors(&r);
    still_answers(&app).await;
}

async fn batches_are_capped(app: TestApp) {
    let post = |body: Value| {
        app.client
            .post(format!("{}/graphql", app.url))
            .json(&body)
            .send()
    };
    let ok: Vec<Value> = (0..2)
        .map(|_| json!({ "query": "{ __typename }" }))
        .collect();
    let r: Value = post(json!(ok)).await.unwrap().json().await.unwrap();
    assert_eq!(r.as_array().unwrap().len(), 2);
    let too_many: Vec<Value> = (0..app.settings.max_batch + 1)
        .map(|_| json!({ "query": "{ __typename }" }))
        .collect();
    let resp = post(json!(too_many)).await.unwrap();
    assert_eq!(resp.status(), 400);
    let r: Value = resp.json().await.unwrap();
    assert_eq!(error_code(&r), "BAD_USER_INPUT");
    still_answers(&app).await;
}

async fn an_oversized_body_is_refused(app: TestApp) {
    let big = "x".repeat(app.settings.max_body_bytes + 10);
    let resp = app
        .client
        .post(format!("{}/graphql", app.url))
        .json(&json!({ "query": "{ __typename }", "variables": { "pad": big } }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 413);
    let r: Value = resp.json().await.unwrap();
    assert_eq!(error_code(&r), "BAD_USER_INPUT");
    still_answers(&app).await;
}

async fn an_oversized_upload_is_refused(app: TestApp) {
    let operations =
        json!({ "query": "mutation($f: Upload!) { __typename }", "variables": { "f": null } });
    let form = reqwest::multipart::Form::new()
        .text("operations", operations.to_string())
        .text("map", json!({ "0": ["variables.f"] }).to_string())
        .part(
            "0",
            reqwest::multipart::Part::bytes(vec![b'a'; 4096]).file_name("big.csv"),
        );
    let resp = app
        .client
        .post(format!("{}/graphql", app.url))
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 413);
    let r: Value = resp.json().await.unwrap();
    assert_eq!(error_code(&r), "BAD_USER_INPUT");
    still_answers(&app).await;
}

async fn pages_larger_than_the_limit_are_refused(app: TestApp) {
    let r = app
        .gql("{ meals(first: 101) { totalCount } }", json!({}))
        .await;
    assert_eq!(error_code(&r), "BAD_USER_INPUT");
    assert_eq!(r["errors"][0]["extensions"]["field"], "first");
    let r = app
        .gql("{ meals(first: -1) { totalCount } }", json!({}))
        .await;
    assert_eq!(error_code(&r), "BAD_USER_INPUT");
    let r = app
        .gql("{ meals(first: 100) { totalCount } }", json!({}))
        .await;
    assert_no_errors(&r);
    still_answers(&app).await;
}

async fn a_request_over_the_time_limit_is_cancelled_and_nothing_is_written(app: TestApp) {
    let r = app
        .gql(
            "mutation { createUser(username: \"slowpoke\", password: \"password123\") { id } }",
            json!({}),
        )
        .await;
    assert_eq!(error_code(&r), "TIMEOUT", "{r}");
    still_answers(&app).await;
    let users = entity::user::Entity::find()
        .all(&app.state.db)
        .await
        .unwrap();
    assert!(
        users.is_empty(),
        "a cancelled sign-up must not create the user"
    );
}

async fn websocket_speaks_both_protocols_and_reads_the_token_from_connection_init(app: TestApp) {
    let token = app.login_new_user("wsuser").await;
    for (protocol, subscribe, data) in [
        ("graphql-transport-ws", "subscribe", "next"),
        ("graphql-ws", "start", "data"),
    ] {
        let mut req = app.ws_url().into_client_request().unwrap();
        req.headers_mut()
            .insert("Sec-WebSocket-Protocol", protocol.parse().unwrap());
        let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
        let send = |v: Value| Message::Text(v.to_string().into());
        ws.send(send(json!({ "type": "connection_init", "payload": { "authorization": format!("Bearer {token}") } })))
            .await
            .unwrap();
        ws.send(send(
            json!({ "id": "1", "type": subscribe, "payload": { "query": "{ me { username } }" } }),
        ))
        .await
        .unwrap();
        let got = tokio::time::timeout(std::time::Duration::from_secs(10), async {
            while let Some(Ok(msg)) = ws.next().await {
                if let Message::Text(t) = msg {
                    let v: Value = serde_json::from_str(&t).unwrap();
                    if v["type"] == data {
                        return v;
                    }
                }
            }
            panic!("socket closed")
        })
        .await
        .expect("an answer over the socket");
        assert_eq!(
            got["payload"]["data"]["me"]["username"], "wsuser",
            "{protocol}: {got}"
        );
    }
    still_answers(&app).await;
}

/// Over the WebSocket too, every error has a code (parse, validation and limit errors never
/// pass through the HTTP path), and a message over the body limit is refused without
/// harming the server.
async fn websocket_errors_carry_codes_and_messages_are_size_limited(app: TestApp) {
    use crate::support::ws;
    for protocol in [ws::TRANSPORT_WS, ws::LEGACY_WS] {
        let mut client = ws::connect(&app.ws_url(), protocol, json!({})).await;
        for (id, query) in [
            ("parse", "{ meals("),
            ("validation", "{ nope }"),
            ("depth", "{ __schema { types { fields { type { ofType { ofType { ofType { ofType { ofType { ofType { ofType { name } } } } } } } } } } }"),
        ] {
            client.subscribe(id, query, json!({})).await;
            let m = loop {
                let m = client
                    .next_message(std::time::Duration::from_secs(10))
                    .await
                    .unwrap_or_else(|| panic!("{protocol}: no answer to {id}"));
                if m.id == id && m.kind != "complete" {
                    break m;
                }
            };
            let errors = if m.payload.is_array() {
                m.payload.clone()
            } else {
                m.payload["errors"].clone()
            };
            let first = &errors[0];
            assert!(
                first["extensions"]["code"].is_string(),
                "{protocol} {id}: {}",
                m.payload
            );
        }
        client.close().await;
    }
    // A message larger than the body limit closes that connection only.
    let mut req = app.ws_url().into_client_request().unwrap();
    req.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        "graphql-transport-ws".parse().unwrap(),
    );
    let (mut socket, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    let huge = "x".repeat(app.settings.max_body_bytes + 1);
    let _ = socket
        .send(Message::Text(
            json!({ "type": "connection_init", "payload": { "pad": huge } })
                .to_string()
                .into(),
        ))
        .await;
    let closed = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        loop {
            match socket.next().await {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return true,
                Some(Ok(Message::Text(t))) if t.contains("connection_ack") => return false,
                _ => {}
            }
        }
    })
    .await
    .expect("the server reacts to the oversized message");
    assert!(closed, "an oversized message was accepted");
    still_answers(&app).await;
}

async fn a_websocket_with_a_bad_token_is_closed(app: TestApp) {
    let mut req = app.ws_url().into_client_request().unwrap();
    req.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        "graphql-transport-ws".parse().unwrap(),
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    ws.send(Message::Text(
        json!({ "type": "connection_init", "payload": { "authorization": "Bearer nope" } })
            .to_string()
            .into(),
    ))
    .await
    .unwrap();
    let closed = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        loop {
            match ws.next().await {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return true,
                Some(Ok(Message::Text(t))) if t.contains("connection_ack") => return false,
                _ => {}
            }
        }
    })
    .await
    .unwrap();
    assert!(closed, "a bad token must not be acknowledged");
    still_answers(&app).await;
}

crate::scenario! {
    backends: [embedded, postgres_redis];
    graphiql_is_served_on_root_and_on_get_graphql,
    health_readiness_and_metrics_report_every_backend,
    every_error_carries_a_code,
    a_too_deep_query_is_refused,
    a_too_complex_query_is_refused => |s| {
        s.max_complexity = 20;
        s.max_root_fields = 1000;
    },
    too_many_aliased_root_fields_are_refused,
    a_fragment_bomb_is_refused_and_the_server_keeps_answering,
    batches_are_capped,
    an_oversized_body_is_refused,
    an_oversized_upload_is_refused => |s| s.max_upload_bytes = 1024,
    pages_larger_than_the_limit_are_refused,
    // Hashing 3M PBKDF2 rounds takes far longer than 200 ms.
    a_request_over_the_time_limit_is_cancelled_and_nothing_is_written => |s| {
        s.request_timeout_ms = 200;
        s.pbkdf2_iterations = 3_000_000;
    },
    websocket_speaks_both_protocols_and_reads_the_token_from_connection_init,
    websocket_errors_carry_codes_and_messages_are_size_limited,
    a_websocket_with_a_bad_token_is_closed,
}

#[test]
fn schema_graphql_matches_the_code() {
    let sdl = arena::graphql::sdl();
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/schema.graphql");
    let file = std::fs::read_to_string(path).unwrap_or_default();
    if std::env::var("UPDATE_SCHEMA").is_ok() {
        std::fs::write(path, &sdl).unwrap();
        return;
    }
    assert!(
        file == sdl,
        "schema.graphql is out of date: run `cargo run -- export-schema --out schema.graphql` \
         (or UPDATE_SCHEMA=1 cargo test schema_graphql)"
    );
}
