//! Salted, SHA-256 based hashing of passwords and API secrets (no argon2).
//!
//! New hashes are PBKDF2-HMAC-SHA256 in a self-describing string,
//! `pbkdf2-sha256$<iterations>$<salt>$<hash>`. The seed's form, `hex(sha256(secret ‖ salt))`
//! with the salt in its own column, still verifies and is reported as needing a rehash.
//! Every comparison is constant-time.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::sync::Semaphore;

use crate::error::{AppError, AppResult};
use crate::metrics::Metrics;

const SCHEME: &str = "pbkdf2-sha256";

/// A new random 16-byte salt, as 32 hex characters.
pub fn new_salt() -> String {
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// `n` random bytes from the OS, URL-safe base64 without padding.
pub fn random_token(n: usize) -> String {
    use base64::Engine;
    let mut bytes = vec![0u8; n];
    rand::rng().fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// SHA-256 as hex (used for session tokens, which are random and need no stretching).
pub fn sha256_hex(data: &str) -> String {
    hex::encode(Sha256::digest(data.as_bytes()))
}

fn pbkdf2_hex(secret: &str, salt: &str, iterations: u32) -> String {
    let mut out = [0u8; 32];
    pbkdf2::pbkdf2_hmac::<Sha256>(secret.as_bytes(), salt.as_bytes(), iterations, &mut out);
    hex::encode(out)
}

/// Hashes `secret` with `salt` in the current scheme.
pub fn hash_secret(secret: &str, salt: &str, iterations: u32) -> String {
    format!(
        "{SCHEME}${iterations}${salt}${}",
        pbkdf2_hex(secret, salt, iterations)
    )
}

/// The seed's legacy hash: `hex(sha256(secret ‖ salt))`.
pub fn legacy_hash(secret: &str, salt: &str) -> String {
    hex::encode(Sha256::digest(format!("{secret}{salt}").as_bytes()))
}

/// The outcome of checking a secret against a stored hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verified {
    /// The secret matches.
    pub ok: bool,
    /// The stored hash should be replaced (legacy form or other iteration count).
    pub needs_rehash: bool,
}

/// Checks `secret` against `stored` (either form); `salt` is the row's salt column, used by
/// the legacy form.
pub fn verify_secret(secret: &str, salt: &str, stored: &str, iterations: u32) -> Verified {
    let parts: Vec<&str> = stored.split('$').collect();
    match parts.as_slice() {
        [SCHEME, iters, salt_in_hash, hash] => {
            let Ok(iters) = iters.parse::<u32>() else {
                return Verified {
                    ok: false,
                    needs_rehash: false,
                };
            };
            let computed = pbkdf2_hex(secret, salt_in_hash, iters);
            if iters < iterations {
                // A cheaper (older) hash must not answer sooner than an unknown user does.
                burn_verification(secret, iterations - iters);
            }
            Verified {
                ok: bool::from(computed.as_bytes().ct_eq(hash.as_bytes())),
                needs_rehash: iters != iterations,
            }
        }
        [legacy] => {
            let computed = legacy_hash(secret, salt);
            let ok = bool::from(computed.as_bytes().ct_eq(legacy.as_bytes()));
            // One SHA-256 would tell a legacy hash (and an existing account) by its speed.
            burn_verification(secret, iterations);
            Verified {
                ok,
                needs_rehash: true,
            }
        }
        _ => Verified {
            ok: false,
            needs_rehash: false,
        },
    }
}

/// A unit of work for a hashing thread.
type Job = Box<dyn FnOnce() + Send + 'static>;

/// The threads that hash passwords and API secrets, and the bound on the hashes that may wait
/// for them. Every PBKDF2 computation of the server (real or dummy) runs here, so that no more
/// than `threads` run at once, on threads of their own at the lowest CPU priority: the async
/// workers that serve every other request are never among them, and win the CPU whenever both
/// want it. At most `queue` more hashes wait; one beyond that is refused at once with
/// `RATE_LIMITED` instead of joining an ever longer line. A hash whose request was cancelled
/// still runs to its end and holds its place until then, so the bound is on the work done,
/// not on the requests waiting.
pub struct Hasher {
    jobs: crossbeam_channel::Sender<Job>,
    places: Arc<Semaphore>,
    metrics: Metrics,
}

impl Hasher {
    /// Starts `threads` hashing threads (at least one), with room for `queue` waiting hashes.
    /// They stop when the `Hasher` is dropped.
    pub fn new(threads: usize, queue: usize, metrics: &Metrics) -> Self {
        let threads = threads.max(1);
        let (jobs, incoming) = crossbeam_channel::unbounded::<Job>();
        for i in 0..threads {
            let incoming = incoming.clone();
            std::thread::Builder::new()
                .name(format!("arena-hash-{i}"))
                .spawn(move || {
                    lower_this_threads_priority();
                    for job in incoming {
                        job();
                    }
                })
                .expect("a hashing thread starts");
        }
        Self {
            jobs,
            places: Arc::new(Semaphore::new(threads + queue)),
            metrics: metrics.clone(),
        }
    }

    /// Runs `f` (a hash) on a hashing thread; `RATE_LIMITED` at once when every thread is
    /// busy and the queue is full.
    pub async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> AppResult<T> {
        let Ok(place) = self.places.clone().try_acquire_owned() else {
            self.metrics.hashes_refused.inc();
            return Err(AppError::RateLimited(
                "the server is busy checking passwords and keys; try again in a moment".into(),
            ));
        };
        let (done, outcome) = tokio::sync::oneshot::channel();
        let (hashes, in_flight) = (
            self.metrics.hashes.clone(),
            self.metrics.hashes_in_flight.clone(),
        );
        in_flight.inc();
        let job: Job = Box::new(move || {
            let out = std::panic::catch_unwind(AssertUnwindSafe(f));
            hashes.inc();
            in_flight.dec();
            drop(place);
            if let Ok(out) = out {
                let _ = done.send(out);
            }
        });
        self.jobs
            .send(job)
            .map_err(|_| AppError::internal("the hashing threads have stopped"))?;
        outcome
            .await
            .map_err(|_| AppError::internal("a hashing job panicked"))
    }
}

/// Gives the calling thread the lowest CPU priority (nice 19), so that the threads serving
/// requests always run first and hashing takes only the CPU they leave.
fn lower_this_threads_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: `gettid` and `setpriority` take and return plain integers. On Linux the nice
    // value belongs to each thread, and `PRIO_PROCESS` with a thread id sets that thread's.
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        if libc::setpriority(libc::PRIO_PROCESS, tid, 19) != 0 {
            tracing::warn!("could not lower the priority of a hashing thread");
        }
    }
}

