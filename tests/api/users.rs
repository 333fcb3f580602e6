//! Users and sessions over HTTP (SPEC §3).

use arena::crypto;
use entity::user;
use sea_orm::{ActiveModelTrait, ColumnTrait, EntityTrait, QueryFilter, Set};
use std::time::Duration;

use serde_json::{json, Value};

use crate::support::*;

const LOGIN: &str = "mutation($u: String!, $p: String!) { login(username: $u, password: $p) { token expiresAt user { id username } } }";

async fn login(app: &TestApp, u: &str, p: &str) -> serde_json::Value {
    app.gql(LOGIN, json!({ "u": u, "p": p })).await
}

async fn a_new_user_can_sign_up_log_in_and_see_themselves(app: TestApp) {
    let token = app.login_new_user("alice").await;
    let r = app
        .gql_as(&token, "{ me { username createdAt } }", json!({}))
        .await;
    assert_no_errors(&r);
    assert_eq!(r["data"]["me"]["username"], "alice");
    let anon = app.gql("{ me { username } }", json!({})).await;
    assert!(anon["data"]["me"].is_null());
}

async fn sign_up_validates_the_username_and_password_and_refuses_a_taken_name(app: TestApp) {
    let q = "mutation($u: String!, $p: String!) { createUser(username: $u, password: $p) { id } }";
    let r = app.gql(q, json!({ "u": "ab", "p": "password123" })).await;
    assert_eq!(error_code(&r), "BAD_USER_INPUT");
    assert_eq!(r["errors"][0]["extensions"]["field"], "username");
    let r = app
        .gql(q, json!({ "u": "bad name!", "p": "password123" }))
        .await;
    assert_eq!(error_code(&r), "BAD_USER_INPUT");
    let r = app.gql(q, json!({ "u": "bob", "p": "short" })).await;
    assert_eq!(error_code(&r), "BAD_USER_INPUT");
    assert_eq!(r["errors"][0]["extensions"]["field"], "password");
    assert_no_errors(&app.gql(q, json!({ "u": "bob", "p": "password123" })).await);
    let r = app.gql(q, json!({ "u": "bob", "p": "password456" })).await;
    assert_eq!(error_code(&r), "CONFLICT");
    // The failed sign-ups left nothing behind: exactly one user exists.
    assert_eq!(
        user::Entity::find().all(&app.state.db).await.unwrap().len(),
        1
    );
}

async fn passwords_are_stored_as_salted_pbkdf2_never_in_clear(app: TestApp) {
    app.login_new_user("carol").await;
    let row = user::Entity::find()
        .filter(user::Column::Username.eq("carol"))
        .one(&app.state.db)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.salt.len(), 32);
    assert!(row.password_hash.starts_with("pbkdf2-sha256$1000$"));
    assert!(!row.password_hash.contains("password123"));
}

async fn a_wrong_password_and_an_unknown_user_get_the_same_answer(app: TestApp) {
    app.login_new_user("dave").await;
    let wrong = login(&app, "dave", "wrongpassword").await;
    let unknown = login(&app, "nobody", "wrongpassword").await;
    assert_eq!(error_code(&wrong), "UNAUTHENTICATED");
    assert_eq!(error_code(&unknown), "UNAUTHENTICATED");
    assert_eq!(error_message(&wrong), error_message(&unknown));
}

async fn repeated_failed_logins_are_refused_then_other_users_are_unaffected(app: TestApp) {
    app.login_new_user("erin").await;
    app.login_new_user("frank").await;
    let max = app.settings.login_max_failures;
    for _ in 0..max {
        let r = login(&app, "erin", "wrongpassword").await;
        assert_eq!(error_code(&r), "UNAUTHENTICATED");
    }
    // Locked out now, even with the right password.
    let r = login(&app, "erin", "password123").await;
    assert_eq!(error_code(&r), "RATE_LIMITED");
    // Another username is not throttled.
    assert_no_errors(&login(&app, "frank", "password123").await);
}

