//! Consumer groups of a data group (`spec/native-v2.md`, "Consumer
//! groups"): membership, assignment, member epochs and committed offsets,
//! changed only by Raft commands so every replica agrees.
//!
//! Assignment is incremental and cooperative (KIP-848 style). Each member
//! has a *target* (a balanced share, sticky: a member keeps what it has up
//! to its share) and an *owned* set. A partition leaves a member's owned
//! set only when the member acknowledges an epoch that no longer lists it,
//! or leaves, or its session expires; it joins another member's owned set
//! only when nobody owns it. So no partition is ever owned by two members,
//! and a member sees a revocation (its epoch's assignment shrinks) before
//! anyone else is given the partition.
//!
//! Heartbeats stay in the leader's memory; the leader proposes `Ack` when a
//! heartbeat confirms an epoch that revoked something, and `Expire` when a
//! session times out.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use sluice_engine::Offset;

use crate::ids::{PartitionId, QueueId};

/// Longest consumer-group name, in bytes.
pub const GROUP_NAME_BYTES_MAX: usize = 200;
/// Most members in one consumer group.
pub const MEMBERS_MAX: usize = 1_000;
/// Most consumer groups on one queue.
pub const GROUPS_PER_QUEUE_MAX: usize = 1_000;
/// Shortest session timeout a member may ask for.
pub const SESSION_TIMEOUT_MS_MIN: u32 = 1_000;
/// Longest session timeout a member may ask for.
pub const SESSION_TIMEOUT_MS_MAX: u32 = 300_000;

/// A member of a consumer group (chosen by the leader at join, from the
/// request id, so a retried join gets the same member).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
pub struct MemberId(pub u128);

/// Where a partition with no committed offset starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum StartPolicy {
    /// At the log's start.
    #[default]
    Earliest,
    /// At the log's end when the partition was assigned.
    Latest,
}

/// A consumer-group change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConsumerCommand {
    /// A member joins (creating the group if needed).
    Join {
        /// The group's name.
        group: String,
        /// The new member.
        member: MemberId,
        /// Its session timeout (bounded at the edge and here).
        session_timeout_ms: u32,
        /// The group's start policy (fixed by the first member).
        start: StartPolicy,
    },
    /// A member confirmed `epoch` (a heartbeat after a revocation).
    Ack {
        /// The group's name.
        group: String,
        /// The member.
        member: MemberId,
        /// The epoch it has seen.
        epoch: u64,
    },
    /// A member leaves.
    Leave {
        /// The group's name.
        group: String,
        /// The member.
        member: MemberId,
    },
    /// The leader saw a member's session expire.
    Expire {
        /// The group's name.
        group: String,
        /// The member.
        member: MemberId,
    },
    /// Commits offsets for partitions the member owns.
    Commit {
        /// The group's name.
        group: String,
        /// The member.
        member: MemberId,
        /// The epoch the member holds.
        epoch: u64,
        /// Next offset to consume, per partition.
        offsets: Vec<(PartitionId, Offset)>,
    },
}

/// A member's view after a change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConsumerReply {
    /// The member's epoch and the partitions it may consume.
    Assignment {
        /// The member.
        member: MemberId,
        /// Its epoch.
        epoch: u64,
        /// Partitions it may consume at this epoch.
        partitions: Vec<PartitionId>,
    },
    /// Done (leave, expire, commit).
    Done,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Member {
    epoch: u64,
    session_timeout_ms: u32,
    owned: BTreeSet<PartitionId>,
    target: BTreeSet<PartitionId>,
}

impl Member {
    /// What the member may consume: owned and still targeted.
    fn assignment(&self) -> Vec<PartitionId> {
        self.owned.intersection(&self.target).copied().collect()
    }

    fn view(&self, id: MemberId) -> MemberView {
        MemberView {
            id,
            epoch: self.epoch,
            partitions: self.assignment(),
            session_timeout_ms: self.session_timeout_ms,
            revoking: !self.owned.is_subset(&self.target),
        }
    }
}

/// One consumer group on one queue.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Group {
    members: BTreeMap<MemberId, Member>,
    committed: BTreeMap<PartitionId, Offset>,
    start: StartPolicy,
}

/// One member as operators and the coordinator see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberView {
    /// The member.
    pub id: MemberId,
    /// Its epoch.
    pub epoch: u64,
    /// Partitions it may consume at this epoch.
    pub partitions: Vec<PartitionId>,
    /// Its session timeout.
    pub session_timeout_ms: u32,
    /// Whether it still owns partitions its epoch revoked: it must
    /// acknowledge the epoch before they move.
    pub revoking: bool,
}

