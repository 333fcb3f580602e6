//! Background tasks of `serve`: started with the server, stopped (and flushed) after it.

use std::future::Future;
use std::pin::Pin;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::app::AppState;

/// A background task: runs until `stop` turns true, then finishes its work and returns.
pub type Worker = fn(AppState, watch::Receiver<bool>) -> Pin<Box<dyn Future<Output = ()> + Send>>;

/// The running background tasks.
pub struct Workers {
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

/// Every worker `serve` runs.
fn workers(state: &AppState) -> Vec<Worker> {
    let mut w: Vec<Worker> = vec![crate::write_through::health_worker];
    w.push(crate::usage::counting::flush_worker);
    if state.settings.sync_enabled {
        w.push(crate::usage::sync::sync_worker);
    }
    w
}

/// Starts every worker.
pub fn start(state: &AppState) -> Workers {
    let (stop, rx) = watch::channel(false);
    let tasks = workers(state)
        .into_iter()
        .map(|w| tokio::spawn(w(state.clone(), rx.clone())))
        .collect();
    Workers { stop, tasks }
}

impl Workers {
    /// Asks every worker to stop and waits for them (they flush on the way out).
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
    }
}
