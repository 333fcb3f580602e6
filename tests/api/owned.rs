//! A viewer's own lists (`credentials`, `specs`, `specVersions`, `me`, `savedRolls`,
//! `characters`), memoized per
//! credential under the version of the viewer's own rows (docs/cache-consistency.md, "A
//! viewer's own data"): a warm answer is served with no SQL, only to the credential it was
//! computed for, and a read that starts after an acknowledged write of the viewer's rows —
//! on any replica — sees it: a new, rotated or deleted API key, a new or deleted spec, a
//! logout, an expired session.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use parking_lot::Mutex;
use serde_json::{json, Value};

use crate::support::*;

const SQL: &str = "arena_sql_queries_total{caller=\"request\"}";
const MEMO_HITS: &str = "arena_response_memo_total{result=\"hit\"}";

const MINE: &str = "{ me { username } credentials { id publicKey } specs { id version revision } \
                    specVersions(id: \"engine\") { version } }";

/// Runs `query` with `auth` on `app` until its answer comes from the memo with no SQL
/// statement, and returns that answer.
async fn warm_as(app: &TestApp, auth: &str, query: &str) -> Value {
    let last = Arc::new(Mutex::new(Value::Null));
    wait_until(Duration::from_secs(10), || async {
        let (sql, hits) = (app.metric(SQL).await, app.metric(MEMO_HITS).await);
        let r = app.gql_auth(Some(auth.to_owned()), query, json!({})).await;
        assert_no_errors(&r);
        *last.lock() = r;
        app.metric(SQL).await == sql && app.metric(MEMO_HITS).await > hits
    })
    .await;
    let last = last.lock().clone();
    last["data"].clone()
}

async fn mine(app: &TestApp, auth: &str) -> Value {
    let r = app.gql_auth(Some(auth.to_owned()), MINE, json!({})).await;
    assert_no_errors(&r);
    r["data"].clone()
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

fn basic(public_key: &str, secret: &str) -> String {
    let pair = format!("{public_key}:{secret}");
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(pair)
    )
}

/// Creates (or rotates) `token`'s credential `id`: its `Authorization: Basic` value.
async fn create_key(app: &TestApp, token: &str, id: &str) -> String {
    let r = app
        .gql_as(
            token,
            "mutation($id: String!) { createCredential(id: $id) { credential { publicKey } secretKey } }",
            json!({ "id": id }),
        )
        .await;
    assert_no_errors(&r);
    let c = &r["data"]["createCredential"];
    basic(
        c["credential"]["publicKey"].as_str().unwrap(),
        c["secretKey"].as_str().unwrap(),
    )
}

async fn put_spec(app: &TestApp, token: &str, version: &str) {
    let r = app
        .gql_as(
            token,
            "mutation($v: String!) { putSpec(input: { id: \"engine\", version: $v, modelCount: 3 }) { id } }",
            json!({ "v": version }),
        )
        .await;
    assert_no_errors(&r);
}

fn ids(list: &Value) -> Vec<String> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap().to_owned())
        .collect()
}

