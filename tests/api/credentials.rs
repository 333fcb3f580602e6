//! Credentials and API-key authentication over HTTP and WebSocket (SPEC §6 and §2): every
//! access pattern, per-user isolation, rotation and deletion on every replica, and the secret
//! key kept out of responses, the database and the log.

use std::time::Duration;

use base64::Engine;
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

use crate::support::*;

const CREATE: &str = "mutation($id: String!) {
    createCredential(id: $id) { credential { id publicKey salt createdAt } secretKey }
}";

/// A key as `createCredential` returned it.
struct Key {
    public_key: String,
    secret: String,
}

impl Key {
    fn basic(&self) -> String {
        basic(&self.public_key, &self.secret)
    }
}

async fn create(app: &TestApp, token: &str, id: &str) -> Key {
    let r = app.gql_as(token, CREATE, json!({ "id": id })).await;
    assert_no_errors(&r);
    let c = &r["data"]["createCredential"];
    assert_eq!(c["credential"]["id"], id);
    Key {
        public_key: c["credential"]["publicKey"].as_str().unwrap().to_owned(),
        secret: c["secretKey"].as_str().unwrap().to_owned(),
    }
}

async fn query(app: &TestApp, token: &str, q: &str) -> Value {
    let r = app.gql_as(token, q, json!({})).await;
    assert_no_errors(&r);
    r["data"].clone()
}

/// `me { username }` with a raw `Authorization` value: the username, or the error code.
async fn me_with(app: &TestApp, auth: String) -> Result<String, String> {
    let r = app
        .gql_auth(Some(auth), "{ me { username } }", json!({}))
        .await;
    match r["data"]["me"]["username"].as_str() {
        Some(u) => Ok(u.to_owned()),
        None => Err(error_code(&r).to_owned()),
    }
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The next JSON message, or `Err` when the server closed the connection instead.
async fn next_json(ws: &mut Ws) -> Result<Value, String> {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => return Ok(serde_json::from_str(&t).unwrap()),
            Ok(Some(Ok(Message::Close(frame)))) => return Err(format!("closed: {frame:?}")),
            Ok(Some(Ok(_))) => continue,
            Ok(Some(Err(e))) => return Err(format!("error: {e}")),
            Ok(None) => return Err("stream ended".into()),
            Err(_) => panic!("no answer on the WebSocket within 10 s"),
        }
    }
}

/// Over `graphql-transport-ws`: `connection_init` with `auth`, then `{ me { username } }`.
/// The username, or `Err` with what the server answered instead.
async fn me_over_websocket(app: &TestApp, auth: String) -> Result<String, String> {
    let mut req = app.ws_url().into_client_request().unwrap();
    req.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        "graphql-transport-ws".parse().unwrap(),
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(req)
        .await
        .expect("WebSocket connects");
    let send = |v: Value| Message::Text(v.to_string().into());
    ws.send(send(
        json!({ "type": "connection_init", "payload": { "authorization": auth } }),
    ))
    .await
    .unwrap();
    let ack = next_json(&mut ws).await?;
    if ack["type"] != "connection_ack" {
        return Err(format!("refused: {ack}"));
    }
    ws.send(send(json!({ "id": "1", "type": "subscribe",
                         "payload": { "query": "{ me { username } }" } })))
        .await
        .unwrap();
    let msg = next_json(&mut ws).await.expect("an answer to the query");
    assert_eq!(msg["type"], "next", "{msg}");
    msg["payload"]["data"]["me"]["username"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| format!("no viewer: {msg}"))
}

