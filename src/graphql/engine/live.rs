//! Live queries: `query … @live { … }` over the WebSocket or SSE sends its result, then sends
//! it again whenever something it read changes, driven by the write path, never by polling.
//!
//! - Every committed write names the entries and collections it changed on the event bus
//!   ([`crate::backends::events::LIVE_TOPIC`], Redis pub/sub across replicas); one task per
//!   instance (the dispatcher) reads it and wakes the live documents that read any of them.
//! - A *live document* (a hub) is a document with its operation, variables and credential.
//!   However many clients subscribe to it, a write that affects it runs it once
//!   (`arena_live_executions_total`) and every subscriber gets that result. A burst of writes
//!   wakes it once while it runs (a [`Notify`] holds one permit): subscribers get the latest
//!   state, not every step. A result equal to the last one sent is not sent.
//! - Each subscriber runs the query itself first, so its first result is as fresh as any read
//!   (a read that starts after an acknowledged write sees it). From then on it takes only
//!   results of executions that started after its own (a ticket orders executions), so it
//!   never goes back.
//! - After each execution the hub checks that the versions it read are still current, once
//!   it is registered for them: a write that committed between the execution and the
//!   registration is caught there. A key still marked by a write in flight is checked again
//!   after a short wait, or when the write's message comes.
//! - What the cache cannot vouch for (a read that is not a versioned entry, a cache that is
//!   away) is executed again every [`RECHECK`], and the result says so in
//!   `extensions.live.mode = "recheck"`; while the cache tier is unusable every live
//!   document re-checks so. When the bus may have lost messages (a subscriber that fell
//!   behind, a reconnect to Redis), every live document runs again.
//! - The credential is checked again at every execution: a revoked session or API key ends
//!   the live query with its error. A session's expiry wakes it too.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use async_graphql::Response;
use axum::body::Bytes;
use futures::stream::{BoxStream, StreamExt};
use parking_lot::Mutex;
use tokio::sync::{watch, Notify};

use super::documents::Prepared;
use super::pipeline::Pipeline;
use crate::backends::events::{EventBus, LIVE_TOPIC};
use crate::metrics::Metrics;
use crate::viewer::RequestAuth;

/// How often a live query that the cache cannot vouch for runs again.
pub const RECHECK: Duration = Duration::from_secs(1);

/// The longest wait before a hub whose reads were being written checks again.
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// What a live query runs: its document, operation, variables and credential.
pub struct Spec {
    /// The document (held, so its address stays its identity).
    pub prepared: Arc<Prepared>,
    /// The operation's name.
    pub operation: Option<String>,
    /// The variables, coerced.
    pub variables: async_graphql::Variables,
    /// The credential it runs with, checked again every time.
    pub auth: Option<RequestAuth>,
    /// Who asks (a hash of the credential, `-` for none).
    pub who: String,
}

/// One execution of a live query.
pub struct Executed {
    /// Its place among every execution of this instance (taken when it started).
    pub ticket: u64,
    /// The response, with error codes.
    pub response: Response,
    /// The response serialized (what is compared).
    pub body: Bytes,
    /// The versioned entries it read.
    pub reads: Vec<(String, i64)>,
    /// Whether the versions of `reads` decide the response (else it is re-checked).
    pub pure: bool,
    /// When something it read stops being true by itself (epoch milliseconds).
    pub until: Option<i64>,
    /// Whether it ends the live query (the credential was refused, or the document invalid).
    pub terminal: bool,
}

impl Executed {
    /// A copy of the response to send.
    pub fn response(&self) -> Response {
        let mut r = Response::new(self.response.data.clone());
        r.errors = self.response.errors.clone();
        r.extensions = self.response.extensions.clone();
        r
    }
}

type HubKey = (usize, Option<String>, String, String);

struct Hub {
    id: u64,
    key: HubKey,
    /// Set by writes that changed something it read.
    dirty: Notify,
    /// The latest result, to every subscriber.
    tx: watch::Sender<Arc<Executed>>,
}

#[derive(Default)]
struct Registry {
    hubs: HashMap<HubKey, Arc<Hub>>,
    by_id: HashMap<u64, Arc<Hub>>,
    /// Hubs by the cache key they read.
    by_dep: HashMap<String, HashSet<u64>>,
    /// The keys each hub is registered for.
    deps: HashMap<u64, Vec<String>>,
    next_id: u64,
}

impl Registry {
    fn set_deps(&mut self, id: u64, reads: &[(String, i64)]) {
        let keys: Vec<String> = reads.iter().map(|(k, _)| k.clone()).collect();
        self.clear_deps(id);
        for k in &keys {
            self.by_dep.entry(k.clone()).or_default().insert(id);
        }
        self.deps.insert(id, keys);
    }

