//! The near cache (docs/cache-consistency.md, "Near caches"): on Redis, each replica serves
//! the entries it read again without a round trip while it holds a near lease, and a write is
//! acknowledged only once every lease holder dropped its keys or its lease ran out.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use crate::fixtures::meals::{chef_with_a_meal, delete_meal, get_meal, price, update_price};
use crate::support::*;

/// Cache calls made for requests (what a warm read served from the near cache makes none
/// of).
async fn request_round_trips(app: &TestApp) -> f64 {
    let mut sum = 0.0;
    for op in ["leased_get_many", "leased_fill_many"] {
        sum += app
            .metric(&format!(
                "arena_cache_round_trips_total{{op=\"{op}\",caller=\"request\"}}"
            ))
            .await;
    }
    sum
}

async fn near_hits(app: &TestApp) -> f64 {
    app.metric("arena_near_cache_total{result=\"hit\"}").await
}

/// Waits until `app` holds its near lease (it renews in the background from its start).
async fn holding_lease(app: &TestApp, id: &str) {
    wait_until(Duration::from_secs(10), || async {
        get_meal(app, id).await;
        let before = request_round_trips(app).await;
        get_meal(app, id).await;
        request_round_trips(app).await == before
    })
    .await;
}

/// Replica B serves its warm reads from its near cache (no round trip to Redis at all), and
/// its very next read after a write on A, acknowledged, is the new row; the same the other
/// way round, and after a delete.
async fn warm_reads_come_from_the_near_cache_and_a_write_on_another_replica_empties_it(
    app: TestApp,
) {
    let b = app.spawn_replica().await;
    let (t, id) = chef_with_a_meal(&app, "Near").await;
    holding_lease(&b, &id).await;
    holding_lease(&app, &id).await;
    let hits = b.metric("arena_near_cache_total{result=\"hit\"}").await;
    let trips = request_round_trips(&b).await;
    for _ in 0..5 {
        assert_eq!(price(&get_meal(&b, &id).await), 1.0);
    }
    assert_eq!(request_round_trips(&b).await, trips, "no round trip");
    assert!(b.metric("arena_near_cache_total{result=\"hit\"}").await >= hits + 5.0);

    for p in [2.0, 3.0, 4.0] {
        assert_no_errors(&update_price(&app, &t, &id, p).await);
        assert_eq!(
            price(&get_meal(&b, &id).await),
            p,
            "B's next read after A's write"
        );
        // B keeps the new entry: its next read is from the near cache again.
        holding_lease(&b, &id).await;
        assert_eq!(price(&get_meal(&b, &id).await), p);
        assert_no_errors(&update_price(&b, &t, &id, p + 0.5).await);
        assert_eq!(
            price(&get_meal(&app, &id).await),
            p + 0.5,
            "and the other way"
        );
        holding_lease(&app, &id).await;
    }
    assert!(
        b.metric("arena_near_cache_total{result=\"dropped\"}").await >= 3.0,
        "A's writes dropped B's copies"
    );
    assert_eq!(
        app.metric("arena_near_cache_total{result=\"revoked\"}")
            .await,
        0.0,
        "every holder acknowledged in time"
    );
    assert_no_errors(&delete_meal(&app, &t, &id).await);
    let r = b
        .gql(
            "query($id: ID!) { meal(id: $id) { id } }",
            json!({ "id": id }),
        )
        .await;
    assert!(r["data"]["meal"].is_null(), "{r:#}");
    b.stop().await;
}

