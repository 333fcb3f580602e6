//! Cached lists (docs/cache-consistency.md, "Collections"): a warm list is served from the
//! memo with no SQL, and a read that starts after an acknowledged write sees it on every
//! replica — a create, a delete, a filter-field change, a new ranking, a nested list — with
//! the near cache on, on Redis and on a Redis Cluster; nothing of a rolled-back write, and
//! nothing stale across an outage.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use serde_json::{json, Value};

use crate::fixtures::battles::prep_ok;
use crate::fixtures::id_of;
use crate::fixtures::meals::{create_meal, delete_meal};
use crate::support::*;

const SQL: &str = "arena_sql_queries_total{caller=\"request\"}";
const MEMO_HITS: &str = "arena_response_memo_total{result=\"hit\"}";

const THAI: &str = "query($c: String) { meals(first: 100, cuisine: $c) { totalCount edges { node { id name cuisine price } } } }";
const LEADERBOARD: &str =
    "{ leaderboard(sortBy: WINS, first: 10) { rank meal { id wins battles } } }";
const TRAINERS: &str = "{ trainers(first: 10) { edges { node { id pokemons { id level } } } } }";

/// Runs `query` on `app` until its answer comes from the memo with no SQL statement (the
/// list is warm), and returns that answer.
async fn warm(app: &TestApp, query: &str, vars: Value) -> Value {
    let last = Arc::new(Mutex::new(Value::Null));
    wait_until(Duration::from_secs(10), || async {
        let (sql, hits) = (app.metric(SQL).await, app.metric(MEMO_HITS).await);
        let r = app.gql(query, vars.clone()).await;
        assert_no_errors(&r);
        *last.lock() = r;
        app.metric(SQL).await == sql && app.metric(MEMO_HITS).await > hits
    })
    .await;
    let last = last.lock().clone();
    last
}

