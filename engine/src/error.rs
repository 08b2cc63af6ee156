//! The engine's one error type. Callers branch on variants, never on text.

use std::io;
use std::path::PathBuf;

use crate::record::Offset;

/// Everything that can go wrong in the engine.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// An I/O operation failed (other than a full disk).
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },

    /// The disk is full: nothing was appended, and existing data is intact
    /// and readable.
    #[error("disk full while writing {path}")]
    DiskFull {
        /// The file being written.
        path: PathBuf,
    },

    /// Bytes on disk failed a check somewhere other than a torn tail.
    #[error("corrupted segment {segment} at offset {offset} (byte {position}): {reason}")]
    Corrupted {
        /// The segment file.
        segment: PathBuf,
        /// The offset expected at the damaged position.
        offset: Offset,
        /// Byte position in the segment file.
        position: u64,
        /// What check failed.
        reason: String,
    },

    /// Two neighbouring segments do not meet: records are missing between
    /// them, or they overlap.
    #[error(
        "segments do not meet: {previous} ends at offset {expected}, next segment starts at {found}"
    )]
    Gap {
        /// The earlier segment file.
        previous: PathBuf,
        /// Where the earlier segment ends (one past its last offset).
        expected: Offset,
        /// Where the next segment starts.
        found: Offset,
    },

    /// A record's payload is over `RECORD_PAYLOAD_BYTES_MAX`.
    #[error("record payload is {size_bytes} bytes, max {max_bytes}")]
    RecordTooLarge {
        /// The payload's size.
        size_bytes: usize,
        /// The limit.
        max_bytes: usize,
    },

    /// A batch would exceed `BATCH_RECORDS_BYTES_MAX`.
    #[error("batch would be {size_bytes} bytes, max {max_bytes}")]
    BatchTooLarge {
        /// The size the batch would have.
        size_bytes: usize,
        /// The limit.
        max_bytes: usize,
    },

    /// A batch would exceed `BATCH_RECORDS_MAX` records.
    #[error("batch would exceed {max} records")]
    BatchTooManyRecords {
        /// The limit.
        max: usize,
    },

    /// A batch with no records was appended.
    #[error("batch is empty")]
    EmptyBatch,

    /// A record header breaks a limit.
    #[error("invalid record header: {reason}")]
    InvalidHeader {
        /// Which limit.
        reason: String,
    },

    /// An offset outside `[start, next]` was asked for.
    #[error("offset {requested} is outside the log [{start}, {next})")]
    OffsetOutOfRange {
        /// The offset asked for.
        requested: Offset,
        /// The first offset still in the log.
        start: Offset,
        /// One past the last offset in the log.
        next: Offset,
    },

    /// A configuration value is invalid.
    #[error("invalid config {field}: {reason}")]
    InvalidConfig {
        /// The field.
        field: &'static str,
        /// Why.
        reason: String,
    },

    /// An fsync failed earlier. The kernel may have dropped the dirty pages,
    /// so retrying could report data durable that is not: the log refuses
    /// every write until it is reopened (and recovery re-reads the disk).
    #[error("log is poisoned by an earlier failed fsync; reopen it")]
    Poisoned,

    /// Another process (or another `Log` in this one) holds the directory.
    #[error("log directory {path} is locked by another user")]
    Locked {
        /// The directory.
        path: PathBuf,
    },

    /// A copy of a range of offsets would split a batch: the range's ends
    /// are not batch boundaries in this log.
    #[error("offset {offset} is not a batch boundary of this log")]
    NotAligned {
        /// The offset that falls inside a batch.
        offset: Offset,
    },

    /// Replacement bytes for a damaged segment do not hold exactly its
    /// records, whole and verified; nothing was changed.
    #[error("replacement for the segment at {base} refused: {reason}")]
    ReplacementRefused {
        /// The segment's base offset.
        base: Offset,
        /// What check failed.
        reason: String,
    },

    /// No segment starts at the base offset given to `verify_segment`.
    #[error("no segment with base offset {base}")]
    NoSuchSegment {
        /// The base offset asked for.
        base: Offset,
    },
}

/// `ENOSPC` on Linux and the BSDs.
const ENOSPC: i32 = 28;

impl EngineError {
    /// Wraps an I/O error, recognising a full disk.
    pub(crate) fn io(path: impl Into<PathBuf>, source: io::Error) -> EngineError {
        let path = path.into();
        if source.kind() == io::ErrorKind::StorageFull || source.raw_os_error() == Some(ENOSPC) {
            EngineError::DiskFull { path }
        } else {
            EngineError::Io { path, source }
        }
    }

    /// The base offset of the segment a `Corrupted` error names (parsed
    /// from its file name), so a caller can fence and repair that segment.
    pub fn damaged_segment_base(&self) -> Option<Offset> {
        let EngineError::Corrupted { segment, .. } = self else {
            return None;
        };
        let stem = segment.file_stem()?.to_str()?;
        let digits_only = stem.len() == 20 && stem.bytes().all(|b| b.is_ascii_digit());
        digits_only.then(|| stem.parse().ok().map(Offset)).flatten()
    }

    /// A corruption error.
    pub(crate) fn corrupted(
        segment: impl Into<PathBuf>,
        offset: Offset,
        position: u64,
        reason: impl Into<String>,
    ) -> EngineError {
        EngineError::Corrupted {
            segment: segment.into(),
            offset,
            position,
            reason: reason.into(),
        }
    }
}
