//! Salted, SHA-256 based hashing of passwords and API secrets (no argon2, SPEC §3).
//!
//! New hashes are PBKDF2-HMAC-SHA256 in a self-describing string,
//! `pbkdf2-sha256$<iterations>$<salt>$<hash>`. The seed's form, `hex(sha256(secret ‖ salt))`
//! with the salt in its own column, still verifies and is reported as needing a rehash.
//! Every comparison is constant-time.

use std::time::Duration;

use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::error::{AppResult, OrInternal};

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

/// Runs a CPU-heavy hash off the async worker threads.
pub async fn off_the_runtime<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> AppResult<T> {
    tokio::task::spawn_blocking(f)
        .await
        .or_internal("a hashing task failed")
}

/// Secrets recently verified by this instance: a key's id → the stored hash it was verified
/// against and the SHA-256 of the secret. A later request with the same secret against the
/// same stored hash skips the expensive check; a rotation changes the stored hash, so an old
/// entry never matches again. Bounded in size and age, and owned by one instance's state.
pub struct VerifiedSecrets {
    cache: moka::sync::Cache<String, (String, [u8; 32])>,
}

impl VerifiedSecrets {
    /// At most `capacity` keys, each remembered for at most `ttl`.
    pub fn new(capacity: u64, ttl: Duration) -> Self {
        Self {
            cache: moka::sync::Cache::builder()
                .max_capacity(capacity)
                .time_to_live(ttl)
                .build(),
        }
    }

    /// Whether `secret` was verified against `stored_hash` for `key` (constant time in the
    /// secret).
    pub fn verified(&self, key: &str, stored_hash: &str, secret: &str) -> bool {
        let digest: [u8; 32] = Sha256::digest(secret.as_bytes()).into();
        self.cache.get(key).is_some_and(|(hash, remembered)| {
            hash == stored_hash && bool::from(remembered.ct_eq(&digest))
        })
    }

    /// Remembers that `secret` matched `stored_hash` for `key`.
    pub fn remember(&self, key: &str, stored_hash: &str, secret: &str) {
        let digest: [u8; 32] = Sha256::digest(secret.as_bytes()).into();
        self.cache
            .insert(key.to_owned(), (stored_hash.to_owned(), digest));
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
