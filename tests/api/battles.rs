//! The battle ring, battles, their history and live battle results (SPEC §4 from "Battle
//! ring" on), and the ring's round trip through log out / log in (SPEC §3).
//!
//! Meals are chosen so that the winner rule is deterministic where a test needs it: a score
//! gap of 100 or more gives delta ≥ 1 > r, so combatant 1 always wins; equal scores give
//! delta 0, so combatant 2 always wins.

use std::collections::HashSet;
use std::time::Duration;

use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

use crate::fixtures::battles::{prep, prep_ok};
use crate::fixtures::id_of;
use crate::fixtures::meals::{create_meal, delete_meal, get_meal};
use crate::support::ws;
use crate::support::*;

const BATTLE_FIELDS: &str =
    "id winner { id name battles wins } loser { id name battles wins } winnerScore loserScore delta random foughtAt";

/// A meal that beats [`weak`] whenever it is combatant 1 (score 697 against 0).
async fn strong(app: &TestApp, token: &str, name: &str) -> String {
    id_of(&create_meal(app, token, name, "Italian", 100.0, "LOW").await)
}

/// A meal with score 0 (2 × 1 − 2).
async fn weak(app: &TestApp, token: &str, name: &str) -> String {
    id_of(&create_meal(app, token, name, "X", 2.0, "MED").await)
}

fn ids(list: &Value) -> Vec<String> {
    list.as_array()
        .unwrap_or_else(|| panic!("expected a list: {list}"))
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_owned())
        .collect()
}

async fn ring(app: &TestApp, token: &str) -> Vec<String> {
    let r = app.gql_as(token, "{ combatants { id } }", json!({})).await;
    assert_no_errors(&r);
    ids(&r["data"]["combatants"])
}

async fn clear(app: &TestApp, token: &str) {
    let r = app
        .gql_as(token, "mutation { clearCombatants }", json!({}))
        .await;
    assert_no_errors(&r);
    assert_eq!(r["data"]["clearCombatants"], true);
}

async fn battle(app: &TestApp, token: &str) -> Value {
    app.gql_as(
        token,
        &format!("mutation {{ battle {{ {BATTLE_FIELDS} }} }}"),
        json!({}),
    )
    .await
}

async fn battle_ok(app: &TestApp, token: &str) -> Value {
    let r = battle(app, token).await;
    assert_no_errors(&r);
    r["data"]["battle"].clone()
}

/// Clears the ring, preps `a` then `b`, fights; returns the battle.
async fn fight(app: &TestApp, token: &str, a: &str, b: &str) -> Value {
    clear(app, token).await;
    prep_ok(app, token, a).await;
    prep_ok(app, token, b).await;
    battle_ok(app, token).await
}

// ---------------------------------------------------------------- the ring

async fn ring_operations_need_a_signed_in_viewer(app: TestApp) {
    let token = app.login_new_user("alice").await;
    let a = strong(&app, &token, "Lasagne").await;
    for (query, vars) in [
        (
            "mutation($m: ID!) { prepCombatant(mealId: $m) { id } }",
            json!({ "m": a }),
        ),
        ("mutation { clearCombatants }", json!({})),
        ("mutation { battle { id } }", json!({})),
        ("{ combatants { id } }", json!({})),
    ] {
        let r = app.gql(query, vars).await;
        assert_eq!(error_code(&r), "UNAUTHENTICATED", "{query}: {r}");
    }
}