async fn create_credential_returns_a_public_key_and_a_secret_key_once(app: TestApp) {
    let alice = app.login_new_user("alice").await;
    let r = app.gql_as(&alice, CREATE, json!({ "id": "ci" })).await;
    assert_no_errors(&r);
    let c = &r["data"]["createCredential"];
    let public_key = c["credential"]["publicKey"].as_str().unwrap();
    let secret = c["secretKey"].as_str().unwrap();
    assert!(public_key.starts_with("ak_"), "{public_key}");
    let secret_bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(secret)
        .expect("the secret key is URL-safe base64");
    assert!(secret_bytes.len() >= 32, "at least 32 random bytes");
    assert_eq!(c["credential"]["salt"].as_str().unwrap().len(), 32);

    let other = create(&app, &alice, "deploy").await;
    assert_ne!(other.public_key, public_key);
    assert_ne!(other.secret, secret);
}

async fn credentials_lists_the_viewers_keys_and_credential_reads_one(app: TestApp) {
    let alice = app.login_new_user("alice").await;
    let b = create(&app, &alice, "b-key").await;
    let a = create(&app, &alice, "a-key").await;
    let d = query(
        &app,
        &alice,
        "{ credentials { id publicKey salt createdAt } }",
    )
    .await;
    let list = d["credentials"].as_array().unwrap();
    assert_eq!(list.len(), 2);
    assert_eq!(list[0]["id"], "a-key");
    assert_eq!(list[0]["publicKey"], a.public_key.as_str());
    assert_eq!(list[1]["publicKey"], b.public_key.as_str());
    let d = query(
        &app,
        &alice,
        "{ one: credential(id: \"b-key\") { id publicKey } none: credential(id: \"zzz\") { id } }",
    )
    .await;
    assert_eq!(d["one"]["publicKey"], b.public_key.as_str());
    assert!(d["none"].is_null());
}

async fn create_credential_again_rotates_the_key_and_the_old_one_stops_working(app: TestApp) {
    let alice = app.login_new_user("alice").await;
    let old = create(&app, &alice, "ci").await;
    assert_eq!(me_with(&app, old.basic()).await, Ok("alice".into()));
    let new = create(&app, &alice, "ci").await;
    assert_ne!(new.public_key, old.public_key);
    assert_ne!(new.secret, old.secret);
    assert_eq!(
        me_with(&app, old.basic()).await,
        Err("UNAUTHENTICATED".into())
    );
    // The old secret with the new public key does not work either.
    assert_eq!(
        me_with(&app, basic(&new.public_key, &old.secret)).await,
        Err("UNAUTHENTICATED".into())
    );
    assert_eq!(me_with(&app, new.basic()).await, Ok("alice".into()));
    let d = query(&app, &alice, "{ credentials { id publicKey } }").await;
    assert_eq!(
        d["credentials"],
        json!([{ "id": "ci", "publicKey": new.public_key }]),
        "a rotation replaces the credential"
    );
}

async fn delete_credential_removes_one_key_and_delete_all_credentials_the_rest(app: TestApp) {
    let alice = app.login_new_user("alice").await;
    let one = create(&app, &alice, "one").await;
    let two = create(&app, &alice, "two").await;
    create(&app, &alice, "three").await;
    let d = query(&app, &alice, "mutation { deleteCredential(id: \"one\") }").await;
    assert_eq!(d["deleteCredential"], true);
    let d = query(&app, &alice, "mutation { deleteCredential(id: \"one\") }").await;
    assert_eq!(d["deleteCredential"], false, "already gone");
    assert_eq!(
        me_with(&app, one.basic()).await,
        Err("UNAUTHENTICATED".into())
    );
    assert_eq!(me_with(&app, two.basic()).await, Ok("alice".into()));
    let d = query(
        &app,
        &alice,
        "{ credential(id: \"one\") { id } credentials { id } }",
    )
    .await;
    assert!(d["credential"].is_null());
    assert_eq!(
        d["credentials"],
        json!([{ "id": "three" }, { "id": "two" }])
    );

    let d = query(&app, &alice, "mutation { deleteAllCredentials }").await;
    assert_eq!(d["deleteAllCredentials"], 2);
    assert_eq!(
        me_with(&app, two.basic()).await,
        Err("UNAUTHENTICATED".into())
    );
    let d = query(&app, &alice, "{ credentials { id } }").await;
    assert_eq!(d["credentials"], json!([]));
}

