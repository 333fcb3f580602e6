//! Live queries (`query … @live`) over the WebSocket and over Server-Sent Events, and GraphQL
//! over SSE (`/graphql/stream`, the graphql-sse protocol) in both of its modes.

use std::time::Duration;

use serde_json::{json, Value};

use crate::fixtures::id_of;
use crate::fixtures::meals::{chef_with_a_meal, create_meal, delete_meal, update_price};
use crate::support::ws::{connect, WsClient, TRANSPORT_WS};
use crate::support::*;

const WAIT: Duration = Duration::from_secs(15);

const LIVE_MEAL: &str = "query($id: ID!) @live { meal(id: $id) { name price } }";

const LIVE_LIST: &str = "query($c: String!) @live { meals(first: 50, cuisine: $c) { \
                         totalCount nodes { name price } } }";

/// The next result of a live query, which must carry no error. Results computed while the
/// replica re-checks (`extensions.live`: its cache calls timed out on a busy machine, which
/// these tests do not test) are skipped; the next one without it comes within a second.
async fn next_data(ws: &mut WsClient) -> Value {
    loop {
        let payload = ws.next_data(WAIT).await.expect("a live result in time");
        if payload["extensions"]["live"].is_null() {
            return payload["data"].clone();
        }
    }
}

/// The next result that differs from `previous` (one sent again only to say the replica
/// re-checks no more carries the same data).
async fn next_change(ws: &mut WsClient, previous: &Value) -> Value {
    loop {
        let data = next_data(ws).await;
        if data != *previous {
            return data;
        }
    }
}

fn names(list: &Value) -> Vec<String> {
    let mut names: Vec<String> = list["meals"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["name"].as_str().unwrap().to_owned())
        .collect();
    names.sort();
    names
}

async fn executions(app: &TestApp) -> f64 {
    app.metric("arena_live_executions_total").await
}

/// A live query sends its result, then sends it again after each write to what it read; a
/// write to something else wakes nothing (the next result is the related write's), and many
/// subscribers of one document cost one execution per write.
async fn a_live_query_is_sent_again_when_what_it_read_changes(app: TestApp) {
    let (t, id) = chef_with_a_meal(&app, "Live").await;
    let other = id_of(&create_meal(&app, &t, "Other", "x", 5.0, "LOW").await);
    let mut clients = Vec::new();
    let mut seen = Value::Null;
    for _ in 0..20 {
        let mut ws = connect(&app.ws_url(), TRANSPORT_WS, json!({})).await;
        ws.subscribe("live", LIVE_MEAL, json!({ "id": id })).await;
        seen = next_data(&mut ws).await;
        assert_eq!(seen["meal"]["price"], 1.0);
        clients.push(ws);
    }
    assert_eq!(
        app.metric("arena_live_documents").await,
        1.0,
        "one document"
    );
    assert_eq!(app.metric("arena_live_queries").await, 20.0);
    let before = executions(&app).await;

    assert_no_errors(&update_price(&app, &t, &other, 6.0).await);
    assert_no_errors(&update_price(&app, &t, &id, 2.0).await);
    let mut last = Value::Null;
    for ws in &mut clients {
        let next = next_change(ws, &seen).await;
        last = next.clone();
        assert_eq!(
            next["meal"]["price"], 2.0,
            "the related write, not a repeat"
        );
    }
    assert_eq!(
        executions(&app).await,
        before + 1.0,
        "20 subscribers, one write to what they read, one execution"
    );
    figure(&format!(
        "live: 20 subscribers of one document, 2 writes (1 related): {} execution(s)",
        executions(&app).await - before
    ));

    assert_no_errors(&delete_meal(&app, &t, &id).await);
    assert_eq!(
        next_change(&mut clients[0], &last).await["meal"],
        Value::Null
    );
    for ws in clients {
        ws.close().await;
    }
    wait_until(WAIT, || async {
        app.metric("arena_live_documents").await == 0.0
    })
    .await;
}

