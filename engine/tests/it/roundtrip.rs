//! Goal: whatever is appended reads back exactly, across segment rolls,
//! reopen and any read chunking, in both write modes (with direct writes,
//! reads span bytes written out and bytes still held in memory). Method:
//! proptest against a model (a `Vec` of the records appended), on the real
//! disk so mmap reads are exercised.

use bytes::Bytes;
use proptest::prelude::*;
use sluice_engine::disk::WriteMode;
use sluice_engine::{Batch, Log, LogConfig, MessageId, NewRecord, Offset, Timestamp};

fn arb_record() -> impl Strategy<Value = NewRecord> {
    (
        0u64..1_000_000,
        any::<Option<u32>>(),
        any::<[u8; 16]>(),
        prop::collection::vec(
            ("[a-z]{1,8}", prop::collection::vec(any::<u8>(), 0..20)),
            0..3,
        ),
        prop::collection::vec(any::<u8>(), 0..600),
    )
        .prop_map(|(ts, ttl, id, headers, payload)| NewRecord {
            timestamp: Timestamp(ts),
            expires_at: ttl.map_or(Timestamp::NEVER, |t| Timestamp(ts + u64::from(t))),
            id: MessageId(id),
            headers: headers
                .into_iter()
                .map(|(k, v)| (k, Bytes::from(v)))
                .collect(),
            payload: payload.into(),
        })
}

#[derive(Debug, Clone)]
enum Step {
    Append(Vec<NewRecord>),
    Flush,
    /// Start writeback (with direct writes: write the pending bytes out).
    Writeback,
    /// Read everything appended so far.
    Check,
    Reopen,
}

fn arb_step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => prop::collection::vec(arb_record(), 1..12).prop_map(Step::Append),
        1 => Just(Step::Flush),
        1 => Just(Step::Writeback),
        1 => Just(Step::Check),
        1 => Just(Step::Reopen),
    ]
}

fn check_equal(log: &Log, model: &[NewRecord], max_records: usize, max_bytes: usize) {
    let mut at = Offset(0);
    while at.0 < model.len() as u64 {
        let chunk = log.read(at, max_records, max_bytes).expect("read");
        assert!(!chunk.is_empty());
        assert!(chunk.len() <= max_records);
        let bytes: usize = chunk.iter().map(|r| r.encoded_len()).sum();
        assert!(
            chunk.len() == 1 || bytes <= max_bytes,
            "read over its byte budget"
        );
        for r in &chunk {
            let m = &model[r.offset.0 as usize];
            assert_eq!(r.offset, at);
            assert_eq!(
                (r.timestamp, r.expires_at, r.id),
                (m.timestamp, m.expires_at, m.id)
            );
            assert_eq!(r.payload, m.payload);
            let headers: Vec<_> = r
                .headers()
                .map(|(k, v)| (k.to_owned(), Bytes::copy_from_slice(v)))
                .collect();
            assert_eq!(headers, m.headers);
            at = at.plus(1);
        }
    }
    assert_eq!(log.read(at, 10, 1000).expect("read at end"), vec![]);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn random_batches_round_trip_across_rolls_and_reopen(
        steps in prop::collection::vec(arb_step(), 1..40),
        max_records in 1usize..50,
        max_bytes in 1usize..5000,
        direct in any::<bool>(),
    ) {
        let dir = tempfile::tempdir().expect("tempdir");
        let write_mode = if direct { WriteMode::Direct } else { WriteMode::Buffered };
        let config = LogConfig { segment_bytes_max: 4096, index_interval_bytes: 128, write_mode, ..LogConfig::default() };
        let mut log = Log::open(dir.path(), config.clone()).expect("open");
        let mut model: Vec<NewRecord> = Vec::new();
        for step in steps {
            match step {
                Step::Append(records) => {
                    let mut batch = Batch::from_records(&records).expect("within limits");
                    let a = log.append(&mut batch).expect("append");
                    prop_assert_eq!(a.base_offset, Offset(model.len() as u64));
                    model.extend(records);
                    prop_assert_eq!(a.last_offset, Offset(model.len() as u64 - 1));
                }
                Step::Flush => {
                    prop_assert_eq!(log.flush().expect("flush"), Offset(model.len() as u64));
                }
                Step::Writeback => {
                    for (file, from, len) in log.writeback_due() {
                        file.start_writeback(from, len).expect("writeback");
                    }
                }
                Step::Check => check_equal(&log, &model, max_records, max_bytes),
                Step::Reopen => {
                    drop(log);
                    log = Log::open(dir.path(), config.clone()).expect("reopen");
                    prop_assert_eq!(log.durable_offset(), Offset(model.len() as u64));
                }
            }
        }
        check_equal(&log, &model, max_records, max_bytes);
        drop(log);
        let log = Log::open(dir.path(), config).expect("final reopen");
        prop_assert_eq!(log.next_offset(), Offset(model.len() as u64));
        check_equal(&log, &model, max_records, max_bytes);
        for base in log.segment_bases() {
            log.verify_segment(base).expect("every segment verifies");
        }
    }
}