async fn another_user_can_neither_read_list_nor_delete_someone_elses_credentials(app: TestApp) {
    let alice = app.login_new_user("alice").await;
    let bob = app.login_new_user("bob").await;
    let key = create(&app, &alice, "ci").await;
    let d = query(
        &app,
        &bob,
        "{ credential(id: \"ci\") { id } credentials { id } }",
    )
    .await;
    assert!(d["credential"].is_null());
    assert_eq!(d["credentials"], json!([]));
    let d = query(
        &app,
        &bob,
        "mutation { deleteCredential(id: \"ci\") deleteAllCredentials }",
    )
    .await;
    assert_eq!(d["deleteCredential"], false);
    assert_eq!(d["deleteAllCredentials"], 0);
    // Bob's own "ci" is a different key; Alice's still works and still names Alice.
    let bobs = create(&app, &bob, "ci").await;
    assert_ne!(bobs.public_key, key.public_key);
    assert_eq!(me_with(&app, key.basic()).await, Ok("alice".into()));
    assert_eq!(me_with(&app, bobs.basic()).await, Ok("bob".into()));
    let d = query(&app, &alice, "{ credential(id: \"ci\") { publicKey } }").await;
    assert_eq!(d["credential"]["publicKey"], key.public_key.as_str());
}

async fn an_api_key_authenticates_requests_over_http(app: TestApp) {
    let alice = app.login_new_user("alice").await;
    let key = create(&app, &alice, "ci").await;
    assert_eq!(me_with(&app, key.basic()).await, Ok("alice".into()));
    // The key acts as Alice: it reads and writes her specs.
    let r = app
        .gql_auth(
            Some(key.basic()),
            "mutation { putSpec(input: { id: \"via-key\", version: \"1\", modelCount: 2 }) { id } }",
            json!({}),
        )
        .await;
    assert_no_errors(&r);
    let d = query(&app, &alice, "{ specs { id } credentials { id } }").await;
    assert_eq!(d["specs"], json!([{ "id": "via-key" }]));
    // An API key cannot log out (there is no session to end).
    let r = app
        .gql_auth(Some(key.basic()), "mutation { logout }", json!({}))
        .await;
    assert_eq!(error_code(&r), "BAD_USER_INPUT");
}

async fn wrong_unknown_and_malformed_api_keys_are_unauthenticated(app: TestApp) {
    let alice = app.login_new_user("alice").await;
    let key = create(&app, &alice, "ci").await;
    for auth in [
        basic(&key.public_key, "wrong-secret"),
        basic(&key.public_key, ""),
        basic("ak_unknown", &key.secret),
        basic("", ""),
        "Basic not-base64!!".to_owned(),
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("no-colon-here")
        ),
    ] {
        assert_eq!(
            me_with(&app, auth.clone()).await,
            Err("UNAUTHENTICATED".into()),
            "{auth}"
        );
    }
}

/// A made-up key costs no hash when its public key has a shape no key has (the shape is
/// public, so that tells nothing); a well-formed public key that does not exist costs one
/// dummy hash on the hashing threads, as a wrong secret does; a key verified recently costs
/// none. Each refused check counts against the address's budget, and past it the answer is
/// `RATE_LIMITED`.
async fn made_up_api_keys_cost_a_hash_only_where_skipping_it_would_tell(app: TestApp) {
    let alice = app.login_new_user("alice").await;
    let key = create(&app, &alice, "ci").await;
    let app = &app;
    let cost = |auth: String| async move {
        let before = app.metric("arena_hashes_total").await;
        let answer = me_with(app, auth).await;
        (answer, app.metric("arena_hashes_total").await - before)
    };
    let unauthenticated = Err("UNAUTHENTICATED".to_owned());
    assert_eq!(
        cost(basic("ak_madeup", "secret")).await,
        (unauthenticated.clone(), 0.0)
    );
    assert_eq!(
        cost(basic("not-a-key", "x")).await,
        (unauthenticated.clone(), 0.0)
    );
    let well_formed = format!("ak_{}", "A".repeat(24));
    assert_eq!(
        cost(basic(&well_formed, "secret")).await,
        (unauthenticated.clone(), 1.0)
    );
    assert_eq!(
        cost(basic(&key.public_key, "wrong-secret")).await,
        (unauthenticated.clone(), 1.0)
    );
    assert_eq!(cost(key.basic()).await, (Ok("alice".into()), 1.0));
    assert_eq!(
        cost(key.basic()).await,
        (Ok("alice".into()), 0.0),
        "verified before"
    );
    // Four refused checks so far; the budget is five.
    assert_eq!(cost(basic("ak_madeup", "secret")).await.0, unauthenticated);
    assert_eq!(
        cost(basic("ak_madeup", "secret")).await,
        (Err("RATE_LIMITED".into()), 0.0)
    );
    // A key this instance verified already still works from the same address: it needs no
    // check.
    assert_eq!(me_with(app, key.basic()).await, Ok("alice".into()));
}