/// A live list on replica B follows writes on replica A: a create, an update that moves a row
/// out of the filter, a delete; the very next result after each acknowledged write shows it.
async fn a_live_list_on_one_replica_follows_writes_on_another(app: TestApp) {
    let b = app.spawn_replica().await;
    let token = app.login_new_user("chef").await;
    let cuisine = "live-list";
    let first = id_of(&create_meal(&app, &token, "A", cuisine, 1.0, "LOW").await);
    let mut ws = connect(&b.ws_url(), TRANSPORT_WS, json!({})).await;
    ws.subscribe("list", LIVE_LIST, json!({ "c": cuisine }))
        .await;
    let r = next_data(&mut ws).await;
    assert_eq!(names(&r), ["A"]);

    let second = id_of(&create_meal(&app, &token, "B", cuisine, 2.0, "LOW").await);
    let r = next_change(&mut ws, &r).await;
    assert_eq!(names(&r), ["A", "B"], "a create on A");
    assert_eq!(r["meals"]["totalCount"], 2);

    let moved = app
        .gql_as(
            &token,
            "mutation($id: ID!) { updateMeal(id: $id, input: { cuisine: \"elsewhere\" }) { id } }",
            json!({ "id": first }),
        )
        .await;
    assert_no_errors(&moved);
    let r = next_change(&mut ws, &r).await;
    assert_eq!(names(&r), ["B"], "moved out of the filter");

    assert_no_errors(&delete_meal(&app, &token, &second).await);
    let r = next_change(&mut ws, &r).await;
    assert_eq!(names(&r), Vec::<String>::new(), "a delete");
    assert_eq!(r["meals"]["totalCount"], 0);
    ws.close().await;
}

/// Writers on A, a live subscriber on B: what B sees never goes back, every value it sees was
/// written, and it ends on the last acknowledged write (bursts are coalesced: it may skip
/// steps, never the end).
async fn a_live_query_under_a_burst_of_writes_ends_on_the_last_and_never_goes_back(app: TestApp) {
    let b = app.spawn_replica().await;
    let (t, id) = chef_with_a_meal(&app, "Burst").await;
    let mut ws = connect(&b.ws_url(), TRANSPORT_WS, json!({})).await;
    ws.subscribe("burst", LIVE_MEAL, json!({ "id": id })).await;
    assert_eq!(next_data(&mut ws).await["meal"]["price"], 1.0);
    let writes = 40;
    let writer = {
        let (app_url, client, t, id) = (app.url.clone(), app.client.clone(), t.clone(), id.clone());
        tokio::spawn(async move {
            for i in 2..=(writes + 1) {
                let r: Value = client
                    .post(format!("{app_url}/graphql"))
                    .header("Authorization", format!("Bearer {t}"))
                    .json(&json!({
                        "query": "mutation($id: ID!, $p: Float!) { updateMeal(id: $id, input: { price: $p }) { price } }",
                        "variables": { "id": id, "p": i as f64 }
                    }))
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                assert_no_errors(&r);
            }
        })
    };
    let last = (writes + 1) as f64;
    let mut seen = vec![1.0];
    let mut mode = Value::Null;
    while *seen.last().unwrap() < last {
        let payload = ws.next_data(WAIT).await.expect("a live result in time");
        let p = payload["data"]["meal"]["price"].as_f64().unwrap();
        let now = payload["extensions"]["live"]["mode"].clone();
        // The same value again only to say the mode changed (a busy machine's cache calls
        // time out: the replica re-checks for a while, and says so).
        let says_so = p == *seen.last().unwrap() && now != mode;
        assert!(
            p > *seen.last().unwrap() || says_so,
            "went back or repeated: {p} after {seen:?}"
        );
        assert!(
            p.fract() == 0.0 && (1.0..=last).contains(&p),
            "{p} was never written"
        );
        mode = now;
        if !says_so {
            seen.push(p);
        }
    }
    writer.await.unwrap();
    figure(&format!(
        "live: {writes} writes on A, {} results on B (coalesced)",
        seen.len() - 1
    ));
    ws.close().await;
}

