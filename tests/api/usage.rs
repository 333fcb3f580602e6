//! Usage counters, dice, user data and the cache → document store sync (SPEC §8).

use std::collections::HashMap;
use std::time::Duration;

use arena::config::Consistency;
use arena::usage::counting::{read_counter, read_time};
use arena::usage::sync::{sync_once, SyncOutcome, RESTORED, USAGE_COLLECTION};
use serde_json::json;

use crate::support::*;

const ROLL: &str = "mutation { roll(expression: \"d6\") { total } }";

struct Stats {
    counts: HashMap<String, i64>,
    users: i64,
    updated_at: Option<String>,
}

impl Stats {
    fn count(&self, name: &str) -> i64 {
        self.counts.get(name).copied().unwrap_or(0)
    }
}

async fn stats(app: &TestApp) -> Stats {
    let r = app
        .gql(
            "{ stats { commands { name count } users updatedAt } }",
            json!({}),
        )
        .await;
    assert_no_errors(&r);
    let s = &r["data"]["stats"];
    Stats {
        counts: s["commands"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                (
                    c["name"].as_str().unwrap().to_owned(),
                    c["count"].as_i64().unwrap(),
                )
            })
            .collect(),
        users: s["users"].as_i64().unwrap(),
        updated_at: s["updatedAt"].as_str().map(str::to_owned),
    }
}

/// Stats once the start-up restore of a fresh Arena has run (it runs in the background).
async fn stats_once_restored(app: &TestApp) -> Stats {
    wait_until(Duration::from_secs(10), || async {
        read_counter(app.state.kv.as_ref(), RESTORED).await.unwrap() > 0
    })
    .await;
    stats(app).await
}

async fn rolls(app: &TestApp, n: usize) {
    for _ in 0..n {
        assert_no_errors(&app.gql(ROLL, json!({})).await);
    }
}

async fn stored_count(app: &TestApp, field: &str) -> Option<i64> {
    app.state
        .docs
        .get(USAGE_COLLECTION, "counters")
        .await
        .unwrap()
        .and_then(|d| d["counters"][field].as_i64())
}

/// Deletes every key of this test's cache prefix (never FLUSHDB: the Redis server is shared
/// with tests running in parallel).
async fn empty_the_cache(app: &TestApp) {
    assert!(app.usage.flush(&app.state).await);
    let keys = app.scan_keys("").await;
    if !keys.is_empty() {
        app.state.kv.del(&keys).await.unwrap();
    }
}

/// One sync pass now, waiting for the worker's own pass to release the lock if it holds it.
async fn sync_now(app: &TestApp) -> SyncOutcome {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match sync_once(&app.state).await.unwrap() {
            SyncOutcome::Busy => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "the sync lock stayed busy"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            outcome => return outcome,
        }
    }
}

// ---- counting -------------------------------------------------------------------------

async fn every_root_field_counts_exactly_once_per_operation(app: TestApp) {
    let before = stats(&app).await;
    rolls(&app, 5).await;
    let r = app
        .gql(
            "{ a: meal(id: \"1\") { id } b: meal(id: \"2\") { id } }",
            json!({}),
        )
        .await;
    assert_no_errors(&r);
    // An operation that fails validation runs no field and counts nothing.
    let bad = app.gql("{ roll }", json!({})).await;
    assert_eq!(error_code(&bad), "BAD_USER_INPUT");
    let after = stats(&app).await;
    assert_eq!(after.count("roll") - before.count("roll"), 5);
    assert_eq!(after.count("meal") - before.count("meal"), 2);
    assert_eq!(after.count("stats") - before.count("stats"), 1);
}

async fn concurrent_operations_are_all_counted(app: TestApp) {
    let before = stats(&app).await;
    let n = 40;
    let results = futures::future::join_all((0..n).map(|_| app.gql(ROLL, json!({})))).await;
    for r in &results {
        assert_no_errors(r);
    }
    let after = stats(&app).await;
    assert_eq!(after.count("roll") - before.count("roll"), n as i64);
}

