//! The near cache: each replica keeps the entries it read from Redis in process, and serves
//! them again without a round trip while it holds a *near lease*, so that a warm read costs
//! no more than the in-process cache of an embedded instance.
//!
//! It never serves an entry that a write acknowledged before the read began has replaced
//! (`docs/cache-consistency.md`, "Near caches"):
//!
//! * a replica may serve its near cache only while it holds a near lease, a member of the
//!   cache tier's lease set whose expiry it renews every 200 ms ([`NearBus`]); its own view
//!   of the lease ends well before the expiry the cache tier holds;
//! * a write, once its keys are marked and before `COMMIT`, drops them from its own near cache,
//!   publishes them to every replica and waits until every lease holder has acknowledged
//!   that it dropped them too — or, for a holder that does not answer in time, revokes its
//!   lease and waits until that lease has run out. A holder whose lease was revoked finds
//!   out at its next renewal, and empties its near cache before it holds one again;
//! * an entry is kept only when the cache tier gave it unmarked (a marked key is a miss), the
//!   read was sent while the lease was held, and no invalidation was taken in since it was
//!   sent (a global epoch), so a read that raced a write's invalidation cannot put the older
//!   entry back.
//!
//! Entries are also dropped after [`MAX_AGE`], which bounds what an `available` partition
//! (a write the cache tier never heard of) can add to the entry's TTL.

pub mod redis;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use lru::LruCache;
use parking_lot::Mutex;
use prometheus::IntCounter;

use crate::backends::cache::{Announcement, CacheResult, Versioned, VersionedCache, WriteOutcome};
use crate::metrics::Metrics;

/// How long an entry is served from the near cache at most after it was read from the cache
/// tier.
pub const MAX_AGE: Duration = Duration::from_secs(1);

/// What the cache tier side of the near cache does: publish a write's keys and wait for the
/// lease holders, and (in the background) renew this replica's lease.
#[async_trait]
pub trait NearBus: Send + Sync + 'static {
    /// Tells every other lease holder to drop `keys` and returns once each has acknowledged
    /// it or its lease has run out.
    async fn invalidate_others(&self, keys: &[String]) -> CacheResult<()>;

    /// The cache tier's [`VersionedCache::begin_write`] of `keys` and then
    /// [`Self::invalidate_others`], in one round trip, where the tier allows it (one Redis
    /// server, no replicas to wait for); `None` where it does not, and the caller makes the
    /// two calls.
    async fn mark_and_invalidate_others(
        &self,
        _keys: &[String],
        _mark_ttl: Duration,
    ) -> Option<CacheResult<()>> {
        None
    }
}

/// The entries and the lease of one replica's near cache, shared between the reads and the
/// bus that feeds it invalidations.
pub struct NearState {
    entries: Mutex<Entries>,
    /// Nanoseconds since `base` until which the lease is held; 0 when it is not.
    valid_until: AtomicU64,
    base: Instant,
    counts: NearCounts,
}

struct Entries {
    lru: LruCache<String, (Versioned, Instant)>,
    /// Bumped by every invalidation: a read sent before it may not fill.
    epoch: u64,
}

/// `arena_near_cache_total{result}`.
struct NearCounts {
    hit: IntCounter,
    miss: IntCounter,
    dropped: IntCounter,
    refused: IntCounter,
    revoked: IntCounter,
    grace: IntCounter,
}

impl NearState {
    /// A near cache of at most `capacity` entries (at least 1), holding no lease yet.
    pub fn new(capacity: usize, metrics: &Metrics) -> Arc<Self> {
        let c = |result| metrics.near_cache.with_label_values(&[result]);
        Arc::new(Self {
            entries: Mutex::new(Entries {
                lru: LruCache::new(std::num::NonZeroUsize::new(capacity.max(1)).expect("≥ 1")),
                epoch: 0,
            }),
            valid_until: AtomicU64::new(0),
            base: Instant::now(),
            counts: NearCounts {
                hit: c("hit"),
                miss: c("miss"),
                dropped: c("dropped"),
                refused: c("refused"),
                revoked: c("revoked"),
                grace: c("grace"),
            },
        })
    }

