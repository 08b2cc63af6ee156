//! One group's view of the WAL: where each of its entries lives, and its
//! latest vote, committed id and purge marker. Built by replaying the WAL
//! at open and kept current by every write; disk is the truth, this follows.
//!
//! Invariant: `entries` holds the WAL offsets of indexes `first..first+len`
//! with no hole, and `first > purged index`.

use std::collections::VecDeque;

use bytes::Bytes;
use sluice_engine::Offset;

use crate::ids::LogIndex;
use crate::wal::record::WalRecord;

/// A value and the WAL offset of the record that holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Stored {
    pub payload: Bytes,
    pub at: Offset,
}

#[derive(Debug, Clone, Default)]
pub(crate) struct GroupLog {
    pub vote: Option<Stored>,
    pub committed: Option<Stored>,
    /// The last purged index and its record.
    pub purged: Option<(LogIndex, Stored)>,
    /// Index of `entries[0]`.
    pub first: LogIndex,
    /// WAL offsets of the group's live entries.
    pub entries: VecDeque<Offset>,
}

impl GroupLog {
    /// One past the last entry's index (or past the purged index).
    pub fn next_index(&self) -> LogIndex {
        LogIndex(self.first.0 + self.entries.len() as u64)
    }

    /// The WAL offset of the entry at `index`, if it is live.
    pub fn offset_of(&self, index: LogIndex) -> Option<Offset> {
        let i = index.0.checked_sub(self.first.0)?;
        self.entries.get(usize::try_from(i).ok()?).copied()
    }

    /// Applies one record found at `at` (replay) or just written there.
    pub fn apply(&mut self, record: &WalRecord, at: Offset) {
        match record {
            WalRecord::Entry { index, .. } => self.put_entry(*index, at),
            WalRecord::Vote { payload, .. } => {
                self.vote = Some(Stored {
                    payload: payload.clone(),
                    at,
                })
            }
            WalRecord::Committed { payload, .. } => {
                self.committed = Some(Stored {
                    payload: payload.clone(),
                    at,
                })
            }
            WalRecord::TruncateAfter { last_kept, .. } => {
                let floor = self.purged.as_ref().map_or(0, |(p, _)| p.0 + 1);
                let next = last_kept.map_or(floor, |k| k.0 + 1).max(floor);
                if next <= self.first.0 {
                    // Nothing kept. On replay after a compaction `first` may
                    // be above `next` (the group's earlier entries were
                    // compacted away): the log restarts at `next`, as it did
                    // when this record was written.
                    self.entries.clear();
                    self.first = LogIndex(next);
                } else {
                    let keep = next - self.first.0;
                    self.entries
                        .truncate(usize::try_from(keep).unwrap_or(usize::MAX));
                }
            }
            WalRecord::Purge { upto, payload, .. } => {
                // A purge never moves `first` backwards: a marker carried
                // forward by compaction may name an index below it.
                let new_first = self.first.0.max(upto.0 + 1);
                let drop = usize::try_from(new_first - self.first.0)
                    .unwrap_or(usize::MAX)
                    .min(self.entries.len());
                self.entries.drain(..drop);
                self.first = LogIndex(new_first);
                // The purge marker only advances.
                if self.purged.as_ref().is_none_or(|(p, _)| p <= upto) {
                    let stored = Stored {
                        payload: payload.clone(),
                        at,
                    };
                    self.purged = Some((*upto, stored));
                }
            }
        }
    }

    /// Places an entry. Raft appends at the end; an index inside the live
    /// range replaces the suffix from there (a conflict the caller did not
    /// truncate first); an index past the end of an empty log starts it.
    fn put_entry(&mut self, index: LogIndex, at: Offset) {
        let next = self.next_index();
        if index == next {
            self.entries.push_back(at);
        } else if index < next && index >= self.first {
            self.entries.truncate((index.0 - self.first.0) as usize);
            self.entries.push_back(at);
        } else if self.entries.is_empty() && index > next {
            self.first = index;
            self.entries.push_back(at);
        } else {
            // Below `first` (already purged) or a hole after live entries:
            // the writer prevents both; replay ignores what cannot be placed.
            tracing::warn!(index = %index, first = %self.first, next = %next, "WAL entry ignored: not contiguous");
        }
    }

