//! Sluice over its native API: produce with the binary framing or JSON,
//! consume as consumer-group members (`poll`, commits once a second) or
//! by plain partition fetches, reading binary message frames when
//! producing binary and JSON otherwise. Each producer and consumer has its own
//! HTTP/1.1 connection.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use base64::Engine as _;
use bytes::Bytes;
use clap::ValueEnum;
use serde::Deserialize;
use serde_json::{Value, json};
use sluice_server::v2::batch::{Draft, ProduceRequest};
use sluice_server::v2::{framing, message_frames};

use super::{Consumer, Driver, Producer, Received};
use crate::conn::{Answer, Conn};

/// How produce requests are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ProduceFormat {
    /// `application/vnd.sluice.batch`.
    Binary,
    /// JSON, bodies as text (base64 when not UTF-8).
    Json,
}

/// How consumers read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ConsumeMode {
    /// Consumer-group members: join, poll, commit.
    Group,
    /// Partition fetches; consumer i of n reads partitions p ≡ i (mod n).
    Fetch,
}

/// Messages asked for per poll or fetch.
const POLL_MESSAGES_MAX: u32 = 2_000;
/// Bytes asked for per poll or fetch.
const POLL_BYTES_MAX: u32 = 8 * 1024 * 1024;
/// How long a poll waits for messages.
const POLL_WAIT_MS: u32 = 500;
/// Commits are sent at most this often.
const COMMIT_INTERVAL_MS: u64 = 1_000;
/// A member's session: long enough that a busy machine does not expire it.
const SESSION_TIMEOUT_MS: u32 = 30_000;

/// A Sluice cluster.
#[derive(Debug, Clone)]
pub struct SluiceDriver {
    /// Node base URLs; producers and consumers are spread over them.
    urls: Vec<String>,
    app: String,
    auth: String,
    format: ProduceFormat,
    consume: ConsumeMode,
    spread: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl SluiceDriver {
    /// A driver for the nodes at `urls`, application `app` with `key`.
    pub fn new(
        urls: Vec<String>,
        app: &str,
        key: &str,
        format: ProduceFormat,
        consume: ConsumeMode,
    ) -> anyhow::Result<SluiceDriver> {
        if urls.is_empty() {
            bail!("no Sluice node to drive");
        }
        Ok(SluiceDriver {
            urls,
            app: app.to_string(),
            auth: format!("Application {key}"),
            format,
            consume,
            spread: Default::default(),
        })
    }

    /// The next node, in turn: any node serves any request.
    fn conn(&self) -> anyhow::Result<Conn> {
        let i = self
            .spread
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Conn::new(&self.urls[i % self.urls.len()])
    }
}

impl Driver for SluiceDriver {
    type Producer = SluiceProducer;
    type Consumer = SluiceConsumer;

    async fn create_topic(&self, topic: &str, partitions: u32) -> anyhow::Result<()> {
        let mut conn = self.conn()?;
        let body = json!({"name": topic, "partitions": partitions}).to_string();
        let answer = conn
            .send(
                "POST",
                &format!("/v2/{}/queues", self.app),
                &[
                    ("authorization", &self.auth),
                    ("content-type", "application/json"),
                ],
                Bytes::from(body),
            )
            .await?;
        if answer.status != 201 {
            bail!(
                "creating queue {topic}: HTTP {}: {}",
                answer.status,
                String::from_utf8_lossy(&answer.body)
            );
        }
        Ok(())
    }

    async fn producer(&self, topic: &str) -> anyhow::Result<SluiceProducer> {
        Ok(SluiceProducer {
            conn: self.conn()?,
            path: format!("/v2/{}/{topic}/messages", self.app),
            auth: self.auth.clone(),
            format: self.format,
        })
    }

    async fn consumer(
        &self,
        topic: &str,
        subscription: &str,
        index: u32,
        count: u32,
    ) -> anyhow::Result<SluiceConsumer> {
        let conn = self.conn()?;
        let queue = format!("/v2/{}/{topic}", self.app);
        let mut consumer = match self.consume {
            ConsumeMode::Group => SluiceConsumer {
                conn,
                auth: self.auth.clone(),
                queue,
                frames: self.format == ProduceFormat::Binary,
                mode: Mode::Group(Member {
                    group: format!("/groups/{subscription}"),
                    id: String::new(),
                    epoch: 0,
                    positions: BTreeMap::new(),
                    committed_at: Instant::now(),
                }),
            },
            ConsumeMode::Fetch => SluiceConsumer {
                conn,
                auth: self.auth.clone(),
                queue,
                frames: self.format == ProduceFormat::Binary,
                mode: Mode::Fetch(Fetcher {
                    index,
                    count: count.max(1),
                    partitions: Vec::new(),
                    turn: 0,
                }),
            },
        };
        consumer.start().await?;
        Ok(consumer)
    }

