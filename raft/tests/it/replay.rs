//! Goal: what the WAL reports for each group after any sequence of writes,
//! reopens and compactions equals a model of what was written. Method:
//! proptest over three groups, on the simulated disk with small segments.

use std::collections::BTreeMap;

use bytes::Bytes;
use proptest::prelude::*;
use sluice_engine::sim::SimDisk;
use sluice_raft::{GroupId, LogIndex, Wal, WalError};

use crate::common::{append_durably, flushed, open, payload, wait};

#[derive(Debug, Clone)]
enum Op {
    Append { group: u32, count: u64 },
    Vote { group: u32 },
    Committed { group: u32 },
    Truncate { group: u32, back: u64 },
    Purge { group: u32, percent: u64 },
    Reopen,
    Compact,
}

fn arb_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0u32..3, 1u64..12).prop_map(|(group, count)| Op::Append { group, count }),
        1 => (0u32..3).prop_map(|group| Op::Vote { group }),
        1 => (0u32..3).prop_map(|group| Op::Committed { group }),
        1 => (0u32..3, 0u64..8).prop_map(|(group, back)| Op::Truncate { group, back }),
        1 => (0u32..3, 0u64..100).prop_map(|(group, percent)| Op::Purge { group, percent }),
        1 => Just(Op::Reopen),
        1 => Just(Op::Compact),
    ]
}

#[derive(Debug, Default, Clone)]
struct GroupModel {
    entries: BTreeMap<u64, Bytes>,
    next: u64,
    vote: Option<Bytes>,
    committed: Option<Bytes>,
    purged: Option<(u64, Bytes)>,
    generation: u64,
}

fn check(wal: &Wal, models: &BTreeMap<u32, GroupModel>) {
    for (&g, m) in models {
        let group = GroupId(g);
        let state = wal.group_state(group);
        assert_eq!(state.vote, m.vote, "{group} vote");
        assert_eq!(state.committed, m.committed, "{group} committed");
        assert_eq!(
            state.purged,
            m.purged.clone().map(|(i, b)| (LogIndex(i), b)),
            "{group} purged"
        );
        assert_eq!(state.next_index, LogIndex(m.next), "{group} next index");
        let first = m.entries.keys().next().copied().unwrap_or(m.next);
        assert_eq!(state.first_index, LogIndex(first), "{group} first index");
        let read = wal
            .read_entries(group, LogIndex(0), LogIndex(u64::MAX))
            .expect("read");
        let expected: Vec<_> = m
            .entries
            .iter()
            .map(|(i, b)| (LogIndex(*i), b.clone()))
            .collect();
        if first == 0 || expected.is_empty() {
            assert_eq!(read, expected, "{group} entries");
        }
        let read = wal
            .read_entries(group, LogIndex(first), LogIndex(m.next))
            .expect("read");
        assert_eq!(read, expected, "{group} entries from the first");
    }
}

