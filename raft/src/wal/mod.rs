//! The node's write-ahead log: one `sluice-engine` log holding the Raft
//! entries, votes, committed ids, truncations and purges of every group on
//! the node (the design of RabbitMQ's Ra WAL and TiKV's raft-engine).
//!
//! - Writes are readable at once; their callback runs when they are durable.
//!   One flusher thread makes every pending write of every group durable
//!   with one `fdatasync` per round (`flusher.rs`).
//! - A truncation or purge is a record that replay honours, never a file
//!   truncation; a group's entries are found through an in-memory index
//!   (index → WAL offset) rebuilt by replaying the WAL at open (`group.rs`).
//! - `compact` deletes WAL segments once every group is past them,
//!   rewriting the few metadata records (votes, committed ids, purge
//!   markers) that still live there.
//!
//! Concurrency: a `Wal` is `Sync`; one mutex guards the engine log, the
//! group indexes and the callback queue, and is never held during an fsync
//! by the flusher. Failure: a failed fsync fails every pending callback and
//! poisons the WAL for writes (reopen to recover).

mod flusher;
mod group;
mod histogram;
mod record;

use std::collections::{BTreeMap, VecDeque};
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, mpsc};
use std::thread::JoinHandle;

use bytes::Bytes;
use sluice_engine::disk::{Disk, FileDisk};
use sluice_engine::{Batch, EngineError, Log, LogConfig, Offset, Timestamp};

pub use flusher::FlushCallback;
pub use histogram::Histogram;

/// Upper bounds of the fsync latency histogram, in microseconds.
pub const SYNC_LATENCY_BOUNDS_US: &[u64] = &[
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 1_000_000,
];
/// Upper bounds of the group-commit batch size histogram, in writes.
pub const BATCH_SIZE_BOUNDS: &[u64] = &[1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1_024];
use group::GroupLog;
pub use record::EntryBytes;
use record::WalRecord;

use crate::ids::{GroupId, LogIndex};

/// Records read per engine call during replay.
const REPLAY_CHUNK_RECORDS: usize = 4096;
/// Bytes read per engine call during replay.
const REPLAY_CHUNK_BYTES: usize = 16 * 1024 * 1024;

/// Errors of the WAL.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WalError {
    /// The engine log failed (I/O, full disk, corruption, poisoned).
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// A record's WAL header is not one this version wrote.
    #[error("corrupted WAL record at offset {offset}: {reason}")]
    Corrupted {
        /// The record's offset in the WAL.
        offset: Offset,
        /// What is wrong.
        reason: String,
    },
    /// Entries must extend the group's log without a hole.
    #[error("{group}: entry {index} does not follow the log, expected {expected}")]
    NotContiguous {
        /// The group.
        group: GroupId,
        /// The index offered.
        index: LogIndex,
        /// The index that would extend the log.
        expected: LogIndex,
    },
    /// The flush the caller waited for failed.
    #[error("WAL flush failed: {0}")]
    FlushFailed(#[source] io::Error),
}

/// What the WAL holds for one group.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct WalGroupState {
    /// The latest vote saved.
    pub vote: Option<Bytes>,
    /// The latest committed id saved.
    pub committed: Option<Bytes>,
    /// The last purged index and the purged log id saved with it.
    pub purged: Option<(LogIndex, Bytes)>,
    /// Index of the first live entry (one past the purged index if none).
    pub first_index: LogIndex,
    /// One past the last live entry.
    pub next_index: LogIndex,
}

/// Group-commit counters, for metrics and benchmarks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalStats {
    /// fsync rounds run by the flusher.
    pub flush_rounds: u64,
    /// Writes (callbacks) those rounds made durable.
    pub flushed_writes: u64,
    /// First offset still in the WAL.
    pub start_offset: Offset,
    /// Offset the next record will get.
    pub next_offset: Offset,
    /// Number of WAL segments.
    pub segment_count: usize,
    /// How long each flush round's fsync took, in microseconds.
    pub sync_latency_us: Histogram,
    /// How many writes each flush round made durable.
    pub batch_size: Histogram,
}

