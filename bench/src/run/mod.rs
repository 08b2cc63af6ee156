//! `sluice-bench run WORKLOAD.yaml`: one OMB workload against one system.
//!
//! The phases, in OMB's order: create the topics and subscribe the
//! consumers; start the producers; warm up (not measured); for a backlog
//! workload, pause the consumers until the backlog is built, then resume
//! them; measure for the workload's duration, a progress line a second;
//! stop the producers and wait (bounded) for the consumers to catch up;
//! write the JSON result and its chart.

pub mod flushes;
pub mod payload;
pub mod result;
pub mod schedule;
pub mod stats;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::{Args, ValueEnum};
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::driver::sluice::{ConsumeMode, ProduceFormat, SluiceDriver};
use crate::driver::{Consumer, Driver, Producer};
use crate::spawn::Cluster;
use crate::workload::{KeyDistributor, Workload};
use flushes::DiskCounters;
use payload::Payloads;
use schedule::Schedule;
use stats::{Collector, Stats, backlog};

/// The system a run drives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DriverKind {
    /// Sluice's native API.
    Sluice,
    /// NATS JetStream.
    Nats,
    /// Redis Streams.
    Redis,
    /// RabbitMQ quorum queues.
    Rabbitmq,
}

/// `sluice-bench run`.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// The OMB workload file.
    pub workload: PathBuf,
    /// Drive a running system: a Sluice node's URL (several, comma-
    /// separated, to spread clients), or the peer's URL
    /// (`nats://`, `redis://`, `amqp://`).
    #[arg(long, conflicts_with = "spawn")]
    pub target: Option<String>,
    /// Start a local Sluice cluster of N nodes for the run.
    #[arg(long, value_name = "N")]
    pub spawn: Option<u16>,
    /// The system to drive.
    #[arg(long, value_enum, default_value = "sluice")]
    pub driver: DriverKind,
    /// Where results go.
    #[arg(long, default_value = "bench-results")]
    pub out: PathBuf,
    /// Measured seconds (overrides the workload's).
    #[arg(long)]
    pub duration_s: Option<u64>,
    /// Warm-up seconds (overrides the workload's).
    #[arg(long)]
    pub warmup_s: Option<u64>,
    /// Messages per produce request (overrides `batchSize`).
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Requests in flight per producer (overrides `requestsInFlight`).
    #[arg(long)]
    pub requests_in_flight: Option<usize>,
    /// Messages per second over all producers (overrides `producerRate`).
    #[arg(long)]
    pub rate: Option<u64>,
    /// A name for the result files (default: driver and workload).
    #[arg(long)]
    pub label: Option<String>,
    /// The `sluice` binary for `--spawn`.
    #[arg(long)]
    pub sluice_bin: Option<PathBuf>,
    /// Data groups of a spawned cluster.
    #[arg(long, default_value_t = 4)]
    pub groups: u32,
    /// Keep a spawned cluster's data here (default: a temporary folder,
    /// removed afterwards).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Sluice application.
    #[arg(long, default_value = "default")]
    pub app: String,
    /// Sluice application key (with `--target`).
    #[arg(
        long,
        env = "SLUICE_BENCH_KEY",
        default_value = "",
        hide_env_values = true
    )]
    pub key: String,
    /// Sluice produce encoding.
    #[arg(long, value_enum, default_value = "binary")]
    pub produce_format: ProduceFormat,
    /// Sluice consumers: group members or partition fetches.
    #[arg(long, value_enum, default_value = "group")]
    pub consume: ConsumeMode,
    /// Peers: replicas of each stream or queue (NATS JetStream 1 or 3;
    /// RabbitMQ quorum queues take the cluster's size).
    #[arg(long, default_value_t = 1)]
    pub replicas: u8,
    /// A note on how the peer server was set up, for the result's
    /// environment (`bench/peers/` scripts print it).
    #[arg(long, default_value = "")]
    pub server_settings: String,
}

/// How long producers' last requests and consumers' catching up may take
/// after the measured period.
const DRAIN_MAX_S: u64 = 30;
/// The longest a backlog may take to build.
const BACKLOG_BUILD_MAX_S: u64 = 1_800;
/// Topics created at once.
const CREATE_CONCURRENCY: usize = 16;

