//! The APIs' view of the cluster: proposals and reads of the meta group
//! and the data groups, routed through leaders by the node, with typed
//! commands and replies instead of bytes.
//!
//! Every proposal gets a fresh random request id here, once; the node's
//! retries reuse it, so a proposal retried through a leader change is
//! applied at most once.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use sluice_engine::Timestamp;
use sluice_raft::data::command::{DataCommand, DataProposal, DataReply};
use sluice_raft::data::machine::DataMachine;
use sluice_raft::meta::command::{Consistency, MetaCommand, MetaProposal, MetaReply};
use sluice_raft::meta::machine::MetaState;
use sluice_raft::node::{META_GROUP, Node, NodeMachine, RouteError};
use sluice_raft::{GroupId, RequestId};

use crate::batcher::{Answer, Batcher};
use crate::secrets;

/// Why the cluster could not answer.
#[derive(Debug, thiserror::Error)]
pub enum ClusterFailure {
    /// No leader could be reached in time (503; the client may retry).
    #[error(transparent)]
    Unavailable(#[from] RouteError),
    /// Something that should not happen (500): an undecodable reply, a
    /// group that is not the kind expected.
    #[error("internal: {0}")]
    Internal(String),
}

impl ClusterFailure {
    /// The same failure again (one batch's failure is every member's).
    pub fn duplicate(&self) -> ClusterFailure {
        match self {
            ClusterFailure::Unavailable(e) => ClusterFailure::Unavailable(e.clone()),
            ClusterFailure::Internal(e) => ClusterFailure::Internal(e.clone()),
        }
    }
}

/// A reply with the leader that produced it (for the routing headers).
#[derive(Debug)]
pub struct Led<T> {
    /// The reply.
    pub value: T,
    /// The group that answered.
    pub group: GroupId,
    /// The node that led it, when known (a follower read has none).
    pub leader: Option<u64>,
}

/// The cluster as this node's APIs use it.
#[derive(Clone)]
pub struct Cluster {
    node: Arc<Node>,
    batcher: Arc<Batcher>,
}

impl Cluster {
    /// Wraps a running node.
    pub fn new(node: Arc<Node>) -> Cluster {
        Cluster {
            node,
            batcher: Arc::new(Batcher::default()),
        }
    }

    /// The node.
    pub fn node(&self) -> &Arc<Node> {
        &self.node
    }

    /// Reads the meta state linearizably (a queue created through any node
    /// is visible).
    pub async fn meta<T>(&self, read: impl FnOnce(&MetaState) -> T) -> Result<T, ClusterFailure> {
        self.node.linearizable(META_GROUP).await?;
        self.meta_local(read)
    }

    /// Reads this node's meta replica as it is (no quorum round): for data
    /// that changes rarely and where a slightly old view is safe.
    pub fn meta_local<T>(&self, read: impl FnOnce(&MetaState) -> T) -> Result<T, ClusterFailure> {
        let sm = self
            .node
            .machine(META_GROUP)
            .ok_or_else(|| ClusterFailure::Internal("the meta group is not hosted".into()))?;
        let hosted = sm.read();
        match hosted.machine() {
            NodeMachine::Meta(meta) => Ok(read(meta.state())),
            NodeMachine::Data(_) => Err(ClusterFailure::Internal("group 0 is not meta".into())),
        }
    }

    /// Proposes a meta command and returns its reply.
    pub async fn propose_meta(&self, command: MetaCommand) -> Result<MetaReply, ClusterFailure> {
        let proposal = MetaProposal {
            request_id: new_request_id()?,
            proposed_at: Timestamp::now(),
            command,
        };
        let bytes = proposal.encode().map_err(internal)?;
        let routed = self.node.propose(META_GROUP, bytes).await?;
        MetaReply::decode(&routed.value).map_err(internal)
    }

    /// Proposes a data command to `group` (coalesced with concurrent ones
    /// into one Raft entry, see `batcher.rs`) and returns its reply.
    pub async fn propose_data(
        &self,
        group: GroupId,
        command: DataCommand,
    ) -> Result<Led<DataReply>, ClusterFailure> {
        Ok(self.propose_data_returning(group, command).await?.0)
    }

    /// `propose_data` that hands the command back with the reply, for a
    /// caller that may propose it again (see `batcher::Answer`).
    pub async fn propose_data_returning(&self, group: GroupId, command: DataCommand) -> Answer {
        let proposal = DataProposal {
            request_id: new_request_id()?,
            proposed_at: Timestamp::now(),
            command,
        };
        self.batcher.propose(&self.node, group, proposal).await
    }

    /// Reads `group`'s data state: linearizably, or for `weak`
    /// consistency from this node's replica as it is.
    pub async fn data<T>(
        &self,
        group: GroupId,
        consistency: Consistency,
        read: impl FnOnce(&DataMachine) -> T,
    ) -> Result<Led<T>, ClusterFailure> {
        let leader = match consistency {
            Consistency::Weak => None,
            Consistency::Strong | Consistency::VeryStrong => {
                Some(self.node.linearizable(group).await?)
            }
        };
        let sm = self
            .node
            .machine(group)
            .ok_or(ClusterFailure::Unavailable(RouteError::UnknownGroup(group)))?;
        let hosted = sm.read();
        match hosted.machine() {
            NodeMachine::Data(data) => Ok(Led {
                value: read(data),
                group,
                leader,
            }),
            NodeMachine::Meta(_) => Err(ClusterFailure::Internal(format!(
                "group {} is not a data group",
                group.0
            ))),
        }
    }
}

fn internal(e: impl std::fmt::Display) -> ClusterFailure {
    ClusterFailure::Internal(e.to_string())
}

/// A fresh request id: a random 64-bit prefix drawn once per process,
/// then a counter. Unique within the process by construction, and across
/// processes and nodes as a random 64-bit prefix is (a getrandom call per
/// request was ~1 % of the CPU of single-message POSTs).
pub fn new_request_id() -> Result<RequestId, ClusterFailure> {
    static PREFIX: OnceLock<u64> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let prefix = match PREFIX.get() {
        Some(prefix) => *prefix,
        None => {
            let drawn = u64::from_le_bytes(secrets::random_bytes::<8>().map_err(internal)?);
            *PREFIX.get_or_init(|| drawn)
        }
    };
    let count = COUNTER.fetch_add(1, Ordering::Relaxed);
    Ok(RequestId((u128::from(prefix) << 64) | u128::from(count)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_share_the_process_prefix_and_never_repeat() {
        let ids: Vec<u128> = (0..1_000)
            .map(|_| new_request_id().expect("id").0)
            .collect();
        let unique: std::collections::BTreeSet<u128> = ids.iter().copied().collect();
        assert_eq!(unique.len(), ids.len());
        assert!(ids.iter().all(|id| id >> 64 == ids[0] >> 64));
    }
}
