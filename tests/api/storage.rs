//! Key-value storage (SPEC §9): per user, size limits, least-recently-used eviction.

use std::time::Duration;

use serde_json::json;

use crate::support::*;

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

crate::scenario! {
    backends: [embedded, postgres_redis];
    values_are_private_to_their_owner,
    size_limits_are_checked_before_anything_is_written,
}

async fn keys(app: &TestApp, token: &str) -> Vec<String> {
    let r = app.gql_as(token, "{ storageKeys }", json!({})).await;
    assert_no_errors(&r);
    serde_json::from_value(r["data"]["storageKeys"].clone()).unwrap()
}

fn entries(names: &[&str]) -> serde_json::Value {
    json!(names
        .iter()
        .map(|k| json!({ "key": k, "value": k.to_uppercase() }))
        .collect::<Vec<_>>())
}

/// `ARENA_STORAGE_CAPACITY` = 3 keys per user: every read and write moves a key to the most
/// recent end, and a write beyond the capacity evicts the least recently used keys, exactly
/// (checked after every step through `storageKeys`, least recent first). Another user's keys
/// count against their own capacity only.
async fn keys_are_evicted_least_recently_read_or_written_first_exactly(app: TestApp) {
    let alice = app.login_new_user("alice").await;
    let bob = app.login_new_user("bob").await;
    let mut evicted = Vec::new();
    let steps: Vec<(&str, serde_json::Value, Vec<&str>, Option<&str>)> = vec![
        (
            "set a b c",
            entries(&["a", "b", "c"]),
            vec!["a", "b", "c"],
            None,
        ),
        ("get a", json!("a"), vec!["b", "c", "a"], None),
        ("set d", entries(&["d"]), vec!["c", "a", "d"], Some("b")),
        ("get c", json!("c"), vec!["a", "d", "c"], None),
        (
            "set e f",
            entries(&["e", "f"]),
            vec!["c", "e", "f"],
            Some("a d"),
        ),
        ("get b (gone)", json!("b"), vec!["c", "e", "f"], None),
        ("set c again", entries(&["c"]), vec!["e", "f", "c"], None),
        ("set g", entries(&["g"]), vec!["f", "c", "g"], Some("e")),
    ];
    assert_no_errors(&set(&app, &bob, entries(&["x", "y", "z"])).await);
    for (what, arg, order, gone) in steps {
        if arg.is_string() {
            let key = arg.as_str().unwrap();
            let value = get(&app, &alice, key).await;
            if what.contains("gone") {
                assert!(value.is_null(), "{what}");
            } else {
                assert_eq!(value, key.to_uppercase(), "{what}");
            }
        } else {
            assert_no_errors(&set(&app, &alice, arg).await);
        }
        assert_eq!(keys(&app, &alice).await, order, "after {what}");
        if let Some(gone) = gone {
            for k in gone.split(' ') {
                evicted.push(k.to_owned());
            }
        }
    }
    for k in &evicted {
        assert!(get(&app, &alice, k).await.is_null(), "{k} was evicted");
    }
    assert_eq!(
        keys(&app, &alice).await,
        vec!["f", "c", "g"],
        "reading evicted keys moves nothing"
    );
    assert_eq!(
        keys(&app, &bob).await,
        vec!["x", "y", "z"],
        "bob's keys are his own"
    );
    figure(&format!(
        "{:?}: evicted in order {}; left, least recent first: f c g",
        app.backends,
        evicted.join(" ")
    ));
}

