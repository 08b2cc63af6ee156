//! The consumer-group coordinator: what a data group's leader keeps in
//! memory for its groups' members, and the sweep that expires sessions.
//!
//! Membership, assignment, epochs and committed offsets are Raft state
//! (`sluice_raft::data::consumer`). Only two things live here, on the
//! leader: when each member was last heard from (heartbeats are not Raft
//! commands), and each member's position per partition (it advances as
//! polls deliver messages; a commit makes it durable). Both are dropped
//! when this node stops leading the group, and rebuilt from scratch when
//! it leads again, so a new leader gives every member a full session
//! timeout of grace and restarts delivery from the committed offsets.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sluice_engine::Offset;
use sluice_raft::data::command::DataCommand;
use sluice_raft::data::consumer::{ConsumerCommand, MemberId};
use sluice_raft::meta::command::Consistency;
use sluice_raft::node::META_GROUP;
use sluice_raft::{GroupId, PartitionId, QueueId};

use crate::cluster::Cluster;

/// How often the sweep looks for expired sessions.
pub const SWEEP_INTERVAL_MS: u64 = 250;

/// A member of a consumer group of a queue.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MemberKey {
    /// The queue.
    pub queue: QueueId,
    /// The consumer group's name.
    pub group: String,
    /// The member.
    pub member: MemberId,
}

/// What the leader of one data group keeps, for one term.
#[derive(Debug, Default)]
struct Term {
    term: u64,
    last_seen: HashMap<MemberKey, Instant>,
    positions: HashMap<MemberKey, BTreeMap<PartitionId, Offset>>,
}

/// The coordinator of every data group this node leads.
#[derive(Debug, Default)]
pub struct Coordinator {
    groups: Mutex<HashMap<GroupId, Term>>,
}

impl Coordinator {
    /// Runs `f` on the state of `group` for `term`, starting afresh when
    /// the term changed (this node lost and regained leadership).
    fn with<T>(&self, group: GroupId, term: u64, f: impl FnOnce(&mut Term) -> T) -> T {
        let mut groups = self.groups.lock().unwrap_or_else(|p| p.into_inner());
        let state = groups.entry(group).or_default();
        if state.term != term {
            *state = Term {
                term,
                ..Term::default()
            };
        }
        f(state)
    }

    /// Records that `member` was heard from now.
    pub fn touch(&self, group: GroupId, term: u64, member: &MemberKey) {
        self.with(group, term, |t| {
            t.last_seen.insert(member.clone(), Instant::now());
        });
    }

    /// Forgets a member that left or expired.
    pub fn forget(&self, group: GroupId, term: u64, member: &MemberKey) {
        self.with(group, term, |t| {
            t.last_seen.remove(member);
            t.positions.remove(member);
        });
    }

    /// The member's positions for exactly `assigned`: kept for partitions
    /// it still has, initialised with `start` for new ones, dropped for
    /// partitions it lost.
    pub fn positions(
        &self,
        group: GroupId,
        term: u64,
        member: &MemberKey,
        assigned: &[PartitionId],
        start: impl Fn(PartitionId) -> Offset,
    ) -> BTreeMap<PartitionId, Offset> {
        self.with(group, term, |t| {
            let positions = t.positions.entry(member.clone()).or_default();
            positions.retain(|p, _| assigned.contains(p));
            for p in assigned {
                positions.entry(*p).or_insert_with(|| start(*p));
            }
            positions.clone()
        })
    }

    /// Moves the member's positions forward after a delivery (never back:
    /// a concurrent poll may have gone further).
    pub fn advance(
        &self,
        group: GroupId,
        term: u64,
        member: &MemberKey,
        delivered: &BTreeMap<PartitionId, Offset>,
    ) {
        self.with(group, term, |t| {
            if let Some(positions) = t.positions.get_mut(member) {
                for (p, next) in delivered {
                    if let Some(at) = positions.get_mut(p) {
                        *at = (*at).max(*next);
                    }
                }
            }
        });
    }