    fn settings(&self) -> Value {
        json!({
            "nodes": self.urls,
            "produce": format!("{:?}", self.format),
            "consume": format!("{:?}", self.consume),
        })
    }
}

/// Sends produce requests to one queue.
pub struct SluiceProducer {
    conn: Conn,
    path: String,
    auth: String,
    format: ProduceFormat,
}

/// A produce request body for `payloads` (all with `key`, when given) and
/// its content type.
pub fn produce_body(
    format: ProduceFormat,
    payloads: &[Bytes],
    key: Option<&str>,
) -> anyhow::Result<(Vec<u8>, &'static str)> {
    Ok(match format {
        ProduceFormat::Binary => {
            let request = ProduceRequest {
                producer_id: None,
                messages: payloads
                    .iter()
                    .map(|p| Draft {
                        body: p.to_vec(),
                        key: key.map(|k| k.as_bytes().to_vec()),
                        ..Draft::default()
                    })
                    .collect(),
            };
            (framing::encode(&request)?, framing::MEDIA_TYPE)
        }
        ProduceFormat::Json => {
            let messages: Vec<Value> = payloads
                .iter()
                .map(|p| {
                    let mut m = match std::str::from_utf8(p) {
                        Ok(text) => json!({"body": text}),
                        Err(_) => json!({
                            "body_base64": base64::engine::general_purpose::STANDARD.encode(p)
                        }),
                    };
                    if let Some(k) = key {
                        m["key"] = json!(k);
                    }
                    m
                })
                .collect();
            (
                json!({"messages": messages}).to_string().into_bytes(),
                "application/json",
            )
        }
    })
}

impl Producer for SluiceProducer {
    async fn send(&mut self, payloads: &[Bytes], key: Option<&str>) -> anyhow::Result<()> {
        let (body, content_type) = produce_body(self.format, payloads, key)?;
        let answer = self
            .conn
            .send(
                "POST",
                &self.path,
                &[
                    ("authorization", &self.auth),
                    ("content-type", content_type),
                ],
                Bytes::from(body),
            )
            .await?;
        if answer.status != 201 {
            bail!(
                "produce: HTTP {}: {}",
                answer.status,
                String::from_utf8_lossy(&answer.body)
            );
        }
        Ok(())
    }
}

/// Reads one queue as a group member or by fetches.
pub struct SluiceConsumer {
    conn: Conn,
    auth: String,
    /// `/v2/{app}/{queue}`.
    queue: String,
    mode: Mode,
    /// Whether polls and fetches ask for binary message frames.
    frames: bool,
}

enum Mode {
    Group(Member),
    Fetch(Fetcher),
}

struct Member {
    /// `/groups/{group}`.
    group: String,
    id: String,
    epoch: u64,
    /// Next offset per partition, delivered but not yet committed.
    positions: BTreeMap<u32, u64>,
    committed_at: Instant,
}

struct Fetcher {
    index: u32,
    count: u32,
    /// (partition, next offset) of the partitions this consumer reads.
    partitions: Vec<(u32, u64)>,
    turn: usize,
}

/// A fetched or polled message.
#[derive(Deserialize)]
struct Message {
    partition: u32,
    offset: u64,
    #[serde(default)]
    body: Option<String>,
    #[serde(default)]
    body_base64: Option<String>,
}

impl Message {
    fn received(&self) -> Received {
        match (&self.body, &self.body_base64) {
            (Some(text), _) => Received::of(text.as_bytes()),
            (None, Some(b64)) => {
                // Only the stamp is needed: decode its prefix.
                let head = &b64[..b64.len().min(24)];
                let stamp = base64::engine::general_purpose::STANDARD
                    .decode(head)
                    .ok()
                    .and_then(|b| crate::run::payload::stamp_of(&b));
                let padding = b64.bytes().rev().take_while(|b| *b == b'=').count();
                Received {
                    stamp_us: stamp,
                    bytes: (b64.len() / 4 * 3).saturating_sub(padding),
                }
            }
            (None, None) => Received::of(&[]),
        }
    }
}

#[derive(Deserialize)]
struct Polled {
    member_epoch: u64,
    messages: Vec<Message>,
}

#[derive(Deserialize)]
struct Fetched {
    messages: Vec<Message>,
    next_offset: u64,
}

/// A delivered message: (partition, offset, what the run needs).
type Delivered = (u32, u64, Received);

/// The messages of a poll or fetch answer, and the answer's `field` (the
/// member epoch or the next offset) from JSON or, for message frames, from
/// its `X-Sluice-*` header.
fn delivered(answer: &Answer, field: &str) -> anyhow::Result<(u64, Vec<Delivered>)> {
    let framed = answer
        .headers
        .get("content-type")
        .is_some_and(|v| v.as_bytes() == framing::MEDIA_TYPE.as_bytes());
    if framed {
        let header = format!("x-sluice-{}", field.replace('_', "-"));
        let value: u64 = answer
            .headers
            .get(header.as_str())
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("the answer has no {header} header"))?;
        let messages = message_frames::decode(&answer.body).context("a message frame")?;
        let messages = messages
            .iter()
            .map(|m| (m.partition, m.offset, Received::of(&m.body)))
            .collect();
        return Ok((value, messages));
    }
    let (value, messages) = if field == "member_epoch" {
        let polled: Polled = serde_json::from_slice(&answer.body).context("a poll answer")?;
        (polled.member_epoch, polled.messages)
    } else {
        let fetched: Fetched = serde_json::from_slice(&answer.body).context("a fetch answer")?;
        (fetched.next_offset, fetched.messages)
    };
    let messages = messages
        .iter()
        .map(|m| (m.partition, m.offset, m.received()))
        .collect();
    Ok((value, messages))
}

