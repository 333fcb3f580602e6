//! `@defer` and `@stream`: incremental delivery over HTTP (`multipart/mixed`), the
//! WebSocket and Server-Sent Events; the assembled payloads equal the result of the same
//! query without the directives, and a client that does not read multipart gets it whole.

use std::time::Duration;

use serde_json::{json, Value};

use crate::fixtures::meals::create_meal;
use crate::support::ws::{connect, TRANSPORT_WS};
use crate::support::*;

const DEFERRED: &str = "query($c: String!) { meals(first: 10, cuisine: $c) { totalCount \
     nodes @stream(initialCount: 1, label: \"rest\") { id name ... @defer(label: \"slow\") \
     { price difficulty } } } }";

const WHOLE: &str = "query($c: String!) { meals(first: 10, cuisine: $c) { totalCount \
     nodes { id name price difficulty } } }";

/// Applies incremental payloads to the first one's `data`, as a client does.
fn assemble(payloads: &[Value]) -> Value {
    let mut data = payloads[0]["data"].clone();
    assert_eq!(payloads[0]["hasNext"], true);
    for (i, p) in payloads[1..].iter().enumerate() {
        assert_eq!(p["hasNext"], i + 2 < payloads.len(), "hasNext of {p}");
        for entry in p["incremental"].as_array().expect("incremental") {
            let path = entry["path"].as_array().unwrap();
            if let Some(items) = entry["items"].as_array() {
                let (at, parent) = path.split_last().unwrap();
                let list = walk(&mut data, parent).as_array_mut().unwrap();
                assert_eq!(list.len() as u64, at.as_u64().unwrap(), "items in order");
                list.extend(items.iter().cloned());
            } else {
                let target = walk(&mut data, path).as_object_mut().unwrap();
                for (k, v) in entry["data"].as_object().unwrap() {
                    target.insert(k.clone(), v.clone());
                }
            }
        }
    }
    data
}

fn walk<'a>(mut v: &'a mut Value, path: &[Value]) -> &'a mut Value {
    for step in path {
        v = match step {
            Value::String(k) => &mut v[k.as_str()],
            Value::Number(i) => &mut v[i.as_u64().unwrap() as usize],
            _ => unreachable!(),
        };
    }
    v
}

async fn three_meals(app: &TestApp, cuisine: &str) {
    let t = app.login_new_user("chef").await;
    for (name, price) in [("a", 1.0), ("b", 2.0), ("c", 3.0)] {
        create_meal(app, &t, name, cuisine, price, "LOW").await;
    }
}

/// Over HTTP, with `Accept: multipart/mixed`: the first part has the first item without its
/// deferred fields; the parts assemble into the whole result. Without it: the whole result.
async fn defer_and_stream_over_http_assemble_into_the_whole_result(app: TestApp) {
    three_meals(&app, "inc").await;
    let vars = json!({ "c": "inc" });
    let whole = app.gql(WHOLE, vars.clone()).await;
    assert_no_errors(&whole);

    let resp = app
        .client
        .post(format!("{}/graphql", app.url))
        .header(
            "Accept",
            "multipart/mixed;deferSpec=20220824,application/json",
        )
        .json(&json!({ "query": DEFERRED, "variables": vars }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let ct = resp.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(ct.starts_with("multipart/mixed"), "{ct}");
    assert!(ct.contains("boundary=\"-\""), "{ct}");
    let body = resp.text().await.unwrap();
    assert!(
        body.ends_with("\r\n-----\r\n"),
        "closing delimiter: {body:?}"
    );
    let payloads: Vec<Value> = body
        .trim_end_matches("\r\n-----\r\n")
        .split("\r\n---\r\n")
        .filter(|p| !p.is_empty())
        .map(|part| {
            let (headers, json) = part.split_once("\r\n\r\n").expect("part headers");
            assert!(headers.to_ascii_lowercase().contains("application/json"));
            serde_json::from_str(json).unwrap()
        })
        .collect();
    let first = &payloads[0]["data"]["meals"];
    assert_eq!(first["nodes"].as_array().unwrap().len(), 1, "initialCount");
    assert!(
        first["nodes"][0].get("price").is_none(),
        "deferred: {first}"
    );
    assert!(payloads
        .iter()
        .any(|p| p["incremental"][0]["label"] == "slow"));
    assert!(payloads
        .iter()
        .any(|p| p["incremental"][0]["label"] == "rest"));
    assert_eq!(assemble(&payloads), whole["data"]);

    // A client that reads no multipart gets the whole result at once.
    let plain = app.gql(DEFERRED, vars).await;
    assert_no_errors(&plain);
    assert_eq!(plain["data"], whole["data"]);
}

/// Over the WebSocket and SSE the payloads are `next` messages.
async fn defer_and_stream_over_the_websocket_and_sse(app: TestApp) {
    three_meals(&app, "inc-ws").await;
    let vars = json!({ "c": "inc-ws" });
    let whole = app.gql(WHOLE, vars.clone()).await;

    let mut ws = connect(&app.ws_url(), TRANSPORT_WS, json!({})).await;
    ws.subscribe("d", DEFERRED, vars.clone()).await;
    let mut payloads = Vec::new();
    loop {
        let m = ws.next_message(Duration::from_secs(10)).await.unwrap();
        match m.kind.as_str() {
            "next" => payloads.push(m.payload),
            "complete" => break,
            other => panic!("{other}: {}", m.payload),
        }
    }
    assert!(payloads.len() >= 3, "{payloads:?}");
    assert_eq!(assemble(&payloads), whole["data"]);
    ws.close().await;

    let body = app
        .client
        .post(format!("{}/graphql/stream", app.url))
        .header("Accept", "text/event-stream")
        .json(&json!({ "query": DEFERRED, "variables": vars }))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let payloads: Vec<Value> = body
        .split("\n\n")
        .filter(|e| e.contains("event: next"))
        .map(|e| {
            let data = e.lines().find_map(|l| l.strip_prefix("data: ")).unwrap();
            serde_json::from_str(data).unwrap()
        })
        .collect();
    assert_eq!(assemble(&payloads), whole["data"]);
    assert!(body.contains("event: complete"));
}

crate::scenario! {
    backends: [embedded, postgres_redis];
    defer_and_stream_over_http_assemble_into_the_whole_result,
    defer_and_stream_over_the_websocket_and_sse,
}