/// Alice's lists warm on replica B; each of her writes on A shows in B's very next read,
/// and Bob, asking the same query on B, only ever gets his own.
async fn a_viewers_warm_lists_on_another_replica_show_each_of_their_writes(app: TestApp) {
    let b = app.spawn_replica().await;
    let alice = app.login_new_user("alice").await;
    let bob = app.login_new_user("bob").await;
    let (alice_auth, bob_auth) = (bearer(&alice), bearer(&bob));

    let warmed = warm_as(&b, &alice_auth, MINE).await;
    assert_eq!(warmed["me"]["username"], "alice");
    assert_eq!(ids(&warmed["credentials"]), Vec::<String>::new());

    create_key(&app, &alice, "ci").await;
    let read = mine(&b, &alice_auth).await;
    assert_eq!(ids(&read["credentials"]), ["ci"], "a new API key");
    let before = read["credentials"][0]["publicKey"].clone();

    warm_as(&b, &alice_auth, MINE).await;
    create_key(&app, &alice, "ci").await;
    let rotated = mine(&b, &alice_auth).await["credentials"][0]["publicKey"].clone();
    assert_ne!(rotated, before, "a rotation");

    warm_as(&b, &alice_auth, MINE).await;
    put_spec(&app, &alice, "1.0").await;
    let read = mine(&b, &alice_auth).await;
    assert_eq!(read["specs"][0]["version"], "1.0", "a new spec");
    warm_as(&b, &alice_auth, MINE).await;
    put_spec(&app, &alice, "1.1").await;
    let read = mine(&b, &alice_auth).await;
    assert_eq!(read["specs"][0]["revision"], 2, "a new version");
    assert_eq!(
        read["specVersions"],
        json!([{ "version": "1.1" }, { "version": "1.0" }])
    );

    // The memo never answers one viewer with another's data.
    let bobs = warm_as(&b, &bob_auth, MINE).await;
    assert_eq!(bobs["me"]["username"], "bob");
    assert_eq!(bobs["credentials"], json!([]));
    assert_eq!(bobs["specs"], json!([]));
    assert_eq!(
        warm_as(&b, &alice_auth, MINE).await["me"]["username"],
        "alice"
    );

    let r = app
        .gql_as(&alice, "mutation { deleteSpec(id: \"engine\") }", json!({}))
        .await;
    assert_no_errors(&r);
    assert_eq!(
        mine(&b, &alice_auth).await["specs"],
        json!([]),
        "a deleted spec"
    );
    warm_as(&b, &alice_auth, MINE).await;
    let r = app
        .gql_as(
            &alice,
            "mutation { deleteCredential(id: \"ci\") }",
            json!({}),
        )
        .await;
    assert_no_errors(&r);
    assert_eq!(
        mine(&b, &alice_auth).await["credentials"],
        json!([]),
        "a deleted key"
    );

    // A logout on A: B's next request with the token is refused, not answered from the memo.
    warm_as(&b, &alice_auth, MINE).await;
    let r = app.gql_as(&alice, "mutation { logout }", json!({})).await;
    assert_no_errors(&r);
    let r = b.gql_auth(Some(alice_auth), MINE, json!({})).await;
    assert_eq!(error_code(&r), "UNAUTHENTICATED", "{r}");
    assert_eq!(mine(&b, &bob_auth).await["me"]["username"], "bob");
    b.stop().await;
}

/// An API key's answers warm on B; deleting the key on A makes B refuse it at once, and a
/// rotation refuses the old secret.
async fn an_api_keys_warm_answers_end_with_the_key_on_every_replica(app: TestApp) {
    let b = app.spawn_replica().await;
    let alice = app.login_new_user("alice").await;
    let key = create_key(&app, &alice, "deploy").await;
    assert_eq!(warm_as(&b, &key, MINE).await["me"]["username"], "alice");
    let rotated = create_key(&app, &alice, "deploy").await;
    let r = b.gql_auth(Some(key), MINE, json!({})).await;
    assert_eq!(error_code(&r), "UNAUTHENTICATED", "the old secret: {r}");
    assert_eq!(warm_as(&b, &rotated, MINE).await["me"]["username"], "alice");
    let r = app
        .gql_as(&alice, "mutation { deleteAllCredentials }", json!({}))
        .await;
    assert_no_errors(&r);
    let r = b.gql_auth(Some(rotated), MINE, json!({})).await;
    assert_eq!(error_code(&r), "UNAUTHENTICATED", "a deleted key: {r}");
    b.stop().await;
}

