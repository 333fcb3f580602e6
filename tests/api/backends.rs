//! Conformance suites for the backend traits. One generic suite per trait runs against every
//! implementation: the embedded ones always, the server ones when their server was found
//! (`crate::support::backends`; each test then works under a fresh prefix or database).

use std::sync::Arc;
use std::time::Duration;

use arena::backends::cache::memory::{MemoryKv, MemoryLru, MemoryVersioned};
use arena::backends::cache::redis::RedisCache;
use arena::backends::cache::{
    CacheError, KeyValue, LruStore, Versioned, VersionedCache, WriteOutcome,
};
use arena::backends::documents::mongo::MongoDocuments;
use arena::backends::documents::{DocumentStore, Update};
use arena::backends::events::local::LocalEvents;
use arena::backends::events::redis::RedisEvents;
use arena::backends::events::EventBus;
use futures::stream::BoxStream;
use futures::StreamExt;
use serde_json::json;

use crate::support::{servers, wait_until, Backends, PrivateRedis, TestApp};

/// The longest any awaited condition may take.
const WAIT: Duration = Duration::from_secs(5);
const TTL: Duration = Duration::from_secs(60);
const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);

fn unique_prefix() -> String {
    format!("arena-test:{}:", uuid::Uuid::new_v4().simple())
}

/// The test Redis; `None` (the case not run) when there is none.
fn redis_url() -> Option<&'static str> {
    servers().redis.or_skip()
}

/// A three-node Redis Cluster (`redis-cluster://…`, see `.ci/start-redis-cluster.sh`).
fn redis_cluster_url() -> Option<&'static str> {
    servers().redis_cluster.or_skip()
}

fn ver(version: i64, payload: &str) -> Versioned {
    Versioned {
        version,
        payload: payload.to_owned(),
    }
}

fn keys(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| (*s).to_owned()).collect()
}

/// What a reader sees of one key (taking a throw-away lease on a miss).
async fn read_one(cache: &dyn VersionedCache, key: &str) -> Option<Versioned> {
    let mut got = cache
        .leased_get_many(&keys(&[key]), "peek", TTL)
        .await
        .expect("leased_get_many");
    assert_eq!(got.len(), 1);
    got.remove(0)
}

/// A reader's miss and fill, as the loaders do it: whether the fill stored `entry`.
async fn miss_and_fill(cache: &dyn VersionedCache, key: &str, entry: Versioned) -> bool {
    let lease = uuid::Uuid::new_v4().simple().to_string();
    let k = keys(&[key]);
    if cache.leased_get_many(&k, &lease, TTL).await.unwrap()[0].is_some() {
        return false;
    }
    cache
        .leased_fill_many(&[(key.to_owned(), entry)], &lease, TTL)
        .await
        .unwrap()[0]
}

/// Every [`KeyValue`] method. `other` is a second instance with a different prefix on the
/// same store (for the isolation checks), or a separate store.
async fn kv_conformance(kv: Arc<dyn KeyValue>, other: Arc<dyn KeyValue>) {
    let c = kv.as_ref();
    assert!(!c.kind().is_empty());
    c.ping().await.expect("ping");
    plain_values(c).await;
    locks(c).await;
    counters_and_sets(c).await;
    scanning(c).await;
    kv_prefixes_isolate(c, other.as_ref()).await;
}

async fn plain_values(c: &dyn KeyValue) {
    assert_eq!(c.get("plain:missing").await.unwrap(), None);
    c.set("plain:a", "1", None).await.unwrap();
    c.set("plain:b", "two", Some(TTL)).await.unwrap();
    assert_eq!(c.get("plain:a").await.unwrap().as_deref(), Some("1"));
    assert_eq!(c.get("plain:b").await.unwrap().as_deref(), Some("two"));
    c.set("plain:a", "overwritten", None).await.unwrap();
    assert_eq!(
        c.get("plain:a").await.unwrap().as_deref(),
        Some("overwritten")
    );

    c.set_many(&[], None).await.unwrap();
    c.set_many(
        &[
            ("many:1".to_owned(), "x".to_owned()),
            ("many:2".to_owned(), "y|z".to_owned()),
            ("many:3".to_owned(), "".to_owned()),
        ],
        Some(TTL),
    )
    .await
    .unwrap();
    c.set_many(&[("many:4".to_owned(), "w".to_owned())], None)
        .await
        .unwrap();
    for (k, v) in [
        ("many:1", "x"),
        ("many:2", "y|z"),
        ("many:3", ""),
        ("many:4", "w"),
    ] {
        assert_eq!(c.get(k).await.unwrap().as_deref(), Some(v));
    }

    assert_eq!(c.del(&[]).await.unwrap(), 0);
    assert_eq!(
        c.del(&keys(&["many:1", "many:2", "many:missing"]))
            .await
            .unwrap(),
        2
    );
    assert_eq!(c.get("many:1").await.unwrap(), None);
    assert_eq!(c.get("many:3").await.unwrap().as_deref(), Some(""));

    // A short expiry runs out.
    c.set("plain:short", "v", Some(Duration::from_millis(50)))
        .await
        .unwrap();
    wait_until(WAIT, || async {
        c.get("plain:short").await.unwrap().is_none()
    })
    .await;
}