async fn the_viewer_joins_user_set_and_updated_time_moves(app: TestApp) {
    rolls(&app, 1).await;
    let s0 = stats(&app).await;
    assert!(s0.updated_at.is_some(), "a count stamps updated_time");
    rolls(&app, 2).await;
    assert_eq!(
        stats(&app).await.users,
        s0.users,
        "anonymous requests add no user"
    );

    let alice = app.login_new_user("alice").await;
    assert_no_errors(&app.gql_as(&alice, ROLL, json!({})).await);
    assert_no_errors(&app.gql_as(&alice, ROLL, json!({})).await);
    assert_eq!(stats(&app).await.users, s0.users + 1);
    let bob = app.login_new_user("bob").await;
    assert_no_errors(&app.gql_as(&bob, "{ me { id } }", json!({})).await);
    assert_eq!(stats(&app).await.users, s0.users + 2);

    // A viewer signed in by API key joins too, once a resolver has checked the key; a made-up
    // key on a public field is counted as a command but never checked for user_set.
    let carol = app.login_new_user("carol").await;
    let r = app
        .gql_as(
            &carol,
            "mutation { createCredential(id: \"k\") { credential { publicKey } secretKey } }",
            json!({}),
        )
        .await;
    assert_no_errors(&r);
    let c = &r["data"]["createCredential"];
    let key = basic(
        c["credential"]["publicKey"].as_str().unwrap(),
        c["secretKey"].as_str().unwrap(),
    );
    // Start user_set afresh (after the buffer is flushed), so only what follows counts.
    assert!(app.usage.flush(&app.state).await);
    app.state
        .kv
        .del(&[arena::usage::counting::USER_SET.to_owned()])
        .await
        .unwrap();
    let fake = basic("ak_madeup", "secret");
    assert_no_errors(&app.gql_auth(Some(fake), ROLL, json!({})).await);
    assert_eq!(stats(&app).await.users, 0, "a made-up key adds no user");
    assert_no_errors(&app.gql_auth(Some(key), "{ me { id } }", json!({})).await);
    assert_eq!(stats(&app).await.users, 1, "carol, by her API key");

    let first = s0.updated_at.unwrap();
    wait_until(Duration::from_secs(10), || async {
        rolls(&app, 1).await;
        stats(&app).await.updated_at.is_some_and(|t| t > first)
    })
    .await;
}

crate::scenario! {
    backends: [embedded, postgres_redis];
    every_root_field_counts_exactly_once_per_operation,
    concurrent_operations_are_all_counted,
    the_viewer_joins_user_set_and_updated_time_moves,
    rolls_return_every_die_and_errors_carry_their_position,
    saved_rolls_belong_to_their_owner,
    concurrent_saves_are_all_kept,
    every_flush_adds_the_counts_to_the_document_store,
    characters_are_set_and_deleted_in_the_user_data_document,
}

// ---- dice -----------------------------------------------------------------------------

