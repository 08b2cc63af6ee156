//! Finding damaged partition data on this node and repairing it from
//! peers (the fences that hold meanwhile are in `data::fence`).
//!
//! - **Finding**: a read that fails a check reports it
//!   (`report_damage`), and the scrubber (`scrub_next`) verifies one
//!   sealed segment per step, in order, at the pace its caller sets. The
//!   scrubber matters most: reads trust bytes this process appended, so
//!   damage under a running node shows only to it or after a restart.
//! - **Repairing** (`repair_pass`): for each damaged segment, ask the
//!   group's other voters (the leader first) for their verified batches of
//!   exactly its offsets (the `batches` RPC), and swap them in
//!   (`Log::replace_sealed_segment`, which checks them first). A peer whose
//!   own copy is fenced refuses, so damage never spreads.
//! - **Fencing the group**: while a group has a damaged partition here,
//!   this node does not start elections in it and hands leadership away
//!   if it leads; the RPC server refuses it votes (`glue::network`).
//!
//! A single-node cluster has no peer to repair from: the partition stays
//! fenced (its reads answer 503) until an operator restores the data.
//!
//! Cost on the healthy peer: it copies and verifies the batches under its
//! group's read lock, so applies there wait for up to one segment's copy
//! (tens of milliseconds for 64 MiB). Repairs are rare; a peer serving
//! many at once would want the copy taken from mappings outside the lock,
//! as the scrubber does.

use std::sync::Arc;
use std::time::Duration;

use openraft::async_runtime::watch::WatchReceiver;
use sluice_engine::{EngineError, SegmentCheck};

use crate::data::fence::{BatchRange, Damage, Fences};
use crate::glue::{BatchCopyError, BatchSource, StateMachine, cluster};
use crate::ids::{GroupId, PartitionKey};
use crate::node::{META_GROUP, Node, NodeMachine};

/// Longest one peer may take to send a damaged segment's batches.
const REPAIR_FETCH_TIMEOUT_MS: u64 = 60_000;

/// Where the scrubber is: the last segment it verified.
#[derive(Debug, Clone, Copy, Default)]
pub struct ScrubCursor(Option<Damage>);

impl Node {
    /// The fences of this node's damaged partition data.
    pub fn fences(&self) -> &Arc<Fences> {
        self.host.fences()
    }

    /// Looks at an error from reading partition `key` of `group`: a
    /// `Corrupted` one fences its segment. True when it was damage (the
    /// caller must then not serve what it read).
    pub fn report_damage(&self, group: GroupId, key: PartitionKey, error: &EngineError) -> bool {
        self.fences().report_error(group, key, error)
    }

    /// One round of repairs (see the module docs); returns how many
    /// damaged segments were repaired.
    pub async fn repair_pass(&self) -> usize {
        self.fence_groups().await;
        let mut repaired = 0;
        for (damage, _) in self.fences().list() {
            if self.repair_one(damage).await {
                repaired += 1;
            }
        }
        // Fences lifted (repaired, or the segment is gone): elections
        // resume in those groups.
        self.fence_groups().await;
        repaired
    }

    /// Stops elections in fenced groups (and hands away their leadership),
    /// and restarts them in the others.
    async fn fence_groups(&self) {
        for (group, (raft, _)) in &self.groups {
            if *group == META_GROUP {
                continue;
            }
            let fenced = self.fences().is_group_fenced(*group);
            raft.runtime_config().elect(!fenced);
            let metrics = raft.metrics().borrow_watched().clone();
            if !fenced || metrics.current_leader != Some(self.config.id) {
                continue;
            }
            let to = metrics
                .membership_config
                .membership()
                .voter_ids()
                .find(|id| *id != self.config.id);
            if let Some(to) = to {
                tracing::warn!(
                    group = group.0,
                    to,
                    "handing leadership away: damaged data here"
                );
                if let Err(e) = cluster::transfer_leader(raft, to).await {
                    tracing::warn!(group = group.0, error = %e, "leadership transfer failed");
                }
            }
        }
    }

    /// Tries each peer for `damage`'s batches; true once repaired.
    async fn repair_one(&self, damage: Damage) -> bool {
        let Some((raft, sm)) = self.groups.get(&damage.group) else {
            self.fences().clear(damage, false);
            return false;
        };
        let segment = with_data(sm, |data| {
            let log = data.partition(damage.key)?.log();
            log.segments().into_iter().find(|s| s.base == damage.base)
        })
        .flatten();
        let Some(segment) = segment else {
            // Retention, a truncation or a dropped queue removed it.
            self.fences().clear(damage, false);
            return false;
        };
        if !segment.sealed {
            return false; // sealed by the next flush; repaired after
        }
        let range = BatchRange {
            key: damage.key,
            from: segment.base,
            to: segment.next,
        };
        let metrics = raft.metrics().borrow_watched().clone();
        let membership = metrics.membership_config.membership();
        let mut peers: Vec<(u64, String)> = membership
            .voter_ids()
            .filter(|id| *id != self.config.id)
            .filter_map(|id| membership.get_node(&id).map(|n| (id, n.addr.clone())))
            .collect();
        // The leader first: it certainly holds every committed record.
        peers.sort_by_key(|(id, _)| Some(*id) != metrics.current_leader);
        for (peer, addr) in peers {
            let timeout = Duration::from_millis(REPAIR_FETCH_TIMEOUT_MS);
            let bytes = match self
                .leaders
                .batches(&addr, damage.group, &range, timeout)
                .await
            {
                Ok(bytes) => bytes,
                Err(e) => {
                    tracing::warn!(?damage, peer, error = %e, "peer could not send the batches");
                    continue;
                }
            };
            let sm = sm.clone();
            let swapped = tokio::task::spawn_blocking(move || {
                sm.repair(|machine| match machine {
                    NodeMachine::Data(data) => data
                        .replace_damaged_segment(damage.key, damage.base, &bytes)
                        .map_err(|e| e.to_string()),
                    NodeMachine::Meta(_) => Err("the meta group holds no partitions".into()),
                })
            })
            .await;
            match swapped {
                Ok(Ok(())) => {
                    self.fences().clear(damage, true);
                    return true;
                }
                Ok(Err(e)) => tracing::warn!(?damage, peer, error = %e, "repair refused"),
                Err(e) => tracing::warn!(?damage, peer, error = %e, "repair task failed"),
            }
        }
        false
    }