/// A live query that asks who its viewer is ends with an error once the session is revoked.
async fn a_revoked_session_ends_its_live_queries_with_an_error(app: TestApp) {
    let token = app.login_new_user("viewer").await;
    let mut ws = connect(
        &app.ws_url(),
        TRANSPORT_WS,
        json!({ "authorization": format!("Bearer {token}") }),
    )
    .await;
    ws.subscribe("me", "query @live { me { username } }", json!({}))
        .await;
    assert_eq!(next_data(&mut ws).await["me"]["username"], "viewer");
    app.log_out(&token).await;
    let m = ws
        .next_message(WAIT)
        .await
        .expect("a result after the logout");
    assert_eq!(m.kind, "next");
    assert_eq!(
        m.payload["errors"][0]["extensions"]["code"], "UNAUTHENTICATED",
        "{}",
        m.payload
    );
    let end = ws.next_message(WAIT).await.expect("the end");
    assert_eq!(end.kind, "complete");
    ws.close().await;
}

/// A live query over an API key ends with an error once the key is deleted.
async fn a_deleted_api_key_ends_its_live_queries_with_an_error(app: TestApp) {
    let token = app.login_new_user("keyholder").await;
    let r = app
        .gql_as(
            &token,
            "mutation { createCredential(id: \"live\") { credential { publicKey } secretKey } }",
            json!({}),
        )
        .await;
    assert_no_errors(&r);
    let c = &r["data"]["createCredential"];
    let basic = basic(
        c["credential"]["publicKey"].as_str().unwrap(),
        c["secretKey"].as_str().unwrap(),
    );
    let mut ws = connect(
        &app.ws_url(),
        TRANSPORT_WS,
        json!({ "authorization": basic }),
    )
    .await;
    ws.subscribe("me", "query @live { me { username } }", json!({}))
        .await;
    assert_eq!(next_data(&mut ws).await["me"]["username"], "keyholder");
    let r = app
        .gql_as(
            &token,
            "mutation { deleteCredential(id: \"live\") }",
            json!({}),
        )
        .await;
    assert_no_errors(&r);
    let m = ws
        .next_message(WAIT)
        .await
        .expect("a result after the key went");
    assert_eq!(
        m.payload["errors"][0]["extensions"]["code"], "UNAUTHENTICATED",
        "{}",
        m.payload
    );
    assert_eq!(
        ws.next_message(WAIT).await.expect("the end").kind,
        "complete"
    );
    ws.close().await;
}

/// `@live` is for streams: over plain HTTP it is refused with a code, and on a mutation it
/// does not validate.
async fn live_over_plain_http_or_on_a_mutation_is_refused(app: TestApp) {
    let r = app
        .gql("query @live { meals(first: 1) { totalCount } }", json!({}))
        .await;
    assert_eq!(error_code(&r), "BAD_USER_INPUT");
    assert!(error_message(&r).contains("/graphql/stream"), "{r}");
    let mut ws = connect(&app.ws_url(), TRANSPORT_WS, json!({})).await;
    ws.subscribe("m", "mutation @live { logout }", json!({}))
        .await;
    let m = ws.next_message(WAIT).await.unwrap();
    assert_eq!(m.kind, "error", "{:?}", m);
    assert_eq!(m.payload[0]["extensions"]["code"], "BAD_USER_INPUT");
    ws.close().await;
}

/// A Server-Sent Events response, read event by event.
struct EventStream {
    resp: reqwest::Response,
    buf: String,
}