    /// The members of `group` whose session ran out at `now`, given every
    /// member the Raft state lists with its session timeout. Members seen
    /// for the first time in this term start their session now (the grace
    /// a new leader gives); members no longer listed are forgotten.
    fn expired(
        &self,
        group: GroupId,
        term: u64,
        members: Vec<(MemberKey, u32)>,
        now: Instant,
    ) -> Vec<MemberKey> {
        self.with(group, term, |t| {
            let listed: std::collections::HashSet<&MemberKey> =
                members.iter().map(|(k, _)| k).collect();
            t.last_seen.retain(|k, _| listed.contains(k));
            t.positions.retain(|k, _| listed.contains(k));
            let mut out = Vec::new();
            for (key, timeout_ms) in &members {
                let seen = *t.last_seen.entry(key.clone()).or_insert(now);
                if now.saturating_duration_since(seen)
                    > Duration::from_millis(u64::from(*timeout_ms))
                {
                    out.push(key.clone());
                }
            }
            out
        })
    }

    /// Drops the state of groups this node no longer leads.
    fn retain_led(&self, led: &[GroupId]) {
        let mut groups = self.groups.lock().unwrap_or_else(|p| p.into_inner());
        groups.retain(|g, _| led.contains(g));
    }

    /// Expires the sessions that ran out in the groups this node leads:
    /// one pass. A failed proposal is retried on the next pass.
    pub async fn sweep(&self, cluster: &Cluster) {
        let node = cluster.node();
        let mut led = Vec::new();
        for group in node.groups().filter(|g| *g != META_GROUP) {
            let Some(term) = node.leading_term(group) else {
                continue;
            };
            led.push(group);
            let members = cluster
                .data(group, Consistency::Weak, |data| {
                    data.consumers()
                        .all_members()
                        .map(|(queue, name, m)| {
                            let key = MemberKey {
                                queue,
                                group: name.to_string(),
                                member: m.id,
                            };
                            (key, m.session_timeout_ms)
                        })
                        .collect::<Vec<_>>()
                })
                .await;
            let Ok(members) = members else { continue };
            for key in self.expired(group, term, members.value, Instant::now()) {
                let command = DataCommand::Consumer {
                    queue: key.queue,
                    command: ConsumerCommand::Expire {
                        group: key.group.clone(),
                        member: key.member,
                    },
                };
                match cluster.propose_data(group, command).await {
                    Ok(_) => {
                        tracing::info!(group = %key.group, member = format!("{:032x}", key.member.0), "consumer session expired");
                        self.forget(group, term, &key);
                    }
                    Err(e) => tracing::warn!(error = %e, "expiring a consumer session failed"),
                }
            }
        }
        self.retain_led(&led);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(m: u128) -> MemberKey {
        MemberKey {
            queue: QueueId(1),
            group: "g".into(),
            member: MemberId(m),
        }
    }

    #[test]
    fn sessions_start_with_grace_and_expire_after_their_timeout() {
        let c = Coordinator::default();
        let g = GroupId(1);
        let t0 = Instant::now();
        // First seen by this term's sweep: a full timeout of grace.
        assert!(c.expired(g, 5, vec![(key(1), 1_000)], t0).is_empty());
        let later = t0 + Duration::from_millis(1_001);
        assert_eq!(c.expired(g, 5, vec![(key(1), 1_000)], later), vec![key(1)]);
        // A new term starts over: grace again.
        assert!(c.expired(g, 6, vec![(key(1), 1_000)], later).is_empty());
    }

    #[test]
    fn positions_follow_the_assignment_and_only_advance() {
        let c = Coordinator::default();
        let (g, m) = (GroupId(1), key(1));
        let p = |n| PartitionId(n);
        let start = |_| Offset(10);
        let got = c.positions(g, 1, &m, &[p(0), p(1)], start);
        assert_eq!(
            got.values().copied().collect::<Vec<_>>(),
            vec![Offset(10); 2]
        );
        c.advance(g, 1, &m, &BTreeMap::from([(p(0), Offset(15))]));
        c.advance(g, 1, &m, &BTreeMap::from([(p(0), Offset(12))]));
        let got = c.positions(g, 1, &m, &[p(0)], start);
        assert_eq!(got, BTreeMap::from([(p(0), Offset(15))]));
        // Partition 1 was lost and comes back: it starts over.
        let got = c.positions(g, 1, &m, &[p(0), p(1)], |_| Offset(3));
        assert_eq!(got[&p(1)], Offset(3));
    }
}