async fn an_api_key_authenticates_over_the_websocket(app: TestApp) {
    let alice = app.login_new_user("alice").await;
    let key = create(&app, &alice, "ws").await;
    assert_eq!(
        me_over_websocket(&app, key.basic()).await,
        Ok("alice".into())
    );
    let wrong = me_over_websocket(&app, basic(&key.public_key, "wrong")).await;
    assert!(
        wrong.is_err(),
        "a wrong secret is refused at connection_init: {wrong:?}"
    );
    create(&app, &alice, "ws").await;
    let rotated = me_over_websocket(&app, key.basic()).await;
    assert!(rotated.is_err(), "a rotated key is refused: {rotated:?}");
}

/// The `me` answer to operation `id` on an open connection: the username, or the error code.
async fn me_on(ws: &mut crate::support::ws::WsClient, id: &str) -> Result<String, String> {
    ws.subscribe(id, "{ me { username } }", json!({})).await;
    let m = loop {
        let m = ws
            .next_message(Duration::from_secs(10))
            .await
            .expect("an answer to the operation");
        if m.id == id && m.kind != "complete" {
            break m;
        }
    };
    if let Some(name) = m.payload["data"]["me"]["username"].as_str() {
        return Ok(name.to_owned());
    }
    let errors = if m.payload.is_array() {
        m.payload.clone()
    } else {
        m.payload["errors"].clone()
    };
    Err(errors[0]["extensions"]["code"]
        .as_str()
        .unwrap_or("no code")
        .to_owned())
}

async fn an_open_websocket_checks_its_key_again_at_every_operation(app: TestApp) {
    let alice = app.login_new_user("alice").await;
    let key = create(&app, &alice, "ws").await;
    let mut ws = crate::support::ws::connect(
        &app.ws_url(),
        "graphql-transport-ws",
        json!({ "authorization": key.basic() }),
    )
    .await;
    assert_eq!(me_on(&mut ws, "1").await, Ok("alice".into()));
    // Rotated over HTTP: the connection's next operation is refused.
    create(&app, &alice, "ws").await;
    assert_eq!(me_on(&mut ws, "2").await, Err("UNAUTHENTICATED".into()));
    ws.close().await;

    // Deleted: likewise.
    let key = create(&app, &alice, "ws").await;
    let mut ws = crate::support::ws::connect(
        &app.ws_url(),
        "graphql-transport-ws",
        json!({ "authorization": key.basic() }),
    )
    .await;
    assert_eq!(me_on(&mut ws, "1").await, Ok("alice".into()));
    let r = app
        .gql_as(
            &alice,
            "mutation { deleteCredential(id: \"ws\") }",
            json!({}),
        )
        .await;
    assert_no_errors(&r);
    assert_eq!(me_on(&mut ws, "2").await, Err("UNAUTHENTICATED".into()));
    ws.close().await;
}

