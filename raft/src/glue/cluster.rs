//! Forming a group's cluster, changing its membership, and reading
//! linearizably: the functions the server's admin API wraps. Errors are
//! `ClusterError`, so callers branch on meaning (`NotLeader` carries the
//! leader to forward to), never on openraft's types or on strings.
//!
//! Follower reads (`weak` consistency) need nothing here: a follower reads
//! its own state machine.

use std::collections::{BTreeMap, BTreeSet};

use openraft::async_runtime::watch::WatchReceiver;
use openraft::error::{ClientWriteError, InitializeError, LinearizableReadError, RaftError};
use openraft::impls::BasicNode;
use openraft::storage::RaftStateMachine;
use openraft::{ChangeMembers, Raft, ReadPolicy};

use crate::glue::TypeConfig;

type C = TypeConfig;

/// Why a cluster operation did not happen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub enum ClusterError {
    /// Only the leader can do this; `leader_hint` is the leader if known.
    #[error("not the leader (leader: {leader_hint:?})")]
    NotLeader {
        /// The current leader's node id, if this node knows it.
        leader_hint: Option<u64>,
    },
    /// A quorum could not be reached.
    #[error("no quorum: {0}")]
    NoQuorum(String),
    /// The request is not allowed now (another membership change is in
    /// progress, the node is not in the members, ...).
    #[error("refused: {0}")]
    Refused(String),
    /// The group's Raft has stopped.
    #[error("raft stopped: {0}")]
    Stopped(String),
}

fn write_error(e: RaftError<C, ClientWriteError<C>>) -> ClusterError {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => ClusterError::NotLeader {
            leader_hint: f.leader_id,
        },
        RaftError::APIError(other) => ClusterError::Refused(other.to_string()),
        RaftError::Fatal(f) => ClusterError::Stopped(f.to_string()),
    }
}

/// Forms a new cluster from a static member list: the member with the
/// lowest id initializes it, once, and only if its log is empty. Returns
/// whether this call initialized the cluster. Safe to call on every start.
pub async fn form_cluster<SM: RaftStateMachine<C>>(
    raft: &Raft<C, SM>,
    me: u64,
    members: BTreeMap<u64, BasicNode>,
) -> Result<bool, ClusterError> {
    if members.keys().next() != Some(&me) {
        return Ok(false);
    }
    let initialized = raft
        .is_initialized()
        .await
        .map_err(|e| ClusterError::Stopped(e.to_string()))?;
    if initialized {
        return Ok(false);
    }
    match raft.initialize(members).await {
        Ok(()) => Ok(true),
        // Another start raced us, or the log is not empty: already formed.
        Err(RaftError::APIError(InitializeError::NotAllowed(_))) => Ok(false),
        Err(RaftError::APIError(e)) => Err(ClusterError::Refused(e.to_string())),
        Err(RaftError::Fatal(f)) => Err(ClusterError::Stopped(f.to_string())),
    }
}

/// Adds a non-voting member and waits until it has caught up.
pub async fn add_learner<SM: RaftStateMachine<C>>(
    raft: &Raft<C, SM>,
    id: u64,
    addr: &str,
) -> Result<(), ClusterError> {
    raft.add_learner(id, BasicNode::new(addr), true)
        .await
        .map(|_| ())
        .map_err(write_error)
}

/// Makes learners voters (a joint-consensus change, committed when this
/// returns).
pub async fn promote<SM: RaftStateMachine<C>>(
    raft: &Raft<C, SM>,
    ids: BTreeSet<u64>,
) -> Result<(), ClusterError> {
    raft.change_membership(ChangeMembers::AddVoterIds(ids), false)
        .await
        .map(|_| ())
        .map_err(write_error)
}

/// Removes voters from the group (they are not kept as learners).
pub async fn remove<SM: RaftStateMachine<C>>(
    raft: &Raft<C, SM>,
    ids: BTreeSet<u64>,
) -> Result<(), ClusterError> {
    raft.change_membership(ChangeMembers::RemoveVoters(ids), false)
        .await
        .map(|_| ())
        .map_err(write_error)
}

