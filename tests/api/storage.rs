//! Key-value storage (SPEC §9): per user, size limits, least-recently-used eviction.

use serde_json::json;

use crate::helpers::*;

const SET: &str = "mutation($e: [StorageEntryInput!]!) { storageSet(entries: $e) }";
const GET: &str = "query($k: String!) { storageGet(key: $k) }";

async fn get(app: &TestApp, token: &str, key: &str) -> serde_json::Value {
    let r = app.gql_as(token, GET, json!({ "k": key })).await;
    assert_no_errors(&r);
    r["data"]["storageGet"].clone()
}

async fn set(app: &TestApp, token: &str, entries: serde_json::Value) -> serde_json::Value {
    app.gql_as(token, SET, json!({ "e": entries })).await
}

async fn values_are_private_to_their_owner(app: TestApp) {
    let alice = app.login_new_user("alice").await;
    let bob = app.login_new_user("bob").await;
    let r = set(
        &app,
        &alice,
        json!([{ "key": "colour", "value": "red" }, { "key": "size", "value": "L" }]),
    )
    .await;
    assert_no_errors(&r);
    assert_eq!(r["data"]["storageSet"], 2);
    assert_eq!(get(&app, &alice, "colour").await, "red");
    assert!(get(&app, &bob, "colour").await.is_null());
    assert_no_errors(&set(&app, &bob, json!([{ "key": "colour", "value": "blue" }])).await);
    assert_eq!(get(&app, &alice, "colour").await, "red");
    assert_eq!(get(&app, &bob, "colour").await, "blue");
    let anon = app.gql(GET, json!({ "k": "colour" })).await;
    assert_eq!(error_code(&anon), "UNAUTHENTICATED");
}

async fn size_limits_are_checked_before_anything_is_written(app: TestApp) {
    let alice = app.login_new_user("alice").await;
    let long_key = "k".repeat(257);
    let big_value = "v".repeat(64 * 1024 + 1);
    // The bad entry comes last: the good one before it must not be written either.
    let r = set(
        &app,
        &alice,
        json!([{ "key": "ok", "value": "1" }, { "key": long_key, "value": "x" }]),
    )
    .await;
    assert_eq!(error_code(&r), "BAD_USER_INPUT");
    assert_eq!(r["errors"][0]["extensions"]["field"], "entries[1].key");
    assert!(get(&app, &alice, "ok").await.is_null());

    let r = set(
        &app,
        &alice,
        json!([{ "key": "ok", "value": "1" }, { "key": "big", "value": big_value }]),
    )
    .await;
    assert_eq!(r["errors"][0]["extensions"]["field"], "entries[1].value");
    assert!(get(&app, &alice, "ok").await.is_null());

    let many: Vec<_> = (0..101)
        .map(|i| json!({ "key": format!("k{i}"), "value": "v" }))
        .collect();
    let r = set(&app, &alice, json!(many)).await;
    assert_eq!(r["errors"][0]["extensions"]["field"], "entries");
    let r = set(&app, &alice, json!([{ "key": "", "value": "v" }])).await;
    assert_eq!(r["errors"][0]["extensions"]["field"], "entries[0].key");

    // At the limits exactly is fine.
    let r = set(
        &app,
        &alice,
        json!([{ "key": "k".repeat(256), "value": "v".repeat(64 * 1024) }]),
    )
    .await;
    assert_no_errors(&r);
    assert_eq!(
        get(&app, &alice, &"k".repeat(256))
            .await
            .as_str()
            .unwrap()
            .len(),
        64 * 1024
    );
    let r = app.gql_as(&alice, GET, json!({ "k": long_key })).await;
    assert_eq!(error_code(&r), "BAD_USER_INPUT");
}

crate::both_backends!(
    values_are_private_to_their_owner,
    size_limits_are_checked_before_anything_is_written,
);

/// LRU eviction at a capacity, on the embedded cache (`ARENA_CACHE_CAPACITY`). With Redis the
/// eviction is the server's `maxmemory-policy allkeys-lru`, which cannot be forced for one test
/// on the shared server without evicting other tests' keys; isolation and limits are tested
/// on Redis above.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_least_recently_used_key_is_evicted_at_capacity() {
    let app = spawn_app_with(Backends::Embedded, |s| s.cache_capacity = 3)
        .await
        .unwrap();
    let alice = app.login_new_user("alice").await;
    assert_no_errors(
        &set(
            &app,
            &alice,
            json!([{ "key": "a", "value": "1" }, { "key": "b", "value": "2" }]),
        )
        .await,
    );
    assert_no_errors(&set(&app, &alice, json!([{ "key": "c", "value": "3" }])).await);
    // Reading `a` makes `b` the least recently used.
    assert_eq!(get(&app, &alice, "a").await, "1");
    assert_no_errors(&set(&app, &alice, json!([{ "key": "d", "value": "4" }])).await);
    assert!(
        get(&app, &alice, "b").await.is_null(),
        "b was the least recently used"
    );
    assert_eq!(get(&app, &alice, "a").await, "1");
    assert_eq!(get(&app, &alice, "c").await, "3");
    assert_eq!(get(&app, &alice, "d").await, "4");
}