    /// The lowest WAL offset this group still needs: its first live entry
    /// and its latest metadata records.
    pub fn lowest_needed(&self) -> Option<Offset> {
        let meta = [
            self.vote.as_ref().map(|s| s.at),
            self.committed.as_ref().map(|s| s.at),
            self.purged.as_ref().map(|(_, s)| s.at),
        ];
        meta.into_iter()
            .flatten()
            .chain(self.entries.front().copied())
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::GroupId;

    fn entry(i: u64) -> WalRecord {
        WalRecord::Entry {
            group: GroupId(1),
            index: LogIndex(i),
            payload: Default::default(),
        }
    }

    #[test]
    fn truncating_everything_restarts_the_log_where_it_was_written() {
        // Replay after a compaction: index 0's record was deleted, so the
        // group first sees index 1; the later truncation of everything
        // must still leave the log ending where the writer left it (0).
        let mut g = GroupLog::default();
        g.apply(&entry(1), Offset(10));
        g.apply(
            &WalRecord::TruncateAfter {
                group: GroupId(1),
                last_kept: None,
            },
            Offset(11),
        );
        assert_eq!((g.first, g.next_index()), (LogIndex(0), LogIndex(0)));
        g.apply(&entry(0), Offset(12));
        assert_eq!(g.offset_of(LogIndex(0)), Some(Offset(12)));
    }

    #[test]
    fn entries_truncate_purge_and_conflicts_keep_the_log_contiguous() {
        let mut g = GroupLog::default();
        for (i, at) in (0..10).zip(100..) {
            g.apply(&entry(i), Offset(at));
        }
        assert_eq!((g.first, g.next_index()), (LogIndex(0), LogIndex(10)));
        g.apply(
            &WalRecord::TruncateAfter {
                group: GroupId(1),
                last_kept: Some(LogIndex(6)),
            },
            Offset(200),
        );
        assert_eq!(g.next_index(), LogIndex(7));
        g.apply(&entry(5), Offset(201)); // conflict: replaces 5 and 6
        assert_eq!(
            (g.next_index(), g.offset_of(LogIndex(5))),
            (LogIndex(6), Some(Offset(201)))
        );
        g.apply(
            &WalRecord::Purge {
                group: GroupId(1),
                upto: LogIndex(2),
                payload: Bytes::new(),
            },
            Offset(202),
        );
        assert_eq!(
            (g.first, g.offset_of(LogIndex(2)), g.offset_of(LogIndex(3))),
            (LogIndex(3), None, Some(Offset(103)))
        );
        g.apply(
            &WalRecord::Purge {
                group: GroupId(1),
                upto: LogIndex(20),
                payload: Bytes::new(),
            },
            Offset(203),
        );
        assert_eq!(
            (g.first, g.entries.len(), g.next_index()),
            (LogIndex(21), 0, LogIndex(21))
        );
        // A purge below `first` (a carried-forward marker) changes nothing.
        g.apply(
            &WalRecord::Purge {
                group: GroupId(1),
                upto: LogIndex(5),
                payload: Bytes::new(),
            },
            Offset(203),
        );
        assert_eq!((g.first, g.next_index()), (LogIndex(21), LogIndex(21)));
        g.apply(&entry(21), Offset(204));
        g.apply(
            &WalRecord::Purge {
                group: GroupId(1),
                upto: LogIndex(3),
                payload: Bytes::new(),
            },
            Offset(205),
        );
        assert_eq!(g.offset_of(LogIndex(21)), Some(Offset(204)));
        assert_eq!(g.next_index(), LogIndex(22));
        g.apply(
            &WalRecord::TruncateAfter {
                group: GroupId(1),
                last_kept: None,
            },
            Offset(205),
        );
        assert_eq!(g.entries.len(), 0);
        assert_eq!(g.lowest_needed(), Some(Offset(203)));
    }
}
