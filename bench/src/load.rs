//! Max-rate load against one node: produce (JSON, binary framing, or v1
//! single-message POSTs), fetch, and produce-to-consume latency through
//! long-polls. Each connection is one task with its own HTTP client, so
//! `--connections` is the number of TCP connections and of requests in
//! flight.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::{Args, ValueEnum};
use hdrhistogram::Histogram;
use serde_json::{Value, json};

use crate::conn::Conn;
use crate::driver::sluice::{self, ProduceFormat};
use crate::report::{histogram, latency_line};

/// What to measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// Produce at max rate.
    Produce,
    /// Fetch a queue's partitions from the start, at max rate.
    Fetch,
    /// Produce at a fixed `--rate` (messages per second, `--batch` per
    /// request); long-poll consumers measure produce-to-consume latency.
    EndToEnd,
    /// Token requests (`GET /1.0/queuey/1.0`) at max rate: returning users
    /// (`--users` of them, in turn), or new users when `--users` is 0.
    Token,
}

/// How produce requests are sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Api {
    /// `POST /v2/.../messages` with the binary framing.
    V2Binary,
    /// `POST /v2/.../messages` with JSON.
    V2Json,
    /// `POST /v1/{app}/{queue}`: the body is one message (`--batch` 1).
    V1,
}

/// `sluice-bench load`.
#[derive(Debug, Clone, Args)]
pub struct LoadArgs {
    /// The node's base URL.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub target: String,
    /// Application key (`Authorization: Application KEY`).
    #[arg(long, default_value = "")]
    pub key: String,
    /// Application.
    #[arg(long, default_value = "default")]
    pub app: String,
    /// Queue (created by `produce` and `end-to-end` when missing).
    #[arg(long, default_value = "bench")]
    pub queue: String,
    /// Partitions of a created queue.
    #[arg(long, default_value_t = 4)]
    pub partitions: u32,
    /// What to measure.
    #[arg(long, value_enum, default_value = "produce")]
    pub mode: Mode,
    /// How to produce.
    #[arg(long, value_enum, default_value = "v2-binary")]
    pub api: Api,
    /// Connections (= requests in flight).
    #[arg(long, default_value_t = 16)]
    pub connections: usize,
    /// Messages per produce request.
    #[arg(long, default_value_t = 100)]
    pub batch: usize,
    /// Message size in bytes.
    #[arg(long, default_value_t = 1024)]
    pub size: usize,
    /// Messages per second (end-to-end mode; sent `--batch` per request).
    #[arg(long, default_value_t = 1_000)]
    pub rate: u64,
    /// Seconds measured.
    #[arg(long, default_value_t = 10)]
    pub duration_s: u64,
    /// Distinct users of a token run (0: every request a new user).
    #[arg(long, default_value_t = 1_000)]
    pub users: u64,
    /// Seconds run before measuring.
    #[arg(long, default_value_t = 2)]
    pub warmup_s: u64,
}

/// Counters shared by the tasks of a run.
#[derive(Default)]
struct Totals {
    requests: AtomicU64,
    messages: AtomicU64,
    bytes: AtomicU64,
    errors: AtomicU64,
    measuring: AtomicBool,
}

/// Runs a load and prints its figures.
pub async fn run(args: LoadArgs) -> anyhow::Result<()> {
    if args.connections == 0 || args.connections > 4_096 {
        bail!("--connections must be 1..=4096");
    }
    if args.batch == 0 || args.batch > 10_000 || (args.api == Api::V1 && args.batch != 1) {
        bail!("--batch must be 1..=10000 (1 with --api v1)");
    }
    let args = Arc::new(args);
    match args.mode {
        Mode::Produce => {
            ensure_queue(&args).await?;
            max_rate(&args, produce_task).await
        }
        Mode::Fetch => max_rate(&args, fetch_task).await,
        Mode::Token => max_rate(&args, token_task).await,
        Mode::EndToEnd => {
            ensure_queue(&args).await?;
            end_to_end(&args).await
        }
    }
}

fn client() -> anyhow::Result<reqwest::Client> {
    pooled_client(1)
}

/// A client keeping up to `idle` connections open between requests.
fn pooled_client(idle: usize) -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .pool_max_idle_per_host(idle)
        .timeout(Duration::from_secs(60))
        .build()?)
}

fn auth(args: &LoadArgs) -> String {
    format!("Application {}", args.key)
}

