//! A group's Raft log and vote in the node WAL: openraft's
//! `RaftLogStorage` and `RaftLogReader` for one group.
//!
//! IO ordering (openraft requires writes to complete in submission order):
//! every write goes through the WAL's one lock in call order, and the
//! flusher completes callbacks in that same order. `save_vote` waits for
//! its own flush, which covers every earlier append (see `wal/flusher.rs`
//! on openraft #2118). `save_committed`, `truncate_after` and `purge` do not
//! wait: they become durable with the next flush round, and because the
//! WAL survives a crash only as a prefix (recovery cuts at the first
//! damaged batch), none of them can survive without the writes before it.

use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use openraft::EntryPayload;
use openraft::alias::{EntryOf, LogIdOf, VoteOf};
use openraft::entry::RaftEntry;
use openraft::storage::{IOFlushed, RaftLogStorage};
use openraft::{LogState, OptionalSend, RaftLogReader};

use crate::glue::TypeConfig;
use crate::glue::codec::{decode, encode, encode_len, encode_vec};
use crate::glue::entry_cache::EntryCache;
use crate::glue::type_config::Command;
use crate::ids::{GroupId, LogIndex};
use crate::wal::EntryBytes;
use crate::wal::{Wal, WalError};

type C = TypeConfig;

/// One group's view of the node WAL, as openraft's log store. Cheap to
/// clone: clones share the WAL and the cache of its newest entries.
#[derive(Clone, Debug)]
pub struct GroupLogStore {
    wal: Arc<Wal>,
    group: GroupId,
    cache: Arc<Mutex<EntryCache>>,
}

impl GroupLogStore {
    /// The log store of `group` in `wal`.
    pub fn new(wal: Arc<Wal>, group: GroupId) -> GroupLogStore {
        GroupLogStore {
            wal,
            group,
            cache: Arc::default(),
        }
    }

    fn cache(&self) -> MutexGuard<'_, EntryCache> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The group this store serves.
    pub fn group(&self) -> GroupId {
        self.group
    }
}

fn wal_error(e: WalError) -> io::Error {
    match e {
        WalError::FlushFailed(e) => e,
        other => io::Error::other(other),
    }
}

/// `[from, to)` of a range of log indexes.
fn bounds(range: &impl RangeBounds<u64>) -> (u64, u64) {
    let from = match range.start_bound() {
        Bound::Included(&i) => i,
        Bound::Excluded(&i) => i.saturating_add(1),
        Bound::Unbounded => 0,
    };
    let to = match range.end_bound() {
        Bound::Included(&i) => i.saturating_add(1),
        Bound::Excluded(&i) => i,
        Bound::Unbounded => u64::MAX,
    };
    (from, to)
}

impl RaftLogReader<C> for GroupLogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<EntryOf<C>>, io::Error> {
        let (from, to) = bounds(&range);
        if let Some(cached) = self.cache().get(from, to) {
            return Ok(cached);
        }
        let entries = self
            .wal
            .read_entries(self.group, LogIndex(from), LogIndex(to))
            .map_err(wal_error)?;
        entries.iter().map(|(_, bytes)| decode(bytes)).collect()
    }

    async fn read_vote(&mut self) -> Result<Option<VoteOf<C>>, io::Error> {
        self.wal
            .group_state(self.group)
            .vote
            .map(|b| decode(&b))
            .transpose()
    }
}

impl RaftLogStorage<C> for GroupLogStore {
    type LogReader = GroupLogStore;

