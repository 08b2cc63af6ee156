//! One partition of a queue on one replica: its engine log, the timestamp
//! of its last generated message, and its id index.
//!
//! Updates and deletes never rewrite a record: a put appends a new version
//! of the message (same id) and a delete appends a tombstone. The id index
//! maps an id that has more than one version, or was written by id, to its
//! latest version, so a reader shows a record only if it is that latest
//! version. Records carry reserved headers (names starting with `:`, which
//! clients may not use): `:k` = `t` marks a tombstone, `:ct` holds the
//! content type, `:key` a native producer's message key.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sluice_engine::disk::Disk;
use sluice_engine::{Batch, EngineError, Log, LogConfig, MessageId, Offset, Record, Timestamp};

use crate::data::command::NewMessage;
use crate::data::message_id;
use crate::data::producers::RunStart;

/// Header naming a record's kind (absent: a message).
pub const KIND_HEADER: &str = ":k";
/// `KIND_HEADER` value of a tombstone.
pub const KIND_TOMBSTONE: &[u8] = b"t";
/// Header holding the content type.
pub const CONTENT_TYPE_HEADER: &str = ":ct";
/// Header holding a native producer's message key (the one reserved name
/// a proposal may carry: the edge sets it from the request's `key`).
pub const KEY_HEADER: &str = ":key";
/// How many records after an id's time a lookup scans for it.
const ID_SCAN_RECORDS_MAX: u64 = 4_096;

/// The latest version of a message written or deleted by id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdEntry {
    /// Offset of the latest version (the tombstone, when deleted).
    pub latest: Offset,
    /// Whether the message is deleted.
    pub deleted: bool,
    /// Offset of the newest older version, if any: the entry must stay
    /// while that version is in the log, or it would show again.
    pub older: Option<Offset>,
    /// When the latest version expires.
    pub expires_at: Timestamp,
}

/// A partition's small state, saved in checkpoints.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionState {
    /// Timestamp of the last message apply generated (puts do not count:
    /// their time comes from a client's id).
    pub last_timestamp: Option<Timestamp>,
    /// The id index.
    pub ids: BTreeMap<MessageId, IdEntry>,
}

/// One partition: its log and state.
#[derive(Debug)]
pub struct Partition {
    log: Log,
    state: PartitionState,
}

impl Partition {
    /// Opens (or creates) the partition's log in `dir`.
    pub fn open(
        disk: Arc<dyn Disk>,
        dir: &Path,
        config: LogConfig,
        state: PartitionState,
    ) -> Result<Partition, EngineError> {
        Ok(Partition {
            log: Log::open_on(disk, dir, config)?,
            state,
        })
    }

    /// The engine log (reads, flushes, retention).
    pub fn log(&self) -> &Log {
        &self.log
    }

    /// The engine log, mutably (flushes, truncation, retention).
    pub fn log_mut(&mut self) -> &mut Log {
        &mut self.log
    }

    /// The state saved in checkpoints.
    pub fn state(&self) -> &PartitionState {
        &self.state
    }

    /// Checks a new message against the engine's per-record limits and
    /// the reserved header names, so a request is refused before any of it
    /// is appended.
    pub fn check_message(message: &NewMessage) -> Result<(), String> {
        let reserved = |k: &String| k.starts_with(':') && k != KEY_HEADER;
        if let Some((name, _)) = message.headers.iter().find(|(k, _)| reserved(k)) {
            return Err(format!(
                "header {name:?}: names starting with ':' are reserved"
            ));
        }
        Partition::check_record(
            message.content_type.as_deref(),
            &message.headers,
            message.body.len(),
        )
    }

    /// Checks the record a message becomes (its content type, client
    /// headers and body size) against the engine's per-record limits.
    pub fn check_record(
        content_type: Option<&str>,
        headers: &[(String, Vec<u8>)],
        body_len: usize,
    ) -> Result<(), String> {
        let headers = record_headers(content_type, headers);
        Batch::check_record(headers.as_slice(), body_len).map_err(|e| e.to_string())
    }

