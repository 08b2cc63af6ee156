//! Goal: a replica repairs a damaged sealed segment from another replica's
//! copy of the same records. Only whole, verified batches holding exactly
//! the segment's offsets are accepted, and a crash at any point of the
//! swap leaves a log that opens, reads correctly where it is whole, and
//! can still be repaired. Method: two logs fed the same batches with
//! different segment sizes (so their files differ); damage one, copy from
//! the other, replace; feed bad replacements; crash the simulated disk
//! before every operation of a replacement.

use std::path::Path;
use std::sync::Arc;

use sluice_engine::sim::{CrashMode, SimDisk};
use sluice_engine::{EngineError, Log, LogConfig, Offset, SegmentInfo};

use crate::common::{append_records, assert_records, read_all, small_config};

/// The peer's configuration: one big segment, so its boundaries differ.
fn peer_config() -> LogConfig {
    LogConfig {
        segment_bytes_max: 1 << 20,
        ..small_config()
    }
}

/// Writes the same 100 records (3 to a batch) to `log` and flushes.
fn fill(log: &mut Log) {
    append_records(log, 100, 3, 0, 100);
    log.flush().expect("flush");
}

/// The second sealed segment of `log`, the one the tests damage.
fn victim(log: &Log) -> SegmentInfo {
    let info = log.segments()[1].clone();
    assert!(info.sealed, "the second segment is sealed");
    info
}

fn flip(bytes: &mut [u8], at: usize) {
    bytes[at] ^= 0x10;
}

/// Two logs with the same records (different segment sizes), the first
/// with its second segment damaged on disk.
struct Twins {
    dir: tempfile::TempDir,
    peer_dir: tempfile::TempDir,
    log: Log,
    peer: Log,
    info: SegmentInfo,
    /// The damaged segment's bytes as now on disk.
    damaged: Vec<u8>,
}

impl Twins {
    fn new() -> Twins {
        let (dir, peer_dir) = (
            tempfile::tempdir().expect("dir"),
            tempfile::tempdir().expect("dir"),
        );
        let mut log = Log::open(dir.path(), small_config()).expect("open");
        let mut peer = Log::open(peer_dir.path(), peer_config()).expect("open peer");
        fill(&mut log);
        fill(&mut peer);
        let info = victim(&log);
        let mut damaged = std::fs::read(&info.path).expect("read");
        flip(&mut damaged, 200);
        std::fs::write(&info.path, &damaged).expect("damage");
        Twins {
            dir,
            peer_dir,
            log,
            peer,
            info,
            damaged,
        }
    }
}

#[test]
fn a_damaged_sealed_segment_is_replaced_by_a_peers_batches() {
    let Twins {
        dir,
        peer_dir: _peer_dir,
        log,
        peer,
        info,
        ..
    } = Twins::new();
    // Reads trust what this process appended; a reopened log checks.
    drop(log);
    let mut log = Log::open(dir.path(), small_config()).expect("reopen");
    let scrubbed = log
        .verify_segment(info.base)
        .expect_err("the scrubber finds it");
    assert_eq!(
        scrubbed.damaged_segment_base(),
        Some(info.base),
        "{scrubbed}"
    );

    let err = log
        .read(info.base, 1000, 1 << 20)
        .expect_err("damaged read");
    assert_eq!(err.damaged_segment_base(), Some(info.base), "{err}");
    let bytes = peer.copy_batches(info.base, info.next).expect("copy");
    assert_eq!(
        bytes.len() as u64,
        info.len_bytes,
        "same records, same size"
    );
    log.replace_sealed_segment(info.base, &bytes)
        .expect("replace");

    log.verify_segment(info.base)
        .expect("the repaired segment verifies");
    assert_records(&read_all(&log), 0, 0);
    drop(log);
    let log = Log::open(dir.path(), small_config()).expect("reopen");
    for base in log.segment_bases() {
        log.verify_segment(base).expect("every segment verifies");
    }
    assert_records(&read_all(&log), 0, 0);
}

