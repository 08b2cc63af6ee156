//! Watching a group's progress on this node: how far it has applied,
//! waiting for the next apply (long-polls), and whether this node leads.

use std::time::Duration;

use openraft::async_runtime::watch::WatchReceiver;

use crate::ids::GroupId;
use crate::node::Node;

impl Node {
    /// The index this replica of `group` has applied (0 before any).
    pub fn applied_index(&self, group: GroupId) -> Option<u64> {
        let raft = self.raft(group)?;
        let metrics = raft.metrics().borrow_watched().clone();
        Some(metrics.last_applied.map_or(0, |l| l.index))
    }

    /// Waits until this replica of `group` applies an entry past `index`,
    /// or `timeout` passes; says whether it did. Read the applied index
    /// *before* reading the state machine, then wait past it: an apply in
    /// between wakes the wait at once, so no update is missed.
    pub async fn wait_applied_past(&self, group: GroupId, index: u64, timeout: Duration) -> bool {
        let Some(raft) = self.raft(group) else {
            return false;
        };
        raft.wait(Some(timeout))
            .applied_index_at_least(Some(index.saturating_add(1)), "long-poll")
            .await
            .is_ok()
    }

    /// The term in which this node leads `group`, if it does.
    pub fn leading_term(&self, group: GroupId) -> Option<u64> {
        let raft = self.raft(group)?;
        let metrics = raft.metrics().borrow_watched().clone();
        (metrics.current_leader == Some(self.id())).then_some(metrics.current_term)
    }
}
