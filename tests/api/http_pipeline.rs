//! The HTTP pipeline around an operation: automatic persisted queries (Apollo's protocol),
//! the allow-list mode (`ARENA_PERSISTED_ONLY`) and `arena register-queries`, the memo of
//! responses (`ARENA_RESPONSE_MEMO`), and GraphQL over HTTP's `GET` and content negotiation.

use std::time::Duration;

use arena::graphql::engine::persisted::{self, PersistedQueries};
use reqwest::header::{HeaderMap, ACCEPT, ALLOW, CONTENT_TYPE};
use reqwest::{RequestBuilder, StatusCode};
use sea_orm::EntityTrait;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::fixtures::meals::{create_meal, delete_meal, update_price};
use crate::support::*;

/// `application/graphql-response+json`.
const GQL: &str = "application/graphql-response+json";

/// What the server answered.
struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Value,
}

impl Reply {
    fn content_type(&self) -> &str {
        self.headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    /// Refused before it ran: an error with `code`, and no `data` at all.
    fn assert_refused(&self, code: &str) {
        assert_eq!(error_code(&self.body), code, "{:#}", self.body);
        assert!(self.body.get("data").is_none(), "{:#}", self.body);
    }
}

/// Sends `req`; the body must be JSON.
async fn send(req: RequestBuilder) -> Reply {
    let resp = req.send().await.expect("the server answers");
    let status = resp.status();
    let headers = resp.headers().clone();
    let text = resp.text().await.unwrap();
    let body =
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("a JSON body, got {status}: {text}"));
    Reply {
        status,
        headers,
        body,
    }
}

/// `POST /graphql` with a JSON body.
fn post(app: &TestApp, body: Value) -> RequestBuilder {
    app.client.post(format!("{}/graphql", app.url)).json(&body)
}

/// `GET /graphql` with these query-string parameters.
fn get(app: &TestApp, params: &[(&str, String)]) -> RequestBuilder {
    app.client.get(format!("{}/graphql", app.url)).query(params)
}

/// `req` with `Accept: accept`, or without an `Accept` header.
fn accepting(req: RequestBuilder, accept: Option<&str>) -> RequestBuilder {
    match accept {
        Some(a) => req.header(ACCEPT, a),
        None => req,
    }
}

/// The SHA-256 of a document, in hex, computed here (not by Arena's own function).
fn hash(document: &str) -> String {
    hex::encode(Sha256::digest(document.as_bytes()))
}

/// `extensions` naming a persisted query by its hash.
fn apq(hash: &str) -> Value {
    json!({ "persistedQuery": { "version": 1, "sha256Hash": hash } })
}

/// The usernames in the database.
async fn usernames(app: &TestApp) -> Vec<String> {
    let mut names: Vec<String> = entity::user::Entity::find()
        .all(&app.state.db)
        .await
        .unwrap()
        .into_iter()
        .map(|u| u.username)
        .collect();
    names.sort();
    names
}

// ---------------------------------------------------------------------------------------------
// Automatic persisted queries
// ---------------------------------------------------------------------------------------------

async fn a_persisted_query_is_registered_on_first_use_and_then_runs_by_its_hash(app: TestApp) {
    let t = app.login_new_user("chef").await;
    let paella = create_meal(&app, &t, "Paella", "Spanish", 3.0, "LOW").await;
    let tacos = create_meal(&app, &t, "Tacos", "Mexican", 4.0, "MED").await;
    let doc = "query ApqMeal($id: ID!) { meal(id: $id) { name price } }";
    let h = hash(doc);
    let paella_vars = json!({ "id": paella["id"] });

    // Unknown: a miss with its code, answered 200 whatever the media type (Apollo's clients
    // read the miss from a 200 and send the document).
    for accept in [None, Some(GQL)] {
        let r = send(accepting(
            post(
                &app,
                json!({ "variables": paella_vars, "extensions": apq(&h) }),
            ),
            accept,
        ))
        .await;
        assert_eq!(r.status, 200, "{accept:?}: {:#}", r.body);
        r.assert_refused("PERSISTED_QUERY_NOT_FOUND");
    }

    // The hash with its document: it runs, and registers the pair.
    let r = send(post(
        &app,
        json!({ "query": doc, "variables": paella_vars, "extensions": apq(&h) }),
    ))
    .await;
    assert_eq!(r.status, 200);
    assert_no_errors(&r.body);
    assert_eq!(
        r.body["data"]["meal"],
        json!({ "name": "Paella", "price": 3.0 })
    );

    // Now the hash alone runs it, with any variables, over POST and over GET.
    let r = send(post(
        &app,
        json!({ "variables": { "id": tacos["id"] }, "extensions": apq(&h) }),
    ))
    .await;
    assert_no_errors(&r.body);
    assert_eq!(
        r.body["data"]["meal"],
        json!({ "name": "Tacos", "price": 4.0 })
    );
    let r = send(get(
        &app,
        &[
            ("variables", paella_vars.to_string()),
            ("extensions", apq(&h).to_string()),
        ],
    ))
    .await;
    assert_eq!(r.status, 200, "{:#}", r.body);
    assert_eq!(r.body["data"]["meal"]["name"], "Paella");

    // Apollo's GET flow on its own: miss, register with the document, then the hash alone.
    let count = "query ApqCount { meals(first: 5) { totalCount } }";
    let by_hash = [("extensions", apq(&hash(count)).to_string())];
    let r = send(get(&app, &by_hash)).await;
    assert_eq!(r.status, 200);
    r.assert_refused("PERSISTED_QUERY_NOT_FOUND");
    let r = send(get(
        &app,
        &[
            ("query", count.to_owned()),
            ("extensions", apq(&hash(count)).to_string()),
        ],
    ))
    .await;
    assert_eq!(r.body["data"]["meals"]["totalCount"], 2, "{:#}", r.body);
    for r in [
        send(get(&app, &by_hash)).await,
        send(post(&app, json!({ "extensions": apq(&hash(count)) }))).await,
    ] {
        assert_eq!(r.status, 200);
        assert_eq!(r.body["data"]["meals"]["totalCount"], 2, "{:#}", r.body);
    }

    // A mutation registered over POST is still a mutation: by its hash over GET it is
    // refused with 405, and does not run.
    let reprice =
        "mutation ApqReprice($id: ID!, $p: Float!) { updateMeal(id: $id, input: { price: $p }) { price } }";
    let r = send(
        post(
            &app,
            json!({ "query": reprice, "variables": { "id": paella["id"], "p": 5.0 },
                    "extensions": apq(&hash(reprice)) }),
        )
        .bearer_auth(&t),
    )
    .await;
    assert_eq!(r.body["data"]["updateMeal"]["price"], 5.0, "{:#}", r.body);
    let r = send(
        get(
            &app,
            &[
                (
                    "variables",
                    json!({ "id": paella["id"], "p": 9.0 }).to_string(),
                ),
                ("extensions", apq(&hash(reprice)).to_string()),
            ],
        )
        .bearer_auth(&t),
    )
    .await;
    assert_eq!(r.status, 405, "{:#}", r.body);
    assert_eq!(r.headers.get(ALLOW).unwrap(), "POST");
    r.assert_refused("BAD_USER_INPUT");
    let r = send(post(
        &app,
        json!({ "variables": paella_vars, "extensions": apq(&h) }),
    ))
    .await;
    assert_eq!(
        r.body["data"]["meal"]["price"], 5.0,
        "the POST wrote 5.0; the refused GET wrote nothing"
    );
}