/// Runs a workload; writes `OUT/LABEL.json` and `OUT/LABEL.svg`.
pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    let mut workload = crate::workload::read(&args.workload)?;
    apply_overrides(&mut workload, &args)?;
    let base_dir = args.workload.parent().and_then(Path::parent);
    let payloads = Payloads::for_workload(&workload, base_dir)?;
    let mut cluster = None;
    let (target, settings) = match (&args.spawn, &args.target) {
        (Some(n), _) => {
            if args.driver != DriverKind::Sluice {
                bail!("--spawn starts Sluice; start a peer with bench/peers/ and pass --target");
            }
            let bin = crate::spawn::find_sluice(args.sluice_bin.as_deref())?;
            eprintln!("starting a {n}-node Sluice cluster ({})", bin.display());
            let c = Cluster::start(&bin, *n, args.groups, args.data_dir.as_deref()).await?;
            let target = c.urls.join(",");
            let settings = c.settings.clone();
            cluster = Some(c);
            (target, settings)
        }
        (None, Some(t)) => (t.clone(), json!(args.server_settings)),
        (None, None) => bail!("say where to run: --target URL or --spawn N"),
    };
    let key = match &cluster {
        Some(c) => c.app_key.clone(),
        None => args.key.clone(),
    };
    let outcome = match args.driver {
        DriverKind::Sluice => {
            let urls = target.split(',').map(str::to_string).collect();
            let driver =
                SluiceDriver::new(urls, &args.app, &key, args.produce_format, args.consume)?;
            execute(driver, &workload, payloads, &args, &target, settings).await
        }
        DriverKind::Nats => {
            let driver = crate::driver::nats::NatsDriver::connect(&target, args.replicas).await?;
            execute(driver, &workload, payloads, &args, &target, settings).await
        }
        DriverKind::Redis => {
            let driver = crate::driver::redis::RedisDriver::connect(&target).await?;
            execute(driver, &workload, payloads, &args, &target, settings).await
        }
        DriverKind::Rabbitmq => {
            let driver = crate::driver::rabbitmq::RabbitDriver::connect(&target).await?;
            execute(driver, &workload, payloads, &args, &target, settings).await
        }
    };
    if let Some(c) = &mut cluster {
        c.stop().await;
    }
    let doc = outcome?;
    let label = args.label.clone().unwrap_or_else(|| {
        format!(
            "{}-{}",
            format!("{:?}", args.driver).to_lowercase(),
            slug(&workload.name)
        )
    });
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let json_path = args.out.join(format!("{label}.json"));
    std::fs::write(&json_path, serde_json::to_string_pretty(&doc)?)
        .with_context(|| format!("writing {}", json_path.display()))?;
    let svg_path = args.out.join(format!("{label}.svg"));
    crate::chart::run_chart(&doc, &svg_path)?;
    print_summary(&doc);
    println!("result: {}", json_path.display());
    println!("chart:  {}", svg_path.display());
    Ok(())
}

fn apply_overrides(w: &mut Workload, args: &RunArgs) -> anyhow::Result<()> {
    if let Some(s) = args.duration_s {
        w.test_duration_s = s;
    }
    if let Some(s) = args.warmup_s {
        w.warmup_duration_s = s;
    }
    if let Some(b) = args.batch_size {
        w.batch_size = b;
    }
    if let Some(n) = args.requests_in_flight {
        w.requests_in_flight = n;
    }
    if let Some(r) = args.rate {
        w.producer_rate = r;
    }
    if w.test_duration_s == 0 {
        bail!("the measured duration must be at least 1 s");
    }
    if !(1..=10_000).contains(&w.batch_size) || !(1..=4_096).contains(&w.requests_in_flight) {
        bail!("batch size must be 1..=10000 and requests in flight 1..=4096");
    }
    let clients =
        u64::from(w.topics) * u64::from(w.producers_per_topic) * w.requests_in_flight as u64
            + u64::from(w.topics)
                * u64::from(w.subscriptions_per_topic)
                * u64::from(w.consumer_per_subscription);
    if clients > 20_000 {
        bail!("{clients} producer slots and consumers: more than 20,000 connections");
    }
    Ok(())
}

/// A file-name-safe form of a workload name.
fn slug(name: &str) -> String {
    let mut out = String::new();
    for c in name.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    out.trim_matches('-').chars().take(80).collect()
}