/// Saved rolls and characters live in the user's document, whose copy in the cache tier is
/// versioned: warm, they are answered from the memo too, and a change made on A shows in B's
/// next read.
async fn saved_rolls_and_characters_warm_on_one_replica_show_changes_made_on_another(app: TestApp) {
    const DICE: &str = "{ savedRolls { name expression } characters { name sheet } }";
    let b = app.spawn_replica().await;
    let dana = app.login_new_user("dana").await;
    let auth = bearer(&dana);
    let save = "mutation($n: String!) { saveRoll(name: $n, expression: \"2d6\") { name } }";
    assert_no_errors(&app.gql_as(&dana, save, json!({ "n": "fireball" })).await);
    let warmed = warm_as(&b, &auth, DICE).await;
    assert_eq!(warmed["savedRolls"][0]["name"], "fireball");

    assert_no_errors(&app.gql_as(&dana, save, json!({ "n": "heal" })).await);
    let r = b.gql_auth(Some(auth.clone()), DICE, json!({})).await;
    assert_eq!(r["data"]["savedRolls"].as_array().unwrap().len(), 2, "{r}");

    warm_as(&b, &auth, DICE).await;
    let set = "mutation { setCharacter(name: \"Vex\", sheet: { level: 3 }) { name } }";
    assert_no_errors(&app.gql_as(&dana, set, json!({})).await);
    let r = b.gql_auth(Some(auth.clone()), DICE, json!({})).await;
    assert_eq!(r["data"]["characters"][0]["sheet"]["level"], 3, "{r}");
    b.stop().await;
}

crate::scenario! {
    backends: replicas;
    a_viewers_warm_lists_on_another_replica_show_each_of_their_writes,
    saved_rolls_and_characters_warm_on_one_replica_show_changes_made_on_another,
    an_api_keys_warm_answers_end_with_the_key_on_every_replica,
}

/// On one instance, embedded or not: a viewer's warm lists make no SQL statement, and once
/// the session's end has passed its memoized answers are not served.
async fn a_memoized_answer_ends_with_its_session(app: TestApp) {
    let r = app
        .gql(
            "mutation { createUser(username: \"carol\", password: \"password123\") { id } }",
            json!({}),
        )
        .await;
    assert_no_errors(&r);
    let r = app
        .gql(
            "mutation { login(username: \"carol\", password: \"password123\") { token expiresAt } }",
            json!({}),
        )
        .await;
    assert_no_errors(&r);
    let token = r["data"]["login"]["token"].as_str().unwrap().to_owned();
    let expires: chrono::DateTime<chrono::Utc> = r["data"]["login"]["expiresAt"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(
        warm_as(&app, &bearer(&token), MINE).await["me"]["username"],
        "carol"
    );
    wait_until(Duration::from_secs(10), || async {
        chrono::Utc::now() > expires
    })
    .await;
    let r = app.gql_as(&token, MINE, json!({})).await;
    assert_eq!(error_code(&r), "UNAUTHENTICATED", "an expired session: {r}");
}

crate::scenario! {
    backends: [embedded, postgres_redis, postgres_redis_cluster];
    settings: |s| s.session_ttl_secs = 3;
    a_memoized_answer_ends_with_its_session,
}

/// On a shared cache, a credential known under the current version of its user's rows is
/// resolved with no SQL (here `storageSet`, which itself touches only the storage tier), on
/// the replica that knows it; a logout on another replica replaces the version first, so the
/// very next request with the token is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_known_credential_costs_no_sql_until_its_user_s_rows_change() {
    let Some(a) = TestApp::builder(Backends::Real).try_spawn().await else {
        return;
    };
    let b = a.spawn_replica().await;
    let alice = a.login_new_user("alice").await;
    let set = "mutation { storageSet(entries: [{ key: \"k\", value: \"v\" }]) }";
    // The first request leaves a hint, the second the viewer under a version read before
    // its lookup; from the third on the version vouches for it.
    wait_until(Duration::from_secs(10), || async {
        let before = b.metric(SQL).await;
        assert_no_errors(&b.gql_as(&alice, set, json!({})).await);
        b.metric(SQL).await == before
    })
    .await;
    let before = b.metric(SQL).await;
    for _ in 0..5 {
        assert_no_errors(&b.gql_as(&alice, set, json!({})).await);
    }
    assert_eq!(b.metric(SQL).await, before, "no SQL for 5 known requests");

    assert_no_errors(&a.gql_as(&alice, "mutation { logout }", json!({})).await);
    let r = b.gql_as(&alice, set, json!({})).await;
    assert_eq!(error_code(&r), "UNAUTHENTICATED", "{r:#}");
}
