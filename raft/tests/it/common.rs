//! Helpers: WALs on the simulated disk and writes that wait for their flush.

use std::sync::{Arc, mpsc};

use bytes::Bytes;
use sluice_engine::LogConfig;
use sluice_engine::sim::SimDisk;
use sluice_raft::{FlushCallback, GroupId, LogIndex, Wal, WalError};

/// Where WALs live on the simulated disk.
pub const WAL_DIR: &str = "/sim/wal";

/// Small segments, so that compaction has whole segments to delete, and
/// otherwise a node's WAL configuration (recycled segments, so that new
/// segments write over compacted ones).
pub fn config() -> LogConfig {
    LogConfig {
        segment_bytes_max: 4096,
        index_interval_bytes: 256,
        ..sluice_raft::node::wal_config_default()
    }
}

pub fn open(disk: &SimDisk) -> Result<Wal, WalError> {
    Wal::open_on(Arc::new(disk.clone()), WAL_DIR, config())
}

/// A callback and the receiver of its outcome.
pub fn flushed() -> (FlushCallback, mpsc::Receiver<std::io::Result<()>>) {
    let (tx, rx) = mpsc::channel();
    (Box::new(move |r| drop(tx.send(r))), rx)
}

/// Waits for a flush outcome; a dropped callback counts as a failure.
pub fn wait(rx: mpsc::Receiver<std::io::Result<()>>) -> std::io::Result<()> {
    rx.recv()
        .unwrap_or_else(|_| Err(std::io::Error::other("callback dropped")))
}

/// The payload of entry `index` of `group`, generation `generation`.
pub fn payload(group: GroupId, index: LogIndex, generation: u64) -> Bytes {
    Bytes::from(format!(
        "g{}-i{}-v{generation}-{}",
        group.0,
        index.0,
        "p".repeat((index.0 % 40) as usize)
    ))
}

/// Appends entries `from..from+count` and waits until they are durable.
pub fn append_durably(
    wal: &Wal,
    group: GroupId,
    from: u64,
    count: u64,
    generation: u64,
) -> Result<(), WalError> {
    let (cb, rx) = flushed();
    let entries =
        (from..from + count).map(|i| (LogIndex(i), payload(group, LogIndex(i), generation)));
    wal.append_entries(group, entries, cb)?;
    wait(rx).map_err(WalError::FlushFailed)
}
