//! The consistency policies (`ARENA_CONSISTENCY`) when one replica is cut off from the cache
//! and when the whole cache is away, and the cache namespace bound to its database (SPEC
//! §10): a re-created database or `arena cache-reset` leaves nothing old to read.

use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arena::config::Consistency;
use entity::meal;
use sea_orm::{ActiveModelTrait, ConnectionTrait, Set};
use serde_json::json;

use crate::fixtures::meals::{
    cached_entry, chef_with_a_meal, create_meal, db_row, get_meal, price, stored_entry,
    update_price,
};
use crate::support::*;

/// Replica A reaches Redis through a proxy the test cuts; replica B reaches it directly. Both
/// share the database, the cache prefix and the namespace.
async fn partitioned(consistency: Consistency) -> Option<(TestApp, TestApp, Proxy)> {
    let (a, proxy) = TestApp::builder(Backends::Real)
        .settings(|s| s.consistency = consistency)
        .try_spawn_behind_proxy()
        .await?;
    let b = a.spawn_direct_replica().await;
    Some((a, b, proxy))
}

/// `strict`: while A is cut off, every write of a cached meal on A is refused with
/// `UNAVAILABLE` and leaves the row as it was; writes on B go on. Readers on both replicas
/// never see a version older than the newest acknowledged write that finished before their
/// read began. Once A reaches Redis again its writes succeed and B's next read sees them.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn under_strict_a_replica_cut_off_from_the_cache_refuses_writes_and_no_read_is_older() {
    let Some((a, b, mut proxy)) = partitioned(Consistency::Strict).await else {
        return;
    };
    let (t, id) = chef_with_a_meal(&a, "Partitioned").await;
    assert_eq!(price(&get_meal(&a, &id).await), 1.0);
    assert_eq!(price(&get_meal(&b, &id).await), 1.0);
    assert!(cached_entry(&b, &id).await.is_some(), "warm on B");

    proxy.cut();
    let started = Instant::now();
    let r = update_price(&a, &t, &id, 2.0).await;
    let refused_in = started.elapsed();
    assert_eq!(error_code(&r), "UNAVAILABLE", "{r:#}");
    assert!(error_message(&r).contains("nothing was written"), "{r:#}");
    assert_eq!(db_row(&a, &id).await.price, 1.0, "nothing was committed");
    assert_eq!(price(&get_meal(&b, &id).await), 1.0);
    assert_eq!(price(&get_meal(&a, &id).await), 1.0, "A reads the database");
    // A write that touches no cached entity is not held back (a new account, its session);
    // one to the viewer's own data is, since their answers are memoized on every replica.
    let newcomer = a.login_new_user("newcomer").await;
    let r = a
        .gql_as(
            &newcomer,
            "mutation { putSpec(input: { id: \"s\", version: \"1\", modelCount: 1 }) { version } }",
            json!({}),
        )
        .await;
    assert_eq!(error_code(&r), "UNAVAILABLE", "{r:#}");
    let r = b.gql_as(&newcomer, "{ modelCount }", json!({})).await;
    assert_eq!(r["data"]["modelCount"], 0, "nothing was written: {r:#}");

    // Writers on both replicas, readers on both, all at once.
    let (a, b) = (Arc::new(a), Arc::new(b));
    let committed = Arc::new(AtomicI64::new(1));
    let refused = Arc::new(AtomicUsize::new(0));
    let acknowledged = Arc::new(AtomicUsize::new(0));
    let reads = Arc::new(AtomicUsize::new(0));
    let mut tasks = vec![];
    for (w, app) in [a.clone(), b.clone()].into_iter().enumerate() {
        let (t, id) = (t.clone(), id.clone());
        let (committed, refused, acknowledged) =
            (committed.clone(), refused.clone(), acknowledged.clone());
        tasks.push(tokio::spawn(async move {
            for i in 0..30 {
                let r = update_price(&app, &t, &id, 10.0 + (w * 100 + i) as f64).await;
                if r["errors"].is_array() {
                    assert_eq!(w, 0, "only A, cut off, refuses: {r:#}");
                    assert_eq!(error_code(&r), "UNAVAILABLE", "{r:#}");
                    refused.fetch_add(1, Ordering::SeqCst);
                } else {
                    let v = r["data"]["updateMeal"]["version"].as_i64().unwrap();
                    committed.fetch_max(v, Ordering::SeqCst);
                    acknowledged.fetch_add(1, Ordering::SeqCst);
                }
            }
        }));
    }
    for app in [a.clone(), b.clone(), b.clone()] {
        let (id, committed, reads) = (id.clone(), committed.clone(), reads.clone());
        tasks.push(tokio::spawn(async move {
            for _ in 0..60 {
                let floor = committed.load(Ordering::SeqCst);
                let v = get_meal(&app, &id).await["version"].as_i64().unwrap();
                assert!(
                    v >= floor,
                    "read version {v} is older than acknowledged {floor}"
                );
                reads.fetch_add(1, Ordering::SeqCst);
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let (refused, acknowledged) = (
        refused.load(Ordering::SeqCst),
        acknowledged.load(Ordering::SeqCst),
    );
    assert_eq!(refused, 30, "every write on A was refused");
    assert_eq!(acknowledged, 30, "every write on B was acknowledged");
    let row = db_row(&a, &id).await;
    assert_eq!(row.version, 1 + 30, "only B's writes were committed");

    // Healed: A's writes go through again and B's next read sees them.
    proxy.restore().await;
    let healed = Instant::now();
    wait_until(Duration::from_secs(20), || async {
        !a.state.cache_health.degraded()
    })
    .await;
    let recovered_in = healed.elapsed();
    assert_no_errors(&update_price(&a, &t, &id, 7.0).await);
    assert_eq!(price(&get_meal(&b, &id).await), 7.0);
    figure(&format!(
        "refused in {refused_in:?}; during the partition {refused} writes on A refused, \
         {acknowledged} on B acknowledged, {} reads none older than an acknowledged write; \
         A used the cache again {recovered_in:?} after it was reachable",
        reads.load(Ordering::SeqCst)
    ));
}

/// `available`: A's write during the partition is acknowledged, and B serves the older entry
/// until A reaches Redis again and delivers the deletion it owes: the staleness window is
/// the partition plus A's reconnection and recovery, which the docs bound at 3 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn under_available_a_cut_off_replica_s_write_is_hidden_only_until_it_reaches_the_cache() {
    let Some((a, b, mut proxy)) = partitioned(Consistency::Available).await else {
        return;
    };
    let (t, id) = chef_with_a_meal(&a, "Available").await;
    assert_eq!(price(&get_meal(&b, &id).await), 1.0);
    assert!(cached_entry(&b, &id).await.is_some(), "warm on B");

    proxy.cut();
    assert_no_errors(&update_price(&a, &t, &id, 2.0).await);
    let acknowledged = Instant::now();
    assert_eq!(db_row(&a, &id).await.price, 2.0);
    // The known limit of this policy: B reads the older entry while A is cut off.
    let mut stale_reads = 0;
    while acknowledged.elapsed() < Duration::from_secs(1) {
        assert_eq!(price(&get_meal(&b, &id).await), 1.0, "B cannot know yet");
        stale_reads += 1;
    }
    proxy.restore().await;
    let healed = Instant::now();
    wait_until(Duration::from_secs(20), || async {
        price(&get_meal(&b, &id).await) == 2.0
    })
    .await;
    let after_heal = healed.elapsed();
    let window = acknowledged.elapsed();
    assert!(
        after_heal <= Duration::from_secs(3),
        "B served the older entry {after_heal:?} after A could reach Redis (docs: ≤ 3 s)"
    );
    figure(&format!(
        "stale window {window:?} = partition {:?} + {after_heal:?} after A reached Redis \
         again ({stale_reads} stale reads on B)",
        healed - acknowledged
    ));
}

/// `available`, a partition that never heals: B's older entry stops being served when it
/// expires (`ARENA_CACHE_TTL`, here 2 s), the outer bound of the staleness.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn under_available_staleness_ends_when_the_entry_expires_even_if_the_partition_lasts() {
    let Some((a, mut proxy)) = TestApp::builder(Backends::Real)
        .settings(|s| {
            s.consistency = Consistency::Available;
            s.cache_ttl_secs = 2;
        })
        .try_spawn_behind_proxy()
        .await
    else {
        return;
    };
    let b = a.spawn_direct_replica().await;
    let (t, id) = chef_with_a_meal(&a, "Expiring").await;
    // B fills its entry now: it expires 2 s from here.
    wait_until(Duration::from_secs(5), || async {
        get_meal(&b, &id).await;
        cached_entry(&b, &id).await.is_some()
    })
    .await;
    let filled = Instant::now();

    proxy.cut();
    assert_no_errors(&update_price(&a, &t, &id, 2.0).await);
    let acknowledged = Instant::now();
    wait_until(Duration::from_secs(10), || async {
        price(&get_meal(&b, &id).await) == 2.0
    })
    .await;
    let fresh_after_fill = filled.elapsed();
    assert!(
        fresh_after_fill <= Duration::from_millis(2_500),
        "the entry outlived its TTL: {fresh_after_fill:?}"
    );
    figure(&format!(
        "partition never healed: B fresh {:?} after the write, {fresh_after_fill:?} after \
         its entry was filled (TTL 2 s)",
        acknowledged.elapsed()
    ));
}

/// `strict`, the whole cache away: writes of cached entities are refused (nothing is
/// committed, so none is lost), reads are served from the database throughout, writes that
/// touch no cached entity and counting go on; once the cache is back everything works and
/// nothing stale is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn under_strict_a_cache_outage_refuses_cached_writes_loses_none_and_serves_reads() {
    let Some((app, mut proxy)) = TestApp::builder(Backends::Real)
        .settings(|s| s.consistency = Consistency::Strict)
        .try_spawn_behind_proxy()
        .await
    else {
        return;
    };
    let (t, id) = chef_with_a_meal(&app, "Outage").await;
    assert_eq!(price(&get_meal(&app, &id).await), 1.0);

    proxy.cut();
    let mut refused = 0;
    for p in [2.0, 3.0, 4.0] {
        let r = update_price(&app, &t, &id, p).await;
        assert_eq!(error_code(&r), "UNAVAILABLE", "{r:#}");
        refused += 1;
        assert_eq!(price(&get_meal(&app, &id).await), 1.0, "reads are served");
    }
    let r = app
        .gql_as(
            &t,
            "mutation { createMeal(input: { name: \"New\", cuisine: \"x\", price: 5, difficulty: LOW }) { id } }",
            json!({}),
        )
        .await;
    assert_eq!(
        error_code(&r),
        "UNAVAILABLE",
        "a new meal is a cached entity too"
    );
    refused += 1;
    let r = app
        .gql("{ mealByName(name: \"New\") { id } }", json!({}))
        .await;
    assert_no_errors(&r);
    assert!(r["data"]["mealByName"].is_null(), "nothing was committed");
    assert_eq!(db_row(&app, &id).await.version, 1);
    // Writes that touch no cached entity go on (a new account, its session); a write to the
    // viewer's own data is refused, since their answers are memoized per credential.
    let other = app.login_new_user("newcomer").await;
    let put =
        "mutation { putSpec(input: { id: \"s\", version: \"1\", modelCount: 2 }) { version } }";
    let r = app.gql_as(&other, put, json!({})).await;
    assert_eq!(error_code(&r), "UNAVAILABLE", "{r:#}");
    let r = app.gql_as(&other, "{ modelCount }", json!({})).await;
    assert_eq!(r["data"]["modelCount"], 0, "nothing was written: {r:#}");
    refused += 1;

    proxy.restore().await;
    wait_until(Duration::from_secs(20), || async {
        !app.state.cache_health.degraded()
    })
    .await;
    assert_no_errors(&update_price(&app, &t, &id, 6.0).await);
    assert_eq!(price(&get_meal(&app, &id).await), 6.0);
    assert_no_errors(&app.gql_as(&other, put, json!({})).await);
    let r = app.gql_as(&other, "{ modelCount }", json!({})).await;
    assert_eq!(r["data"]["modelCount"], 2, "{r:#}");
    figure(&format!(
        "{refused} cached writes refused during the outage, 0 committed"
    ));
}

/// `strict`, a Redis that does not answer (the proxy holds every byte, as a paused server or
/// a network that lost its packets): each cached write is refused with `UNAVAILABLE` and
/// nothing is written; once the cache answers again, writes are accepted. The refusals'
/// latency (against `ARENA_REDIS_TIMEOUT_MS`) and the time writes take to come back are
/// reported as figures.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn under_strict_a_cache_that_does_not_answer_refuses_writes_and_takes_them_again_after() {
    let Some((app, proxy)) = TestApp::builder(Backends::Real)
        .settings(|s| s.consistency = Consistency::Strict)
        .try_spawn_behind_proxy()
        .await
    else {
        return;
    };
    let (t, id) = chef_with_a_meal(&app, "Paused").await;
    assert_eq!(price(&get_meal(&app, &id).await), 1.0);

    proxy.freeze();
    let mut took = Vec::new();
    for i in 0..20 {
        let started = Instant::now();
        let r = update_price(&app, &t, &id, 2.0 + f64::from(i)).await;
        took.push(started.elapsed());
        assert_eq!(error_code(&r), "UNAVAILABLE", "{r:#}");
    }
    assert_eq!(db_row(&app, &id).await.version, 1, "nothing was committed");

    proxy.thaw();
    let thawed = Instant::now();
    let refused_after = AtomicUsize::new(0);
    wait_until(Duration::from_secs(20), || {
        let (app, t, id, refused_after) = (&app, &t, &id, &refused_after);
        async move {
            let r = update_price(app, t, id, 50.0).await;
            if r["errors"].is_array() {
                assert_eq!(error_code(&r), "UNAVAILABLE", "{r:#}");
                refused_after.fetch_add(1, Ordering::SeqCst);
                false
            } else {
                true
            }
        }
    })
    .await;
    let back_in = thawed.elapsed();
    assert_eq!(price(&get_meal(&app, &id).await), 50.0);
    took.sort();
    let timeout = Duration::from_millis(app.state.settings.redis_timeout_ms);
    figure(&format!(
        "20 writes refused while Redis did not answer (ARENA_REDIS_TIMEOUT_MS {timeout:?}): \
         p50 {:?}, p99 {:?}, max {:?} (the first found the cache away); writes accepted \
         again {back_in:?} after it answered ({} refused meanwhile)",
        took[took.len() / 2],
        took[took.len() * 99 / 100],
        took[took.len() - 1],
        refused_after.load(Ordering::SeqCst),
    ));
}

