//! Helpers shared by the engine's integration tests: deterministic records
//! whose payload names their offset, and logs on either disk.

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use sluice_engine::sim::SimDisk;
use sluice_engine::{
    Batch, EngineError, Log, LogConfig, MessageId, NewRecord, Offset, Record, Timestamp,
};

/// The directory used for logs on the simulated disk.
pub const SIM_DIR: &str = "/sim/log";

/// Small segments so that tests cross many segment boundaries.
pub fn small_config() -> LogConfig {
    LogConfig {
        segment_bytes_max: 4096,
        index_interval_bytes: 256,
        ..LogConfig::default()
    }
}

/// Opens a log on a simulated disk.
pub fn open_sim(disk: &SimDisk, config: LogConfig) -> Log {
    Log::open_on(Arc::new(disk.clone()), SIM_DIR, config).expect("open on sim disk")
}

/// The record appended at `offset` in generation `generation`: its payload
/// spells both, so a reader can tell which write it sees.
pub fn record_for(offset: u64, generation: u64, size: usize) -> NewRecord {
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&offset.to_be_bytes());
    id[8..].copy_from_slice(&generation.to_be_bytes());
    let head = format!("o={offset};g={generation};");
    let mut payload = head.into_bytes();
    payload.resize(size.max(payload.len()), b'a' + (offset % 26) as u8);
    NewRecord {
        timestamp: Timestamp(1_000_000 + offset * 10),
        expires_at: Timestamp::NEVER,
        id: MessageId(id),
        headers: vec![("content-type".into(), Bytes::from_static(b"text/plain"))],
        payload: payload.into(),
    }
}

/// Appends `count` records from the log's end, `per_batch` to a batch, in
/// generation `generation`; returns the batches' base offsets.
pub fn append_records(
    log: &mut Log,
    count: u64,
    per_batch: u64,
    generation: u64,
    size: usize,
) -> Vec<Offset> {
    try_append_records(log, count, per_batch, generation, size, |_, _| {}).expect("append")
}

/// `append_records` that returns the first error instead of panicking, and
/// shows each record to `before_write` before its batch is appended.
pub fn try_append_records(
    log: &mut Log,
    count: u64,
    per_batch: u64,
    generation: u64,
    size: usize,
    mut before_write: impl FnMut(Offset, &NewRecord),
) -> Result<Vec<Offset>, EngineError> {
    let mut bases = Vec::new();
    let mut next = log.next_offset().0;
    let end = next + count;
    while next < end {
        let n = per_batch.min(end - next);
        let mut batch = Batch::new();
        for o in next..next + n {
            let record = record_for(o, generation, size);
            before_write(Offset(o), &record);
            batch.push(&record)?;
        }
        let appended = log.append(&mut batch)?;
        assert_eq!(appended.base_offset, Offset(next));
        assert_eq!(appended.last_offset, Offset(next + n - 1));
        bases.push(appended.base_offset);
        next += n;
    }
    Ok(bases)
}

/// Reads every record from the log's start, in chunks.
pub fn read_all(log: &Log) -> Vec<Record> {
    let mut out = Vec::new();
    let mut at = log.start_offset();
    while at < log.next_offset() {
        let chunk = log.read(at, 97, 10_000).expect("read");
        assert!(
            !chunk.is_empty(),
            "read at {at} returned nothing before the end"
        );
        at = chunk.last().expect("non-empty").offset.plus(1);
        out.extend(chunk);
    }
    out
}

/// Checks that `records` are exactly offsets `from..` written by
/// `record_for` in generation `generation`.
pub fn assert_records(records: &[Record], from: u64, generation: u64) {
    for (i, r) in records.iter().enumerate() {
        let o = from + i as u64;
        assert_eq!(r.offset, Offset(o));
        let expected = record_for(o, generation, r.payload.len());
        assert_eq!(r.payload, expected.payload, "payload at offset {o}");
        assert_eq!(r.id, expected.id, "id at offset {o}");
        assert_eq!(r.timestamp, expected.timestamp);
        assert_eq!(r.header("content-type"), Some(&b"text/plain"[..]));
    }
}

/// How many of `names` end with `ext`.
pub fn names_ending(names: &[String], ext: &str) -> usize {
    names.iter().filter(|n| n.ends_with(ext)).count()
}

/// The `.log` files of a real directory, sorted.
pub fn log_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    files.sort();
    files
}