async fn a_ring_holds_two_distinct_live_meals_and_says_why_it_refuses(app: TestApp) {
    let token = app.login_new_user("alice").await;
    let a = strong(&app, &token, "Lasagne").await;
    let b = weak(&app, &token, "Toast").await;
    let c = weak(&app, &token, "Crackers").await;
    let gone = weak(&app, &token, "Gone").await;
    let r = delete_meal(&app, &token, &gone).await;
    assert_no_errors(&r);
    assert!(
        ring(&app, &token).await.is_empty(),
        "a new user's ring is empty"
    );

    let r = prep(&app, &token, &a).await;
    assert_no_errors(&r);
    assert_eq!(ids(&r["data"]["prepCombatant"]), vec![a.clone()]);
    assert_eq!(r["data"]["prepCombatant"][0]["name"], "Lasagne");

    let r = prep(&app, &token, &a).await;
    assert_eq!(error_code(&r), "BAD_USER_INPUT");
    assert!(
        error_message(&r).contains("mealId") && error_message(&r).contains("already in the ring"),
        "{r}"
    );

    let r = prep(&app, &token, &gone).await;
    assert_eq!(
        error_code(&r),
        "NOT_FOUND",
        "a deleted meal cannot be prepped: {r}"
    );
    assert!(error_message(&r).contains("mealId"), "{r}");

    let r = prep(&app, &token, "987654").await;
    assert_eq!(
        error_code(&r),
        "NOT_FOUND",
        "an unknown meal cannot be prepped: {r}"
    );

    let r = prep(&app, &token, "not-an-id").await;
    assert_eq!(error_code(&r), "BAD_USER_INPUT", "{r}");
    assert!(error_message(&r).contains("mealId"), "{r}");

    let r = battle(&app, &token).await;
    assert_eq!(
        error_code(&r),
        "BAD_USER_INPUT",
        "one combatant cannot battle: {r}"
    );
    assert!(error_message(&r).contains("two combatants"), "{r}");

    let r = prep(&app, &token, &b).await;
    assert_no_errors(&r);
    assert_eq!(ids(&r["data"]["prepCombatant"]), vec![a.clone(), b.clone()]);

    let r = prep(&app, &token, &c).await;
    assert_eq!(
        error_code(&r),
        "BAD_USER_INPUT",
        "a third combatant is refused: {r}"
    );
    assert!(error_message(&r).contains("already holds 2"), "{r}");

    assert_eq!(
        ring(&app, &token).await,
        vec![a.clone(), b.clone()],
        "refusals change nothing"
    );

    clear(&app, &token).await;
    assert!(ring(&app, &token).await.is_empty());
    let r = battle(&app, &token).await;
    assert_eq!(
        error_code(&r),
        "BAD_USER_INPUT",
        "an empty ring cannot battle: {r}"
    );
}

async fn each_user_has_their_own_ring(app: TestApp) {
    let alice = app.login_new_user("alice").await;
    let bob = app.login_new_user("bob").await;
    let a = strong(&app, &alice, "Lasagne").await;
    let b = weak(&app, &alice, "Toast").await;
    prep_ok(&app, &alice, &a).await;
    prep_ok(&app, &alice, &b).await;
    assert!(
        ring(&app, &bob).await.is_empty(),
        "bob never sees alice's ring"
    );
    let r = battle(&app, &bob).await;
    assert_eq!(
        error_code(&r),
        "BAD_USER_INPUT",
        "bob cannot fight alice's ring: {r}"
    );
    prep_ok(&app, &bob, &b).await;
    assert_eq!(ring(&app, &bob).await, vec![b.clone()]);
    clear(&app, &bob).await;
    assert_eq!(
        ring(&app, &alice).await,
        vec![a, b],
        "bob's clear leaves alice's ring alone"
    );
}

// ---------------------------------------------------------------- battles