/// A group's state as operators and the poll path see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupView {
    /// Members, by id.
    pub members: Vec<MemberView>,
    /// Committed next offsets.
    pub committed: BTreeMap<PartitionId, Offset>,
    /// The start policy.
    pub start: StartPolicy,
}

/// Every consumer group of a data group.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsumerGroups {
    groups: BTreeMap<(QueueId, String), Group>,
}

impl ConsumerGroups {
    /// Applies a change for a queue of `partitions` partitions.
    pub fn apply(
        &mut self,
        queue: QueueId,
        partitions: u32,
        command: ConsumerCommand,
    ) -> Result<ConsumerReply, String> {
        match command {
            ConsumerCommand::Join {
                group,
                member,
                session_timeout_ms,
                start,
            } => {
                if group.is_empty() || group.len() > GROUP_NAME_BYTES_MAX {
                    return Err(format!("group names are 1..={GROUP_NAME_BYTES_MAX} bytes"));
                }
                let key = (queue, group);
                if !self.groups.contains_key(&key)
                    && self
                        .groups
                        .range((queue, String::new())..)
                        .take_while(|((q, _), _)| *q == queue)
                        .count()
                        >= GROUPS_PER_QUEUE_MAX
                {
                    return Err(format!(
                        "a queue has at most {GROUPS_PER_QUEUE_MAX} consumer groups"
                    ));
                }
                let g = self.groups.entry(key).or_insert_with(|| Group {
                    start,
                    ..Group::default()
                });
                if !g.members.contains_key(&member) {
                    if g.members.len() >= MEMBERS_MAX {
                        return Err(format!("a group has at most {MEMBERS_MAX} members"));
                    }
                    g.members.insert(
                        member,
                        Member {
                            epoch: 0,
                            session_timeout_ms: session_timeout_ms
                                .clamp(SESSION_TIMEOUT_MS_MIN, SESSION_TIMEOUT_MS_MAX),
                            owned: BTreeSet::new(),
                            target: BTreeSet::new(),
                        },
                    );
                    g.rebalance(partitions);
                }
                g.view_of(member)
            }
            ConsumerCommand::Ack {
                group,
                member,
                epoch,
            } => {
                let g = self.group_mut(queue, &group)?;
                let m = g.members.get_mut(&member).ok_or_else(|| unknown(member))?;
                if epoch == m.epoch {
                    // The member has stopped consuming what it lost.
                    m.owned = m.owned.intersection(&m.target).copied().collect();
                    g.rebalance(partitions);
                }
                g.view_of(member)
            }
            ConsumerCommand::Leave { group, member }
            | ConsumerCommand::Expire { group, member } => {
                let g = self.group_mut(queue, &group)?;
                if g.members.remove(&member).is_some() {
                    g.rebalance(partitions);
                }
                Ok(ConsumerReply::Done)
            }
            ConsumerCommand::Commit {
                group,
                member,
                epoch,
                offsets,
            } => {
                let g = self.group_mut(queue, &group)?;
                let m = g.members.get(&member).ok_or_else(|| unknown(member))?;
                if epoch != m.epoch {
                    return Err(format!(
                        "member epoch {epoch} is stale: the current epoch is {}",
                        m.epoch
                    ));
                }
                if let Some((p, _)) = offsets.iter().find(|(p, _)| !m.owned.contains(p)) {
                    return Err(format!("partition {} is not assigned to this member", p.0));
                }
                for (p, offset) in offsets {
                    g.committed.insert(p, offset);
                }
                Ok(ConsumerReply::Done)
            }
        }
    }

    /// Rebalances every group of `queue` (its partition count changed).
    pub fn partitions_changed(&mut self, queue: QueueId, partitions: u32) {
        for ((q, _), g) in self.groups.iter_mut() {
            if *q == queue {
                g.rebalance(partitions);
            }
        }
    }

    /// Forgets every group of a dropped queue.
    pub fn drop_queue(&mut self, queue: QueueId) {
        self.groups.retain(|(q, _), _| *q != queue);
    }

    /// A group's state, if it exists.
    pub fn view(&self, queue: QueueId, group: &str) -> Option<GroupView> {
        let g = self.groups.get(&(queue, group.to_string()))?;
        Some(GroupView {
            members: g.members.iter().map(|(id, m)| m.view(*id)).collect(),
            committed: g.committed.clone(),
            start: g.start,
        })
    }