    /// Verifies the next sealed segment after `cursor`, in (group,
    /// partition, offset) order, wrapping at the end; fences it when it
    /// fails. Returns the bytes verified (0: nothing to verify now).
    pub async fn scrub_next(&self, cursor: &mut ScrubCursor) -> u64 {
        let Some((damage, check)) = self.next_check(cursor.0) else {
            cursor.0 = None;
            return 0;
        };
        cursor.0 = Some(damage);
        let bytes = check.len_bytes();
        let verdict = tokio::task::spawn_blocking(move || check.run()).await;
        match verdict {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                self.report_damage(damage.group, damage.key, &e);
            }
            Err(e) => tracing::warn!(?damage, error = %e, "scrub task failed"),
        }
        self.fences().add_scrubbed(bytes);
        bytes
    }

    /// The first sealed, unfenced segment after `after` and its check,
    /// taken under the group's read lock (the check runs without it).
    fn next_check(&self, after: Option<Damage>) -> Option<(Damage, SegmentCheck)> {
        let start = after.map_or(GroupId(1), |d| d.group);
        for (group, (_, sm)) in self.groups.range(start..) {
            if *group == META_GROUP {
                continue;
            }
            let found = with_data(sm, |data| {
                for key in data.partition_keys() {
                    let log = data.partition(key)?.log();
                    for segment in log.segments().into_iter().filter(|s| s.sealed) {
                        let here = Damage {
                            group: *group,
                            key,
                            base: segment.base,
                        };
                        if after.is_some_and(|a| here <= a) || self.fences().is_fenced(*group, key)
                        {
                            continue;
                        }
                        match log.segment_check(segment.base) {
                            Ok(check) => return Some((here, check)),
                            Err(e) => {
                                self.report_damage(*group, key, &e);
                            }
                        }
                    }
                }
                None
            })
            .flatten();
            if found.is_some() {
                return found;
            }
        }
        None
    }
}

/// Runs `f` on a data group's machine under its read lock.
fn with_data<T>(
    sm: &StateMachine<NodeMachine>,
    f: impl FnOnce(&crate::data::machine::DataMachine) -> T,
) -> Option<T> {
    match sm.read().machine() {
        NodeMachine::Data(data) => Some(f(data)),
        NodeMachine::Meta(_) => None,
    }
}

/// Serves the `batches` RPC from this node's data groups.
pub(crate) struct LocalBatches {
    /// The data groups' machines.
    pub machines: Vec<(GroupId, StateMachine<NodeMachine>)>,
    /// This node's fences: a fenced partition is never sent.
    pub fences: Arc<Fences>,
}

impl BatchSource for LocalBatches {
    fn copy(&self, group: GroupId, range: BatchRange) -> Result<Vec<u8>, BatchCopyError> {
        if self.fences.is_fenced(group, range.key) {
            return Err(BatchCopyError::Unavailable(format!(
                "{} is damaged here too",
                range.key
            )));
        }
        let sm = self
            .machines
            .iter()
            .find(|(g, _)| *g == group)
            .map(|(_, sm)| sm)
            .ok_or_else(|| BatchCopyError::NotHere(format!("no data group {}", group.0)))?;
        let copied = with_data(sm, |data| {
            let partition = data
                .partition(range.key)
                .ok_or_else(|| BatchCopyError::NotHere(format!("no partition {}", range.key)))?;
            partition
                .log()
                .copy_batches(range.from, range.to)
                .map_err(|e| copy_failed(&self.fences, group, range.key, e))
        });
        copied.unwrap_or_else(|| {
            Err(BatchCopyError::NotHere(format!(
                "group {} is not a data group",
                group.0
            )))
        })
    }
}

/// Maps a failed copy, fencing this node's own copy when it is damaged.
fn copy_failed(
    fences: &Fences,
    group: GroupId,
    key: PartitionKey,
    e: EngineError,
) -> BatchCopyError {
    if fences.report_error(group, key, &e) {
        return BatchCopyError::Unavailable(e.to_string());
    }
    match e {
        EngineError::OffsetOutOfRange { .. }
        | EngineError::NotAligned { .. }
        | EngineError::NoSuchSegment { .. } => BatchCopyError::NotHere(e.to_string()),
        other => BatchCopyError::Unavailable(other.to_string()),
    }
}
