//! Every on-disk byte of a log directory, encoded and decoded in one place.
//!
//! `docs/format.md` is the specification and this module mirrors it: each
//! structure has a magic, a version and a CRC-32 (IEEE, as computed by
//! `crc32fast`), and each field offset is chained from the one before.
//! All integers are little-endian.
//!
//! Invariant: no length read from disk is used before the CRC covering it has
//! been checked. Decoders return [`FormatError`], which the caller turns into
//! `EngineError::Corrupted` with the segment and position it was reading.

use crate::record::{MessageId, Offset, Timestamp};

/// Format versions of the batch header. Version 1: the initial format.
pub const BATCH_VERSION: u16 = 1;
/// Format versions of the seal file. Version 1: the initial format.
pub const SEAL_VERSION: u16 = 1;
/// Format versions of the index files. Version 1: the initial format.
pub const INDEX_VERSION: u16 = 1;

/// Magic bytes that open every batch header.
pub const BATCH_MAGIC: [u8; 4] = *b"SLBT";
/// Magic bytes that open a `.seal` file.
pub const SEAL_MAGIC: [u8; 4] = *b"SLSE";
/// Magic bytes that open an `.index` (offset index) file.
pub const OFFSET_INDEX_MAGIC: [u8; 4] = *b"SLOI";
/// Magic bytes that open a `.timeindex` file.
pub const TIME_INDEX_MAGIC: [u8; 4] = *b"SLTI";

// ---- Batch header (docs/format.md#batch-header) ----------------------------
const BH_MAGIC: usize = 0;
const BH_VERSION: usize = BH_MAGIC + 4;
const BH_FLAGS: usize = BH_VERSION + 2;
const BH_BASE_OFFSET: usize = BH_FLAGS + 2;
const BH_RECORD_COUNT: usize = BH_BASE_OFFSET + 8;
const BH_RECORDS_LEN: usize = BH_RECORD_COUNT + 4;
const BH_FIRST_TIMESTAMP: usize = BH_RECORDS_LEN + 4;
const BH_MAX_TIMESTAMP: usize = BH_FIRST_TIMESTAMP + 8;
const BH_MAX_EXPIRES_AT: usize = BH_MAX_TIMESTAMP + 8;
const BH_DURABLE_OFFSET: usize = BH_MAX_EXPIRES_AT + 8;
const BH_RECORDS_CRC: usize = BH_DURABLE_OFFSET + 8;
const BH_HEADER_CRC: usize = BH_RECORDS_CRC + 4;
/// Size of a batch header in bytes.
pub const BATCH_HEADER_BYTES: usize = BH_HEADER_CRC + 4;
const _: () = assert!(BATCH_HEADER_BYTES == 64);

// ---- Record, inside a batch's records section (docs/format.md#record) ------
const R_LEN: usize = 0;
const R_OFFSET_DELTA: usize = R_LEN + 4;
const R_TIMESTAMP_DELTA: usize = R_OFFSET_DELTA + 4;
const R_EXPIRES_AT: usize = R_TIMESTAMP_DELTA + 8;
const R_ID: usize = R_EXPIRES_AT + 8;
const R_HEADERS_LEN: usize = R_ID + 16;
/// Size of a record's fixed part, including its own length field.
pub const RECORD_FIXED_BYTES: usize = R_HEADERS_LEN + 2;
const _: () = assert!(RECORD_FIXED_BYTES == 42);

// ---- Seal file (docs/format.md#seal-file) ----------------------------------
const S_MAGIC: usize = 0;
const S_VERSION: usize = S_MAGIC + 4;
const S_FLAGS: usize = S_VERSION + 2;
const S_BASE_OFFSET: usize = S_FLAGS + 2;
const S_NEXT_OFFSET: usize = S_BASE_OFFSET + 8;
const S_LOG_LEN: usize = S_NEXT_OFFSET + 8;
const S_MAX_TIMESTAMP: usize = S_LOG_LEN + 8;
const S_MAX_EXPIRES_AT: usize = S_MAX_TIMESTAMP + 8;
const S_BATCH_COUNT: usize = S_MAX_EXPIRES_AT + 8;
const S_HEADERS_CRC: usize = S_BATCH_COUNT + 4;
const S_RESERVED: usize = S_HEADERS_CRC + 4;
const S_SEAL_CRC: usize = S_RESERVED + 4;
/// Size of a seal file in bytes.
pub const SEAL_BYTES: usize = S_SEAL_CRC + 4;
const _: () = assert!(SEAL_BYTES == 64);