/// What one run of a workload produced, before it becomes JSON.
async fn execute<D: Driver>(
    driver: D,
    w: &Workload,
    payloads: Payloads,
    args: &RunArgs,
    target: &str,
    settings: Value,
) -> anyhow::Result<Value> {
    let driver = Arc::new(driver);
    let stats = Arc::new(Stats::new()?);
    let origin = Instant::now();
    let run_id = format!("{:08x}", unix_ms() & 0xffff_ffff);
    let topics: Vec<String> = (0..w.topics).map(|i| format!("sb{run_id}-{i}")).collect();
    eprintln!(
        "{}: creating {} topic(s) of {} partition(s)",
        w.name, w.topics, w.partitions_per_topic
    );
    let mut creating = JoinSet::new();
    for chunk in topics.chunks(topics.len().div_ceil(CREATE_CONCURRENCY)) {
        let (driver, chunk, partitions) =
            (Arc::clone(&driver), chunk.to_vec(), w.partitions_per_topic);
        creating.spawn(async move {
            for t in chunk {
                driver.create_topic(&t, partitions).await?;
            }
            anyhow::Ok(())
        });
    }
    while let Some(r) = creating.join_next().await {
        r.context("creating topics")??;
    }

    // Consumers first, as OMB does: they see every message.
    let (run_consumers, consumers_run) = watch::channel(w.consumer_backlog_size_gb == 0);
    let stop_consumers = Arc::new(AtomicBool::new(false));
    let mut consumers = JoinSet::new();
    for topic in &topics {
        for s in 0..w.subscriptions_per_topic {
            let subscription = format!("sub-{s}");
            for c in 0..w.consumer_per_subscription {
                let consumer = driver
                    .consumer(topic, &subscription, c, w.consumer_per_subscription)
                    .await
                    .with_context(|| format!("subscribing to {topic}"))?;
                consumers.spawn(consume(
                    consumer,
                    Arc::clone(&stats),
                    consumers_run.clone(),
                    Arc::clone(&stop_consumers),
                    origin,
                ));
            }
        }
    }

    let stop_producers = Arc::new(AtomicBool::new(false));
    let mut producers = JoinSet::new();
    let total_producers = (w.topics * w.producers_per_topic) as usize;
    for (t, topic) in topics.iter().enumerate() {
        for p in 0..w.producers_per_topic as usize {
            let index = t * w.producers_per_topic as usize + p;
            let schedule = Schedule::new(
                origin,
                w.producer_rate,
                w.batch_size,
                total_producers,
                index,
            );
            let next = Arc::new(AtomicU64::new(0));
            for _ in 0..w.requests_in_flight {
                let producer = driver.producer(topic).await?;
                producers.spawn(produce(
                    producer,
                    Slot {
                        schedule,
                        next: Arc::clone(&next),
                        batch: w.batch_size,
                        keys: w.key_distributor,
                        payloads: payloads.clone(),
                        origin,
                        stats: Arc::clone(&stats),
                        stop: Arc::clone(&stop_producers),
                    },
                ));
            }
        }
    }

    let subscriptions = u64::from(w.subscriptions_per_topic);
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    ticker.tick().await;
    let mut last_tick = Instant::now();
    // Warm-up.
    for second in 0..w.warmup_duration_s {
        ticker.tick().await;
        let (_, counts) = stats.tick()?;
        eprintln!(
            "warm-up {:>3}/{} s  published {}  consumed {}  backlog {}",
            second + 1,
            w.warmup_duration_s,
            counts.published,
            counts.consumed,
            backlog(counts, subscriptions)
        );
        last_tick = Instant::now();
    }
    // A backlog workload: build the backlog with consumers paused.
    let mut consumers_resumed = None;
    if w.consumer_backlog_size_gb > 0 {
        let target_bytes = w.consumer_backlog_size_gb.saturating_mul(1_000_000_000);
        let started = Instant::now();
        loop {
            ticker.tick().await;
            let (_, counts) = stats.tick()?;
            let unread = counts
                .published_bytes
                .saturating_mul(subscriptions)
                .saturating_sub(counts.consumed_bytes);
            eprintln!(
                "building backlog: {:.2} / {:.2} GB",
                unread as f64 / 1e9,
                target_bytes as f64 / 1e9
            );
            if unread >= target_bytes {
                break;
            }
            if started.elapsed() > Duration::from_secs(BACKLOG_BUILD_MAX_S) {
                bail!("the backlog was not built in {BACKLOG_BUILD_MAX_S} s");
            }
        }
        let _ = run_consumers.send(true);
        consumers_resumed = Some(Instant::now());
        last_tick = Instant::now();
    }

    // Measurement.
    let disk_before = DiskCounters::read();
    let (_, start_counts) = stats.tick()?;
    let measure_start = Instant::now();
    let mut collector = Collector::new(start_counts, subscriptions)?;
    let in_flight_max =
        (total_producers * w.requests_in_flight * w.batch_size) as i64 * subscriptions as i64;
    let mut backlog_drained_s = None;
    for second in 0..w.test_duration_s {
        ticker.tick().await;
        let (period, counts) = stats.tick()?;
        let secs = last_tick.elapsed().as_secs_f64();
        last_tick = Instant::now();
        let point = collector.add(&period, counts, secs)?;
        if let (Some(resumed), None) = (consumers_resumed, backlog_drained_s)
            && point.backlog <= in_flight_max
        {
            backlog_drained_s = Some(resumed.elapsed().as_secs_f64());
        }
        eprintln!(
            "{:>4}/{} s  pub {:>9.0} msg/s  p99 {:>7.2} ms  cons {:>9.0} msg/s  e2e p99 {:>7.2} ms  backlog {:>8}  errors {}",
            second + 1,
            w.test_duration_s,
            point.publish_rate,
            point.publish.p99,
            point.consume_rate,
            point.end_to_end.p99,
            point.backlog,
            counts.publish_errors,
        );
    }
    let measured_s = measure_start.elapsed().as_secs_f64();
    let end_counts = stats.counts();
    let disk = DiskCounters::read().since(disk_before);

    // Stop the producers, then let consumers catch up (bounded).
    stop_producers.store(true, Ordering::Relaxed);
    let _ = run_consumers.send(true);
    while let Some(r) = producers.join_next().await {
        r.context("a producer panicked")??;
    }
    let drain_deadline = Instant::now() + Duration::from_secs(DRAIN_MAX_S);
    loop {
        let counts = stats.counts();
        let left = backlog(counts, subscriptions);
        if left <= 0 || Instant::now() > drain_deadline {
            if left > 0 {
                eprintln!(
                    "{left} messages not consumed {DRAIN_MAX_S} s after the producers stopped"
                );
            }
            break;
        }
        eprintln!("draining: backlog {left}");
        tokio::select! {
            _ = ticker.tick() => {}
            Some(done) = consumers.join_next() => {
                done.context("a consumer panicked")??;
                bail!("a consumer stopped early");
            }
        }
    }
    stop_consumers.store(true, Ordering::Relaxed);
    while let Some(r) = consumers.join_next().await {
        r.context("a consumer panicked")??;
    }
    let totals = stats.counts();
    let environment = environment(args, target, settings);
    Ok(result::to_json(&result::Outcome {
        workload: w,
        driver: match args.driver {
            DriverKind::Sluice => "sluice",
            DriverKind::Nats => "nats-jetstream",
            DriverKind::Redis => "redis-streams",
            DriverKind::Rabbitmq => "rabbitmq-quorum",
        },
        collector: &collector,
        measured_published: end_counts.published - start_counts.published,
        measured_bytes: end_counts.published_bytes - start_counts.published_bytes,
        measured_s,
        published: totals.published,
        consumed: totals.consumed,
        publish_errors: totals.publish_errors,
        disk,
        backlog_drained_s,
        environment,
    }))
}