async fn rotation_and_deletion_take_effect_at_once_on_another_replica(app: TestApp) {
    let replica = app.spawn_replica().await;
    let alice = app.login_new_user("alice").await;
    let old = create(&app, &alice, "ci").await;
    // Both replicas have verified (and may remember) the old key.
    assert_eq!(me_with(&app, old.basic()).await, Ok("alice".into()));
    assert_eq!(me_with(&replica, old.basic()).await, Ok("alice".into()));
    assert_eq!(
        me_over_websocket(&replica, old.basic()).await,
        Ok("alice".into())
    );

    let new = create(&app, &alice, "ci").await;
    assert_eq!(
        me_with(&replica, old.basic()).await,
        Err("UNAUTHENTICATED".into())
    );
    assert!(me_over_websocket(&replica, old.basic()).await.is_err());
    assert_eq!(me_with(&replica, new.basic()).await, Ok("alice".into()));

    let r = replica
        .gql_as(
            &alice,
            "mutation { deleteCredential(id: \"ci\") }",
            json!({}),
        )
        .await;
    assert_no_errors(&r);
    assert_eq!(
        me_with(&app, new.basic()).await,
        Err("UNAUTHENTICATED".into())
    );
    assert_eq!(
        me_with(&replica, new.basic()).await,
        Err("UNAUTHENTICATED".into())
    );
    replica.stop().await;
}

async fn the_secret_key_never_appears_in_a_later_response_or_in_the_database(app: TestApp) {
    let alice = app.login_new_user("alice").await;
    let key = create(&app, &alice, "ci").await;
    for q in [
        "{ credentials { id publicKey salt createdAt } }",
        "{ credential(id: \"ci\") { id publicKey salt createdAt } }",
        "{ me { id username createdAt } }",
    ] {
        for auth in [format!("Bearer {alice}"), key.basic()] {
            let r = app.gql_auth(Some(auth), q, json!({})).await;
            assert_no_errors(&r);
            assert!(
                !r.to_string().contains(&key.secret),
                "{q} shows the secret: {r}"
            );
        }
    }
    let r = app
        .gql_as(
            &alice,
            "{ credential(id: \"ci\") { secretKey } }",
            json!({}),
        )
        .await;
    assert_eq!(
        error_code(&r),
        "BAD_USER_INPUT",
        "a credential has no secretKey field"
    );

    // Every column of the row, and the secret's hash is not a plain SHA-256 of it.
    use sea_orm::{ConnectionTrait, Statement};
    let db = &app.state.db;
    let rows = db
        .query_all(Statement::from_string(
            db.get_database_backend(),
            "SELECT credential_id, public_key, salt, secret_hash FROM credentials",
        ))
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    for col in ["credential_id", "public_key", "salt", "secret_hash"] {
        let v: String = rows[0].try_get("", col).unwrap();
        assert!(!v.contains(&key.secret), "column {col} holds the secret");
    }
    let hash: String = rows[0].try_get("", "secret_hash").unwrap();
    assert!(hash.starts_with("pbkdf2-sha256$"), "{hash}");
    let salt: String = rows[0].try_get("", "salt").unwrap();
    assert!(
        hash.contains(&salt),
        "the hash is salted with the row's salt"
    );
}

async fn deleting_a_user_removes_their_specs_and_credentials(app: TestApp) {
    let alice = app.login_new_user("alice").await;
    let key = create(&app, &alice, "ci").await;
    let r = app
        .gql_as(
            &alice,
            "mutation { putSpec(input: { id: \"s\", version: \"1\", modelCount: 1 }) { id } }",
            json!({}),
        )
        .await;
    assert_no_errors(&r);
    let r = app
        .gql_as(
            &alice,
            "mutation { deleteUser(password: \"password123\") }",
            json!({}),
        )
        .await;
    assert_no_errors(&r);
    assert_eq!(
        me_with(&app, key.basic()).await,
        Err("UNAUTHENTICATED".into())
    );
    use sea_orm::{EntityTrait, PaginatorTrait};
    let db = &app.state.db;
    assert_eq!(
        entity::credential::Entity::find().count(db).await.unwrap(),
        0
    );
    assert_eq!(entity::spec::Entity::find().count(db).await.unwrap(), 0);
}

