//! Any node serves any request: proposals and linearizable reads go
//! through the group's leader, wherever it is.
//!
//! A node that leads the group proposes locally; any other forwards the
//! encoded command to the leader (`POST /raft/{group}/propose`). A read
//! asks the leader for a read index (`/read_index`) and waits until this
//! node's state machine has applied it, then reads locally. Through an
//! election (no leader yet, or a leader that just died) both retry until
//! the routing deadline. A retried proposal is safe: it carries the same
//! request id, which the state machines answer from their window of
//! recently applied ids instead of applying twice.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use openraft::ServerState;
use openraft::async_runtime::watch::WatchReceiver;

use crate::glue::cluster::{self, ClusterError, MembershipChange};
use crate::ids::GroupId;
use crate::node::watch::applied_at_least;
use crate::node::{GroupRaft, Node};

/// Pause between attempts while a group has no reachable leader.
const RETRY_PAUSE_MS: u64 = 50;
/// Longest a membership change may take (a learner copies the group).
pub const MEMBERSHIP_TIMEOUT_MS: u64 = 120_000;

/// A routed call's answer and the node that led the group when it ran.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Routed<T> {
    /// The answer.
    pub value: T,
    /// The leader that answered.
    pub leader: u64,
}

/// Why a routed call did not happen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// This node does not host the group.
    #[error("group {} is not hosted on this node", .0.0)]
    UnknownGroup(GroupId),
    /// No leader answered before the routing deadline.
    #[error("group {} has no reachable leader after {waited_ms} ms (last: {last})", .group.0)]
    NoLeader {
        /// The group.
        group: GroupId,
        /// How long the call waited.
        waited_ms: u64,
        /// The last failure seen.
        last: String,
    },
    /// The group refused the operation (not a leadership problem).
    #[error("group {}: {reason}", .group.0)]
    Refused {
        /// The group.
        group: GroupId,
        /// Why.
        reason: String,
    },
    /// The group's Raft has stopped on this node.
    #[error("group {} stopped on this node: {reason}", .group.0)]
    Stopped {
        /// The group.
        group: GroupId,
        /// Why.
        reason: String,
    },
}

/// One attempt's outcome: an answer, or a reason to try again.
enum Attempt<T> {
    Done(T),
    Retry(String),
}

impl Node {
    /// Proposes an encoded command to `group` through its leader and
    /// returns the state machine's encoded reply once it is committed and
    /// applied.
    pub async fn propose(
        &self,
        group: GroupId,
        command: Vec<u8>,
    ) -> Result<Routed<Vec<u8>>, RouteError> {
        let raft = self.raft(group).ok_or(RouteError::UnknownGroup(group))?;
        // Shared by every attempt: a retry or a forward copies no bytes.
        let command = bytes::Bytes::from(command);
        self.route(
            group,
            raft,
            self.route_timeout(),
            |leader, addr, remaining| {
                let command = command.clone();
                async move {
                    let outcome = match addr {
                        None => {
                            let local = cluster::propose(raft, command);
                            match tokio::time::timeout(remaining, local).await {
                                Ok(result) => result,
                                Err(_) => return Ok(Attempt::Retry("commit timed out".into())),
                            }
                        }
                        Some(addr) => {
                            match self.leaders.propose(&addr, group, command, remaining).await {
                                Ok(result) => result,
                                Err(failed) => return Ok(Attempt::Retry(failed.to_string())),
                            }
                        }
                    };
                    settle(group, leader, outcome)
                }
            },
        )
        .await
    }

