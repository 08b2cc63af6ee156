//! What a node reports about its groups (the admin API's cluster status
//! and the health check), in Sluice's types rather than openraft's.

use std::collections::BTreeMap;

use openraft::async_runtime::watch::WatchReceiver;
use serde::Serialize;

use crate::ids::GroupId;
use crate::node::Node;

/// One group as this node sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GroupStatus {
    /// The group.
    pub group: u32,
    /// Its leader, if one is known.
    pub leader: Option<u64>,
    /// The current term.
    pub term: u64,
    /// This replica's last log index.
    pub last_log_index: Option<u64>,
    /// The committed index this replica knows.
    pub committed_index: Option<u64>,
    /// This replica's applied index.
    pub applied_index: Option<u64>,
    /// Voting members.
    pub voters: Vec<u64>,
    /// Non-voting members.
    pub learners: Vec<u64>,
    /// When this node leads: entries each follower is behind the leader.
    pub lag: BTreeMap<u64, u64>,
}

impl Node {
    /// The status of `group` on this node.
    pub fn status(&self, group: GroupId) -> Option<GroupStatus> {
        let raft = self.raft(group)?;
        let m = raft.metrics().borrow_watched().clone();
        let membership = m.membership_config.membership();
        let last = m.last_log_index.unwrap_or(0);
        let lag = m
            .replication
            .as_ref()
            .map(|r| {
                r.iter()
                    .filter(|(id, _)| **id != m.id)
                    .map(|(id, matched)| {
                        let matched = matched.as_ref().map_or(0, |l| l.index);
                        (*id, last.saturating_sub(matched))
                    })
                    .collect()
            })
            .unwrap_or_default();
        Some(GroupStatus {
            group: group.0,
            leader: m.current_leader,
            term: m.current_term,
            last_log_index: m.last_log_index,
            committed_index: m.local_committed.as_ref().map(|l| l.index),
            applied_index: m.last_applied.as_ref().map(|l| l.index),
            voters: membership.voter_ids().collect(),
            learners: membership.learner_ids().collect(),
            lag,
        })
    }
}