async fn rolls_return_every_die_and_errors_carry_their_position(app: TestApp) {
    let q = "mutation($e: String!) { roll(expression: $e) { expression total dice { sides value kept subtracted } } }";
    for _ in 0..20 {
        let r = app.gql(q, json!({ "e": "4d6kh3+2" })).await;
        assert_no_errors(&r);
        let roll = &r["data"]["roll"];
        let dice = roll["dice"].as_array().unwrap();
        assert_eq!(dice.len(), 4);
        assert_eq!(dice.iter().filter(|d| d["kept"] == true).count(), 3);
        let kept: i64 = dice
            .iter()
            .filter(|d| d["kept"] == true)
            .map(|d| d["value"].as_i64().unwrap())
            .sum();
        assert_eq!(roll["total"].as_i64().unwrap(), kept + 2);
        assert!((5..=20).contains(&kept.saturating_add(2)));
    }
    let r = app.gql(q, json!({ "e": "d%" })).await;
    assert_eq!(r["data"]["roll"]["dice"][0]["sides"], 100);

    for (expr, position) in [
        ("3d6+", 4),
        ("1001d6", 0),
        ("d1000001", 1),
        ("4d6kh5", 3),
        ("2d6 x", 4),
    ] {
        let r = app.gql(q, json!({ "e": expr })).await;
        assert_eq!(error_code(&r), "BAD_USER_INPUT", "{expr}");
        assert_eq!(
            r["errors"][0]["extensions"]["position"], position,
            "{expr}: {r:#}"
        );
        assert!(
            error_message(&r).contains(&format!("position {position}")),
            "{expr}: {r:#}"
        );
    }
}

// ---- user data ------------------------------------------------------------------------

async fn saved_rolls_belong_to_their_owner(app: TestApp) {
    let alice = app.login_new_user("alice").await;
    let bob = app.login_new_user("bob").await;
    let save = "mutation($n: String!, $e: String!) { saveRoll(name: $n, expression: $e) { name expression } }";
    let r = app
        .gql_as(&alice, save, json!({ "n": "fireball", "e": "8d6" }))
        .await;
    assert_no_errors(&r);
    let r = app
        .gql_as(&alice, save, json!({ "n": "bad", "e": "8d" }))
        .await;
    assert_eq!(error_code(&r), "BAD_USER_INPUT");
    assert_eq!(r["errors"][0]["extensions"]["position"], 2);
    let r = app.gql(save, json!({ "n": "x", "e": "d6" })).await;
    assert_eq!(error_code(&r), "UNAUTHENTICATED");

    let rs = "mutation($n: String!) { rollSaved(name: $n) { total dice { sides } } }";
    let r = app.gql_as(&alice, rs, json!({ "n": "fireball" })).await;
    assert_no_errors(&r);
    assert_eq!(r["data"]["rollSaved"]["dice"].as_array().unwrap().len(), 8);
    let r = app.gql_as(&bob, rs, json!({ "n": "fireball" })).await;
    assert_eq!(error_code(&r), "NOT_FOUND");

    let list = "{ savedRolls { name expression } userData }";
    let r = app.gql_as(&alice, list, json!({})).await;
    assert_no_errors(&r);
    assert_eq!(
        r["data"]["savedRolls"],
        json!([{ "name": "fireball", "expression": "8d6" }])
    );
    assert_eq!(r["data"]["userData"]["savedRolls"][0]["name"], "fireball");
    let r = app.gql_as(&bob, list, json!({})).await;
    assert_eq!(r["data"]["savedRolls"], json!([]));

    // Saved rolls live on when the cache forgets them (they are written to documents too).
    empty_the_cache(&app).await;
    let r = app.gql_as(&alice, list, json!({})).await;
    assert_eq!(r["data"]["savedRolls"][0]["name"], "fireball", "{r:#}");

    let del = "mutation($n: String!) { deleteSavedRoll(name: $n) }";
    let r = app.gql_as(&bob, del, json!({ "n": "fireball" })).await;
    assert_eq!(r["data"]["deleteSavedRoll"], false);
    let r = app.gql_as(&alice, del, json!({ "n": "fireball" })).await;
    assert_eq!(r["data"]["deleteSavedRoll"], true);
    let r = app.gql_as(&alice, list, json!({})).await;
    assert_eq!(r["data"]["savedRolls"], json!([]));
}

async fn concurrent_saves_are_all_kept(app: TestApp) {
    let alice = app.login_new_user("alice").await;
    let save = "mutation($n: String!) { saveRoll(name: $n, expression: \"d20\") { name } }";
    let results = futures::future::join_all(
        (0..20).map(|i| app.gql_as(&alice, save, json!({ "n": format!("r{i}") }))),
    )
    .await;
    for r in &results {
        assert_no_errors(r);
    }
    let r = app
        .gql_as(&alice, "{ savedRolls { name } }", json!({}))
        .await;
    assert_eq!(
        r["data"]["savedRolls"].as_array().unwrap().len(),
        20,
        "{r:#}"
    );
}