    /// Appends generated messages at `proposed` time (already checked with
    /// `check_message`); returns where the first went. Each further message
    /// is one later in both offset and timestamp.
    pub fn append_new(
        &mut self,
        proposed: Timestamp,
        id_of: impl Fn(Timestamp) -> MessageId,
        messages: &[&NewMessage],
    ) -> Result<RunStart, EngineError> {
        let timed: Vec<(Timestamp, &NewMessage)> =
            messages.iter().map(|m| (proposed, *m)).collect();
        let (offset, stamps) = self.append_proposed(id_of, &timed)?;
        let timestamp = stamps
            .first()
            .copied()
            .unwrap_or_else(|| message_id::apply_timestamp(proposed, self.state.last_timestamp));
        Ok(RunStart { offset, timestamp })
    }

    /// Appends generated messages, each with the time its proposal was
    /// made (already checked with `check_message`), in as few engine
    /// appends as the batch limits allow; returns the first one's offset
    /// and every message's timestamp. A message is stamped at its
    /// proposal's time, or one tick past the previous message when that
    /// is later: so messages of several proposals appended together get
    /// exactly the stamps they would get appended one proposal at a time.
    pub fn append_proposed(
        &mut self,
        id_of: impl Fn(Timestamp) -> MessageId,
        messages: &[(Timestamp, &NewMessage)],
    ) -> Result<(Offset, Vec<Timestamp>), EngineError> {
        let mut first_offset = None;
        let mut stamps = Vec::with_capacity(messages.len());
        let mut previous = self.state.last_timestamp;
        // Headers: the content type and the caller's, plus their framing.
        let payload_bytes = messages
            .iter()
            .map(|(_, m)| {
                let headers: usize = m.headers.iter().map(|(k, v)| k.len() + v.len() + 4).sum();
                m.body.len() + m.content_type.as_ref().map_or(0, |c| c.len() + 16) + headers
            })
            .sum();
        let mut batch = Batch::for_records(messages.len(), payload_bytes);
        for (proposed, m) in messages {
            let timestamp = message_id::apply_timestamp(*proposed, previous);
            previous = Some(timestamp);
            stamps.push(timestamp);
            let expires_at = timestamp.plus_secs(m.ttl_secs);
            let headers = record_headers(m.content_type.as_deref(), &m.headers);
            let id = id_of(timestamp);
            let headers = headers.as_slice();
            let pushed = batch.push_parts(timestamp, expires_at, &id, headers, &m.body);
            if let Err(
                EngineError::BatchTooLarge { .. } | EngineError::BatchTooManyRecords { .. },
            ) = pushed
            {
                // A full batch: append it and go on in a new one (offsets
                // stay consecutive; this log has one writer).
                let base = self.log.append(&mut batch)?.base_offset;
                first_offset.get_or_insert(base);
                batch.clear();
                batch.push_parts(timestamp, expires_at, &id, headers, &m.body)?;
            } else {
                pushed?;
            }
        }
        if !batch.is_empty() {
            let base = self.log.append(&mut batch)?.base_offset;
            first_offset.get_or_insert(base);
        }
        if previous.is_some() {
            self.state.last_timestamp = previous;
        }
        Ok((first_offset.unwrap_or(self.log.next_offset()), stamps))
    }

    /// Writes a message by id: a new version at the tail, timestamped by
    /// its id (`fallback` when the id holds no time).
    pub fn put(
        &mut self,
        id: MessageId,
        fallback: Timestamp,
        expires_at: Timestamp,
        content_type: Option<&str>,
        body: &[u8],
    ) -> Result<(), EngineError> {
        let timestamp = message_id::timestamp_of(&id).unwrap_or(fallback);
        let older = self.latest_offset(&id)?;
        let headers = record_headers(content_type, &[]);
        let mut batch = Batch::new();
        batch.push_parts(timestamp, expires_at, &id, headers.as_slice(), body)?;
        let at = self.log.append(&mut batch)?.base_offset;
        self.state.ids.insert(
            id,
            IdEntry {
                latest: at,
                deleted: false,
                older,
                expires_at,
            },
        );
        Ok(())
    }

