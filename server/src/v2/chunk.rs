//! A bounded read of one partition from an offset, and how the native API
//! shows the messages it found. Fetch and consumer-group polls share it.

use base64::Engine as _;
use serde_json::{Value, json};
use sluice_engine::{EngineError, Offset, Record, Timestamp};
use sluice_raft::data::partition::{CONTENT_TYPE_HEADER, KEY_HEADER, Partition};

use crate::v1::params;

/// Most records one read scans (visible or not), so a run of deleted or
/// expired records cannot make one request scan a whole log.
const SCAN_RECORDS_MAX: usize = 65_536;
/// Records fetched from the log per step.
const STEP_RECORDS: usize = 512;

/// What a read of one partition found.
#[derive(Debug)]
pub struct Chunk {
    /// Visible messages, in offset order.
    pub records: Vec<Record>,
    /// Where the next read should start.
    pub next_offset: Offset,
    /// The end of the partition's committed data on this replica.
    pub high_watermark: Offset,
    /// The first offset still in the log.
    pub log_start: Offset,
    /// Whether the asked offset was below the log start (expired data was
    /// skipped).
    pub skipped: bool,
}

/// Why a read could not start.
#[derive(Debug, thiserror::Error)]
pub enum ChunkError {
    /// The offset is past the high watermark (416).
    #[error("offset {asked} is past the high watermark {high_watermark}")]
    PastEnd {
        /// The offset asked for.
        asked: u64,
        /// The partition's end.
        high_watermark: u64,
    },
    /// The log could not be read (500).
    #[error(transparent)]
    Storage(#[from] EngineError),
}

/// Reads visible messages at or after `from` (the log start when `None`),
/// up to `max_messages` and about `max_bytes` of bodies (at least one
/// message, so a consumer always progresses).
pub fn read(
    partition: &Partition,
    from: Option<Offset>,
    max_messages: usize,
    max_bytes: usize,
    now: Timestamp,
) -> Result<Chunk, ChunkError> {
    let log = partition.log();
    let (log_start, high_watermark) = (log.start_offset(), log.next_offset());
    let asked = from.unwrap_or(log_start);
    if asked > high_watermark {
        return Err(ChunkError::PastEnd {
            asked: asked.0,
            high_watermark: high_watermark.0,
        });
    }
    let skipped = asked < log_start;
    let mut cursor = asked.max(log_start);
    let mut records = Vec::new();
    let (mut bytes, mut scanned) = (0usize, 0usize);
    'scan: while cursor < high_watermark && scanned < SCAN_RECORDS_MAX {
        let step = log.read(cursor, STEP_RECORDS, usize::MAX)?;
        if step.is_empty() {
            break;
        }
        for record in step {
            if records.len() >= max_messages
                || (!records.is_empty() && bytes + record.payload.len() > max_bytes)
            {
                break 'scan;
            }
            cursor = record.offset.plus(1);
            scanned += 1;
            if partition.is_visible(&record, now) {
                bytes += record.payload.len();
                records.push(record);
            }
        }
    }
    Ok(Chunk {
        records,
        next_offset: cursor,
        high_watermark,
        log_start,
        skipped,
    })
}

/// A message as the native API shows it.
pub fn message_json(record: &Record, partition: u32) -> Value {
    let mut m = json!({
        "partition": partition,
        "offset": record.offset.0,
        "id": params::format_id(&record.id),
        "timestamp_ms": record.timestamp.0 / (Timestamp::TICKS_PER_SEC / 1_000),
    });
    match std::str::from_utf8(&record.payload) {
        Ok(text) => m["body"] = json!(text),
        Err(_) => {
            m["body_base64"] =
                json!(base64::engine::general_purpose::STANDARD.encode(&record.payload))
        }
    }
    if let Some(key) = record.header(KEY_HEADER) {
        m["key"] = json!(String::from_utf8_lossy(key));
    }
    if let Some(ct) = record.header(CONTENT_TYPE_HEADER) {
        m["content_type"] = json!(String::from_utf8_lossy(ct));
    }
    let headers: serde_json::Map<String, Value> = record
        .headers()
        .filter(|(name, _)| !name.starts_with(':'))
        .map(|(name, value)| (name.to_string(), json!(String::from_utf8_lossy(value))))
        .collect();
    if !headers.is_empty() {
        m["headers"] = Value::Object(headers);
    }
    m
}
