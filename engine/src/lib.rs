//! `sluice-engine`: Sluice's segmented, append-only, checksummed log.
//!
//! A [`Log`] is a directory of segments named by base offset. Each segment
//! is a `.log` file of **batches** (a fixed header with its own CRC, then
//! records protected by a second CRC), a sparse offset index and a time
//! index (caches, rebuilt when missing or stale), and, once the segment is
//! full and immutable, a `.seal` file that lets `open` check it without
//! reading it. The byte-level format is `docs/format.md`; [`format`] mirrors
//! it.
//!
//! The engine serves two roles in Sluice: each node's write-ahead log of
//! Raft entries, and one log per queue partition. It knows nothing of
//! either: a record is an id, a timestamp, an expiry, a few headers and an
//! opaque payload.
//!
//! ```
//! use sluice_engine::{Batch, Log, LogConfig, MessageId, NewRecord, Offset, Timestamp};
//! # let dir = tempfile::tempdir().unwrap();
//! let mut log = Log::open(dir.path(), LogConfig::default())?;
//! let mut batch = Batch::new();
//! batch.push(&NewRecord::new(Timestamp::now(), MessageId([1; 16]), &b"hello"[..]))?;
//! let appended = log.append(&mut batch)?;  // readable now
//! log.flush()?;                             // durable now
//! assert_eq!(log.durable_offset(), Offset(1));
//! let records = log.read(appended.base_offset, 100, 1 << 20)?;
//! assert_eq!(&records[0].payload[..], b"hello");
//! # Ok::<(), sluice_engine::EngineError>(())
//! ```
//!
//! Module map: [`record`] (types), `batch` (building batches), `format`
//! (bytes on disk), `segment` (one segment), `index` (sparse indexes),
//! `recovery` (open), `log` (the API), [`disk`] (the I/O seam) and, with the
//! `sim` feature, `sim` (a disk that loses un-fsynced writes at a crash).

#![deny(missing_docs)]

mod batch;
mod config;
pub mod disk;
mod error;
pub mod format;
mod index;
pub mod limits;
mod log;
mod pool;
pub mod record;
mod recovery;
mod segment;
#[cfg(any(test, feature = "sim"))]
pub mod sim;

pub use batch::Batch;
pub use config::LogConfig;
pub use error::EngineError;
pub use log::{Appended, COPY_BYTES_MAX, Detached, FlushTicket, Log, RetentionReport, SegmentInfo};
pub use record::{MessageId, NewRecord, Offset, Record, Timestamp};
pub use segment::SegmentCheck;
