//! Idle cost of many Raft groups: 3 nodes in one process, each hosting
//! 1 + 64 groups over one WAL, one HTTP client and one router; leadership
//! is spread by forming group `g` from node `g % 3`. Once every group has a
//! leader, the process's CPU time (user + system, from /proc/self/stat) is
//! measured over an idle window, for two timeout settings.
//!
//! Run: `cargo run --release -p sluice-raft --example idle_groups [IDLE_SECS]`
//! (default 10 s per setting). Linux only (reads /proc).

use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::Config;
use sluice_raft::GroupId;
use sluice_raft::testing::{LoopbackNode, TestError, members};
use sluice_raft::transport::rpc::ClusterSecret;

const NODES: u64 = 3;
const GROUPS: u32 = 65;

/// CPU seconds (user + system) this process has used so far.
fn cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which may hold spaces) start after ')'.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 here.
    (ticks(11) + ticks(12)) / 100.0
}

async fn run(heartbeat_ms: u64, election_min_ms: u64, idle: Duration) -> Result<f64, TestError> {
    let secret = ClusterSecret::new("idle-groups-measurement-secret")?;
    let config = Config {
        heartbeat_interval: heartbeat_ms,
        election_timeout_min: election_min_ms,
        election_timeout_max: election_min_ms * 2,
        ..Config::default()
    };
    let config = Arc::new(config.validate()?);
    let groups: Vec<GroupId> = (0..GROUPS).map(GroupId).collect();
    let mut nodes = Vec::new();
    for id in 1..=NODES {
        nodes.push(
            LoopbackNode::start(id, groups.clone(), Arc::clone(&config), &secret, true).await?,
        );
    }
    let members = members(&nodes);
    for &group in &groups {
        // Spread leadership: the node that initializes a group tends to lead it.
        let node = &nodes[group.0 as usize % NODES as usize];
        node.raft(group).initialize(members.clone()).await?;
    }
    for node in &nodes {
        for (_, raft, _) in &node.groups {
            raft.wait(Some(Duration::from_secs(60)))
                .metrics(|m| m.current_leader.is_some(), "leader")
                .await?;
        }
    }
    let mut leaders = [0u32; NODES as usize];
    for &group in &groups {
        if let Some(l) = nodes[0].raft(group).current_leader().await {
            leaders[(l - 1) as usize] += 1;
        }
    }
    let (cpu0, wall0) = (cpu_secs(), Instant::now());
    tokio::time::sleep(idle).await;
    let cpu_percent = (cpu_secs() - cpu0) / wall0.elapsed().as_secs_f64() * 100.0;
    println!(
        "heartbeat {heartbeat_ms} ms, election timeout {election_min_ms}..{} ms: \
         {GROUPS} groups x {NODES} nodes idle for {:.0} s: {cpu_percent:.1}% of one core \
         (leaders per node: {leaders:?})",
        election_min_ms * 2,
        idle.as_secs_f64()
    );
    for node in &nodes {
        node.shutdown().await?;
    }
    Ok(cpu_percent)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), TestError> {
    let idle_secs: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(10);
    let idle = Duration::from_secs(idle_secs);
    run(100, 400, idle).await?;
    run(500, 2_000, idle).await?;
    Ok(())
}
