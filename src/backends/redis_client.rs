//! The fred client set-up shared by the Redis cache and the Redis event bus: URL parsing
//! (`redis://`, `redis-cluster://`), reconnection, timeouts, and how a fred error maps to a
//! cache error.

use std::time::Duration;

use fred::error::{Error as FredError, ErrorKind};
use fred::prelude::{Builder, Config, Options, ReconnectPolicy};
use fred::types::config::{TcpConfig, UnresponsiveConfig};

use super::cache::CacheError;

/// Timeout of a TCP (and TLS) connect and of the internal commands run on connect (`AUTH`,
/// `SELECT`, `CLUSTER SLOTS`).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Reconnect backoff: 20 ms doubling up to 200 ms, never giving up. The cap bounds how long
/// a cache that answers again stays unused (a refused connect costs the server nothing).
const RECONNECT_MIN_DELAY_MS: u32 = 20;
const RECONNECT_MAX_DELAY_MS: u32 = 200;

/// The fred builder shared by the cache and the event bus: URL parsing (including
/// `redis-cluster://`), reconnect policy, timeouts.
///
/// `command_timeout` becomes fred's default command timeout (zero disables it, as in fred).
/// A dead-but-open connection (no answer for twice the command timeout, at least a second) is
/// closed and reconnected.
pub fn builder(url: &str, command_timeout: Duration) -> Result<Builder, FredError> {
    let config = Config::from_url(url)?;
    let mut builder = Builder::from_config(config);
    let unresponsive = if command_timeout.is_zero() {
        UnresponsiveConfig::default()
    } else {
        let max_timeout = (command_timeout * 2).max(Duration::from_secs(1));
        UnresponsiveConfig {
            max_timeout: Some(max_timeout),
            interval: (max_timeout / 4).clamp(Duration::from_millis(100), Duration::from_secs(2)),
        }
    };
    builder
        .with_config(|config| {
            // Report a failed *first* connection to the caller instead of retrying forever.
            config.fail_fast = true;
        })
        .with_performance_config(|perf| {
            perf.default_command_timeout = command_timeout;
        })
        .with_connection_config(|conn| {
            conn.connection_timeout = CONNECT_TIMEOUT;
            conn.internal_command_timeout = CONNECT_TIMEOUT;
            // Room for a MOVED/ASK redirection on a cluster. Replays after a dropped
            // connection are ruled out by the per-command `fail_fast` option, not by this.
            conn.max_command_attempts = 3;
            conn.unresponsive = unresponsive;
            conn.tcp = TcpConfig {
                nodelay: Some(true),
                ..TcpConfig::default()
            };
        })
        .set_policy(ReconnectPolicy::new_exponential(
            0, // unlimited attempts
            RECONNECT_MIN_DELAY_MS,
            RECONNECT_MAX_DELAY_MS,
            2,
        ));
    Ok(builder)
}

/// Per-command options of every cache command: fail at once while disconnected, and give up
/// after `command_timeout`.
pub fn command_options(command_timeout: Duration) -> Options {
    Options {
        fail_fast: true,
        timeout: (!command_timeout.is_zero()).then_some(command_timeout),
        ..Options::default()
    }
}

/// Maps a fred error of a cache command: the server being away or slow is [`CacheError::Unavailable`], anything
/// else (a wrong type, a script error, a bad reply) is [`CacheError::Protocol`].
pub fn map_err(e: FredError) -> CacheError {
    let unavailable = matches!(
        e.kind(),
        ErrorKind::IO
            | ErrorKind::Timeout
            | ErrorKind::Canceled
            | ErrorKind::Backpressure
            | ErrorKind::Routing
            | ErrorKind::Cluster
    ) || [
        "LOADING",
        "MASTERDOWN",
        "TRYAGAIN",
        "CLUSTERDOWN",
        "READONLY",
        "BUSY",
    ]
    .iter()
    .any(|code| e.details().starts_with(code));
    if unavailable {
        CacheError::Unavailable(Box::new(e))
    } else {
        CacheError::Protocol(Box::new(e))
    }
}

/// Escapes the glob characters of a `SCAN MATCH` or `PSUBSCRIBE` pattern.
pub fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}