/// Twenty wrong passwords at once (parallel requests and one batch): each attempt is counted
/// before it is checked, so no more than the limit are ever checked.
async fn concurrent_wrong_passwords_are_all_counted(app: TestApp) {
    app.login_new_user("gina").await;
    let max = app.settings.login_max_failures as usize;
    let attempts = futures::future::join_all(
        (0..10)
            .map(|_| async { error_code(&login(&app, "gina", "wrongpassword").await).to_owned() }),
    )
    .await;
    let batch: Vec<Value> = (0..10)
        .map(|_| {
            json!({ "query": "mutation { login(username: \"gina\", password: \"wrongpassword\") { token } }" })
        })
        .collect();
    let batched: Vec<Value> = app
        .client
        .post(format!("{}/graphql", app.url))
        .json(&batch)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let codes: Vec<String> = attempts
        .into_iter()
        .chain(batched.iter().map(|r| error_code(r).to_owned()))
        .collect();
    let checked = codes.iter().filter(|c| *c == "UNAUTHENTICATED").count();
    let refused = codes.iter().filter(|c| *c == "RATE_LIMITED").count();
    assert_eq!(checked + refused, 20, "{codes:?}");
    assert!(
        checked <= max,
        "{checked} passwords were checked: {codes:?}"
    );
    assert_eq!(
        error_code(&login(&app, "gina", "password123").await),
        "RATE_LIMITED"
    );
}

/// Someone holding a session cannot guess the password without limit through
/// `changePassword` (or `deleteUser`): the same per-user count applies.
async fn password_guesses_through_change_password_are_limited(app: TestApp) {
    let token = app.login_new_user("hank").await;
    let q = "mutation($c: String!) { changePassword(currentPassword: $c, newPassword: \"another-password\") }";
    let max = app.settings.login_max_failures;
    for _ in 0..max {
        let r = app.gql_as(&token, q, json!({ "c": "wrong-guess" })).await;
        assert_eq!(error_code(&r), "BAD_USER_INPUT", "{r}");
    }
    let r = app.gql_as(&token, q, json!({ "c": "password123" })).await;
    assert_eq!(error_code(&r), "RATE_LIMITED", "{r}");
    let r = app
        .gql_as(
            &token,
            "mutation { deleteUser(password: \"password123\") }",
            json!({}),
        )
        .await;
    assert_eq!(error_code(&r), "RATE_LIMITED", "{r}");
}

/// The cache tier's keys under `prefix`. A page of `SCAN` can miss the command timeout on a
/// machine busy with the other suites: tried again then (a few times).
async fn scan(app: &TestApp, prefix: &str) -> Vec<String> {
    app.scan_keys(prefix).await
}

/// A flood of logins with made-up usernames leaves no key per name in the cache tier (issue
/// 14: each left `login_failures:<name>` behind, so anonymous requests grew its memory without
/// bound); they are counted under their client address alone.
async fn failed_logins_of_made_up_usernames_leave_no_key_per_name(app: TestApp) {
    for i in 0..10 {
        let r = login(&app, &format!("nobody{i}"), "wrongpassword").await;
        assert_eq!(error_code(&r), "UNAUTHENTICATED", "{r}");
    }
    let per_name = scan(&app, "login_failures:").await;
    assert_eq!(per_name, Vec::<String>::new());
    let per_address = scan(&app, "login_failures_from:").await;
    assert_eq!(per_address.len(), 1, "{per_address:?}");
    // An account's name still gets its counter (and its lockout, tested above).
    app.login_new_user("realname").await;
    login(&app, "realname", "wrongpassword").await;
    assert_eq!(
        scan(&app, "login_failures:").await,
        vec!["login_failures:realname".to_owned()]
    );
}

async fn a_legacy_sha256_hash_verifies_and_is_rehashed_on_login(app: TestApp) {
    let salt = crypto::new_salt();
    user::ActiveModel {
        username: Set("legacy".into()),
        salt: Set(salt.clone()),
        password_hash: Set(crypto::legacy_hash("oldpassword", &salt)),
        created_at: Set(chrono::Utc::now()),
        ..Default::default()
    }
    .insert(&app.state.db)
    .await
    .unwrap();
    assert_eq!(
        error_code(&login(&app, "legacy", "notthepassword").await),
        "UNAUTHENTICATED"
    );
    let r = login(&app, "legacy", "oldpassword").await;
    assert_no_errors(&r);
    let row = user::Entity::find()
        .filter(user::Column::Username.eq("legacy"))
        .one(&app.state.db)
        .await
        .unwrap()
        .unwrap();
    assert!(
        row.password_hash.starts_with("pbkdf2-sha256$"),
        "{}",
        row.password_hash
    );
    // And the new hash still verifies.
    assert_no_errors(&login(&app, "legacy", "oldpassword").await);
}

