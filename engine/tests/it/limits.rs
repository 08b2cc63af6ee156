//! Goal: bad input and a failing disk give typed errors, never a panic, and
//! never lose what was already stored.

use std::path::Path;

use sluice_engine::sim::SimDisk;
use sluice_engine::{Batch, EngineError, NewRecord, Offset};

use crate::common::{
    SIM_DIR, append_records, assert_records, open_sim, read_all, record_for, small_config,
};

#[test]
fn empty_batches_and_reads_outside_the_log_are_typed_errors() {
    let disk = SimDisk::new();
    let mut log = open_sim(&disk, small_config());
    assert!(matches!(
        log.append(&mut Batch::new()),
        Err(EngineError::EmptyBatch)
    ));
    append_records(&mut log, 10, 3, 0, 10);
    assert!(matches!(
        log.read(Offset(11), 1, 1),
        Err(EngineError::OffsetOutOfRange { .. })
    ));
    assert_eq!(log.read(Offset(10), 1, 1).expect("at the end"), vec![]);
    assert_eq!(
        log.read(Offset(3), 0, 1000).expect("no records asked"),
        vec![]
    );
    let one = log.read(Offset(3), 10, 1).expect("tiny budget");
    assert_eq!(
        one.len(),
        1,
        "the first record is returned even over the byte budget"
    );
}

/// Method: a simulated disk with little free space. The failing append is
/// a `DiskFull` error, earlier records stay readable (and durable across a
/// crash), and appends work again once space is freed.
#[test]
fn a_full_disk_rejects_the_append_and_keeps_what_it_has() {
    let disk = SimDisk::new();
    let mut log = open_sim(&disk, small_config());
    append_records(&mut log, 20, 4, 0, 50);
    log.flush().expect("flush");
    disk.set_capacity_bytes(Some(0));
    let mut batch = Batch::new();
    batch.push(&record_for(20, 0, 3000)).expect("push");
    assert!(matches!(
        log.append(&mut batch),
        Err(EngineError::DiskFull { .. })
    ));
    assert_eq!(log.next_offset(), Offset(20));
    assert_records(&read_all(&log), 0, 0);
    let after_crash = disk.crash(sluice_engine::sim::CrashMode::RandomSectors, 3);
    drop(log);
    disk.set_capacity_bytes(None);
    let mut log = open_sim(&disk, small_config());
    append_records(&mut log, 5, 5, 0, 50);
    assert_records(&read_all(&log), 0, 0);
    let crashed = open_sim(&after_crash, small_config());
    assert_records(&read_all(&crashed), 0, 0);
    assert_eq!(crashed.next_offset(), Offset(20));
}

/// Method: make fsync fail once. The log must refuse writes from then on
/// (the kernel may have dropped the pages) while reads keep working.
#[test]
fn a_failed_fsync_poisons_the_log_for_writes_only() {
    let disk = SimDisk::new();
    let mut log = open_sim(&disk, small_config());
    append_records(&mut log, 5, 5, 0, 50);
    disk.set_fail_syncs(true);
    assert!(matches!(log.flush(), Err(EngineError::Io { .. })));
    disk.set_fail_syncs(false);
    assert!(log.is_poisoned());
    assert!(matches!(log.flush(), Err(EngineError::Poisoned)));
    let mut batch = Batch::from_records(&[record_for(5, 0, 10)]).expect("batch");
    assert!(matches!(log.append(&mut batch), Err(EngineError::Poisoned)));
    assert!(matches!(
        log.truncate_from(Offset(0)),
        Err(EngineError::Poisoned)
    ));
    assert_eq!(log.durable_offset(), Offset(0));
    assert_records(&read_all(&log), 0, 0);
    drop(log);
    let log = open_sim(&disk, small_config());
    assert_eq!(
        log.durable_offset(),
        Offset(5),
        "reopen re-reads the disk and fsyncs"
    );
}

#[test]
fn oversize_records_never_reach_the_log() {
    let mut record = NewRecord::new(Default::default(), Default::default(), vec![0u8; 17 << 20]);
    assert!(matches!(
        Batch::from_records(&[record.clone()]),
        Err(EngineError::RecordTooLarge { .. })
    ));
    record.payload = vec![0u8; 16 << 20].into();
    let mut batch = Batch::from_records(&[record.clone()]).expect("one at the limit");
    assert!(matches!(
        batch.push(&record),
        Err(EngineError::BatchTooLarge { .. })
    ));
    // A record at the limit fits a log whose segments are smaller: it gets
    // a segment of its own.
    let disk = SimDisk::new();
    let mut log = open_sim(&disk, small_config());
    append_records(&mut log, 3, 3, 0, 10);
    log.append(&mut batch).expect("append the big record");
    append_records(&mut log, 3, 3, 0, 10);
    assert_eq!(
        log.read(Offset(3), 1, 1).expect("read")[0].payload.len(),
        16 << 20
    );
    assert!(disk.file_names(Path::new(SIM_DIR)).len() >= 3);
}
