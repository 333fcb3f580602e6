//! How many password and API-key checks may fail: per account (slowed from the
//! third attempt, refused past `ARENA_LOGIN_MAX_FAILURES`) and per client address (refused
//! past `ARENA_ADDRESS_MAX_FAILURES`), each within `ARENA_LOGIN_LOCKOUT`.
//!
//! Attempts are counted *before* they are checked, so parallel requests and batches cannot
//! outrun either limit; a check that succeeds gives its counts back. The counters live in the
//! cache tier, shared by every replica, and expire with their window.
//!
//! Only a name that belongs to an account gets a counter of its own. A made-up username is
//! counted under its client address alone: a flood of made-up names leaves one key per
//! address, never one per name, so it cannot grow the cache tier without bound. (Usernames
//! are not secret here, `createUser` tells a taken one, so treating the two alike would hide
//! nothing; what an unknown name still costs is the hash, as a wrong password does.)

use std::time::Duration;

use crate::error::{AppError, AppResult};
use crate::state::AppState;
use crate::viewer::ClientAddr;

/// The counter of attempts against an account.
fn account_key(username: &str) -> String {
    format!("login_failures:{username}")
}

/// The counter of attempts from a client address.
fn address_key(client: ClientAddr) -> String {
    format!("login_failures_from:{}", client.budget_key())
}

/// A password or API-key check that has been counted and may now run.
#[must_use = "an attempt that succeeds must give its counts back with `succeeded`"]
pub struct Attempt {
    address: String,
    account: Option<String>,
}

/// Counts one more attempt from `client`; `RATE_LIMITED` when the address has used up its
/// budget. Such a refusal is answered after `ARENA_THROTTLE_DELAY_MS`: it costs the server no
/// CPU meanwhile, and a client that loops on refusals makes few of them.
pub async fn from_address(state: &AppState, client: ClientAddr) -> AppResult<Attempt> {
    let settings = &state.settings;
    let address = address_key(client);
    let attempt = count(state, &address).await;
    if attempt > settings.address_max_failures {
        tokio::time::sleep(Duration::from_millis(settings.throttle_delay_ms)).await;
        return Err(AppError::RateLimited(format!(
            "too many failed password or API-key checks from this address; try again in {} s",
            settings.login_lockout_secs
        )));
    }
    Ok(Attempt {
        address,
        account: None,
    })
}

impl Attempt {
    /// Counts the attempt against the account `username` too (the name of an account that
    /// exists): past `ARENA_LOGIN_MAX_FAILURES` attempts within the window it is refused with
    /// `RATE_LIMITED` without being checked; from the third on it is slowed.
    pub async fn against_account(mut self, state: &AppState, username: &str) -> AppResult<Self> {
        let settings = &state.settings;
        let key = account_key(username);
        let attempt = count(state, &key).await;
        if attempt > settings.login_max_failures {
            return Err(AppError::RateLimited(format!(
                "too many failed password attempts for `{username}`; try again in {} s",
                settings.login_lockout_secs
            )));
        }
        self.account = Some(key);
        let earlier = attempt - 1;
        if earlier >= 2 {
            tokio::time::sleep(Duration::from_millis(100 * u64::from(earlier.min(10)))).await;
        }
        Ok(self)
    }

    /// The check succeeded: the account's count starts again, and the address gets its
    /// attempt back (it counts failures, not sign-ins: many people may share one address).
    pub async fn succeeded(self, state: &AppState) {
        if let Some(account) = self.account {
            let _ = state.kv.del(&[account]).await;
        }
        // The counter may have expired meanwhile: a decrement would then recreate it, below
        // zero and without expiry, so such a leftover is deleted.
        if let Ok(n) = state.kv.incr_by(&self.address, -1).await {
            if n < 0 {
                let _ = state.kv.del(&[self.address]).await;
            }
        }
    }
}

/// Adds one to `key`'s count in the lockout window; a cache outage degrades throttling, not
/// signing in (the attempt counts as the first).
async fn count(state: &AppState, key: &str) -> u32 {
    let window = Duration::from_secs(state.settings.login_lockout_secs);
    match state.kv.incr_with_ttl(key, window).await {
        Ok(n) => u32::try_from(n.max(1)).unwrap_or(u32::MAX),
        Err(_) => 1,
    }
}
