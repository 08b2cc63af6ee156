//! What `sluice-bench run` drives: a queueing system seen as topics
//! (Sluice: queues) with partitions, producers that send batches and wait
//! for the acknowledgement, and consumers in subscriptions (Sluice:
//! consumer groups). One module per system.
//!
//! Every payload begins with the intended send time (see `payload.rs`),
//! so a consumer reports end-to-end latency without a side channel.

use std::future::Future;

use bytes::Bytes;

pub mod nats;
pub mod rabbitmq;
pub mod redis;
pub mod sluice;

/// One system under test.
pub trait Driver: Send + Sync + 'static {
    /// Sends to one topic.
    type Producer: Producer;
    /// Receives from one topic, as a member of one subscription.
    type Consumer: Consumer;

    /// Creates a topic with `partitions` partitions.
    fn create_topic(
        &self,
        topic: &str,
        partitions: u32,
    ) -> impl Future<Output = anyhow::Result<()>> + Send;

    /// A producer for `topic`.
    fn producer(&self, topic: &str) -> impl Future<Output = anyhow::Result<Self::Producer>> + Send;

    /// Consumer `index` of `count` in `subscription` of `topic`, reading
    /// from the start of the topic (topics are new for each run).
    fn consumer(
        &self,
        topic: &str,
        subscription: &str,
        index: u32,
        count: u32,
    ) -> impl Future<Output = anyhow::Result<Self::Consumer>> + Send;

    /// What the run's environment should record about the system.
    fn settings(&self) -> serde_json::Value;
}

/// A received message, as much as a run needs of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Received {
    /// The payload's stamp (see `payload.rs`), if it carries one.
    pub stamp_us: Option<u64>,
    /// Payload bytes.
    pub bytes: usize,
}

impl Received {
    /// What a payload says.
    pub fn of(payload: &[u8]) -> Received {
        Received {
            stamp_us: crate::run::payload::stamp_of(payload),
            bytes: payload.len(),
        }
    }
}

/// Sends batches; a send returns once the system acknowledged all of it.
pub trait Producer: Send + 'static {
    /// Sends `payloads` (one message each), all with `key` when given.
    fn send(
        &mut self,
        payloads: &[Bytes],
        key: Option<&str>,
    ) -> impl Future<Output = anyhow::Result<()>> + Send;
}

/// Receives messages.
pub trait Consumer: Send + 'static {
    /// Waits a bounded time (about half a second) for messages. An empty
    /// answer is not an error.
    fn receive(&mut self) -> impl Future<Output = anyhow::Result<Vec<Received>>> + Send;

    /// Leaves the subscription.
    fn close(self) -> impl Future<Output = anyhow::Result<()>> + Send;
}
