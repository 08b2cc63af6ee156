//! Idempotent-producer windows of a data group (`spec/native-v2.md`,
//! "Idempotent producers").
//!
//! Per (producer, partition) the group remembers the last
//! [`RUNS_REMEMBERED`] appended runs of sequences (first..=last → first
//! offset). A request's run for one partition is then exactly one of:
//! - a **duplicate**: wholly inside one remembered run; answered with the
//!   original offsets, nothing written;
//! - **next**: it starts at last + 1 (or the pair is unknown); appended;
//! - **out of sequence**: a gap, older than every remembered run, or a mix
//!   of duplicates and new messages; refused (409) naming the expected
//!   sequence.
//!
//! Deterministic: time is the applied entry's timestamp, passed in, so
//! every replica keeps the same windows. Bounded: producers idle longer
//! than the expiry are dropped, and at most `producers_max` pairs are kept
//! (the longest idle goes first). The state is serialisable, so it survives
//! snapshots and restarts with the rest of the group's state.

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};
use sluice_engine::{Offset, Timestamp};

use crate::ids::{PartitionKey, ProducerId};

/// Runs remembered per (producer, partition), as Kafka remembers batches.
pub const RUNS_REMEMBERED: usize = 5;

/// Default idle time after which a producer's windows are dropped: 7 days.
pub const EXPIRY_SECS_DEFAULT: u64 = 7 * 24 * 3600;

/// Default bound on remembered (producer, partition) pairs per group.
pub const PRODUCERS_MAX_DEFAULT: usize = 100_000;

/// One appended run of sequences.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct Run {
    first_sequence: u64,
    last_sequence: u64,
    first: RunStart,
}

/// Where an appended run starts. Within one run offsets and timestamps
/// both advance by one per message (apply gives a batch's messages in one
/// partition consecutive ticks), so the start places every message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunStart {
    /// Offset of the run's first message.
    pub offset: Offset,
    /// Timestamp of the run's first message.
    pub timestamp: Timestamp,
}

impl RunStart {
    /// The start of the run `n` messages further on.
    pub fn advanced(self, n: u64) -> RunStart {
        RunStart {
            offset: self.offset.plus(n),
            timestamp: Timestamp(self.timestamp.0.saturating_add(n)),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Window {
    runs: VecDeque<Run>,
    last_write: Timestamp,
}

/// What to do with one partition's run of a producer's request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SequenceCheck {
    /// New messages: append them, then `record` the run.
    Append,
    /// Already appended: answer with these offsets, write nothing. The
    /// offset of sequence `first_sequence + i` is `first_offset + i`.
    Duplicate {
        /// Where the request's first message was appended.
        first: RunStart,
    },
    /// Refuse the request (409): the partition expects `expected` next.
    OutOfSequence {
        /// The sequence that would be accepted.
        expected: u64,
    },
}

/// The idempotent-producer state of one data group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProducerWindows {
    windows: BTreeMap<(ProducerId, PartitionKey), Window>,
    expiry_secs: u64,
    producers_max: usize,
}

impl Default for ProducerWindows {
    fn default() -> Self {
        ProducerWindows::new(EXPIRY_SECS_DEFAULT, PRODUCERS_MAX_DEFAULT)
    }
}

impl ProducerWindows {
    /// Empty windows with the given expiry and bound (at least 1 pair).
    pub fn new(expiry_secs: u64, producers_max: usize) -> ProducerWindows {
        ProducerWindows {
            windows: BTreeMap::new(),
            expiry_secs,
            producers_max: producers_max.max(1),
        }
    }

    /// Number of remembered (producer, partition) pairs.
    pub fn len(&self) -> usize {
        self.windows.len()
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.windows.is_empty()
    }

    /// Classifies a run of `count` (≥ 1) sequences from `first_sequence`.
    pub fn check(
        &self,
        producer: ProducerId,
        partition: PartitionKey,
        first_sequence: u64,
        count: u64,
    ) -> SequenceCheck {
        let Some(window) = self.windows.get(&(producer, partition)) else {
            // Unknown (or expired) pair: any starting sequence is accepted.
            return SequenceCheck::Append;
        };
        let Some(newest) = window.runs.back() else {
            return SequenceCheck::Append;
        };
        let expected = newest.last_sequence.saturating_add(1);
        let last_sequence = first_sequence.saturating_add(count.saturating_sub(1));
        if first_sequence == expected {
            return SequenceCheck::Append;
        }
        let inside = window
            .runs
            .iter()
            .find(|r| r.first_sequence <= first_sequence && last_sequence <= r.last_sequence);
        match inside {
            Some(run) => SequenceCheck::Duplicate {
                first: run.first.advanced(first_sequence - run.first_sequence),
            },
            // A gap, a run older than every remembered one, or duplicates
            // mixed with new messages.
            None => SequenceCheck::OutOfSequence { expected },
        }
    }

    /// Records an appended run (after `check` said `Append`) at `now`, the
    /// applied entry's timestamp.
    pub fn record(
        &mut self,
        producer: ProducerId,
        partition: PartitionKey,
        first_sequence: u64,
        count: u64,
        first: RunStart,
        now: Timestamp,
    ) {
        let window = self.windows.entry((producer, partition)).or_default();
        window.runs.push_back(Run {
            first_sequence,
            last_sequence: first_sequence.saturating_add(count.saturating_sub(1)),
            first,
        });
        while window.runs.len() > RUNS_REMEMBERED {
            window.runs.pop_front();
        }
        window.last_write = window.last_write.max(now);
        self.enforce_bound();
    }

