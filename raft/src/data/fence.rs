//! Fences around damaged partition data on this node.
//!
//! A read or the scrubber that finds a segment failing its checks reports
//! it here. From then until the segment is repaired from a peer:
//! - this node serves no read of that partition (the server forwards to
//!   the group's leader, or answers 503), so it never serves partial data;
//! - it grants no vote and takes no leadership in the partition's group,
//!   and steps down if it leads: a replica with damaged data must not
//!   decide what the group holds;
//! - it sends no peer that partition's data (repairs, snapshot segments).
//!
//! The node keeps replicating the group meanwhile: appends go to the
//! active segment, which the damage does not touch. The repair itself is
//! in `node::repair`.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use serde::{Deserialize, Serialize};
use sluice_engine::{EngineError, Offset};

use crate::ids::{GroupId, PartitionKey};

/// Most damaged segments tracked at once; past it a report is dropped
/// (and logged): the node is failing, and an operator must look.
pub const DAMAGED_SEGMENTS_MAX: usize = 10_000;
/// Longest reason kept per damaged segment.
const REASON_BYTES_MAX: usize = 512;

/// A damaged segment: which partition of which group, and its base.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Damage {
    /// The data group.
    pub group: GroupId,
    /// The partition.
    pub key: PartitionKey,
    /// The damaged segment's base offset.
    pub base: Offset,
}

/// Offsets `[from, to)` of one partition: what a repairing replica asks a
/// healthy one for (the body of the `batches` RPC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchRange {
    /// The partition.
    pub key: PartitionKey,
    /// The first offset.
    pub from: Offset,
    /// One past the last offset.
    pub to: Offset,
}

/// The damaged segments of this node's replicas, and counters for metrics.
#[derive(Debug, Default)]
pub struct Fences {
    damaged: Mutex<BTreeMap<Damage, String>>,
    /// How many entries `damaged` holds, kept under its lock: reads ask
    /// `is_fenced` on every request, and almost always nothing is fenced,
    /// so they answer from this without taking the lock.
    fenced_count: AtomicUsize,
    found_total: AtomicU64,
    repaired_total: AtomicU64,
    scrubbed_bytes_total: AtomicU64,
    wake: tokio::sync::Notify,
}

impl Fences {
    fn damaged(&self) -> std::sync::MutexGuard<'_, BTreeMap<Damage, String>> {
        self.damaged.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Fences `damage`; true when it was not fenced already.
    pub fn report(&self, damage: Damage, reason: &str) -> bool {
        let mut damaged = self.damaged();
        if damaged.contains_key(&damage) {
            return false;
        }
        if damaged.len() >= DAMAGED_SEGMENTS_MAX {
            tracing::error!(
                ?damage,
                "too many damaged segments tracked; not fencing this one"
            );
            return false;
        }
        let reason: String = reason.chars().take(REASON_BYTES_MAX).collect();
        tracing::error!(group = damage.group.0, queue = damage.key.queue.0,
            partition = damage.key.partition.0, segment = %damage.base, %reason,
            "damaged partition data: fenced until repaired from a peer");
        damaged.insert(damage, reason);
        self.fenced_count.store(damaged.len(), Ordering::Release);
        self.found_total.fetch_add(1, Ordering::Relaxed);
        drop(damaged);
        self.wake.notify_one();
        true
    }

    /// Fences the segment a `Corrupted` error from reading partition `key`
    /// of `group` names; true when the error was damage.
    pub fn report_error(&self, group: GroupId, key: PartitionKey, error: &EngineError) -> bool {
        let Some(base) = error.damaged_segment_base() else {
            return false;
        };
        self.report(Damage { group, key, base }, &error.to_string());
        true
    }

    /// Lifts the fence of `damage` once it is repaired (or gone).
    pub fn clear(&self, damage: Damage, repaired: bool) {
        let removed = {
            let mut damaged = self.damaged();
            let removed = damaged.remove(&damage).is_some();
            self.fenced_count.store(damaged.len(), Ordering::Release);
            removed
        };
        if removed && repaired {
            self.repaired_total.fetch_add(1, Ordering::Relaxed);
            tracing::info!(?damage, "damaged segment repaired from a peer");
        }
    }

    /// Whether any partition of `group` is fenced on this node.
    pub fn is_group_fenced(&self, group: GroupId) -> bool {
        self.fenced_count.load(Ordering::Acquire) > 0
            && self.damaged().keys().any(|d| d.group == group)
    }

    /// Whether partition `key` of `group` is fenced on this node.
    pub fn is_fenced(&self, group: GroupId, key: PartitionKey) -> bool {
        self.fenced_count.load(Ordering::Acquire) > 0
            && self
                .damaged()
                .keys()
                .any(|d| d.group == group && d.key == key)
    }

    /// Every fenced segment, with why.
    pub fn list(&self) -> Vec<(Damage, String)> {
        self.damaged()
            .iter()
            .map(|(d, r)| (*d, r.clone()))
            .collect()
    }

    /// Damaged segments found since start.
    pub fn found_total(&self) -> u64 {
        self.found_total.load(Ordering::Relaxed)
    }

    /// Damaged segments repaired since start.
    pub fn repaired_total(&self) -> u64 {
        self.repaired_total.load(Ordering::Relaxed)
    }

    /// Counts bytes the scrubber verified.
    pub fn add_scrubbed(&self, bytes: u64) {
        self.scrubbed_bytes_total
            .fetch_add(bytes, Ordering::Relaxed);
    }

    /// Bytes the scrubber verified since start.
    pub fn scrubbed_bytes_total(&self) -> u64 {
        self.scrubbed_bytes_total.load(Ordering::Relaxed)
    }

    /// Waits until a new damage is reported (or a previous report is
    /// still unconsumed).
    pub async fn reported(&self) {
        self.wake.notified().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{PartitionId, QueueId};

    fn damage(group: u32, partition: u32, base: u64) -> Damage {
        Damage {
            group: GroupId(group),
            key: PartitionKey {
                queue: QueueId(7),
                partition: PartitionId(partition),
            },
            base: Offset(base),
        }
    }

    #[test]
    fn a_fence_covers_its_partition_and_group_until_cleared() {
        let fences = Fences::default();
        let d = damage(1, 2, 40);
        assert!(fences.report(d, "crc"));
        assert!(!fences.report(d, "again"), "reported once");
        assert!(fences.is_fenced(GroupId(1), d.key));
        assert!(fences.is_group_fenced(GroupId(1)));
        assert!(!fences.is_group_fenced(GroupId(2)));
        assert!(!fences.is_fenced(GroupId(1), damage(1, 3, 0).key));
        assert!(fences.report(damage(1, 2, 80), "another segment"));
        fences.clear(d, true);
        assert!(fences.is_fenced(GroupId(1), d.key), "one segment left");
        fences.clear(damage(1, 2, 80), false);
        assert!(!fences.is_group_fenced(GroupId(1)));
        assert_eq!((fences.found_total(), fences.repaired_total()), (2, 1));
        assert!(fences.list().is_empty());
    }
}