/// The ids of a connection's nodes.
fn ids(conn: &Value) -> Vec<String> {
    conn["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| id_of(&e["node"]))
        .collect()
}

async fn thai(app: &TestApp) -> Value {
    let r = app.gql(THAI, json!({ "c": "Thai" })).await;
    assert_no_errors(&r);
    r["data"]["meals"].clone()
}

async fn update_cuisine(app: &TestApp, token: &str, id: &str, cuisine: &str) {
    let r = app
        .gql_as(
            token,
            "mutation($id: ID!, $c: String!) { updateMeal(id: $id, input: { cuisine: $c }) { id } }",
            json!({ "id": id, "c": cuisine }),
        )
        .await;
    assert_no_errors(&r);
}

/// A warm `meals(cuisine:)` list on replica B, then writes on A: a create, a delete and a
/// cuisine change moving a meal out of the filter and back; B's very next read shows each.
async fn a_warm_list_on_another_replica_shows_creates_deletes_and_filter_changes(app: TestApp) {
    let b = app.spawn_replica().await;
    let chef = app.login_new_user("chef").await;
    let first = id_of(&create_meal(&app, &chef, "Pad Thai", "Thai", 9.0, "LOW").await);
    let vars = json!({ "c": "Thai" });
    let warmed = warm(&b, THAI, vars.clone()).await;
    assert_eq!(ids(&warmed["data"]["meals"]), [first.as_str()]);

    let second = id_of(&create_meal(&app, &chef, "Som Tam", "Thai", 6.0, "LOW").await);
    let list = thai(&b).await;
    assert_eq!(ids(&list), [first.clone(), second.clone()], "a create");
    assert_eq!(list["totalCount"], 2);

    warm(&b, THAI, vars.clone()).await;
    update_cuisine(&app, &chef, &first, "Lao").await;
    assert_eq!(
        ids(&thai(&b).await),
        [second.as_str()],
        "moved out of the filter"
    );
    warm(&b, THAI, vars.clone()).await;
    update_cuisine(&app, &chef, &first, "Thai").await;
    assert_eq!(
        ids(&thai(&b).await),
        [first.clone(), second.clone()],
        "back in"
    );

    warm(&b, THAI, vars.clone()).await;
    assert_no_errors(&delete_meal(&app, &chef, &second).await);
    let list = thai(&b).await;
    assert_eq!(ids(&list), [first.as_str()], "a delete");
    assert_eq!(list["totalCount"], 1);

    // A price change is seen too (the list holds the rows, not only their ids).
    warm(&b, THAI, vars.clone()).await;
    let r = app
        .gql_as(
            &chef,
            "mutation($id: ID!) { updateMeal(id: $id, input: { price: 12.5 }) { id } }",
            json!({ "id": first }),
        )
        .await;
    assert_no_errors(&r);
    assert_eq!(thai(&b).await["edges"][0]["node"]["price"], 12.5);
    b.stop().await;
}

/// A new user preps meals `a` and `b` and fights them (the winner stays in a ring, so each
/// battle has a ring of its own).
async fn battle(app: &TestApp, a: &str, b: &str) {
    let fighter = &app.login_new_user(&format!("fighter-{a}-{b}")).await;
    prep_ok(app, fighter, a).await;
    prep_ok(app, fighter, b).await;
    let r = app
        .gql_as(fighter, "mutation { battle { id } }", json!({}))
        .await;
    assert_no_errors(&r);
}

/// A warm leaderboard on B; a battle fought on A reorders it, and B's next read has the new
/// order.
async fn a_battle_on_one_replica_reorders_the_warm_leaderboard_of_another(app: TestApp) {
    let b = app.spawn_replica().await;
    let chef = app.login_new_user("chef").await;
    // The score is price × len(cuisine): `strong` wins whatever the order.
    let strong = id_of(&create_meal(&app, &chef, "Strong", "Thai", 50.0, "LOW").await);
    let weak = id_of(&create_meal(&app, &chef, "Weak", "Thai", 1.0, "LOW").await);
    battle(&app, &strong, &weak).await;
    let board = warm(&b, LEADERBOARD, json!({})).await;
    assert_eq!(
        board["data"]["leaderboard"][0]["meal"]["id"],
        strong.as_str()
    );
    assert_eq!(board["data"]["leaderboard"][0]["meal"]["wins"], 1);

    // A third meal beats `strong` twice: it leads the board by wins.
    let champion = id_of(&create_meal(&app, &chef, "Champion", "Thai", 90.0, "LOW").await);
    let champion_leads =
        |board: &Value| board["data"]["leaderboard"][0]["meal"]["id"] == champion.as_str();
    battle(&app, &champion, &strong).await;
    warm(&b, LEADERBOARD, json!({})).await;
    battle(&app, &champion, &weak).await;
    let board = b.gql(LEADERBOARD, json!({})).await;
    assert!(
        champion_leads(&board),
        "B's next read is reordered: {board:#}"
    );
    assert_eq!(board["data"]["leaderboard"][0]["meal"]["wins"], 2);
    b.stop().await;
}

/// `trainers { pokemons }` warm on B; a Pokémon created on A shows in B's next read.
async fn a_warm_nested_list_shows_a_write_made_on_another_replica(app: TestApp) {
    let b = app.spawn_replica().await;
    let token = app.login_new_user("ash").await;
    let trainer = |id: &str| json!({ "i": { "id": id, "firstName": "A", "lastName": "K", "dateOfBirth": "1990-01-01" } });
    let create_trainer = "mutation($i: CreateTrainerInput!) { createTrainer(input: $i) { id } }";
    let create_pokemon = "mutation($i: CreatePokemonInput!) { createPokemon(input: $i) { id } }";
    assert_no_errors(&app.gql_as(&token, create_trainer, trainer("ash")).await);
    assert_no_errors(&app.gql_as(&token, create_trainer, trainer("misty")).await);
    let pokemon = |id: &str, owner: &str| json!({ "i": { "id": id, "nickname": id, "species": "Pikachu", "level": 5, "ownerId": owner } });
    assert_no_errors(
        &app.gql_as(&token, create_pokemon, pokemon("p1", "ash"))
            .await,
    );
    let nested = warm(&b, TRAINERS, json!({})).await;
    assert_eq!(
        nested["data"]["trainers"]["edges"][1]["node"]["pokemons"],
        json!([])
    );

    assert_no_errors(
        &app.gql_as(&token, create_pokemon, pokemon("p2", "misty"))
            .await,
    );
    let r = b.gql(TRAINERS, json!({})).await;
    assert_eq!(
        r["data"]["trainers"]["edges"][1]["node"]["pokemons"][0]["id"], "p2",
        "{r:#}"
    );
    warm(&b, TRAINERS, json!({})).await;
    assert_no_errors(&app.gql_as(&token, create_trainer, trainer("brock")).await);
    let r = b.gql(TRAINERS, json!({})).await;
    assert_eq!(r["data"]["trainers"]["edges"].as_array().unwrap().len(), 3);
    b.stop().await;
}

/// A write that rolls back (a create refused by the unique name, after its statement ran)
/// leaves every cached list as it was: B's warm list is still served from the memo and holds
/// nothing of it.
async fn a_rolled_back_write_never_reaches_a_cached_list(app: TestApp) {
    let b = app.spawn_replica().await;
    let chef = app.login_new_user("chef").await;
    let first = id_of(&create_meal(&app, &chef, "Khao Soi", "Thai", 9.0, "LOW").await);
    let vars = json!({ "c": "Thai" });
    warm(&b, THAI, vars.clone()).await;
    let r = app
        .gql_as(
            &chef,
            "mutation { createMeal(input: { name: \"Khao Soi\", cuisine: \"Thai\", price: 1, difficulty: LOW }) { id } }",
            json!({}),
        )
        .await;
    assert!(!r["errors"].is_null(), "the duplicate is refused: {r:#}");
    let sql = b.metric(SQL).await;
    assert_eq!(ids(&thai(&b).await), [first.as_str()]);
    assert_eq!(b.metric(SQL).await, sql, "still served from the memo");
    assert_eq!(ids(&thai(&app).await), [first]);
    b.stop().await;
}

/// Writers create and delete meals on two replicas while readers list them on both: every
/// list read holds every meal whose create was acknowledged before the read began (unless a
/// delete of it was sent meanwhile) and none whose delete was.
async fn no_list_read_is_older_than_a_write_acknowledged_before_it(app: TestApp) {
    #[derive(Default)]
    struct Acked {
        created: HashSet<String>,
        deleting: HashSet<String>,
        deleted: HashSet<String>,
    }
    let b = app.spawn_replica().await;
    let chef = app.login_new_user("chef").await;
    let (a, b) = (Arc::new(app), Arc::new(b));
    let acked = Arc::new(Mutex::new(Acked::default()));
    let (hits_before, reads) = (
        a.metric(MEMO_HITS).await + b.metric(MEMO_HITS).await,
        Arc::new(std::sync::atomic::AtomicU64::new(0)),
    );
    let mut tasks = vec![];
    for w in 0..2 {
        let app = if w == 0 { a.clone() } else { b.clone() };
        let (chef, acked) = (chef.clone(), acked.clone());
        tasks.push(tokio::spawn(async move {
            let mut mine = vec![];
            for i in 0..30 {
                let name = format!("stress-{w}-{i}");
                let id = id_of(&create_meal(&app, &chef, &name, "Thai", 1.0, "LOW").await);
                acked.lock().created.insert(id.clone());
                mine.push(id);
                if i % 3 == 2 {
                    let gone = mine.remove(0);
                    acked.lock().deleting.insert(gone.clone());
                    assert_no_errors(&delete_meal(&app, &chef, &gone).await);
                    acked.lock().deleted.insert(gone);
                }
            }
        }));
    }
    for r in 0..6 {
        let app = if r % 2 == 0 { a.clone() } else { b.clone() };
        let (acked, reads) = (acked.clone(), reads.clone());
        tasks.push(tokio::spawn(async move {
            for _ in 0..60 {
                let (present, gone): (Vec<String>, HashSet<String>) = {
                    let a = acked.lock();
                    (
                        a.created.difference(&a.deleting).cloned().collect(),
                        a.deleted.clone(),
                    )
                };
                let listed: HashSet<String> = ids(&thai(&app).await).into_iter().collect();
                reads.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let deleting = acked.lock().deleting.clone();
                for id in present.iter().filter(|id| !deleting.contains(*id)) {
                    assert!(listed.contains(id), "meal {id} acknowledged, not listed");
                }
                for id in &gone {
                    assert!(!listed.contains(id), "meal {id} deleted, still listed");
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let from_memo = a.metric(MEMO_HITS).await + b.metric(MEMO_HITS).await - hits_before;
    let expected: HashSet<String> = {
        let acked = acked.lock();
        acked.created.difference(&acked.deleted).cloned().collect()
    };
    for app in [&a, &b] {
        let listed: HashSet<String> = ids(&thai(app).await).into_iter().collect();
        assert_eq!(listed, expected);
    }
    figure(&format!(
        "60 creates and 20 deletes on two replicas, {} list reads ({from_memo} answered from the memo), none older than an acknowledged write",
        reads.load(std::sync::atomic::Ordering::Relaxed)
    ));
}

crate::scenario! {
    backends: replicas;
    a_warm_list_on_another_replica_shows_creates_deletes_and_filter_changes,
    a_battle_on_one_replica_reorders_the_warm_leaderboard_of_another,
    a_warm_nested_list_shows_a_write_made_on_another_replica,
    a_rolled_back_write_never_reaches_a_cached_list,
    no_list_read_is_older_than_a_write_acknowledged_before_it,
}

/// The same rule on one instance, embedded or not: a warm list makes no SQL statement, and
/// the next read after a write shows it.
async fn a_warm_list_is_served_without_sql_and_the_next_read_after_a_write_shows_it(app: TestApp) {
    let chef = app.login_new_user("chef").await;
    let first = id_of(&create_meal(&app, &chef, "Larb", "Thai", 5.0, "LOW").await);
    warm(&app, THAI, json!({ "c": "Thai" })).await;
    let second = id_of(&create_meal(&app, &chef, "Larb Gai", "Thai", 5.0, "LOW").await);
    assert_eq!(ids(&thai(&app).await), [first, second]);
    // A list that selects no `totalCount` runs no count.
    let sql = app.metric(SQL).await;
    let r = app
        .gql("{ meals(first: 5) { edges { node { id } } } }", json!({}))
        .await;
    assert_no_errors(&r);
    assert_eq!(app.metric(SQL).await - sql, 1.0, "one statement, no count");
}

crate::scenario! {
    backends: [embedded, postgres_redis, postgres_redis_cluster];
    a_warm_list_is_served_without_sql_and_the_next_read_after_a_write_shows_it,
}

/// Replica B reaches Redis through a proxy, which is cut while A writes: B's lists are read
/// from the database meanwhile and show the write, and once Redis is back B serves nothing
/// older than it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_list_on_a_replica_cut_from_the_cache_is_never_stale_during_or_after_the_outage() {
    let Some((b, mut proxy)) = TestApp::builder(Backends::Real)
        .try_spawn_behind_proxy()
        .await
    else {
        return;
    };
    let a = b.spawn_direct_replica().await;
    let chef = a.login_new_user("chef").await;
    let first = id_of(&create_meal(&a, &chef, "Tom Yum", "Thai", 7.0, "LOW").await);
    warm(&b, THAI, json!({ "c": "Thai" })).await;

    proxy.cut();
    let second = id_of(&create_meal(&a, &chef, "Tom Kha", "Thai", 7.0, "LOW").await);
    assert_eq!(
        ids(&thai(&b).await),
        [first.clone(), second.clone()],
        "during the outage"
    );
    proxy.restore().await;
    wait_until(Duration::from_secs(20), || async {
        !b.state.cache_health.degraded()
    })
    .await;
    assert_eq!(ids(&thai(&b).await), [first.clone(), second.clone()]);
    let third = id_of(&create_meal(&a, &chef, "Tom Saep", "Thai", 7.0, "LOW").await);
    let listed = warm(&b, THAI, json!({ "c": "Thai" })).await;
    assert_eq!(ids(&listed["data"]["meals"]), [first, second, third]);
}

/// `entity::TABLES`, which decides whether a statement read only versioned collections, is
/// every table of the migrated schema: a table added later without it would be read as
/// "not a table" and its lists served stale.
async fn the_known_tables_are_every_table_of_the_schema(app: TestApp) {
    use sea_orm::{ConnectionTrait, DatabaseBackend, Statement};
    let db = &app.state.db;
    let sql = match db.get_database_backend() {
        DatabaseBackend::Sqlite => {
            "SELECT name AS t FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
        }
        _ => "SELECT table_name::text AS t FROM information_schema.tables WHERE table_schema = current_schema()",
    };
    let rows = db
        .query_all(Statement::from_string(db.get_database_backend(), sql))
        .await
        .unwrap();
    let mut found: Vec<String> = rows
        .iter()
        .map(|r| r.try_get::<String>("", "t").unwrap())
        .collect();
    found.sort();
    assert_eq!(found, entity::TABLES);
}

crate::scenario! {
    backends: [embedded, postgres_redis];
    the_known_tables_are_every_table_of_the_schema,
}