// ---- Index file header (docs/format.md#index-files) ------------------------
const I_MAGIC: usize = 0;
const I_VERSION: usize = I_MAGIC + 4;
const I_FLAGS: usize = I_VERSION + 2;
const I_BASE_OFFSET: usize = I_FLAGS + 2;
const I_ENTRY_COUNT: usize = I_BASE_OFFSET + 8;
const I_COVERED_LEN: usize = I_ENTRY_COUNT + 4;
const I_ENTRIES_CRC: usize = I_COVERED_LEN + 4;
const I_HEADER_CRC: usize = I_ENTRIES_CRC + 4;
/// Size of an index file's header in bytes.
pub const INDEX_HEADER_BYTES: usize = I_HEADER_CRC + 4;
const _: () = assert!(INDEX_HEADER_BYTES == 32);
/// Size of one offset-index entry: relative offset (u32), position (u32).
pub const OFFSET_INDEX_ENTRY_BYTES: usize = 8;
/// Size of one time-index entry: timestamp (u64), relative offset, position.
pub const TIME_INDEX_ENTRY_BYTES: usize = 16;

/// Why a structure read from disk was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FormatError(pub String);

impl FormatError {
    fn new(reason: impl Into<String>) -> Self {
        FormatError(reason.into())
    }
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}
fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}
fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}
fn put_u16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_le_bytes());
}
fn put_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}
fn put_u64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

/// CRC-32 of `bytes`, the checksum used by every structure.
pub fn crc(bytes: &[u8]) -> u32 {
    crc32fast::hash(bytes)
}

/// The decoded fixed header of one batch. Trusted only after `decode` checked
/// its CRC, magic and version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    /// Offset of the batch's first record.
    pub base_offset: Offset,
    /// Number of records, at least 1.
    pub record_count: u32,
    /// Length of the records section that follows the header.
    pub records_len: u32,
    /// Timestamp of the first record.
    pub first_timestamp: Timestamp,
    /// Largest record timestamp in the batch.
    pub max_timestamp: Timestamp,
    /// Largest record expiry in the batch.
    pub max_expires_at: Timestamp,
    /// The log's durable watermark (every offset below it was fsynced) when
    /// this batch was written; recovery uses it to tell a crash's lost
    /// writes from corruption of durable data.
    pub durable_offset: Offset,
    /// CRC-32 of the records section.
    pub records_crc: u32,
}

impl BatchHeader {
    /// Offset one past the batch's last record.
    pub fn next_offset(&self) -> Offset {
        Offset(self.base_offset.0 + u64::from(self.record_count))
    }

    /// Total bytes of the batch on disk: header plus records section.
    pub fn total_len(&self) -> u64 {
        BATCH_HEADER_BYTES as u64 + u64::from(self.records_len)
    }

    /// Writes the header, CRC included, into `out[..BATCH_HEADER_BYTES]`.
    pub fn encode(&self, out: &mut [u8]) {
        let b = &mut out[..BATCH_HEADER_BYTES];
        b[BH_MAGIC..BH_MAGIC + 4].copy_from_slice(&BATCH_MAGIC);
        put_u16(b, BH_VERSION, BATCH_VERSION);
        put_u16(b, BH_FLAGS, 0);
        put_u64(b, BH_BASE_OFFSET, self.base_offset.0);
        put_u32(b, BH_RECORD_COUNT, self.record_count);
        put_u32(b, BH_RECORDS_LEN, self.records_len);
        put_u64(b, BH_FIRST_TIMESTAMP, self.first_timestamp.0);
        put_u64(b, BH_MAX_TIMESTAMP, self.max_timestamp.0);
        put_u64(b, BH_MAX_EXPIRES_AT, self.max_expires_at.0);
        put_u64(b, BH_DURABLE_OFFSET, self.durable_offset.0);
        put_u32(b, BH_RECORDS_CRC, self.records_crc);
        let header_crc = crc(&b[..BH_HEADER_CRC]);
        put_u32(b, BH_HEADER_CRC, header_crc);
    }

