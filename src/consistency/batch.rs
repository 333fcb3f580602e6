//! Per-request batching without a timer: [`BatchLoader`] gathers the keys that the resolvers
//! of one request ask for in the same poll, and loads them with one call of its [`Loader`].
//!
//! async-graphql's own `DataLoader` waits a fixed delay (1 ms by default) for more keys, on a
//! timer, and loads in a spawned task: every request with a single lookup pays the delay and
//! two hops between tasks. Here a lookup registers its keys, yields once to the runtime (so
//! that the sibling resolvers polled in the same pass register theirs), and the first lookup
//! to run again starts the batch, in the request's own task. Every lookup of the batch awaits
//! the same shared future, so a lookup that is dropped (its operation was cancelled) leaves
//! the others to drive it.

use std::collections::{HashMap, HashSet};
use std::hash::Hash;
use std::sync::{Arc, OnceLock};

use async_graphql::dataloader::Loader;
use futures::future::{BoxFuture, FutureExt, Shared};
use parking_lot::Mutex;

type Loaded<K, L> = Result<Arc<HashMap<K, <L as Loader<K>>::Value>>, <L as Loader<K>>::Error>;

/// One batch: the keys gathered so far and, once started, the load every lookup awaits.
struct Batch<K, L: Loader<K>>
where
    K: Send + Sync + Hash + Eq + Clone + 'static,
{
    keys: Mutex<Vec<K>>,
    load: OnceLock<Shared<BoxFuture<'static, Loaded<K, L>>>>,
}

/// Batches the lookups of one request (see the module documentation). Cheap to create: make
/// one per request; it caches nothing across batches.
pub struct BatchLoader<K, L: Loader<K>>
where
    K: Send + Sync + Hash + Eq + Clone + 'static,
{
    loader: Arc<L>,
    open: Mutex<Option<Arc<Batch<K, L>>>>,
}

impl<K, L> BatchLoader<K, L>
where
    K: Send + Sync + Hash + Eq + Clone + 'static,
    L: Loader<K>,
    L::Value: Clone,
    L::Error: Clone,
{
    /// Batches calls of `loader`.
    pub fn new(loader: L) -> Self {
        Self {
            loader: Arc::new(loader),
            open: Mutex::new(None),
        }
    }

    /// The values of `keys` that exist, loaded together with every other lookup made in the
    /// same poll.
    pub async fn load_many(
        &self,
        keys: impl IntoIterator<Item = K>,
    ) -> Result<HashMap<K, L::Value>, L::Error> {
        let wanted: Vec<K> = keys.into_iter().collect();
        if wanted.is_empty() {
            return Ok(HashMap::new());
        }
        let batch = {
            let mut open = self.open.lock();
            let batch = open
                .get_or_insert_with(|| {
                    Arc::new(Batch {
                        keys: Mutex::new(Vec::new()),
                        load: OnceLock::new(),
                    })
                })
                .clone();
            batch.keys.lock().extend(wanted.iter().cloned());
            batch
        };
        // Let the resolvers polled beside this one join the batch. No timer: the task is
        // woken at once and runs again after the others of its poll have registered.
        tokio::task::yield_now().await;
        let load = batch.load.get_or_init(|| self.start(&batch)).clone();
        let loaded = load.await?;
        Ok(wanted
            .into_iter()
            .filter_map(|k| loaded.get(&k).map(|v| (k, v.clone())))
            .collect())
    }

    /// The value of `key`, if it exists (see [`BatchLoader::load_many`]).
    pub async fn load_one(&self, key: K) -> Result<Option<L::Value>, L::Error> {
        let mut found = self.load_many([key.clone()]).await?;
        Ok(found.remove(&key))
    }

    /// Closes `batch` to new keys and starts its load.
    fn start(&self, batch: &Arc<Batch<K, L>>) -> Shared<BoxFuture<'static, Loaded<K, L>>> {
        let keys = {
            let mut open = self.open.lock();
            if open.as_ref().is_some_and(|b| Arc::ptr_eq(b, batch)) {
                *open = None;
            }
            // Under the `open` lock: no lookup can add a key to this batch any more.
            std::mem::take(&mut *batch.keys.lock())
        };
        let mut seen = HashSet::with_capacity(keys.len());
        let keys: Vec<K> = keys
            .into_iter()
            .filter(|k| seen.insert(k.clone()))
            .collect();
        let loader = self.loader.clone();
        async move { loader.load(&keys).await.map(Arc::new) }
            .boxed()
            .shared()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    struct Doubler {
        calls: AtomicUsize,
        keys: Mutex<Vec<Vec<u32>>>,
    }

    struct Shared(Arc<Doubler>);

    impl Loader<u32> for Shared {
        type Value = u32;
        type Error = String;

        async fn load(&self, keys: &[u32]) -> Result<HashMap<u32, u32>, String> {
            self.0.calls.fetch_add(1, Ordering::SeqCst);
            self.0.keys.lock().push(keys.to_vec());
            Ok(keys
                .iter()
                .filter(|k| **k != 0)
                .map(|k| (*k, k * 2))
                .collect())
        }
    }

    fn doubler() -> (Arc<Doubler>, BatchLoader<u32, Shared>) {
        let d = Arc::new(Doubler {
            calls: AtomicUsize::new(0),
            keys: Mutex::new(Vec::new()),
        });
        (d.clone(), BatchLoader::new(Shared(d)))
    }

    #[tokio::test]
    async fn lookups_made_in_the_same_poll_are_one_batch_with_each_key_once() {
        let (d, loader) = doubler();
        let (a, b, c) = tokio::join!(
            loader.load_one(1),
            loader.load_many([2, 3, 1]),
            loader.load_one(0)
        );
        assert_eq!(a.unwrap(), Some(2));
        assert_eq!(b.unwrap(), HashMap::from([(1, 2), (2, 4), (3, 6)]));
        assert_eq!(c.unwrap(), None);
        assert_eq!(d.calls.load(Ordering::SeqCst), 1);
        assert_eq!(d.keys.lock()[0], vec![1, 2, 3, 0]);
    }

    #[tokio::test]
    async fn a_lookup_after_a_batch_started_gets_a_batch_of_its_own() {
        let (d, loader) = doubler();
        assert_eq!(loader.load_one(4).await.unwrap(), Some(8));
        assert_eq!(loader.load_one(5).await.unwrap(), Some(10));
        assert_eq!(d.calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_single_lookup_never_waits_on_a_timer() {
        // With the clock paused, anything waiting on a timer would only finish once the
        // runtime auto-advances time; the load must finish without time having moved.
        let (_, loader) = doubler();
        let start = tokio::time::Instant::now();
        assert_eq!(loader.load_one(7).await.unwrap(), Some(14));
        assert_eq!(tokio::time::Instant::now(), start);
    }

    #[tokio::test]
    async fn a_dropped_lookup_leaves_its_batch_to_the_others() {
        let (d, loader) = doubler();
        let loader = Arc::new(loader);
        let mut first = Box::pin(loader.load_one(1));
        // Register the first lookup, then drop it before it starts the batch.
        assert!(futures::poll!(first.as_mut()).is_pending());
        let second = loader.load_one(2);
        drop(first);
        assert_eq!(second.await.unwrap(), Some(4));
        assert_eq!(d.calls.load(Ordering::SeqCst), 1);
        assert_eq!(d.keys.lock()[0], vec![1, 2]);
    }
}