async fn credentials_need_a_signed_in_viewer_and_a_valid_id(app: TestApp) {
    for q in [
        "{ credentials { id } }",
        "mutation { createCredential(id: \"x\") { secretKey } }",
        "mutation { deleteAllCredentials }",
    ] {
        let r = app.gql(q, json!({})).await;
        assert_eq!(error_code(&r), "UNAUTHENTICATED", "{q}");
    }
    let alice = app.login_new_user("alice").await;
    for id in ["".to_owned(), "k".repeat(129)] {
        let r = app.gql_as(&alice, CREATE, json!({ "id": id })).await;
        assert_eq!(error_code(&r), "BAD_USER_INPUT");
        assert_eq!(r["errors"][0]["extensions"]["field"], "id");
    }
}

async fn every_credential_access_pattern_is_one_index_search(app: TestApp) {
    let alice = app.login_new_user("alice").await;
    for id in ["a", "b", "c"] {
        create(&app, &alice, id).await;
    }
    for sql in [
        // authentication: the key by its public half, with its owner
        "SELECT * FROM credentials c LEFT JOIN users u ON c.user_id = u.id WHERE c.public_key = 'ak_x'",
        // credentials, credential(id)
        "SELECT * FROM credentials WHERE user_id = 1 ORDER BY credential_id",
        "SELECT * FROM credentials WHERE user_id = 1 AND credential_id = 'a'",
        // createCredential (rotation), deleteCredential(id), deleteAllCredentials
        "UPDATE credentials SET salt = 'x' WHERE user_id = 1 AND credential_id = 'a'",
        "DELETE FROM credentials WHERE user_id = 1 AND credential_id = 'a'",
        "DELETE FROM credentials WHERE user_id = 1",
    ] {
        crate::support::sql::assert_indexed(&app, sql).await;
    }
}

crate::scenario! {
    backends: [embedded, postgres_redis];
    create_credential_returns_a_public_key_and_a_secret_key_once,
    credentials_lists_the_viewers_keys_and_credential_reads_one,
    create_credential_again_rotates_the_key_and_the_old_one_stops_working,
    delete_credential_removes_one_key_and_delete_all_credentials_the_rest,
    another_user_can_neither_read_list_nor_delete_someone_elses_credentials,
    an_api_key_authenticates_requests_over_http,
    wrong_unknown_and_malformed_api_keys_are_unauthenticated,
    an_api_key_authenticates_over_the_websocket,
    an_open_websocket_checks_its_key_again_at_every_operation,
    rotation_and_deletion_take_effect_at_once_on_another_replica,
    the_secret_key_never_appears_in_a_later_response_or_in_the_database,
    deleting_a_user_removes_their_specs_and_credentials,
    credentials_need_a_signed_in_viewer_and_a_valid_id,
    every_credential_access_pattern_is_one_index_search,
}

crate::scenario! {
    backends: [embedded, postgres_redis];
    made_up_api_keys_cost_a_hash_only_where_skipping_it_would_tell => |s| {
        s.address_max_failures = 5;
        s.throttle_delay_ms = 10;
    },
}

