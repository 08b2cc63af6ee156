//! Goal: recovery forgives only a torn tail, and reports every other damage
//! as corruption naming the segment and offset. Method: damage real files
//! byte by byte (cut and flip) and reopen.

use std::path::{Path, PathBuf};

use sluice_engine::{EngineError, Log, LogConfig, Offset};

use crate::common::{append_records, assert_records, log_files, read_all, small_config};

/// A log of sealed segments plus an active one whose batches were each
/// flushed; returns the active file and the byte ranges of its batches.
fn flushed_log(dir: &Path) -> (PathBuf, Vec<(u64, u64, u64)>) {
    let mut log = Log::open(dir, small_config()).expect("open");
    append_records(&mut log, 100, 3, 0, 100);
    // Five batches of ~420 bytes fit one fresh 4 KiB segment.
    log.roll().expect("roll");
    let mut batches = Vec::new();
    for _ in 0..5 {
        let base = log.next_offset().0;
        let active = log_files(dir).pop().expect("active");
        let start = std::fs::metadata(&active).expect("meta").len();
        append_records(&mut log, 2, 2, 0, 100);
        log.flush().expect("flush");
        let end = std::fs::metadata(&active).expect("meta").len();
        batches.push((base, start, end));
    }
    let active = log_files(dir).pop().expect("active");
    // All five batches must share the active segment for the cases below.
    assert_eq!(batches[0].1, 0);
    assert!(
        batches.windows(2).all(|w| w[1].1 == w[0].2),
        "contiguous in one file"
    );
    (active, batches)
}

fn reopen(dir: &Path) -> Result<Log, EngineError> {
    Log::open(dir, small_config())
}

/// Method: cut the active segment at every byte inside its last batch, and
/// flip every byte of that batch; each reopen must yield exactly the
/// records before the batch, and a log that accepts new appends.
#[test]
fn a_torn_or_damaged_last_batch_is_cut_and_nothing_else_is_lost() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (active, batches) = flushed_log(dir.path());
    let original = std::fs::read(&active).expect("read");
    let (last_base, start, end) = batches[4];
    let mut damaged: Vec<Vec<u8>> = (start + 1..end)
        .map(|cut| original[..cut as usize].to_vec())
        .collect();
    for i in start..end {
        let mut b = original.clone();
        b[i as usize] ^= 0x5a;
        damaged.push(b);
    }
    for bytes in damaged {
        std::fs::write(&active, &bytes).expect("write");
        let mut log = reopen(dir.path()).expect("a torn tail is not an error");
        assert_eq!(log.next_offset(), Offset(last_base));
        assert_records(&read_all(&log), 0, 0);
        assert_eq!(
            std::fs::metadata(&active).expect("meta").len(),
            start,
            "cut at the batch"
        );
        append_records(&mut log, 1, 1, 0, 100);
        drop(log);
    }
}

/// Method: flip one byte inside an earlier batch of the active segment; the
/// batches after it were written after it was fsynced, so this is
/// corruption of durable data and open must refuse, naming where.
#[test]
fn damage_before_a_valid_later_batch_is_reported_not_cut() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (active, batches) = flushed_log(dir.path());
    let (base, start, end) = batches[1];
    for position in [start, start + 10, start + 70, end - 1] {
        let mut bytes = std::fs::read(&active).expect("read");
        bytes[position as usize] ^= 1;
        std::fs::write(&active, &bytes).expect("write");
        match reopen(dir.path()) {
            Err(EngineError::Corrupted {
                segment,
                offset,
                position: at,
                ..
            }) => {
                assert_eq!(segment, active);
                assert_eq!(offset, Offset(base));
                assert_eq!(at, start);
            }
            other => panic!("expected corruption, got {other:?}"),
        }
        bytes[position as usize] ^= 1;
        std::fs::write(&active, &bytes).expect("write");
        assert_records(&read_all(&reopen(dir.path()).expect("repaired")), 0, 0);
    }
}

/// Method: batches appended without any flush between them were never
/// durable, so damage in an early one with valid ones after it is what a
/// crash can leave (writes reach the disk out of order): open cuts there.
#[test]
fn damage_followed_only_by_never_durable_batches_is_cut() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = LogConfig {
        segment_bytes_max: 1 << 20,
        ..small_config()
    };
    let mut log = Log::open(dir.path(), config.clone()).expect("open");
    append_records(&mut log, 10, 2, 0, 100);
    log.flush().expect("flush");
    let active = log_files(dir.path()).pop().expect("active");
    let start = std::fs::metadata(&active).expect("meta").len();
    append_records(&mut log, 10, 2, 0, 100);
    drop(log);
    let mut bytes = std::fs::read(&active).expect("read");
    bytes[start as usize + 3] ^= 1;
    std::fs::write(&active, &bytes).expect("write");
    let log = Log::open(dir.path(), config).expect("cut, not refused");
    assert_eq!(log.next_offset(), Offset(10));
    assert_records(&read_all(&log), 0, 0);
}