    /// Decodes a header from the first `BATCH_HEADER_BYTES` of `b`. Checks the
    /// CRC before reading any field, then magic, version, flags and bounds.
    pub fn decode(b: &[u8]) -> Result<BatchHeader, FormatError> {
        if b.len() < BATCH_HEADER_BYTES {
            return Err(FormatError::new(format!(
                "batch header truncated: {} of {BATCH_HEADER_BYTES} bytes",
                b.len()
            )));
        }
        let b = &b[..BATCH_HEADER_BYTES];
        // The CRC first: until it matches, no field (above all no length) is
        // meaningful.
        let stored = u32_at(b, BH_HEADER_CRC);
        let computed = crc(&b[..BH_HEADER_CRC]);
        if stored != computed {
            return Err(FormatError::new(format!(
                "batch header crc mismatch: stored {stored:#010x}, computed {computed:#010x}"
            )));
        }
        if b[BH_MAGIC..BH_MAGIC + 4] != BATCH_MAGIC {
            return Err(FormatError::new("bad batch magic"));
        }
        let version = u16_at(b, BH_VERSION);
        if version != BATCH_VERSION {
            return Err(FormatError::new(format!(
                "unsupported batch version {version}"
            )));
        }
        let flags = u16_at(b, BH_FLAGS);
        if flags != 0 {
            return Err(FormatError::new(format!("unknown batch flags {flags:#x}")));
        }
        let header = BatchHeader {
            base_offset: Offset(u64_at(b, BH_BASE_OFFSET)),
            record_count: u32_at(b, BH_RECORD_COUNT),
            records_len: u32_at(b, BH_RECORDS_LEN),
            first_timestamp: Timestamp(u64_at(b, BH_FIRST_TIMESTAMP)),
            max_timestamp: Timestamp(u64_at(b, BH_MAX_TIMESTAMP)),
            max_expires_at: Timestamp(u64_at(b, BH_MAX_EXPIRES_AT)),
            durable_offset: Offset(u64_at(b, BH_DURABLE_OFFSET)),
            records_crc: u32_at(b, BH_RECORDS_CRC),
        };
        let count = header.record_count as usize;
        if count == 0 || count > crate::limits::BATCH_RECORDS_MAX {
            return Err(FormatError::new(format!(
                "record count {count} out of range"
            )));
        }
        let len = header.records_len as usize;
        if len > crate::limits::BATCH_RECORDS_BYTES_MAX || len < count * RECORD_FIXED_BYTES {
            return Err(FormatError::new(format!(
                "records length {len} out of range for {count} records"
            )));
        }
        if header.base_offset.0.checked_add(count as u64).is_none() {
            return Err(FormatError::new("base offset overflows"));
        }
        Ok(header)
    }

    /// True when `b` starts with the batch magic: a cheap pre-filter used when
    /// searching for valid batches after a damaged one.
    pub fn has_magic(b: &[u8]) -> bool {
        b.len() >= 4 && b[..4] == BATCH_MAGIC
    }
}

/// One record's fields as parsed from a records section; byte fields are
/// ranges into that section.
#[derive(Debug, Clone, Copy)]
pub struct RawRecord {
    /// Position of this record in the batch, from 0.
    pub offset_delta: u32,
    /// Timestamp minus the batch's first timestamp (signed).
    pub timestamp_delta: i64,
    /// Absolute expiry time.
    pub expires_at: Timestamp,
    /// 16-byte message id.
    pub id: MessageId,
    /// Range of the encoded header map within the records section.
    pub headers: (usize, usize),
    /// Range of the payload within the records section.
    pub payload: (usize, usize),
}