/// [`keys_are_evicted_least_recently_read_or_written_first_exactly`] on `backends`.
async fn keys_are_evicted_exactly_on(backends: Backends) {
    if let Some(app) = TestApp::builder(backends)
        .settings(|s| s.storage_capacity = 3)
        .try_spawn()
        .await
    {
        keys_are_evicted_least_recently_read_or_written_first_exactly(app).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn keys_are_evicted_least_recently_read_or_written_first_exactly_in_memory() {
    keys_are_evicted_exactly_on(Backends::Embedded).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn keys_are_evicted_least_recently_read_or_written_first_exactly_on_redis() {
    keys_are_evicted_exactly_on(Backends::Real).await
}

/// Embedded, the storage over every user is bounded by `ARENA_CACHE_CAPACITY` too (the
/// in-process counterpart of a dedicated `allkeys-lru` Redis): the least recently used value
/// of any user makes room.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_least_recently_used_key_is_evicted_at_capacity() {
    let app = TestApp::builder(Backends::Embedded)
        .settings(|s| s.cache_capacity = 3)
        .spawn()
        .await;
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

/// With `ARENA_STORAGE_REDIS_URL` the values live in a Redis of their own (here logical
/// database 1 of the test server), never in the cache tier whose entries, write marks and
/// counters must not be evicted; `/readyz` reports it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_separate_storage_redis_holds_the_values_apart_from_the_cache() {
    let Some(app) = TestApp::builder(Backends::Real)
        .settings(|s| {
            let redis = s.redis_url.as_deref().expect("Redis");
            s.storage_redis_url = Some(format!("{}/1", redis.trim_end_matches('/')));
        })
        .try_spawn()
        .await
    else {
        return;
    };
    let alice = app.login_new_user("alice").await;
    assert_no_errors(&set(&app, &alice, json!([{ "key": "colour", "value": "red" }])).await);
    assert_eq!(get(&app, &alice, "colour").await, "red");

    let owner = arena::storage::service::owner(app.viewer_id(&alice).await);
    assert_eq!(
        app.state
            .storage
            .get(&owner, "colour")
            .await
            .unwrap()
            .as_deref(),
        Some("red")
    );
    assert!(
        app.scan_keys(&owner).await.is_empty(),
        "nothing of the storage is in the cache tier"
    );

    let ready: serde_json::Value = app
        .client
        .get(format!("{}/readyz", app.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let storage = ready["backends"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["tier"] == "storage")
        .cloned()
        .unwrap_or_else(|| panic!("no storage tier in {ready}"));
    assert_eq!(storage["kind"], "redis", "{ready}");
    assert_eq!(storage["ok"], true, "{ready}");
    // Clean up database 1 (its keys are not under a key the other tests remove).
    app.state.storage.forget(&owner).await.unwrap();
    assert!(app.state.storage.keys(&owner).await.unwrap().is_empty());
}

/// The same rule on Redis: a storage Redis of the test's own runs `allkeys-lru` at a
/// `maxmemory` just above what the first 20 values take. Once they have been idle for two
/// seconds (Redis's LRU clock counts seconds), `k1` is read; 10 more values then force
/// evictions. Every write succeeds, only unread old values are evicted, and `k1` survives.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_evicts_the_least_recently_used_values_and_keeps_a_recently_read_one() {
    let Some(redis) = PrivateRedis::try_start().await else {
        return;
    };
    assert_eq!(
        redis.cli(&["config", "set", "maxmemory-policy", "allkeys-lru"]),
        "OK"
    );
    assert_eq!(
        redis.cli(&["config", "set", "maxmemory-samples", "10"]),
        "OK"
    );
    let Some(app) = TestApp::builder(Backends::Real)
        .settings(|s| s.storage_redis_url = Some(redis.url()))
        .try_spawn()
        .await
    else {
        return;
    };
    let alice = app.login_new_user("alice").await;
    let id = app.viewer_id(&alice).await;
    let stored = |key: &str| {
        format!(
            "{}{}:{key}",
            app.state.cache_prefix,
            arena::storage::service::owner(id)
        )
    };
    let value = "v".repeat(4096);
    let entries = |from: usize, to: usize| {
        json!((from..to)
            .map(|i| json!({ "key": format!("k{i}"), "value": value }))
            .collect::<Vec<_>>())
    };
    assert_no_errors(&set(&app, &alice, entries(1, 21)).await);

    // Let the first values grow old by Redis's clock, then read k1.
    wait_until(Duration::from_secs(10), || async {
        redis
            .cli(&["object", "idletime", &stored("k2")])
            .parse::<u64>()
            .unwrap_or(0)
            >= 2
    })
    .await;
    assert_eq!(get(&app, &alice, "k1").await, value.as_str());
    assert_eq!(redis.cli(&["object", "idletime", &stored("k1")]), "0");

    let used: u64 = redis
        .cli(&["info", "memory"])
        .lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let limit = (used + 16 * 1024).to_string();
    assert_eq!(redis.cli(&["config", "set", "maxmemory", &limit]), "OK");
    for i in 21..31 {
        assert_no_errors(&set(&app, &alice, entries(i, i + 1)).await);
    }

    let evicted: u64 = redis
        .cli(&["info", "stats"])
        .lines()
        .find_map(|l| l.strip_prefix("evicted_keys:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(evicted > 0, "the new values forced evictions");
    assert_eq!(
        get(&app, &alice, "k1").await,
        value.as_str(),
        "k1 was read recently ({evicted} evicted)"
    );
    let mut gone = 0;
    for i in 2..21 {
        if get(&app, &alice, &format!("k{i}")).await.is_null() {
            gone += 1;
        }
    }
    assert!(gone > 0, "old unread values were evicted");
    // Every new value is there: evictions took old ones to make room.
    for i in 21..31 {
        assert_eq!(
            get(&app, &alice, &format!("k{i}")).await,
            value.as_str(),
            "k{i} is newer than every evicted value ({evicted} evicted)"
        );
    }
}

/// The storage tier away (its Redis unreachable): `storageSet`, `storageGet` and
/// `storageKeys` answer `UNAVAILABLE`, not `INTERNAL`, and once it is back every value stored
/// before the outage is there and nothing the refused calls carried is.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_unreachable_storage_tier_answers_unavailable_and_loses_nothing() {
    let Some((app, mut proxy)) = TestApp::builder(Backends::Real)
        .try_spawn_behind_proxy()
        .await
    else {
        return;
    };
    let alice = app.login_new_user("alice").await;
    assert_no_errors(&set(&app, &alice, json!([{ "key": "kept", "value": "before" }])).await);

    proxy.cut();
    let r = set(&app, &alice, json!([{ "key": "kept", "value": "during" }])).await;
    assert_eq!(error_code(&r), "UNAVAILABLE", "{r:#}");
    let r = app.gql_as(&alice, GET, json!({ "k": "kept" })).await;
    assert_eq!(error_code(&r), "UNAVAILABLE", "{r:#}");
    let r = app.gql_as(&alice, "{ storageKeys }", json!({})).await;
    assert_eq!(error_code(&r), "UNAVAILABLE", "{r:#}");

    proxy.restore().await;
    wait_until(Duration::from_secs(10), || async {
        app.gql_as(&alice, GET, json!({ "k": "kept" })).await["errors"].is_null()
    })
    .await;
    assert_eq!(get(&app, &alice, "kept").await, "before");
    assert_eq!(keys(&app, &alice).await, vec!["kept".to_owned()]);
}
