//! In-process events: one `tokio::sync::broadcast` channel per topic.

use std::collections::HashMap;

use async_trait::async_trait;
use futures::stream::{BoxStream, StreamExt};
use parking_lot::Mutex;
use tokio::sync::broadcast;
use tokio_stream::wrappers::BroadcastStream;

use super::{EventBus, EventError};

/// Broadcast channels by topic; a topic's channel is dropped once nobody listens.
#[derive(Default)]
pub struct LocalEvents {
    topics: Mutex<HashMap<String, broadcast::Sender<String>>>,
}

impl LocalEvents {
    /// An empty bus.
    pub fn new() -> Self {
        Self::default()
    }

    /// The local channel of `topic`, made when first asked for.
    fn topic(&self, topic: &str) -> broadcast::Sender<String> {
        self.topics
            .lock()
            .entry(topic.to_owned())
            .or_insert_with(|| broadcast::channel(256).0)
            .clone()
    }
}

/// Subscribes a stream to `sender`, skipping messages lost to lag.
pub(crate) fn stream_of(sender: &broadcast::Sender<String>) -> BoxStream<'static, String> {
    BroadcastStream::new(sender.subscribe())
        .filter_map(|m| futures::future::ready(m.ok()))
        .boxed()
}

/// Subscribes a stream to `sender`, with `None` where messages were lost to lag.
pub(crate) fn gapped_stream_of(
    sender: &broadcast::Sender<String>,
) -> BoxStream<'static, Option<String>> {
    BroadcastStream::new(sender.subscribe())
        .map(|m| m.ok())
        .boxed()
}

#[async_trait]
impl EventBus for LocalEvents {
    fn kind(&self) -> &'static str {
        "local"
    }

    async fn ping(&self) -> Result<(), EventError> {
        Ok(())
    }

    async fn publish(&self, topic: &str, payload: String) -> Result<(), EventError> {
        let mut topics = self.topics.lock();
        if let Some(tx) = topics.get(topic) {
            if tx.send(payload).is_err() {
                topics.remove(topic);
            }
        }
        Ok(())
    }

    fn subscribe(&self, topic: &str) -> BoxStream<'static, String> {
        stream_of(&self.topic(topic))
    }

    fn subscribe_gapped(&self, topic: &str) -> BoxStream<'static, Option<String>> {
        gapped_stream_of(&self.topic(topic))
    }
}
