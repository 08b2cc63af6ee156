//! Goal: a vote or entry reported flushed survives a power loss, for every
//! group at once. Method: several groups write through the WAL and record
//! what their callbacks acknowledged; the simulated disk crashes before a
//! chosen disk operation (every one in turn, in each crash mode); the image
//! is reopened and compared with what was acknowledged.

use std::collections::BTreeMap;

use bytes::Bytes;
use sluice_engine::sim::{CrashMode, SimDisk};
use sluice_raft::{GroupId, LogIndex, Wal};

use crate::common::{append_durably, flushed, open, payload, wait};

/// What the callbacks acknowledged, per group.
#[derive(Debug, Default)]
struct Acked {
    /// Entries acknowledged durable and not truncated or purged since.
    entries: BTreeMap<(u32, u64), Bytes>,
    /// Every payload ever written at each (group, index).
    written: BTreeMap<(u32, u64), Vec<Bytes>>,
    /// The highest vote acknowledged (votes only grow) and the highest written.
    vote: BTreeMap<u32, (u64, u64)>,
}

const GROUPS: u32 = 3;

/// Runs until the planned crash makes an operation fail.
fn workload(disk: &SimDisk, acked: &mut Acked) {
    let Ok(wal) = open(disk) else { return };
    let mut next = [0u64; GROUPS as usize];
    // Enough rounds that segments compacted early are recycled (written
    // over) by later rounds' appends.
    for round in 0..20u64 {
        for g in 0..GROUPS {
            let group = GroupId(g);
            let count = 1 + (round + u64::from(g)) % 5;
            let from = next[g as usize];
            for i in from..from + count {
                acked
                    .written
                    .entry((g, i))
                    .or_default()
                    .push(payload(group, LogIndex(i), round));
            }
            if !append(&wal, group, from, count, round) {
                return;
            }
            for i in from..from + count {
                acked
                    .entries
                    .insert((g, i), payload(group, LogIndex(i), round));
            }
            next[g as usize] += count;
            if g == 2 && round > 0 {
                // Group 2 votes once: compaction must carry that vote
                // forward before it deletes the segment holding it.
                continue;
            }
            let vote = round * 10 + u64::from(g);
            acked.vote.entry(g).or_default().1 = vote;
            let (cb, rx) = flushed();
            if wal
                .save_vote(group, Bytes::from(vote.to_string()), cb)
                .is_err()
                || wait(rx).is_err()
            {
                return;
            }
            acked.vote.entry(g).or_default().0 = vote;
        }
        if round % 4 == 3 {
            // Group 0 loses its last two entries; every group purges the
            // first half of its log; compaction then deletes segments.
            let keep = next[0].saturating_sub(2);
            acked.entries.retain(|(g, i), _| *g != 0 || *i < keep);
            if wal
                .truncate_after(GroupId(0), keep.checked_sub(1).map(LogIndex))
                .is_err()
            {
                return;
            }
            next[0] = keep;
            for g in 0..GROUPS {
                let upto = next[g as usize] / 2;
                acked.entries.retain(|(gr, i), _| *gr != g || *i > upto);
                if wal
                    .purge(GroupId(g), LogIndex(upto), Bytes::from("p"))
                    .is_err()
                {
                    return;
                }
            }
            if wal.compact().is_err() {
                return;
            }
        }
    }
}

fn append(wal: &Wal, group: GroupId, from: u64, count: u64, generation: u64) -> bool {
    append_durably(wal, group, from, count, generation).is_ok()
}