impl Default for WalStats {
    fn default() -> Self {
        WalStats {
            flush_rounds: 0,
            flushed_writes: 0,
            start_offset: Offset::default(),
            next_offset: Offset::default(),
            segment_count: 0,
            sync_latency_us: Histogram::new(SYNC_LATENCY_BOUNDS_US),
            batch_size: Histogram::new(BATCH_SIZE_BOUNDS),
        }
    }
}

pub(crate) struct WalState {
    log: Log,
    groups: BTreeMap<GroupId, GroupLog>,
    pending: VecDeque<FlushCallback>,
    closed: bool,
    stats: WalStats,
}

impl WalState {
    /// Appends `records` as one engine batch (nothing if empty) and points
    /// their groups' indexes at where they landed: disk first, then index.
    fn append_records(&mut self, records: &[WalRecord]) -> Result<(), WalError> {
        if records.is_empty() {
            return Ok(());
        }
        let now = Timestamp::now();
        let payload_bytes = records.iter().map(WalRecord::payload_len).sum();
        let mut batch = Batch::for_records(records.len(), payload_bytes);
        for r in records {
            r.push_to(&mut batch, now)?;
        }
        let appended = self.log.append(&mut batch)?;
        for (i, r) in records.iter().enumerate() {
            let at = appended.base_offset.plus(i as u64);
            self.groups.entry(r.group()).or_default().apply(r, at);
        }
        Ok(())
    }

    /// The WAL offset below which no group needs an entry: the oldest
    /// live entry of any group (the end when none has one).
    fn cut(&self) -> Offset {
        self.groups
            .values()
            .filter_map(|g| g.entries.front().copied())
            .min()
            .unwrap_or_else(|| self.log.next_offset())
    }

    /// Whether the oldest WAL segment lies wholly below `cut` (then a
    /// compaction deletes at least it).
    fn whole_segment_below(&self, cut: Offset) -> bool {
        self.log
            .segments()
            .get(1)
            .is_some_and(|second| second.base <= cut)
    }

    /// Metadata records (votes, committed ids, purges) still living below
    /// `cut`, to be written again before the segments holding them go.
    fn stale_metadata(&self, cut: Offset) -> Vec<WalRecord> {
        let mut stale = Vec::new();
        for (&group, g) in &self.groups {
            if let Some(s) = g.vote.as_ref().filter(|s| s.at < cut) {
                stale.push(WalRecord::Vote {
                    group,
                    payload: s.payload.clone(),
                });
            }
            if let Some(s) = g.committed.as_ref().filter(|s| s.at < cut) {
                stale.push(WalRecord::Committed {
                    group,
                    payload: s.payload.clone(),
                });
            }
            if let Some((upto, s)) = g.purged.as_ref().filter(|(_, s)| s.at < cut) {
                stale.push(WalRecord::Purge {
                    group,
                    upto: *upto,
                    payload: s.payload.clone(),
                });
            }
        }
        stale
    }
}

pub(crate) struct Shared {
    state: Mutex<WalState>,
    wake: Condvar,
    /// Whether a background compaction is running (`compact_if_due`).
    compacting: AtomicBool,
}

impl Shared {
    /// See `Wal::compact`.
    fn compact(&self) -> Result<Offset, WalError> {
        let (cut, flushed) = {
            let mut state = self.lock();
            let state = &mut *state;
            let cut = state.cut();
            if !state.whole_segment_below(cut) {
                // Nothing to delete: rewriting the metadata would only
                // grow the WAL.
                return Ok(state.log.start_offset());
            }
            let stale = state.stale_metadata(cut);
            state.append_records(&stale)?;
            // The rewritten records must be durable before the old ones
            // go. The flusher makes them so in its next round, without
            // this lock held through the fsync.
            let (tx, rx) = mpsc::channel();
            state.pending.push_back(Box::new(move |r| drop(tx.send(r))));
            self.wake.notify_one();
            (cut, rx)
        };
        match flushed.recv() {
            Ok(result) => result.map_err(WalError::FlushFailed)?,
            Err(_) => {
                let stopped = io::Error::other("flusher stopped");
                return Err(WalError::FlushFailed(stopped));
            }
        }
        let detached = {
            let mut state = self.lock();
            debug_assert!(
                state
                    .groups
                    .values()
                    .filter_map(GroupLog::lowest_needed)
                    .all(|o| o >= cut)
            );
            state.log.detach_before(cut)
        };
        // Deleting files and fsyncing the directory take milliseconds:
        // writers go on meanwhile (engine `Log::detach_before`).
        detached.remove()?;
        Ok(self.lock().log.start_offset())
    }