async fn a_battle_updates_both_meals_stores_the_result_and_sends_the_loser_out(app: TestApp) {
    let token = app.login_new_user("alice").await;
    let a = strong(&app, &token, "Lasagne").await;
    let b = weak(&app, &token, "Toast").await;
    prep_ok(&app, &token, &a).await;
    prep_ok(&app, &token, &b).await;

    let fought = battle_ok(&app, &token).await;
    assert_eq!(
        fought["winner"]["id"],
        a.as_str(),
        "combatant 1 wins a delta of 6.97"
    );
    assert_eq!(fought["loser"]["id"], b.as_str());
    assert_eq!(fought["winnerScore"], 697.0);
    assert_eq!(fought["loserScore"], 0.0);
    assert_eq!(fought["delta"], 6.97);
    let random = fought["random"].as_f64().unwrap();
    assert!((0.0..1.0).contains(&random));
    assert_eq!(fought["winner"]["battles"], 1);
    assert_eq!(fought["winner"]["wins"], 1);
    assert_eq!(fought["loser"]["battles"], 1);
    assert_eq!(fought["loser"]["wins"], 0);

    // The loser left the ring; the winner stays.
    assert_eq!(ring(&app, &token).await, vec![a.clone()]);

    // Every read (through the cache) sees the new stats.
    let sa = get_meal(&app, &a).await;
    assert_eq!(
        (
            sa["battles"].as_i64(),
            sa["wins"].as_i64(),
            sa["winPct"].as_f64()
        ),
        (Some(1), Some(1), Some(1.0))
    );
    let sb = get_meal(&app, &b).await;
    assert_eq!(
        (
            sb["battles"].as_i64(),
            sb["wins"].as_i64(),
            sb["winPct"].as_f64()
        ),
        (Some(1), Some(0), Some(0.0))
    );

    // The history keeps it.
    let r = app
        .gql(
            &format!("query($id: ID!) {{ battle(id: $id) {{ {BATTLE_FIELDS} }} }}"),
            json!({ "id": fought["id"] }),
        )
        .await;
    assert_no_errors(&r);
    let stored = &r["data"]["battle"];
    for f in ["id", "winnerScore", "loserScore", "delta", "random"] {
        assert_eq!(stored[f], fought[f], "{f}");
    }
    assert_eq!(stored["winner"]["id"], a.as_str());
    assert_eq!(stored["loser"]["name"], "Toast");

    // The leaderboard reflects it.
    let r = app
        .gql(
            "{ leaderboard(sortBy: WINS) { rank meal { id wins } } }",
            json!({}),
        )
        .await;
    assert_no_errors(&r);
    let board = r["data"]["leaderboard"].as_array().unwrap();
    assert_eq!(board.len(), 2);
    assert_eq!(board[0]["meal"]["id"], a.as_str());
    assert_eq!(board[0]["rank"], 1);
    assert_eq!(board[1]["meal"]["id"], b.as_str());

    // Unknown and malformed battle ids.
    let r = app.gql("{ battle(id: \"99999\") { id } }", json!({})).await;
    assert_no_errors(&r);
    assert!(r["data"]["battle"].is_null());
    let r = app.gql("{ battle(id: \"x\") { id } }", json!({})).await;
    assert_eq!(error_code(&r), "BAD_USER_INPUT");
}

async fn combatant_one_wins_a_big_delta_and_combatant_two_wins_a_tie(app: TestApp) {
    let token = app.login_new_user("alice").await;
    let a = strong(&app, &token, "Lasagne").await;
    let b = weak(&app, &token, "Toast").await;
    let twin_1 = id_of(&create_meal(&app, &token, "Twin One", "Thai", 10.0, "HIGH").await);
    let twin_2 = id_of(&create_meal(&app, &token, "Twin Two", "Thai", 10.0, "HIGH").await);

    // The weak meal as combatant 1 still wins on delta ≥ 1.
    let f = fight(&app, &token, &b, &a).await;
    assert_eq!(f["winner"]["id"], b.as_str());

    for _ in 0..3 {
        let f = fight(&app, &token, &twin_1, &twin_2).await;
        assert_eq!(f["delta"], 0.0);
        assert_eq!(
            f["winner"]["id"],
            twin_2.as_str(),
            "a tie goes to combatant 2"
        );
        let f = fight(&app, &token, &twin_2, &twin_1).await;
        assert_eq!(
            f["winner"]["id"],
            twin_1.as_str(),
            "a tie goes to combatant 2"
        );
    }
    let s = get_meal(&app, &twin_1).await;
    assert_eq!(
        (s["battles"].as_i64(), s["wins"].as_i64()),
        (Some(6), Some(3))
    );
}

async fn a_combatant_deleted_after_prepping_cannot_fight_and_leaves_the_ring(app: TestApp) {
    let token = app.login_new_user("alice").await;
    let a = strong(&app, &token, "Lasagne").await;
    let b = weak(&app, &token, "Toast").await;
    prep_ok(&app, &token, &a).await;
    prep_ok(&app, &token, &b).await;
    let r = delete_meal(&app, &token, &b).await;
    assert_no_errors(&r);
    let r = battle(&app, &token).await;
    assert_eq!(error_code(&r), "NOT_FOUND", "{r}");
    assert!(error_message(&r).contains(&b), "{r}");
    assert_eq!(ring(&app, &token).await, vec![a.clone()]);
    assert_eq!(get_meal(&app, &a).await["battles"], 0, "nothing was fought");
    let r = app.gql("{ battles { totalCount } }", json!({})).await;
    assert_eq!(r["data"]["battles"]["totalCount"], 0);
}