async fn ensure_queue(args: &LoadArgs) -> anyhow::Result<()> {
    let answer = client()?
        .post(format!("{}/v2/{}/queues", args.target, args.app))
        .header("authorization", auth(args))
        .header("content-type", "application/json")
        .body(json!({"name": args.queue, "partitions": args.partitions}).to_string())
        .send()
        .await
        .context("creating the queue")?;
    // 409: it exists; 200: the `hello` ceiling server answers everything.
    match answer.status().as_u16() {
        200 | 201 | 409 => Ok(()),
        status => bail!(
            "creating the queue: HTTP {status}: {}",
            answer.text().await?
        ),
    }
}

type Task = fn(Arc<LoadArgs>, usize, Arc<Totals>, Instant) -> TaskFuture;
type TaskFuture = std::pin::Pin<Box<dyn Future<Output = anyhow::Result<Histogram<u64>>> + Send>>;

/// Runs `task` on every connection through warm-up and measurement, with
/// a progress line every second; prints the totals.
async fn max_rate(args: &Arc<LoadArgs>, task: Task) -> anyhow::Result<()> {
    let totals = Arc::new(Totals::default());
    let end = Instant::now() + Duration::from_secs(args.warmup_s + args.duration_s);
    let tasks: Vec<_> = (0..args.connections)
        .map(|i| tokio::spawn(task(Arc::clone(args), i, Arc::clone(&totals), end)))
        .collect();
    tokio::time::sleep(Duration::from_secs(args.warmup_s)).await;
    let base = snapshot(&totals);
    totals.measuring.store(true, Ordering::Relaxed);
    let started = Instant::now();
    let mut last = base;
    for _ in 0..args.duration_s {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = snapshot(&totals);
        println!(
            "  {:>6.0} msg/s {:>6.0} req/s {:>7.1} MiB/s  errors {}",
            (now.1 - last.1) as f64,
            (now.0 - last.0) as f64,
            (now.2 - last.2) as f64 / 1_048_576.0,
            now.3
        );
        last = now;
    }
    let mut latency = histogram()?;
    for t in tasks {
        latency.add(t.await.context("a load task panicked")??)?;
    }
    let secs = started.elapsed().as_secs_f64();
    let (requests, messages, bytes, errors) = snapshot(&totals);
    println!(
        "{:?} {:?}: {} connections, batch {}, {} B messages, {:.1} s measured",
        args.mode, args.api, args.connections, args.batch, args.size, secs
    );
    println!(
        "  {:.0} msg/s, {:.0} req/s, {:.1} MiB/s, {} errors",
        (messages - base.1) as f64 / secs,
        (requests - base.0) as f64 / secs,
        (bytes - base.2) as f64 / secs / 1_048_576.0,
        errors
    );
    println!("  {}", latency_line("request latency", &latency));
    Ok(())
}

fn snapshot(t: &Totals) -> (u64, u64, u64, u64) {
    (
        t.requests.load(Ordering::Relaxed),
        t.messages.load(Ordering::Relaxed),
        t.bytes.load(Ordering::Relaxed),
        t.errors.load(Ordering::Relaxed),
    )
}

/// The body and content type of one produce request.
fn produce_body(args: &LoadArgs, stamp: Option<u64>) -> anyhow::Result<(Vec<u8>, &'static str)> {
    let mut payload = vec![b'x'; args.size];
    if let Some(stamp) = stamp {
        let text = stamp.to_string();
        let n = text.len().min(payload.len());
        payload[..n].copy_from_slice(&text.as_bytes()[..n]);
    }
    Ok(match args.api {
        Api::V1 => (payload, "application/octet-stream"),
        Api::V2Binary | Api::V2Json => {
            let format = match args.api {
                Api::V2Binary => ProduceFormat::Binary,
                _ => ProduceFormat::Json,
            };
            let payloads = vec![bytes::Bytes::from(payload); args.batch];
            sluice::produce_body(format, &payloads, None)?
        }
    })
}

fn produce_url(args: &LoadArgs) -> String {
    match args.api {
        Api::V1 => format!("{}/v1/{}/{}", args.target, args.app, args.queue),
        Api::V2Binary | Api::V2Json => {
            format!("{}/v2/{}/{}/messages", args.target, args.app, args.queue)
        }
    }
}

