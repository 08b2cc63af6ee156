//! How a WAL record sits in an engine record (docs/format.md#node-wal).
//!
//! The engine's 16-byte record id carries the WAL's own header, so that an
//! entry's payload is the entry's bytes, unchanged and zero-copy:
//!
//! ```text
//!  0      1               5                               13     15     16
//!  +------+---------------+-------------------------------+------+------+
//!  | kind | group (u32 BE)|        index (u64 BE)         | 0  0 |  ver |
//!  +------+---------------+-------------------------------+------+------+
//! ```
//!
//! The engine's batch CRCs protect all of it; this module checks the
//! version and that the kind is known, and rejects anything else as
//! corruption.

use bytes::Bytes;
use sluice_engine::{Batch, MessageId, Record, Timestamp};

use crate::ids::{GroupId, LogIndex};
use crate::wal::WalError;

/// WAL record format versions. Version 1: the initial format.
pub const WAL_FORMAT_VERSION: u8 = 1;

const KIND_ENTRY: u8 = 1;
const KIND_VOTE: u8 = 2;
const KIND_COMMITTED: u8 = 3;
const KIND_TRUNCATE: u8 = 4;
const KIND_PURGE: u8 = 5;

/// `index` value of a truncation that removes every entry.
const TRUNCATE_ALL: u64 = u64::MAX;

/// An entry's bytes: the record's payload is `head` then `body`. The log
/// store builds a small head and shares the proposal's command as the
/// body, so the command is copied once, into the engine batch, not first
/// into a joined buffer. Read back from the WAL, the whole payload is the
/// head.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EntryBytes {
    /// The payload's first bytes.
    pub head: Bytes,
    /// The bytes after them.
    pub body: Bytes,
}

impl EntryBytes {
    /// The payload's length.
    pub fn len(&self) -> usize {
        self.head.len() + self.body.len()
    }

    /// Whether the payload is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The payload as one buffer (copied only if it is in two pieces).
    pub fn into_joined(self) -> Bytes {
        if self.body.is_empty() {
            return self.head;
        }
        let mut joined = Vec::with_capacity(self.len());
        joined.extend_from_slice(&self.head);
        joined.extend_from_slice(&self.body);
        Bytes::from(joined)
    }
}

impl From<Bytes> for EntryBytes {
    fn from(head: Bytes) -> EntryBytes {
        EntryBytes {
            head,
            body: Bytes::new(),
        }
    }
}

/// One record of the node WAL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum WalRecord {
    /// A Raft log entry of `group` at `index`; the payload is opaque.
    Entry {
        group: GroupId,
        index: LogIndex,
        payload: EntryBytes,
    },
    /// The group's vote (opaque), replacing any earlier one.
    Vote { group: GroupId, payload: Bytes },
    /// The group's committed log id (opaque), replacing any earlier one.
    Committed { group: GroupId, payload: Bytes },
    /// Entries after `last_kept` (all of them if `None`) are gone.
    TruncateAfter {
        group: GroupId,
        last_kept: Option<LogIndex>,
    },
    /// Entries up to and including `upto` are gone; the payload is the
    /// purged log id (opaque), reported as the group's last purged id.
    Purge {
        group: GroupId,
        upto: LogIndex,
        payload: Bytes,
    },
}

fn id(kind: u8, group: GroupId, index: u64) -> MessageId {
    let mut id = [0u8; 16];
    id[0] = kind;
    id[1..5].copy_from_slice(&group.0.to_be_bytes());
    id[5..13].copy_from_slice(&index.to_be_bytes());
    id[15] = WAL_FORMAT_VERSION;
    MessageId(id)
}

impl WalRecord {
    /// The length of the bytes the record carries.
    pub fn payload_len(&self) -> usize {
        match self {
            WalRecord::Entry { payload, .. } => payload.len(),
            WalRecord::Vote { payload, .. }
            | WalRecord::Committed { payload, .. }
            | WalRecord::Purge { payload, .. } => payload.len(),
            WalRecord::TruncateAfter { .. } => 0,
        }
    }

    /// The group the record belongs to.
    pub fn group(&self) -> GroupId {
        match self {
            WalRecord::Entry { group, .. }
            | WalRecord::Vote { group, .. }
            | WalRecord::Committed { group, .. }
            | WalRecord::TruncateAfter { group, .. }
            | WalRecord::Purge { group, .. } => *group,
        }
    }

    /// Adds the record to an engine batch.
    pub fn push_to(&self, batch: &mut Batch, now: Timestamp) -> Result<(), WalError> {
        let (id, payload): (MessageId, &[u8]) = match self {
            WalRecord::Entry {
                group,
                index,
                payload,
            } => {
                let id = id(KIND_ENTRY, *group, index.0);
                let parts: [&[u8]; 2] = [&payload.head, &payload.body];
                batch.push_gathered(now, Timestamp::NEVER, &id, &[], &parts)?;
                return Ok(());
            }
            WalRecord::Vote { group, payload } => (id(KIND_VOTE, *group, 0), payload),
            WalRecord::Committed { group, payload } => (id(KIND_COMMITTED, *group, 0), payload),
            WalRecord::TruncateAfter { group, last_kept } => (
                id(
                    KIND_TRUNCATE,
                    *group,
                    last_kept.map_or(TRUNCATE_ALL, |i| i.0),
                ),
                &[],
            ),
            WalRecord::Purge {
                group,
                upto,
                payload,
            } => (id(KIND_PURGE, *group, upto.0), payload),
        };
        batch.push_parts(now, Timestamp::NEVER, &id, &[], payload)?;
        Ok(())
    }

    /// Decodes an engine record read back from the WAL.
    pub fn decode(record: &Record) -> Result<WalRecord, WalError> {
        let id = &record.id.0;
        let corrupt = |reason: String| WalError::Corrupted {
            offset: record.offset,
            reason,
        };
        if id[15] != WAL_FORMAT_VERSION {
            return Err(corrupt(format!("unknown WAL record version {}", id[15])));
        }
        if id[13] != 0 || id[14] != 0 {
            return Err(corrupt("reserved WAL header bytes are not zero".into()));
        }
        let mut g = [0u8; 4];
        g.copy_from_slice(&id[1..5]);
        let group = GroupId(u32::from_be_bytes(g));
        let mut i = [0u8; 8];
        i.copy_from_slice(&id[5..13]);
        let index = u64::from_be_bytes(i);
        let payload = record.payload.clone();
        Ok(match id[0] {
            KIND_ENTRY => WalRecord::Entry {
                group,
                index: LogIndex(index),
                payload: payload.into(),
            },
            KIND_VOTE => WalRecord::Vote { group, payload },
            KIND_COMMITTED => WalRecord::Committed { group, payload },
            KIND_TRUNCATE => WalRecord::TruncateAfter {
                group,
                last_kept: (index != TRUNCATE_ALL).then_some(LogIndex(index)),
            },
            KIND_PURGE => WalRecord::Purge {
                group,
                upto: LogIndex(index),
                payload,
            },
            kind => return Err(corrupt(format!("unknown WAL record kind {kind}"))),
        })
    }
}