async fn the_history_keeps_naming_a_meal_deleted_after_its_battle(app: TestApp) {
    let token = app.login_new_user("alice").await;
    let a = strong(&app, &token, "Lasagne").await;
    let b = weak(&app, &token, "Toast").await;
    let f = fight(&app, &token, &a, &b).await;
    let r = delete_meal(&app, &token, &b).await;
    assert_no_errors(&r);
    let r = app
        .gql(
            "query($id: ID!) { battle(id: $id) { winner { name } loser { id name battles } } }",
            json!({ "id": f["id"] }),
        )
        .await;
    assert_no_errors(&r);
    assert_eq!(r["data"]["battle"]["winner"]["name"], "Lasagne");
    assert_eq!(r["data"]["battle"]["loser"]["name"], "Toast");
    assert_eq!(r["data"]["battle"]["loser"]["battles"], 1);
}

async fn battles_page_newest_first_and_filter_by_meal(app: TestApp) {
    let token = app.login_new_user("alice").await;
    let a = strong(&app, &token, "Lasagne").await;
    let b = weak(&app, &token, "Toast").await;
    let c = weak(&app, &token, "Crackers").await;
    let mut with_a = Vec::new();
    for _ in 0..3 {
        with_a.push(
            fight(&app, &token, &a, &b).await["id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    let bc = fight(&app, &token, &b, &c).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    with_a.push(
        fight(&app, &token, &c, &a).await["id"]
            .as_str()
            .unwrap()
            .to_owned(),
    );
    with_a.reverse(); // newest first

    let page = |after: Option<String>| {
        let app = &app;
        let a = a.clone();
        async move {
            let r = app
                .gql(
                    "query($m: ID, $after: String) { battles(first: 2, after: $after, mealId: $m) { \
                       totalCount edges { cursor node { id winner { id } loser { id } } } \
                       pageInfo { hasNextPage endCursor } } }",
                    json!({ "m": a, "after": after }),
                )
                .await;
            assert_no_errors(&r);
            r["data"]["battles"].clone()
        }
    };
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let p = page(after).await;
        assert_eq!(p["totalCount"], 4);
        for e in p["edges"].as_array().unwrap() {
            let n = &e["node"];
            assert!(n["winner"]["id"] == a.as_str() || n["loser"]["id"] == a.as_str());
            seen.push(n["id"].as_str().unwrap().to_owned());
        }
        if p["pageInfo"]["hasNextPage"] != true {
            break;
        }
        after = p["pageInfo"]["endCursor"].as_str().map(str::to_owned);
    }
    assert_eq!(seen, with_a, "every battle of the meal, newest first, once");

    let r = app
        .gql(
            "{ battles(first: 100) { totalCount edges { node { id } } } }",
            json!({}),
        )
        .await;
    assert_no_errors(&r);
    assert_eq!(r["data"]["battles"]["totalCount"], 5);
    assert_eq!(r["data"]["battles"]["edges"][1]["node"]["id"], bc.as_str());

    let r = app
        .gql("{ battles(first: 101) { totalCount } }", json!({}))
        .await;
    assert_eq!(error_code(&r), "BAD_USER_INPUT", "pages are capped");
    let r = app
        .gql("{ battles(after: \"bogus\") { totalCount } }", json!({}))
        .await;
    assert_eq!(error_code(&r), "BAD_USER_INPUT");
}

async fn two_battles_at_once_on_one_ring_count_once(app: TestApp) {
    let token = app.login_new_user("alice").await;
    let a = strong(&app, &token, "Lasagne").await;
    let b = weak(&app, &token, "Toast").await;
    for round in 1..=4 {
        clear(&app, &token).await;
        prep_ok(&app, &token, &a).await;
        prep_ok(&app, &token, &b).await;
        let (r1, r2) = tokio::join!(battle(&app, &token), battle(&app, &token));
        let ok: Vec<&Value> = [&r1, &r2]
            .into_iter()
            .filter(|r| r.get("errors").is_none_or(|e| e.is_null()))
            .collect();
        assert_eq!(ok.len(), 1, "exactly one battle is fought: {r1} {r2}");
        let refused = if ok[0] == &r1 { &r2 } else { &r1 };
        assert_eq!(error_code(refused), "BAD_USER_INPUT", "{refused}");
        let r = app.gql("{ battles { totalCount } }", json!({})).await;
        assert_eq!(r["data"]["battles"]["totalCount"], round);
        let (sa, sb) = (get_meal(&app, &a).await, get_meal(&app, &b).await);
        assert_eq!(sa["battles"], round, "stats moved once per round");
        assert_eq!(sb["battles"], round);
        assert_eq!(
            sa["wins"].as_i64().unwrap() + sb["wins"].as_i64().unwrap(),
            round
        );
    }
}

crate::scenario! {
    backends: [embedded, postgres_redis];
    ring_operations_need_a_signed_in_viewer,
    a_ring_holds_two_distinct_live_meals_and_says_why_it_refuses,
    each_user_has_their_own_ring,
    a_battle_updates_both_meals_stores_the_result_and_sends_the_loser_out,
    combatant_one_wins_a_big_delta_and_combatant_two_wins_a_tie,
    a_combatant_deleted_after_prepping_cannot_fight_and_leaves_the_ring,
    the_history_keeps_naming_a_meal_deleted_after_its_battle,
    battles_page_newest_first_and_filter_by_meal,
    two_battles_at_once_on_one_ring_count_once,
}

// ---------------------------------------------------------------- settings-dependent

const VERSIONED_READS: &str = "arena_cache_round_trips_total{op=\"leased_get_many\"}";

/// Fights the prepped ring, selecting no meal (so the response itself reads no meal), and
/// returns how many versioned cache reads the battle made.
async fn meal_reads_of_one_battle(app: &TestApp, token: &str) -> f64 {
    let before = app.metric(VERSIONED_READS).await;
    let r = app
        .gql_as(token, "mutation { battle { id winnerScore } }", json!({}))
        .await;
    assert_no_errors(&r);
    app.metric(VERSIONED_READS).await - before
}

async fn an_unexpired_combatant_is_not_fetched_again(app: TestApp) {
    let token = app.login_new_user("alice").await;
    let a = strong(&app, &token, "Lasagne").await;
    let b = weak(&app, &token, "Toast").await;
    let c = weak(&app, &token, "Crackers").await;
    prep_ok(&app, &token, &a).await;
    prep_ok(&app, &token, &b).await;
    assert_eq!(meal_reads_of_one_battle(&app, &token).await, 0.0);
    // The winner stays with fresh data; the newcomer is fresh too.
    prep_ok(&app, &token, &c).await;
    assert_eq!(meal_reads_of_one_battle(&app, &token).await, 0.0);
}

async fn expired_combatants_are_fetched_again_in_one_round_trip(app: TestApp) {
    let token = app.login_new_user("alice").await;
    let a = strong(&app, &token, "Lasagne").await;
    let b = weak(&app, &token, "Toast").await;
    prep_ok(&app, &token, &a).await;
    prep_ok(&app, &token, &b).await;
    // A change the ring's copy does not know of: the re-fetch must see it.
    let r = app
        .gql_as(
            &token,
            "mutation($id: ID!) { updateMeal(id: $id, input: { price: 200 }) { id } }",
            json!({ "id": b }),
        )
        .await;
    assert_no_errors(&r);
    let before = app.metric(VERSIONED_READS).await;
    let r = app
        .gql_as(
            &token,
            "mutation { battle { id winnerScore loserScore } }",
            json!({}),
        )
        .await;
    assert_no_errors(&r);
    assert_eq!(
        app.metric(VERSIONED_READS).await - before,
        1.0,
        "both expired, one round trip"
    );
    // 200 × 1 − 2 = 198 for the re-fetched weak meal.
    let scores = [
        r["data"]["battle"]["winnerScore"].as_f64(),
        r["data"]["battle"]["loserScore"].as_f64(),
    ];
    assert!(
        scores.contains(&Some(198.0)),
        "scored from re-fetched data: {r}"
    );
}

async fn a_random_seed_makes_the_draws_reproducible(app: TestApp) {
    let token = app.login_new_user("alice").await;
    let a = id_of(&create_meal(&app, &token, "Near One", "Thai", 10.0, "HIGH").await);
    let b = id_of(&create_meal(&app, &token, "Near Two", "Thai", 10.0, "LOW").await);
    let mut expected = rand::rngs::StdRng::seed_from_u64(20261122);
    for _ in 0..5 {
        let f = fight(&app, &token, &a, &b).await;
        let want: f64 = expected.random();
        let got = f["random"].as_f64().unwrap();
        assert!((got - want).abs() < 1e-12, "draw {got}, expected {want}");
        // delta 0.02: combatant 1 wins only when the draw is below it.
        let first_won = f["winner"]["id"] == a.as_str();
        assert_eq!(first_won, 0.02 > want);
    }
}

crate::scenario! {
    backends: [embedded, postgres_redis];
    an_unexpired_combatant_is_not_fetched_again => |s| s.combatant_ttl_secs = 3600,
    expired_combatants_are_fetched_again_in_one_round_trip => |s| s.combatant_ttl_secs = 0,
    a_random_seed_makes_the_draws_reproducible => |s| s.random_seed = Some(20261122),
}

// ---------------------------------------------------------------- live results

const RESULTS: &str = "subscription($m: ID) { battleResults(mealId: $m) { id delta \
                       winner { id name } loser { id name } } }";

/// Fights `a` against `b` until the subscriber receives one of those battles (so its
/// subscription is live), then reads on until the last battle fought has arrived, leaving
/// the stream in step with the fights. Bounded: fails after 40 attempts.
async fn until_live(app: &TestApp, token: &str, client: &mut ws::WsClient, a: &str, b: &str) {
    let mut fought = HashSet::new();
    for _ in 0..40 {
        let last = fight(app, token, a, b).await["id"]
            .as_str()
            .unwrap()
            .to_owned();
        fought.insert(last.clone());
        if let Some(p) = client.next_data(Duration::from_millis(250)).await {
            let got = p["data"]["battleResults"]["id"]
                .as_str()
                .unwrap()
                .to_owned();
            assert!(fought.contains(&got), "received a battle never fought: {p}");
            let mut got = got;
            while got != last {
                let p = client
                    .next_data(Duration::from_secs(10))
                    .await
                    .expect("the later battles arrive too");
                got = p["data"]["battleResults"]["id"]
                    .as_str()
                    .unwrap()
                    .to_owned();
                assert!(fought.contains(&got), "received a battle never fought: {p}");
            }
            return;
        }
    }
    panic!("the subscription never delivered a battle");
}

async fn next_battle_id(client: &mut ws::WsClient) -> String {
    let p = client
        .next_data(Duration::from_secs(10))
        .await
        .expect("a battle result arrives");
    p["data"]["battleResults"]["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn subscribers_see_every_battle_as_it_is_fought(app: TestApp) {
    let token = app.login_new_user("alice").await;
    let a = strong(&app, &token, "Lasagne").await;
    let b = weak(&app, &token, "Toast").await;
    let c = weak(&app, &token, "Crackers").await;
    let mut client = ws::connect(&app.ws_url(), ws::TRANSPORT_WS, json!({})).await;
    client.subscribe("all", RESULTS, json!({})).await;
    until_live(&app, &token, &mut client, &a, &b).await;

    let f1 = fight(&app, &token, &b, &c).await;
    let f2 = fight(&app, &token, &c, &a).await;
    assert_eq!(
        next_battle_id(&mut client).await,
        f1["id"].as_str().unwrap()
    );
    let p = client.next_data(Duration::from_secs(10)).await.unwrap();
    let got = &p["data"]["battleResults"];
    assert_eq!(got["id"], f2["id"]);
    assert_eq!(
        got["winner"]["id"],
        c.as_str(),
        "combatant 1 wins a big delta"
    );
    assert_eq!(got["loser"]["name"], "Lasagne");

    // Once completed, the subscription delivers nothing more.
    client.complete("all").await;
    let f3 = fight(&app, &token, &a, &b).await;
    if let Some(m) = client.next_message(Duration::from_millis(500)).await {
        assert_ne!(
            m.kind, "next",
            "a completed subscription got {:?} after {f3}",
            m.payload
        );
    }
    client.close().await;
}

async fn a_filtered_subscription_sees_only_its_meals_battles(app: TestApp) {
    let token = app.login_new_user("alice").await;
    let a = strong(&app, &token, "Lasagne").await;
    let b = weak(&app, &token, "Toast").await;
    let c = weak(&app, &token, "Crackers").await;
    let mut client = ws::connect(
        &app.ws_url(),
        ws::TRANSPORT_WS,
        json!({ "authorization": format!("Bearer {token}") }),
    )
    .await;
    client.subscribe("a", RESULTS, json!({ "m": a })).await;
    until_live(&app, &token, &mut client, &a, &b).await;

    let unrelated = fight(&app, &token, &b, &c).await;
    let as_loser = fight(&app, &token, &c, &a).await;
    let as_winner = fight(&app, &token, &a, &c).await;
    let got = next_battle_id(&mut client).await;
    assert_ne!(
        got,
        unrelated["id"].as_str().unwrap(),
        "the B–C battle is filtered out"
    );
    assert_eq!(got, as_loser["id"].as_str().unwrap());
    assert_eq!(
        next_battle_id(&mut client).await,
        as_winner["id"].as_str().unwrap()
    );

    let r = app.gql("{ battles { totalCount } }", json!({})).await;
    assert!(r["data"]["battles"]["totalCount"].as_i64().unwrap() >= 4);
    client.close().await;
}

async fn the_legacy_graphql_ws_protocol_delivers_battles_too(app: TestApp) {
    let token = app.login_new_user("alice").await;
    let a = strong(&app, &token, "Lasagne").await;
    let b = weak(&app, &token, "Toast").await;
    let mut client = ws::connect(&app.ws_url(), ws::LEGACY_WS, json!({})).await;
    client.subscribe("legacy", RESULTS, json!({ "m": b })).await;
    until_live(&app, &token, &mut client, &a, &b).await;
    let f = fight(&app, &token, &b, &a).await;
    assert_eq!(next_battle_id(&mut client).await, f["id"].as_str().unwrap());
    client.complete("legacy").await;
    client.close().await;
}

async fn a_malformed_meal_filter_is_refused(app: TestApp) {
    let mut client = ws::connect(&app.ws_url(), ws::TRANSPORT_WS, json!({})).await;
    client
        .subscribe("bad", RESULTS, json!({ "m": "nope" }))
        .await;
    let m = client
        .next_message(Duration::from_secs(10))
        .await
        .expect("an answer to a bad subscription");
    let errors = if m.kind == "error" {
        m.payload.clone()
    } else {
        m.payload["errors"].clone()
    };
    assert_eq!(errors[0]["extensions"]["code"], "BAD_USER_INPUT", "{m:?}");
    client.close().await;
}

async fn a_battle_fought_on_one_replica_reaches_subscribers_and_rings_on_another(app: TestApp) {
    let replica = app.spawn_replica().await;
    let token = app.login_new_user("alice").await;
    let a = strong(&app, &token, "Lasagne").await;
    let b = weak(&app, &token, "Toast").await;

    // The ring is one ring, whichever replica is asked.
    clear(&app, &token).await;
    prep_ok(&app, &token, &a).await;
    assert_eq!(ring(&replica, &token).await, vec![a.clone()]);
    prep_ok(&replica, &token, &b).await;
    assert_eq!(ring(&app, &token).await, vec![a.clone(), b.clone()]);
    let r = prep(&replica, &token, &a).await;
    assert_eq!(
        error_code(&r),
        "BAD_USER_INPUT",
        "the replica knows a is already in: {r}"
    );
    clear(&replica, &token).await;
    assert!(ring(&app, &token).await.is_empty());

    // Live results cross replicas.
    let mut on_b = ws::connect(&replica.ws_url(), ws::TRANSPORT_WS, json!({})).await;
    on_b.subscribe("x", RESULTS, json!({})).await;
    until_live(&app, &token, &mut on_b, &a, &b).await;
    let f = fight(&app, &token, &b, &a).await;
    let p = on_b
        .next_data(Duration::from_secs(10))
        .await
        .expect("replica B hears of it");
    assert_eq!(p["data"]["battleResults"]["id"], f["id"]);
    assert_eq!(p["data"]["battleResults"]["winner"]["id"], b.as_str());
    on_b.close().await;

    // And the stats fought on A read the same on B.
    let stats = get_meal(&replica, &b).await;
    assert_eq!(stats, get_meal(&app, &b).await);
    replica.stop().await;
}

crate::scenario! {
    backends: [embedded, postgres_redis];
    subscribers_see_every_battle_as_it_is_fought,
    a_filtered_subscription_sees_only_its_meals_battles,
    the_legacy_graphql_ws_protocol_delivers_battles_too,
    a_malformed_meal_filter_is_refused,
}

crate::scenario! {
    backends: replicas;
    a_battle_fought_on_one_replica_reaches_subscribers_and_rings_on_another,
}

// ---------------------------------------------------------------- log out / log in

async fn logging_out_and_in_again_restores_the_ring(app: TestApp) {
    let token = app.login_new_user("alice").await;
    let user = app.viewer_id(&token).await.to_string();
    let a = strong(&app, &token, "Lasagne").await;
    let b = weak(&app, &token, "Toast").await;
    prep_ok(&app, &token, &b).await;
    prep_ok(&app, &token, &a).await;
    app.log_out(&token).await;

    // Saved in the session document, gone from the cache tier.
    let doc = app
        .state
        .docs
        .get("sessions", &user)
        .await
        .unwrap()
        .expect("a session document");
    let saved: Vec<String> = doc["combatants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["mealId"].to_string())
        .collect();
    assert_eq!(saved, vec![b.clone(), a.clone()]);
    assert_eq!(
        app.state.kv.get(&format!("ring:{user}")).await.unwrap(),
        None
    );

    let token = app.log_in("alice").await;
    assert_eq!(
        ring(&app, &token).await,
        vec![b.clone(), a.clone()],
        "restored in order"
    );
    let f = battle_ok(&app, &token).await;
    assert_eq!(
        f["winner"]["id"],
        b.as_str(),
        "the restored order decides who is combatant 1"
    );
}

async fn a_restored_ring_skips_meals_deleted_while_logged_out(app: TestApp) {
    let token = app.login_new_user("alice").await;
    let other = app.login_new_user("bob").await;
    let a = strong(&app, &token, "Lasagne").await;
    let b = weak(&app, &token, "Toast").await;
    prep_ok(&app, &token, &a).await;
    prep_ok(&app, &token, &b).await;
    app.log_out(&token).await;
    let r = delete_meal(&app, &other, &a).await;
    assert_no_errors(&r);
    let token = app.log_in("alice").await;
    assert_eq!(ring(&app, &token).await, vec![b.clone()]);
}

async fn logging_in_replaces_the_ring_with_the_saved_one(app: TestApp) {
    let token = app.login_new_user("alice").await;
    let user = app.viewer_id(&token).await.to_string();
    let doc = app
        .state
        .docs
        .get("sessions", &user)
        .await
        .unwrap()
        .expect("created at log in");
    assert_eq!(doc["combatants"], json!([]));
    let a = strong(&app, &token, "Lasagne").await;
    prep_ok(&app, &token, &a).await;
    // A second log in (another device) restores the saved ring: empty.
    let second = app.log_in("alice").await;
    assert!(ring(&app, &second).await.is_empty());
    assert!(
        ring(&app, &token).await.is_empty(),
        "one ring per user, whichever session"
    );
}

crate::scenario! {
    backends: [embedded, postgres_redis];
    logging_out_and_in_again_restores_the_ring,
    a_restored_ring_skips_meals_deleted_while_logged_out,
    logging_in_replaces_the_ring_with_the_saved_one,
}