/// Runs the built `arena` binary with debug logging on a fresh SQLite file, returns its
/// address and a handle collecting everything it writes to stderr.
struct LoggedArena {
    child: std::process::Child,
    addr: String,
    log: std::sync::Arc<parking_lot::Mutex<String>>,
    reader: Option<std::thread::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn start_logged_arena() -> LoggedArena {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let db = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("arena.db").display()
    );
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_arena"))
        .env_clear()
        .env("ARENA_ADDR", "127.0.0.1:0")
        .env("DATABASE_URL", db)
        .env("ARENA_LOG", "debug")
        .env("ARENA_PBKDF2_ITERATIONS", "1000")
        .env("ARENA_SYNC_ENABLED", "false")
        .env("NO_COLOR", "1")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the arena binary starts");
    let stderr = child.stderr.take().unwrap();
    let log = std::sync::Arc::new(parking_lot::Mutex::new(String::new()));
    let (addr_tx, addr_rx) = std::sync::mpsc::channel::<String>();
    let reader = {
        let log = log.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let line = strip_ansi(&line);
                if line.contains("Arena is serving GraphQL") {
                    if let Some(addr) = line.split("addr=").nth(1) {
                        let addr = addr.split_whitespace().next().unwrap_or("").to_owned();
                        let _ = addr_tx.send(addr);
                    }
                }
                let mut log = log.lock();
                log.push_str(&line);
                log.push('\n');
            }
        })
    };
    let addr = addr_rx
        .recv_timeout(Duration::from_secs(60))
        .unwrap_or_else(|_| panic!("arena did not report its address; log:\n{}", log.lock()));
    LoggedArena {
        child,
        addr,
        log,
        reader: Some(reader),
        _dir: dir,
    }
}

impl LoggedArena {
    /// Stops the process and returns everything it logged.
    fn stop(mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        self.log.lock().clone()
    }
}

impl Drop for LoggedArena {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn the_secret_key_never_appears_in_the_log() {
    let arena = start_logged_arena();
    let url = format!("http://{}/graphql", arena.addr);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (key, rotated) = rt.block_on(async {
        let client = reqwest::Client::new();
        let gql = |auth: Option<String>, query: &'static str| {
            let client = client.clone();
            let url = url.clone();
            async move {
                let mut req = client.post(url).json(&json!({ "query": query }));
                if let Some(a) = auth {
                    req = req.header("Authorization", a);
                }
                req.send().await.unwrap().json::<Value>().await.unwrap()
            }
        };
        let r = gql(
            None,
            "mutation { createUser(username: \"alice\", password: \"password123\") { id } }",
        )
        .await;
        assert_no_errors(&r);
        let r = gql(
            None,
            "mutation { login(username: \"alice\", password: \"password123\") { token } }",
        )
        .await;
        let token = format!("Bearer {}", r["data"]["login"]["token"].as_str().unwrap());
        let created = |r: Value| {
            assert_no_errors(&r);
            let c = &r["data"]["createCredential"];
            Key {
                public_key: c["credential"]["publicKey"].as_str().unwrap().to_owned(),
                secret: c["secretKey"].as_str().unwrap().to_owned(),
            }
        };
        const CREATE_CI: &str =
            "mutation { createCredential(id: \"ci\") { credential { publicKey } secretKey } }";
        let key = created(gql(Some(token.clone()), CREATE_CI).await);
        let r = gql(Some(key.basic()), "{ me { username } }").await;
        assert_eq!(r["data"]["me"]["username"], "alice");
        let r = gql(
            Some(basic(&key.public_key, &format!("{}x", key.secret))),
            "{ me { username } }",
        )
        .await;
        assert!(r["errors"].is_array(), "a wrong secret is refused");
        let rotated = created(gql(Some(token.clone()), CREATE_CI).await);
        let r = gql(Some(key.basic()), "{ me { username } }").await;
        assert!(r["errors"].is_array(), "the rotated key is refused");
        let r = gql(Some(rotated.basic()), "{ credentials { id publicKey } }").await;
        assert_no_errors(&r);
        (key, rotated)
    });
    let log = arena.stop();
    assert!(
        log.contains("API key accepted") && log.contains(&key.public_key),
        "the capture holds the request's debug log:\n{log}"
    );
    assert!(log.contains("API key refused"), "{log}");
    for k in [&key, &rotated] {
        assert!(
            !log.contains(&k.secret),
            "the log holds a secret key:\n{log}"
        );
        let header = k.basic();
        let encoded = header.trim_start_matches("Basic ");
        assert!(
            !log.contains(encoded),
            "the log holds an Authorization header:\n{log}"
        );
    }
}
