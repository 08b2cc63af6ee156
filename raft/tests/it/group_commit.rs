//! Goal: a flush round costs one fsync however many groups wrote, and
//! callbacks complete in FIFO order. Method: hold the flusher inside the
//! first round's callback (callbacks run on the flusher thread) while 100
//! writes from 10 groups pile up; releasing it must flush them all in one
//! round. Deterministic: nothing depends on timing.

use std::sync::{Arc, Mutex, mpsc};

use bytes::Bytes;
use sluice_engine::LogConfig;
use sluice_engine::sim::SimDisk;
use sluice_raft::{GroupId, LogIndex, Wal};

use crate::common::{WAL_DIR, open, payload};

#[test]
fn one_fsync_flushes_every_group_and_callbacks_run_in_order() {
    let disk = SimDisk::new();
    // Default 64 MiB segments: the 100 writes share one segment file, so a
    // round is exactly one fdatasync (a round covering a segment roll also
    // syncs the rolled file and the directory).
    let wal = Wal::open_on(Arc::new(disk.clone()), WAL_DIR, LogConfig::default()).expect("open");
    wal.sync()
        .expect("settle the first segment's directory entry");
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let (entered_tx, entered_rx) = mpsc::channel::<()>();
    wal.save_vote(
        GroupId(0),
        Bytes::from("v"),
        Box::new(move |r| {
            r.expect("first round");
            entered_tx.send(()).expect("signal");
            release_rx.recv().expect("release");
        }),
    )
    .expect("vote");
    entered_rx
        .recv()
        .expect("the flusher is inside the first callback");

    let order = Arc::new(Mutex::new(Vec::new()));
    let syncs_before = disk.sync_count();
    let rounds_before = wal.stats().flush_rounds;
    let (done_tx, done_rx) = mpsc::channel();
    for n in 0..100u64 {
        let group = GroupId((n % 10) as u32);
        let index = LogIndex(n / 10);
        let order = Arc::clone(&order);
        let done = done_tx.clone();
        wal.append_entries(
            group,
            [(index, payload(group, index, 0))],
            Box::new(move |r| {
                r.expect("flushed");
                order.lock().expect("order").push(n);
                done.send(()).expect("done");
            }),
        )
        .expect("append");
    }
    release_tx.send(()).expect("release the flusher");
    for _ in 0..100 {
        done_rx.recv().expect("every callback runs");
    }
    assert_eq!(
        *order.lock().expect("order"),
        (0..100).collect::<Vec<_>>(),
        "FIFO"
    );
    assert_eq!(
        wal.stats().flush_rounds - rounds_before,
        1,
        "one round for all 100 writes"
    );
    assert_eq!(
        disk.sync_count() - syncs_before,
        1,
        "one fdatasync for ten groups"
    );
}

/// Method: fail the fsync; every pending callback learns it, and the WAL
/// refuses later writes (the kernel may have dropped the pages).
#[test]
fn a_failed_fsync_fails_every_pending_callback_and_later_writes() {
    let disk = SimDisk::new();
    let wal = open(&disk).expect("open");
    wal.sync().expect("sync");
    disk.set_fail_syncs(true);
    let (cb, rx) = crate::common::flushed();
    wal.append_entries(GroupId(1), [(LogIndex(0), Bytes::from("x"))], cb)
        .expect("append");
    assert!(crate::common::wait(rx).is_err());
    disk.set_fail_syncs(false);
    let (cb, _rx) = crate::common::flushed();
    assert!(
        wal.append_entries(GroupId(1), [(LogIndex(1), Bytes::from("y"))], cb)
            .is_err()
    );
    assert!(wal.sync().is_err());
}