const SET_CHARACTER: &str =
    "mutation($n: String!, $s: JSON!) { setCharacter(name: $n, sheet: $s) { name sheet } }";

/// The stamp `user_<id>:updated_time` in the cache tier.
async fn stamp(app: &TestApp, id: i64) -> Option<i64> {
    read_time(
        app.state.kv.as_ref(),
        &arena::usage::service::user_stamp_key(id),
    )
    .await
    .unwrap()
}

async fn characters_are_set_and_deleted_in_the_user_data_document(app: TestApp) {
    let alice = app.login_new_user("alice").await;
    let bob = app.login_new_user("bob").await;
    let id = app.viewer_id(&alice).await;
    assert_eq!(stamp(&app, id).await, None, "no data, no stamp");
    let r = app
        .gql_as(
            &alice,
            SET_CHARACTER,
            json!({ "n": "Elf", "s": { "class": "ranger", "level": 3 } }),
        )
        .await;
    assert_no_errors(&r);
    assert_eq!(r["data"]["setCharacter"]["sheet"]["level"], 3);
    let first = stamp(&app, id).await.expect("a change stamps user_<id>");
    // Replacing keeps one character of the name; a second name adds one.
    let r = app
        .gql_as(
            &alice,
            SET_CHARACTER,
            json!({ "n": "Elf", "s": { "level": 4 } }),
        )
        .await;
    assert_no_errors(&r);
    let r = app
        .gql_as(&alice, SET_CHARACTER, json!({ "n": "Dwarf", "s": {} }))
        .await;
    assert_no_errors(&r);
    let list = "{ characters { name sheet } userData }";
    let r = app.gql_as(&alice, list, json!({})).await;
    assert_no_errors(&r);
    assert_eq!(
        r["data"]["characters"],
        json!([{ "name": "Elf", "sheet": { "level": 4 } }, { "name": "Dwarf", "sheet": {} }])
    );
    let doc = &r["data"]["userData"];
    assert_eq!(doc["characters"][0]["name"], "Elf", "{doc}");
    let updated = doc["updated_time"].as_i64().unwrap();
    assert!(updated > first);
    assert_eq!(
        stamp(&app, id).await,
        Some(updated),
        "the stamp follows the document"
    );
    let r = app.gql_as(&bob, list, json!({})).await;
    assert_eq!(r["data"]["characters"], json!([]));

    // Bad input names its field and changes nothing.
    for (vars, field) in [
        (json!({ "n": " ", "s": {} }), "name"),
        (json!({ "n": "x".repeat(65), "s": {} }), "name"),
        (json!({ "n": "Orc", "s": [1, 2] }), "sheet"),
        (
            json!({ "n": "Orc", "s": { "notes": "x".repeat(16 * 1024) } }),
            "sheet",
        ),
    ] {
        let r = app.gql_as(&alice, SET_CHARACTER, vars).await;
        assert_eq!(error_code(&r), "BAD_USER_INPUT", "{r:#}");
        assert_eq!(r["errors"][0]["extensions"]["field"], field, "{r:#}");
    }
    let r = app.gql(SET_CHARACTER, json!({ "n": "Orc", "s": {} })).await;
    assert_eq!(error_code(&r), "UNAUTHENTICATED");
    assert_eq!(
        stamp(&app, id).await,
        Some(updated),
        "refused changes stamp nothing"
    );
    let stored = app
        .state
        .docs
        .get("user_data", &format!("user_{id}"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored["characters"].as_array().unwrap().len(), 2);
    assert_eq!(stored["updated_time"], updated);

    // Characters live on when the cache forgets them (the document store is their truth).
    empty_the_cache(&app).await;
    let r = app
        .gql_as(&alice, "{ characters { name } }", json!({}))
        .await;
    assert_eq!(
        r["data"]["characters"].as_array().unwrap().len(),
        2,
        "{r:#}"
    );

    let del = "mutation($n: String!) { deleteCharacter(name: $n) }";
    let r = app.gql_as(&bob, del, json!({ "n": "Elf" })).await;
    assert_eq!(r["data"]["deleteCharacter"], false);
    let r = app.gql_as(&alice, del, json!({ "n": "Elf" })).await;
    assert_eq!(r["data"]["deleteCharacter"], true);
    let r = app
        .gql_as(&alice, "{ characters { name } }", json!({}))
        .await;
    assert_eq!(r["data"]["characters"], json!([{ "name": "Dwarf" }]));
    assert!(stamp(&app, id).await.unwrap() > updated);
}

/// Concurrent changes of one user's data while the cache is cut off (issue 14): under
/// `available` every one of them is kept, none refused; once the cache is back the cached
/// copy is the stored document.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn under_available_concurrent_saves_during_a_cache_outage_are_all_kept() {
    let Some((app, mut proxy)) = TestApp::builder(Backends::Real)
        .settings(|s| s.consistency = Consistency::Available)
        .try_spawn_behind_proxy()
        .await
    else {
        return;
    };
    let alice = app.login_new_user("alice").await;
    let id = app.viewer_id(&alice).await;
    let save = "mutation($n: String!) { saveRoll(name: $n, expression: \"d20\") { name } }";
    assert_no_errors(&app.gql_as(&alice, save, json!({ "n": "before" })).await);
    assert_no_errors(
        &app.gql_as(&alice, "{ savedRolls { name } }", json!({}))
            .await,
    );

    proxy.cut();
    let results = futures::future::join_all((0..30).map(|i| {
        let (app, alice) = (&app, &alice);
        async move {
            if i % 3 == 0 {
                app.gql_as(
                    alice,
                    SET_CHARACTER,
                    json!({ "n": format!("c{i}"), "s": {} }),
                )
                .await
            } else {
                app.gql_as(alice, save, json!({ "n": format!("r{i}") }))
                    .await
            }
        }
    }))
    .await;
    for r in &results {
        assert_no_errors(r);
    }
    let r = app
        .gql_as(
            &alice,
            "{ savedRolls { name } characters { name } }",
            json!({}),
        )
        .await;
    assert_eq!(
        r["data"]["savedRolls"].as_array().unwrap().len(),
        21,
        "{r:#}"
    );
    assert_eq!(
        r["data"]["characters"].as_array().unwrap().len(),
        10,
        "{r:#}"
    );

    proxy.restore().await;
    wait_until(Duration::from_secs(20), || async {
        !app.state.cache_health.degraded()
    })
    .await;
    let r = app
        .gql_as(
            &alice,
            "{ savedRolls { name } characters { name } }",
            json!({}),
        )
        .await;
    assert_eq!(
        r["data"]["savedRolls"].as_array().unwrap().len(),
        21,
        "{r:#}"
    );
    assert_eq!(
        r["data"]["characters"].as_array().unwrap().len(),
        10,
        "{r:#}"
    );
    let stored = app
        .state
        .docs
        .get("user_data", &format!("user_{id}"))
        .await
        .unwrap()
        .unwrap();
    let copy = app
        .state
        .cache
        .leased_get_many(&[format!("user_{id}")], "peek", Duration::from_secs(5))
        .await
        .unwrap()
        .remove(0)
        .expect("the copy was filled again");
    assert_eq!(copy.version, stored["updated_time"].as_i64().unwrap());
}

