//! The newest entries of one group's log, kept in memory as appended.
//!
//! openraft reads every committed entry back from the log store to apply
//! it, and the leader reads entries again to replicate them. From the WAL
//! that is a read of the mapped segment and a decode that copies the
//! command; the entries appended last, which are the ones read, are kept
//! here instead (a command is `Bytes`, so keeping it copies nothing).
//!
//! Invariant: the cached entries are contiguous and end at the last entry
//! appended to the WAL. Every append, truncation and purge of the group
//! goes through the log store, which updates the cache after the WAL
//! accepted the change; anything that would break the invariant empties
//! the cache instead, and reads it cannot answer whole go to the WAL.

use std::collections::VecDeque;

use openraft::EntryPayload;
use openraft::alias::EntryOf;
use openraft::entry::RaftEntry;

use crate::glue::TypeConfig;

type C = TypeConfig;

/// Most entries kept per group: apply trails append by a few entries.
pub const ENTRIES_MAX: usize = 256;
/// Most command bytes kept per group (a coalesced entry is at most 4 MiB).
pub const BYTES_MAX: usize = 16 * 1024 * 1024;
/// What a non-command entry counts for against `BYTES_MAX`.
const OTHER_ENTRY_BYTES: usize = 64;

/// The newest entries of a group (see the module docs).
#[derive(Debug, Default)]
pub struct EntryCache {
    entries: VecDeque<EntryOf<C>>,
    bytes: usize,
}

fn size_of(entry: &EntryOf<C>) -> usize {
    match &entry.payload {
        EntryPayload::Normal(command) => command.0.len().max(OTHER_ENTRY_BYTES),
        _ => OTHER_ENTRY_BYTES,
    }
}

impl EntryCache {
    /// Notes `entries`, just appended to the WAL after everything cached.
    pub fn appended(&mut self, entries: Vec<EntryOf<C>>) {
        let Some(first) = entries.first() else {
            return;
        };
        let follows = self
            .entries
            .back()
            .is_none_or(|last| last.index() + 1 == first.index());
        if !follows {
            self.clear();
        }
        for entry in entries {
            self.bytes += size_of(&entry);
            self.entries.push_back(entry);
        }
        while self.entries.len() > ENTRIES_MAX || self.bytes > BYTES_MAX {
            match self.entries.pop_front() {
                Some(old) => self.bytes -= size_of(&old),
                None => break,
            }
        }
    }

    /// Entries after `last_kept` (all if `None`) left the log.
    pub fn truncated_after(&mut self, last_kept: Option<u64>) {
        while let Some(last) = self.entries.back() {
            if last_kept.is_some_and(|kept| last.index() <= kept) {
                break;
            }
            if let Some(gone) = self.entries.pop_back() {
                self.bytes -= size_of(&gone);
            }
        }
    }

    /// Entries up to and including `upto` left the log.
    pub fn purged(&mut self, upto: u64) {
        while let Some(first) = self.entries.front() {
            if first.index() > upto {
                break;
            }
            if let Some(gone) = self.entries.pop_front() {
                self.bytes -= size_of(&gone);
            }
        }
    }

    /// Forgets everything (the next read goes to the WAL).
    pub fn clear(&mut self) {
        self.entries.clear();
        self.bytes = 0;
    }

    /// The entries `[from, to)` if every one the log holds is cached,
    /// else `None`. `to` past the log's end reads up to the end.
    pub fn get(&self, from: u64, to: u64) -> Option<Vec<EntryOf<C>>> {
        let first = self.entries.front()?.index();
        let end = self.entries.back()?.index() + 1;
        if from < first {
            return None;
        }
        let to = to.min(end);
        if from >= to {
            return Some(Vec::new());
        }
        let start = usize::try_from(from - first).ok()?;
        let len = usize::try_from(to - from).ok()?;
        Some(self.entries.range(start..start + len).cloned().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::glue::Command;

    fn entry(index: u64, len: usize) -> EntryOf<C> {
        let log_id = openraft::testing::log_id::<C>(1, 1, index);
        RaftEntry::new_normal(log_id, Command(vec![index as u8; len].into()))
    }

    fn indexes(entries: &[EntryOf<C>]) -> Vec<u64> {
        entries.iter().map(|e| e.index()).collect()
    }

    #[test]
    fn reads_the_cached_range_and_refuses_what_it_does_not_hold() {
        let mut cache = EntryCache::default();
        cache.appended((5..10).map(|i| entry(i, 10)).collect());
        assert_eq!(
            indexes(&cache.get(5, 10).expect("cached")),
            vec![5, 6, 7, 8, 9]
        );
        assert_eq!(
            indexes(&cache.get(7, u64::MAX).expect("to the end")),
            vec![7, 8, 9]
        );
        assert_eq!(cache.get(10, 12).expect("past the end"), Vec::new());
        assert!(cache.get(4, 6).is_none(), "entry 4 is only in the WAL");
    }

    #[test]
    fn a_gap_empties_the_cache_rather_than_holding_a_hole() {
        let mut cache = EntryCache::default();
        cache.appended((1..4).map(|i| entry(i, 10)).collect());
        cache.appended(vec![entry(9, 10)]);
        assert!(cache.get(1, 4).is_none());
        assert_eq!(indexes(&cache.get(9, 10).expect("cached")), vec![9]);
    }

    #[test]
    fn truncation_and_purge_trim_both_ends() {
        let mut cache = EntryCache::default();
        cache.appended((1..11).map(|i| entry(i, 10)).collect());
        cache.truncated_after(Some(7));
        cache.purged(3);
        assert_eq!(
            indexes(&cache.get(4, u64::MAX).expect("cached")),
            vec![4, 5, 6, 7]
        );
        // A conflicting suffix replaces the truncated one.
        cache.appended(vec![entry(8, 10)]);
        assert_eq!(
            indexes(&cache.get(4, u64::MAX).expect("cached")),
            vec![4, 5, 6, 7, 8]
        );
        cache.truncated_after(None);
        assert!(cache.get(4, 5).is_none());
    }

    #[test]
    fn the_oldest_entries_go_first_past_either_bound() {
        let mut cache = EntryCache::default();
        cache.appended((0..ENTRIES_MAX as u64 + 10).map(|i| entry(i, 1)).collect());
        assert!(cache.get(9, 10).is_none());
        assert!(cache.get(10, 11).is_some());
        let big = BYTES_MAX / 4;
        let mut cache = EntryCache::default();
        cache.appended((0..6).map(|i| entry(i, big)).collect());
        assert!(cache.get(1, 2).is_none());
        assert_eq!(
            indexes(&cache.get(2, 6).expect("the newest four")),
            vec![2, 3, 4, 5]
        );
    }
}