/// Appends one encoded record to `out`: its header map encoded from
/// `headers`, and its payload the concatenation of `payload`'s parts.
/// The headers are encoded in place: a map built apart first cost an
/// allocation per record.
pub fn encode_record(
    out: &mut Vec<u8>,
    offset_delta: u32,
    timestamp_delta: i64,
    expires_at: Timestamp,
    id: &MessageId,
    headers: &[(&str, &[u8])],
    payload: &[&[u8]],
) {
    let start = out.len();
    out.resize(start + RECORD_FIXED_BYTES, 0);
    encode_headers(out, headers);
    let headers_len = out.len() - start - RECORD_FIXED_BYTES;
    for part in payload {
        out.extend_from_slice(part);
    }
    // The fixed fields last, with the lengths of what was written.
    let body_len = out.len() - start - 4;
    let f = &mut out[start..start + RECORD_FIXED_BYTES];
    // Lengths are bounded by the builder (limits.rs), so the casts are exact.
    put_u32(f, R_LEN, body_len as u32);
    put_u32(f, R_OFFSET_DELTA, offset_delta);
    put_u64(f, R_TIMESTAMP_DELTA, timestamp_delta as u64);
    put_u64(f, R_EXPIRES_AT, expires_at.0);
    f[R_ID..R_ID + 16].copy_from_slice(&id.0);
    put_u16(f, R_HEADERS_LEN, headers_len as u16);
}

/// The length of `headers` encoded as a record's header map.
pub fn encoded_headers_len(headers: &[(&str, &[u8])]) -> usize {
    headers.iter().map(|(k, v)| 1 + k.len() + 2 + v.len()).sum()
}

/// Iterates the records of a records section whose CRC has been verified,
/// checking every length against the section's bounds.
pub struct RecordIter<'a> {
    section: &'a [u8],
    pos: usize,
    next_delta: u32,
    remaining: u32,
}

impl<'a> RecordIter<'a> {
    /// Iterates the `record_count` records of `section`.
    pub fn new(section: &'a [u8], record_count: u32) -> Self {
        RecordIter {
            section,
            pos: 0,
            next_delta: 0,
            remaining: record_count,
        }
    }

    /// Checks that the section held exactly the records announced, with no
    /// bytes left over. Call after the iterator is exhausted.
    pub fn finish(&self) -> Result<(), FormatError> {
        if self.remaining == 0 && self.pos == self.section.len() {
            Ok(())
        } else {
            Err(FormatError::new(format!(
                "records section has {} trailing bytes or {} missing records",
                self.section.len().saturating_sub(self.pos),
                self.remaining
            )))
        }
    }

    fn parse_one(&mut self) -> Result<RawRecord, FormatError> {
        let s = self.section;
        let at = self.pos;
        if s.len() - at < RECORD_FIXED_BYTES {
            return Err(FormatError::new("record fixed part truncated"));
        }
        let body_len = u32_at(s, at + R_LEN) as usize;
        let end = at
            .checked_add(4)
            .and_then(|x| x.checked_add(body_len))
            .filter(|&e| e <= s.len())
            .ok_or_else(|| FormatError::new(format!("record length {body_len} overruns batch")))?;
        if body_len < RECORD_FIXED_BYTES - 4 {
            return Err(FormatError::new(format!(
                "record length {body_len} too short"
            )));
        }
        let offset_delta = u32_at(s, at + R_OFFSET_DELTA);
        if offset_delta != self.next_delta {
            return Err(FormatError::new(format!(
                "record offset delta {offset_delta}, expected {}",
                self.next_delta
            )));
        }
        let headers_len = usize::from(u16_at(s, at + R_HEADERS_LEN));
        let headers_start = at + RECORD_FIXED_BYTES;
        let headers_end = headers_start + headers_len;
        if headers_end > end {
            return Err(FormatError::new("record headers overrun the record"));
        }
        validate_headers(&s[headers_start..headers_end])?;
        let mut id = [0u8; 16];
        id.copy_from_slice(&s[at + R_ID..at + R_ID + 16]);
        self.pos = end;
        self.next_delta += 1;
        self.remaining -= 1;
        Ok(RawRecord {
            offset_delta,
            timestamp_delta: u64_at(s, at + R_TIMESTAMP_DELTA) as i64,
            expires_at: Timestamp(u64_at(s, at + R_EXPIRES_AT)),
            id: MessageId(id),
            headers: (headers_start, headers_end),
            payload: (headers_end, end),
        })
    }
}