fn run_op(
    slot: &mut Option<Wal>,
    disk: &SimDisk,
    op: &Op,
    models: &mut BTreeMap<u32, GroupModel>,
) -> Result<(), WalError> {
    let wal = slot.as_ref().expect("the WAL is open between operations");
    match *op {
        Op::Append { group, count } => {
            let m = models.entry(group).or_default();
            append_durably(wal, GroupId(group), m.next, count, m.generation)?;
            for i in m.next..m.next + count {
                m.entries
                    .insert(i, payload(GroupId(group), LogIndex(i), m.generation));
            }
            m.next += count;
        }
        Op::Vote { group } | Op::Committed { group } => {
            let m = models.entry(group).or_default();
            m.generation += 1;
            let value = Bytes::from(format!("{op:?}-{}", m.generation));
            let (cb, rx) = flushed();
            if matches!(op, Op::Vote { .. }) {
                wal.save_vote(GroupId(group), value.clone(), cb)?;
                m.vote = Some(value);
            } else {
                wal.save_committed(GroupId(group), value.clone(), Some(cb))?;
                m.committed = Some(value);
            }
            wait(rx).map_err(WalError::FlushFailed)?;
        }
        Op::Truncate { group, back } => {
            let m = models.entry(group).or_default();
            let floor = m.purged.as_ref().map_or(0, |(i, _)| i + 1);
            let keep_to = m.next.saturating_sub(back).max(floor);
            let last_kept = keep_to.checked_sub(1).map(LogIndex);
            wal.truncate_after(GroupId(group), last_kept)?;
            m.entries.retain(|i, _| *i < keep_to);
            m.next = keep_to;
            m.generation += 1;
        }
        Op::Purge { group, percent } => {
            let m = models.entry(group).or_default();
            if m.next == 0 {
                return Ok(());
            }
            let upto = (m.next - 1) * percent / 100;
            if m.purged.as_ref().is_some_and(|(p, _)| *p >= upto) {
                return Ok(());
            }
            let id = Bytes::from(format!("purged-{upto}"));
            wal.purge(GroupId(group), LogIndex(upto), id.clone())?;
            m.entries.retain(|i, _| *i > upto);
            m.purged = Some((upto, id));
        }
        Op::Reopen => {
            wal.sync()?;
            drop(slot.take()); // releases the directory lock
            *slot = Some(open(disk)?);
        }
        Op::Compact => {
            wal.compact()?;
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn replay_and_compaction_match_a_model(ops in prop::collection::vec(arb_op(), 1..60)) {
        let disk = SimDisk::new();
        let mut wal = Some(open(&disk).expect("open"));
        let mut models: BTreeMap<u32, GroupModel> = BTreeMap::new();
        for op in &ops {
            run_op(&mut wal, &disk, op, &mut models).expect("op");
            check(wal.as_ref().expect("open"), &models);
        }
        wal.as_ref().expect("open").sync().expect("sync");
        drop(wal);
        check(&open(&disk).expect("final reopen"), &models);
    }
}

/// Method: many groups write, some purge everything; compaction must
/// delete the segments behind them and keep every vote and purge marker.
#[test]
fn compaction_deletes_segments_every_group_is_past() {
    let disk = SimDisk::new();
    let wal = open(&disk).expect("open");
    for g in 0..4 {
        let (cb, rx) = flushed();
        wal.save_vote(GroupId(g), Bytes::from(format!("vote-{g}")), cb)
            .expect("vote");
        wait(rx).expect("durable");
    }
    // Interleaved, as groups on a node write: each group's live tail ends
    // up near the end of the WAL.
    for chunk in 0..10 {
        for g in 0..4 {
            append_durably(&wal, GroupId(g), chunk * 10, 10, 0).expect("append");
        }
    }
    let before = wal.stats();
    assert!(before.segment_count > 5, "{before:?}");
    for g in 0..4 {
        wal.purge(GroupId(g), LogIndex(89), Bytes::from("p"))
            .expect("purge");
    }
    let start = wal.compact().expect("compact");
    let after = wal.stats();
    assert!(start > before.start_offset, "segments were deleted");
    assert!(after.segment_count < before.segment_count);
    drop(wal);
    let wal = open(&disk).expect("reopen");
    for g in 0..4 {
        let state = wal.group_state(GroupId(g));
        assert_eq!(state.vote, Some(Bytes::from(format!("vote-{g}"))));
        assert_eq!(
            (state.first_index, state.next_index),
            (LogIndex(90), LogIndex(100))
        );
        let read = wal
            .read_entries(GroupId(g), LogIndex(90), LogIndex(100))
            .expect("read");
        assert_eq!(read.len(), 10);
        assert_eq!(read[0].1, payload(GroupId(g), LogIndex(90), 0));
    }
}

#[test]
fn entries_that_would_leave_a_hole_are_rejected_before_writing() {
    let disk = SimDisk::new();
    let wal = open(&disk).expect("open");
    append_durably(&wal, GroupId(7), 5, 3, 0).expect("a group may start anywhere");
    let before = wal.stats().next_offset;
    let (cb, _rx) = flushed();
    let err = wal
        .append_entries(
            GroupId(7),
            [(LogIndex(8), Bytes::new()), (LogIndex(10), Bytes::new())],
            cb,
        )
        .expect_err("hole");
    assert!(matches!(
        err,
        WalError::NotContiguous {
            index: LogIndex(10),
            expected: LogIndex(9),
            ..
        }
    ));
    assert_eq!(wal.stats().next_offset, before, "nothing was written");
}

/// Goal: the WAL compacts itself. After purges, `compact_if_due` (which
/// the log store calls on every purge) deletes segments in the background
/// once every group is past them, and never while one still needs them.
#[test]
fn compaction_starts_itself_once_every_group_has_purged_past_a_segment() {
    let disk = SimDisk::new();
    let wal = open(&disk).expect("open");
    for chunk in 0..10 {
        for g in 0..4 {
            append_durably(&wal, GroupId(g), chunk * 10, 10, 0).expect("append");
        }
    }
    let before = wal.stats();
    assert!(before.segment_count > 5, "{before:?}");
    for g in 0..3 {
        wal.purge(GroupId(g), LogIndex(89), Bytes::from("p"))
            .expect("purge");
        assert!(
            !wal.compact_if_due(),
            "group 3 still needs every segment: nothing is due"
        );
    }
    assert_eq!(wal.stats().segment_count, before.segment_count);
    wal.purge(GroupId(3), LogIndex(89), Bytes::from("p"))
        .expect("purge");
    assert!(wal.compact_if_due(), "due now");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while wal.stats().segment_count >= before.segment_count {
        assert!(
            std::time::Instant::now() < deadline,
            "the background compaction deletes segments"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    drop(wal);
    let wal = open(&disk).expect("reopen");
    for g in 0..4 {
        let state = wal.group_state(GroupId(g));
        assert_eq!(
            (state.first_index, state.next_index),
            (LogIndex(90), LogIndex(100))
        );
    }
}