/// Proposes an encoded command and waits until it is committed and
/// applied; returns the state machine's encoded reply.
pub async fn propose<SM: RaftStateMachine<C>>(
    raft: &Raft<C, SM>,
    command: bytes::Bytes,
) -> Result<Vec<u8>, ClusterError> {
    raft.client_write(crate::glue::Command(command))
        .await
        .map(|written| written.data.0)
        .map_err(write_error)
}

/// Hands this group's leadership to `to` (best effort: an election
/// follows; the caller observes the result in the metrics).
pub async fn transfer_leader<SM: RaftStateMachine<C>>(
    raft: &Raft<C, SM>,
    to: u64,
) -> Result<(), ClusterError> {
    raft.trigger()
        .transfer_leader(to)
        .await
        .map_err(|f| ClusterError::Stopped(f.to_string()))
}

/// Confirms with a quorum (read index) that this node is the leader and
/// waits until its state machine has applied everything committed before
/// the call: a read of local state after this returns is linearizable.
pub async fn linearizable_read<SM: RaftStateMachine<C>>(
    raft: &Raft<C, SM>,
) -> Result<(), ClusterError> {
    raft.ensure_linearizable(ReadPolicy::ReadIndex)
        .await
        .map(|_| ())
        .map_err(read_error)
}

/// Confirms with a quorum that this node leads the group and returns the
/// read index: a replica whose state machine has applied this index can
/// serve a linearizable read (a follower gets it from the leader over RPC).
pub async fn read_index<SM: RaftStateMachine<C>>(raft: &Raft<C, SM>) -> Result<u64, ClusterError> {
    match raft.get_read_linearizer(ReadPolicy::ReadIndex).await {
        Ok(linearizer) => Ok(linearizer.read_log_id().index()),
        Err(e) => Err(read_error(e)),
    }
}

fn read_error(e: RaftError<C, LinearizableReadError<C>>) -> ClusterError {
    match e {
        RaftError::APIError(LinearizableReadError::ForwardToLeader(f)) => ClusterError::NotLeader {
            leader_hint: f.leader_id,
        },
        RaftError::APIError(LinearizableReadError::QuorumNotEnough(q)) => {
            ClusterError::NoQuorum(q.to_string())
        }
        RaftError::Fatal(f) => ClusterError::Stopped(f.to_string()),
    }
}

/// A membership change, as the admin API asks for it and as it travels to
/// a group's leader.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum MembershipChange {
    /// Add a non-voting member at `addr` and wait until it has caught up.
    AddLearner {
        /// Its node id.
        id: u64,
        /// Its RPC address.
        addr: String,
    },
    /// Make learners voters.
    Promote {
        /// The learners.
        ids: BTreeSet<u64>,
    },
    /// Remove voters.
    Remove {
        /// The voters.
        ids: BTreeSet<u64>,
    },
}

/// Applies a membership change on the group's leader. Adding a member
/// that is already there, or removing one that is not, succeeds.
pub async fn change<SM: RaftStateMachine<C>>(
    raft: &Raft<C, SM>,
    change: MembershipChange,
) -> Result<(), ClusterError> {
    let membership = raft
        .metrics()
        .borrow_watched()
        .membership_config
        .membership()
        .clone();
    match change {
        MembershipChange::AddLearner { id, addr } => {
            if membership.get_node(&id).is_some() {
                return Ok(());
            }
            add_learner(raft, id, &addr).await
        }
        MembershipChange::Promote { ids } => {
            let voters: BTreeSet<u64> = membership.voter_ids().collect();
            let ids: BTreeSet<u64> = ids.difference(&voters).copied().collect();
            if ids.is_empty() {
                return Ok(());
            }
            promote(raft, ids).await
        }
        MembershipChange::Remove { ids } => {
            let ids: BTreeSet<u64> = ids
                .into_iter()
                .filter(|id| membership.get_node(id).is_some())
                .collect();
            if ids.is_empty() {
                return Ok(());
            }
            remove(raft, ids).await
        }
    }
}
