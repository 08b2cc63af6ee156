//! The record layer's types: positions, times, ids, records to append and
//! records read back. The engine treats payloads as opaque bytes.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use crate::format;

/// A position in one log: dense, from 0, one per record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Offset(pub u64);

impl Offset {
    /// The offset `n` records after this one.
    pub fn plus(self, n: u64) -> Offset {
        Offset(self.0 + n)
    }
}

impl fmt::Display for Offset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A point in time in 100-nanosecond ticks since the Unix epoch (the
/// precision of UUID version 1 timestamps).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Timestamp(pub u64);

impl Timestamp {
    /// The expiry of a record that never expires.
    pub const NEVER: Timestamp = Timestamp(u64::MAX);

    /// Ticks per second.
    pub const TICKS_PER_SEC: u64 = 10_000_000;

    /// The current wall-clock time (saturating at the epoch if the clock is
    /// set before it).
    pub fn now() -> Timestamp {
        let since = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        Timestamp::from_nanos(since.as_nanos())
    }

    /// Converts nanoseconds since the epoch, saturating.
    pub fn from_nanos(nanos: u128) -> Timestamp {
        Timestamp(u64::try_from(nanos / 100).unwrap_or(u64::MAX))
    }

    /// Whole seconds since the epoch to ticks, saturating.
    pub fn from_secs(secs: u64) -> Timestamp {
        Timestamp(secs.saturating_mul(Self::TICKS_PER_SEC))
    }

    /// This time plus `secs` seconds, saturating at `NEVER`.
    pub fn plus_secs(self, secs: u64) -> Timestamp {
        Timestamp(
            self.0
                .saturating_add(secs.saturating_mul(Self::TICKS_PER_SEC)),
        )
    }
}

/// A 16-byte message id (Sluice uses the UUID version 1 layout; the engine
/// does not interpret it).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct MessageId(pub [u8; 16]);

impl fmt::Debug for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// A record to append. Offsets are assigned by the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRecord {
    /// When the record was produced.
    pub timestamp: Timestamp,
    /// When the record expires (`Timestamp::NEVER` for never).
    pub expires_at: Timestamp,
    /// The record's id.
    pub id: MessageId,
    /// Small metadata such as a content type (see `limits.rs` for bounds).
    pub headers: Vec<(String, Bytes)>,
    /// The opaque payload.
    pub payload: Bytes,
}

impl NewRecord {
    /// A record with no headers that never expires.
    pub fn new(timestamp: Timestamp, id: MessageId, payload: impl Into<Bytes>) -> NewRecord {
        NewRecord {
            timestamp,
            expires_at: Timestamp::NEVER,
            id,
            headers: Vec::new(),
            payload: payload.into(),
        }
    }
}

/// A record read from the log. `payload` and the header map are zero-copy
/// slices of the segment's mapping (or of a copy, on the simulated disk).
#[derive(Clone, PartialEq, Eq)]
pub struct Record {
    /// The record's offset.
    pub offset: Offset,
    /// When it was produced.
    pub timestamp: Timestamp,
    /// When it expires.
    pub expires_at: Timestamp,
    /// Its id.
    pub id: MessageId,
    /// The encoded header map, validated when read.
    pub(crate) headers: Bytes,
    /// The opaque payload.
    pub payload: Bytes,
}

impl Record {
    /// The record the log would return for `new` at `offset`, built in
    /// memory (for code that renders records, and its tests).
    pub fn at(offset: Offset, new: &NewRecord) -> Record {
        let mut headers = Vec::new();
        let pairs: Vec<(&str, &[u8])> = new
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_ref()))
            .collect();
        format::encode_headers(&mut headers, &pairs);
        Record {
            offset,
            timestamp: new.timestamp,
            expires_at: new.expires_at,
            id: new.id,
            headers: Bytes::from(headers),
            payload: new.payload.clone(),
        }
    }

    /// The record's headers, in the order they were appended.
    pub fn headers(&self) -> impl Iterator<Item = (&str, &[u8])> {
        format::iter_headers(&self.headers)
    }

    /// The header named `key`, if present.
    pub fn header(&self, key: &str) -> Option<&[u8]> {
        self.headers().find(|(k, _)| *k == key).map(|(_, v)| v)
    }

    /// Bytes this record occupies on disk (fixed part, headers, payload); the
    /// unit of `max_bytes` in reads.
    pub fn encoded_len(&self) -> usize {
        format::RECORD_FIXED_BYTES + self.headers.len() + self.payload.len()
    }

    /// Whether the record has expired at `now`.
    pub fn is_expired(&self, now: Timestamp) -> bool {
        self.expires_at <= now
    }
}

impl fmt::Debug for Record {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Record")
            .field("offset", &self.offset)
            .field("timestamp", &self.timestamp)
            .field("expires_at", &self.expires_at)
            .field("id", &self.id)
            .field("headers", &self.headers().collect::<Vec<_>>())
            .field("payload_len", &self.payload.len())
            .finish()
    }
}