async fn a_hash_that_is_not_the_documents_own_is_refused_and_registers_nothing(app: TestApp) {
    let sign_up =
        "mutation { createUser(username: \"mismatch\", password: \"password123\") { id } }";
    // The hash of another document, and a hash of no document.
    for wrong in [hash("{ __typename }"), "ab".repeat(32)] {
        for accept in [None, Some(GQL)] {
            let r = send(accepting(
                post(&app, json!({ "query": sign_up, "extensions": apq(&wrong) })),
                accept,
            ))
            .await;
            r.assert_refused("BAD_USER_INPUT");
            let expect = if accept.is_some() { 400 } else { 200 };
            assert_eq!(r.status, expect, "{accept:?}: {:#}", r.body);
        }
        // Registered under neither the hash sent nor the document's own.
        for h in [wrong.clone(), hash(sign_up)] {
            let r = send(post(&app, json!({ "extensions": apq(&h) }))).await;
            r.assert_refused("PERSISTED_QUERY_NOT_FOUND");
        }
    }
    // Over GET too.
    let r = send(get(
        &app,
        &[
            ("query", "{ __typename }".to_owned()),
            ("extensions", apq(&"cd".repeat(32)).to_string()),
        ],
    ))
    .await;
    r.assert_refused("BAD_USER_INPUT");
    send(get(
        &app,
        &[("extensions", apq(&"cd".repeat(32)).to_string())],
    ))
    .await
    .assert_refused("PERSISTED_QUERY_NOT_FOUND");
    assert!(usernames(&app).await.is_empty(), "the mutation never ran");
}

async fn a_malformed_persisted_query_extension_is_a_400_with_a_code(app: TestApp) {
    let sign_up =
        "mutation { createUser(username: \"malformed\", password: \"password123\") { id } }";
    let h = hash(sign_up);
    let malformed = [
        json!({ "persistedQuery": { "version": 2, "sha256Hash": h } }),
        json!({ "persistedQuery": { "sha256Hash": h } }),
        json!({ "persistedQuery": { "version": "1", "sha256Hash": h } }),
        json!({ "persistedQuery": { "version": 1 } }),
        json!({ "persistedQuery": { "version": 1, "sha256Hash": "not hex" } }),
        json!({ "persistedQuery": { "version": 1, "sha256Hash": &h[..62] } }),
        json!({ "persistedQuery": { "version": 1, "sha256Hash": 42 } }),
        json!({ "persistedQuery": "yes" }),
        json!("persistedQuery"),
    ];
    for ext in &malformed {
        for accept in [None, Some(GQL)] {
            // With the document (which would have written) and without one.
            for body in [
                json!({ "query": sign_up, "extensions": ext }),
                json!({ "extensions": ext }),
            ] {
                let r = send(accepting(post(&app, body.clone()), accept)).await;
                assert_eq!(r.status, 400, "{body}: {:#}", r.body);
                r.assert_refused("BAD_USER_INPUT");
            }
            let r = send(accepting(
                get(
                    &app,
                    &[
                        ("query", "{ __typename }".to_owned()),
                        ("extensions", ext.to_string()),
                    ],
                ),
                accept,
            ))
            .await;
            assert_eq!(r.status, 400, "GET {ext}: {:#}", r.body);
            r.assert_refused("BAD_USER_INPUT");
        }
    }
    let r = send(get(&app, &[("extensions", "{not json".to_owned())])).await;
    assert_eq!(r.status, 400);
    r.assert_refused("BAD_USER_INPUT");
    assert!(usernames(&app).await.is_empty(), "nothing ran");
    // A null extension is no extension.
    let r = send(post(
        &app,
        json!({ "query": "{ __typename }", "extensions": { "persistedQuery": null } }),
    ))
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["data"]["__typename"], "Query");
}