    fn lock(&self) -> MutexGuard<'_, WalState> {
        // A panic while holding the lock cannot leave the engine log torn
        // (its own state changes only after a write succeeds), so the data
        // behind a poisoned mutex is still usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The node's write-ahead log. See the module docs.
pub struct Wal {
    shared: Arc<Shared>,
    flusher: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Wal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wal").field("stats", &self.stats()).finish()
    }
}

impl Wal {
    /// Opens (or creates) the WAL in `dir` on the real file system, with a
    /// node's WAL configuration (`node::wal_config_default`).
    pub fn open(dir: impl AsRef<Path>) -> Result<Wal, WalError> {
        Wal::open_on(Arc::new(FileDisk), dir, crate::node::wal_config_default())
    }

    /// Opens (or creates) the WAL in `dir` on `disk`, and replays it.
    pub fn open_on(
        disk: Arc<dyn Disk>,
        dir: impl AsRef<Path>,
        config: LogConfig,
    ) -> Result<Wal, WalError> {
        let log = Log::open_on(disk, dir, config)?;
        let groups = replay(&log)?;
        let shared = Arc::new(Shared {
            state: Mutex::new(WalState {
                log,
                groups,
                pending: VecDeque::new(),
                closed: false,
                stats: WalStats::default(),
            }),
            wake: Condvar::new(),
            compacting: AtomicBool::new(false),
        });
        let for_flusher = Arc::clone(&shared);
        let flusher = std::thread::Builder::new()
            .name("sluice-wal-flusher".into())
            .spawn(move || flusher::run(for_flusher))
            .map_err(|e| EngineError::Io {
                path: "flusher thread".into(),
                source: e,
            })?;
        Ok(Wal {
            shared,
            flusher: Some(flusher),
        })
    }

    /// Appends `records` (validated first: nothing is written if any is
    /// invalid) and queues `on_flushed` to run once they are durable.
    fn write(
        &self,
        records: &[WalRecord],
        on_flushed: Option<FlushCallback>,
    ) -> Result<(), WalError> {
        let mut state = self.shared.lock();
        check_contiguous(&state.groups, records)?;
        state.append_records(records)?;
        if let Some(cb) = on_flushed {
            state.pending.push_back(cb);
            self.shared.wake.notify_one();
        }
        Ok(())
    }

    /// Appends entries `(index, bytes)` of `group`, which must extend its log
    /// (or start it, if it has none). Readable when this returns; durable
    /// when `on_flushed` runs.
    pub fn append_entries<P: Into<EntryBytes>>(
        &self,
        group: GroupId,
        entries: impl IntoIterator<Item = (LogIndex, P)>,
        on_flushed: FlushCallback,
    ) -> Result<(), WalError> {
        let records: Vec<WalRecord> = entries
            .into_iter()
            .map(|(index, payload)| WalRecord::Entry {
                group,
                index,
                payload: payload.into(),
            })
            .collect();
        self.write(&records, Some(on_flushed))
    }

    /// Saves `group`'s vote; durable when `on_flushed` runs, and with it
    /// every write made before it.
    pub fn save_vote(
        &self,
        group: GroupId,
        vote: Bytes,
        on_flushed: FlushCallback,
    ) -> Result<(), WalError> {
        self.write(
            &[WalRecord::Vote {
                group,
                payload: vote,
            }],
            Some(on_flushed),
        )
    }