impl EventStream {
    /// The next event (`event` name, `data`) within the wait; comments are skipped.
    async fn next(&mut self) -> Option<(String, String)> {
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                let (mut event, mut data) = (String::new(), Vec::new());
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        event = v.trim().to_owned();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push(v.strip_prefix(' ').unwrap_or(v).to_owned());
                    }
                }
                if event.is_empty() && data.is_empty() {
                    continue;
                }
                return Some((event, data.join("\n")));
            }
            let chunk = tokio::time::timeout(WAIT, self.resp.chunk())
                .await
                .ok()?
                .ok()??;
            self.buf.push_str(&String::from_utf8_lossy(&chunk));
        }
    }

    async fn next_json(&mut self, name: &str) -> Value {
        let (event, data) = self.next().await.expect("an event in time");
        assert_eq!(event, name, "{data}");
        serde_json::from_str(&data).unwrap()
    }

    /// The next live result whose data differs from `previous`, as [`next_change`] does on
    /// the WebSocket: results computed while the replica re-checks, and those sent again only
    /// to say it re-checks no more, are skipped.
    async fn next_live_change(&mut self, previous: &Value) -> Value {
        loop {
            let payload = self.next_json("next").await;
            if payload["extensions"]["live"].is_null() && payload["data"] != *previous {
                return payload["data"].clone();
            }
        }
    }
}

fn stream_url(app: &TestApp) -> String {
    format!("{}/graphql/stream", app.url)
}

async fn sse_post(app: &TestApp, auth: Option<&str>, body: Value) -> reqwest::Response {
    let mut req = app
        .client
        .post(stream_url(app))
        .header("Accept", "text/event-stream")
        .json(&body);
    if let Some(t) = auth {
        req = req.header("Authorization", format!("Bearer {t}"));
    }
    req.send().await.unwrap()
}