/// Writers and readers on two replicas at once, every read served from a near cache where
/// it can: no read's version is older than the newest write acknowledged before the read
/// began, whichever replica wrote and whichever read.
async fn no_read_on_either_replica_is_older_than_a_write_acknowledged_before_it(app: TestApp) {
    let b = app.spawn_replica().await;
    let (t, id) = chef_with_a_meal(&app, "NearStress").await;
    holding_lease(&app, &id).await;
    holding_lease(&b, &id).await;
    let hits_before = near_hits(&app).await + near_hits(&b).await;
    let (a, b) = (Arc::new(app), Arc::new(b));
    let committed = Arc::new(AtomicI64::new(1));
    let mut tasks = vec![];
    for w in 0..4 {
        let app = if w % 2 == 0 { a.clone() } else { b.clone() };
        let (t, id, committed) = (t.clone(), id.clone(), committed.clone());
        tasks.push(tokio::spawn(async move {
            for i in 0..40 {
                let r = update_price(&app, &t, &id, 1.0 + (w * 1000 + i) as f64).await;
                assert_no_errors(&r);
                let v = r["data"]["updateMeal"]["version"].as_i64().unwrap();
                committed.fetch_max(v, Ordering::SeqCst);
            }
        }));
    }
    for r in 0..8 {
        let app = if r % 2 == 0 { a.clone() } else { b.clone() };
        let (id, committed) = (id.clone(), committed.clone());
        tasks.push(tokio::spawn(async move {
            for _ in 0..150 {
                let floor = committed.load(Ordering::SeqCst);
                let v = get_meal(&app, &id).await["version"].as_i64().unwrap();
                assert!(
                    v >= floor,
                    "read version {v} is older than acknowledged {floor}"
                );
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let served_near = near_hits(&a).await + near_hits(&b).await - hits_before;
    assert_eq!(get_meal(&b, &id).await["version"], 1 + 160);
    assert_eq!(get_meal(&a, &id).await["version"], 1 + 160);
    figure(&format!(
        "160 writes on two replicas, 1200 reads of which {served_near} keys came from a near cache, none older than an acknowledged write"
    ));
}

crate::scenario! {
    backends: replicas;
    warm_reads_come_from_the_near_cache_and_a_write_on_another_replica_empties_it,
    no_read_on_either_replica_is_older_than_a_write_acknowledged_before_it,
}

/// Replica B reaches Redis through a proxy that the test freezes: B can neither acknowledge
/// an invalidation nor renew its lease. A's write is held back until B's lease has run out
/// (A revokes it) and then acknowledged; B, thawed, reads the new row, and joins again with
/// an empty near cache, so that A's next write is acknowledged by B itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_that_cannot_acknowledge_holds_a_write_back_only_until_its_lease_ran_out() {
    let Some((b, proxy)) = TestApp::builder(Backends::Real)
        .try_spawn_behind_proxy()
        .await
    else {
        return;
    };
    let a = b.spawn_direct_replica().await;
    let (t, id) = chef_with_a_meal(&a, "Frozen").await;
    holding_lease(&b, &id).await;
    assert_eq!(price(&get_meal(&b, &id).await), 1.0);

    proxy.freeze();
    let started = std::time::Instant::now();
    assert_no_errors(&update_price(&a, &t, &id, 2.0).await);
    let held_back = started.elapsed();
    assert_eq!(
        a.metric("arena_near_cache_total{result=\"revoked\"}").await,
        1.0,
        "A revoked B's lease"
    );
    // Whatever B answers now is not older than A's acknowledged write: its lease is over,
    // so it reads Redis (which times out while frozen) and then the database.
    assert_eq!(price(&get_meal(&b, &id).await), 2.0);
    proxy.thaw();
    wait_until(Duration::from_secs(20), || async {
        !b.state.cache_health.degraded()
    })
    .await;
    assert_eq!(price(&get_meal(&b, &id).await), 2.0);
    holding_lease(&b, &id).await;
    assert_no_errors(&update_price(&a, &t, &id, 3.0).await);
    assert_eq!(price(&get_meal(&b, &id).await), 3.0);
    assert_eq!(
        a.metric("arena_near_cache_total{result=\"revoked\"}").await,
        1.0,
        "B joined again and acknowledged A's next write itself"
    );
    figure(&format!(
        "a write with one replica frozen was acknowledged after {held_back:?} (the ack timeout, then the rest of the frozen replica's 1 s lease)"
    ));
}

/// Lost cache state (issue: a restart, a failover or a flush empties the lease set). Replica
/// B reaches its Redis through a proxy that turns into a black hole, then the Redis restarts
/// empty: B never learns of either and keeps its near lease by its own clock. A, connected
/// directly, writes as soon as the cache answers again and finds no lease holder. The write
/// is acknowledged only once every lease granted before the loss has run out, so B's read
/// right after the acknowledgement is the new row, not its near copy.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_cut_off_while_the_cache_loses_its_state_serves_no_near_copy_after_the_next_write(
) {
    let Some(mut redis) = PrivateRedis::try_start().await else {
        return;
    };
    let proxy = Proxy::start(&redis.url()).await;
    // B's commands time out late, so that a renewal lost in the hole does not end its lease
    // early: its near copy stays served for as long as its lease lets it.
    let Some(b) = TestApp::builder(Backends::Real)
        .settings(|s| {
            s.redis_url = Some(proxy.url());
            s.redis_timeout_ms = 3_000;
        })
        .try_spawn()
        .await
    else {
        return;
    };
    let a = b
        .spawn_replica_with(|s| {
            s.redis_url = Some(redis.url());
            s.redis_timeout_ms = 250;
        })
        .await;
    let (t, id) = chef_with_a_meal(&a, "Amnesia").await;
    holding_lease(&b, &id).await;
    assert_eq!(price(&get_meal(&b, &id).await), 1.0);
    let grace = "arena_near_cache_total{result=\"grace\"}";
    let waited_before = a.metric(grace).await;

    proxy.black_hole();
    redis.restart().await;
    let restarted = std::time::Instant::now();
    // A's first writes are refused until its connections are back (`strict`).
    let acknowledged = std::sync::Mutex::new(None);
    wait_until(Duration::from_secs(20), || async {
        let sent = std::time::Instant::now();
        let r = update_price(&a, &t, &id, 2.0).await;
        if r["errors"].is_array() {
            assert_eq!(error_code(&r), "UNAVAILABLE", "{r:#}");
            return false;
        }
        *acknowledged.lock().unwrap() = Some((sent.elapsed(), restarted.elapsed()));
        true
    })
    .await;
    assert_eq!(
        price(&get_meal(&b, &id).await),
        2.0,
        "B, cut off, serves no near copy from before the loss after the write"
    );
    assert!(
        a.metric(grace).await > waited_before,
        "A's write waited out the grace"
    );
    let (took, since) = acknowledged.lock().unwrap().expect("acknowledged");
    proxy.heal();
    figure(&format!(
        "the write after the cache lost its state took {took:?} (the grace of a lease), \
         acknowledged {since:?} after the restart"
    ));
}