    /// Every member of every group: (queue, group name, member), for the
    /// leader's session bookkeeping.
    pub fn all_members(&self) -> impl Iterator<Item = (QueueId, &str, MemberView)> + '_ {
        self.groups.iter().flat_map(|((q, name), g)| {
            g.members
                .iter()
                .map(move |(id, m)| (*q, name.as_str(), m.view(*id)))
        })
    }

    /// Names of the groups on `queue`.
    pub fn names(&self, queue: QueueId) -> Vec<String> {
        self.groups
            .keys()
            .filter(|(q, _)| *q == queue)
            .map(|(_, name)| name.clone())
            .collect()
    }

    fn group_mut(&mut self, queue: QueueId, group: &str) -> Result<&mut Group, String> {
        self.groups
            .get_mut(&(queue, group.to_string()))
            .ok_or_else(|| format!("no consumer group {group:?}"))
    }
}

fn unknown(member: MemberId) -> String {
    format!(
        "member {:032x} is not in the group (left or expired)",
        member.0
    )
}

impl Group {
    fn view_of(&self, member: MemberId) -> Result<ConsumerReply, String> {
        let m = self.members.get(&member).ok_or_else(|| unknown(member))?;
        Ok(ConsumerReply::Assignment {
            member,
            epoch: m.epoch,
            partitions: m.assignment(),
        })
    }