#[test]
fn replacements_that_are_not_exactly_the_segment_are_refused() {
    let Twins {
        dir: _dir,
        peer_dir: _peer_dir,
        mut log,
        peer,
        info,
        damaged,
    } = Twins::new();
    let good = peer.copy_batches(info.base, info.next).expect("copy");

    let mut flipped = good.clone();
    flip(&mut flipped, 300);
    let longer = peer
        .copy_batches(info.base, info.next.plus(3))
        .expect("one more batch");
    let cases: Vec<(&str, Offset, Vec<u8>)> = vec![
        ("cut", info.base, good[..good.len() - 1].to_vec()),
        ("flipped", info.base, flipped),
        ("one batch more", info.base, longer),
        (
            "one batch less",
            info.base,
            peer.copy_batches(info.base, Offset(info.next.0 - 3))
                .expect("copy"),
        ),
        ("empty", info.base, Vec::new()),
    ];
    for (what, base, bytes) in cases {
        let err = log.replace_sealed_segment(base, &bytes).expect_err(what);
        assert!(
            matches!(err, EngineError::ReplacementRefused { .. }),
            "{what}: {err}"
        );
        assert_eq!(
            std::fs::read(&info.path).expect("read"),
            damaged,
            "{what}: untouched"
        );
    }
    let active = log.segments().pop().expect("active");
    let err = log
        .replace_sealed_segment(active.base, &good)
        .expect_err("the active segment");
    assert!(
        matches!(err, EngineError::ReplacementRefused { .. }),
        "{err}"
    );
    let err = log
        .replace_sealed_segment(info.base.plus(1), &good)
        .expect_err("no such segment");
    assert!(matches!(err, EngineError::NoSuchSegment { .. }), "{err}");

    let err = peer
        .copy_batches(info.base.plus(1), info.next)
        .expect_err("splits a batch");
    assert!(matches!(err, EngineError::NotAligned { .. }), "{err}");
    let end = peer.next_offset();
    for (from, to) in [(end, end.plus(1)), (info.next, info.base)] {
        let err = peer.copy_batches(from, to).expect_err("outside");
        assert!(matches!(err, EngineError::OffsetOutOfRange { .. }), "{err}");
    }
    // The good copy still works after all that.
    log.replace_sealed_segment(info.base, &good)
        .expect("replace");
    assert_records(&read_all(&log), 0, 0);
}

/// A sim-disk log with its second segment damaged (durably), and the
/// batches that repair it.
fn damaged_sim_log() -> (SimDisk, Log, SegmentInfo, Vec<u8>) {
    let disk = SimDisk::new();
    let mut log = Log::open_on(Arc::new(disk.clone()), "/sim/log", small_config()).expect("open");
    let mut peer =
        Log::open_on(Arc::new(disk.clone()), "/sim/peer", peer_config()).expect("open peer");
    fill(&mut log);
    fill(&mut peer);
    let info = victim(&log);
    // Seals are never fsynced: the kernel writes them back in its own
    // time. Let that time pass, so the crashes below test the repair.
    for name in disk.file_names(Path::new("/sim/log")) {
        let path = Path::new("/sim/log").join(name);
        let bytes = disk.read_file(&path).expect("read");
        disk.write_file(&path, &bytes).expect("write back");
    }
    let mut bytes = disk.read_file(&info.path).expect("read");
    flip(&mut bytes, 200);
    disk.write_file(&info.path, &bytes).expect("damage");
    drop(log);
    let log = Log::open_on(Arc::new(disk.clone()), "/sim/log", small_config()).expect("reopen");
    let good = peer.copy_batches(info.base, info.next).expect("copy");
    (disk, log, info, good)
}

/// Method: crash before each disk operation of a replacement, keeping any
/// subset of what was not fsynced; the image must open, read every other
/// segment, read the victim whole or report it corrupt, and accept the
/// repair again.
#[test]
fn a_crash_at_any_point_of_a_replacement_leaves_a_repairable_log() {
    let ops = {
        let (disk, mut log, info, good) = damaged_sim_log();
        let before = disk.op_count();
        log.replace_sealed_segment(info.base, &good)
            .expect("replace");
        disk.op_count() - before
    };
    assert!(ops >= 5, "a replacement is several operations ({ops})");
    for op in 1..=ops {
        for (seed, mode) in CrashMode::ALL.into_iter().enumerate() {
            let (disk, mut log, info, good) = damaged_sim_log();
            disk.crash_at_op(op, mode, seed as u64);
            let _ = log.replace_sealed_segment(info.base, &good);
            drop(log);
            let image = disk.crash_image().expect("the crash happened");
            let mut log = Log::open_on(Arc::new(image), Path::new("/sim/log"), small_config())
                .unwrap_or_else(|e| panic!("op {op}, {mode:?}: open failed: {e}"));
            assert_records(
                &log.read(Offset(0), info.base.0 as usize, 1 << 20)
                    .expect("the first segment"),
                0,
                0,
            );
            match log.read(info.base, 1000, 1 << 20) {
                Ok(records) => assert_records(&records, info.base.0, 0),
                Err(e) => assert_eq!(e.damaged_segment_base(), Some(info.base), "{e}"),
            }
            log.replace_sealed_segment(info.base, &good)
                .unwrap_or_else(|e| panic!("op {op}, {mode:?}: repair after the crash: {e}"));
            assert_records(&read_all(&log), 0, 0);
        }
    }
}