impl Iterator for RecordIter<'_> {
    type Item = Result<RawRecord, FormatError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.remaining == 0 {
            return None;
        }
        let parsed = self.parse_one();
        if parsed.is_err() {
            // Stop after the first error: nothing after it can be located.
            self.remaining = 0;
            self.pos = usize::MAX;
        }
        Some(parsed)
    }
}

/// Encodes a header map: repeated `{ key_len u8 | key | value_len u16 | value }`.
pub fn encode_headers(out: &mut Vec<u8>, headers: &[(&str, &[u8])]) {
    for (key, value) in headers {
        out.push(key.len() as u8);
        out.extend_from_slice(key.as_bytes());
        out.extend_from_slice(&(value.len() as u16).to_le_bytes());
        out.extend_from_slice(value);
    }
}

/// Checks that an encoded header map is well formed and within limits.
pub fn validate_headers(mut b: &[u8]) -> Result<(), FormatError> {
    let mut count = 0usize;
    while !b.is_empty() {
        count += 1;
        if count > crate::limits::RECORD_HEADERS_MAX {
            return Err(FormatError::new("too many record headers"));
        }
        let key_len = usize::from(b[0]);
        if key_len == 0 || b.len() < 1 + key_len + 2 {
            return Err(FormatError::new("record header key truncated"));
        }
        if std::str::from_utf8(&b[1..1 + key_len]).is_err() {
            return Err(FormatError::new("record header key is not UTF-8"));
        }
        let value_len = usize::from(u16_at(b, 1 + key_len));
        let end = 1 + key_len + 2 + value_len;
        if b.len() < end {
            return Err(FormatError::new("record header value truncated"));
        }
        b = &b[end..];
    }
    Ok(())
}

/// Iterates an encoded header map that `validate_headers` accepted.
pub fn iter_headers(mut b: &[u8]) -> impl Iterator<Item = (&str, &[u8])> {
    std::iter::from_fn(move || {
        if b.len() < 3 {
            return None;
        }
        let key_len = usize::from(b[0]);
        let key = std::str::from_utf8(b.get(1..1 + key_len)?).ok()?;
        let value_len = usize::from(u16_at(b.get(1 + key_len..1 + key_len + 2)?, 0));
        let value_start = 1 + key_len + 2;
        let value = b.get(value_start..value_start + value_len)?;
        b = &b[value_start + value_len..];
        Some((key, value))
    })
}

/// The seal of a finished segment: enough to check it at open without
/// reading it, and to verify it fully later.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seal {
    /// The segment's base offset (also its file name).
    pub base_offset: Offset,
    /// One past the segment's last offset; the next segment's base.
    pub next_offset: Offset,
    /// Exact length of the `.log` file.
    pub log_len: u64,
    /// Largest record timestamp in the segment.
    pub max_timestamp: Timestamp,
    /// Largest record expiry in the segment.
    pub max_expires_at: Timestamp,
    /// Number of batches.
    pub batch_count: u32,
    /// CRC-32 over all batch headers, concatenated in order.
    pub headers_crc: u32,
}

impl Seal {
    /// Encodes the seal, CRC included.
    pub fn encode(&self) -> [u8; SEAL_BYTES] {
        let mut b = [0u8; SEAL_BYTES];
        b[S_MAGIC..S_MAGIC + 4].copy_from_slice(&SEAL_MAGIC);
        put_u16(&mut b, S_VERSION, SEAL_VERSION);
        put_u16(&mut b, S_FLAGS, 0);
        put_u64(&mut b, S_BASE_OFFSET, self.base_offset.0);
        put_u64(&mut b, S_NEXT_OFFSET, self.next_offset.0);
        put_u64(&mut b, S_LOG_LEN, self.log_len);
        put_u64(&mut b, S_MAX_TIMESTAMP, self.max_timestamp.0);
        put_u64(&mut b, S_MAX_EXPIRES_AT, self.max_expires_at.0);
        put_u32(&mut b, S_BATCH_COUNT, self.batch_count);
        put_u32(&mut b, S_HEADERS_CRC, self.headers_crc);
        put_u32(&mut b, S_RESERVED, 0);
        let c = crc(&b[..S_SEAL_CRC]);
        put_u32(&mut b, S_SEAL_CRC, c);
        b
    }

