//! How a log rolls, indexes and retains segments. Every field documents its
//! default and its bounds; `sanitize` rejects values outside them.

use std::time::Duration;

use crate::disk::WriteMode;
use crate::error::EngineError;
use crate::limits::{RECYCLE_SEGMENTS_MAX, SEGMENT_BYTES_MAX, SEGMENT_BYTES_MIN};

/// Configuration of one log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// Roll to a new segment before an append would grow the active one past
    /// this size. Default 64 MiB; 4 KiB..=1 GiB. A single batch larger than
    /// this still fits: it gets a segment of its own.
    pub segment_bytes_max: u64,
    /// Roll the active segment once it has held data this long, so that
    /// retention can delete expired data on quiet logs. Default 1 hour;
    /// `Duration::ZERO` rolls before every append to a non-empty segment.
    pub segment_age_max: Duration,
    /// Add an entry to the sparse offset and time indexes every this many
    /// bytes of log. Default 4 KiB; 64 B..=1 MiB. Smaller means faster
    /// lookups and bigger index files.
    pub index_interval_bytes: u32,
    /// When set, retention also deletes the oldest sealed segments while the
    /// log is larger than this. Default `None`: only expiry deletes data.
    pub retention_bytes_max: Option<u64>,
    /// Keep up to this many removed segments' data files as spares, renamed
    /// into place for new segments, whose appends then overwrite blocks the
    /// file system already allocated: on ext4 an `fdatasync` after such a
    /// write commits no new extents (docs/benchmarks.md, "The disk's write
    /// paths"). Default 0 (removed segments are deleted); at most
    /// `RECYCLE_SEGMENTS_MAX`. Meant for the node WAL, whose reads are
    /// short-lived: a segment that anyone still holds bytes of is deleted,
    /// never recycled, and so is one under half of `segment_bytes_max`.
    pub recycle_segments_max: usize,
    /// How segment data files are written. Default `WriteMode::Buffered`;
    /// `WriteMode::Direct` suits a log that is synced after every few
    /// appends and read back rarely (the node WAL): its appends wait in
    /// memory until the sync writes them in one `O_DIRECT` write.
    pub write_mode: WriteMode,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes_max: 64 * 1024 * 1024,
            segment_age_max: Duration::from_secs(3600),
            index_interval_bytes: 4096,
            retention_bytes_max: None,
            recycle_segments_max: 0,
            write_mode: WriteMode::Buffered,
        }
    }
}

impl LogConfig {
    /// Checks every field against its bounds.
    pub fn sanitize(&self) -> Result<(), EngineError> {
        if !(SEGMENT_BYTES_MIN..=SEGMENT_BYTES_MAX).contains(&self.segment_bytes_max) {
            return Err(EngineError::InvalidConfig {
                field: "segment_bytes_max",
                reason: format!(
                    "{} is outside {SEGMENT_BYTES_MIN}..={SEGMENT_BYTES_MAX}",
                    self.segment_bytes_max
                ),
            });
        }
        if !(64..=1024 * 1024).contains(&self.index_interval_bytes) {
            return Err(EngineError::InvalidConfig {
                field: "index_interval_bytes",
                reason: format!("{} is outside 64..=1048576", self.index_interval_bytes),
            });
        }
        if self.retention_bytes_max == Some(0) {
            return Err(EngineError::InvalidConfig {
                field: "retention_bytes_max",
                reason: "0 would delete every sealed segment; use None for no limit".into(),
            });
        }
        if self.recycle_segments_max > RECYCLE_SEGMENTS_MAX {
            return Err(EngineError::InvalidConfig {
                field: "recycle_segments_max",
                reason: format!(
                    "{} is over {RECYCLE_SEGMENTS_MAX}",
                    self.recycle_segments_max
                ),
            });
        }
        Ok(())
    }
}