    /// Waits until a read of `group`'s local state machine is
    /// linearizable: the leader confirmed its leadership with a quorum and
    /// this node has applied everything committed before the call.
    /// Returns the leader.
    pub async fn linearizable(&self, group: GroupId) -> Result<u64, RouteError> {
        let raft = self.raft(group).ok_or(RouteError::UnknownGroup(group))?;
        if sole_voter_caught_up(raft, self.id()) {
            return Ok(self.id());
        }
        let rounds = self
            .reads
            .get(&group)
            .ok_or(RouteError::UnknownGroup(group))?;
        // Boxed: a round's future (routing, timeouts, the RPC to a remote
        // leader) is kilobytes, and unboxed it would be part of every
        // caller's future, which each request moves into the heap,
        // though a sole voter never takes this branch.
        Box::pin(rounds.read(|| self.linearizable_round(group))).await
    }

    /// One read-index round of `linearizable`, shared by every read that
    /// arrived before it began (see `read_rounds.rs`).
    async fn linearizable_round(&self, group: GroupId) -> Result<u64, RouteError> {
        let raft = self.raft(group).ok_or(RouteError::UnknownGroup(group))?;
        let routed = self
            .route(
                group,
                raft,
                self.route_timeout(),
                |leader, addr, remaining| async move {
                    let index = match addr {
                        None => {
                            match tokio::time::timeout(remaining, cluster::read_index(raft)).await {
                                Ok(result) => result,
                                Err(_) => return Ok(Attempt::Retry("read index timed out".into())),
                            }
                        }
                        Some(addr) => {
                            match self.leaders.read_index(&addr, group, remaining).await {
                                Ok(result) => result,
                                Err(failed) => return Ok(Attempt::Retry(failed.to_string())),
                            }
                        }
                    };
                    let index = match settle(group, leader, index)? {
                        Attempt::Done(Routed { value, .. }) => value,
                        Attempt::Retry(why) => return Ok(Attempt::Retry(why)),
                    };
                    if applied_at_least(raft, index, remaining).await {
                        Ok(Attempt::Done(Routed { value: (), leader }))
                    } else {
                        Ok(Attempt::Retry(format!("applying to {index} timed out")))
                    }
                },
            )
            .await?;
        Ok(routed.leader)
    }

    /// Makes a membership change in `group` through its leader. Adding a
    /// learner waits until it has caught up, so it may take as long as
    /// copying the group's data: up to `MEMBERSHIP_TIMEOUT_MS`.
    pub async fn change_membership(
        &self,
        group: GroupId,
        change: MembershipChange,
    ) -> Result<u64, RouteError> {
        let raft = self.raft(group).ok_or(RouteError::UnknownGroup(group))?;
        let timeout = Duration::from_millis(MEMBERSHIP_TIMEOUT_MS);
        let routed = self
            .route(group, raft, timeout, |leader, addr, remaining| {
                let change = change.clone();
                async move {
                    let outcome = match addr {
                        None => {
                            match tokio::time::timeout(remaining, cluster::change(raft, change))
                                .await
                            {
                                Ok(result) => result,
                                Err(_) => return Ok(Attempt::Retry("change timed out".into())),
                            }
                        }
                        Some(addr) => {
                            match self
                                .leaders
                                .membership(&addr, group, &change, remaining)
                                .await
                            {
                                Ok(result) => result,
                                Err(failed) => return Ok(Attempt::Retry(failed.to_string())),
                            }
                        }
                    };
                    settle(group, leader, outcome)
                }
            })
            .await?;
        Ok(routed.leader)
    }

    /// Adds node `id` (RPC address `addr`) to every group: first as a
    /// learner everywhere (each catches up), then as a voter everywhere.
    /// Safe to repeat.
    pub async fn add_node(&self, id: u64, addr: &str) -> Result<(), RouteError> {
        let groups: Vec<GroupId> = self.groups().collect();
        for g in &groups {
            let change = MembershipChange::AddLearner {
                id,
                addr: addr.to_string(),
            };
            self.change_membership(*g, change).await?;
        }
        for g in &groups {
            let ids = BTreeSet::from([id]);
            self.change_membership(*g, MembershipChange::Promote { ids })
                .await?;
        }
        Ok(())
    }