/// A client's registration stays in the cache tier for `ARENA_PERSISTED_TTL`; the operator's
/// (`arena register-queries`) for good.
async fn a_client_registration_expires_after_the_ttl_and_an_operators_does_not(app: TestApp) {
    assert_eq!(app.settings.persisted_ttl_secs, 1);
    let by_client = "query ByClient { __typename }";
    let by_operator = "query ByOperator { __typename }";
    let r = send(post(
        &app,
        json!({ "query": by_client, "extensions": apq(&hash(by_client)) }),
    ))
    .await;
    assert_no_errors(&r.body);
    PersistedQueries::new(app.state.kv.clone(), 1, None, true)
        .register_permanently(by_operator)
        .await
        .unwrap();
    // Client registrations under `pq:`, the operator's allow-list apart under `pqa:`.
    let stored = |prefix: &'static str, doc: &'static str| {
        let kv = app.state.kv.clone();
        async move { kv.get(&format!("{prefix}:{}", hash(doc))).await.unwrap() }
    };
    assert_eq!(stored("pq", by_client).await.as_deref(), Some(by_client));
    wait_until(Duration::from_secs(10), || async {
        stored("pq", by_client).await.is_none()
    })
    .await;
    assert_eq!(
        stored("pqa", by_operator).await.as_deref(),
        Some(by_operator)
    );
    if app.backends != Backends::Embedded {
        // A replica, which has nothing in memory, asks the cache tier.
        let b = app.spawn_replica().await;
        let r = send(post(&b, json!({ "extensions": apq(&hash(by_client)) }))).await;
        r.assert_refused("PERSISTED_QUERY_NOT_FOUND");
        let r = send(post(&b, json!({ "extensions": apq(&hash(by_operator)) }))).await;
        assert_eq!(r.body["data"]["__typename"], "Query", "{:#}", r.body);
        b.stop().await;
    }
}

/// Registered documents live in the cache tier: a hash registered through one replica runs
/// on a replica that was already running, and on one started afterwards.
async fn a_query_registered_through_one_replica_runs_by_hash_on_the_others(app: TestApp) {
    let b = app.spawn_replica().await;
    let doc = "query Replicated { meals(first: 1) { totalCount } }";
    let by_hash = json!({ "extensions": apq(&hash(doc)) });
    send(post(&b, by_hash.clone()))
        .await
        .assert_refused("PERSISTED_QUERY_NOT_FOUND");
    let r = send(post(
        &app,
        json!({ "query": doc, "extensions": apq(&hash(doc)) }),
    ))
    .await;
    assert_no_errors(&r.body);
    let c = app.spawn_replica().await;
    for replica in [&b, &c] {
        let r = send(post(replica, by_hash.clone())).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.body["data"]["meals"]["totalCount"], 0, "{:#}", r.body);
        let r = send(get(replica, &[("extensions", apq(&hash(doc)).to_string())])).await;
        assert_eq!(r.body["data"]["meals"]["totalCount"], 0, "{:#}", r.body);
    }
    b.stop().await;
    c.stop().await;
}

// ---------------------------------------------------------------------------------------------
// The allow-list
// ---------------------------------------------------------------------------------------------

