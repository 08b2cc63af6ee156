//! Bounds on every input the engine accepts, each with the reason for its
//! value. A value over a bound is a typed error (`EngineError::*TooLarge`),
//! never a panic, and the same bounds are checked again when reading from
//! disk, so a damaged length can never ask for more than a writer could.

/// Largest payload of one record: 16 MiB. Bigger messages belong in blob
/// storage; this keeps one record well inside one batch and one segment.
pub const RECORD_PAYLOAD_BYTES_MAX: usize = 16 * 1024 * 1024;

/// Most headers (key/value pairs) on one record. Headers carry small
/// metadata such as a content type, not data.
pub const RECORD_HEADERS_MAX: usize = 16;

/// Longest header key in bytes (the key length is stored in one byte).
pub const HEADER_KEY_BYTES_MAX: usize = 64;

/// Longest header value in bytes.
pub const HEADER_VALUE_BYTES_MAX: usize = 1024;

/// Most records in one batch. Offset deltas are `u32`; this bound keeps the
/// per-batch decode work (one `Record` each) modest.
pub const BATCH_RECORDS_MAX: usize = 65_536;

/// Largest records section of one batch: 32 MiB. Segment positions are
/// `u32`, and a segment holds at most `SEGMENT_BYTES_MAX` plus one batch.
pub const BATCH_RECORDS_BYTES_MAX: usize = 32 * 1024 * 1024;

/// Smallest configurable segment size: 4 KiB (one batch header plus a page).
pub const SEGMENT_BYTES_MIN: u64 = 4 * 1024;

/// Largest configurable segment size: 1 GiB, so that every position inside a
/// segment (at most this plus one batch) fits the `u32` of the indexes.
pub const SEGMENT_BYTES_MAX: u64 = 1024 * 1024 * 1024;

/// Most spare segment files a log keeps for recycling: 16, which at the
/// default 64 MiB segments is 1 GiB of disk held back for reuse.
pub const RECYCLE_SEGMENTS_MAX: usize = 16;

const _: () = assert!(SEGMENT_BYTES_MAX + BATCH_RECORDS_BYTES_MAX as u64 + 64 < u32::MAX as u64);
const _: () = assert!(RECORD_PAYLOAD_BYTES_MAX < BATCH_RECORDS_BYTES_MAX);
const _: () = assert!(HEADER_KEY_BYTES_MAX <= u8::MAX as usize);
const _: () = assert!(
    RECORD_HEADERS_MAX * (1 + HEADER_KEY_BYTES_MAX + 2 + HEADER_VALUE_BYTES_MAX)
        <= u16::MAX as usize
);