/// A write refused while its replica is degraded clears no mark it did not set (found by the
/// fault suite, `tests/faults`). Here the mark is one left by a write cut off between
/// `COMMIT` and `end_write`: raised, and the row changed, with the old entry still in the
/// cache, which the mark hides. A, behind a frozen proxy, turns degraded and refuses a write
/// of the same meal; once the proxy thaws, whatever A sent is delivered. B still reads the
/// committed row, not the entry the mark hides.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_write_refused_while_degraded_clears_no_mark_it_did_not_set() {
    let Some((a, proxy)) = TestApp::builder(Backends::Real)
        .settings(|s| s.consistency = Consistency::Strict)
        .try_spawn_behind_proxy()
        .await
    else {
        return;
    };
    let b = a.spawn_direct_replica().await;
    let (t, id) = chef_with_a_meal(&a, "Hidden").await;
    assert_eq!(price(&get_meal(&b, &id).await), 1.0);
    assert!(cached_entry(&b, &id).await.is_some(), "warm on B");

    // A write that committed and never reached `end_write`: its mark, and the new row.
    b.state
        .cache
        .begin_write(&[format!("meal:{id}")], Duration::from_secs(600))
        .await
        .unwrap();
    b.state
        .db
        .execute_unprepared(&format!(
            "UPDATE meals SET price = 2, version = version + 1 WHERE id = {id}"
        ))
        .await
        .unwrap();
    assert_eq!(
        price(&get_meal(&b, &id).await),
        2.0,
        "marked: from the database"
    );

    proxy.freeze();
    // A read meets the frozen cache, times out and turns A degraded; A's write is refused.
    assert_eq!(price(&get_meal(&a, &id).await), 2.0);
    assert!(a.state.cache_health.degraded());
    let r = update_price(&a, &t, &id, 3.0).await;
    assert_eq!(error_code(&r), "UNAVAILABLE", "{r:#}");
    proxy.thaw();
    wait_until(Duration::from_secs(20), || async {
        !a.state.cache_health.degraded()
    })
    .await;
    assert_eq!(
        price(&get_meal(&b, &id).await),
        2.0,
        "the mark still hides the entry from before the committed write"
    );
}