/// Distinct connections mode: a query is a `next` and a `complete`; a request error is a
/// `next` with the errors; a live query streams; a request without `Accept:
/// text/event-stream` or with a bad body is refused with a code.
async fn graphql_over_sse_runs_queries_mutations_and_live_queries(app: TestApp) {
    let (t, id) = chef_with_a_meal(&app, "Sse").await;
    let resp = sse_post(
        &app,
        None,
        json!({ "query": "query($id: ID!) { meal(id: $id) { name } }", "variables": { "id": id } }),
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let mut events = EventStream {
        resp,
        buf: String::new(),
    };
    assert_eq!(
        events.next_json("next").await["data"]["meal"]["name"],
        "Sse"
    );
    assert_eq!(events.next().await.unwrap().0, "complete");

    let resp = sse_post(&app, None, json!({ "query": "{ nope }" })).await;
    let mut events = EventStream {
        resp,
        buf: String::new(),
    };
    let r = events.next_json("next").await;
    assert_eq!(
        r["errors"][0]["extensions"]["code"], "BAD_USER_INPUT",
        "{r}"
    );
    assert_eq!(events.next().await.unwrap().0, "complete");

    let resp = sse_post(&app, Some(&t), json!({ "query": "mutation($id: ID!) { updateMeal(id: $id, input: { price: 3 }) { price } }", "variables": { "id": id } })).await;
    let mut events = EventStream {
        resp,
        buf: String::new(),
    };
    assert_eq!(
        events.next_json("next").await["data"]["updateMeal"]["price"],
        3.0
    );

    let resp = sse_post(
        &app,
        None,
        json!({ "query": LIVE_MEAL, "variables": { "id": id } }),
    )
    .await;
    let mut live = EventStream {
        resp,
        buf: String::new(),
    };
    let first = live.next_live_change(&Value::Null).await;
    assert_eq!(first["meal"]["price"], 3.0);
    assert_no_errors(&update_price(&app, &t, &id, 4.0).await);
    assert_eq!(live.next_live_change(&first).await["meal"]["price"], 4.0);
    drop(live);

    let plain = app
        .client
        .post(stream_url(&app))
        .json(&json!({ "query": "{ __typename }" }))
        .send()
        .await
        .unwrap();
    assert_eq!(plain.status(), 406);
    let body: Value = plain.json().await.unwrap();
    assert_eq!(error_code(&body), "BAD_USER_INPUT");
    let bad = sse_post(&app, None, json!({ "query": 7 })).await;
    assert_eq!(bad.status(), 400);
    let body: Value = bad.json().await.unwrap();
    assert_eq!(error_code(&body), "BAD_USER_INPUT");
}

/// Single connection mode: `PUT` reserves, `GET` opens the stream, each `POST` with the token
/// and an `operationId` answers `202` and streams `{ id, payload }`, `DELETE` stops one.
async fn graphql_over_sse_in_single_connection_mode(app: TestApp) {
    let (t, id) = chef_with_a_meal(&app, "Single").await;
    let put = app.client.put(stream_url(&app)).send().await.unwrap();
    assert_eq!(put.status(), 201);
    let token = put.text().await.unwrap();
    let resp = app
        .client
        .get(stream_url(&app))
        .header("Accept", "text/event-stream")
        .header("X-GraphQL-Event-Stream-Token", &token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut events = EventStream {
        resp,
        buf: String::new(),
    };
    let again = app
        .client
        .get(format!("{}?token={token}", stream_url(&app)))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 409, "one stream per reservation");

    let post = |op: &str, query: &str| {
        app.client
            .post(stream_url(&app))
            .header("X-GraphQL-Event-Stream-Token", &token)
            .json(&json!({ "query": query, "variables": { "id": id }, "extensions": { "operationId": op } }))
            .send()
    };
    assert_eq!(
        post("q", "query($id: ID!) { meal(id: $id) { name } }")
            .await
            .unwrap()
            .status(),
        202
    );
    let next = events.next_json("next").await;
    assert_eq!(next["id"], "q");
    assert_eq!(next["payload"]["data"]["meal"]["name"], "Single");
    assert_eq!(events.next_json("complete").await["id"], "q");

    assert_eq!(post("l", LIVE_MEAL).await.unwrap().status(), 202);
    let next = events.next_json("next").await;
    assert_eq!(
        (
            next["id"].clone(),
            next["payload"]["data"]["meal"]["price"].clone()
        ),
        (json!("l"), json!(1.0))
    );
    assert_no_errors(&update_price(&app, &t, &id, 2.0).await);
    assert_eq!(
        events.next_json("next").await["payload"]["data"]["meal"]["price"],
        2.0
    );
    let stop = app
        .client
        .delete(format!("{}?operationId=l", stream_url(&app)))
        .header("X-GraphQL-Event-Stream-Token", &token)
        .send()
        .await
        .unwrap();
    assert_eq!(stop.status(), 200);
    wait_until(WAIT, || async {
        app.metric("arena_live_queries").await == 0.0
    })
    .await;

    let no_id = app
        .client
        .post(stream_url(&app))
        .header("X-GraphQL-Event-Stream-Token", &token)
        .json(&json!({ "query": "{ __typename }" }))
        .send()
        .await
        .unwrap();
    assert_eq!(no_id.status(), 400);
    // A request error is answered as GraphQL over HTTP answers it, not streamed.
    let invalid = app
        .client
        .post(stream_url(&app))
        .header("X-GraphQL-Event-Stream-Token", &token)
        .json(&json!({ "query": "{ nope }", "extensions": { "operationId": "bad" } }))
        .send()
        .await
        .unwrap();
    assert_eq!(invalid.status(), 400);
    let body: Value = invalid.json().await.unwrap();
    assert_eq!(error_code(&body), "BAD_USER_INPUT", "{body}");
    let invalid_live = app
        .client
        .post(stream_url(&app))
        .header("X-GraphQL-Event-Stream-Token", &token)
        .json(&json!({ "query": "query @live { nope }", "extensions": { "operationId": "bad-live" } }))
        .send()
        .await
        .unwrap();
    assert_eq!(
        invalid_live.status(),
        400,
        "a live query that does not validate"
    );
    // The stream goes on: a later operation still runs on it.
    assert_eq!(
        post("after", "query($id: ID!) { meal(id: $id) { name } }")
            .await
            .unwrap()
            .status(),
        202
    );
    let next = events.next_json("next").await;
    assert_eq!(
        next["id"], "after",
        "nothing of the refused operation was streamed: {next}"
    );
    let unknown = app
        .client
        .post(stream_url(&app))
        .header("X-GraphQL-Event-Stream-Token", "nope")
        .json(&json!({ "query": "{ __typename }", "extensions": { "operationId": "x" } }))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
}

/// SSE streams take places under the WebSocket connection caps: over the cap a stream is
/// refused with 503 and `RATE_LIMITED`, and a closed one frees its place.
async fn sse_streams_count_against_the_connection_caps(app: TestApp) {
    let live = json!({ "query": "query @live { meals(first: 1) { totalCount } }" });
    let mut open = Vec::new();
    for _ in 0..2 {
        let resp = sse_post(&app, None, live.clone()).await;
        assert_eq!(resp.status(), 200);
        let mut events = EventStream {
            resp,
            buf: String::new(),
        };
        events.next_json("next").await;
        open.push(events);
    }
    let refused = sse_post(&app, None, live.clone()).await;
    assert_eq!(refused.status(), 503);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(error_code(&body), "RATE_LIMITED");
    let put = app.client.put(stream_url(&app)).send().await.unwrap();
    assert_eq!(put.status(), 503, "a reservation takes a place too");
    drop(open.pop());
    wait_until(WAIT, || async {
        sse_post(&app, None, json!({ "query": "{ __typename }" }))
            .await
            .status()
            == 200
    })
    .await;
}

crate::scenario! {
    backends: [embedded, postgres_redis, postgres_redis_cluster];
    settings: |s| s.ws_max_connections = 2;
    sse_streams_count_against_the_connection_caps,
}

crate::scenario! {
    backends: [embedded, postgres_redis, postgres_redis_cluster];
    a_live_query_is_sent_again_when_what_it_read_changes,
    a_revoked_session_ends_its_live_queries_with_an_error,
    a_deleted_api_key_ends_its_live_queries_with_an_error,
    live_over_plain_http_or_on_a_mutation_is_refused,
    graphql_over_sse_runs_queries_mutations_and_live_queries,
    graphql_over_sse_in_single_connection_mode,
}

crate::scenario! {
    backends: replicas;
    a_live_list_on_one_replica_follows_writes_on_another,
    a_live_query_under_a_burst_of_writes_ends_on_the_last_and_never_goes_back,
}

/// A live query on a replica cut off from Redis (and so from the bus) falls back to
/// re-checking and says so (`extensions.live.mode`), still shows a write made on another
/// replica meanwhile, and once Redis answers again is driven by writes again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_live_query_cut_off_from_the_cache_rechecks_says_so_and_recovers() {
    let Some((b, mut proxy)) = TestApp::builder(Backends::Real)
        .try_spawn_behind_proxy()
        .await
    else {
        return;
    };
    let a = b.spawn_direct_replica().await;
    let (t, id) = chef_with_a_meal(&a, "Outage").await;
    let mut ws = connect(&b.ws_url(), TRANSPORT_WS, json!({})).await;
    ws.subscribe("o", LIVE_MEAL, json!({ "id": id })).await;
    let first = ws.next_data(WAIT).await.unwrap();
    assert_eq!(first["data"]["meal"]["price"], 1.0);
    assert!(first.get("extensions").is_none(), "{first}");

    proxy.cut();
    let said = ws
        .next_data(WAIT)
        .await
        .expect("a result once B finds Redis gone");
    assert_eq!(said["extensions"]["live"]["mode"], "recheck", "{said}");
    assert_eq!(said["data"]["meal"]["price"], 1.0);
    assert_no_errors(&update_price(&a, &t, &id, 2.0).await);
    let during = ws.next_data(WAIT).await.expect("the write, re-checked");
    assert_eq!(during["data"]["meal"]["price"], 2.0);

    proxy.restore().await;
    let back = ws
        .next_data(Duration::from_secs(30))
        .await
        .expect("driven by writes again");
    assert!(back.get("extensions").is_none(), "{back}");
    assert_eq!(back["data"]["meal"]["price"], 2.0);
    assert_no_errors(&update_price(&a, &t, &id, 3.0).await);
    let pushed = ws.next_data(WAIT).await.unwrap();
    assert_eq!(pushed["data"]["meal"]["price"], 3.0);
    assert!(pushed.get("extensions").is_none(), "{pushed}");
    ws.close().await;
}