/// The same under `strict`: every change during the outage is refused with `UNAVAILABLE`
/// and nothing is written; reads are served from the document store throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn under_strict_saves_during_a_cache_outage_are_refused_and_nothing_is_written() {
    let Some((app, mut proxy)) = TestApp::builder(Backends::Real)
        .settings(|s| s.consistency = Consistency::Strict)
        .try_spawn_behind_proxy()
        .await
    else {
        return;
    };
    let alice = app.login_new_user("alice").await;
    let id = app.viewer_id(&alice).await;
    let save = "mutation($n: String!) { saveRoll(name: $n, expression: \"d20\") { name } }";
    assert_no_errors(&app.gql_as(&alice, save, json!({ "n": "before" })).await);
    let stamped = stamp(&app, id).await;

    proxy.cut();
    let results = futures::future::join_all(
        (0..10).map(|i| app.gql_as(&alice, save, json!({ "n": format!("r{i}") }))),
    )
    .await;
    for r in &results {
        assert_eq!(error_code(r), "UNAVAILABLE", "{r:#}");
    }
    let r = app
        .gql_as(&alice, "{ savedRolls { name } }", json!({}))
        .await;
    assert_eq!(
        r["data"]["savedRolls"],
        json!([{ "name": "before" }]),
        "{r:#}"
    );

    proxy.restore().await;
    wait_until(Duration::from_secs(20), || async {
        !app.state.cache_health.degraded()
    })
    .await;
    assert_eq!(stamp(&app, id).await, stamped);
    assert_no_errors(&app.gql_as(&alice, save, json!({ "n": "after" })).await);
    let r = app
        .gql_as(&alice, "{ savedRolls { name } }", json!({}))
        .await;
    assert_eq!(
        r["data"]["savedRolls"],
        json!([{ "name": "before" }, { "name": "after" }])
    );
}