// ---- the namespace --------------------------------------------------------------------

/// The operator's story of issue 15: meal 1 updated three times (price 6, version 4), the
/// database dropped and re-created under a Redis that keeps running, a new meal 1 created at
/// price 100. Every read answers the new row.
async fn re_creating_the_database_under_a_running_cache_serves_no_old_row(app: TestApp) {
    let (t, id) = chef_with_a_meal(&app, "Phoenix").await;
    for p in [4.0, 5.0, 6.0] {
        assert_no_errors(&update_price(&app, &t, &id, p).await);
    }
    let old = get_meal(&app, &id).await;
    assert_eq!((price(&old), old["version"].as_i64()), (6.0, Some(4)));
    let old_prefix = app.state.cache_prefix.clone();

    let app = app.recreate_database().await;
    let t = app.login_new_user("chef").await;
    let m = create_meal(&app, &t, "Phoenix", "x", 100.0, "LOW").await;
    assert_eq!(m["id"].as_str(), Some(id.as_str()), "the id comes back");
    let new = get_meal(&app, &id).await;
    assert_eq!((price(&new), new["version"].as_i64()), (100.0, Some(1)));
    let r = app
        .gql(
            "{ mealByName(name: \"Phoenix\") { price version } }",
            json!({}),
        )
        .await;
    assert_eq!(r["data"]["mealByName"]["price"], 100.0, "{r:#}");
    assert_eq!(r["data"]["mealByName"]["version"], 1, "{r:#}");
    assert_ne!(
        app.state.cache_prefix, old_prefix,
        "a new database, a new namespace"
    );
}