/// Secrets recently verified by this instance: a key's id → the stored hash it was verified
/// against and the SHA-256 of the secret. A later request with the same secret against the
/// same stored hash skips the expensive check; a rotation changes the stored hash, so an old
/// entry never matches again. Bounded in size and age, and owned by one instance's state.
pub struct VerifiedSecrets {
    cache: parking_lot::Mutex<lru::LruCache<String, Remembered>>,
    ttl: Duration,
}

/// What [`VerifiedSecrets`] keeps per key.
struct Remembered {
    stored_hash: String,
    digest: [u8; 32],
    until: std::time::Instant,
}

impl VerifiedSecrets {
    /// At most `capacity` keys, each remembered for at most `ttl`.
    pub fn new(capacity: u64, ttl: Duration) -> Self {
        let capacity = std::num::NonZeroUsize::new(capacity.max(1) as usize)
            .unwrap_or(std::num::NonZeroUsize::MIN);
        Self {
            cache: parking_lot::Mutex::new(lru::LruCache::new(capacity)),
            ttl,
        }
    }

    /// Whether `secret` was verified against `stored_hash` for `key` (constant time in the
    /// secret).
    pub fn verified(&self, key: &str, stored_hash: &str, secret: &str) -> bool {
        let digest: [u8; 32] = Sha256::digest(secret.as_bytes()).into();
        let mut cache = self.cache.lock();
        match cache.get(key) {
            Some(r) if r.until <= std::time::Instant::now() => {
                cache.pop(key);
                false
            }
            Some(r) => r.stored_hash == stored_hash && bool::from(r.digest.ct_eq(&digest)),
            None => false,
        }
    }

    /// Remembers that `secret` matched `stored_hash` for `key`.
    pub fn remember(&self, key: &str, stored_hash: &str, secret: &str) {
        let digest: [u8; 32] = Sha256::digest(secret.as_bytes()).into();
        let remembered = Remembered {
            stored_hash: stored_hash.to_owned(),
            digest,
            until: std::time::Instant::now() + self.ttl,
        };
        self.cache.lock().put(key.to_owned(), remembered);
    }
}

/// Spends the time of one verification, for unknown users and keys, so that they cost the
/// same as a wrong secret.
pub fn burn_verification(secret: &str, iterations: u32) {
    let _ = pbkdf2_hex(secret, "00000000000000000000000000000000", iterations);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hash_verifies_only_its_own_secret() {
        let salt = new_salt();
        let h = hash_secret("correct horse", &salt, 1000);
        assert!(verify_secret("correct horse", &salt, &h, 1000).ok);
        assert!(!verify_secret("wrong horse", &salt, &h, 1000).ok);
        assert!(verify_secret("correct horse", &salt, &h, 2000).needs_rehash);
    }

    #[test]
    fn the_seeds_legacy_hash_verifies_and_asks_for_a_rehash() {
        let salt = new_salt();
        let h = legacy_hash("hunter2hunter2", &salt);
        let v = verify_secret("hunter2hunter2", &salt, &h, 1000);
        assert!(v.ok && v.needs_rehash);
        assert!(!verify_secret("nope", &salt, &h, 1000).ok);
    }

    #[test]
    fn salts_are_sixteen_random_bytes_in_hex() {
        let (a, b) = (new_salt(), new_salt());
        assert_eq!(a.len(), 32);
        assert_ne!(a, b);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
    }
}
