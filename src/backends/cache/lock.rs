//! A lock in the key-value tier, shared by every replica: `SET NX` with an expiry and a
//! random token, released by compare-and-delete so that only its owner releases it.
//!
//! One cancellation rule everywhere: a lock that is dropped unreleased (its request was
//! cancelled, by its time limit or a disconnect) is released in the background at once, and
//! a lock whose owner died expires on its own after its hold time.

use std::sync::Arc;
use std::time::Duration;

use super::{CacheResult, KeyValue};

/// How long to wait for a busy lock, and how.
#[derive(Debug, Clone, Copy)]
pub struct Wait {
    /// Give up after this long (zero: one attempt only).
    pub at_most: Duration,
    /// The first pause between attempts; it doubles up to [`Wait::max_pause`].
    pub first_pause: Duration,
    /// The longest pause between attempts.
    pub max_pause: Duration,
}

impl Wait {
    /// One attempt, no waiting.
    pub const NONE: Wait = Wait {
        at_most: Duration::ZERO,
        first_pause: Duration::ZERO,
        max_pause: Duration::ZERO,
    };

    /// Retries for up to `at_most`, pausing 5 ms at first and at most 50 ms.
    pub fn up_to(at_most: Duration) -> Wait {
        Wait {
            at_most,
            first_pause: Duration::from_millis(5),
            max_pause: Duration::from_millis(50),
        }
    }
}

/// A held lock. Release it with [`CacheLock::release`]; dropping it releases it in the
/// background.
pub struct CacheLock {
    kv: Arc<dyn KeyValue>,
    key: String,
    token: String,
    released: bool,
}

impl CacheLock {
    /// Takes the lock at `key`, held for at most `hold`, waiting as `wait` says while someone
    /// else holds it. `Ok(None)`: still busy when the wait ran out.
    pub async fn acquire(
        kv: &Arc<dyn KeyValue>,
        key: impl Into<String>,
        hold: Duration,
        wait: Wait,
    ) -> CacheResult<Option<CacheLock>> {
        let key = key.into();
        let token = uuid::Uuid::new_v4().simple().to_string();
        let deadline = tokio::time::Instant::now() + wait.at_most;
        let mut pause = wait.first_pause;
        loop {
            if kv.set_nx(&key, &token, hold).await? {
                return Ok(Some(CacheLock {
                    kv: kv.clone(),
                    key,
                    token,
                    released: false,
                }));
            }
            if tokio::time::Instant::now() >= deadline {
                return Ok(None);
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(wait.max_pause);
        }
    }

    /// Releases the lock (if it is still ours: it may have expired and been taken since).
    pub async fn release(mut self) {
        self.released = true;
        if let Err(e) = self.kv.del_if_equals(&self.key, &self.token).await {
            // It expires on its own.
            tracing::warn!(error = ?e, key = %self.key, "could not release a lock");
        }
    }
}

impl Drop for CacheLock {
    fn drop(&mut self) {
        if self.released {
            return;
        }
        let (kv, key, token) = (self.kv.clone(), self.key.clone(), self.token.clone());
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let _ = kv.del_if_equals(&key, &token).await;
            });
        }
    }
}