    fn clear_deps(&mut self, id: u64) {
        for k in self.deps.remove(&id).unwrap_or_default() {
            if let Some(ids) = self.by_dep.get_mut(&k) {
                ids.remove(&id);
                if ids.is_empty() {
                    self.by_dep.remove(&k);
                }
            }
        }
    }
}

/// The live documents of one instance.
pub struct Live {
    registry: Mutex<Registry>,
    tickets: AtomicU64,
    dispatcher: OnceLock<()>,
    events: Arc<dyn EventBus>,
    metrics: Metrics,
    /// Whether the cache tier may be used (its health, a local flag).
    usable: Box<dyn Fn() -> bool + Send + Sync>,
    /// Told when the cache tier becomes unusable or usable again.
    health_changed: Notify,
}

/// How often the dispatcher looks at the cache tier's health flag (no I/O).
const HEALTH_LOOK: Duration = Duration::from_millis(200);

impl Live {
    /// No live documents yet; `events` tells of committed writes, `usable` whether the cache
    /// tier is healthy.
    pub fn new(
        events: Arc<dyn EventBus>,
        metrics: Metrics,
        usable: impl Fn() -> bool + Send + Sync + 'static,
    ) -> Self {
        Self {
            registry: Mutex::default(),
            tickets: AtomicU64::new(0),
            dispatcher: OnceLock::new(),
            events,
            metrics,
            usable: Box::new(usable),
            health_changed: Notify::new(),
        }
    }

    /// The ticket of an execution that starts now.
    pub fn ticket(&self) -> u64 {
        self.tickets.fetch_add(1, Ordering::AcqRel) + 1
    }

    /// Live documents kept up to date now.
    pub fn documents(&self) -> usize {
        self.registry.lock().hubs.len()
    }

    /// Starts reading the bus, once: subscribed before this returns, so no message published
    /// after it is missed. Also tells every live document when the cache tier becomes
    /// unusable (the bus may be cut off with it: each re-checks within [`RECHECK`], spread
    /// over that second rather than all at once) and when it is usable again (each checks
    /// that the versions it read are still current, and is driven by writes again).
    fn dispatch(self: &Arc<Self>) {
        self.dispatcher.get_or_init(|| {
            let mut messages = self.events.subscribe_gapped(LIVE_TOPIC);
            let live = Arc::downgrade(self);
            tokio::spawn(async move {
                while let Some(message) = messages.next().await {
                    let Some(live) = live.upgrade() else { break };
                    live.on_message(message.as_deref());
                }
            });
            let live = Arc::downgrade(self);
            tokio::spawn(async move {
                let mut was = true;
                loop {
                    tokio::time::sleep(HEALTH_LOOK).await;
                    let Some(live) = live.upgrade() else { break };
                    let now = (live.usable)();
                    if now != was {
                        was = now;
                        live.health_changed.notify_waiters();
                    }
                }
            });
        });
    }

    /// Wakes the hubs that read any key of `message` (a JSON array of keys, where `kind:*`
    /// stands for every key of that kind); every hub when messages may have been lost
    /// (`None`) or one cannot be read.
    fn on_message(&self, message: Option<&str>) {
        let keys: Option<Vec<String>> = message.and_then(|m| serde_json::from_str(m).ok());
        let registry = self.registry.lock();
        match keys {
            Some(keys) => {
                let mut woken = HashSet::new();
                let mut wake = |ids: &HashSet<u64>| {
                    for id in ids {
                        if woken.insert(*id) {
                            if let Some(hub) = registry.by_id.get(id) {
                                hub.dirty.notify_one();
                            }
                        }
                    }
                };
                for k in &keys {
                    match k.strip_suffix('*') {
                        // `kind:*`: every key of that kind (a bulk write).
                        Some(prefix) => {
                            for (_, ids) in registry
                                .by_dep
                                .iter()
                                .filter(|(d, _)| d.starts_with(prefix))
                            {
                                wake(ids);
                            }
                        }
                        None => {
                            if let Some(ids) = registry.by_dep.get(k) {
                                wake(ids);
                            }
                        }
                    }
                }
            }
            None => {
                for hub in registry.by_id.values() {
                    hub.dirty.notify_one();
                }
            }
        }
    }