async fn logout_revokes_the_token_at_once(app: TestApp) {
    let token = app.login_new_user("gina").await;
    let r = app.gql_as(&token, "mutation { logout }", json!({})).await;
    assert_no_errors(&r);
    assert_eq!(r["data"]["logout"], true);
    let r = app.gql_as(&token, "{ me { username } }", json!({})).await;
    assert_eq!(error_code(&r), "UNAUTHENTICATED");
    let r = app.gql_as(&token, "mutation { logout }", json!({})).await;
    assert_eq!(error_code(&r), "UNAUTHENTICATED");
}

async fn login_opens_the_users_session_document(app: TestApp) {
    let token = app.login_new_user("hank").await;
    let me = app.gql_as(&token, "{ me { id } }", json!({})).await;
    let id = me["data"]["me"]["id"].as_str().unwrap().to_owned();
    let doc = app.state.docs.get("sessions", &id).await.unwrap();
    let doc = doc.expect("login created the session document");
    assert!(doc["combatants"].is_array());
}

async fn changing_the_password_keeps_this_session_and_revokes_the_others(app: TestApp) {
    let t1 = app.login_new_user("ivy").await;
    let t2 = login(&app, "ivy", "password123").await["data"]["login"]["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let q = "mutation($c: String!, $n: String!) { changePassword(currentPassword: $c, newPassword: $n) }";
    let r = app
        .gql_as(&t1, q, json!({ "c": "wrongpassword", "n": "newpassword1" }))
        .await;
    assert_eq!(error_code(&r), "BAD_USER_INPUT");
    let r = app
        .gql_as(&t1, q, json!({ "c": "password123", "n": "newpassword1" }))
        .await;
    assert_no_errors(&r);
    assert_no_errors(&app.gql_as(&t1, "{ me { id } }", json!({})).await);
    assert_eq!(
        error_code(&app.gql_as(&t2, "{ me { id } }", json!({})).await),
        "UNAUTHENTICATED"
    );
    assert_eq!(
        error_code(&login(&app, "ivy", "password123").await),
        "UNAUTHENTICATED"
    );
    assert_no_errors(&login(&app, "ivy", "newpassword1").await);
}

async fn deleting_the_account_needs_the_password_and_removes_everything(app: TestApp) {
    let token = app.login_new_user("jack").await;
    let id = app.viewer_id(&token).await;
    // Data kept outside SQL: user data (saved rolls), key-value storage, the session document.
    assert_no_errors(
        &app.gql_as(
            &token,
            "mutation { saveRoll(name: \"attack\", expression: \"d20\") { name } }",
            json!({}),
        )
        .await,
    );
    assert_no_errors(
        &app.gql_as(
            &token,
            "mutation { storageSet(entries: [{ key: \"k\", value: \"v\" }]) }",
            json!({}),
        )
        .await,
    );
    let owner = arena::storage::service::owner(id);
    let data_key = arena::usage::service::user_key(id);
    assert!(app.state.storage.get(&owner, "k").await.unwrap().is_some());
    assert!(app
        .state
        .docs
        .get("user_data", &data_key)
        .await
        .unwrap()
        .is_some());
    assert!(app
        .state
        .docs
        .get("sessions", &id.to_string())
        .await
        .unwrap()
        .is_some());

    let q = "mutation($p: String!) { deleteUser(password: $p) }";
    let r = app.gql_as(&token, q, json!({ "p": "nope-nope" })).await;
    assert_eq!(error_code(&r), "BAD_USER_INPUT");
    assert!(
        app.state.storage.get(&owner, "k").await.unwrap().is_some(),
        "a refused delete removes nothing"
    );
    assert_no_errors(&app.gql_as(&token, q, json!({ "p": "password123" })).await);
    assert_eq!(app.state.storage.get(&owner, "k").await.unwrap(), None);
    assert_eq!(
        app.state.docs.get("user_data", &data_key).await.unwrap(),
        None
    );
    let copy = app
        .state
        .cache
        .leased_get_many(
            std::slice::from_ref(&data_key),
            "peek",
            std::time::Duration::from_secs(5),
        )
        .await
        .unwrap()
        .remove(0);
    assert!(
        copy.as_ref().is_none_or(|c| c.payload == "null"),
        "the cached copy is gone: {copy:?}"
    );
    assert_eq!(
        app.state
            .docs
            .get(arena::usage::service::USER_DATA_COLLECTION, &data_key)
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        app.state
            .docs
            .get("sessions", &id.to_string())
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        error_code(&app.gql_as(&token, "{ me { id } }", json!({})).await),
        "UNAUTHENTICATED"
    );
    assert_eq!(
        error_code(&login(&app, "jack", "password123").await),
        "UNAUTHENTICATED"
    );
    // The name is free again.
    app.login_new_user("jack").await;
}

async fn a_session_survives_a_restart_of_arena(app: TestApp) {
    let token = app.login_new_user("kate").await;
    let replica = app.spawn_replica().await;
    // Every replica sees the session.
    assert_no_errors(&replica.gql_as(&token, "{ me { id } }", json!({})).await);
    replica.stop().await;
    let restarted = app.restart().await;
    let r = restarted
        .gql_as(&token, "{ me { username } }", json!({}))
        .await;
    assert_no_errors(&r);
    assert_eq!(r["data"]["me"]["username"], "kate");
    restarted.stop().await;
}

async fn an_expired_session_is_refused(app: TestApp) {
    let token = app.login_new_user("liam").await;
    let r = app.gql_as(&token, "{ me { id } }", json!({})).await;
    assert_eq!(error_code(&r), "UNAUTHENTICATED");
}

async fn writes_need_a_viewer_and_a_bad_token_is_unauthenticated(app: TestApp) {
    let r = app.gql("mutation { logout }", json!({})).await;
    assert_eq!(error_code(&r), "UNAUTHENTICATED");
    let r = app.gql_as("not-a-token", "{ me { id } }", json!({})).await;
    assert_eq!(error_code(&r), "UNAUTHENTICATED");
    let r = app
        .gql_auth(Some("Digest abc".into()), "{ me { id } }", json!({}))
        .await;
    assert_eq!(error_code(&r), "UNAUTHENTICATED");
}

crate::scenario! {
    backends: [embedded, postgres_redis];
    a_new_user_can_sign_up_log_in_and_see_themselves,
    sign_up_validates_the_username_and_password_and_refuses_a_taken_name,
    passwords_are_stored_as_salted_pbkdf2_never_in_clear,
    a_wrong_password_and_an_unknown_user_get_the_same_answer,
    repeated_failed_logins_are_refused_then_other_users_are_unaffected,
    concurrent_wrong_passwords_are_all_counted,
    password_guesses_through_change_password_are_limited,
    failed_logins_of_made_up_usernames_leave_no_key_per_name,
    a_legacy_sha256_hash_verifies_and_is_rehashed_on_login,
    logout_revokes_the_token_at_once,
    login_opens_the_users_session_document,
    changing_the_password_keeps_this_session_and_revokes_the_others,
    deleting_the_account_needs_the_password_and_removes_everything,
    a_session_survives_a_restart_of_arena,
    an_expired_session_is_refused => |s| s.session_ttl_secs = 0,
    writes_need_a_viewer_and_a_bad_token_is_unauthenticated,
}

// ---- floods: the per-address budget and the bound on hashing (issue 16) ------------------

/// Clients are told apart by `X-Forwarded-For`, which the app trusts from 127.0.0.1.
fn behind_a_proxy(s: &mut arena::Settings) {
    s.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
    s.address_max_failures = 3;
    s.throttle_delay_ms = 10;
}

async fn login_from(app: &TestApp, from: &str, u: &str, p: &str) -> Value {
    app.gql_from(from, None, LOGIN, json!({ "u": u, "p": p }))
        .await
}

const ME: &str = "{ me { id } }";

/// Failed password and API-key checks from one address share one budget; past it, that
/// address is refused (even a right password, even another account), and other addresses
/// are not.
async fn failed_checks_from_one_address_are_refused_past_its_budget(app: TestApp) {
    app.login_new_user("olga").await;
    let a = "192.0.2.1";
    let codes = [
        error_code(&login_from(&app, a, "nobody1", "wrongpassword").await).to_owned(),
        error_code(&login_from(&app, a, "olga", "wrongpassword").await).to_owned(),
        error_code(
            &app.gql_from(a, Some(basic("ak_madeup", "secret")), ME, json!({}))
                .await,
        )
        .to_owned(),
    ];
    assert_eq!(codes, ["UNAUTHENTICATED"; 3]);
    let r = login_from(&app, a, "olga", "password123").await;
    assert_eq!(error_code(&r), "RATE_LIMITED", "{r}");
    assert!(error_message(&r).contains("from this address"), "{r}");
    let r = app
        .gql_from(a, Some(basic("ak_madeup", "secret")), ME, json!({}))
        .await;
    assert_eq!(error_code(&r), "RATE_LIMITED", "{r}");
    // Another address signs in at once (olga's own count is at one failure).
    assert_no_errors(&login_from(&app, "192.0.2.2", "olga", "password123").await);
}

/// A successful check gives its attempt back: many people signing in from one address (an
/// office behind one NAT) never use up its budget.
async fn successful_checks_do_not_use_up_the_address_budget(app: TestApp) {
    app.login_new_user("pia").await;
    for _ in 0..10 {
        assert_no_errors(&login_from(&app, "192.0.2.3", "pia", "password123").await);
    }
}

/// Without trusted proxies, `X-Forwarded-For` proves nothing: every request from 127.0.0.1
/// shares 127.0.0.1's budget, whatever it claims.
async fn x_forwarded_for_counts_only_from_a_trusted_proxy(app: TestApp) {
    assert!(app.settings.trusted_proxies.is_empty());
    for i in 0..3 {
        let from = format!("198.51.100.{i}");
        let r = login_from(&app, &from, &format!("nobody{i}"), "wrongpassword").await;
        assert_eq!(error_code(&r), "UNAUTHENTICATED", "{r}");
    }
    let r = login_from(&app, "198.51.100.99", "nobody", "wrongpassword").await;
    assert_eq!(error_code(&r), "RATE_LIMITED", "{r}");
}

/// Every hashing thread busy and no room in the queue: a login is refused with
/// `RATE_LIMITED` at once (not queued); once a thread is free, it succeeds. Then, with room
/// for one waiting hash, a login waits for it rather than being refused.
async fn a_hash_beyond_the_queue_is_refused_at_once(app: TestApp) {
    app.login_new_user("quinn").await;
    let in_flight = "arena_hashes_in_flight";
    // Occupy the only hashing thread with a job that waits for the test.
    let (release, blocked) = std::sync::mpsc::channel::<()>();
    let (started_tx, started) = tokio::sync::oneshot::channel::<()>();
    let state = app.state.clone();
    let blocker = tokio::spawn(async move {
        state
            .hasher
            .run(move || {
                let _ = started_tx.send(());
                let _ = blocked.recv();
            })
            .await
    });
    started.await.unwrap();
    let refused = app.metric("arena_hashes_refused_total").await;
    let r = login_from(&app, "192.0.2.4", "quinn", "password123").await;
    assert_eq!(error_code(&r), "RATE_LIMITED", "{r}");
    assert!(error_message(&r).contains("busy"), "{r}");
    assert_eq!(
        app.metric("arena_hashes_refused_total").await,
        refused + 1.0
    );
    release.send(()).unwrap();
    blocker.await.unwrap().unwrap();
    wait_until(Duration::from_secs(10), || async {
        app.metric(in_flight).await == 0.0
    })
    .await;
    assert_no_errors(&login_from(&app, "192.0.2.4", "quinn", "password123").await);
}

async fn a_hash_waits_in_the_queue_while_there_is_room(app: TestApp) {
    app.login_new_user("rita").await;
    let (release, blocked) = std::sync::mpsc::channel::<()>();
    let (started_tx, started) = tokio::sync::oneshot::channel::<()>();
    let state = app.state.clone();
    let blocker = tokio::spawn(async move {
        state
            .hasher
            .run(move || {
                let _ = started_tx.send(());
                let _ = blocked.recv();
            })
            .await
    });
    started.await.unwrap();
    let waiting = {
        let app_url = app.url.clone();
        let client = app.client.clone();
        tokio::spawn(async move {
            client
                .post(format!("{app_url}/graphql"))
                .header("X-Forwarded-For", "192.0.2.5")
                .json(&json!({ "query": LOGIN, "variables": { "u": "rita", "p": "password123" } }))
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        })
    };
    // The login's hash is queued behind the blocker: two in flight, the queue (one) full.
    wait_until(Duration::from_secs(10), || async {
        app.metric("arena_hashes_in_flight").await == 2.0
    })
    .await;
    let r = login_from(&app, "192.0.2.6", "rita", "password123").await;
    assert_eq!(error_code(&r), "RATE_LIMITED", "{r}");
    release.send(()).unwrap();
    blocker.await.unwrap().unwrap();
    assert_no_errors(&waiting.await.unwrap());
}

/// A flood from one address, bad passwords of made-up users and made-up API keys (many more
/// at once than the address's budget, or the hashing queue, holds), while someone else signs
/// in from another address: the flood gets its budget's worth of `UNAUTHENTICATED` and then
/// `RATE_LIMITED`, and the sign-in succeeds. The address's attempts in flight never exceed
/// its budget, and the queue holds more than that, so the flood cannot crowd the sign-in
/// out of the queue.
async fn a_legitimate_login_succeeds_during_a_flood_from_another_address(app: TestApp) {
    app.login_new_user("sam").await;
    let flooder = "203.0.113.66";
    let logins = (0..20).map(|i| {
        let app = &app;
        async move {
            error_code(&login_from(app, flooder, &format!("madeup{i}"), "guess").await).to_owned()
        }
    });
    let keys = (0..20).map(|i| {
        let app = &app;
        async move {
            let key = format!("ak_{:0>24}", i);
            let r = app
                .gql_from(flooder, Some(basic(&key, "guess")), ME, json!({}))
                .await;
            error_code(&r).to_owned()
        }
    });
    let legit = login_from(&app, "203.0.113.7", "sam", "password123");
    let (logins, keys, legit) = tokio::join!(
        futures::future::join_all(logins),
        futures::future::join_all(keys),
        legit
    );
    let codes: Vec<String> = logins.into_iter().chain(keys).collect();
    assert_no_errors(&legit);
    assert_eq!(legit["data"]["login"]["user"]["username"], "sam");
    let unauthenticated = codes.iter().filter(|c| *c == "UNAUTHENTICATED").count();
    let limited = codes.iter().filter(|c| *c == "RATE_LIMITED").count();
    let budget = app.settings.address_max_failures as usize;
    assert_eq!(
        (unauthenticated, limited),
        (budget, 40 - budget),
        "{codes:?}"
    );
}

crate::scenario! {
    backends: [embedded, postgres_redis];
    failed_checks_from_one_address_are_refused_past_its_budget => behind_a_proxy,
    successful_checks_do_not_use_up_the_address_budget => behind_a_proxy,
    x_forwarded_for_counts_only_from_a_trusted_proxy => |s| {
        s.address_max_failures = 3;
        s.throttle_delay_ms = 10;
    },
    a_hash_beyond_the_queue_is_refused_at_once => |s| {
        behind_a_proxy(s);
        s.hash_threads = 1;
        s.hash_queue = 0;
    },
    a_hash_waits_in_the_queue_while_there_is_room => |s| {
        behind_a_proxy(s);
        s.hash_threads = 1;
        s.hash_queue = 1;
    },
    a_legitimate_login_succeeds_during_a_flood_from_another_address => |s| {
        behind_a_proxy(s);
        s.address_max_failures = 5;
        s.hash_threads = 1;
        s.hash_queue = 8;
        // Hashes slow enough that the flood is still being checked when the sign-in arrives.
        s.pbkdf2_iterations = 50_000;
    },
}
