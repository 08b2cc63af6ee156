//! Redis Streams: a stream per topic (Streams have no partitions), a
//! consumer group per subscription, `XREADGROUP` with `BLOCK`, and one
//! `XACK` per received batch. A batch is one pipeline of `XADD`s. Each
//! producer and consumer has its own connection (a blocking read would
//! stall every request multiplexed behind it). `appendfsync always` (set
//! by `bench/peers/redis.sh`) makes a reply mean fsynced.

use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use redis::aio::MultiplexedConnection;
use redis::streams::StreamReadReply;
use redis::{AsyncConnectionConfig, Client, Value as RedisValue};
use serde_json::{Value, json};

use super::{Consumer, Driver, Producer, Received};

/// Entries asked for per read.
const READ_COUNT_MAX: usize = 1_000;
/// How long a read blocks.
const READ_BLOCK_MS: usize = 500;
/// How long any reply may take (a fsync-per-write server under load is
/// slow, not gone).
const RESPONSE_TIMEOUT_MS: u64 = 30_000;

/// A Redis server.
pub struct RedisDriver {
    client: Client,
    config: AsyncConnectionConfig,
    consumers: std::sync::atomic::AtomicU64,
}

impl RedisDriver {
    /// Connects to `url` (`redis://host:port`).
    pub async fn connect(url: &str) -> anyhow::Result<RedisDriver> {
        let client = Client::open(url).with_context(|| format!("opening {url}"))?;
        let driver = RedisDriver {
            client,
            config: AsyncConnectionConfig::new()
                .set_response_timeout(Some(Duration::from_millis(RESPONSE_TIMEOUT_MS))),
            consumers: Default::default(),
        };
        let mut conn = driver.connection().await?;
        redis::cmd("PING")
            .query_async::<()>(&mut conn)
            .await
            .with_context(|| format!("pinging {url}"))?;
        Ok(driver)
    }

    async fn connection(&self) -> anyhow::Result<MultiplexedConnection> {
        Ok(self
            .client
            .get_multiplexed_async_connection_with_config(&self.config)
            .await?)
    }
}

impl Driver for RedisDriver {
    type Producer = RedisProducer;
    type Consumer = RedisConsumer;

    async fn create_topic(&self, _topic: &str, _partitions: u32) -> anyhow::Result<()> {
        // A stream exists with its first entry or group (MKSTREAM).
        Ok(())
    }

    async fn producer(&self, topic: &str) -> anyhow::Result<RedisProducer> {
        Ok(RedisProducer {
            conn: self.connection().await?,
            stream: topic.to_string(),
        })
    }

    async fn consumer(
        &self,
        topic: &str,
        subscription: &str,
        _index: u32,
        _count: u32,
    ) -> anyhow::Result<RedisConsumer> {
        let mut conn = self.connection().await?;
        let created = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(topic)
            .arg(subscription)
            .arg("0")
            .arg("MKSTREAM")
            .query_async::<()>(&mut conn)
            .await;
        if let Err(e) = created
            && e.code() != Some("BUSYGROUP")
        {
            return Err(e).context("XGROUP CREATE");
        }
        let n = self
            .consumers
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(RedisConsumer {
            conn,
            stream: topic.to_string(),
            group: subscription.to_string(),
            name: format!("c{n}"),
        })
    }

    fn settings(&self) -> Value {
        json!({"streams": "one per topic", "consumerGroups": true})
    }
}

/// Adds to one stream.
pub struct RedisProducer {
    conn: MultiplexedConnection,
    stream: String,
}

impl Producer for RedisProducer {
    async fn send(&mut self, payloads: &[Bytes], _key: Option<&str>) -> anyhow::Result<()> {
        let mut pipe = redis::pipe();
        for p in payloads {
            pipe.cmd("XADD")
                .arg(&self.stream)
                .arg("*")
                .arg("d")
                .arg(p.as_ref())
                .ignore();
        }
        pipe.query_async::<()>(&mut self.conn)
            .await
            .context("XADD")?;
        Ok(())
    }
}

/// Reads one stream as a group member.
pub struct RedisConsumer {
    conn: MultiplexedConnection,
    stream: String,
    group: String,
    name: String,
}

impl Consumer for RedisConsumer {
    async fn receive(&mut self) -> anyhow::Result<Vec<Received>> {
        let reply: Option<StreamReadReply> = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg(&self.group)
            .arg(&self.name)
            .arg("COUNT")
            .arg(READ_COUNT_MAX)
            .arg("BLOCK")
            .arg(READ_BLOCK_MS)
            .arg("STREAMS")
            .arg(&self.stream)
            .arg(">")
            .query_async(&mut self.conn)
            .await
            .context("XREADGROUP")?;
        let Some(reply) = reply else {
            return Ok(Vec::new());
        };
        let mut received = Vec::new();
        let mut ids = Vec::new();
        for key in reply.keys {
            for entry in key.ids {
                match entry.map.get("d") {
                    Some(RedisValue::BulkString(bytes)) => received.push(Received::of(bytes)),
                    _ => received.push(Received::of(&[])),
                }
                ids.push(entry.id);
            }
        }
        if !ids.is_empty() {
            redis::cmd("XACK")
                .arg(&self.stream)
                .arg(&self.group)
                .arg(&ids)
                .query_async::<()>(&mut self.conn)
                .await
                .context("XACK")?;
        }
        Ok(received)
    }

    async fn close(self) -> anyhow::Result<()> {
        Ok(())
    }
}
