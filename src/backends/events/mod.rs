//! Events for subscriptions: an in-process broadcast by default, Redis pub/sub when
//! `REDIS_URL` is set, so that every replica sees every event. Each replica holds one
//! upstream subscription and fans messages out locally.

pub mod local;
pub mod redis;

use async_trait::async_trait;
use futures::stream::BoxStream;

/// The topic on which every committed write names the entries and collections it changed
/// (a JSON array of cache keys), for live queries.
pub const LIVE_TOPIC: &str = "live";

/// An event bus error, with its cause.
#[derive(Debug, thiserror::Error)]
#[error("event bus")]
pub struct EventError(#[source] pub crate::backends::cache::BoxError);

/// Publish/subscribe on named topics; payloads are JSON text.
#[async_trait]
pub trait EventBus: Send + Sync + 'static {
    /// `local` or `redis`.
    fn kind(&self) -> &'static str;
    /// Checks the bus answers.
    async fn ping(&self) -> Result<(), EventError>;
    /// Sends `payload` to every subscriber of `topic` on every replica.
    async fn publish(&self, topic: &str, payload: String) -> Result<(), EventError>;
    /// A stream of the payloads published on `topic` from now on. Dropping the stream
    /// unsubscribes; it costs nothing afterwards.
    fn subscribe(&self, topic: &str) -> BoxStream<'static, String>;
    /// As [`EventBus::subscribe`], with `None` wherever payloads may have been lost (the
    /// subscriber fell behind, or its connection to the bus was re-established): for
    /// listeners that must then assume anything changed.
    fn subscribe_gapped(&self, topic: &str) -> BoxStream<'static, Option<String>>;
    /// The Redis channel of `topic`, on which the cache tier may publish a payload itself
    /// (a write's change event, in the script that ends the write); `None` in process.
    fn channel(&self, _topic: &str) -> Option<String> {
        None
    }
}