// ---- sync -----------------------------------------------------------------------------

/// Waits for the worker's start-up pass (it leaves the restore marker).
async fn wait_for_first_sync(app: &TestApp) {
    wait_until(Duration::from_secs(10), || async {
        read_counter(app.state.kv.as_ref(), RESTORED).await.unwrap() > 0
    })
    .await;
}

async fn counts_survive_a_restart_of_arena(app: TestApp) {
    rolls(&app, 7).await;
    let alice = app.login_new_user("alice").await;
    assert_no_errors(&app.gql_as(&alice, ROLL, json!({})).await);
    let before = stats(&app).await;
    assert_eq!(before.count("roll"), 8);
    let app = app.restart().await;
    let after = stats_once_restored(&app).await;
    assert_eq!(after.count("roll"), 8);
    assert_eq!(after.users, 1);
    assert!(after.count("stats") > before.count("stats"));
    assert!(after.updated_at.is_some());
}

async fn counts_are_restored_from_documents_after_the_cache_is_emptied(app: TestApp) {
    wait_for_first_sync(&app).await;
    rolls(&app, 6).await;
    let alice = app.login_new_user("alice").await;
    assert_no_errors(&app.gql_as(&alice, ROLL, json!({})).await);
    assert!(app.usage.flush(&app.state).await);
    assert_eq!(sync_now(&app).await, SyncOutcome::UpToDate);
    assert_eq!(stored_count(&app, "roll").await, Some(7));

    empty_the_cache(&app).await;
    assert_eq!(sync_now(&app).await, SyncOutcome::Restored);
    let s = stats(&app).await;
    assert_eq!(s.count("roll"), 7);
    assert_eq!(s.users, 1);

    // A restore is idempotent: another pass, even with its marker gone (evicted), never
    // counts twice.
    app.state.kv.del(&[RESTORED.to_owned()]).await.unwrap();
    // The pass restores, unless the background flush (every 100 ms) noticed the missing
    // marker and restored first; either way nothing is counted twice.
    let outcome = sync_now(&app).await;
    assert!(
        matches!(outcome, SyncOutcome::Restored | SyncOutcome::UpToDate),
        "{outcome:?}"
    );
    // Then a pass finds nothing to do. The background flush may still be writing the count
    // of the `stats` query above (its stored total before its cache counter), which a pass in
    // between raises: so wait for a pass that finds everything in place.
    wait_until(Duration::from_secs(5), || async {
        sync_now(&app).await == SyncOutcome::UpToDate
    })
    .await;
    assert_eq!(stats(&app).await.count("roll"), 7);

    // And once more through a restart after emptying it (the shutdown pass restores first).
    empty_the_cache(&app).await;
    let app = app.restart().await;
    assert_eq!(stats_once_restored(&app).await.count("roll"), 7);
}

