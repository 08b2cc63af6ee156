//! RabbitMQ quorum queues: a durable fanout exchange per topic and a
//! quorum queue per subscription bound to it (queues have no partitions;
//! OMB's RabbitMQ driver maps topics the same way). Messages are
//! persistent and published with confirms: a batch is that many
//! pipelined publishes, and the send returns when every confirm is in.
//! Consumers ack cumulatively (`multiple`), once per received batch.

use std::time::Duration;

use anyhow::{Context as _, bail};
use bytes::Bytes;
use futures_util::{FutureExt as _, StreamExt as _};
use lapin::Confirmation;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use serde_json::{Value, json};

use super::{Consumer, Driver, Producer, Received};

/// Unacknowledged deliveries a consumer may hold.
const PREFETCH: u16 = 2_000;
/// Deliveries taken per receive.
const RECEIVE_MAX: usize = 1_000;
/// How long a receive waits for its first delivery.
const RECEIVE_WAIT_MS: u64 = 500;

/// A RabbitMQ node or cluster.
pub struct RabbitDriver {
    url: String,
    connection: Connection,
}

impl RabbitDriver {
    /// Connects to `url` (`amqp://user:pass@host:port/vhost`).
    pub async fn connect(url: &str) -> anyhow::Result<RabbitDriver> {
        let connection = Connection::connect(url, ConnectionProperties::default())
            .await
            .with_context(|| format!("connecting to {url}"))?;
        Ok(RabbitDriver {
            url: url.to_string(),
            connection,
        })
    }

    async fn channel(&self) -> anyhow::Result<Channel> {
        Ok(self.connection.create_channel().await?)
    }
}

impl Driver for RabbitDriver {
    type Producer = RabbitProducer;
    type Consumer = RabbitConsumer;

    async fn create_topic(&self, topic: &str, _partitions: u32) -> anyhow::Result<()> {
        self.channel()
            .await?
            .exchange_declare(
                topic.into(),
                ExchangeKind::Fanout,
                ExchangeDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .with_context(|| format!("declaring exchange {topic}"))?;
        Ok(())
    }

    async fn producer(&self, topic: &str) -> anyhow::Result<RabbitProducer> {
        // A channel (and its own TCP connection) per producer slot, as the
        // peer's own fast clients run.
        let connection = Connection::connect(&self.url, ConnectionProperties::default()).await?;
        let channel = connection.create_channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        Ok(RabbitProducer {
            _connection: connection,
            channel,
            exchange: topic.to_string(),
        })
    }

    async fn consumer(
        &self,
        topic: &str,
        subscription: &str,
        _index: u32,
        _count: u32,
    ) -> anyhow::Result<RabbitConsumer> {
        let channel = self.channel().await?;
        let queue = format!("{topic}-{subscription}");
        let mut arguments = FieldTable::default();
        arguments.insert(
            "x-queue-type".into(),
            AMQPValue::LongString("quorum".into()),
        );
        channel
            .queue_declare(
                queue.as_str().into(),
                QueueDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                arguments,
            )
            .await
            .with_context(|| format!("declaring quorum queue {queue}"))?;
        channel
            .queue_bind(
                queue.as_str().into(),
                topic.into(),
                "".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
        channel
            .basic_qos(PREFETCH, BasicQosOptions::default())
            .await?;
        let deliveries = channel
            .basic_consume(
                queue.as_str().into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        Ok(RabbitConsumer {
            channel,
            deliveries,
        })
    }

    fn settings(&self) -> Value {
        json!({"queues": "quorum", "persistent": true, "publisherConfirms": true})
    }
}

/// Publishes to one exchange with confirms.
pub struct RabbitProducer {
    _connection: Connection,
    channel: Channel,
    exchange: String,
}

impl Producer for RabbitProducer {
    async fn send(&mut self, payloads: &[Bytes], _key: Option<&str>) -> anyhow::Result<()> {
        let mut confirms = Vec::with_capacity(payloads.len());
        for p in payloads {
            let confirm = self
                .channel
                .basic_publish(
                    self.exchange.as_str().into(),
                    "".into(),
                    BasicPublishOptions::default(),
                    p,
                    BasicProperties::default().with_delivery_mode(2),
                )
                .await?;
            confirms.push(confirm);
        }
        for confirm in confirms {
            if let Confirmation::Nack(_) = confirm.await? {
                bail!("the broker refused a message (nack)");
            }
        }
        Ok(())
    }
}

/// Consumes one quorum queue.
pub struct RabbitConsumer {
    channel: Channel,
    deliveries: lapin::Consumer,
}

impl Consumer for RabbitConsumer {
    async fn receive(&mut self) -> anyhow::Result<Vec<Received>> {
        let first = tokio::time::timeout(
            Duration::from_millis(RECEIVE_WAIT_MS),
            self.deliveries.next(),
        )
        .await;
        let Ok(Some(first)) = first else {
            return Ok(Vec::new());
        };
        let mut last = first?;
        let mut received = vec![Received::of(&last.data)];
        while received.len() < RECEIVE_MAX {
            match self.deliveries.next().now_or_never() {
                Some(Some(d)) => {
                    last = d?;
                    received.push(Received::of(&last.data));
                }
                _ => break,
            }
        }
        self.channel
            .basic_ack(last.delivery_tag, BasicAckOptions { multiple: true })
            .await?;
        Ok(received)
    }

    async fn close(self) -> anyhow::Result<()> {
        Ok(())
    }
}
