//! Raft commit throughput at the Raft + WAL layer: proposals of 100 × 1 KiB
//! messages (one 100 KiB command each), fsync on, `CLIENTS` concurrent
//! proposers, on 1 node and on 3 nodes in one process (sharing 2 cores and
//! one disk). The state machine only counts, so this is the ceiling the
//! data path (milestone C) must live under, not Sluice's produce figure.
//!
//! Run: `cargo run --release -p sluice-raft --example commit_throughput [SECS [NODES [RATE]]]`
//! (without NODES: 1 node, then 3; RATE: the fixed-rate phase's msg/s,
//! by default half the measured maximum).

use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::Config;
use sluice_raft::node::{ELECTION_MS_MAX_DEFAULT, ELECTION_MS_MIN_DEFAULT, HEARTBEAT_MS_DEFAULT};
use sluice_raft::testing::{LoopbackNode, members};
use sluice_raft::transport::rpc::ClusterSecret;
use sluice_raft::{Command, GroupId};

type Error = sluice_raft::testing::TestError;

const MESSAGES_PER_PROPOSAL: usize = 100;
const MESSAGE_BYTES: usize = 1024;
const CLIENTS: usize = 32;
const GROUP: GroupId = GroupId(1);

async fn cluster(nodes: u64) -> Result<Vec<LoopbackNode>, Error> {
    let secret = ClusterSecret::new("commit-throughput-measurement")?;
    // The node runtime's timeouts, not openraft's (50 ms heartbeats,
    // 150-300 ms elections): under full load on two shared cores those
    // fire spurious elections, which no `sluice serve` would see.
    let config = Config {
        heartbeat_interval: HEARTBEAT_MS_DEFAULT,
        election_timeout_min: ELECTION_MS_MIN_DEFAULT,
        election_timeout_max: ELECTION_MS_MAX_DEFAULT,
        ..Config::default()
    };
    let config = Arc::new(config.validate()?);
    let mut cluster = Vec::new();
    for id in 1..=nodes {
        cluster.push(LoopbackNode::start(id, [GROUP], Arc::clone(&config), &secret, true).await?);
    }
    let leader = cluster[0].raft(GROUP);
    leader.initialize(members(&cluster)).await?;
    leader
        .wait(Some(Duration::from_secs(30)))
        .metrics(
            |m| m.state.is_leader() && m.last_applied.map(|l| l.index) == m.last_log_index,
            "leader ready",
        )
        .await?;
    Ok(cluster)
}

/// Bytes this process has caused to be written to storage so far
/// (`write_bytes` of `/proc/self/io`: page-cache pages it dirtied), or 0
/// where that file does not exist.
fn disk_write_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/io")
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("write_bytes:"))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0)
}

/// WAL fsyncs that took over 10 ms, and all WAL fsyncs, over every node.
fn slow_fsyncs(nodes: &[LoopbackNode]) -> (u64, u64) {
    nodes.iter().fold((0, 0), |(slow, all), n| {
        let h = n.wal.stats().sync_latency_us;
        let within = h
            .bounds()
            .iter()
            .zip(h.cumulative())
            .find(|(bound, _)| **bound == 10_000)
            .map_or(0, |(_, count)| count);
        (slow + h.count() - within, all + h.count())
    })
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(i).copied().unwrap_or_default()
}

/// Runs `CLIENTS` proposers for `run`. With `rate` (proposals per second,
/// over all proposers), each send is scheduled at its intended time and its
/// latency counted from that time, so a slow commit cannot hide the queue
/// it causes (no coordinated omission); without, proposers send as fast as
/// commits return. Returns proposals/s and the sorted latencies.
async fn load(
    leader: &openraft::Raft<sluice_raft::TypeConfig, sluice_raft::testing::TestStateMachine>,
    run: Duration,
    rate: Option<f64>,
) -> Result<(f64, Vec<Duration>), Error> {
    let command = Command(vec![7u8; MESSAGES_PER_PROPOSAL * MESSAGE_BYTES].into());
    let start = Instant::now();
    let mut tasks = Vec::new();
    for client in 0..CLIENTS {
        let (leader, command) = (leader.clone(), command.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            for k in 0u64.. {
                let intended = match rate {
                    Some(r) => {
                        start
                            + Duration::from_secs_f64(
                                (k as f64 * CLIENTS as f64 + client as f64) / r,
                            )
                    }
                    None => Instant::now(),
                };
                if intended.duration_since(start) >= run {
                    break;
                }
                tokio::time::sleep_until(intended.into()).await;
                leader
                    .client_write(command.clone())
                    .await
                    .map_err(|e| e.to_string())?;
                latencies.push(intended.elapsed());
            }
            Ok::<_, String>(latencies)
        }));
    }
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await??);
    }
    let elapsed = start.elapsed().as_secs_f64();
    latencies.sort_unstable();
    Ok((latencies.len() as f64 / elapsed, latencies))
}

async fn measure(nodes: u64, run: Duration, fixed_rate: Option<f64>) -> Result<(), Error> {
    let c = cluster(nodes).await?;
    let leader = c[0].raft(GROUP).clone();
    let stats0: Vec<_> = c.iter().map(|n| n.wal.stats()).collect();
    let written0 = disk_write_bytes();
    let started = Instant::now();
    let (full_rate, latencies) = load(&leader, run, None).await?;
    let elapsed = started.elapsed().as_secs_f64();
    let written = disk_write_bytes().saturating_sub(written0) as f64;
    let rounds: u64 = c
        .iter()
        .zip(&stats0)
        .map(|(n, s)| n.wal.stats().flush_rounds - s.flush_rounds)
        .sum();
    let messages = MESSAGES_PER_PROPOSAL as f64;
    let produced = full_rate * elapsed * messages * MESSAGE_BYTES as f64;
    println!(
        "{nodes} node(s), full load, {CLIENTS} proposers, {MESSAGES_PER_PROPOSAL} x {MESSAGE_BYTES} B per proposal: \
         {:.0} msg/s ({:.0} MB/s), commit latency p50 {:?} p99 {:?}, {:.0} fsync rounds/s over all WALs, \
         {:.2} bytes written to disk per byte produced",
        full_rate * messages,
        full_rate * messages * MESSAGE_BYTES as f64 / 1e6,
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        rounds as f64 / elapsed,
        written / produced.max(1.0),
    );
    let scheduled = fixed_rate.map_or(full_rate / 2.0, |r| r / messages);
    let slow0 = slow_fsyncs(&c);
    let (half_rate, latencies) = load(&leader, run, Some(scheduled)).await?;
    let slow = slow_fsyncs(&c);
    println!(
        "{nodes} node(s), fixed rate ({:.0} msg/s scheduled): {:.0} msg/s, commit latency from the intended \
         send time p50 {:?} p99 {:?} max {:?}; WAL fsyncs over 10 ms: {} of {}",
        scheduled * messages,
        half_rate * messages,
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        latencies.last().copied().unwrap_or_default(),
        slow.0 - slow0.0,
        slow.1 - slow0.1,
    );
    for node in &c {
        node.shutdown().await?;
    }
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Error> {
    let secs: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(10);
    let nodes: Option<u64> = std::env::args().nth(2).and_then(|a| a.parse().ok());
    let rate: Option<f64> = std::env::args().nth(3).and_then(|a| a.parse().ok());
    for n in nodes.map_or(vec![1, 3], |n| vec![n]) {
        measure(n, Duration::from_secs(secs), rate).await?;
    }
    Ok(())
}
