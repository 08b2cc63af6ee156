//! Goal: truncation, purge and retention remove exactly what they say, at
//! and inside segment boundaries, durably, and never pull bytes from under
//! a reader.

use sluice_engine::{Batch, EngineError, Log, LogConfig, MessageId, NewRecord, Offset, Timestamp};

use crate::common::{append_records, assert_records, read_all, small_config};

fn log_with(dir: &std::path::Path, count: u64, per_batch: u64) -> Log {
    let mut log = Log::open(dir, small_config()).expect("open");
    append_records(&mut log, count, per_batch, 0, 100);
    log.flush().expect("flush");
    log
}

/// Method: for cut points at, just before and just after every segment
/// base, inside batches, at the start and at the end, truncate a fresh log,
/// check the prefix, reopen, then append a new generation after the cut.
#[test]
fn truncate_keeps_exactly_the_prefix_at_and_inside_segment_boundaries() {
    let probe_dir = tempfile::tempdir().expect("tempdir");
    let bases = log_with(probe_dir.path(), 300, 4).segment_bases();
    assert!(bases.len() >= 5);
    let mut cuts: Vec<u64> = vec![0, 1, 2, 150, 299, 300];
    for b in &bases[1..] {
        cuts.extend([b.0 - 1, b.0, b.0 + 1, b.0 + 2]);
    }
    for cut in cuts {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut log = log_with(dir.path(), 300, 4);
        log.truncate_from(Offset(cut)).expect("truncate");
        assert_eq!(log.next_offset(), Offset(cut));
        assert_eq!(log.durable_offset(), Offset(cut));
        assert_records(&read_all(&log), 0, 0);
        drop(log);
        let mut log = Log::open(dir.path(), small_config()).expect("reopen");
        assert_eq!(
            log.next_offset(),
            Offset(cut),
            "cut at {cut} survives reopen"
        );
        append_records(&mut log, 20, 3, 1, 100);
        let all = read_all(&log);
        assert_records(&all[..cut as usize], 0, 0);
        assert_records(&all[cut as usize..], cut, 1);
        for base in log.segment_bases() {
            if base < log.segment_bases()[log.segment_bases().len() - 1] {
                log.verify_segment(base).expect("sealed segments verify");
            }
        }
    }
}

/// Method: hold records read from the active and a sealed segment (zero-copy
/// slices of their mappings), truncate through both and overwrite the same
/// offsets with new data; the held records must be unchanged.
#[test]
fn truncation_never_changes_bytes_a_reader_holds() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = log_with(dir.path(), 300, 4);
    let held = read_all(&log);
    log.truncate_from(Offset(10)).expect("truncate");
    append_records(&mut log, 290, 5, 7, 100);
    log.flush().expect("flush");
    assert_records(&held, 0, 0);
    assert_records(&read_all(&log)[10..], 10, 7);
}

#[test]
fn truncate_outside_the_log_is_a_typed_error_or_a_no_op() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = log_with(dir.path(), 300, 4);
    log.truncate_from(Offset(1000))
        .expect("past the end is a no-op");
    assert_eq!(log.next_offset(), Offset(300));
    let start = log.purge_before(Offset(100)).expect("purge");
    assert!(matches!(
        log.truncate_from(Offset(start.0 - 1)),
        Err(EngineError::OffsetOutOfRange { .. })
    ));
}

/// Method: purge at, before and after segment boundaries; only whole
/// segments below the offset go, the active segment never does, and reads
/// below the new start are a typed error.
#[test]
fn purge_removes_only_whole_segments_below_the_offset() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = log_with(dir.path(), 300, 4);
    let bases = log.segment_bases();
    assert_eq!(
        log.purge_before(Offset(bases[1].0 - 1)).expect("purge"),
        Offset(0)
    );
    assert_eq!(log.purge_before(bases[1]).expect("purge"), bases[1]);
    assert_eq!(
        log.purge_before(Offset(bases[3].0 + 1)).expect("purge"),
        bases[3]
    );
    assert!(matches!(
        log.read(Offset(0), 1, 100),
        Err(EngineError::OffsetOutOfRange { .. })
    ));
    assert_records(&read_all(&log), bases[3].0, 0);
    let last = *bases.last().expect("bases");
    assert_eq!(log.purge_before(Offset(10_000)).expect("purge all"), last);
    drop(log);
    let log = Log::open(dir.path(), small_config()).expect("reopen");
    assert_eq!(log.start_offset(), last);
    assert_eq!(log.next_offset(), Offset(300));
}

fn record_expiring(n: u64, expires_at: u64) -> NewRecord {
    NewRecord {
        timestamp: Timestamp(n),
        expires_at: Timestamp(expires_at),
        id: MessageId([0; 16]),
        headers: vec![],
        payload: vec![1u8; 450].into(),
    }
}