/// Goal: records are readable before any fsync, and the durable offset moves
/// only on flush.
#[test]
fn appends_are_readable_at_once_and_durable_after_flush() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = Log::open(dir.path(), crate::common::small_config()).expect("open");
    crate::common::append_records(&mut log, 50, 7, 0, 100);
    crate::common::assert_records(&crate::common::read_all(&log), 0, 0);
    // Rolling does not fsync: nothing is durable until a flush, which then
    // covers every segment rolled since the last one.
    assert!(
        log.segment_bases().len() > 1,
        "the appends crossed segments"
    );
    assert_eq!(log.durable_offset(), Offset(0));
    assert_eq!(log.flush().expect("flush"), Offset(50));
}

/// Goal: a segment rolls by age as well as size. Method: an age limit of
/// zero rolls before every append to a non-empty segment.
#[test]
fn segments_roll_by_age() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = LogConfig {
        segment_age_max: std::time::Duration::ZERO,
        ..LogConfig::default()
    };
    let mut log = Log::open(dir.path(), config).expect("open");
    crate::common::append_records(&mut log, 5, 1, 0, 10);
    assert_eq!(log.segment_bases(), (0..5).map(Offset).collect::<Vec<_>>());
}

/// Goal: with direct writes, a reader of the newest records gets them from
/// memory: reading them neither writes them out nor waits for the device.
/// Method: the segment file stays empty on disk through appends and reads,
/// and holds every byte after a flush.
#[test]
fn direct_writes_serve_the_newest_records_from_memory() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = LogConfig {
        write_mode: WriteMode::Direct,
        ..LogConfig::default()
    };
    let mut log = Log::open(dir.path(), config).expect("open");
    let file = dir.path().join(format!("{:020}.log", 0));
    let on_disk = || std::fs::metadata(&file).expect("stat").len();
    // 1.2 MB: over what a writeback leaves in memory.
    crate::common::append_records(&mut log, 40, 4, 0, 30_000);
    let records = crate::common::read_all(&log);
    assert_eq!(records.len(), 40);
    crate::common::assert_records(&records, 0, 0);
    assert_eq!(on_disk(), 0, "a read wrote the newest records out");
    // Half written out (writeback, no fsync), half appended after: one
    // read spans both.
    for (segment, from, len) in log.writeback_due() {
        segment.start_writeback(from, len).expect("writeback");
    }
    let written = on_disk();
    assert!(written > 0, "writeback wrote the pending records out");
    crate::common::append_records(&mut log, 40, 4, 0, 300);
    crate::common::assert_records(&crate::common::read_all(&log), 0, 0);
    assert_eq!(log.read(Offset(0), 100, 4 << 20).expect("read").len(), 80);
    assert_eq!(on_disk(), written, "a read wrote the newest records out");
    assert_eq!(log.flush().expect("flush"), Offset(80));
    assert!(on_disk() > written);
}
