//! Keeping the node's disk work small and smooth.
//!
//! **WAL space.** A group's purges (after its snapshots) let
//! the WAL delete segments every group is past (`Wal::compact_if_due`),
//! but an idle group never reaches its snapshot threshold, and its few
//! old entries would pin every segment after them. So when the WAL grows
//! past a bound, the node snapshots the groups pinning its oldest segment.

use crate::node::{META_GROUP, Node, NodeMachine};

/// WAL segments a node keeps before it snapshots the groups pinning the
/// oldest one (2 × 64 MiB with the default segment size). This also
/// checkpoints a busy group every ~128 MiB of WAL, whatever its entry
/// count: smaller checkpoints, shorter fsync bursts (fixed-rate 50k msg/s
/// on one node, p99 153/210 ms at 4 segments, 114/156 ms at 2).
pub const WAL_SEGMENTS_SOFT_MAX: usize = 2;

impl Node {
    /// When the WAL holds more than `WAL_SEGMENTS_SOFT_MAX` segments,
    /// snapshots every group whose live entries pin its oldest segment;
    /// their purges then compact the WAL. Returns how many it asked.
    pub async fn relieve_wal(&self) -> usize {
        if self.wal.stats().segment_count <= WAL_SEGMENTS_SOFT_MAX {
            return 0;
        }
        let mut asked = 0;
        for group in self.wal.groups_pinning_oldest_segment() {
            let Some(raft) = self.raft(group) else {
                continue;
            };
            match raft.trigger().snapshot().await {
                Ok(()) => asked += 1,
                Err(e) => {
                    tracing::warn!(group = group.0, error = %e, "snapshot for WAL space failed")
                }
            }
        }
        asked
    }
}

impl Node {
    /// Starts writeback of every data group's unsealed partition segments
    /// (`DiskFile::start_writeback`), so that a checkpoint's fsync finds
    /// little dirty data: without it the checkpoint wrote everything since
    /// the last one in one burst, and the WAL's fsyncs (which
    /// acknowledgements wait for) queued behind it. The files are taken
    /// under each group's read lock and hinted after it is released.
    pub async fn start_writeback(&self) {
        let mut files = Vec::new();
        for (group, (_, sm)) in &self.groups {
            if *group == META_GROUP {
                continue;
            }
            if let NodeMachine::Data(data) = sm.read().machine() {
                files.extend(data.writeback_due());
            }
        }
        if files.is_empty() {
            return;
        }
        let hinted = tokio::task::spawn_blocking(move || {
            for (file, from, len) in files {
                if let Err(e) = file.start_writeback(from, len) {
                    tracing::debug!(error = %e, "starting writeback");
                }
            }
        })
        .await;
        if let Err(e) = hinted {
            tracing::debug!(error = %e, "writeback task failed");
        }
    }
}