async fn in_allow_list_mode_only_documents_the_operator_registered_run(app: TestApp) {
    assert!(app.settings.persisted_only);
    let sign_up = "mutation SignUp($u: String!) { createUser(username: $u, password: \"password123\") { username } }";
    let as_user = |u: &str| json!({ "u": u });

    // Not registered, as text: refused with a code, and it did not run.
    for accept in [None, Some(GQL)] {
        let r = send(accepting(
            post(
                &app,
                json!({ "query": sign_up, "variables": as_user("intruder") }),
            ),
            accept,
        ))
        .await;
        r.assert_refused("FORBIDDEN");
        let expect = if accept.is_some() { 400 } else { 200 };
        assert_eq!(r.status, expect);
    }
    let r = send(get(&app, &[("query", "{ __typename }".to_owned())])).await;
    r.assert_refused("FORBIDDEN");
    // Not registered, sent with its hash as a client registers one: refused, and registered
    // nothing.
    let r = send(post(
        &app,
        json!({ "query": sign_up, "variables": as_user("intruder"), "extensions": apq(&hash(sign_up)) }),
    ))
    .await;
    r.assert_refused("FORBIDDEN");
    let r = send(post(
        &app,
        json!({ "variables": as_user("intruder"), "extensions": apq(&hash(sign_up)) }),
    ))
    .await;
    r.assert_refused("PERSISTED_QUERY_NOT_FOUND");
    let r = send(post(
        &app,
        json!({ "query": sign_up, "variables": as_user("intruder") }),
    ))
    .await;
    r.assert_refused("FORBIDDEN");
    assert!(usernames(&app).await.is_empty(), "nothing refused ran");
    // A client's registration left from before the mode was on (in the same cache tier) is
    // not on the allow-list.
    PersistedQueries::new(app.state.kv.clone(), 1, None, false)
        .register(&persisted::sha256(sign_up), sign_up)
        .await
        .unwrap();
    let r = send(post(
        &app,
        json!({ "variables": as_user("intruder"), "extensions": apq(&hash(sign_up)) }),
    ))
    .await;
    r.assert_refused("PERSISTED_QUERY_NOT_FOUND");
    let r = send(post(
        &app,
        json!({ "query": sign_up, "variables": as_user("intruder") }),
    ))
    .await;
    r.assert_refused("FORBIDDEN");
    assert!(usernames(&app).await.is_empty(), "nothing refused ran");

    // The operator registers it, as `arena register-queries` does.
    let registered = PersistedQueries::new(app.state.kv.clone(), 1, None, true)
        .register_permanently(sign_up)
        .await
        .unwrap();
    assert_eq!(hex::encode(registered), hash(sign_up));
    // It runs by its text, by its hash, and by both.
    for (user, body) in [
        (
            "alice",
            json!({ "query": sign_up, "variables": as_user("alice") }),
        ),
        (
            "bob",
            json!({ "variables": as_user("bob"), "extensions": apq(&hash(sign_up)) }),
        ),
        (
            "carol",
            json!({ "query": sign_up, "variables": as_user("carol"), "extensions": apq(&hash(sign_up)) }),
        ),
    ] {
        let r = send(post(&app, body)).await;
        assert_eq!(r.status, 200);
        assert_no_errors(&r.body);
        assert_eq!(r.body["data"]["createUser"]["username"], user);
    }
    // Only that exact text: the same operation spelled otherwise is another document.
    let respelled = sign_up.replace("SignUp(", "SignUp (");
    let r = send(post(
        &app,
        json!({ "query": respelled, "variables": as_user("mallory") }),
    ))
    .await;
    r.assert_refused("FORBIDDEN");
    assert_eq!(usernames(&app).await, ["alice", "bob", "carol"]);
}

/// `arena register-queries` with `env`, as its own process; its output.
async fn register_queries(
    env: Vec<(&'static str, String)>,
    files: Vec<String>,
) -> std::process::Output {
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_arena"))
            .env_clear()
            .envs(env)
            .env("ARENA_LOG", "warn")
            .env("NO_COLOR", "1")
            .arg("register-queries")
            .args(files)
            .output()
            .expect("the arena binary runs")
    })
    .await
    .unwrap()
}

/// `arena register-queries` registers documents into the cache tier that a running
/// allow-list server reads; on embedded backends there is none, and the command says so.
async fn register_queries_feeds_a_running_allow_list(app: TestApp) {
    if app.backends == Backends::Embedded {
        register_queries_without_a_shared_cache_tier_is_refused(app).await
    } else {
        registered_queries_run_on_the_running_server(app).await
    }
}

/// The command registers a file's document and a manifest's into the cache tier a running
/// allow-list server reads, and prints each hash.
async fn registered_queries_run_on_the_running_server(app: TestApp) {
    let dir = tempfile::tempdir().unwrap();
    let single = "query Catalogue { meals(first: 3) { totalCount } }";
    let first = "query Named($n: String!) { mealByName(name: $n) { id } }";
    let second = "query Typename { __typename }";
    let single_path = dir.path().join("catalogue.graphql");
    std::fs::write(&single_path, single).unwrap();
    let manifest_path = dir.path().join("manifest.json");
    std::fs::write(
        &manifest_path,
        json!({
            "format": "apollo-persisted-query-manifest",
            "version": 1,
            "operations": [
                { "id": hash(first), "name": "Named", "type": "query", "body": first },
                { "id": hash(second), "name": "Typename", "type": "query", "body": second },
            ]
        })
        .to_string(),
    )
    .unwrap();
    let mut env = vec![
        ("DATABASE_URL", app.settings.database_url.clone()),
        ("ARENA_CACHE_PREFIX", app.settings.cache_prefix.clone()),
    ];
    if let Some(redis) = &app.settings.redis_url {
        env.push(("REDIS_URL", redis.clone()));
    }
    let out = register_queries(
        env,
        vec![
            single_path.display().to_string(),
            manifest_path.display().to_string(),
        ],
    )
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    for doc in [single, first, second] {
        assert!(stdout.contains(&hash(doc)), "{doc}: {stdout}");
    }
    // Every one runs on the running server, by hash and by text; nothing else does.
    let r = send(post(&app, json!({ "extensions": apq(&hash(single)) }))).await;
    assert_eq!(r.body["data"]["meals"]["totalCount"], 0, "{:#}", r.body);
    let r = send(post(
        &app,
        json!({ "variables": { "n": "none" }, "extensions": apq(&hash(first)) }),
    ))
    .await;
    assert_no_errors(&r.body);
    assert!(r.body["data"]["mealByName"].is_null());
    let r = send(post(&app, json!({ "query": second }))).await;
    assert_eq!(r.body["data"]["__typename"], "Query", "{:#}", r.body);
    send(post(&app, json!({ "query": "{ __typename }" })))
        .await
        .assert_refused("FORBIDDEN");
}

/// On embedded backends the cache tier lives inside `arena serve`: a separate command has
/// nowhere to register to, and must say so rather than report hashes it kept nowhere.
async fn register_queries_without_a_shared_cache_tier_is_refused(app: TestApp) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q.graphql");
    std::fs::write(&path, "{ __typename }").unwrap();
    let out = register_queries(
        vec![
            ("DATABASE_URL", app.settings.database_url.clone()),
            ("ARENA_CACHE_PREFIX", app.settings.cache_prefix.clone()),
        ],
        vec![path.display().to_string()],
    )
    .await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(stderr.contains("REDIS_URL"), "{stderr}");
    send(post(&app, json!({ "query": "{ __typename }" })))
        .await
        .assert_refused("FORBIDDEN");
}