/// Method: flip a byte in a sealed segment. Open does not read sealed
/// segments, so it succeeds; the read and the scrubber report corruption.
#[test]
fn damage_in_a_sealed_segment_is_reported_on_read_and_by_verify() {
    let dir = tempfile::tempdir().expect("tempdir");
    flushed_log(dir.path());
    let sealed = log_files(dir.path())[1].clone();
    let mut bytes = std::fs::read(&sealed).expect("read");
    bytes[200] ^= 0x10;
    std::fs::write(&sealed, &bytes).expect("write");
    let log = reopen(dir.path()).expect("open checks seals only");
    let bases = log.segment_bases();
    let err = log.read(bases[1], 1000, 1 << 20).expect_err("damaged read");
    assert!(
        matches!(&err, EngineError::Corrupted { segment, .. } if *segment == sealed),
        "{err}"
    );
    assert!(matches!(
        log.verify_segment(bases[1]),
        Err(EngineError::Corrupted { .. })
    ));
    log.verify_segment(bases[0])
        .expect("other segments are fine");
    assert_records(
        &log.read(bases[2], 5, 1 << 20).expect("after it"),
        bases[2].0,
        0,
    );
}

#[test]
fn a_sealed_segment_of_the_wrong_size_is_corruption() {
    let dir = tempfile::tempdir().expect("tempdir");
    flushed_log(dir.path());
    let sealed = log_files(dir.path())[1].clone();
    let original = std::fs::read(&sealed).expect("read");
    std::fs::write(&sealed, &original[..original.len() - 1]).expect("shorten");
    assert!(matches!(
        reopen(dir.path()),
        Err(EngineError::Corrupted { .. })
    ));
}

/// Method: seals are not fsynced, so a crash may leave one damaged. A seal
/// that fails its CRC counts as missing: the segment is verified in full and
/// sealed again, or, if the log is damaged too, reported as corrupt.
#[test]
fn a_damaged_seal_is_rebuilt_only_from_a_fully_valid_segment() {
    let dir = tempfile::tempdir().expect("tempdir");
    flushed_log(dir.path());
    let sealed = log_files(dir.path())[1].clone();
    let seal = sealed.with_extension("seal");
    let original_seal = std::fs::read(&seal).expect("seal");
    for damage in [vec![], original_seal[..30].to_vec(), {
        let mut s = original_seal.clone();
        s[20] ^= 1;
        s
    }] {
        std::fs::write(&seal, &damage).expect("damage seal");
        assert_records(&read_all(&reopen(dir.path()).expect("resealed")), 0, 0);
        assert_eq!(std::fs::read(&seal).expect("seal back"), original_seal);
    }
    std::fs::write(&seal, b"").expect("damage seal");
    let mut bytes = std::fs::read(&sealed).expect("read");
    bytes[100] ^= 1;
    std::fs::write(&sealed, &bytes).expect("damage log");
    assert!(matches!(
        reopen(dir.path()),
        Err(EngineError::Corrupted { .. })
    ));
}

/// Method: remove a middle segment; open names the two that do not meet.
#[test]
fn a_missing_segment_is_a_gap_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    flushed_log(dir.path());
    let files = log_files(dir.path());
    std::fs::remove_file(&files[2]).expect("rm");
    match reopen(dir.path()) {
        Err(EngineError::Gap {
            previous,
            expected,
            found,
        }) => {
            assert_eq!(previous, files[1]);
            assert!(expected < found);
        }
        other => panic!("expected a gap, got {other:?}"),
    }
}

/// Method: remove a sealed segment's seal. Open verifies it in full and
/// seals it again; if it is also damaged, open reports corruption.
#[test]
fn a_lost_seal_is_rebuilt_only_from_a_fully_valid_segment() {
    let dir = tempfile::tempdir().expect("tempdir");
    flushed_log(dir.path());
    let sealed = log_files(dir.path())[1].clone();
    let seal = sealed.with_extension("seal");
    let original_seal = std::fs::read(&seal).expect("seal");
    std::fs::remove_file(&seal).expect("rm seal");
    assert_records(&read_all(&reopen(dir.path()).expect("resealed")), 0, 0);
    assert_eq!(std::fs::read(&seal).expect("seal back"), original_seal);

    std::fs::remove_file(&seal).expect("rm seal");
    let mut bytes = std::fs::read(&sealed).expect("read");
    let n = bytes.len();
    bytes[n - 5] ^= 1;
    std::fs::write(&sealed, &bytes).expect("write");
    assert!(matches!(
        reopen(dir.path()),
        Err(EngineError::Corrupted { .. })
    ));
}

/// Method: a durable segment that lost its seal joins the unsealed tail.
/// Damage in it, with a later segment written after it was fsynced, is
/// corruption even though the damage is not in the last segment.
#[test]
fn damage_in_an_unsealed_segment_before_a_durable_later_segment_is_reported() {
    let dir = tempfile::tempdir().expect("tempdir");
    flushed_log(dir.path());
    let files = log_files(dir.path());
    let (previous, last) = (&files[files.len() - 2], &files[files.len() - 1]);
    assert!(std::fs::metadata(last).expect("meta").len() > 0);
    std::fs::remove_file(previous.with_extension("seal")).expect("rm seal");
    let mut bytes = std::fs::read(previous).expect("read");
    bytes[100] ^= 1;
    std::fs::write(previous, &bytes).expect("write");
    match reopen(dir.path()) {
        Err(EngineError::Corrupted {
            segment, reason, ..
        }) => {
            assert_eq!(&segment, previous);
            assert!(reason.contains(&last.display().to_string()), "{reason}");
        }
        other => panic!("expected corruption, got {other:?}"),
    }
}
