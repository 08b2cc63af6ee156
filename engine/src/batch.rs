//! Building a batch: records are validated against `limits.rs` and encoded
//! as they are pushed, so `Log::append` only stamps the header and writes.
//!
//! A `Batch` is an encoded records section preceded by room for the header
//! (docs/format.md#batch-header). The records CRC is updated as each record
//! is encoded, while its bytes are still in cache, because it does not
//! depend on the offsets the log assigns (records store offset *deltas*).

use crate::error::EngineError;
use crate::format::{self, BATCH_HEADER_BYTES, BatchHeader, RECORD_FIXED_BYTES};
use crate::limits;
use crate::pool::{POOLED_BYTES_MIN, Pool};
use crate::record::{MessageId, NewRecord, Offset, Timestamp};

/// An encoded batch of one or more records, ready to append.
#[derive(Debug, Clone)]
pub struct Batch {
    /// Header space (stamped by `Log::append`) followed by the records.
    pub(crate) buf: Vec<u8>,
    pub(crate) record_count: u32,
    pub(crate) first_timestamp: Timestamp,
    pub(crate) max_timestamp: Timestamp,
    pub(crate) max_expires_at: Timestamp,
    /// CRC of the records section so far.
    records_crc: crc32fast::Hasher,
}

/// Buffers of dropped batches (`crate::pool` says why): every append of
/// a large batch would otherwise encode into memory the allocator had
/// just handed back to the kernel.
static POOL: Pool<Vec<u8>> = Pool::new(POOLED_BYTES_MIN);

impl Drop for Batch {
    fn drop(&mut self) {
        POOL.give_back(std::mem::take(&mut self.buf));
    }
}

impl Default for Batch {
    fn default() -> Self {
        Batch::new()
    }
}

impl Batch {
    /// An empty batch.
    pub fn new() -> Batch {
        Batch::with_capacity(0)
    }

    /// An empty batch with room for `bytes` of records (a large one from
    /// `POOL`, warm).
    pub fn with_capacity(bytes: usize) -> Batch {
        let want = BATCH_HEADER_BYTES + bytes;
        let mut buf = POOL.take(want).unwrap_or_else(|| Vec::with_capacity(want));
        buf.resize(BATCH_HEADER_BYTES, 0);
        Batch {
            buf,
            record_count: 0,
            first_timestamp: Timestamp(0),
            max_timestamp: Timestamp(0),
            max_expires_at: Timestamp(0),
            records_crc: crc32fast::Hasher::new(),
        }
    }

    /// An empty batch sized for `records` records whose payloads and
    /// encoded headers total about `payload_bytes`: filled without
    /// growing, so no record is copied twice (capped at the batch limit).
    pub fn for_records(records: usize, payload_bytes: usize) -> Batch {
        let bytes = records
            .saturating_mul(RECORD_FIXED_BYTES)
            .saturating_add(payload_bytes);
        Batch::with_capacity(bytes.min(limits::BATCH_RECORDS_BYTES_MAX))
    }

    /// A batch holding `records`, or the first limit they break.
    pub fn from_records<'a>(
        records: impl IntoIterator<Item = &'a NewRecord>,
    ) -> Result<Batch, EngineError> {
        let mut batch = Batch::new();
        for r in records {
            batch.push(r)?;
        }
        Ok(batch)
    }

    /// Number of records in the batch.
    pub fn len(&self) -> usize {
        self.record_count as usize
    }

    /// Whether the batch has no records.
    pub fn is_empty(&self) -> bool {
        self.record_count == 0
    }

    /// Bytes the batch occupies on disk, header included.
    pub fn encoded_len(&self) -> usize {
        self.buf.len()
    }

    /// Removes every record, keeping the allocation.
    pub fn clear(&mut self) {
        self.buf.truncate(BATCH_HEADER_BYTES);
        self.record_count = 0;
        self.records_crc = crc32fast::Hasher::new();
    }

    /// Appends a record, or returns the limit it breaks and leaves the batch
    /// unchanged.
    pub fn push(&mut self, record: &NewRecord) -> Result<(), EngineError> {
        let headers: Vec<(&str, &[u8])> = record
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_ref()))
            .collect();
        self.push_parts(
            record.timestamp,
            record.expires_at,
            &record.id,
            &headers,
            &record.payload,
        )
    }

    /// Checks a record's headers and payload size against the per-record
    /// limits, as `push_parts` would, without a batch: for callers that
    /// validate a whole request before appending any of it.
    pub fn check_record(headers: &[(&str, &[u8])], payload_len: usize) -> Result<(), EngineError> {
        check_headers(headers)?;
        if payload_len > limits::RECORD_PAYLOAD_BYTES_MAX {
            return Err(EngineError::RecordTooLarge {
                size_bytes: payload_len,
                max_bytes: limits::RECORD_PAYLOAD_BYTES_MAX,
            });
        }
        Ok(())
    }

    /// Appends a record given by its parts (no allocation for the header
    /// list), or returns the limit it breaks and leaves the batch unchanged.
    pub fn push_parts(
        &mut self,
        timestamp: Timestamp,
        expires_at: Timestamp,
        id: &MessageId,
        headers: &[(&str, &[u8])],
        payload: &[u8],
    ) -> Result<(), EngineError> {
        self.push_gathered(timestamp, expires_at, id, headers, &[payload])
    }

    /// `push_parts` with the payload given as consecutive pieces, which
    /// the record holds joined: a caller whose payload is a header it
    /// built and bytes it shares appends both without joining them first.
    pub fn push_gathered(
        &mut self,
        timestamp: Timestamp,
        expires_at: Timestamp,
        id: &MessageId,
        headers: &[(&str, &[u8])],
        payload: &[&[u8]],
    ) -> Result<(), EngineError> {
        let payload_len: usize = payload.iter().map(|p| p.len()).sum();
        Batch::check_record(headers, payload_len)?;
        if self.len() >= limits::BATCH_RECORDS_MAX {
            return Err(EngineError::BatchTooManyRecords {
                max: limits::BATCH_RECORDS_MAX,
            });
        }
        let headers_len = format::encoded_headers_len(headers);
        let record_len = RECORD_FIXED_BYTES + headers_len + payload_len;
        let records_len = self.buf.len() - BATCH_HEADER_BYTES;
        if records_len + record_len > limits::BATCH_RECORDS_BYTES_MAX {
            return Err(EngineError::BatchTooLarge {
                size_bytes: records_len + record_len,
                max_bytes: limits::BATCH_RECORDS_BYTES_MAX,
            });
        }
        if self.record_count == 0 {
            self.first_timestamp = timestamp;
            self.max_timestamp = timestamp;
            self.max_expires_at = expires_at;
        }
        let timestamp_delta = timestamp.0.wrapping_sub(self.first_timestamp.0) as i64;
        let record_start = self.buf.len();
        format::encode_record(
            &mut self.buf,
            self.record_count,
            timestamp_delta,
            expires_at,
            id,
            headers,
            payload,
        );
        self.record_count += 1;
        self.max_timestamp = self.max_timestamp.max(timestamp);
        self.max_expires_at = self.max_expires_at.max(expires_at);
        self.records_crc.update(&self.buf[record_start..]);
        Ok(())
    }

    /// CRC-32 of the encoded records section.
    pub fn records_crc(&self) -> u32 {
        self.records_crc.clone().finalize()
    }

    /// Stamps the header for a batch placed at `base_offset`.
    pub(crate) fn stamp(&mut self, base_offset: Offset, durable_offset: Offset) -> BatchHeader {
        let header = BatchHeader {
            base_offset,
            record_count: self.record_count,
            records_len: (self.buf.len() - BATCH_HEADER_BYTES) as u32,
            first_timestamp: self.first_timestamp,
            max_timestamp: self.max_timestamp,
            max_expires_at: self.max_expires_at,
            durable_offset,
            records_crc: self.records_crc(),
        };
        header.encode(&mut self.buf);
        header
    }
}