// ---------------------------------------------------------------------------------------------
// The memo of responses
// ---------------------------------------------------------------------------------------------

const MEAL: &str = "query($id: ID!) { meal(id: $id) { id name price version } }";
const HITS: &str = "arena_response_memo_total{result=\"hit\"}";
const STALE: &str = "arena_response_memo_total{result=\"stale\"}";
const SQL: &str = "arena_sql_queries_total{caller=\"request\"}";

/// `meal(id)`'s whole response.
async fn read_meal(app: &TestApp, id: &Value) -> Value {
    let r = app.gql(MEAL, json!({ "id": id })).await;
    assert_no_errors(&r);
    r
}

async fn a_warm_meal_read_is_answered_from_the_memo_and_follows_every_write(app: TestApp) {
    let t = app.login_new_user("chef").await;
    let paella = create_meal(&app, &t, "Paella", "Spanish", 3.0, "LOW").await;
    let tacos = create_meal(&app, &t, "Tacos", "Mexican", 4.0, "MED").await;
    let id = &paella["id"];
    // Warm the entry, and memoize the response of a read that found it cached.
    let first = read_meal(&app, id).await;
    assert_eq!(read_meal(&app, id).await, first);
    let (h0, s0) = (app.metric(HITS).await, app.metric(SQL).await);
    let again = read_meal(&app, id).await;
    assert_eq!(again, first, "the memo answers what the query answered");
    assert_eq!(app.metric(HITS).await, h0 + 1.0);
    assert_eq!(app.metric(SQL).await, s0, "a memo hit runs no SQL");

    // A memoized response is found by the variables' text as sent: the same values spelt
    // otherwise answer the same (memoized for that text), and variables that are not a map,
    // or not the operation's, are refused even while good ones are memoized.
    let raw = |variables: &str| {
        app.client
            .post(format!("{}/graphql", app.url))
            .header(CONTENT_TYPE, "application/json")
            .body(format!(
                r#"{{"query":{},"variables":{variables}}}"#,
                json!(MEAL)
            ))
    };
    for spelt in [
        format!(r#"{{ "id" : {id} }}"#),
        format!("{{\n\"id\":{id}}}"),
    ] {
        for _ in 0..2 {
            assert_eq!(send(raw(&spelt)).await.body, first, "{spelt}");
        }
        let h = app.metric(HITS).await;
        assert_eq!(send(raw(&spelt)).await.body, first, "{spelt}");
        assert_eq!(app.metric(HITS).await, h + 1.0, "{spelt} is memoized");
    }
    for bad in ["5", r#""id""#, "[]"] {
        let r = send(raw(bad)).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad}: {:#}", r.body);
        r.assert_refused("BAD_USER_INPUT");
    }
    for bad in ["{}", r#"{"id":{"a":1}}"#, r#"{"id":null}"#] {
        let r = send(raw(bad)).await;
        r.assert_refused("BAD_USER_INPUT");
    }
    assert_eq!(send(raw(&format!(r#"{{"id":{id}}}"#))).await.body, first);

    // The same document with other variables, or another operation of one document, is
    // another response.
    let r = read_meal(&app, &tacos["id"]).await;
    assert_eq!(r["data"]["meal"]["name"], "Tacos");
    assert_eq!(read_meal(&app, &tacos["id"]).await, r);
    let two = format!(
        "query P {{ meal(id: {}) {{ name }} }} query T {{ meal(id: {}) {{ name }} }}",
        paella["id"], tacos["id"]
    );
    for _ in 0..3 {
        for (op, name) in [("P", "Paella"), ("T", "Tacos")] {
            let r = send(post(&app, json!({ "query": two, "operationName": op }))).await;
            assert_eq!(r.body["data"]["meal"]["name"], name, "{op}: {:#}", r.body);
        }
    }

    // A write on this replica: the very next read has it, never the memoized response.
    for price in [5.0, 6.0, 7.0] {
        let before = read_meal(&app, id).await;
        assert_eq!(read_meal(&app, id).await, before);
        let stale = app.metric(STALE).await;
        assert_no_errors(&update_price(&app, &t, id.as_str().unwrap(), price).await);
        let after = read_meal(&app, id).await;
        assert_eq!(after["data"]["meal"]["price"], price, "{after:#}");
        assert_eq!(
            after["data"]["meal"]["version"],
            before["data"]["meal"]["version"].as_i64().unwrap() + 1
        );
        assert_eq!(
            app.metric(STALE).await,
            stale + 1.0,
            "the memoized response was refused"
        );
    }
    // Memoized again once the new entry is read from the cache.
    read_meal(&app, id).await;
    let h = app.metric(HITS).await;
    assert_eq!(read_meal(&app, id).await["data"]["meal"]["price"], 7.0);
    assert_eq!(app.metric(HITS).await, h + 1.0);

    // Deleted: the id and the name both answer null at once.
    let by_name = "query($n: String!) { mealByName(name: $n) { id } }";
    for _ in 0..3 {
        let r = app.gql(by_name, json!({ "n": "Paella" })).await;
        assert_eq!(r["data"]["mealByName"]["id"], *id);
    }
    let r = delete_meal(&app, &t, id.as_str().unwrap()).await;
    assert_eq!(r["data"]["deleteMeal"], true);
    assert!(read_meal(&app, id).await["data"]["meal"].is_null());
    let r = app.gql(by_name, json!({ "n": "Paella" })).await;
    assert!(r["data"]["mealByName"].is_null(), "{r:#}");
}

async fn unversioned_sql_is_never_memoized_and_the_viewers_answers_only_per_credential(
    app: TestApp,
) {
    let alice = app.login_new_user("alice").await;
    let bob = app.login_new_user("bob").await;
    let m = create_meal(&app, &alice, "Paella", "Spanish", 3.0, "LOW").await;
    read_meal(&app, &m["id"]).await;
    read_meal(&app, &m["id"]).await;
    let h0 = app.metric(HITS).await;
    // The viewer: each token has its own answer, every time, memoized or not.
    for _ in 0..3 {
        for (token, name) in [(&alice, "alice"), (&bob, "bob")] {
            let r = app.gql_as(token, "{ me { username } }", json!({})).await;
            assert_eq!(r["data"]["me"]["username"], name, "{r:#}");
        }
    }
    // A cached meal beside the viewer.
    let mixed = "query($id: ID!) { meal(id: $id) { name } me { username } }";
    for _ in 0..3 {
        let r = app.gql_as(&bob, mixed, json!({ "id": m["id"] })).await;
        assert_eq!(r["data"]["me"]["username"], "bob");
        assert_eq!(r["data"]["meal"]["name"], "Paella");
    }
    let h1 = app.metric(HITS).await;
    assert!(
        h1 > h0,
        "the viewer's answers are memoized for their credential"
    );
    let h0 = h1;
    // SQL that read no collection version first (a battle by id).
    for _ in 0..3 {
        let r = app.gql("{ battle(id: \"1\") { id } }", json!({})).await;
        assert_no_errors(&r);
    }
    assert_eq!(app.metric(HITS).await, h0, "the battle was not memoized");
    // While the warm meal still is.
    read_meal(&app, &m["id"]).await;
    assert_eq!(app.metric(HITS).await, h0 + 1.0);
    // And so is a page, read under the version of its collection: a new meal shows at once.
    let page = "{ meals(first: 10) { totalCount edges { node { name } } } }";
    for _ in 0..3 {
        let r = app.gql(page, json!({})).await;
        assert_eq!(r["data"]["meals"]["totalCount"], 1, "{r:#}");
    }
    assert_eq!(app.metric(HITS).await, h0 + 3.0, "the page, twice");
    create_meal(&app, &alice, "Tacos", "Mexican", 4.0, "MED").await;
    let r = app.gql(page, json!({})).await;
    assert_eq!(r["data"]["meals"]["totalCount"], 2, "{r:#}");
}

async fn with_the_memo_off_reads_work_and_nothing_is_memoized(app: TestApp) {
    assert_eq!(app.settings.response_memo_entries, 0);
    let t = app.login_new_user("chef").await;
    let m = create_meal(&app, &t, "Paella", "Spanish", 3.0, "LOW").await;
    let id = &m["id"];
    let first = read_meal(&app, id).await;
    for _ in 0..3 {
        assert_eq!(read_meal(&app, id).await, first);
    }
    assert_no_errors(&update_price(&app, &t, id.as_str().unwrap(), 8.0).await);
    for _ in 0..3 {
        assert_eq!(read_meal(&app, id).await["data"]["meal"]["price"], 8.0);
    }
    assert_eq!(
        app.metric("arena_response_memo_total").await,
        0.0,
        "no lookup in a memo that is off"
    );
}

/// The memo checks the versions in the shared cache tier: a write through another replica
/// makes this replica's memoized response stale at once.
async fn a_write_on_another_replica_is_seen_through_the_memo(app: TestApp) {
    let b = app.spawn_replica().await;
    let t = app.login_new_user("chef").await;
    let m = create_meal(&app, &t, "Paella", "Spanish", 3.0, "LOW").await;
    let id = &m["id"];
    for price in [4.0, 5.0, 6.0] {
        // A read that found the entry cached is memoized; the next is answered from memory.
        read_meal(&app, id).await;
        let before = read_meal(&app, id).await;
        let h = app.metric(HITS).await;
        assert_eq!(read_meal(&app, id).await, before);
        assert_eq!(app.metric(HITS).await, h + 1.0, "A answers from its memo");
        let stale = app.metric(STALE).await;
        assert_no_errors(&update_price(&b, &t, id.as_str().unwrap(), price).await);
        let after = read_meal(&app, id).await;
        assert_eq!(after["data"]["meal"]["price"], price, "{after:#}");
        assert_eq!(app.metric(STALE).await, stale + 1.0);
    }
    b.stop().await;
}

// ---------------------------------------------------------------------------------------------
// GET and content negotiation
// ---------------------------------------------------------------------------------------------

async fn get_runs_queries_and_refuses_mutations_with_405(app: TestApp) {
    let q = [("query", "{ __typename }".to_owned())];
    for (accept, media) in [
        (None, "application/json"),
        (Some("application/json"), "application/json"),
        (Some(GQL), GQL),
        // A browser's navigation: a query runs and answers JSON.
        (
            Some("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"),
            "application/json",
        ),
    ] {
        let r = send(accepting(get(&app, &q), accept)).await;
        assert_eq!(r.status, 200, "{accept:?}");
        assert!(
            r.content_type().starts_with(media),
            "{accept:?}: {}",
            r.content_type()
        );
        assert_eq!(r.body, json!({ "data": { "__typename": "Query" } }));
    }
    // Variables and an operation name from the query string.
    let t = app.login_new_user("chef").await;
    let m = create_meal(&app, &t, "Paella", "Spanish", 3.0, "LOW").await;
    let r = send(get(
        &app,
        &[
            (
                "query",
                "query A { __typename } query B($id: ID!) { meal(id: $id) { name } }".to_owned(),
            ),
            ("operationName", "B".to_owned()),
            ("variables", json!({ "id": m["id"] }).to_string()),
        ],
    ))
    .await;
    assert_eq!(r.body["data"]["meal"]["name"], "Paella", "{:#}", r.body);

    // A mutation over GET: 405 with `Allow: POST`, and it does not run.
    for accept in [None, Some(GQL)] {
        let r = send(accepting(
            get(
                &app,
                &[(
                    "query",
                    "mutation { createUser(username: \"viaget\", password: \"password123\") { id } }"
                        .to_owned(),
                )],
            ),
            accept,
        ))
        .await;
        assert_eq!(r.status, 405, "{accept:?}: {:#}", r.body);
        assert_eq!(r.headers.get(ALLOW).unwrap(), "POST");
        r.assert_refused("BAD_USER_INPUT");
    }
    assert_eq!(usernames(&app).await, ["chef"]);

    // Variables that are not JSON, and no query at all.
    let r = send(get(
        &app,
        &[
            ("query", "{ __typename }".to_owned()),
            ("variables", "{nope".to_owned()),
        ],
    ))
    .await;
    assert_eq!(r.status, 400);
    r.assert_refused("BAD_USER_INPUT");
    for accept in [None, Some(GQL)] {
        let r = send(accepting(get(&app, &[]), accept)).await;
        assert_eq!(r.status, 400, "{accept:?}");
        r.assert_refused("BAD_USER_INPUT");
    }
}

async fn post_honours_content_type_and_accept(app: TestApp) {
    let url = format!("{}/graphql", app.url);
    let body = json!({ "query": "{ __typename }" }).to_string();
    // No Content-Type, or one that is not JSON: 415.
    for content_type in [
        None,
        Some("text/plain"),
        Some("application/json; charset=latin1"),
    ] {
        let mut req = app.client.post(&url).body(body.clone());
        if let Some(c) = content_type {
            req = req.header(CONTENT_TYPE, c);
        }
        let r = send(req).await;
        assert_eq!(r.status, 415, "{content_type:?}");
        r.assert_refused("BAD_USER_INPUT");
    }
    // The GraphQL types of JSON are read.
    for content_type in [
        "application/json; charset=utf-8",
        "application/graphql+json",
    ] {
        let r = send(
            app.client
                .post(&url)
                .header(CONTENT_TYPE, content_type)
                .body(body.clone()),
        )
        .await;
        assert_eq!(r.body["data"]["__typename"], "Query", "{content_type}");
    }
    // An Accept that allows neither JSON type: 406, whatever the method.
    for accept in ["text/html", "application/xml", "application/json;q=0"] {
        let r = send(post(&app, json!({ "query": "{ __typename }" })).header(ACCEPT, accept)).await;
        assert_eq!(r.status, 406, "{accept}");
        r.assert_refused("BAD_USER_INPUT");
        let r =
            send(get(&app, &[("query", "{ __typename }".to_owned())]).header(ACCEPT, accept)).await;
        assert_eq!(r.status, 406, "GET {accept}");
    }
    // Weights choose the type; on equal weight the GraphQL one wins.
    for (accept, media) in [
        (
            "application/json;q=0.5, application/graphql-response+json;q=0.9",
            GQL,
        ),
        (
            "application/json, application/graphql-response+json;q=0.5",
            "application/json",
        ),
        ("application/json, application/graphql-response+json", GQL),
        ("*/*", "application/json"),
    ] {
        let r = send(post(&app, json!({ "query": "{ __typename }" })).header(ACCEPT, accept)).await;
        assert_eq!(r.status, 200);
        assert!(
            r.content_type().starts_with(media),
            "{accept}: {}",
            r.content_type()
        );
    }
}

/// Under `application/graphql-response+json` a request refused before it ran is a 400 with
/// no `data`; under `application/json` it is a 200 with `errors` (the legacy type). Once the
/// operation ran, field errors and all, it is 200 with `data` under both.
async fn graphql_response_json_answers_a_refused_request_with_400_and_no_data(app: TestApp) {
    let refused = [
        json!({ "query": "{ meals(" }),
        json!({ "query": "{ nope }" }),
        json!({ "query": "query($id: ID!) { meal(id: $id) { id } }" }),
        json!({ "query": "query($id: ID!) { meal(id: $id) { id } }", "variables": { "id": {} } }),
        json!({ "query": "query($n: Int) { meals(first: $n) { totalCount } }", "variables": { "n": "ten" } }),
        json!({ "query": "query A { __typename } query B { __typename }" }),
    ];
    for body in &refused {
        let r = send(post(&app, body.clone()).header(ACCEPT, GQL)).await;
        assert_eq!(r.status, 400, "{body}: {:#}", r.body);
        assert!(r.content_type().starts_with(GQL));
        r.assert_refused("BAD_USER_INPUT");
        let r = send(post(&app, body.clone()).header(ACCEPT, "application/json")).await;
        assert_eq!(r.status, 200, "{body}: {:#}", r.body);
        r.assert_refused("BAD_USER_INPUT");
    }
    // Not a GraphQL request at all: 400 under both.
    for body in [json!({}), json!({ "query": null }), json!({ "query": 7 })] {
        for accept in [GQL, "application/json"] {
            let r = send(post(&app, body.clone()).header(ACCEPT, accept)).await;
            assert_eq!(r.status, 400, "{body} as {accept}: {:#}", r.body);
            r.assert_refused("BAD_USER_INPUT");
        }
    }
    // An operation that ran into a field error: 200 with `data`.
    let r = send(
        post(
            &app,
            json!({ "query": "mutation { deleteMeal(id: \"1\") }" }),
        )
        .header(ACCEPT, GQL),
    )
    .await;
    assert_eq!(r.status, 200, "{:#}", r.body);
    assert_eq!(error_code(&r.body), "UNAUTHENTICATED");
    assert!(r.body.get("data").is_some(), "{:#}", r.body);
    // A batch is a 200 list of answers, each with its own shape.
    let r = send(
        post(
            &app,
            json!([{ "query": "{ __typename }" }, { "query": "{ nope }" }]),
        )
        .header(ACCEPT, GQL),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body[0], json!({ "data": { "__typename": "Query" } }));
    assert_eq!(
        r.body[1]["errors"][0]["extensions"]["code"],
        "BAD_USER_INPUT"
    );
    assert!(r.body[1].get("data").is_none());
}

/// The hash-only body as Apollo's clients send it (compact, `extensions` first or last, or
/// alone), which the server reads by its bytes, answers exactly as any other spelling of it;
/// a body with `extensions` twice is refused.
async fn a_persisted_query_runs_whatever_the_order_and_spacing_of_its_body(app: TestApp) {
    let t = app.login_new_user("chef").await;
    let m = create_meal(&app, &t, "Ramen", "Japanese", 9.0, "MED").await;
    let doc = "query ApqOrder($id: ID!) { meal(id: $id) { name } }";
    let h = hash(doc);
    let id = m["id"].as_str().unwrap();
    let raw = |body: String| {
        app.client
            .post(format!("{}/graphql", app.url))
            .header("content-type", "application/json")
            .body(body)
    };
    let ext = format!(r#""extensions":{{"persistedQuery":{{"version":1,"sha256Hash":"{h}"}}}}"#);
    let vars = format!(r#""variables":{{"id":"{id}"}}"#);
    // Unknown yet: a miss in every spelling.
    for body in [format!("{{{ext},{vars}}}"), format!("{{{vars},{ext}}}")] {
        send(raw(body))
            .await
            .assert_refused("PERSISTED_QUERY_NOT_FOUND");
    }
    let r = send(post(
        &app,
        json!({ "query": doc, "variables": { "id": id }, "extensions": apq(&h) }),
    ))
    .await;
    assert_no_errors(&r.body);
    for body in [
        format!("{{{ext},{vars}}}"),
        format!("{{{vars},{ext}}}"),
        format!(r#"{{ {vars} , {ext} }}"#),
        format!(r#"{{"operationName":"ApqOrder",{vars},{ext}}}"#),
    ] {
        let r = send(raw(body.clone())).await;
        assert_eq!(r.status, 200, "{body}: {:#}", r.body);
        assert_eq!(
            r.body["data"]["meal"]["name"], "Ramen",
            "{body}: {:#}",
            r.body
        );
    }
    // No variables: the operation needs `$id`.
    let r = send(raw(format!("{{{ext}}}"))).await;
    assert_eq!(error_code(&r.body), "BAD_USER_INPUT", "{:#}", r.body);
    // `extensions` twice.
    let r = send(raw(format!("{{{ext},{vars},{ext}}}"))).await;
    assert_eq!(r.status, 400, "{:#}", r.body);
    assert!(r.body["errors"][0]["message"]
        .as_str()
        .unwrap()
        .contains("duplicate field `extensions`"));
}

crate::scenario! {
    backends: [embedded, postgres_redis];
    a_persisted_query_runs_whatever_the_order_and_spacing_of_its_body,
    a_persisted_query_is_registered_on_first_use_and_then_runs_by_its_hash,
    a_hash_that_is_not_the_documents_own_is_refused_and_registers_nothing,
    a_malformed_persisted_query_extension_is_a_400_with_a_code,
    a_warm_meal_read_is_answered_from_the_memo_and_follows_every_write,
    unversioned_sql_is_never_memoized_and_the_viewers_answers_only_per_credential,
    get_runs_queries_and_refuses_mutations_with_405,
    post_honours_content_type_and_accept,
    graphql_response_json_answers_a_refused_request_with_400_and_no_data,
    a_client_registration_expires_after_the_ttl_and_an_operators_does_not =>
        |s| s.persisted_ttl_secs = 1,
    in_allow_list_mode_only_documents_the_operator_registered_run =>
        |s| s.persisted_only = true,
    with_the_memo_off_reads_work_and_nothing_is_memoized =>
        |s| s.response_memo_entries = 0,
    register_queries_feeds_a_running_allow_list => |s| s.persisted_only = true,
}

crate::scenario! {
    backends: replicas;
    a_query_registered_through_one_replica_runs_by_hash_on_the_others,
    a_write_on_another_replica_is_seen_through_the_memo,
}