    /// Drops the windows of pairs idle for longer than the expiry at `now`.
    pub fn expire(&mut self, now: Timestamp) {
        let horizon = Timestamp(
            now.0
                .saturating_sub(self.expiry_secs.saturating_mul(Timestamp::TICKS_PER_SEC)),
        );
        self.windows.retain(|_, w| w.last_write >= horizon);
    }

    /// Keeps at most `producers_max` pairs, dropping the longest idle
    /// (ties broken by key, so every replica drops the same ones).
    fn enforce_bound(&mut self) {
        let excess = self.windows.len().saturating_sub(self.producers_max);
        if excess == 0 {
            return;
        }
        let mut by_idle: Vec<_> = self
            .windows
            .iter()
            .map(|(k, w)| (w.last_write, *k))
            .collect();
        by_idle.sort_unstable();
        for (_, key) in by_idle.into_iter().take(excess) {
            self.windows.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{PartitionId, QueueId};

    const P: ProducerId = ProducerId(1);
    const Q: PartitionKey = key(0);

    const fn key(partition: u32) -> PartitionKey {
        PartitionKey {
            queue: QueueId(1),
            partition: PartitionId(partition),
        }
    }

    fn at(offset: u64) -> RunStart {
        RunStart {
            offset: Offset(offset),
            timestamp: Timestamp(offset + 5_000),
        }
    }

    fn windows_with_runs(runs: &[(u64, u64, u64)]) -> ProducerWindows {
        let mut w = ProducerWindows::default();
        for &(first, count, offset) in runs {
            assert_eq!(w.check(P, Q, first, count), SequenceCheck::Append);
            w.record(P, Q, first, count, at(offset), Timestamp(1));
        }
        w
    }

    #[test]
    fn the_spec_cases_duplicate_next_gap_stale_and_mixed() {
        // Runs: 0..=9 at offset 100, 10..=14 at 200.
        let w = windows_with_runs(&[(0, 10, 100), (10, 5, 200)]);
        assert_eq!(
            w.check(P, Q, 15, 3),
            SequenceCheck::Append,
            "continues at last + 1"
        );
        assert_eq!(
            w.check(P, Q, 10, 5),
            SequenceCheck::Duplicate { first: at(200) }
        );
        assert_eq!(
            w.check(P, Q, 3, 2),
            SequenceCheck::Duplicate { first: at(103) }
        );
        assert_eq!(
            w.check(P, Q, 17, 1),
            SequenceCheck::OutOfSequence { expected: 15 },
            "gap"
        );
        assert_eq!(
            w.check(P, Q, 13, 4),
            SequenceCheck::OutOfSequence { expected: 15 },
            "mixed"
        );
        assert_eq!(
            w.check(P, Q, 8, 4),
            SequenceCheck::OutOfSequence { expected: 15 },
            "spans two runs"
        );
        assert_eq!(
            w.check(P, key(1), 42, 1),
            SequenceCheck::Append,
            "per partition"
        );
        assert_eq!(
            w.check(ProducerId(2), Q, 7, 1),
            SequenceCheck::Append,
            "unknown producer"
        );
    }

    #[test]
    fn only_the_last_five_runs_are_remembered() {
        let runs: Vec<_> = (0..7).map(|i| (i * 2, 2, 1000 + i * 2)).collect();
        let w = windows_with_runs(&runs);
        assert_eq!(
            w.check(P, Q, 4, 2),
            SequenceCheck::Duplicate { first: at(1004) }
        );
        assert_eq!(
            w.check(P, Q, 2, 2),
            SequenceCheck::OutOfSequence { expected: 14 },
            "forgotten"
        );
    }

    #[test]
    fn idle_producers_expire_and_the_count_is_bounded() {
        let mut w = ProducerWindows::new(10, 3);
        let t = |s: u64| Timestamp::from_secs(s);
        w.record(P, Q, 0, 1, at(0), t(100));
        w.record(ProducerId(2), Q, 0, 1, at(1), t(105));
        w.expire(t(112));
        assert_eq!(w.len(), 1, "producer 1 was idle 12 s > 10 s");
        assert_eq!(
            w.check(P, Q, 50, 1),
            SequenceCheck::Append,
            "an expired producer starts afresh"
        );
        for p in 3..6 {
            w.record(ProducerId(p), Q, 0, 1, at(p), t(110 + p));
        }
        assert_eq!(w.len(), 3);
        assert_eq!(
            w.check(ProducerId(2), Q, 9, 1),
            SequenceCheck::Append,
            "the longest idle went"
        );
        assert_eq!(
            w.check(ProducerId(5), Q, 9, 1),
            SequenceCheck::OutOfSequence { expected: 1 }
        );
    }

    #[test]
    fn windows_survive_a_snapshot_round_trip() {
        let w = windows_with_runs(&[(0, 10, 100), (10, 5, 200)]);
        let config = bincode::config::standard();
        let bytes = bincode::serde::encode_to_vec(&w, config).expect("encode");
        let (back, _): (ProducerWindows, usize) =
            bincode::serde::decode_from_slice(&bytes, config).expect("decode");
        assert_eq!(back, w);
        assert_eq!(
            back.check(P, Q, 10, 5),
            SequenceCheck::Duplicate { first: at(200) }
        );
    }
}