    /// Decodes a seal file's bytes, checking size, CRC, magic and version.
    pub fn decode(b: &[u8]) -> Result<Seal, FormatError> {
        if b.len() != SEAL_BYTES {
            return Err(FormatError::new(format!(
                "seal is {} bytes, expected {SEAL_BYTES}",
                b.len()
            )));
        }
        let stored = u32_at(b, S_SEAL_CRC);
        if stored != crc(&b[..S_SEAL_CRC]) {
            return Err(FormatError::new("seal crc mismatch"));
        }
        if b[S_MAGIC..S_MAGIC + 4] != SEAL_MAGIC {
            return Err(FormatError::new("bad seal magic"));
        }
        let version = u16_at(b, S_VERSION);
        if version != SEAL_VERSION {
            return Err(FormatError::new(format!(
                "unsupported seal version {version}"
            )));
        }
        let seal = Seal {
            base_offset: Offset(u64_at(b, S_BASE_OFFSET)),
            next_offset: Offset(u64_at(b, S_NEXT_OFFSET)),
            log_len: u64_at(b, S_LOG_LEN),
            max_timestamp: Timestamp(u64_at(b, S_MAX_TIMESTAMP)),
            max_expires_at: Timestamp(u64_at(b, S_MAX_EXPIRES_AT)),
            batch_count: u32_at(b, S_BATCH_COUNT),
            headers_crc: u32_at(b, S_HEADERS_CRC),
        };
        if seal.next_offset.0 <= seal.base_offset.0 {
            return Err(FormatError::new("seal of an empty segment"));
        }
        Ok(seal)
    }
}

/// Which of the two index files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IndexKind {
    /// `.index`: relative offset → position.
    Offset,
    /// `.timeindex`: max timestamp before a position → relative offset, position.
    Time,
}

impl IndexKind {
    fn magic(self) -> [u8; 4] {
        match self {
            IndexKind::Offset => OFFSET_INDEX_MAGIC,
            IndexKind::Time => TIME_INDEX_MAGIC,
        }
    }

    /// Bytes per entry of this index kind.
    pub fn entry_bytes(self) -> usize {
        match self {
            IndexKind::Offset => OFFSET_INDEX_ENTRY_BYTES,
            IndexKind::Time => TIME_INDEX_ENTRY_BYTES,
        }
    }
}

/// Encodes an index file: header then `entries` (already encoded).
pub fn encode_index(kind: IndexKind, base: Offset, covered_len: u32, entries: &[u8]) -> Vec<u8> {
    debug_assert_eq!(entries.len() % kind.entry_bytes(), 0);
    let mut b = vec![0u8; INDEX_HEADER_BYTES + entries.len()];
    b[I_MAGIC..I_MAGIC + 4].copy_from_slice(&kind.magic());
    put_u16(&mut b, I_VERSION, INDEX_VERSION);
    put_u16(&mut b, I_FLAGS, 0);
    put_u64(&mut b, I_BASE_OFFSET, base.0);
    put_u32(
        &mut b,
        I_ENTRY_COUNT,
        (entries.len() / kind.entry_bytes()) as u32,
    );
    put_u32(&mut b, I_COVERED_LEN, covered_len);
    put_u32(&mut b, I_ENTRIES_CRC, crc(entries));
    let c = crc(&b[..I_HEADER_CRC]);
    put_u32(&mut b, I_HEADER_CRC, c);
    b[INDEX_HEADER_BYTES..].copy_from_slice(entries);
    b
}

/// Decodes an index file, returning the covered log length and the entries.
/// Any mismatch means "stale or damaged cache": the caller rebuilds it.
pub fn decode_index(kind: IndexKind, base: Offset, b: &[u8]) -> Result<(u32, &[u8]), FormatError> {
    if b.len() < INDEX_HEADER_BYTES {
        return Err(FormatError::new("index header truncated"));
    }
    if u32_at(b, I_HEADER_CRC) != crc(&b[..I_HEADER_CRC]) {
        return Err(FormatError::new("index header crc mismatch"));
    }
    if b[I_MAGIC..I_MAGIC + 4] != kind.magic() || u16_at(b, I_VERSION) != INDEX_VERSION {
        return Err(FormatError::new("bad index magic or version"));
    }
    if u64_at(b, I_BASE_OFFSET) != base.0 {
        return Err(FormatError::new("index names another segment"));
    }
    let count = u32_at(b, I_ENTRY_COUNT) as usize;
    let entries = &b[INDEX_HEADER_BYTES..];
    if entries.len() != count.saturating_mul(kind.entry_bytes()) {
        return Err(FormatError::new(
            "index entry count does not match its size",
        ));
    }
    if u32_at(b, I_ENTRIES_CRC) != crc(entries) {
        return Err(FormatError::new("index entries crc mismatch"));
    }
    Ok((u32_at(b, I_COVERED_LEN), entries))
}