    async fn get_log_state(&mut self) -> Result<LogState<C>, io::Error> {
        let state = self.wal.group_state(self.group);
        let last_purged_log_id: Option<LogIdOf<C>> =
            state.purged.map(|(_, b)| decode(&b)).transpose()?;
        let last_log_id = if state.next_index > state.first_index {
            let last = LogIndex(state.next_index.0 - 1);
            let entries = self
                .wal
                .read_entries(self.group, last, state.next_index)
                .map_err(wal_error)?;
            match entries.first() {
                Some((_, bytes)) => Some(decode::<EntryOf<C>>(bytes)?.log_id()),
                None => return Err(io::Error::other("last entry vanished while reading")),
            }
        } else {
            last_purged_log_id
        };
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &VoteOf<C>) -> Result<(), io::Error> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.wal
            .save_vote(
                self.group,
                encode(vote)?,
                Box::new(move |r| drop(tx.send(r))),
            )
            .map_err(wal_error)?;
        rx.await
            .unwrap_or_else(|_| Err(io::Error::other("WAL flusher stopped")))
    }

    async fn save_committed(&mut self, committed: Option<LogIdOf<C>>) -> Result<(), io::Error> {
        self.wal
            .save_committed(self.group, encode(&committed)?, None)
            .map_err(wal_error)
    }

    async fn read_committed(&mut self) -> Result<Option<LogIdOf<C>>, io::Error> {
        let committed: Option<Option<LogIdOf<C>>> = self
            .wal
            .group_state(self.group)
            .committed
            .map(|b| decode(&b))
            .transpose()?;
        Ok(committed.flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: IOFlushed<C>) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = EntryOf<C>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<EntryOf<C>> = entries.into_iter().collect();
        let encoded = entries
            .iter()
            .map(|e| Ok((LogIndex(e.index()), encode_entry(e)?)))
            .collect::<io::Result<Vec<_>>>()?;
        self.wal
            .append_entries(
                self.group,
                encoded,
                Box::new(move |r| callback.io_completed(r)),
            )
            .map_err(wal_error)?;
        // After the WAL took them: the cache never holds what it lacks.
        self.cache().appended(entries);
        Ok(())
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogIdOf<C>>) -> Result<(), io::Error> {
        let last_kept = last_log_id.map(|id| LogIndex(id.index()));
        // Before the WAL: no read finds in the cache what left the log.
        self.cache().truncated_after(last_kept.map(|i| i.0));
        self.wal
            .truncate_after(self.group, last_kept)
            .map_err(wal_error)
    }

    async fn purge(&mut self, log_id: LogIdOf<C>) -> Result<(), io::Error> {
        self.cache().purged(log_id.index());
        self.wal
            .purge(self.group, LogIndex(log_id.index()), encode(&log_id)?)
            .map_err(wal_error)?;
        // Segments every group has purged past can go now (off this task).
        let _started = self.wal.compact_if_due();
        Ok(())
    }
}

/// An entry's WAL payload. A normal entry's command is the last field of
/// its encoding, a byte string (its length, then its bytes). So the head
/// is the entry encoded with an empty command, whose trailing zero length
/// becomes the command's, and the body is the command itself, shared: its
/// bytes are copied once, into the WAL's batch.
fn encode_entry(entry: &EntryOf<C>) -> io::Result<EntryBytes> {
    let EntryPayload::Normal(command) = &entry.payload else {
        return encode(entry).map(EntryBytes::from);
    };
    let hollow: EntryOf<C> = RaftEntry::new_normal(entry.log_id, Command(Bytes::new()));
    let mut head = encode_vec(&hollow)?;
    if head.pop() != Some(0) {
        return Err(io::Error::other(
            "an entry's encoding does not end with its command's length",
        ));
    }
    head.extend_from_slice(&encode_len(command.0.len())?);
    Ok(EntryBytes {
        head: Bytes::from(head),
        body: command.0.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_split_entry_joins_to_exactly_the_entry_encoded_whole() {
        // Lengths across the varint's steps (1, 3 and 5 bytes).
        for len in [0usize, 1, 250, 251, 65_535, 65_536, 70_000] {
            for (term, node, index) in [(1, 1, 1), (7, 3, 300), (u64::MAX, u64::MAX, u64::MAX)] {
                let command: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
                let log_id = openraft::testing::log_id::<C>(term, node, index);
                let entry: EntryOf<C> = RaftEntry::new_normal(log_id, Command(command.into()));
                let split = encode_entry(&entry).expect("split");
                let whole = encode(&entry).expect("whole");
                assert_eq!(split.into_joined(), whole, "{len} bytes at {log_id}");
            }
        }
    }

    #[test]
    fn entries_without_a_command_are_encoded_whole() {
        let entry: EntryOf<C> = openraft::testing::blank_ent::<C>(2, 1, 5);
        let split = encode_entry(&entry).expect("blank");
        assert!(split.body.is_empty());
        assert_eq!(split.head, encode(&entry).expect("whole"));
    }
}