fn check_headers(headers: &[(&str, &[u8])]) -> Result<(), EngineError> {
    if headers.len() > limits::RECORD_HEADERS_MAX {
        return Err(EngineError::InvalidHeader {
            reason: format!("more than {} headers", limits::RECORD_HEADERS_MAX),
        });
    }
    for (key, value) in headers {
        if key.is_empty() || key.len() > limits::HEADER_KEY_BYTES_MAX {
            return Err(EngineError::InvalidHeader {
                reason: format!(
                    "header key must be 1..={} bytes, got {}",
                    limits::HEADER_KEY_BYTES_MAX,
                    key.len()
                ),
            });
        }
        if value.len() > limits::HEADER_VALUE_BYTES_MAX {
            return Err(EngineError::InvalidHeader {
                reason: format!(
                    "header {key:?} value is {} bytes, max {}",
                    value.len(),
                    limits::HEADER_VALUE_BYTES_MAX
                ),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn rec(payload: usize) -> NewRecord {
        NewRecord::new(
            Timestamp(1),
            MessageId([1; 16]),
            Bytes::from(vec![7u8; payload]),
        )
    }

    #[test]
    fn a_batch_sized_for_its_records_takes_them_without_growing() {
        let payloads = [1_000, 1, 0, 4_096, 333];
        let mut b = Batch::for_records(payloads.len(), payloads.iter().sum());
        let (start, capacity) = (b.buf.as_ptr(), b.buf.capacity());
        for p in payloads {
            b.push(&rec(p)).expect("a small record fits");
        }
        assert_eq!(b.len(), payloads.len());
        assert_eq!(b.buf.as_ptr(), start, "the buffer moved: it grew");
        assert_eq!(b.buf.capacity(), capacity);
    }

    #[test]
    fn oversize_inputs_are_typed_errors_and_leave_the_batch_unchanged() {
        let mut b = Batch::new();
        b.push(&rec(10)).expect("small record");
        let before = b.encoded_len();
        let err = b.push(&rec(limits::RECORD_PAYLOAD_BYTES_MAX + 1));
        assert!(matches!(err, Err(EngineError::RecordTooLarge { .. })));
        let mut r = rec(1);
        r.headers = vec![("k".repeat(65), Bytes::new())];
        assert!(matches!(b.push(&r), Err(EngineError::InvalidHeader { .. })));
        r.headers = vec![(String::new(), Bytes::new())];
        assert!(matches!(b.push(&r), Err(EngineError::InvalidHeader { .. })));
        r.headers = (0..17).map(|i| (format!("k{i}"), Bytes::new())).collect();
        assert!(matches!(b.push(&r), Err(EngineError::InvalidHeader { .. })));
        assert_eq!(b.encoded_len(), before);
        assert_eq!(b.len(), 1);
    }

    #[test]
    fn a_batch_stops_at_its_byte_limit() {
        let mut b = Batch::new();
        let big = rec(limits::RECORD_PAYLOAD_BYTES_MAX);
        b.push(&big).expect("first");
        assert!(matches!(
            b.push(&big),
            Err(EngineError::BatchTooLarge { .. })
        ));
        assert_eq!(b.len(), 1);
    }
}
