//! Keeping the node WAL small. A group's purges (after its snapshots) let
//! the WAL delete segments every group is past (`Wal::compact_if_due`),
//! but an idle group never reaches its snapshot threshold, and its few
//! old entries would pin every segment after them. So when the WAL grows
//! past a bound, the node snapshots the groups pinning its oldest segment.

use crate::node::Node;

/// WAL segments a node keeps before it snapshots the groups pinning the
/// oldest one (4 × 64 MiB with the default segment size).
pub const WAL_SEGMENTS_SOFT_MAX: usize = 4;

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
