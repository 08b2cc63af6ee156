//! Watching a group's progress on this node: how far it has applied,
//! waiting for the next apply (long-polls), and whether this node leads.

use std::time::Duration;

use openraft::async_runtime::watch::WatchReceiver;

use crate::ids::GroupId;
use crate::node::{GroupRaft, Node};

/// Waits until `raft` has applied `index`, or `timeout` passes; says
/// whether it did. Reads the metrics in place: openraft's `Wait` clones
/// all of them and formats a message at every check, a visible share of
/// each request's CPU when every read and long-poll went through it.
pub(crate) async fn applied_at_least(raft: &GroupRaft, index: u64, timeout: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut metrics = raft.metrics();
    loop {
        let applied = metrics
            .borrow_and_update()
            .last_applied
            .map_or(0, |l| l.index);
        if applied >= index {
            return true;
        }
        match tokio::time::timeout_at(deadline, metrics.changed()).await {
            Ok(Ok(())) => {}
            // Timed out, or the Raft stopped.
            Ok(Err(_)) | Err(_) => return false,
        }
    }
}

impl Node {
    /// The index this replica of `group` has applied (0 before any).
    pub fn applied_index(&self, group: GroupId) -> Option<u64> {
        let raft = self.raft(group)?;
        let applied = raft
            .metrics()
            .borrow_watched()
            .last_applied
            .map_or(0, |l| l.index);
        Some(applied)
    }

    /// Waits until this replica of `group` applies an entry past `index`,
    /// or `timeout` passes; says whether it did. Read the applied index
    /// *before* reading the state machine, then wait past it: an apply in
    /// between wakes the wait at once, so no update is missed.
    pub async fn wait_applied_past(&self, group: GroupId, index: u64, timeout: Duration) -> bool {
        let Some(raft) = self.raft(group) else {
            return false;
        };
        applied_at_least(raft, index.saturating_add(1), timeout).await
    }

    /// The term in which this node leads `group`, if it does.
    pub fn leading_term(&self, group: GroupId) -> Option<u64> {
        let raft = self.raft(group)?;
        let receiver = raft.metrics();
        let metrics = receiver.borrow_watched();
        (metrics.current_leader == Some(self.id())).then_some(metrics.current_term)
    }
}