    fn nanos(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.base).as_nanos()).unwrap_or(u64::MAX)
    }

    /// Whether the lease is held now.
    pub fn holds_lease(&self) -> bool {
        self.nanos(Instant::now()) < self.valid_until.load(Ordering::Acquire)
    }

    /// The lease is held until `until` (a renewal answered).
    pub fn lease_until(&self, until: Instant) {
        self.valid_until.store(self.nanos(until), Ordering::Release);
    }

    /// The lease is no longer held; nothing is served until a renewal answers again.
    pub fn lease_lost(&self) {
        self.valid_until.store(0, Ordering::Release);
    }

    /// Empties the near cache: before joining the lease set again, or when invalidations may
    /// have been missed.
    pub fn clear(&self) {
        let mut e = self.entries.lock();
        e.lru.clear();
        e.epoch += 1;
    }

    /// Drops `keys` (an invalidation) and refuses the fills of every read sent before.
    pub fn drop_keys<'a>(&self, keys: impl IntoIterator<Item = &'a String>) {
        let mut e = self.entries.lock();
        e.epoch += 1;
        for k in keys {
            if e.lru.pop(k.as_str()).is_some() {
                self.counts.dropped.inc();
            }
        }
    }

    /// The entry of `key` if it may be served (dropped once older than [`MAX_AGE`]).
    fn fresh<'e>(&self, e: &'e mut Entries, key: &str, now: Instant) -> Option<&'e Versioned> {
        let stale = match e.lru.get(key) {
            None => return None,
            Some((_, at)) => now.duration_since(*at) >= MAX_AGE,
        };
        if stale {
            e.lru.pop(key);
            return None;
        }
        e.lru.peek(key).map(|(v, _)| v)
    }

    /// Keeps what a read sent at `epoch` got from the cache tier, unless an invalidation came
    /// in since.
    fn fill<'a>(&self, epoch: u64, got: impl IntoIterator<Item = (&'a String, &'a Versioned)>) {
        let now = Instant::now();
        let mut e = self.entries.lock();
        if e.epoch != epoch {
            self.counts.refused.inc();
            return;
        }
        for (k, v) in got {
            e.lru.put(k.clone(), (v.clone(), now));
        }
    }

    /// `n` other replicas' leases were revoked by a write of this one (they did not
    /// acknowledge its invalidation in time).
    pub fn revoked(&self, n: usize) {
        self.counts.revoked.inc_by(n as u64);
    }

    /// A write of this replica waited because the lease set had been lost.
    pub fn lost_set_waited(&self) {
        self.counts.grace.inc();
    }
}

/// A [`VersionedCache`] with a near cache in front of it (see the module documentation).
pub struct NearCache {
    inner: Arc<dyn VersionedCache>,
    state: Arc<NearState>,
    bus: Arc<dyn NearBus>,
}

impl NearCache {
    /// `inner` (the cache tier, Redis) behind the near cache `state`, fed by `bus`.
    pub fn new(
        inner: Arc<dyn VersionedCache>,
        state: Arc<NearState>,
        bus: Arc<dyn NearBus>,
    ) -> Self {
        Self { inner, state, bus }
    }

    /// Drops the keys a write's end deletes from this replica's copies. They are still marked
    /// (their write's `begin_write` dropped every copy); the epoch's bump refuses a read that
    /// raced it.
    fn drop_dropped(&self, writes: &[(String, WriteOutcome)]) {
        let dropped = writes
            .iter()
            .filter(|(_, o)| matches!(o, WriteOutcome::Dropped))
            .map(|(k, _)| k);
        self.state.drop_keys(dropped);
    }

    /// Looks `keys` up in the near cache: the epoch to fill with (when the lease is held),
    /// each key's entry if served from it, and the indexes of those that were not.
    fn lookup(&self, keys: &[String]) -> (Option<u64>, Vec<Option<Versioned>>, Vec<usize>) {
        let mut out = vec![None; keys.len()];
        let mut missed = Vec::new();
        let epoch = {
            let mut e = self.state.entries.lock();
            // The epoch first, then the lease: a fill is allowed only for a read whose epoch
            // was taken while the lease was held.
            let epoch = e.epoch;
            if !self.state.holds_lease() {
                return (None, out, (0..keys.len()).collect());
            }
            let now = Instant::now();
            for (i, k) in keys.iter().enumerate() {
                match self.state.fresh(&mut e, k, now) {
                    Some(v) => out[i] = Some(v.clone()),
                    None => missed.push(i),
                }
            }
            epoch
        };
        self.state
            .counts
            .hit
            .inc_by((keys.len() - missed.len()) as u64);
        self.state.counts.miss.inc_by(missed.len() as u64);
        (Some(epoch), out, missed)
    }