/// One in-flight slot of one producer.
struct Slot {
    schedule: Schedule,
    /// The producer's next request number, shared by its slots.
    next: Arc<AtomicU64>,
    batch: usize,
    keys: KeyDistributor,
    payloads: Payloads,
    origin: Instant,
    stats: Arc<Stats>,
    stop: Arc<AtomicBool>,
}

/// Sends requests until stopped: at their intended times (fixed rate) or
/// back to back (max rate).
async fn produce<P: Producer>(mut producer: P, mut slot: Slot) -> anyhow::Result<()> {
    let mut batch = Vec::with_capacity(slot.batch);
    while !slot.stop.load(Ordering::Relaxed) {
        let k = slot.next.fetch_add(1, Ordering::Relaxed);
        let intended = slot.schedule.intended(k);
        if let Some(at) = intended {
            tokio::time::sleep_until(at.into()).await;
            if slot.stop.load(Ordering::Relaxed) {
                break;
            }
        }
        let sent = Instant::now();
        let stamp_at = intended.unwrap_or(sent);
        let stamp_us = stamp_at.duration_since(slot.origin).as_micros() as u64;
        batch.clear();
        let mut bytes = 0u64;
        for _ in 0..slot.batch {
            let p = slot.payloads.stamped(stamp_us);
            bytes += p.len() as u64;
            batch.push(p);
        }
        let key = match slot.keys {
            KeyDistributor::NoKey => None,
            KeyDistributor::KeyRoundRobin => Some(format!("key-{}", k % 10_000)),
            KeyDistributor::RandomNano => {
                Some(format!("{}", unix_ms().wrapping_mul(1_000_003) ^ k))
            }
        };
        match producer.send(&batch, key.as_deref()).await {
            Ok(()) => slot.stats.published(
                slot.batch as u64,
                bytes,
                slot.schedule.latency(k, sent, Instant::now()),
            ),
            Err(e) => {
                slot.stats.publish_failed(slot.batch as u64);
                tracing_error(&e);
            }
        }
    }
    Ok(())
}