async fn locks(c: &dyn KeyValue) {
    assert!(c.set_nx("lock:a", "owner-1", TTL).await.unwrap());
    assert!(!c.set_nx("lock:a", "owner-2", TTL).await.unwrap());
    assert_eq!(c.get("lock:a").await.unwrap().as_deref(), Some("owner-1"));

    assert!(!c.del_if_equals("lock:a", "owner-2").await.unwrap());
    assert_eq!(c.get("lock:a").await.unwrap().as_deref(), Some("owner-1"));
    assert!(c.del_if_equals("lock:a", "owner-1").await.unwrap());
    assert_eq!(c.get("lock:a").await.unwrap(), None);
    assert!(!c.del_if_equals("lock:a", "owner-1").await.unwrap());

    assert!(c.set_nx("lock:a", "owner-2", TTL).await.unwrap());
    assert_eq!(c.get("lock:a").await.unwrap().as_deref(), Some("owner-2"));
}

async fn counters_and_sets(c: &dyn KeyValue) {
    assert_eq!(c.incr_by("count:a", 5).await.unwrap(), 5);
    assert_eq!(c.incr_by("count:a", -2).await.unwrap(), 3);
    assert_eq!(c.incr_by("count:b", 1).await.unwrap(), 1);
    // A counter reads as its number, and a stamp written with `set` counts on from it.
    assert_eq!(c.get("count:a").await.unwrap().as_deref(), Some("3"));
    c.set("count:c", "41", None).await.unwrap();
    assert_eq!(c.incr_by("count:c", 1).await.unwrap(), 42);
    // raise_many raises, never lowers, and creates what is missing.
    c.raise_many(&[
        ("count:a".into(), 10),
        ("count:c".into(), 7),
        ("count:new".into(), 4),
    ])
    .await
    .unwrap();
    assert_eq!(c.get("count:a").await.unwrap().as_deref(), Some("10"));
    assert_eq!(c.get("count:c").await.unwrap().as_deref(), Some("42"));
    assert_eq!(c.get("count:new").await.unwrap().as_deref(), Some("4"));
    assert_eq!(c.incr_by("count:new", 1).await.unwrap(), 5);

    assert_eq!(c.incr_with_ttl("rate:a", TTL).await.unwrap(), 1);
    assert_eq!(c.incr_with_ttl("rate:a", TTL).await.unwrap(), 2);
    assert_eq!(c.incr_with_ttl("rate:a", TTL).await.unwrap(), 3);
    assert_eq!(c.incr_with_ttl("rate:b", TTL).await.unwrap(), 1);

    assert!(c.sadd("set:a", "b").await.unwrap());
    assert!(c.sadd("set:a", "a").await.unwrap());
    assert!(!c.sadd("set:a", "b").await.unwrap());
    assert_eq!(c.smembers("set:a").await.unwrap(), keys(&["a", "b"]));
    assert_eq!(
        c.smembers("set:missing").await.unwrap(),
        Vec::<String>::new()
    );
}