fn check(image: &SimDisk, acked: &Acked, context: &str) {
    let wal = match open(image) {
        Ok(w) => w,
        Err(e) => panic!("{context}: reopening the crash image failed: {e}"),
    };
    for ((g, i), bytes) in &acked.entries {
        let read = wal
            .read_entries(GroupId(*g), LogIndex(*i), LogIndex(i + 1))
            .expect("read");
        assert_eq!(
            read,
            vec![(LogIndex(*i), bytes.clone())],
            "{context}: acknowledged entry {g}/{i}"
        );
    }
    for g in 0..GROUPS {
        let state = wal.group_state(GroupId(g));
        for (i, bytes) in wal
            .read_entries(GroupId(g), state.first_index, state.next_index)
            .expect("read")
        {
            let ever = acked
                .written
                .get(&(g, i.0))
                .map(Vec::as_slice)
                .unwrap_or_default();
            assert!(
                ever.contains(&bytes),
                "{context}: {g}/{} holds bytes never written there",
                i.0
            );
        }
        let (acked_vote, max_vote) = acked.vote.get(&g).copied().unwrap_or_default();
        let vote: u64 = state
            .vote
            .map(|v| String::from_utf8_lossy(&v).parse().expect("vote"))
            .unwrap_or_default();
        assert!(
            vote >= acked_vote && vote <= max_vote,
            "{context}: group {g} vote {vote}, acked {acked_vote}"
        );
    }
    // The recovered WAL accepts writes.
    wal.sync().expect("sync after recovery");
}

#[test]
fn every_acknowledged_entry_and_vote_survives_a_crash_anywhere() {
    let dry = SimDisk::new();
    workload(&dry, &mut Acked::default());
    let total = dry.op_count();
    assert!(
        total > 100,
        "the workload touches the disk often ({total} ops)"
    );
    let reopened = open(&dry).expect("reopen");
    assert!(
        reopened.stats().start_offset.0 > 0,
        "compaction deleted segments"
    );
    drop(reopened);
    for at in 1..=total + 1 {
        for mode in CrashMode::ALL {
            let disk = SimDisk::new();
            disk.crash_at_op(at, mode, at * 17 + 3);
            let mut acked = Acked::default();
            workload(&disk, &mut acked);
            let image = disk.crash_image().unwrap_or_else(|| disk.crash(mode, at));
            check(
                &image,
                &acked,
                &format!("crash before op {at}/{total}, {mode:?}"),
            );
        }
    }
}

/// A WAL where group 9 voted once, long ago, and group 1 has since
/// written many segments and purged all but its last ten entries: the next
/// compaction must carry the vote forward and delete segments.
fn before_compaction(disk: &SimDisk) -> Wal {
    let wal = open(disk).expect("open");
    let (cb, rx) = flushed();
    wal.save_vote(GroupId(9), Bytes::from("v9"), cb)
        .expect("vote");
    wait(rx).expect("durable");
    for chunk in 0..20 {
        append_durably(&wal, GroupId(1), chunk * 10, 10, 0).expect("append");
    }
    wal.purge(GroupId(1), LogIndex(189), Bytes::from("p"))
        .expect("purge");
    wal.sync().expect("sync");
    wal
}

/// Method: crash before every disk operation of one compaction, and just
/// after it returns, in each mode; the vote it carried forward and the
/// live entries must survive.
#[test]
fn compaction_never_loses_what_it_carries_forward() {
    let dry = SimDisk::new();
    let wal = before_compaction(&dry);
    let ops_before = dry.op_count();
    let start = wal.compact().expect("compact");
    assert!(start.0 > 0, "segments were deleted");
    let ops = dry.op_count() - ops_before;
    drop(wal);
    for at in 1..=ops + 1 {
        for mode in CrashMode::ALL {
            let disk = SimDisk::new();
            let wal = before_compaction(&disk);
            disk.crash_at_op(at, mode, at);
            let _ = wal.compact();
            let image = disk.crash_image().unwrap_or_else(|| disk.crash(mode, at));
            drop(wal);
            let reopened = open(&image).expect("open the crash image");
            let context = format!("crash before compaction op {at}/{ops}, {mode:?}");
            assert_eq!(
                reopened.group_state(GroupId(9)).vote,
                Some(Bytes::from("v9")),
                "{context}"
            );
            let live = reopened
                .read_entries(GroupId(1), LogIndex(190), LogIndex(200))
                .expect("read");
            assert_eq!(live.len(), 10, "{context}");
        }
    }
}