impl SluiceConsumer {
    async fn call(
        &mut self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<(u16, Bytes)> {
        let answer = self.send(method, path, body).await?;
        Ok((answer.status, answer.body))
    }

    /// A request; reads ask for message frames when `frames` is set.
    async fn send(
        &mut self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Answer> {
        let content = body.map(|b| Bytes::from(b.to_string())).unwrap_or_default();
        let auth = self.auth.clone();
        let accept = if self.frames {
            framing::MEDIA_TYPE
        } else {
            "application/json"
        };
        self.conn
            .send(
                method,
                path,
                &[
                    ("authorization", &auth),
                    ("content-type", "application/json"),
                    ("accept", accept),
                ],
                content,
            )
            .await
    }

    async fn start(&mut self) -> anyhow::Result<()> {
        match &self.mode {
            Mode::Group(_) => self.join().await,
            Mode::Fetch(f) => {
                let (index, count) = (f.index, f.count);
                let (app_path, queue) = self.queue.rsplit_once('/').context("a queue path")?;
                let (app_path, queue) = (app_path.to_string(), queue.to_string());
                let (status, body) = self
                    .call("GET", &format!("{app_path}/queues/{queue}"), None)
                    .await?;
                if status != 200 {
                    bail!("reading queue {queue}: HTTP {status}");
                }
                let info: Value = serde_json::from_slice(&body)?;
                let partitions = info["partitions"].as_u64().context("partitions")? as u32;
                if let Mode::Fetch(f) = &mut self.mode {
                    f.partitions = (0..partitions)
                        .filter(|p| p % count == index)
                        .map(|p| (p, 0))
                        .collect();
                }
                Ok(())
            }
        }
    }

    async fn join(&mut self) -> anyhow::Result<()> {
        let Mode::Group(m) = &self.mode else {
            return Ok(());
        };
        let path = format!("{}{}/members", self.queue, m.group);
        let (status, body) = self
            .call(
                "POST",
                &path,
                Some(json!({"session_timeout_ms": SESSION_TIMEOUT_MS, "start": "earliest"})),
            )
            .await?;
        if status != 201 {
            bail!(
                "joining {path}: HTTP {status}: {}",
                String::from_utf8_lossy(&body)
            );
        }
        let joined: Value = serde_json::from_slice(&body)?;
        if let Mode::Group(m) = &mut self.mode {
            m.id = joined["member_id"]
                .as_str()
                .context("member_id")?
                .to_string();
            m.epoch = joined["member_epoch"].as_u64().context("member_epoch")?;
            m.positions.clear();
        }
        Ok(())
    }

    /// Commits the positions delivered so far (a fenced commit is dropped:
    /// the partitions went to another member, which redelivers).
    async fn commit(&mut self) -> anyhow::Result<()> {
        let Mode::Group(m) = &mut self.mode else {
            return Ok(());
        };
        m.committed_at = Instant::now();
        if m.positions.is_empty() {
            return Ok(());
        }
        let offsets: serde_json::Map<String, Value> = std::mem::take(&mut m.positions)
            .into_iter()
            .map(|(p, o)| (p.to_string(), json!(o)))
            .collect();
        let body = json!({"member_id": m.id, "member_epoch": m.epoch, "offsets": offsets});
        let path = format!("{}{}/offsets", self.queue, m.group);
        let (status, text) = self.call("PUT", &path, Some(body)).await?;
        if status != 200 && status != 409 {
            bail!("commit: HTTP {status}: {}", String::from_utf8_lossy(&text));
        }
        Ok(())
    }

    async fn poll(&mut self) -> anyhow::Result<Vec<Received>> {
        let Mode::Group(m) = &self.mode else {
            return Ok(Vec::new());
        };
        let path = format!(
            "{}{}/poll?member={}&max_messages={POLL_MESSAGES_MAX}&max_bytes={POLL_BYTES_MAX}&wait_ms={POLL_WAIT_MS}",
            self.queue, m.group, m.id
        );
        let answer = self.send("GET", &path, None).await?;
        if answer.status == 404 {
            // The session expired (a stalled machine): join again.
            self.join().await?;
            return Ok(Vec::new());
        }
        if answer.status != 200 {
            bail!(
                "poll: HTTP {}: {}",
                answer.status,
                String::from_utf8_lossy(&answer.body)
            );
        }
        let (member_epoch, messages) = delivered(&answer, "member_epoch")?;
        let received = messages.iter().map(|(_, _, r)| *r).collect();
        let Mode::Group(m) = &mut self.mode else {
            return Ok(received);
        };
        for (partition, offset, _) in &messages {
            m.positions.insert(*partition, offset + 1);
        }
        if member_epoch != m.epoch {
            // A rebalance: commit what was delivered, then take the new
            // epoch, which releases revoked partitions to others.
            self.commit().await?;
            let Mode::Group(m) = &mut self.mode else {
                return Ok(received);
            };
            m.epoch = member_epoch;
            let path = format!("{}{}/members/{}/heartbeat", self.queue, m.group, m.id);
            let epoch = m.epoch;
            self.call("POST", &path, Some(json!({"member_epoch": epoch})))
                .await?;
        } else if m.committed_at.elapsed() >= Duration::from_millis(COMMIT_INTERVAL_MS) {
            self.commit().await?;
        }
        Ok(received)
    }

    async fn fetch(&mut self) -> anyhow::Result<Vec<Received>> {
        let Mode::Fetch(f) = &mut self.mode else {
            return Ok(Vec::new());
        };
        if f.partitions.is_empty() {
            tokio::time::sleep(Duration::from_millis(u64::from(POLL_WAIT_MS))).await;
            return Ok(Vec::new());
        }
        // One pass over the partitions without waiting; only when the
        // whole pass found nothing does the last fetch wait.
        let n = f.partitions.len();
        for step in 0..n {
            let Mode::Fetch(f) = &mut self.mode else {
                break;
            };
            let slot = f.turn % n;
            f.turn += 1;
            let (partition, offset) = f.partitions[slot];
            let wait_ms = if step + 1 == n { POLL_WAIT_MS } else { 0 };
            let path = format!(
                "{}/partitions/{partition}/messages?offset={offset}&max_messages={POLL_MESSAGES_MAX}&max_bytes={POLL_BYTES_MAX}&wait_ms={wait_ms}",
                self.queue
            );
            let answer = self.send("GET", &path, None).await?;
            if answer.status != 200 {
                bail!(
                    "fetch: HTTP {}: {}",
                    answer.status,
                    String::from_utf8_lossy(&answer.body)
                );
            }
            let (next_offset, messages) = delivered(&answer, "next_offset")?;
            if let Mode::Fetch(f) = &mut self.mode {
                f.partitions[slot].1 = next_offset;
            }
            if !messages.is_empty() {
                return Ok(messages.into_iter().map(|(_, _, r)| r).collect());
            }
        }
        Ok(Vec::new())
    }
}

impl Consumer for SluiceConsumer {
    async fn receive(&mut self) -> anyhow::Result<Vec<Received>> {
        match self.mode {
            Mode::Group(_) => self.poll().await,
            Mode::Fetch(_) => self.fetch().await,
        }
    }

    async fn close(mut self) -> anyhow::Result<()> {
        self.commit().await?;
        if let Mode::Group(m) = &self.mode {
            let path = format!("{}{}/members/{}", self.queue, m.group, m.id);
            self.call("DELETE", &path, None).await?;
        }
        Ok(())
    }
}