    /// Saves `group`'s committed log id; durable when `on_flushed` runs.
    /// Without a callback no flush is asked for: it becomes durable with
    /// the next flush round (an append's or a vote's). That is how the log
    /// store saves it: losing it costs a restart only re-applying from the
    /// last checkpoint until the group commits again, and a flush of its
    /// own was a third of the WAL's fsyncs, each delaying the next
    /// append's.
    pub fn save_committed(
        &self,
        group: GroupId,
        committed: Bytes,
        on_flushed: Option<FlushCallback>,
    ) -> Result<(), WalError> {
        self.write(
            &[WalRecord::Committed {
                group,
                payload: committed,
            }],
            on_flushed,
        )
    }

    /// Removes `group`'s entries after `last_kept` (all if `None`). Takes
    /// effect at once; durable with the next flush round.
    pub fn truncate_after(
        &self,
        group: GroupId,
        last_kept: Option<LogIndex>,
    ) -> Result<(), WalError> {
        self.write(&[WalRecord::TruncateAfter { group, last_kept }], None)
    }

    /// Removes `group`'s entries up to and including `upto`, recording
    /// `log_id` as its last purged id. Durable with the next flush round.
    pub fn purge(&self, group: GroupId, upto: LogIndex, log_id: Bytes) -> Result<(), WalError> {
        self.write(
            &[WalRecord::Purge {
                group,
                upto,
                payload: log_id,
            }],
            None,
        )
    }

    /// Blocks until everything written so far is durable.
    pub fn sync(&self) -> Result<(), WalError> {
        let (tx, rx) = mpsc::channel();
        self.write(&[], Some(Box::new(move |r| drop(tx.send(r)))))?;
        match rx.recv() {
            Ok(result) => result.map_err(WalError::FlushFailed),
            Err(_) => Err(WalError::FlushFailed(io::Error::other("flusher stopped"))),
        }
    }

    /// The groups that have written anything.
    pub fn groups(&self) -> Vec<GroupId> {
        self.shared.lock().groups.keys().copied().collect()
    }

    /// What the WAL holds for `group` (empty if it never wrote).
    pub fn group_state(&self, group: GroupId) -> WalGroupState {
        let state = self.shared.lock();
        let Some(g) = state.groups.get(&group) else {
            return WalGroupState::default();
        };
        WalGroupState {
            vote: g.vote.as_ref().map(|s| s.payload.clone()),
            committed: g.committed.as_ref().map(|s| s.payload.clone()),
            purged: g.purged.as_ref().map(|(i, s)| (*i, s.payload.clone())),
            first_index: g.first,
            next_index: g.next_index(),
        }
    }

    /// `group`'s live entries with indexes in `[from, to)`, in order (the
    /// live log is contiguous, so this is its intersection with the range).
    pub fn read_entries(
        &self,
        group: GroupId,
        from: LogIndex,
        to: LogIndex,
    ) -> Result<Vec<(LogIndex, Bytes)>, WalError> {
        let state = self.shared.lock();
        let Some(g) = state.groups.get(&group) else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        // Indexes below the first live entry (purged, or never written) are
        // skipped, not an end: the range is clamped to the live log.
        let mut index = from.max(g.first);
        while index < to {
            let Some(offset) = g.offset_of(index) else {
                break;
            };
            let record = state
                .log
                .read(offset, 1, usize::MAX)?
                .into_iter()
                .next()
                .ok_or_else(|| WalError::Corrupted {
                    offset,
                    reason: "indexed record is missing".into(),
                })?;
            match WalRecord::decode(&record)? {
                WalRecord::Entry {
                    group: gr,
                    index: i,
                    payload,
                } if gr == group && i == index => out.push((index, payload.into_joined())),
                other => {
                    return Err(WalError::Corrupted {
                        offset,
                        reason: format!("index points at {other:?}, not {group} entry {index}"),
                    });
                }
            }
            index = LogIndex(index.0 + 1);
        }
        Ok(out)
    }

