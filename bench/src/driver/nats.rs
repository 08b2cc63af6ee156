//! NATS JetStream: a file-stored stream per topic (JetStream has no
//! partitions; OMB's NATS driver also maps a topic to one stream), a
//! durable pull consumer per subscription shared by its consumers, acks
//! cumulative (`AckPolicy::All`, one ack per received batch). A batch is
//! published as that many pipelined publishes, and the send returns when
//! every acknowledgement is in. The server's `sync_interval: always`
//! (set by `bench/peers/nats.sh`) makes an acknowledgement mean fsynced.

use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream::{self, consumer, stream};
use bytes::Bytes;
use futures_util::StreamExt as _;
use serde_json::{Value, json};

use super::{Consumer, Driver, Producer, Received};

/// How long stream creation is retried while a new cluster elects.
const STREAM_CREATE_TIMEOUT: Duration = Duration::from_secs(60);

/// Messages asked for per pull.
const PULL_MESSAGES_MAX: usize = 1_000;
/// How long a pull waits.
const PULL_WAIT_MS: u64 = 500;

/// A NATS server or cluster.
pub struct NatsDriver {
    context: jetstream::Context,
    replicas: u8,
}

impl NatsDriver {
    /// Connects to `url` (`nats://host:port`, several comma-separated for
    /// a cluster); streams get `replicas`.
    pub async fn connect(url: &str, replicas: u8) -> anyhow::Result<NatsDriver> {
        let servers: Vec<&str> = url.split(',').map(str::trim).collect();
        let client = async_nats::connect(servers)
            .await
            .with_context(|| format!("connecting to {url}"))?;
        Ok(NatsDriver {
            context: jetstream::new(client),
            replicas: replicas.clamp(1, 5),
        })
    }
}

impl Driver for NatsDriver {
    type Producer = NatsProducer;
    type Consumer = NatsConsumer;

    async fn create_topic(&self, topic: &str, _partitions: u32) -> anyhow::Result<()> {
        // A cluster that has just started answers before JetStream has a
        // meta leader (the request times out): retry for a bounded time.
        let deadline = std::time::Instant::now() + STREAM_CREATE_TIMEOUT;
        loop {
            let created = self
                .context
                .create_stream(stream::Config {
                    name: topic.to_string(),
                    subjects: vec![topic.to_string()],
                    storage: stream::StorageType::File,
                    num_replicas: usize::from(self.replicas),
                    ..Default::default()
                })
                .await;
            match created {
                Ok(_) => return Ok(()),
                Err(e) if std::time::Instant::now() < deadline => {
                    eprintln!("creating stream {topic}: {e}; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                Err(e) => anyhow::bail!("creating stream {topic}: {e}"),
            }
        }
    }

    async fn producer(&self, topic: &str) -> anyhow::Result<NatsProducer> {
        Ok(NatsProducer {
            context: self.context.clone(),
            subject: topic.to_string(),
        })
    }

    async fn consumer(
        &self,
        topic: &str,
        subscription: &str,
        _index: u32,
        _count: u32,
    ) -> anyhow::Result<NatsConsumer> {
        let stream = self
            .context
            .get_stream(topic)
            .await
            .map_err(|e| anyhow::anyhow!("stream {topic}: {e}"))?;
        let consumer = stream
            .get_or_create_consumer(
                subscription,
                consumer::pull::Config {
                    durable_name: Some(subscription.to_string()),
                    ack_policy: consumer::AckPolicy::All,
                    max_ack_pending: 100_000,
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| anyhow::anyhow!("consumer {subscription} on {topic}: {e}"))?;
        Ok(NatsConsumer { consumer })
    }

    fn settings(&self) -> Value {
        json!({"storage": "file", "replicas": self.replicas})
    }
}

/// Publishes to one stream.
pub struct NatsProducer {
    context: jetstream::Context,
    subject: String,
}

impl Producer for NatsProducer {
    async fn send(&mut self, payloads: &[Bytes], _key: Option<&str>) -> anyhow::Result<()> {
        let mut acks = Vec::with_capacity(payloads.len());
        for p in payloads {
            let ack = self
                .context
                .publish(self.subject.clone(), p.clone())
                .await
                .map_err(|e| anyhow::anyhow!("publish: {e}"))?;
            acks.push(ack);
        }
        for ack in acks {
            ack.await.map_err(|e| anyhow::anyhow!("publish ack: {e}"))?;
        }
        Ok(())
    }
}

/// Pulls from one durable consumer.
pub struct NatsConsumer {
    consumer: consumer::Consumer<consumer::pull::Config>,
}

impl Consumer for NatsConsumer {
    async fn receive(&mut self) -> anyhow::Result<Vec<Received>> {
        let mut batch = self
            .consumer
            .batch()
            .max_messages(PULL_MESSAGES_MAX)
            .expires(Duration::from_millis(PULL_WAIT_MS))
            .messages()
            .await
            .map_err(|e| anyhow::anyhow!("pull: {e}"))?;
        let mut received = Vec::new();
        let mut last = None;
        while let Some(message) = batch.next().await {
            let message = message.map_err(|e| anyhow::anyhow!("pull: {e}"))?;
            received.push(Received::of(&message.message.payload));
            last = Some(message);
        }
        if let Some(m) = last {
            m.ack().await.map_err(|e| anyhow::anyhow!("ack: {e}"))?;
        }
        Ok(received)
    }

    async fn close(self) -> anyhow::Result<()> {
        Ok(())
    }
}