async fn counting_and_restore_passes_at_once_never_count_twice(app: TestApp) {
    wait_for_first_sync(&app).await;
    let app = std::sync::Arc::new(app);
    // 40 rolls while passes run, some with the marker deleted (a restore each time).
    let mut tasks = vec![];
    for _ in 0..4 {
        let app = app.clone();
        tasks.push(tokio::spawn(async move { rolls(&app, 10).await }));
    }
    for i in 0..6 {
        if i % 2 == 0 {
            app.state.kv.del(&[RESTORED.to_owned()]).await.unwrap();
        }
        sync_now(&app).await;
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(stats(&app).await.count("roll"), 40);
    assert_eq!(stored_count(&app, "roll").await, Some(40));
    let app = std::sync::Arc::into_inner(app).unwrap();
    let app = app.restart().await;
    assert_eq!(stats_once_restored(&app).await.count("roll"), 40);
}

async fn the_shutdown_flush_loses_nothing_written_just_before_stop(app: TestApp) {
    let n = 30;
    let results = futures::future::join_all((0..n).map(|_| app.gql(ROLL, json!({})))).await;
    for r in &results {
        assert_no_errors(r);
    }
    // No stats query (it would flush): the counts sit in the buffer when stop is asked.
    let app = app.restart().await;
    assert_eq!(stored_count(&app, "roll").await, Some(n));
    assert_eq!(stats_once_restored(&app).await.count("roll"), n);
}

async fn every_flush_adds_the_counts_to_the_document_store(app: TestApp) {
    rolls(&app, 4).await;
    let alice = app.login_new_user("alice").await;
    let id = app.viewer_id(&alice).await;
    // No stats query (it would flush): the background flush, every 100 ms, does it.
    wait_until(Duration::from_secs(2), || async {
        stored_count(&app, "roll").await == Some(4)
    })
    .await;
    wait_until(Duration::from_secs(2), || async {
        app.state
            .docs
            .get(USAGE_COLLECTION, "user_set")
            .await
            .unwrap()
            .is_some_and(|d| d["members"] == json!([id.to_string()]))
    })
    .await;
}

crate::scenario! {
    backends: [embedded, postgres_redis];
    settings: |s| {
        s.sync_enabled = true;
        s.sync_interval_secs = 3600;
    };
    counts_survive_a_restart_of_arena,
    counts_are_restored_from_documents_after_the_cache_is_emptied,
    counting_and_restore_passes_at_once_never_count_twice,
    the_shutdown_flush_loses_nothing_written_just_before_stop,
}

// ---- a cache outage ---------------------------------------------------------------------

/// With Redis unreachable, operations keep succeeding and their counts reach the document
/// store; `stats` answers from it; once Redis is back the cache's counters catch up.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cache_outage_delays_counts_but_loses_none() {
    let Some((app, mut proxy)) = TestApp::builder(Backends::Real)
        .try_spawn_behind_proxy()
        .await
    else {
        return;
    };
    rolls(&app, 2).await;
    wait_until(Duration::from_secs(10), || async {
        stats(&app).await.count("roll") == 2
    })
    .await;

    proxy.cut();
    // Every operation still succeeds; their counts reach the documents, not the cache.
    rolls(&app, 5).await;
    assert!(
        !app.usage.flush(&app.state).await,
        "the totals cannot be published while the cache is unreachable"
    );
    assert_eq!(stored_count(&app, "roll").await, Some(7));
    // `stats` answers from the document store instead of failing.
    assert_eq!(stats_now(&app).await, Some(7));

    proxy.restore().await;
    wait_until(Duration::from_secs(20), || async {
        read_counter(app.state.kv.as_ref(), "c_roll")
            .await
            .is_ok_and(|n| n == 7)
    })
    .await;
    assert_eq!(stats_now(&app).await, Some(7));
}