/// Method: segments whose records expire at increasing times, one segment
/// holding a record that never expires; retention at several "now"s.
#[test]
fn retention_deletes_only_a_fully_expired_prefix_of_sealed_segments() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = Log::open(dir.path(), small_config()).expect("open");
    // 7 batches of 556 bytes fill one 4 KiB segment; segment k expires at
    // 100 * (k + 1), except segment 3, which holds one immortal record.
    for n in 0..56u64 {
        let segment = n / 7;
        let expires = if n == 3 * 7 + 2 {
            u64::MAX
        } else {
            100 * (segment + 1)
        };
        log.append(&mut Batch::from_records(&[record_expiring(n, expires)]).expect("b"))
            .expect("append");
    }
    let bases = log.segment_bases();
    assert_eq!(bases.len(), 8, "7 records per segment");
    assert_eq!(
        log.apply_retention(Timestamp(10_000))
            .expect("r")
            .segments_removed,
        0,
        "nothing sealed before a flush"
    );
    log.flush().expect("flush seals the rolled segments");
    let report = log.apply_retention(Timestamp(99)).expect("retention");
    assert_eq!(report.segments_removed, 0, "nothing expired yet");
    let report = log.apply_retention(Timestamp(200)).expect("retention");
    assert_eq!(
        (report.segments_removed, report.start_offset),
        (2, bases[2])
    );
    let report = log.apply_retention(Timestamp(10_000)).expect("retention");
    assert_eq!(
        report.start_offset, bases[3],
        "the immortal record keeps its segment and all after it"
    );
    assert_eq!(log.read(bases[3], 1, 1).expect("read")[0].offset, bases[3]);
}

#[test]
fn a_size_limit_applies_only_when_configured() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = LogConfig {
        retention_bytes_max: Some(10_000),
        ..small_config()
    };
    let mut log = Log::open(dir.path(), config).expect("open");
    append_records(&mut log, 300, 4, 0, 100);
    log.flush().expect("flush");
    let before = log.size_bytes();
    let report = log.apply_retention(Timestamp(0)).expect("retention");
    assert!(report.segments_removed > 0);
    assert_eq!(log.size_bytes(), before - report.bytes_removed);
    assert!(
        log.size_bytes() <= 10_000 + 4096,
        "within one segment of the limit"
    );

    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = Log::open(dir.path(), small_config()).expect("open");
    append_records(&mut log, 300, 4, 0, 100);
    assert_eq!(
        log.apply_retention(Timestamp(0))
            .expect("retention")
            .segments_removed,
        0
    );
}

#[test]
fn config_out_of_bounds_is_rejected() {
    let dir = tempfile::tempdir().expect("tempdir");
    for config in [
        LogConfig {
            segment_bytes_max: 100,
            ..LogConfig::default()
        },
        LogConfig {
            segment_bytes_max: 2 << 30,
            ..LogConfig::default()
        },
        LogConfig {
            index_interval_bytes: 1,
            ..LogConfig::default()
        },
        LogConfig {
            retention_bytes_max: Some(0),
            ..LogConfig::default()
        },
    ] {
        assert!(matches!(
            Log::open(dir.path(), config),
            Err(EngineError::InvalidConfig { .. })
        ));
    }
}

#[test]
fn a_second_open_of_the_same_directory_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let _log = Log::open(dir.path(), small_config()).expect("open");
    assert!(matches!(
        Log::open(dir.path(), small_config()),
        Err(EngineError::Locked { .. })
    ));
}

/// Method: detach the segments below a point; the log starts after them at
/// once while their files stay until `remove`; a reopen before that finds
/// them again (a log that starts earlier, as after a crash part-way through
/// a purge), and after it does not.
#[test]
fn detached_segments_leave_the_log_at_once_and_the_disk_on_remove() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = log_with(dir.path(), 300, 4);
    let bases = log.segment_bases();
    let detached = log.detach_before(bases[2]);
    assert_eq!(detached.len(), 2);
    assert_eq!(log.start_offset(), bases[2]);
    assert_records(&read_all(&log), bases[2].0, 0);
    drop(log);
    let reopened = Log::open(dir.path(), small_config()).expect("reopen");
    assert_eq!(reopened.start_offset(), Offset(0), "files still there");
    drop(reopened);
    detached.remove().expect("remove");
    let reopened = Log::open(dir.path(), small_config()).expect("reopen");
    assert_eq!(reopened.start_offset(), bases[2]);
    assert_records(&read_all(&reopened), bases[2].0, 0);
}

/// Method: ask for the writeback due after appends, again with none, and
/// after a roll: each range is reported once, and only what grew.
#[test]
fn writeback_is_due_once_for_each_appended_range() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = Log::open(dir.path(), small_config()).expect("open");
    append_records(&mut log, 3, 3, 0, 100);
    let first = log.writeback_due();
    assert_eq!(first.len(), 1, "the active segment grew");
    let (_, from, len) = &first[0];
    assert_eq!(*from, 0);
    assert!(*len > 300);
    assert!(log.writeback_due().is_empty(), "nothing new");
    append_records(&mut log, 1, 1, 0, 100);
    let second = log.writeback_due();
    assert_eq!(second.len(), 1);
    assert_eq!(second[0].1, *len, "starts where the last range ended");
}