    /// Removes node `id` from every group. Safe to repeat.
    pub async fn remove_node(&self, id: u64) -> Result<(), RouteError> {
        let groups: Vec<GroupId> = self.groups().collect();
        for g in groups {
            let ids = BTreeSet::from([id]);
            self.change_membership(g, MembershipChange::Remove { ids })
                .await?;
        }
        Ok(())
    }

    fn route_timeout(&self) -> Duration {
        Duration::from_millis(self.config.route_timeout_ms)
    }

    /// The group's leader as this node knows it, with its address when it
    /// is another node.
    pub fn leader(&self, group: GroupId) -> Option<(u64, Option<String>)> {
        let raft = self.raft(group)?;
        leader_of(raft, self.id())
    }

    /// Calls `attempt` with the current leader (and its address when it is
    /// not this node) until it answers or the routing deadline passes.
    async fn route<'a, T, F, Fut>(
        &'a self,
        group: GroupId,
        raft: &'a GroupRaft,
        timeout: Duration,
        attempt: F,
    ) -> Result<Routed<T>, RouteError>
    where
        F: Fn(u64, Option<String>, Duration) -> Fut,
        Fut: std::future::Future<Output = Result<Attempt<Routed<T>>, RouteError>>,
    {
        let started = Instant::now();
        let deadline = started + timeout;
        let mut last = String::from("no leader elected yet");
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(RouteError::NoLeader {
                    group,
                    waited_ms: started.elapsed().as_millis() as u64,
                    last,
                });
            }
            if let Some((leader, addr)) = leader_of(raft, self.id()) {
                match attempt(leader, addr, remaining).await? {
                    Attempt::Done(answer) => return Ok(answer),
                    Attempt::Retry(why) => last = why,
                }
            }
            let pause = Duration::from_millis(RETRY_PAUSE_MS)
                .min(deadline.saturating_duration_since(Instant::now()));
            tokio::time::sleep(pause).await;
        }
    }
}

/// Sorts a leader's answer: leadership problems are retried, anything else
/// ends the call.
fn settle<T>(
    group: GroupId,
    leader: u64,
    outcome: Result<T, ClusterError>,
) -> Result<Attempt<Routed<T>>, RouteError> {
    match outcome {
        Ok(value) => Ok(Attempt::Done(Routed { value, leader })),
        Err(e @ (ClusterError::NotLeader { .. } | ClusterError::NoQuorum(_))) => {
            Ok(Attempt::Retry(e.to_string()))
        }
        Err(ClusterError::Refused(reason)) => Err(RouteError::Refused { group, reason }),
        Err(ClusterError::Stopped(reason)) => Err(RouteError::Stopped { group, reason }),
    }
}

/// Whether this replica's state, as it stands, answers a linearizable
/// read with no read index: `me` leads, is the group's only voter (no
/// other node can have accepted a write), and has applied an entry of its
/// own term, so everything committed before its term is applied too. Every
/// write is acknowledged only after it applied here, so any write that
/// finished before the read began is in the state.
fn sole_voter_caught_up(raft: &GroupRaft, me: u64) -> bool {
    let receiver = raft.metrics();
    let m = receiver.borrow_watched();
    m.state == ServerState::Leader
        && m.current_leader == Some(me)
        && m.last_applied
            .is_some_and(|applied| applied.leader_id.term == m.current_term)
        && m.membership_config
            .membership()
            .get_joint_config()
            .iter()
            .all(|voters| voters.len() == 1 && voters.contains(&me))
}

/// The leader in `raft`'s metrics, with its address unless it is `me`.
fn leader_of(raft: &GroupRaft, me: u64) -> Option<(u64, Option<String>)> {
    // Borrowed, not cloned: this runs on every request.
    let receiver = raft.metrics();
    let metrics = receiver.borrow_watched();
    let leader = metrics.current_leader?;
    if leader == me {
        return Some((leader, None));
    }
    let addr = metrics
        .membership_config
        .membership()
        .get_node(&leader)
        .map(|n| n.addr.clone())?;
    Some((leader, Some(addr)))
}