    /// Deletes a message by id with a tombstone; an absent id is ignored.
    pub fn delete(&mut self, id: MessageId, now: Timestamp) -> Result<(), EngineError> {
        let Some(latest) = self.latest_offset(&id)? else {
            return Ok(());
        };
        let Some(record) = self.record_at(latest)? else {
            return Ok(());
        };
        if record.is_expired(now) {
            return Ok(());
        }
        let mut batch = Batch::new();
        // A tombstone lives as long as what it deletes.
        batch.push_parts(
            record.timestamp,
            record.expires_at,
            &id,
            &[(KIND_HEADER, KIND_TOMBSTONE)],
            &[],
        )?;
        let at = self.log.append(&mut batch)?.base_offset;
        self.state.ids.insert(
            id,
            IdEntry {
                latest: at,
                deleted: true,
                older: Some(latest),
                expires_at: record.expires_at,
            },
        );
        Ok(())
    }

    /// The live version of message `id`, if any (not deleted, not expired).
    pub fn get(&self, id: &MessageId, now: Timestamp) -> Result<Option<Record>, EngineError> {
        let Some(offset) = self.latest_offset(id)? else {
            return Ok(None);
        };
        Ok(self.record_at(offset)?.filter(|r| self.is_visible(r, now)))
    }

    /// Whether readers see `record`: not a tombstone, not expired, and the
    /// latest version of its id.
    pub fn is_visible(&self, record: &Record, now: Timestamp) -> bool {
        if record.is_expired(now) || record.header(KIND_HEADER) == Some(KIND_TOMBSTONE) {
            return false;
        }
        match self.state.ids.get(&record.id) {
            Some(entry) => !entry.deleted && entry.latest == record.offset,
            None => true,
        }
    }

    /// Forgets index entries that no longer change what readers see: no
    /// older version left in the log, and the latest one gone or expired
    /// (a deleted one needs no entry once nothing older is left).
    pub fn prune_ids(&mut self, now: Timestamp) {
        let start = self.log.start_offset();
        self.state.ids.retain(|_, e| {
            let older_left = e.older.is_some_and(|o| o >= start);
            let latest_needed = !e.deleted && e.latest >= start && e.expires_at > now;
            older_left || latest_needed
        });
    }

    /// Where the latest version of `id` is: the index, else a scan from
    /// the id's time (ids apply generates carry their record's time).
    fn latest_offset(&self, id: &MessageId) -> Result<Option<Offset>, EngineError> {
        if let Some(entry) = self.state.ids.get(id) {
            return Ok(Some(entry.latest));
        }
        let Some(t) = message_id::timestamp_of(id) else {
            return Ok(None);
        };
        let from = self.log.offset_for_timestamp(t)?;
        let to = from.plus(ID_SCAN_RECORDS_MAX);
        Ok(self.log.find_by_id(id, from, to)?.map(|r| r.offset))
    }

    fn record_at(&self, offset: Offset) -> Result<Option<Record>, EngineError> {
        if offset < self.log.start_offset() || offset >= self.log.next_offset() {
            return Ok(None);
        }
        Ok(self.log.read(offset, 1, 0)?.into_iter().next())
    }
}

/// The headers a message's record carries: the content type (reserved
/// name), then the client's. Without client headers (every v1 message)
/// they stay on the stack: they are built for every message applied.
enum RecordHeaders<'a> {
    /// At most the content type.
    Few(Option<(&'a str, &'a [u8])>),
    /// The content type, if any, and the client's.
    Many(Vec<(&'a str, &'a [u8])>),
}

impl<'a> RecordHeaders<'a> {
    fn as_slice(&self) -> &[(&'a str, &'a [u8])] {
        match self {
            RecordHeaders::Few(one) => one.as_slice(),
            RecordHeaders::Many(all) => all,
        }
    }
}

/// The headers of a message's record, from its content type and its
/// client headers.
fn record_headers<'a>(
    content_type: Option<&'a str>,
    headers: &'a [(String, Vec<u8>)],
) -> RecordHeaders<'a> {
    let content_type = content_type.map(|ct| (CONTENT_TYPE_HEADER, ct.as_bytes()));
    if headers.is_empty() {
        return RecordHeaders::Few(content_type);
    }
    let mut all = Vec::with_capacity(headers.len() + 1);
    all.extend(content_type);
    all.extend(headers.iter().map(|(k, v)| (k.as_str(), v.as_slice())));
    RecordHeaders::Many(all)
}
