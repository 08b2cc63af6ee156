//! The node's background upkeep: the scrubber, which re-verifies sealed
//! partition segments at a set pace; the repairer, which fetches damaged
//! segments from peers (`sluice_raft::node::repair` has the mechanics and
//! the fencing rules); and WAL relief, which snapshots idle groups that
//! would otherwise pin the WAL's oldest segment.

use std::sync::Arc;
use std::time::Duration;

use sluice_raft::node::{Node, ScrubCursor};
use tokio::sync::watch;

use crate::startup::stopped;

/// Pause between repair passes while something is damaged.
const REPAIR_RETRY_MS: u64 = 1_000;
/// Pause between writebacks of partition logs. Direct-written logs write
/// out here what an append would otherwise write out on the apply path
/// (at 8 MiB pending): 200 ms let a partition taking ~70 MB/s reach that
/// (batched produce 177,070/198,480/292,549 msg/s at 200 ms against
/// 227,813/289,421/329,084 at 50 ms, docs/benchmarks.md).
const WRITEBACK_INTERVAL_MS: u64 = 50;
/// Pause between checks of the WAL's size.
const WAL_CHECK_MS: u64 = 1_000;
/// Pause after a full scrub round (or when there is nothing to scrub).
const SCRUB_ROUND_PAUSE_MS: u64 = 10_000;

/// Verifies sealed segments one at a time, pausing after each for as long
/// as its bytes take at `bytes_per_s`; 0 turns the scrubber off.
pub async fn scrub(node: Arc<Node>, bytes_per_s: u64, stop: watch::Receiver<bool>) {
    if bytes_per_s == 0 {
        return;
    }
    let mut cursor = ScrubCursor::default();
    loop {
        let bytes = node.scrub_next(&mut cursor).await;
        let pause = if bytes == 0 {
            Duration::from_millis(SCRUB_ROUND_PAUSE_MS)
        } else {
            Duration::from_secs_f64(bytes as f64 / bytes_per_s as f64)
        };
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = stopped(stop.clone()) => return,
        }
    }
}

/// Repairs damaged segments as soon as one is reported, and retries
/// every second while any is left (a peer may be down, or the segment
/// not yet sealed).
pub async fn repair(node: Arc<Node>, stop: watch::Receiver<bool>) {
    loop {
        if !node.fences().list().is_empty() {
            node.repair_pass().await;
        }
        let retry = !node.fences().list().is_empty();
        let wait = async {
            if retry {
                tokio::time::sleep(Duration::from_millis(REPAIR_RETRY_MS)).await;
            } else {
                node.fences().reported().await;
            }
        };
        tokio::select! {
            _ = wait => {}
            _ = stopped(stop.clone()) => return,
        }
    }
}

/// Checks the WAL's size every second; past its bound, snapshots the
/// groups pinning its oldest segment (`Node::relieve_wal`).
pub async fn relieve_wal(node: Arc<Node>, stop: watch::Receiver<bool>) {
    every(WAL_CHECK_MS, stop, || async {
        node.relieve_wal().await;
    })
    .await;
}

/// Starts writeback of partition logs every `WRITEBACK_INTERVAL_MS`
/// (`Node::start_writeback`), spreading the disk work a checkpoint's fsync
/// would otherwise do in one burst, and keeping direct writes' pending
/// bytes (and their write-outs) off the apply path.
pub async fn writeback(node: Arc<Node>, stop: watch::Receiver<bool>) {
    every(WRITEBACK_INTERVAL_MS, stop, || node.start_writeback()).await;
}

/// Runs `step`, then pauses `interval_ms`, until shutdown begins.
async fn every<F: std::future::Future<Output = ()>>(
    interval_ms: u64,
    stop: watch::Receiver<bool>,
    mut step: impl FnMut() -> F,
) {
    loop {
        step().await;
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(interval_ms)) => {}
            _ = stopped(stop.clone()) => return,
        }
    }
}