/// Receives until stopped; waits while paused (a backlog being built).
async fn consume<C: Consumer>(
    mut consumer: C,
    stats: Arc<Stats>,
    mut running: watch::Receiver<bool>,
    stop: Arc<AtomicBool>,
    origin: Instant,
) -> anyhow::Result<()> {
    let mut errors_in_a_row = 0u32;
    while !stop.load(Ordering::Relaxed) {
        if !*running.borrow() {
            tokio::select! {
                r = running.wait_for(|run| *run) => { r?; }
                _ = tokio::time::sleep(Duration::from_millis(500)) => continue,
            }
        }
        match consumer.receive().await {
            Ok(received) => {
                errors_in_a_row = 0;
                if received.is_empty() {
                    continue;
                }
                let now_us = origin.elapsed().as_micros() as u64;
                let stamps: Vec<Option<u64>> = received.iter().map(|r| r.stamp_us).collect();
                let bytes = received.iter().map(|r| r.bytes as u64).sum();
                stats.consumed(&stamps, bytes, now_us);
            }
            Err(e) => {
                errors_in_a_row += 1;
                tracing_error(&e);
                if errors_in_a_row >= 100 {
                    return Err(e.context("a consumer failed 100 times in a row"));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    consumer.close().await
}

/// Prints the first error of each kind, then stays quiet (a failing
/// server must not bury the progress lines).
fn tracing_error(e: &anyhow::Error) {
    static SHOWN: AtomicU64 = AtomicU64::new(0);
    if SHOWN.fetch_add(1, Ordering::Relaxed) < 5 {
        eprintln!("error: {e:#}");
    }
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Where and how the run happened.
fn environment(args: &RunArgs, target: &str, settings: Value) -> Value {
    let read = |p: &str| {
        std::fs::read_to_string(p)
            .ok()
            .map(|s| s.trim().to_string())
    };
    let memory_kib = read("/proc/meminfo").and_then(|m| {
        m.lines()
            .find(|l| l.starts_with("MemTotal:"))
            .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
    });
    let commit = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    json!({
        "commit": commit,
        "benchVersion": env!("CARGO_PKG_VERSION"),
        "buildProfile": if cfg!(debug_assertions) { "debug" } else { "release" },
        "cores": std::thread::available_parallelism().map_or(0, |n| n.get()),
        "memoryBytes": memory_kib.map(|k| k * 1024),
        "kernel": read("/proc/sys/kernel/osrelease"),
        "startedAtUnixMs": unix_ms(),
        "target": target,
        "spawnedNodes": args.spawn,
        "workloadFile": args.workload.display().to_string(),
        "loadGenerator": "sluice-bench on the same machine as the server",
        "server": settings,
    })
}

/// The headline figures on stdout.
fn print_summary(doc: &Value) {
    let f = |k: &str| doc[k].as_f64().unwrap_or(0.0);
    println!(
        "{} on {}: {:.0} msg/s published ({:.1} MiB/s), {:.0} msg/s consumed",
        doc["workload"].as_str().unwrap_or(""),
        doc["driver"].as_str().unwrap_or(""),
        f("aggregatedPublishRate"),
        f("aggregatedPublishThroughputMiBps"),
        f("aggregatedConsumeRate"),
    );
    println!(
        "  publish latency ms: p50 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}",
        f("aggregatedPublishLatency50pct"),
        f("aggregatedPublishLatency99pct"),
        f("aggregatedPublishLatency999pct"),
        f("aggregatedPublishLatencyMax"),
    );
    println!(
        "  end-to-end latency ms: p50 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}",
        f("aggregatedEndToEndLatency50pct"),
        f("aggregatedEndToEndLatency99pct"),
        f("aggregatedEndToEndLatency999pct"),
        f("aggregatedEndToEndLatencyMax"),
    );
    println!(
        "  messages published {}, consumed {}, errors {}; device flushes per message {}",
        doc["messagesPublished"],
        doc["messagesConsumed"],
        doc["publishErrors"],
        doc["deviceFlushesPerMessage"]
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_become_file_names() {
        assert_eq!(
            slug("max rate / 1 queue / 1 partition / 1KiB"),
            "max-rate-1-queue-1-partition-1kib"
        );
    }
}