    /// The stream of a subscriber whose own first execution was `first`: it joins (or
    /// creates) the hub of `spec` and yields the hub's later results.
    pub fn follow(
        self: &Arc<Self>,
        pipeline: &Arc<Pipeline>,
        spec: Spec,
        first: Arc<Executed>,
    ) -> BoxStream<'static, Response> {
        self.dispatch();
        let key: HubKey = (
            Arc::as_ptr(&spec.prepared) as usize,
            spec.operation.clone(),
            serde_json::to_string(&spec.variables).unwrap_or_default(),
            spec.who.clone(),
        );
        let rx = {
            let mut registry = self.registry.lock();
            match registry.hubs.get(&key) {
                // The hub's latest result may be newer than this subscriber's own first one
                // (it ran after): looked at first, taken if so.
                Some(hub) => {
                    let mut rx = hub.tx.subscribe();
                    rx.mark_changed();
                    rx
                }
                None => {
                    registry.next_id += 1;
                    let id = registry.next_id;
                    let (tx, rx) = watch::channel(first.clone());
                    let hub = Arc::new(Hub {
                        id,
                        key: key.clone(),
                        dirty: Notify::new(),
                        tx,
                    });
                    registry.hubs.insert(key, hub.clone());
                    registry.by_id.insert(id, hub.clone());
                    registry.set_deps(id, &first.reads);
                    self.metrics.live_documents.inc();
                    tokio::spawn(run_hub(
                        Arc::downgrade(self),
                        Arc::downgrade(pipeline),
                        hub,
                        spec,
                        first.clone(),
                    ));
                    rx
                }
            }
        };
        let gauge = self.metrics.live_queries.clone();
        gauge.inc();
        let on_drop = scopeguard::guard((), move |()| gauge.dec());
        let state = (rx, first.ticket, first.body.clone(), on_drop, false);
        futures::stream::unfold(
            state,
            |(mut rx, mut seen, mut last, on_drop, ended)| async move {
                if ended {
                    return None;
                }
                loop {
                    rx.changed().await.ok()?;
                    let next = rx.borrow_and_update().clone();
                    if next.ticket <= seen {
                        continue;
                    }
                    seen = next.ticket;
                    if next.body == last && !next.terminal {
                        continue;
                    }
                    last = next.body.clone();
                    let ended = next.terminal;
                    return Some((next.response(), (rx, seen, last, on_drop, ended)));
                }
            },
        )
        .boxed()
    }

    /// Removes `hub` if nobody follows it any more (checked under the registry's lock, under
    /// which subscribers join).
    fn retire(&self, hub: &Hub, force: bool) -> bool {
        let mut registry = self.registry.lock();
        if !force && hub.tx.receiver_count() > 0 {
            return false;
        }
        registry.hubs.remove(&hub.key);
        registry.by_id.remove(&hub.id);
        registry.clear_deps(hub.id);
        self.metrics.live_documents.dec();
        true
    }

    fn register(&self, hub: &Hub, reads: &[(String, i64)]) {
        self.registry.lock().set_deps(hub.id, reads);
    }
}

/// Keeps one live document up to date until nobody follows it.
async fn run_hub(
    live: Weak<Live>,
    pipeline: Weak<Pipeline>,
    hub: Arc<Hub>,
    spec: Spec,
    first: Arc<Executed>,
) {
    let mut last = first;
    // Whether the versions `last` read still have to be checked (after registering).
    let mut verify = true;
    let mut backoff = Duration::from_millis(10);
    loop {
        let (Some(l), Some(p)) = (live.upgrade(), pipeline.upgrade()) else {
            return;
        };
        let mut wait: Option<Duration> = None;
        if !last.pure || !(l.usable)() {
            wait = Some(RECHECK);
        } else if verify {
            match p.live_current(&last.reads).await {
                Some(true) => {
                    verify = false;
                    backoff = Duration::from_millis(10);
                }
                // Written since, or being written: run again soon (or when the write's
                // message comes).
                Some(false) => {
                    wait = Some(backoff);
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
                None => wait = Some(RECHECK),
            }
        }
        if let Some(until) = last.until {
            let left = until - chrono::Utc::now().timestamp_millis();
            let left = Duration::from_millis(left.max(0) as u64 + 1);
            wait = Some(wait.map_or(left, |w| w.min(left)));
        }
        drop(p);
        let sleep = async {
            match wait {
                Some(w) => tokio::time::sleep(w).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = hub.dirty.notified() => {}
            () = sleep => {}
            () = l.health_changed.notified() => {
                // Usable again: what was read is checked before anything runs (a write may
                // have gone unseen meanwhile); unusable: re-checked from now on.
                verify = true;
                continue;
            }
            () = hub.tx.closed() => {
                if l.retire(&hub, false) {
                    return;
                }
                continue;
            }
        }
        drop(l);
        let Some(p) = pipeline.upgrade() else { return };
        let next = Arc::new(p.live_execute(&spec, false).await);
        let Some(l) = live.upgrade() else { return };
        l.register(&hub, &next.reads);
        verify = true;
        let changed = next.body != last.body || next.terminal;
        let terminal = next.terminal;
        if changed {
            hub.tx.send_replace(next.clone());
        }
        last = next;
        if terminal {
            l.retire(&hub, true);
            return;
        }
    }
}
