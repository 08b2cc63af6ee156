//! Goal: recycled segment files (`LogConfig::recycle_segments_max`) give
//! back only what the log wrote at their offsets. A file is written over
//! only once nobody holds its bytes, and a recycled segment is sealed only
//! once its file's final length is durable.

use std::path::Path;

use sluice_engine::disk::Disk;
use sluice_engine::sim::{CrashMode, SimDisk};
use sluice_engine::{Log, LogConfig, Offset};

use crate::common::{
    SIM_DIR, append_records, assert_records, log_files, names_ending, open_sim, read_all,
};

fn recycling() -> LogConfig {
    LogConfig {
        segment_bytes_max: 4096,
        index_interval_bytes: 256,
        recycle_segments_max: 2,
        ..LogConfig::default()
    }
}

fn dir_names(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect()
}

/// A recycling log in `dir` holding 200 durable records in several
/// segments.
fn filled(dir: &Path) -> Log {
    let mut log = Log::open(dir, recycling()).expect("open");
    append_records(&mut log, 200, 4, 0, 100);
    log.flush().expect("flush");
    log
}

#[test]
fn purged_segments_become_spares_that_new_segments_write_over() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = filled(dir.path());
    let bases = log.segment_bases();
    assert!(bases.len() >= 5, "{bases:?}");
    let logs_before = log_files(dir.path()).len();

    log.purge_before(bases[3]).expect("purge");
    let names = dir_names(dir.path());
    assert_eq!(
        names_ending(&names, ".spare"),
        2,
        "two spares at most: {names:?}"
    );
    assert_eq!(log_files(dir.path()).len(), logs_before - 3, "{names:?}");

    append_records(&mut log, 200, 4, 0, 100);
    log.flush().expect("flush");
    let names = dir_names(dir.path());
    assert_eq!(
        names_ending(&names, ".spare"),
        0,
        "both spares reused: {names:?}"
    );
    let start = log.start_offset().0;
    assert_eq!(start, bases[3].0);
    assert_records(&read_all(&log), start, 0);

    drop(log);
    let log = Log::open(dir.path(), recycling()).expect("reopen");
    assert_eq!(log.next_offset(), Offset(400));
    let records = read_all(&log);
    assert_eq!(records.len() as u64, 400 - start);
    assert_records(&records, start, 0);
}

#[test]
fn a_segment_someone_still_reads_is_deleted_not_recycled() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = filled(dir.path());
    let bases = log.segment_bases();
    let held = log.read(Offset(0), 10, 1 << 20).expect("read");

    log.purge_before(bases[1]).expect("purge");
    assert_eq!(names_ending(&dir_names(dir.path()), ".spare"), 0);
    // The reader's bytes are the old file's, untouched by later appends.
    append_records(&mut log, 100, 4, 0, 100);
    log.flush().expect("flush");
    assert_records(&held, 0, 0);

    drop(held);
    log.purge_before(bases[2]).expect("purge");
    assert_eq!(names_ending(&dir_names(dir.path()), ".spare"), 1);
}

#[test]
fn spares_over_the_configured_count_are_deleted_at_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = filled(dir.path());
    log.purge_before(log.segment_bases()[3]).expect("purge");
    drop(log);
    assert_eq!(names_ending(&dir_names(dir.path()), ".spare"), 2);

    let off = LogConfig {
        recycle_segments_max: 0,
        ..recycling()
    };
    let log = Log::open(dir.path(), off).expect("reopen without recycling");
    assert_eq!(names_ending(&dir_names(dir.path()), ".spare"), 0);
    assert_records(&read_all(&log), log.start_offset().0, 0);
}

/// A log on `disk` whose active segment was made from a spare and holds
/// `count` records; returns it with the number of records written.
fn log_on_a_recycled_segment(disk: &SimDisk, count: u64) -> (Log, u64) {
    let mut log = open_sim(disk, recycling());
    append_records(&mut log, 200, 4, 0, 100);
    log.flush().expect("flush");
    log.purge_before(log.segment_bases()[2]).expect("purge");
    log.roll().expect("roll onto a spare");
    assert_eq!(
        names_ending(&disk.file_names(Path::new(SIM_DIR)), ".spare"),
        1
    );
    append_records(&mut log, count, 5, 0, 100);
    (log, 200 + count)
}

/// Method: the flusher's fsync runs before a roll cuts the recycled active
/// file to its length, and completes after it. That fsync did not sync the
/// cut, so the rolled segment must stay unsealed (a seal records the
/// file's length) until a later flush; a power loss then must open.
#[test]
fn a_rolled_recycled_segment_is_sealed_only_after_its_cut_is_synced() {
    let disk = SimDisk::new();
    let (mut log, written) = log_on_a_recycled_segment(&disk, 10);
    let ticket = log.flush_ticket().expect("ticket");
    let synced = ticket.sync();
    log.roll().expect("roll: cuts the recycled file");
    assert_eq!(
        log.complete_flush(ticket, synced).expect("complete"),
        Offset(written)
    );
    let rolled = &log.segments()[log.segments().len() - 2];
    assert!(!rolled.sealed, "sealed before its cut was durable");

    let image = disk.crash(CrashMode::LoseAll, 0);
    let recovered = open_sim(&image, recycling());
    assert_eq!(recovered.next_offset(), Offset(written));
    assert_records(&read_all(&recovered), recovered.start_offset().0, 0);

    log.flush().expect("flush");
    let rolled = &log.segments()[log.segments().len() - 2];
    assert!(rolled.sealed, "the next flush seals it");
}

/// Defence in depth: a flush syncs a rolled file's cut before any later
/// segment's data, but were the cut lost anyway, the rolled segment's
/// stale bytes must not pass for damage to durable data: its batches
/// reach the next segment's base, so recovery cuts the stale bytes and
/// keeps the segments after it.
#[test]
fn stale_bytes_after_a_complete_rolled_segment_are_cut_not_fatal() {
    let disk = SimDisk::new();
    let (mut log, _) = log_on_a_recycled_segment(&disk, 10);
    log.roll().expect("roll");
    log.flush().expect("flush");
    append_records(&mut log, 8, 4, 0, 100);
    log.flush().expect("flush");
    append_records(&mut log, 8, 4, 0, 100);
    log.flush()
        .expect("flush: a batch stamped durable past the rolled one");
    let written = log.next_offset();
    let infos = log.segments();
    let rolled = infos[infos.len() - 2].clone();
    assert!(rolled.sealed);
    drop(log);

    // The rolled file as a lost cut leaves it: unsealed, with a stale
    // (valid, out-of-sequence) batch after its last one.
    let mut bytes = disk.read_file(&rolled.path).expect("read");
    let stale = bytes[..bytes.len() / 2].to_vec();
    bytes.extend_from_slice(&stale);
    disk.write_file(&rolled.path, &bytes).expect("write");
    disk.remove_file(&rolled.path.with_extension("seal"))
        .expect("unseal");

    let log = open_sim(&disk, recycling());
    assert_eq!(log.next_offset(), written);
    let records = read_all(&log);
    assert_eq!(records.len() as u64, written.0 - log.start_offset().0);
    assert_records(&records, log.start_offset().0, 0);
    let reopened = &log.segments()[log.segments().len() - 2];
    assert_eq!(reopened.len_bytes, rolled.len_bytes);
}
