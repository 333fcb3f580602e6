//! Redis pub/sub events, so that every replica sees every event.
//!
//! Each instance holds one publisher connection and one subscriber connection with a single
//! upstream `PSUBSCRIBE <prefix>events:*`, made once at connect and renewed by fred after
//! every reconnect. A background task fans the messages out to local broadcast channels, one
//! per topic, created when a stream subscribes and dropped once nobody listens; so a local
//! subscription costs no Redis command at all. Events published while the subscriber is
//! disconnected are lost (pub/sub has no replay), which subscriptions tolerate.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use fred::clients::{Client, SubscriberClient};
use fred::error::Error as FredError;
use fred::interfaces::{ClientLike, EventInterface, PubsubInterface};
use fred::prelude::{Options, Value};
use fred::types::Message;
use futures::stream::{BoxStream, StreamExt};
use parking_lot::Mutex;
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::RecvError;
use tokio::task::JoinHandle;

use super::local::{gapped_stream_of, stream_of};
use super::{EventBus, EventError};
use crate::backends::redis_client::{builder, command_options, glob_escape};

/// Capacity of each topic's local broadcast channel.
const TOPIC_CAPACITY: usize = 256;

/// Capacity of fred's own channel between the subscriber connection and the fan-out task.
const UPSTREAM_CAPACITY: usize = 4_096;

type Topics = Arc<Mutex<HashMap<String, broadcast::Sender<String>>>>;

/// The Redis event bus. Dropping it stops its background tasks and closes its connections.
pub struct RedisEvents {
    publisher: Client,
    subscriber: SubscriberClient,
    options: Options,
    /// `<prefix>events:`
    channel_prefix: String,
    topics: Topics,
    /// Told each time events may have been lost: the subscriber connection was
    /// re-established (events published while it was down are gone), or the fan-out fell
    /// behind fred's channel.
    reconnects: broadcast::Sender<()>,
    on_reconnect: JoinHandle<Result<(), FredError>>,
    tasks: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for RedisEvents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisEvents")
            .field("channel_prefix", &self.channel_prefix)
            .finish_non_exhaustive()
    }
}

fn map_err(e: FredError) -> EventError {
    EventError(Box::new(e))
}

impl RedisEvents {
    /// Connects a publisher and a subscriber to `url` (`redis://` or `redis-cluster://`) and
    /// subscribes to `<prefix>events:*`. When this returns, events published by any instance
    /// sharing `prefix` reach this instance's subscribers.
    pub async fn connect(
        url: &str,
        prefix: &str,
        command_timeout: Duration,
    ) -> Result<RedisEvents, EventError> {
        let mut builder = builder(url, command_timeout).map_err(map_err)?;
        let publisher = builder.build().map_err(map_err)?;
        builder.with_performance_config(|perf| perf.broadcast_channel_capacity = UPSTREAM_CAPACITY);
        let subscriber = builder.build_subscriber_client().map_err(map_err)?;

        let channel_prefix = format!("{prefix}events:");
        let topics: Topics = Arc::default();
        // Listen before subscribing, so nothing published after `connect` returns is missed.
        let reconnects = broadcast::channel(16).0;
        let fan_out = tokio::spawn(fan_out(
            subscriber.message_rx(),
            channel_prefix.clone(),
            topics.clone(),
            reconnects.clone(),
        ));
        let told = reconnects.clone();
        let on_reconnect = subscriber.on_reconnect(move |_| {
            let _ = told.send(());
            async { Ok(()) }
        });
        let mut events = RedisEvents {
            publisher,
            subscriber,
            options: command_options(command_timeout),
            channel_prefix,
            topics,
            reconnects,
            tasks: vec![fan_out],
            on_reconnect,
        };
        // On failure `events` is dropped here, which stops the task and closes the clients.
        events.publisher.init().await.map_err(map_err)?;
        events.subscriber.init().await.map_err(map_err)?;
        events.tasks.push(events.subscriber.manage_subscriptions());
        let pattern = format!("{}*", glob_escape(&events.channel_prefix));
        events
            .subscriber
            .psubscribe(pattern)
            .await
            .map_err(map_err)?;
        Ok(events)
    }
}

impl RedisEvents {
    /// The local channel of `topic`, made when first asked for.
    fn topic(&self, topic: &str) -> broadcast::Sender<String> {
        self.topics
            .lock()
            .entry(topic.to_owned())
            .or_insert_with(|| broadcast::channel(TOPIC_CAPACITY).0)
            .clone()
    }
}

/// Reads the subscriber's messages and hands each to its topic's local channel.
async fn fan_out(
    mut upstream: broadcast::Receiver<Message>,
    channel_prefix: String,
    topics: Topics,
    gaps: broadcast::Sender<()>,
) {
    loop {
        let message = match upstream.recv().await {
            Ok(message) => message,
            Err(RecvError::Lagged(n)) => {
                tracing::warn!(
                    lost = n,
                    "redis events: subscriber fell behind, events lost"
                );
                // Listeners that must not miss one (live queries) check everything again.
                let _ = gaps.send(());
                continue;
            }
            Err(RecvError::Closed) => break,
        };
        let Some(topic) = message.channel.strip_prefix(channel_prefix.as_str()) else {
            continue;
        };
        let payload = match message.value {
            Value::String(s) => s.to_string(),
            Value::Bytes(b) => match String::from_utf8(b.to_vec()) {
                Ok(s) => s,
                Err(_) => continue,
            },
            other => match other.convert::<String>() {
                Ok(s) => s,
                Err(_) => continue,
            },
        };
        let mut topics = topics.lock();
        if let Some(tx) = topics.get(topic) {
            if tx.send(payload).is_err() {
                // Nobody listens any more.
                topics.remove(topic);
            }
        }
    }
}

impl Drop for RedisEvents {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
        self.on_reconnect.abort();
        // Close the connections; without this fred's connection tasks outlive the bus.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let (publisher, subscriber) = (self.publisher.clone(), self.subscriber.clone());
            runtime.spawn(async move {
                let _ = subscriber.quit().await;
                let _ = publisher.quit().await;
            });
        }
    }
}

#[async_trait]
impl EventBus for RedisEvents {
    fn kind(&self) -> &'static str {
        "redis"
    }

    async fn ping(&self) -> Result<(), EventError> {
        self.publisher
            .with_options(&self.options)
            .ping::<Value>(None)
            .await
            .map(drop)
            .map_err(map_err)
    }

    async fn publish(&self, topic: &str, payload: String) -> Result<(), EventError> {
        // Drop the channels of topics nobody listens to any more.
        self.topics.lock().retain(|_, tx| tx.receiver_count() > 0);
        let channel = self.channel(topic).expect("a Redis channel");
        self.publisher
            .with_options(&self.options)
            .publish::<Value, _, _>(channel, payload)
            .await
            .map(drop)
            .map_err(map_err)
    }

    fn subscribe(&self, topic: &str) -> BoxStream<'static, String> {
        stream_of(&self.topic(topic))
    }

    fn channel(&self, topic: &str) -> Option<String> {
        Some(format!("{}{}", self.channel_prefix, topic))
    }

    fn subscribe_gapped(&self, topic: &str) -> BoxStream<'static, Option<String>> {
        let tx = self.topic(topic);
        let reconnected =
            tokio_stream::wrappers::BroadcastStream::new(self.reconnects.subscribe()).map(|_| None);
        futures::stream::select(gapped_stream_of(&tx), reconnected).boxed()
    }
}