/// A restore from backup: the database goes back to an older row while the cache holds a
/// newer entry. After `arena cache-reset` the running instance stops using the cache (it is
/// fenced, since every restarted replica reads the new namespace), and once restarted it
/// serves the restored row, never the entry written before the reset.
async fn after_cache_reset_no_entry_written_before_it_is_served(app: TestApp) {
    let (t, id) = chef_with_a_meal(&app, "Restored").await;
    assert_no_errors(&update_price(&app, &t, &id, 2.0).await);
    assert_eq!(price(&get_meal(&app, &id).await), 2.0);
    stored_entry(&app, &id, 2).await;

    // "Restore the backup": the row as it was at version 1, written around Arena.
    let row = db_row(&app, &id).await;
    let mut restored: meal::ActiveModel = row.into();
    restored.price = Set(1.0);
    restored.version = Set(0); // the hook bumps it: version 1

    entity::scope::write::scope(async { restored.update(&app.state.db).await })
        .await
        .0
        .unwrap();
    let namespace = arena::cli::cache_reset(&app.settings).await.unwrap();
    assert!(!app.state.cache_prefix.ends_with(&format!("{namespace}:")));

    // The running instance notices within a few probes and reads the database alone.
    wait_until(Duration::from_secs(10), || async {
        app.state.cache_health.fenced()
    })
    .await;
    assert_eq!(price(&get_meal(&app, &id).await), 1.0);
    let r = update_price(&app, &t, &id, 3.0).await;
    assert_eq!(error_code(&r), "UNAVAILABLE", "{r:#}");

    let app = app.restart().await;
    assert!(app.state.cache_prefix.ends_with(&format!("{namespace}:")));
    let read = get_meal(&app, &id).await;
    assert_eq!((price(&read), read["version"].as_i64()), (1.0, Some(1)));
    assert_no_errors(&update_price(&app, &t, &id, 3.0).await);
    assert_eq!(price(&get_meal(&app, &id).await), 3.0);
}

crate::scenario! {
    backends: [embedded, postgres_redis];
    re_creating_the_database_under_a_running_cache_serves_no_old_row,
    after_cache_reset_no_entry_written_before_it_is_served,
}