    /// Deletes WAL segments no group needs: everything before the oldest
    /// live entry of any group. Metadata records still in those segments
    /// are rewritten at the end first, and made durable before anything is
    /// deleted. Returns the WAL's new start offset.
    pub fn compact(&self) -> Result<Offset, WalError> {
        self.shared.compact()
    }

    /// Starts `compact` on a background thread when a whole WAL segment
    /// is below every group's oldest live entry (and none runs already).
    /// Called after purges; cheap when nothing is due. Returns whether it
    /// started one.
    pub fn compact_if_due(&self) -> bool {
        let due = {
            let state = self.shared.lock();
            state.whole_segment_below(state.cut())
        };
        if !due || self.shared.compacting.swap(true, Ordering::AcqRel) {
            return false;
        }
        let shared = Arc::clone(&self.shared);
        let spawned = std::thread::Builder::new()
            .name("sluice-wal-compact".into())
            .spawn(move || {
                if let Err(e) = shared.compact() {
                    tracing::warn!(error = %e, "WAL compaction failed; retried at the next purge");
                }
                shared.compacting.store(false, Ordering::Release);
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "could not start WAL compaction");
            self.shared.compacting.store(false, Ordering::Release);
            return false;
        }
        true
    }

    /// The groups whose live entries keep the oldest WAL segment from
    /// being deleted (empty when the WAL has one segment). An idle group
    /// never reaches its snapshot threshold, so without help its first
    /// entries would pin the WAL forever: the node snapshots these groups
    /// when the WAL grows (`Node::relieve_wal`), and their purges let
    /// `compact` go on.
    pub fn groups_pinning_oldest_segment(&self) -> Vec<GroupId> {
        let state = self.shared.lock();
        let segments = state.log.segments();
        let Some(second) = segments.get(1) else {
            return Vec::new();
        };
        state
            .groups
            .iter()
            .filter(|(_, g)| g.entries.front().is_some_and(|at| *at < second.base))
            .map(|(group, _)| *group)
            .collect()
    }

    /// Group-commit counters and the WAL's extent.
    pub fn stats(&self) -> WalStats {
        let state = self.shared.lock();
        WalStats {
            start_offset: state.log.start_offset(),
            next_offset: state.log.next_offset(),
            segment_count: state.log.segment_bases().len(),
            ..state.stats.clone()
        }
    }
}

impl Drop for Wal {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.wake.notify_all();
        if let Some(flusher) = self.flusher.take() {
            // The flusher drains what is pending, then exits.
            let _ = flusher.join();
        }
    }
}

/// Rejects entries that would leave a hole in their group's log.
fn check_contiguous(
    groups: &BTreeMap<GroupId, GroupLog>,
    records: &[WalRecord],
) -> Result<(), WalError> {
    let mut next: BTreeMap<GroupId, LogIndex> = BTreeMap::new();
    for r in records {
        let WalRecord::Entry { group, index, .. } = r else {
            continue;
        };
        let expected = match next.get(group) {
            Some(n) => Some(*n),
            None => groups
                .get(group)
                .filter(|g| !g.entries.is_empty() || g.purged.is_some())
                .map(GroupLog::next_index),
        };
        if let Some(expected) = expected
            && *index != expected
        {
            return Err(WalError::NotContiguous {
                group: *group,
                index: *index,
                expected,
            });
        }
        next.insert(*group, LogIndex(index.0 + 1));
    }
    Ok(())
}

/// Rebuilds every group's index by reading the WAL from its start.
fn replay(log: &Log) -> Result<BTreeMap<GroupId, GroupLog>, WalError> {
    let mut groups: BTreeMap<GroupId, GroupLog> = BTreeMap::new();
    let mut at = log.start_offset();
    while at < log.next_offset() {
        let records = log.read(at, REPLAY_CHUNK_RECORDS, REPLAY_CHUNK_BYTES)?;
        for record in &records {
            let r = WalRecord::decode(record)?;
            groups
                .entry(r.group())
                .or_default()
                .apply(&r, record.offset);
        }
        match records.last() {
            Some(last) => at = last.offset.plus(1),
            None => break,
        }
    }
    Ok(groups)
}