    /// Serves `keys` from the near cache where it can and from `read` (one call for the rest)
    /// otherwise, keeping what `read` got when the lease was held when it was sent.
    async fn read_through<F, Fut>(
        &self,
        keys: &[String],
        read: F,
    ) -> CacheResult<Vec<Option<Versioned>>>
    where
        F: FnOnce(Vec<String>) -> Fut,
        Fut: std::future::Future<Output = (Vec<String>, CacheResult<Vec<Option<Versioned>>>)>,
    {
        let (epoch, mut out, missed) = self.lookup(keys);
        if missed.is_empty() {
            return Ok(out);
        }
        let (missed_keys, got) = read(missed.iter().map(|&i| keys[i].clone()).collect()).await;
        let got = got?;
        if let Some(epoch) = epoch {
            self.state.fill(
                epoch,
                missed_keys
                    .iter()
                    .zip(&got)
                    .filter_map(|(k, v)| Some((k, v.as_ref()?))),
            );
        }
        for (i, v) in missed.into_iter().zip(got) {
            out[i] = v;
        }
        Ok(out)
    }
}

#[async_trait]
impl VersionedCache for NearCache {
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }

    async fn ping(&self) -> CacheResult<()> {
        self.inner.ping().await
    }

    async fn leased_get_many(
        &self,
        keys: &[String],
        lease: &str,
        lease_ttl: Duration,
    ) -> CacheResult<Vec<Option<Versioned>>> {
        self.read_through(keys, |missed| async move {
            let got = self.inner.leased_get_many(&missed, lease, lease_ttl).await;
            (missed, got)
        })
        .await
    }

    async fn entries(&self, keys: &[String]) -> CacheResult<Vec<Option<Versioned>>> {
        self.read_through(keys, |missed| async move {
            let got = self.inner.entries(&missed).await;
            (missed, got)
        })
        .await
    }

    async fn entry_versions(&self, keys: &[String]) -> CacheResult<Vec<Option<i64>>> {
        // Through the entries, so that the memo's checks fill the near cache as well.
        Ok(self
            .entries(keys)
            .await?
            .into_iter()
            .map(|v| v.map(|v| v.version))
            .collect())
    }

    fn still_at_now(&self, reads: &[(String, i64)]) -> Option<bool> {
        if !self.state.holds_lease() {
            return None;
        }
        let now = Instant::now();
        let mut e = self.state.entries.lock();
        let mut all = true;
        for (k, then) in reads {
            match self.state.fresh(&mut e, k, now) {
                Some(v) => all &= v.version == *then,
                None => {
                    drop(e);
                    self.state.counts.miss.inc();
                    return None;
                }
            }
        }
        drop(e);
        self.state.counts.hit.inc_by(reads.len() as u64);
        Some(all)
    }

    async fn leased_fill_many(
        &self,
        entries: &[(String, Versioned)],
        lease: &str,
        ttl: Duration,
    ) -> CacheResult<Vec<bool>> {
        // Not kept here: the next read takes the entry from the cache tier, unmarked.
        self.inner.leased_fill_many(entries, lease, ttl).await
    }

    async fn begin_write(&self, keys: &[String], mark_ttl: Duration) -> CacheResult<()> {
        if let Some(done) = self.bus.mark_and_invalidate_others(keys, mark_ttl).await {
            // The marks were set before the invalidation went out, in the same script. This
            // replica's copies go now, before the write commits: a read that raced the marks
            // cannot keep what it got (the epoch).
            self.state.drop_keys(keys);
            return done;
        }
        self.inner.begin_write(keys, mark_ttl).await?;
        // Marked: a read sent from now on misses, so no replica can take the older entry
        // from the cache tier again; a read sent before cannot keep what it gets (the epoch).
        // Dropping the keys before the marks are set would let a read sent in between, and
        // answered before the mark, keep the older entry. Now the copies every replica holds.
        self.state.drop_keys(keys);
        self.bus.invalidate_others(keys).await
    }

    async fn end_write(&self, writes: &[(String, WriteOutcome)], ttl: Duration) -> CacheResult<()> {
        self.drop_dropped(writes);
        self.inner.end_write(writes, ttl).await
    }

    async fn end_write_announced(
        &self,
        writes: &[(String, WriteOutcome)],
        ttl: Duration,
        announcement: &Announcement,
    ) -> CacheResult<bool> {
        self.drop_dropped(writes);
        self.inner
            .end_write_announced(writes, ttl, announcement)
            .await
    }

    async fn invalidate(&self, keys: &[String]) -> CacheResult<()> {
        // Deleted first, for the same reason as the marks of `begin_write`.
        self.inner.invalidate(keys).await?;
        self.state.drop_keys(keys);
        self.bus.invalidate_others(keys).await
    }
}