/// Reads little-endian integers out of index entries.
pub fn index_u32(b: &[u8], at: usize) -> u32 {
    u32_at(b, at)
}

/// Reads a little-endian u64 out of index entries.
pub fn index_u64(b: &[u8], at: usize) -> u64 {
    u64_at(b, at)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> BatchHeader {
        BatchHeader {
            base_offset: Offset(7),
            record_count: 1,
            records_len: RECORD_FIXED_BYTES as u32,
            first_timestamp: Timestamp(5),
            max_timestamp: Timestamp(6),
            max_expires_at: Timestamp(9),
            durable_offset: Offset(3),
            records_crc: 0xdead_beef,
        }
    }

    #[test]
    fn batch_header_round_trips_and_every_flipped_byte_is_caught() {
        let mut b = [0u8; BATCH_HEADER_BYTES];
        header().encode(&mut b);
        assert_eq!(BatchHeader::decode(&b), Ok(header()));
        for i in 0..BATCH_HEADER_BYTES {
            let mut bad = b;
            bad[i] ^= 0x40;
            assert!(
                BatchHeader::decode(&bad).is_err(),
                "flip at byte {i} accepted"
            );
        }
    }

    #[test]
    fn batch_header_rejects_lengths_out_of_range_even_with_a_good_crc() {
        let mut h = header();
        h.records_len = u32::MAX;
        let mut b = [0u8; BATCH_HEADER_BYTES];
        h.encode(&mut b);
        assert!(BatchHeader::decode(&b).is_err());
        h = header();
        h.record_count = 0;
        h.encode(&mut b);
        assert!(BatchHeader::decode(&b).is_err());
    }

    #[test]
    fn seal_round_trips_and_rejects_damage() {
        let seal = Seal {
            base_offset: Offset(10),
            next_offset: Offset(20),
            log_len: 4096,
            max_timestamp: Timestamp(1),
            max_expires_at: Timestamp(2),
            batch_count: 3,
            headers_crc: 4,
        };
        let b = seal.encode();
        assert_eq!(Seal::decode(&b), Ok(seal));
        let mut bad = b;
        bad[20] ^= 1;
        assert!(Seal::decode(&bad).is_err());
        assert!(Seal::decode(&b[..63]).is_err());
    }

    #[test]
    fn headers_round_trip_and_truncation_is_rejected() {
        let mut enc = Vec::new();
        encode_headers(&mut enc, &[("content-type", b"text/plain"), ("k", b"")]);
        validate_headers(&enc).expect("valid");
        let got: Vec<_> = iter_headers(&enc).collect();
        assert_eq!(
            got,
            vec![("content-type", &b"text/plain"[..]), ("k", &b""[..])]
        );
        for cut in 1..enc.len() {
            if cut == 1 + 12 + 2 + 10 {
                continue; // a whole first header is itself a valid map
            }
            assert!(
                validate_headers(&enc[..cut]).is_err(),
                "cut at {cut} accepted"
            );
        }
    }

    #[test]
    fn index_round_trips_and_rejects_the_wrong_segment() {
        let entries = [1u8, 0, 0, 0, 64, 0, 0, 0];
        let b = encode_index(IndexKind::Offset, Offset(5), 128, &entries);
        let (covered, e) = decode_index(IndexKind::Offset, Offset(5), &b).expect("valid");
        assert_eq!((covered, e), (128, &entries[..]));
        assert!(decode_index(IndexKind::Offset, Offset(6), &b).is_err());
        assert!(decode_index(IndexKind::Time, Offset(5), &b).is_err());
    }
}