    /// Recomputes targets (balanced, sticky), drops owned partitions that
    /// no longer exist, hands out partitions nobody owns, and bumps the
    /// epoch of every member whose assignment changed.
    fn rebalance(&mut self, partitions: u32) {
        let count = self.members.len();
        let before: BTreeMap<MemberId, Vec<PartitionId>> = self
            .members
            .iter()
            .map(|(id, m)| (*id, m.assignment()))
            .collect();
        let all: Vec<PartitionId> = (0..partitions).map(PartitionId).collect();
        for m in self.members.values_mut() {
            m.owned.retain(|p| p.0 < partitions);
            m.target.clear();
        }
        if let (Some(base), Some(extra)) =
            (all.len().checked_div(count), all.len().checked_rem(count))
        {
            // Shares: the first `extra` members (by id) get one more.
            let quota: BTreeMap<MemberId, usize> = self
                .members
                .keys()
                .enumerate()
                .map(|(i, id)| (*id, base + usize::from(i < extra)))
                .collect();
            let mut taken: BTreeSet<PartitionId> = BTreeSet::new();
            // Sticky: each member keeps what it owns, up to its share.
            for (id, m) in self.members.iter_mut() {
                let keep: Vec<PartitionId> = m.owned.iter().copied().take(quota[id]).collect();
                taken.extend(keep.iter().copied());
                m.target.extend(keep);
            }
            // The rest, in partition order, to members under their share.
            let mut free = all.iter().copied().filter(|p| !taken.contains(p));
            for (id, m) in self.members.iter_mut() {
                while m.target.len() < quota[id] {
                    match free.next() {
                        Some(p) => {
                            m.target.insert(p);
                        }
                        None => break,
                    }
                }
            }
        }
        // A targeted partition is owned once nobody else owns it.
        let owned_by_any: BTreeSet<PartitionId> = self
            .members
            .values()
            .flat_map(|m| m.owned.iter().copied())
            .collect();
        for m in self.members.values_mut() {
            let grant: Vec<PartitionId> = m
                .target
                .iter()
                .copied()
                .filter(|p| !owned_by_any.contains(p))
                .collect();
            m.owned.extend(grant);
        }
        for (id, m) in self.members.iter_mut() {
            if before.get(id) != Some(&m.assignment()) || m.epoch == 0 {
                m.epoch += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const Q: QueueId = QueueId(7);

    fn join(groups: &mut ConsumerGroups, member: u128, partitions: u32) -> (u64, Vec<u32>) {
        let reply = groups
            .apply(
                Q,
                partitions,
                ConsumerCommand::Join {
                    group: "g".into(),
                    member: MemberId(member),
                    session_timeout_ms: 10_000,
                    start: StartPolicy::Earliest,
                },
            )
            .expect("join");
        assignment(reply)
    }

    fn ack(
        groups: &mut ConsumerGroups,
        member: u128,
        epoch: u64,
        partitions: u32,
    ) -> (u64, Vec<u32>) {
        let reply = groups
            .apply(
                Q,
                partitions,
                ConsumerCommand::Ack {
                    group: "g".into(),
                    member: MemberId(member),
                    epoch,
                },
            )
            .expect("ack");
        assignment(reply)
    }

    fn assignment(reply: ConsumerReply) -> (u64, Vec<u32>) {
        match reply {
            ConsumerReply::Assignment {
                epoch, partitions, ..
            } => (epoch, partitions.into_iter().map(|p| p.0).collect()),
            other => panic!("not an assignment: {other:?}"),
        }
    }

    fn owners_are_exclusive(groups: &ConsumerGroups) {
        for g in groups.groups.values() {
            let mut seen = BTreeSet::new();
            for m in g.members.values() {
                for p in &m.owned {
                    assert!(seen.insert(*p), "partition {p:?} owned twice");
                }
            }
        }
    }

    #[test]
    fn a_partition_moves_only_after_its_owner_acknowledges_the_revocation() {
        let mut groups = ConsumerGroups::default();
        assert_eq!(join(&mut groups, 1, 4), (1, vec![0, 1, 2, 3]));
        // Member 2 joins: its share is targeted but still owned by 1.
        assert_eq!(join(&mut groups, 2, 4), (1, vec![]));
        owners_are_exclusive(&groups);
        // Member 1's view shrinks at once (a new epoch) ...
        let view = groups.view(Q, "g").expect("group");
        assert_eq!(view.members[0].epoch, 2);
        assert_eq!(
            view.members[0].partitions,
            vec![PartitionId(0), PartitionId(1)]
        );
        assert!(view.members[0].revoking);
        // ... an ack of the old epoch changes nothing ...
        ack(&mut groups, 1, 1, 4);
        assert_eq!(ack(&mut groups, 2, 1, 4), (1, vec![]));
        // ... and once 1 acknowledges epoch 2, member 2 gets 2 and 3.
        assert_eq!(ack(&mut groups, 1, 2, 4), (2, vec![0, 1]));
        assert_eq!(ack(&mut groups, 2, 1, 4), (2, vec![2, 3]));
        owners_are_exclusive(&groups);
    }

    #[test]
    fn leaving_hands_partitions_over_at_once_and_members_keep_what_they_have() {
        let mut groups = ConsumerGroups::default();
        join(&mut groups, 1, 3);
        join(&mut groups, 2, 3);
        ack(&mut groups, 1, 2, 3);
        let (_, two) = ack(&mut groups, 2, 1, 3);
        assert_eq!(two, vec![2]);
        join(&mut groups, 3, 3);
        let (e1, one) = ack(&mut groups, 1, 3, 3);
        assert_eq!(one, vec![0], "member 1 gave up 1 for member 3");
        assert_eq!(ack(&mut groups, 3, 1, 3).1, vec![1]);
        groups
            .apply(
                Q,
                3,
                ConsumerCommand::Leave {
                    group: "g".into(),
                    member: MemberId(2),
                },
            )
            .expect("leave");
        let view = groups.view(Q, "g").expect("group");
        let assigned: Vec<Vec<PartitionId>> =
            view.members.iter().map(|m| m.partitions.clone()).collect();
        assert_eq!(
            assigned,
            vec![vec![PartitionId(0), PartitionId(2)], vec![PartitionId(1)]],
            "partition 2 went straight to member 1, and nobody else moved"
        );
        assert!(view.members[0].epoch > e1);
        owners_are_exclusive(&groups);
    }

    #[test]
    fn commits_are_fenced_by_epoch_and_ownership() {
        let mut groups = ConsumerGroups::default();
        join(&mut groups, 1, 2);
        let commit = |groups: &mut ConsumerGroups, epoch, p| {
            groups.apply(
                Q,
                2,
                ConsumerCommand::Commit {
                    group: "g".into(),
                    member: MemberId(1),
                    epoch,
                    offsets: vec![(PartitionId(p), Offset(10))],
                },
            )
        };
        assert_eq!(commit(&mut groups, 1, 1), Ok(ConsumerReply::Done));
        assert!(commit(&mut groups, 0, 1).is_err(), "stale epoch");
        join(&mut groups, 2, 2);
        ack(&mut groups, 1, 2, 2);
        assert!(commit(&mut groups, 2, 1).is_err(), "partition 1 moved away");
        assert_eq!(
            groups.view(Q, "g").expect("group").committed[&PartitionId(1)],
            Offset(10)
        );
    }

    #[test]
    fn growing_partitions_and_bounds() {
        let mut groups = ConsumerGroups::default();
        join(&mut groups, 1, 1);
        groups.partitions_changed(Q, 3);
        let view = groups.view(Q, "g").expect("group");
        assert_eq!(view.members[0].partitions.len(), 3);
        let long = groups.apply(
            Q,
            3,
            ConsumerCommand::Join {
                group: "x".repeat(GROUP_NAME_BYTES_MAX + 1),
                member: MemberId(9),
                session_timeout_ms: 0,
                start: StartPolicy::Latest,
            },
        );
        assert!(long.is_err());
        groups.drop_queue(Q);
        assert!(groups.view(Q, "g").is_none());
    }
}