/// The `roll` count, or `None` when `stats` cannot answer.
async fn stats_now(app: &TestApp) -> Option<i64> {
    let r = app
        .gql("{ stats { commands { name count } } }", json!({}))
        .await;
    r["data"]["stats"]["commands"]
        .as_array()?
        .iter()
        .find(|c| c["name"] == "roll")
        .and_then(|c| c["count"].as_i64())
        .or(Some(0))
}

/// Issue 15 §1: a Redis of the test's own, without persistence, is killed and started again
/// empty while two replicas count `roll`s. Every acknowledged operation is counted exactly,
/// in `stats` on both replicas and in the cache's own counter.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn counts_survive_a_redis_restart_while_two_replicas_count() {
    let Some(mut redis) = PrivateRedis::try_start().await else {
        return;
    };
    let url = redis.url();
    let Some(a) = TestApp::builder(Backends::Real)
        .settings(|s| s.redis_url = Some(url))
        .try_spawn()
        .await
    else {
        return;
    };
    let b = a.spawn_replica().await;
    let counter = format!("{}c_roll", a.state.cache_prefix);
    let (a, b) = (std::sync::Arc::new(a), std::sync::Arc::new(b));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let acked = std::sync::Arc::new(std::sync::atomic::AtomicI64::new(0));
    let mut load = vec![];
    for app in [a.clone(), a.clone(), b.clone(), b.clone()] {
        let (stop, acked) = (stop.clone(), acked.clone());
        load.push(tokio::spawn(async move {
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let r = app.gql(ROLL, json!({})).await;
                if r["errors"].is_null() {
                    acked.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
            }
        }));
    }
    let acked_now = || acked.load(std::sync::atomic::Ordering::SeqCst);
    wait_until(Duration::from_secs(10), || async { acked_now() >= 200 }).await;
    let in_redis = |redis: &PrivateRedis| redis.cli(&["get", &counter]).parse::<i64>().unwrap_or(0);
    wait_until(Duration::from_secs(10), || async {
        in_redis(&redis) >= 100
    })
    .await;

    let before = acked_now();
    redis.restart().await;
    // Restarted without persistence, so empty: the replicas may have put counts back
    // already by the time the test could look.
    let back = std::time::Instant::now();
    // The cache's counter has every count acknowledged before the restart again.
    wait_until(Duration::from_secs(20), || async {
        in_redis(&redis) >= before
    })
    .await;
    let caught_up = back.elapsed();
    wait_until(Duration::from_secs(10), || async {
        acked_now() >= before + 200
    })
    .await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    for task in load {
        task.await.unwrap();
    }
    let total = acked_now();
    for app in [&a, &b] {
        wait_until(Duration::from_secs(10), || async {
            stats(app).await.count("roll") == total
        })
        .await;
    }
    assert!(a.usage.flush(&a.state).await && b.usage.flush(&b.state).await);
    let cached = in_redis(&redis);
    assert_eq!(cached, total, "the cache's counter");
    assert_eq!(stored_count(&a, "roll").await, Some(total));
    figure(&format!(
        "{total} rolls acknowledged ({before} before the restart); final count {total} in \
         stats on both replicas, {cached} in Redis, {total} in the documents; the new Redis \
         had every earlier count {caught_up:?} after it accepted connections"
    ));
}