async fn scanning(c: &dyn KeyValue) {
    for k in ["scan:a", "scan:b", "scan:c:1", "scanner", "other:scan:a"] {
        c.set(k, "v", None).await.unwrap();
    }
    c.incr_by("scan:count", 1).await.unwrap();
    assert_eq!(
        sorted(c.scan_prefix("scan:").await.unwrap()),
        keys(&["scan:a", "scan:b", "scan:c:1", "scan:count"])
    );
    assert_eq!(
        c.scan_prefix("nothing-here:").await.unwrap(),
        Vec::<String>::new()
    );

    // Glob characters in the prefix are literal.
    c.set("glob*x:1", "v", None).await.unwrap();
    c.set("globAx:1", "v", None).await.unwrap();
    c.set("glob?:1", "v", None).await.unwrap();
    c.set("glob[ab]:1", "v", None).await.unwrap();
    assert_eq!(c.scan_prefix("glob*").await.unwrap(), keys(&["glob*x:1"]));
    assert_eq!(c.scan_prefix("glob?").await.unwrap(), keys(&["glob?:1"]));
    assert_eq!(
        c.scan_prefix("glob[ab]").await.unwrap(),
        keys(&["glob[ab]:1"])
    );
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

async fn kv_prefixes_isolate(c: &dyn KeyValue, other: &dyn KeyValue) {
    c.set("iso:k", "mine", None).await.unwrap();
    assert_eq!(other.get("iso:k").await.unwrap(), None);
    other.set("iso:k", "theirs", None).await.unwrap();
    assert_eq!(c.get("iso:k").await.unwrap().as_deref(), Some("mine"));
    assert_eq!(other.get("iso:k").await.unwrap().as_deref(), Some("theirs"));
    assert_eq!(
        other.scan_prefix("scan:").await.unwrap(),
        Vec::<String>::new()
    );
    assert_eq!(other.incr_by("count:a", 1).await.unwrap(), 1);
    assert_eq!(other.del(&keys(&["iso:k"])).await.unwrap(), 1);
    assert_eq!(c.get("iso:k").await.unwrap().as_deref(), Some("mine"));
}

/// Every [`VersionedCache`] method, through the calls production makes.
async fn versioned_conformance(cache: Arc<dyn VersionedCache>, other: Arc<dyn VersionedCache>) {
    let c = cache.as_ref();
    assert!(!c.kind().is_empty());
    c.ping().await.expect("ping");
    reads_and_fills(c).await;
    writes(c).await;
    leases(c).await;
    invalidation(c).await;
    versioned_prefixes_isolate(c, other.as_ref()).await;
}

async fn reads_and_fills(c: &dyn VersionedCache) {
    assert_eq!(
        c.leased_get_many(&[], "l", TTL).await.unwrap(),
        Vec::<Option<Versioned>>::new()
    );
    assert_eq!(read_one(c, "meal:1").await, None);
    assert!(miss_and_fill(c, "meal:1", ver(1, "one")).await);
    assert_eq!(read_one(c, "meal:1").await, Some(ver(1, "one")));

    // Payloads may contain the separator; a tombstone is the payload `null`.
    assert!(miss_and_fill(c, "meal:2", ver(7, r#"{"a":"x|y"}"#)).await);
    assert!(miss_and_fill(c, "meal:3", ver(1, "null")).await);
    assert_eq!(
        c.leased_get_many(
            &keys(&["meal:missing", "meal:2", "meal:1", "meal:3"]),
            "l",
            TTL
        )
        .await
        .unwrap(),
        vec![
            None,
            Some(ver(7, r#"{"a":"x|y"}"#)),
            Some(ver(1, "one")),
            Some(ver(1, "null"))
        ]
    );

    // A fill never replaces an entry as new or newer, even with its lease: a writer whose
    // mark had expired stored version 10 meanwhile; versions compare as numbers.
    let k = keys(&["meal:4"]);
    assert_eq!(c.leased_get_many(&k, "r", TTL).await.unwrap(), vec![None]);
    c.end_write(
        &[(k[0].clone(), WriteOutcome::Committed(ver(10, "ten")))],
        TTL,
    )
    .await
    .unwrap();
    assert_eq!(
        c.leased_fill_many(&[(k[0].clone(), ver(9, "nine"))], "r", TTL)
            .await
            .unwrap(),
        vec![false]
    );
    assert_eq!(read_one(c, "meal:4").await, Some(ver(10, "ten")));

    // Many fills at once, each judged on its own.
    let many = keys(&["fill:fresh", "fill:marked", "fill:other"]);
    assert_eq!(
        c.leased_get_many(&many, "r2", TTL).await.unwrap(),
        vec![None, None, None]
    );
    c.begin_write(&keys(&["fill:marked"]), TTL).await.unwrap();
    let stored = c
        .leased_fill_many(
            &[
                ("fill:fresh".to_owned(), ver(1, "a")),
                ("fill:marked".to_owned(), ver(1, "b")),
                ("fill:other".to_owned(), ver(3, "d")),
            ],
            "r2",
            TTL,
        )
        .await
        .unwrap();
    assert_eq!(stored, vec![true, false, true]);
    c.end_write(&[("fill:marked".to_owned(), WriteOutcome::Aborted)], TTL)
        .await
        .unwrap();
    assert_eq!(
        c.leased_fill_many(&[], "r2", TTL).await.unwrap(),
        Vec::<bool>::new()
    );
}

async fn writes(c: &dyn VersionedCache) {
    assert!(miss_and_fill(c, "w:1", ver(1, "one")).await);

    // While a write is in flight the entry reads as a miss and cannot be filled.
    c.begin_write(&keys(&["w:1"]), TTL).await.unwrap();
    assert_eq!(read_one(c, "w:1").await, None);
    assert!(!miss_and_fill(c, "w:1", ver(5, "reader")).await);

    // A committed write stores its entry and clears the mark.
    c.end_write(
        &[("w:1".to_owned(), WriteOutcome::Committed(ver(2, "two")))],
        TTL,
    )
    .await
    .unwrap();
    assert_eq!(read_one(c, "w:1").await, Some(ver(2, "two")));

    // A committed write older than the entry present leaves it be (and still clears the mark).
    c.begin_write(&keys(&["w:1"]), TTL).await.unwrap();
    c.end_write(
        &[("w:1".to_owned(), WriteOutcome::Committed(ver(3, "three")))],
        TTL,
    )
    .await
    .unwrap();
    c.begin_write(&keys(&["w:1"]), TTL).await.unwrap();
    c.end_write(
        &[("w:1".to_owned(), WriteOutcome::Committed(ver(2, "stale")))],
        TTL,
    )
    .await
    .unwrap();
    assert_eq!(read_one(c, "w:1").await, Some(ver(3, "three")));

    // An aborted write leaves the previous entry untouched and clears the mark.
    c.begin_write(&keys(&["w:1"]), TTL).await.unwrap();
    c.end_write(&[("w:1".to_owned(), WriteOutcome::Aborted)], TTL)
        .await
        .unwrap();
    assert_eq!(read_one(c, "w:1").await, Some(ver(3, "three")));

    // Two writers in flight: the key stays marked until both are done.
    c.begin_write(&keys(&["w:2"]), TTL).await.unwrap();
    c.begin_write(&keys(&["w:2"]), TTL).await.unwrap();
    c.end_write(
        &[("w:2".to_owned(), WriteOutcome::Committed(ver(1, "first")))],
        TTL,
    )
    .await
    .unwrap();
    assert_eq!(read_one(c, "w:2").await, None);
    assert!(!miss_and_fill(c, "w:2", ver(9, "reader")).await);
    c.end_write(
        &[("w:2".to_owned(), WriteOutcome::Committed(ver(2, "second")))],
        TTL,
    )
    .await
    .unwrap();
    assert_eq!(read_one(c, "w:2").await, Some(ver(2, "second")));

    // Several keys in one call, mixed outcomes; a key with no entry yet gets one.
    c.begin_write(&keys(&["w:1", "w:3", "w:4"]), TTL)
        .await
        .unwrap();
    assert_eq!(
        c.leased_get_many(&keys(&["w:1", "w:3", "w:4", "w:2"]), "l", TTL)
            .await
            .unwrap(),
        vec![None, None, None, Some(ver(2, "second"))]
    );
    c.end_write(
        &[
            ("w:1".to_owned(), WriteOutcome::Committed(ver(5, "five"))),
            ("w:3".to_owned(), WriteOutcome::Aborted),
            ("w:4".to_owned(), WriteOutcome::Committed(ver(1, "new"))),
        ],
        TTL,
    )
    .await
    .unwrap();
    assert_eq!(read_one(c, "w:1").await, Some(ver(5, "five")));
    assert_eq!(read_one(c, "w:4").await, Some(ver(1, "new")));
    // w:3 is no longer marked: a reader may fill it.
    assert!(miss_and_fill(c, "w:3", ver(1, "filled")).await);

    // A committed delete is a tombstone that readers cannot overwrite with the older row.
    c.begin_write(&keys(&["w:4"]), TTL).await.unwrap();
    c.end_write(
        &[("w:4".to_owned(), WriteOutcome::Committed(ver(2, "null")))],
        TTL,
    )
    .await
    .unwrap();
    assert!(!miss_and_fill(c, "w:4", ver(1, "new")).await);
    assert_eq!(read_one(c, "w:4").await, Some(ver(2, "null")));

    c.begin_write(&[], TTL).await.unwrap();
    c.end_write(&[], TTL).await.unwrap();
}

/// Leases: a miss leases its key; a fill needs the lease; a write revokes it.
async fn leases(c: &dyn VersionedCache) {
    let k = keys(&["lease:a"]);
    assert_eq!(c.leased_get_many(&k, "r1", TTL).await.unwrap(), vec![None]);
    // Someone else's lease, or none, cannot fill.
    assert_eq!(
        c.leased_fill_many(&[(k[0].clone(), ver(1, "x"))], "r2", TTL)
            .await
            .unwrap(),
        vec![false]
    );
    assert_eq!(c.leased_get_many(&k, "r1", TTL).await.unwrap(), vec![None]);
    c.begin_write(&k, TTL).await.unwrap();
    c.end_write(&[(k[0].clone(), WriteOutcome::Aborted)], TTL)
        .await
        .unwrap();
    // The write revoked r1's lease, even though it rolled back and stored nothing.
    assert_eq!(
        c.leased_fill_many(&[(k[0].clone(), ver(1, "x"))], "r1", TTL)
            .await
            .unwrap(),
        vec![false]
    );
    assert_eq!(c.leased_get_many(&k, "r3", TTL).await.unwrap(), vec![None]);
    assert_eq!(
        c.leased_fill_many(&[(k[0].clone(), ver(1, "x"))], "r3", TTL)
            .await
            .unwrap(),
        vec![true]
    );
    // The lease is spent: a second fill with it is refused; the hit takes no lease.
    assert_eq!(
        c.leased_fill_many(&[(k[0].clone(), ver(2, "y"))], "r3", TTL)
            .await
            .unwrap(),
        vec![false]
    );
    assert_eq!(
        c.leased_get_many(&k, "r4", TTL).await.unwrap(),
        vec![Some(ver(1, "x"))]
    );
    // A marked key is a miss and takes no lease.
    c.begin_write(&k, TTL).await.unwrap();
    assert_eq!(c.leased_get_many(&k, "r5", TTL).await.unwrap(), vec![None]);
    c.end_write(&[(k[0].clone(), WriteOutcome::Committed(ver(3, "z")))], TTL)
        .await
        .unwrap();
    assert_eq!(
        c.leased_fill_many(&[(k[0].clone(), ver(2, "y"))], "r5", TTL)
            .await
            .unwrap(),
        vec![false]
    );
    assert_eq!(
        c.leased_get_many(&k, "r6", TTL).await.unwrap(),
        vec![Some(ver(3, "z"))]
    );
}

/// A bulk write's (or an outage's) invalidation deletes entries, and leaves marks alone.
async fn invalidation(c: &dyn VersionedCache) {
    assert!(miss_and_fill(c, "inv:a", ver(4, "a")).await);
    assert!(miss_and_fill(c, "inv:b", ver(4, "b")).await);
    c.begin_write(&keys(&["inv:b"]), TTL).await.unwrap();
    c.invalidate(&keys(&["inv:a", "inv:b", "inv:missing"]))
        .await
        .unwrap();
    assert_eq!(read_one(c, "inv:a").await, None);
    // inv:b is still marked: no reader may fill it until the write ends.
    assert!(!miss_and_fill(c, "inv:b", ver(1, "old")).await);
    c.end_write(&[("inv:b".to_owned(), WriteOutcome::Aborted)], TTL)
        .await
        .unwrap();
    // With the entry gone, an older version can be filled again (no tombstone was left).
    assert!(miss_and_fill(c, "inv:a", ver(1, "again")).await);
    c.invalidate(&[]).await.unwrap();

    // A deletion revokes the read leases taken before it (an owed deletion delivered after an
    // outage stands for a write whose marks never reached the cache): a reader that missed
    // before it, and so may hold the row from before that write, does not fill.
    let early = c
        .leased_get_many(&keys(&["inv:lease"]), "early", TTL)
        .await
        .unwrap();
    assert_eq!(early, vec![None]);
    c.invalidate(&keys(&["inv:lease"])).await.unwrap();
    let filled = c
        .leased_fill_many(&[("inv:lease".to_owned(), ver(1, "before"))], "early", TTL)
        .await
        .unwrap();
    assert_eq!(filled, vec![false], "the lease was revoked by the deletion");
    assert!(miss_and_fill(c, "inv:lease", ver(2, "after")).await);

    // A bulk write's end: the entries go and one mark of each is cleared; a second writer's
    // mark on the same key keeps it a miss until that writer ends too.
    assert!(miss_and_fill(c, "drop:a", ver(4, "a")).await);
    assert!(miss_and_fill(c, "drop:b", ver(4, "b")).await);
    c.begin_write(&keys(&["drop:a", "drop:b"]), TTL)
        .await
        .unwrap();
    c.begin_write(&keys(&["drop:b"]), TTL).await.unwrap();
    c.drop_written(&keys(&["drop:a", "drop:b"])).await.unwrap();
    assert!(miss_and_fill(c, "drop:a", ver(1, "older")).await);
    assert!(!miss_and_fill(c, "drop:b", ver(1, "older")).await);
    c.end_write(&[("drop:b".to_owned(), WriteOutcome::Aborted)], TTL)
        .await
        .unwrap();
    assert!(miss_and_fill(c, "drop:b", ver(1, "older")).await);
    c.drop_written(&[]).await.unwrap();

    // A whole write's end in one call: one entry stored, another dropped while still marked
    // (a collection version), each unmarked.
    assert!(miss_and_fill(c, "end:row", ver(1, "row")).await);
    assert!(miss_and_fill(c, "end:coll", ver(7, "coll")).await);
    c.begin_write(&keys(&["end:row", "end:coll"]), TTL)
        .await
        .unwrap();
    c.end_write(
        &[
            (
                "end:row".to_owned(),
                WriteOutcome::Committed(ver(2, "row2")),
            ),
            ("end:coll".to_owned(), WriteOutcome::Dropped),
        ],
        TTL,
    )
    .await
    .unwrap();
    assert_eq!(read_one(c, "end:row").await, Some(ver(2, "row2")));
    assert_eq!(read_one(c, "end:coll").await, None, "dropped");
    assert!(
        miss_and_fill(c, "end:coll", ver(8, "coll")).await,
        "unmarked"
    );
}

async fn versioned_prefixes_isolate(c: &dyn VersionedCache, other: &dyn VersionedCache) {
    // A write in flight on one instance does not hide the other's entry.
    assert!(miss_and_fill(c, "iso:v", ver(1, "mine")).await);
    other.begin_write(&keys(&["iso:v"]), TTL).await.unwrap();
    assert_eq!(read_one(c, "iso:v").await, Some(ver(1, "mine")));
    assert_eq!(read_one(other, "iso:v").await, None);
    other
        .end_write(&[("iso:v".to_owned(), WriteOutcome::Aborted)], TTL)
        .await
        .unwrap();
}

#[tokio::test]
async fn memory_key_value_conforms() {
    kv_conformance(Arc::new(MemoryKv::new()), Arc::new(MemoryKv::new())).await;
}

#[tokio::test]
async fn memory_versioned_cache_conforms() {
    versioned_conformance(
        Arc::new(MemoryVersioned::new(10_000)),
        Arc::new(MemoryVersioned::new(10_000)),
    )
    .await;
}

#[tokio::test]
async fn redis_cache_conforms() {
    let Some(url) = redis_url() else { return };
    redis_cache_conforms_at(url).await;
}

#[tokio::test]
async fn redis_cluster_cache_conforms() {
    let Some(url) = redis_cluster_url() else {
        return;
    };
    redis_cache_conforms_at(url).await;
}

async fn redis_cache_conforms_at(url: &str) {
    let cache = Arc::new(
        RedisCache::connect(url, &unique_prefix(), COMMAND_TIMEOUT)
            .await
            .expect("connect to the test Redis"),
    );
    let other = Arc::new(
        RedisCache::connect(url, &unique_prefix(), COMMAND_TIMEOUT)
            .await
            .expect("connect to the test Redis"),
    );
    kv_conformance(cache.clone(), other.clone()).await;
    versioned_conformance(cache.clone(), other.clone()).await;

    // Tidy up what this test stored (everything under its prefixes has a unique name anyway).
    // On a cluster a versioned entry's lease and mark are stored as `{K}:l` and `{K}:w`, which
    // no plain key names: those are left to expire.
    let clustered = url.starts_with("redis-cluster://");
    for c in [cache, other] {
        let left = c.scan_prefix("").await.unwrap();
        KeyValue::del(c.as_ref(), &left).await.unwrap();
        let remaining: Vec<String> = c
            .scan_prefix("")
            .await
            .unwrap()
            .into_iter()
            .filter(|k| !(clustered && (k.ends_with(":l") || k.ends_with(":w"))))
            .collect();
        assert_eq!(remaining, Vec::<String>::new());
    }
}

/// A full Redis (`maxmemory` reached, `noeviction`) refuses a script's first write but lets
/// later ones through. A leased fill that released one key's lease before storing another
/// would therefore store a row the writer could not mark: the fill must store nothing.
#[tokio::test]
async fn a_full_redis_refuses_every_leased_fill() {
    if redis_url().is_none() {
        return;
    }
    let Some(server) = PrivateRedis::try_start().await else {
        return;
    };
    let c = RedisCache::connect(&server.url(), &unique_prefix(), COMMAND_TIMEOUT)
        .await
        .expect("connect to the private Redis");
    let k = keys(&["full:a", "full:b"]);
    assert_eq!(
        c.leased_get_many(&k, "r1", TTL).await.unwrap(),
        vec![None, None]
    );
    // `a` meanwhile got a newer entry (a writer whose mark expired): the fill will only
    // release a's lease.
    c.end_write(
        &[(
            "full:a".to_owned(),
            WriteOutcome::Committed(ver(5, "newer")),
        )],
        TTL,
    )
    .await
    .unwrap();
    assert_eq!(
        server.cli(&["config", "set", "maxmemory-policy", "noeviction"]),
        "OK"
    );
    assert_eq!(server.cli(&["config", "set", "maxmemory", "1"]), "OK");

    let filled = c
        .leased_fill_many(
            &[(k[0].clone(), ver(1, "old")), (k[1].clone(), ver(1, "old"))],
            "r1",
            TTL,
        )
        .await;
    assert!(
        !matches!(filled.as_deref(), Ok([_, true])),
        "b was stored on a full server: {filled:?}"
    );
    // Readers take leases, which a full server refuses too: make room to look.
    assert_eq!(server.cli(&["config", "set", "maxmemory", "0"]), "OK");
    assert_eq!(read_one(&c, "full:b").await, None);
    assert_eq!(read_one(&c, "full:a").await, Some(ver(5, "newer")));
}

#[tokio::test]
async fn redis_cache_reports_an_unreachable_server_as_unavailable() {
    // Nothing listens on port 1; the connect must fail promptly with a clear error.
    let started = std::time::Instant::now();
    let result = RedisCache::connect("redis://127.0.0.1:1", "x:", COMMAND_TIMEOUT).await;
    assert!(
        matches!(result, Err(CacheError::Unavailable(_))),
        "got {result:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
}

/// Waits for the stream's next item.
async fn next(stream: &mut BoxStream<'static, String>) -> String {
    tokio::time::timeout(WAIT, stream.next())
        .await
        .expect("no event within the deadline")
        .expect("the stream ended")
}

/// Every [`EventBus`] method on one instance.
async fn events_conformance(bus: Arc<dyn EventBus>) {
    assert!(!bus.kind().is_empty());
    bus.ping().await.expect("ping");

    // Publishing to a topic nobody listens to is fine.
    bus.publish("nobody", "lost".into()).await.unwrap();

    let mut a = bus.subscribe("topic-a");
    let mut a2 = bus.subscribe("topic-a");
    let mut b = bus.subscribe("topic-b");

    bus.publish("topic-a", r#"{"n":1}"#.into()).await.unwrap();
    assert_eq!(next(&mut a).await, r#"{"n":1}"#);
    assert_eq!(next(&mut a2).await, r#"{"n":1}"#);

    // topic-b saw nothing of topic-a: its first event is its own (same publisher, in order).
    bus.publish("topic-b", "b-1".into()).await.unwrap();
    assert_eq!(next(&mut b).await, "b-1");

    // Events arrive in publishing order.
    for i in 0..10 {
        bus.publish("topic-a", format!("{i}")).await.unwrap();
    }
    for i in 0..10 {
        assert_eq!(next(&mut a).await, format!("{i}"));
    }

    // A dropped subscription costs nothing; the remaining ones keep receiving.
    drop(a2);
    bus.publish("topic-a", "after-drop".into()).await.unwrap();
    assert_eq!(next(&mut a).await, "after-drop");

    // Subscribing again after everybody left works.
    drop(a);
    let mut again = bus.subscribe("topic-a");
    bus.publish("topic-a", "again".into()).await.unwrap();
    assert_eq!(next(&mut again).await, "again");
}

#[tokio::test]
async fn local_events_conform() {
    events_conformance(Arc::new(LocalEvents::new())).await;
}

#[tokio::test]
async fn redis_events_conform() {
    let Some(url) = redis_url() else { return };
    let bus = RedisEvents::connect(url, &unique_prefix(), COMMAND_TIMEOUT)
        .await
        .expect("connect to the test Redis");
    events_conformance(Arc::new(bus)).await;
}

#[tokio::test]
async fn redis_cluster_events_conform() {
    let Some(url) = redis_cluster_url() else {
        return;
    };
    let bus = RedisEvents::connect(url, &unique_prefix(), COMMAND_TIMEOUT)
        .await
        .expect("connect to the test Redis Cluster");
    events_conformance(Arc::new(bus)).await;
}

#[tokio::test]
async fn redis_events_reach_every_instance_sharing_the_prefix() {
    let Some(url) = redis_url() else { return };
    events_reach_every_instance_sharing_the_prefix(url.to_owned()).await;
}

#[tokio::test]
async fn redis_cluster_events_reach_every_instance_sharing_the_prefix() {
    let Some(url) = redis_cluster_url() else {
        return;
    };
    events_reach_every_instance_sharing_the_prefix(url.to_owned()).await;
}

async fn events_reach_every_instance_sharing_the_prefix(url: String) {
    let prefix = unique_prefix();
    let connect = |prefix: String| {
        let url = url.clone();
        async move {
            RedisEvents::connect(&url, &prefix, COMMAND_TIMEOUT)
                .await
                .expect("connect to the test Redis")
        }
    };
    let publisher = connect(prefix.clone()).await;
    let replica = connect(prefix.clone()).await;
    let stranger = connect(unique_prefix()).await;

    let mut on_replica = replica.subscribe("battles");
    let mut on_stranger = stranger.subscribe("battles");

    // The subscription is live once `connect` returns; retry anyway, boundedly, so a slow
    // server cannot make the test flaky.
    let mut received = None;
    for attempt in 0..20 {
        publisher
            .publish("battles", format!("event-{attempt}"))
            .await
            .unwrap();
        if let Ok(Some(event)) =
            tokio::time::timeout(Duration::from_millis(250), on_replica.next()).await
        {
            received = Some(event);
            break;
        }
    }
    let received = received.expect("the replica never received the event");
    assert!(received.starts_with("event-"), "got {received}");

    // The instance under another prefix saw none of it: its first event is its own.
    stranger
        .publish("battles", "stranger's own".into())
        .await
        .unwrap();
    assert_eq!(next(&mut on_stranger).await, "stranger's own");
}

/// Every [`DocumentStore`] method.
async fn documents_conformance(store: Arc<dyn DocumentStore>) {
    assert!(!store.kind().is_empty());
    store.ping().await.expect("ping");

    assert_eq!(store.get("users", "u1").await.unwrap(), None);
    assert_eq!(store.list("users").await.unwrap(), Vec::new());

    let first = json!({ "name": "Ada", "count": 3, "price": 12.0, "admin": false,
                        "tags": ["a", "b"], "nested": { "x": null } });
    store.put("users", "u1", &first).await.unwrap();
    assert_eq!(store.get("users", "u1").await.unwrap(), Some(first.clone()));
    let got = store.get("users", "u1").await.unwrap().unwrap();
    assert!(got["price"].is_f64(), "a float stays a float: {got}");
    assert!(got["count"].is_i64(), "an integer stays an integer: {got}");

    // put replaces the whole document.
    let replaced = json!({ "name": "Ada Lovelace", "count": 4 });
    store.put("users", "u1", &replaced).await.unwrap();
    assert_eq!(
        store.get("users", "u1").await.unwrap(),
        Some(replaced.clone())
    );

    let second = json!({ "name": "Grace" });
    store.put("users", "u2", &second).await.unwrap();
    let mut all = store.list("users").await.unwrap();
    all.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        all,
        vec![
            ("u1".to_owned(), replaced.clone()),
            ("u2".to_owned(), second)
        ]
    );

    // Collections are separate.
    assert_eq!(store.get("others", "u1").await.unwrap(), None);
    assert_eq!(store.list("others").await.unwrap(), Vec::new());

    // update: atomic increments, maxima and set additions, from many writers at once.
    let inc = |n: i64, t: i64, who: &str| Update {
        inc: vec![("counters.roll".into(), n), ("counters.meal".into(), 1)],
        max: vec![("updated_time".into(), t)],
        add_to_set: vec![("members".into(), vec![who.to_owned()])],
    };
    let first = store.update("usage", "c", &inc(2, 5, "u1")).await.unwrap();
    assert_eq!(first["counters"]["roll"], 2);
    assert_eq!(first["members"], json!(["u1"]));
    futures::future::join_all((0..20).map(|i| {
        let store = store.clone();
        async move {
            let who = format!("u{}", i % 3);
            store.update("usage", "c", &inc(1, i, &who)).await.unwrap()
        }
    }))
    .await;
    let after = store
        .update("usage", "c", &Update::default())
        .await
        .unwrap();
    assert_eq!(after["counters"]["roll"], 22, "{after}");
    assert_eq!(after["counters"]["meal"], 21, "{after}");
    assert_eq!(after["updated_time"], 19, "the highest stamp: {after}");
    let mut members: Vec<String> = serde_json::from_value(after["members"].clone()).unwrap();
    members.sort();
    assert_eq!(members, vec!["u0", "u1", "u2"]);
    assert_eq!(store.get("usage", "c").await.unwrap(), Some(after));
    assert!(store.delete("usage", "c").await.unwrap());

    assert!(store.delete("users", "u2").await.unwrap());
    assert!(!store.delete("users", "u2").await.unwrap());
    assert_eq!(store.get("users", "u2").await.unwrap(), None);
    assert_eq!(
        store.list("users").await.unwrap(),
        vec![("u1".to_owned(), replaced)]
    );
}

#[tokio::test]
async fn sqlite_documents_conform() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("docs.db").display());
    let db = arena::backends::sql::connect(&url, 2, &arena::metrics::Metrics::new())
        .await
        .unwrap();
    <migration::Migrator as migration::MigratorTrait>::up(&db, None)
        .await
        .unwrap();
    documents_conformance(Arc::new(
        arena::backends::documents::sql::SqlDocuments::new(db),
    ))
    .await;
}

#[tokio::test]
async fn postgres_documents_conform() {
    let Some(app) = TestApp::builder(Backends::Real).try_spawn().await else {
        return;
    };
    documents_conformance(Arc::new(
        arena::backends::documents::sql::SqlDocuments::new(app.state.db.clone()),
    ))
    .await;
}

#[tokio::test]
async fn mongo_documents_conform() {
    let Some(url) = servers().mongodb.or_skip() else {
        return;
    };
    let database = format!("arena_test_{}", uuid::Uuid::new_v4().simple());
    let store = MongoDocuments::connect(url, &database)
        .await
        .expect("connect to the test MongoDB");
    let db = store.database().clone();
    documents_conformance(Arc::new(store)).await;
    db.drop().await.expect("drop the test database");
}

/// Every [`LruStore`] method: the exact order of reads and writes, eviction at the capacity
/// each call names, owners apart, forgetting an owner.
async fn lru_conformance(c: Arc<dyn LruStore>) {
    let c = c.as_ref();
    c.ping().await.expect("ping");
    let put = |keys: &[&str]| -> Vec<(String, String)> {
        keys.iter()
            .map(|k| (k.to_string(), format!("v{k}")))
            .collect()
    };
    assert_eq!(c.put("o1", &put(&["a", "b", "c"]), 3).await.unwrap(), 0);
    assert_eq!(c.keys("o1").await.unwrap(), keys(&["a", "b", "c"]));
    assert_eq!(c.get("o1", "a").await.unwrap().as_deref(), Some("va"));
    assert_eq!(c.get("o1", "nope").await.unwrap(), None);
    assert_eq!(c.keys("o1").await.unwrap(), keys(&["b", "c", "a"]));
    assert_eq!(c.put("o1", &put(&["d", "e"]), 3).await.unwrap(), 2);
    assert_eq!(c.keys("o1").await.unwrap(), keys(&["a", "d", "e"]));
    assert_eq!(c.get("o1", "b").await.unwrap(), None);
    assert_eq!(c.get("o1", "c").await.unwrap(), None);
    // A smaller capacity on the next write trims to it.
    assert_eq!(c.put("o1", &put(&["a"]), 2).await.unwrap(), 1);
    assert_eq!(c.keys("o1").await.unwrap(), keys(&["e", "a"]));
    assert_eq!(c.put("o2", &put(&["x"]), 1).await.unwrap(), 0);
    assert_eq!(c.keys("o2").await.unwrap(), keys(&["x"]));
    assert_eq!(c.keys("o1").await.unwrap(), keys(&["e", "a"]));
    c.forget("o1").await.unwrap();
    assert!(c.keys("o1").await.unwrap().is_empty());
    assert_eq!(c.get("o1", "e").await.unwrap(), None);
    assert_eq!(c.get("o2", "x").await.unwrap().as_deref(), Some("vx"));
    c.forget("o2").await.unwrap();
}

#[tokio::test]
async fn memory_lru_store_conforms() {
    lru_conformance(Arc::new(MemoryLru::new(10_000))).await;
}

#[tokio::test]
async fn redis_lru_store_conforms() {
    let Some(url) = redis_url() else { return };
    let cache = Arc::new(
        RedisCache::connect(url, &unique_prefix(), COMMAND_TIMEOUT)
            .await
            .expect("connect to the test Redis"),
    );
    lru_conformance(cache.clone()).await;
    assert_eq!(cache.scan_prefix("").await.unwrap(), Vec::<String>::new());
}