fn produce_task(args: Arc<LoadArgs>, _: usize, totals: Arc<Totals>, end: Instant) -> TaskFuture {
    Box::pin(async move {
        let mut conn = Conn::new(&args.target)?;
        let (body, content_type) = produce_body(&args, None)?;
        let body = bytes::Bytes::from(body);
        let path = produce_url(&args)
            .strip_prefix(&args.target)
            .unwrap_or_default()
            .to_string();
        let auth = auth(&args);
        let headers = [
            ("authorization", auth.as_str()),
            ("content-type", content_type),
        ];
        let mut latency = histogram()?;
        while Instant::now() < end {
            let sent = Instant::now();
            let answer = conn.send("POST", &path, &headers, body.clone()).await;
            if !answer.is_ok_and(|a| (200..300).contains(&a.status)) {
                totals.errors.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            totals.requests.fetch_add(1, Ordering::Relaxed);
            totals
                .messages
                .fetch_add(args.batch as u64, Ordering::Relaxed);
            totals
                .bytes
                .fetch_add((args.batch * args.size) as u64, Ordering::Relaxed);
            if totals.measuring.load(Ordering::Relaxed) {
                latency.saturating_record(sent.elapsed().as_micros() as u64);
            }
        }
        Ok(latency)
    })
}

fn token_task(args: Arc<LoadArgs>, i: usize, totals: Arc<Totals>, end: Instant) -> TaskFuture {
    Box::pin(async move {
        let mut conn = Conn::new(&args.target)?;
        let mut latency = histogram()?;
        let mut n = 0u64;
        while Instant::now() < end {
            // The verifier `sluice-bench hello` serves takes the
            // credential as the user name.
            let user = if args.users == 0 {
                format!("new-{i}-{n}")
            } else {
                format!(
                    "user-{}",
                    (n * args.connections as u64 + i as u64) % args.users
                )
            };
            n += 1;
            let auth = format!("Bearer {user}");
            let sent = Instant::now();
            let answer = conn
                .send(
                    "GET",
                    "/1.0/queuey/1.0",
                    &[("authorization", auth.as_str())],
                    bytes::Bytes::new(),
                )
                .await;
            if !answer.is_ok_and(|a| a.status == 200) {
                totals.errors.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            totals.requests.fetch_add(1, Ordering::Relaxed);
            totals.messages.fetch_add(1, Ordering::Relaxed);
            if totals.measuring.load(Ordering::Relaxed) {
                latency.saturating_record(sent.elapsed().as_micros() as u64);
            }
        }
        Ok(latency)
    })
}

fn fetch_task(args: Arc<LoadArgs>, i: usize, totals: Arc<Totals>, end: Instant) -> TaskFuture {
    Box::pin(async move {
        let mut conn = Conn::new(&args.target)?;
        let partition = i as u32 % args.partitions.max(1);
        let auth = auth(&args);
        let headers = [("authorization", auth.as_str())];
        let mut offset = 0u64;
        let mut latency = histogram()?;
        while Instant::now() < end {
            let path = format!(
                "/v2/{}/{}/partitions/{partition}/messages?offset={offset}&max_messages=1000&max_bytes=4194304",
                args.app, args.queue
            );
            let sent = Instant::now();
            let answer = conn.send("GET", &path, &headers, bytes::Bytes::new()).await;
            let body: Option<Value> = match answer {
                Ok(a) if a.status == 200 => serde_json::from_slice(&a.body).ok(),
                _ => None,
            };
            let Some(body) = body else {
                totals.errors.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            let messages = body["messages"].as_array().map_or(0, Vec::len) as u64;
            let next = body["next_offset"].as_u64().unwrap_or(0);
            let end_offset = body["high_watermark"].as_u64().unwrap_or(0);
            // Wrap to the start at the end: a fetch benchmark of the data
            // already there.
            offset = if next >= end_offset { 0 } else { next };
            totals.requests.fetch_add(1, Ordering::Relaxed);
            totals.messages.fetch_add(messages, Ordering::Relaxed);
            totals
                .bytes
                .fetch_add(messages * args.size as u64, Ordering::Relaxed);
            if totals.measuring.load(Ordering::Relaxed) {
                latency.saturating_record(sent.elapsed().as_micros() as u64);
            }
        }
        Ok(latency)
    })
}

/// One producer sends single messages at `--rate`, each stamped with its
/// intended send time; one long-polling consumer per partition records
/// the time from intended send to receipt (so a stalled producer counts
/// against the latency, not for it).
async fn end_to_end(args: &Arc<LoadArgs>) -> anyhow::Result<()> {
    if args.rate == 0 || args.rate > 1_000_000 {
        bail!("--rate must be 1..=1000000");
    }
    let origin = Instant::now();
    let end = origin + Duration::from_secs(args.warmup_s + args.duration_s);
    let measure_from = Duration::from_secs(args.warmup_s).as_micros() as u64;
    let client = client()?;
    let auth = auth(args);
    // Consumers start at each partition's end.
    let mut consumers = Vec::new();
    for p in 0..args.partitions {
        let url = format!(
            "{}/v2/{}/{}/partitions/{p}/messages",
            args.target, args.app, args.queue
        );
        let probe: Value = client
            .get(format!("{url}?offset=0&max_messages=1"))
            .header("authorization", &auth)
            .send()
            .await?
            .json()
            .await?;
        let mut offset = probe["high_watermark"].as_u64().unwrap_or(0);
        let (client, auth) = (self::client()?, auth.clone());
        consumers.push(tokio::spawn(async move {
            let mut latency = histogram()?;
            while Instant::now() < end {
                let answer = client
                    .get(format!(
                        "{url}?offset={offset}&max_messages=1000&wait_ms=1000"
                    ))
                    .header("authorization", &auth)
                    .send()
                    .await;
                let Ok(answer) = answer else { continue };
                let Ok(body) = answer.json::<Value>().await else {
                    continue;
                };
                let received = origin.elapsed().as_micros() as u64;
                for m in body["messages"].as_array().into_iter().flatten() {
                    let stamp = m["body"]
                        .as_str()
                        .and_then(|b| b.split(|c: char| !c.is_ascii_digit()).next())
                        .and_then(|d| d.parse::<u64>().ok());
                    if let Some(intended) = stamp.filter(|s| *s >= measure_from) {
                        latency.saturating_record(received.saturating_sub(intended));
                    }
                }
                offset = body["next_offset"].as_u64().unwrap_or(offset);
            }
            anyhow::Ok(latency)
        }));
    }
    // The producer: send times are scheduled, never skipped; each send
    // runs on its own task (at most IN_FLIGHT_MAX), so a slow answer
    // delays no later send.
    const IN_FLIGHT_MAX: usize = 1_024;
    // `--rate` counts messages; each request carries `--batch` of them.
    let interval_us = 1_000_000 * args.batch as u64 / args.rate;
    if interval_us == 0 {
        bail!("--rate over 1,000,000 requests per second (rate / batch)");
    }
    let url = produce_url(args);
    let mut publish = histogram()?;
    let mut sent = 0u64;
    let sender = pooled_client(IN_FLIGHT_MAX)?;
    let mut in_flight = tokio::task::JoinSet::new();
    while Instant::now() < end {
        let intended = Duration::from_micros(sent * interval_us);
        let at = origin + intended;
        if let Some(wait) = at.checked_duration_since(Instant::now()) {
            tokio::time::sleep(wait).await;
        }
        while in_flight.len() >= IN_FLIGHT_MAX {
            if let Some(Ok(Some(us))) = in_flight.join_next().await {
                publish.saturating_record(us);
            }
        }
        let (body, content_type) = produce_body(args, Some(intended.as_micros() as u64))?;
        let request = sender
            .post(&url)
            .header("authorization", &auth)
            .header("content-type", content_type)
            .body(body);
        in_flight.spawn(async move {
            let acked = request
                .send()
                .await
                .is_ok_and(|a| a.status().as_u16() == 201);
            let measured = intended.as_micros() as u64 >= measure_from;
            (acked && measured)
                .then(|| origin.elapsed().saturating_sub(intended).as_micros() as u64)
        });
        sent += 1;
    }
    while let Some(done) = in_flight.join_next().await {
        if let Ok(Some(us)) = done {
            publish.saturating_record(us);
        }
    }
    let mut e2e = histogram()?;
    for c in consumers {
        e2e.add(c.await.context("a consumer panicked")??)?;
    }
    println!(
        "end-to-end: {} msg/s in requests of {} for {} s, {} B messages, {} partitions",
        args.rate, args.batch, args.duration_s, args.size, args.partitions
    );
    println!(
        "  {}",
        latency_line("publish (intended send -> ack)", &publish)
    );
    println!(
        "  {}",
        latency_line("end-to-end (intended send -> consumer)", &e2e)
    );
    Ok(())
}
