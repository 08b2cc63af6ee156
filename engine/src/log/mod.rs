//! A log: a directory of segments, the last one active (docs/format.md).
//!
//! Invariants: segments are contiguous in offset order; sealed segments form
//! a prefix, followed by segments rolled but not yet sealed, then the active
//! segment (the only one written); `start_offset <= durable_offset <=
//! next_offset`; every offset below `durable_offset` has been fsynced, and
//! so has the directory entry of its segment.
//! Rolling does no I/O beyond creating the next file: the flush that makes
//! a rolled segment durable (one fsync per unsealed file, plus the directory
//! if it changed) then seals it, so appending never waits on the disk.
//! Concurrency: `&mut self` writes, `&self` reads; wrap the log in a lock to
//! share it. For group commit, `flush_ticket` / `FlushTicket::sync` /
//! `complete_flush` let the fsync itself run without the lock held.
//! Failure: a failed fsync poisons the log (every later write returns
//! `Poisoned`) because the kernel may have dropped the dirty pages; reopen
//! to recover. Reads keep working.

use std::any::Any;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::batch::Batch;
use crate::config::LogConfig;
use crate::disk::{self, Disk, DiskFile, FileDisk};
use crate::error::EngineError;
use crate::format::iter_headers;
use crate::record::{MessageId, Offset, Record, Timestamp};
use crate::recovery;
use crate::segment::{self, Segment, SegmentCheck};

mod repair;

pub use repair::COPY_BYTES_MAX;

/// Where an appended batch landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// Offset of the batch's first record.
    pub base_offset: Offset,
    /// Offset of its last record.
    pub last_offset: Offset,
}

/// One segment of a log, as `Log::segments` describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentInfo {
    /// Its first offset.
    pub base: Offset,
    /// One past its last offset.
    pub next: Offset,
    /// Bytes of valid batches in its data file.
    pub len_bytes: u64,
    /// Whether it is sealed (immutable).
    pub sealed: bool,
    /// Its data file.
    pub path: PathBuf,
}

/// What a retention pass removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetentionReport {
    /// Segments deleted.
    pub segments_removed: usize,
    /// Bytes of `.log` files deleted.
    pub bytes_removed: u64,
    /// The log's first offset afterwards.
    pub start_offset: Offset,
}

/// A pending fsync: taken under the log's lock, run without it, and handed
/// back to `complete_flush`. See the module docs.
#[derive(Debug)]
#[must_use = "a ticket does nothing until synced and completed"]
pub struct FlushTicket {
    /// Every unsealed segment file: rolled ones and the active one.
    files: Vec<Arc<dyn DiskFile>>,
    /// The directory, when segments were created since it was last synced.
    dir: Option<(Arc<dyn Disk>, PathBuf)>,
    dir_changes: u64,
    trims: u64,
    next: Offset,
    epoch: u64,
}

impl FlushTicket {
    /// Runs the fsyncs (usually one). Call without holding the log's lock.
    pub fn sync(&self) -> io::Result<()> {
        for file in &self.files {
            file.sync_data()?;
        }
        match &self.dir {
            Some((disk, dir)) => disk.sync_dir(dir),
            None => Ok(()),
        }
    }

    /// The offset this ticket makes durable everything below.
    pub fn offset(&self) -> Offset {
        self.next
    }
}

/// Spare data files of removed segments, waiting to be renamed into place
/// for new segments (`LogConfig::recycle_segments_max`). Shared by a log
/// and what it detaches, which is removed without the log's lock.
#[derive(Debug)]
pub(crate) struct Spares {
    max: usize,
    /// Smaller files are deleted: little of a new segment would overwrite.
    len_bytes_min: u64,
    /// Names that are durable (their directory was synced after the rename
    /// that made them spares).
    paths: Mutex<Vec<PathBuf>>,
}

impl Spares {
    fn new(config: &LogConfig, found: Vec<PathBuf>) -> Spares {
        Spares {
            max: config.recycle_segments_max,
            len_bytes_min: config.segment_bytes_max / 2,
            paths: Mutex::new(found),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<PathBuf>> {
        self.paths.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn take(&self) -> Option<PathBuf> {
        self.lock().pop()
    }

    fn room(&self) -> usize {
        self.max.saturating_sub(self.lock().len())
    }
}

/// Segments taken out of a log by `Log::detach_before`, still on disk.
#[derive(Debug)]
#[must_use = "detached segments stay on disk until removed"]
pub struct Detached {
    disk: Arc<dyn Disk>,
    dir: PathBuf,
    spares: Arc<Spares>,
    /// Whole segments, mappings included: unmapping a large mapping takes
    /// the process's memory-map lock and stalls other threads' page
    /// faults, so it too happens in `remove`, not under the caller's lock.
    segments: Vec<Segment>,
}

impl Detached {
    /// How many segments were detached.
    pub fn len(&self) -> usize {
        self.segments.len()
    }

    /// Whether none were.
    pub fn is_empty(&self) -> bool {
        self.segments.is_empty()
    }

    /// Deletes the segments' files, oldest first (so a crash part-way
    /// leaves a contiguous log), then fsyncs the directory. With recycling
    /// on, a data file goes to the log's spares instead (renamed, its side
    /// files deleted) while there is room for it.
    pub fn remove(mut self) -> Result<(), EngineError> {
        if self.segments.is_empty() {
            return Ok(());
        }
        let disk = self.disk.as_ref();
        let mut room = self.spares.room();
        let mut recycled = Vec::new();
        for segment in &mut self.segments {
            if room > 0 && segment.len >= self.spares.len_bytes_min && !segment.views_in_use() {
                let spare = segment::spare_path(&self.dir, segment.base);
                // The data file first, as `remove_all` does: a crash
                // part-way leaves at worst orphan side files.
                disk.rename(&segment.paths.log, &spare)
                    .map_err(|e| EngineError::io(&segment.paths.log, e))?;
                segment.paths.remove_side_files(disk)?;
                recycled.push(spare);
                room -= 1;
            } else {
                segment.paths.remove_all(disk)?;
            }
        }
        disk.sync_dir(&self.dir)
            .map_err(|e| EngineError::io(&self.dir, e))?;
        // Only now may a spare be written over: were its rename lost in a
        // crash, its old name would come back with a seal that vouches for
        // bytes that are gone.
        self.spares.lock().extend(recycled);
        Ok(())
    }
}

/// A segmented, append-only log. See the crate docs for an overview.
#[derive(Debug)]
pub struct Log {
    dir: PathBuf,
    config: LogConfig,
    disk: Arc<dyn Disk>,
    /// In offset order; the last is the active (unsealed) segment.
    segments: Vec<Segment>,
    durable: Offset,
    poisoned: bool,
    /// Bumped when a truncation replaces the active file, so that an older
    /// ticket cannot mark new, unsynced records at the same offsets durable.
    epoch: u64,
    /// Directory changes made (segment files created, seals renamed) and
    /// how many of them a completed flush has synced.
    dir_changes: u64,
    dir_changes_synced: u64,
    /// Cuts of recycled files to their segment's length (at a roll), and
    /// how many of them a completed flush has synced: a segment is sealed
    /// only once its file's length is durable (the seal records it).
    trims: u64,
    trims_synced: u64,
    spares: Arc<Spares>,
    _lock: Box<dyn Any + Send + Sync>,
}

impl Log {
    /// Opens (or creates) the log in `dir` on the real file system.
    pub fn open(dir: impl AsRef<Path>, config: LogConfig) -> Result<Log, EngineError> {
        Log::open_on(Arc::new(FileDisk), dir, config)
    }

    /// Opens (or creates) the log in `dir` on `disk`.
    pub fn open_on(
        disk: Arc<dyn Disk>,
        dir: impl AsRef<Path>,
        config: LogConfig,
    ) -> Result<Log, EngineError> {
        config.sanitize()?;
        let dir = dir.as_ref().to_path_buf();
        let io = |e| EngineError::io(&dir, e);
        disk.create_dir_all(&dir).map_err(io)?;
        if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            // The directory's own entry must be durable before anything in
            // it is reported durable.
            disk.sync_dir(parent)
                .map_err(|e| EngineError::io(parent, e))?;
        }
        let lock = disk.lock_dir(&dir).map_err(|e| match e.kind() {
            io::ErrorKind::WouldBlock => EngineError::Locked { path: dir.clone() },
            _ => EngineError::io(&dir, e),
        })?;
        let recovered = recovery::recover(disk.as_ref(), &dir, &config)?;
        let spares = Arc::new(Spares::new(&config, recovered.spares));
        let mut log = Log {
            dir,
            config,
            disk,
            segments: recovered.segments,
            durable: Offset(0),
            poisoned: false,
            epoch: 0,
            dir_changes: 0,
            dir_changes_synced: 0,
            trims: 0,
            trims_synced: 0,
            spares,
            _lock: lock,
        };
        log.ensure_active()?;
        // Recovery fsynced the active segment; sealed ones were fsynced
        // before they were sealed.
        log.durable = log.next_offset();
        #[cfg(debug_assertions)]
        log.check_invariants();
        Ok(log)
    }

    /// The directory holding the log.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The configuration the log was opened with.
    pub fn config(&self) -> &LogConfig {
        &self.config
    }

    /// The first offset still in the log.
    pub fn start_offset(&self) -> Offset {
        self.segments.first().map_or(Offset(0), |s| s.base)
    }

    /// One past the last offset in the log: where the next append goes.
    pub fn next_offset(&self) -> Offset {
        self.active().next
    }

    /// Every offset below this one is durable (fsynced).
    pub fn durable_offset(&self) -> Offset {
        self.durable
    }

    /// Total bytes of the log's `.log` files.
    pub fn size_bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.len).sum()
    }

    /// Base offsets of the segments, oldest first.
    pub fn segment_bases(&self) -> Vec<Offset> {
        self.segments.iter().map(|s| s.base).collect()
    }

    /// Every segment, oldest first: its offsets, size and data file (for
    /// snapshots, which copy or link segment files).
    pub fn segments(&self) -> Vec<SegmentInfo> {
        self.segments
            .iter()
            .map(|s| SegmentInfo {
                base: s.base,
                next: s.next,
                len_bytes: s.len,
                sealed: s.seal.is_some(),
                path: s.paths.log.clone(),
            })
            .collect()
    }

    /// The name of the data file of the segment at `base` (the other files
    /// of a segment are caches and seals, rebuilt when missing).
    pub fn segment_file_name(base: Offset) -> String {
        segment::SegmentPaths::new(Path::new(""), base)
            .log
            .to_string_lossy()
            .into_owned()
    }

    /// Whether an fsync failure has made the log refuse writes.
    pub fn is_poisoned(&self) -> bool {
        self.poisoned
    }

    fn active(&self) -> &Segment {
        match self.segments.last() {
            Some(s) => s,
            None => unreachable!("a log always has an active segment"),
        }
    }

    fn active_mut(&mut self) -> &mut Segment {
        match self.segments.last_mut() {
            Some(s) => s,
            None => unreachable!("a log always has an active segment"),
        }
    }

    fn check_writable(&self) -> Result<(), EngineError> {
        if self.poisoned {
            Err(EngineError::Poisoned)
        } else {
            Ok(())
        }
    }

    fn sync_dir(&self) -> Result<(), EngineError> {
        self.disk
            .sync_dir(&self.dir)
            .map_err(|e| EngineError::io(&self.dir, e))
    }

    /// Makes sure the last segment is an unsealed one to append to (after
    /// open found every segment sealed, or on a new log).
    fn ensure_active(&mut self) -> Result<(), EngineError> {
        match self.segments.last() {
            Some(s) if s.seal.is_none() => Ok(()),
            Some(s) => self.push_segment(s.next),
            None => self.push_segment(Offset(0)),
        }
    }

    /// Creates the segment file for `base` and makes it the active segment.
    /// Its directory entry is made durable by the next flush, before any of
    /// its offsets are reported durable.
    fn push_segment(&mut self, base: Offset) -> Result<(), EngineError> {
        let paths = segment::SegmentPaths::new(&self.dir, base);
        // A file left by an earlier attempt that failed before a directory
        // sync holds nothing this log ever reported.
        let disk = self.disk.as_ref();
        disk::remove_if_exists(disk, &paths.log).map_err(|e| EngineError::io(&paths.log, e))?;
        let recycled = self.spares.take().and_then(|spare| {
            Segment::from_spare(disk, &self.dir, base, &spare, self.config.write_mode)
                .inspect_err(|e| {
                    tracing::warn!(spare = %spare.display(), error = %e, "could not recycle a spare segment file; creating a new one");
                    let _ = disk::remove_if_exists(disk, &spare);
                    let _ = disk::remove_if_exists(disk, &paths.log);
                })
                .ok()
        });
        let segment = match recycled {
            Some(segment) => segment,
            None => Segment::create(disk, &self.dir, base, self.config.write_mode)?,
        };
        self.dir_changes += 1;
        self.segments.push(segment);
        Ok(())
    }

    /// Cuts the active segment's file to its length before it is rolled,
    /// if the file runs past it (a recycled file's stale bytes, a direct
    /// file's padding): bytes past the end would make its seal disagree
    /// with the file. Durable with the next flush, which seals it only
    /// then.
    fn trim_active(&mut self) -> Result<(), EngineError> {
        let trims = self.trims + 1;
        let active = self.active_mut();
        let Some(writer) = active.writer().cloned() else {
            unreachable!("the active segment has a writer");
        };
        let io = |e| EngineError::io(&active.paths.log, e);
        // Bytes still in memory would be padded when written out, after
        // this check: `set_len` writes them out first.
        if writer.len_bytes().map_err(io)? > active.len || writer.memory_from().is_some() {
            // No mapping is readable past `len`, so none loses a byte.
            writer.set_len(active.len).map_err(io)?;
            active.trim_change = Some(trims);
            self.trims = trims;
        }
        Ok(())
    }

    /// Appends a batch; its records are readable at once and durable after
    /// the next flush. Rolls to a new segment first if the active one is full
    /// or old. On error nothing was appended.
    pub fn append(&mut self, batch: &mut Batch) -> Result<Appended, EngineError> {
        self.check_writable()?;
        if batch.is_empty() {
            return Err(EngineError::EmptyBatch);
        }
        self.ensure_active()?;
        let active = self.active();
        let full = active.len + batch.encoded_len() as u64 > self.config.segment_bytes_max;
        let old = active
            .first_append
            .is_some_and(|t| t.elapsed() >= self.config.segment_age_max);
        if !active.is_empty() && (full || old) {
            self.roll()?;
        }
        let durable = self.durable;
        let interval = self.config.index_interval_bytes;
        let (base_offset, last_offset) = self.active_mut().append(batch, durable, interval)?;
        Ok(Appended {
            base_offset,
            last_offset,
        })
    }

    /// Closes the active segment to appends (if it holds anything) and
    /// starts a new one. No fsync: the next flush makes the closed segment
    /// durable and seals it.
    pub fn roll(&mut self) -> Result<(), EngineError> {
        self.check_writable()?;
        self.ensure_active()?;
        let active = self.active();
        if active.is_empty() {
            return Ok(());
        }
        let next = active.next;
        self.trim_active()?;
        self.push_segment(next)
    }

    /// Makes everything appended so far durable; returns the new durable
    /// offset. One `fdatasync` of the active segment (plus one per segment
    /// rolled since the last flush, and the directory if it changed).
    pub fn flush(&mut self) -> Result<Offset, EngineError> {
        let ticket = self.flush_ticket()?;
        let result = ticket.sync();
        self.complete_flush(ticket, result)
    }

    /// What was appended since the last call, per unsealed segment file
    /// (the active one and any rolled since the last flush): the file and
    /// the byte range, for `DiskFile::start_writeback` outside the
    /// caller's lock. Segments that did not grow are left out, so the
    /// hints cost nothing for idle partitions.
    pub fn writeback_due(&self) -> Vec<(Arc<dyn DiskFile>, u64, u64)> {
        self.segments
            .iter()
            .filter(|s| s.seal.is_none())
            .filter_map(|s| {
                let writer = s.writer()?;
                let (from, len) = s.writeback_due()?;
                Some((Arc::clone(writer), from, len))
            })
            .collect()
    }

    /// Takes a ticket to fsync everything appended so far.
    pub fn flush_ticket(&self) -> Result<FlushTicket, EngineError> {
        self.check_writable()?;
        let files = self
            .segments
            .iter()
            .filter(|s| s.seal.is_none())
            .filter_map(|s| s.writer().cloned())
            .collect();
        let dir = (self.dir_changes > self.dir_changes_synced)
            .then(|| (Arc::clone(&self.disk), self.dir.clone()));
        Ok(FlushTicket {
            files,
            dir,
            dir_changes: self.dir_changes,
            trims: self.trims,
            next: self.next_offset(),
            epoch: self.epoch,
        })
    }

    /// Records the outcome of a ticket's fsyncs and returns the durable
    /// offset, then seals the rolled segments that became durable. A failed
    /// fsync poisons the log.
    pub fn complete_flush(
        &mut self,
        ticket: FlushTicket,
        result: io::Result<()>,
    ) -> Result<Offset, EngineError> {
        if let Err(e) = result {
            self.poisoned = true;
            return Err(EngineError::io(&self.dir, e));
        }
        self.check_writable()?;
        if ticket.epoch == self.epoch {
            self.durable = self.durable.max(ticket.next.min(self.next_offset()));
            self.dir_changes_synced = self.dir_changes_synced.max(ticket.dir_changes);
            self.trims_synced = self.trims_synced.max(ticket.trims);
        }
        self.seal_durable_segments();
        Ok(self.durable)
    }

    /// Seals, in order, the rolled segments whose every offset is durable.
    /// A failure only postpones sealing to the next flush: an unsealed
    /// segment is still correct, just verified in full at open.
    fn seal_durable_segments(&mut self) {
        let last = self.segments.len() - 1;
        let durable = self.durable;
        let trims_synced = self.trims_synced;
        let disk = Arc::clone(&self.disk);
        for segment in &mut self.segments[..last] {
            if segment.seal.is_some() {
                continue;
            }
            if segment.next > durable || segment.trim_change.is_some_and(|t| t > trims_synced) {
                break;
            }
            if let Err(e) = segment.write_seal(disk.as_ref()) {
                tracing::warn!(segment = %segment.paths.log.display(), error = %e, "sealing failed; will retry at the next flush");
                break;
            }
            self.dir_changes += 1;
        }
    }

    /// Index of the segment holding `offset`, which must be in the log.
    fn segment_for(&self, offset: Offset) -> usize {
        self.segments
            .partition_point(|s| s.base <= offset)
            .saturating_sub(1)
    }

    fn check_range(&self, offset: Offset) -> Result<(), EngineError> {
        let (start, next) = (self.start_offset(), self.next_offset());
        if offset < start || offset > next {
            return Err(EngineError::OffsetOutOfRange {
                requested: offset,
                start,
                next,
            });
        }
        Ok(())
    }

    /// Reads records from `from` on: at most `max_records`, and at most
    /// `max_bytes` of encoded records except that the first record is always
    /// returned whole. Reading at `next_offset` returns nothing; outside
    /// `[start_offset, next_offset]` is `OffsetOutOfRange`.
    pub fn read(
        &self,
        from: Offset,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<Vec<Record>, EngineError> {
        self.check_range(from)?;
        let mut out = Vec::new();
        let mut budget = max_bytes;
        let mut cursor = from;
        for segment in &self.segments[self.segment_for(from)..] {
            if cursor >= segment.next || out.len() >= max_records {
                break;
            }
            let before = out.len();
            segment.read_into(
                self.disk.as_ref(),
                self.config.index_interval_bytes,
                cursor,
                max_records,
                &mut budget,
                &mut out,
            )?;
            let reached = out.last().map_or(cursor, |r| r.offset.plus(1));
            if out.len() == before || reached < segment.next {
                break; // a limit stopped the read inside this segment
            }
            cursor = reached;
        }
        Ok(out)
    }

    /// The offset of the first record with a timestamp at or after `t`, or
    /// `next_offset` if there is none.
    pub fn offset_for_timestamp(&self, t: Timestamp) -> Result<Offset, EngineError> {
        let interval = self.config.index_interval_bytes;
        for segment in self.segments.iter().filter(|s| !s.is_empty()) {
            // Every record of an earlier segment is at most its maximum.
            if segment.max_timestamp < t {
                continue;
            }
            if let Some(offset) = segment.find_time(self.disk.as_ref(), interval, t)? {
                return Ok(offset);
            }
        }
        Ok(self.next_offset())
    }

    /// The last record with `id` among offsets `[from, to)` (clamped to the
    /// log). A linear scan of that range: keep ranges narrow.
    pub fn find_by_id(
        &self,
        id: &MessageId,
        from: Offset,
        to: Offset,
    ) -> Result<Option<Record>, EngineError> {
        let from = from.max(self.start_offset());
        let to = to.min(self.next_offset());
        let mut found = None;
        if from >= to {
            return Ok(None);
        }
        for segment in &self.segments[self.segment_for(from)..] {
            if segment.base >= to {
                break;
            }
            let hit = segment.find_id(
                self.disk.as_ref(),
                self.config.index_interval_bytes,
                id,
                from,
                to,
            )?;
            found = hit.or(found);
        }
        Ok(found)
    }

    /// Reads a whole segment and checks every checksum, record and seal
    /// field (for a background scrubber).
    pub fn verify_segment(&self, base: Offset) -> Result<(), EngineError> {
        self.segment_check(base)?.run()
    }

    /// What `verify_segment` checks, taken under the caller's lock and run
    /// (`SegmentCheck::run`) after releasing it: the scrubber's way to
    /// verify a segment without holding up writers.
    pub fn segment_check(&self, base: Offset) -> Result<SegmentCheck, EngineError> {
        let segment = self
            .segments
            .iter()
            .find(|s| s.base == base)
            .ok_or(EngineError::NoSuchSegment { base })?;
        segment.check(self.disk.as_ref(), self.config.index_interval_bytes)
    }

    /// Removes every record after `last_kept`. See `truncate_from`.
    pub fn truncate_after(&mut self, last_kept: Offset) -> Result<(), EngineError> {
        self.truncate_from(last_kept.plus(1))
    }

    /// Removes every record at or after `first_removed`, durably, before
    /// returning. A segment cut in the middle is rewritten into a new file
    /// renamed over the old one, so readers holding records from the old
    /// file keep valid bytes: no mapped region is ever truncated. Any error
    /// part-way poisons the log (reopen finishes or undoes the work).
    pub fn truncate_from(&mut self, first_removed: Offset) -> Result<(), EngineError> {
        self.check_writable()?;
        if first_removed >= self.next_offset() {
            return Ok(());
        }
        self.check_range(first_removed)?;
        // Everything before the cut becomes durable here, so that afterwards
        // `durable_offset` can be exactly the cut.
        self.flush()?;
        let result = self.truncate_inner(first_removed);
        if result.is_err() {
            self.poisoned = true;
        }
        #[cfg(debug_assertions)]
        if result.is_ok() {
            self.check_invariants();
        }
        result
    }

    fn truncate_inner(&mut self, first_removed: Offset) -> Result<(), EngineError> {
        let disk = Arc::clone(&self.disk);
        let disk = disk.as_ref();
        let keep = self.segment_for(first_removed);
        // 1. Later segments go, newest first, so that a crash part-way
        //    leaves a contiguous log.
        for segment in self.segments[keep + 1..].iter().rev() {
            segment.paths.remove_all(disk)?;
        }
        self.sync_dir()?;
        self.segments.truncate(keep + 1);
        // 2. The kept segment becomes the active one: its seal and indexes go
        //    before its file shrinks, so no seal ever describes a shorter file.
        let segment = &self.segments[keep];
        for path in [
            &segment.paths.seal,
            &segment.paths.offset_index,
            &segment.paths.time_index,
        ] {
            disk::remove_if_exists(disk, path).map_err(|e| EngineError::io(path, e))?;
        }
        self.sync_dir()?;
        // 3. Its surviving prefix is written to a new file that replaces it.
        let bytes = self.kept_prefix(keep, first_removed)?;
        let paths = segment.paths.clone();
        let tmp = disk::tmp_path(&paths.log);
        let io = |e| EngineError::io(&tmp, e);
        disk::remove_if_exists(disk, &tmp).map_err(io)?;
        let file = disk
            .create_new_with(&tmp, self.config.write_mode)
            .map_err(io)?;
        file.write_all_at(&bytes, 0).map_err(io)?;
        file.sync_data().map_err(io)?;
        disk.rename(&tmp, &paths.log).map_err(io)?;
        self.sync_dir()?;
        let scan = segment::scan(
            &bytes,
            self.segments[keep].base,
            self.config.index_interval_bytes,
        );
        if let Some(d) = scan.damage {
            return Err(EngineError::corrupted(
                &paths.log, d.offset, d.position, d.reason,
            ));
        }
        let segment = &mut self.segments[keep];
        segment.reset_after_rewrite(file, scan);
        self.durable = first_removed;
        self.epoch += 1;
        Ok(())
    }

    /// The bytes of segment `i` that hold offsets below `first_removed`: whole
    /// batches copied, and the batch the cut falls inside re-encoded with
    /// only its first records.
    fn kept_prefix(&self, i: usize, first_removed: Offset) -> Result<Vec<u8>, EngineError> {
        let segment = &self.segments[i];
        let view = segment.view(self.disk.as_ref())?;
        let mut pos = 0u64;
        let mut header = None;
        while pos < segment.len {
            let h = segment::verify_batch_at(&view, pos)
                .map_err(|r| EngineError::corrupted(&segment.paths.log, segment.base, pos, r))?;
            if h.next_offset() > first_removed {
                header = Some(h);
                break;
            }
            pos += h.total_len();
        }
        let mut bytes = view[..pos as usize].to_vec();
        let Some(header) = header else {
            return Ok(bytes);
        };
        if header.base_offset < first_removed {
            let count = (first_removed.0 - header.base_offset.0) as usize;
            let mut records = Vec::with_capacity(count);
            let mut budget = usize::MAX;
            segment.read_into(
                self.disk.as_ref(),
                self.config.index_interval_bytes,
                header.base_offset,
                count,
                &mut budget,
                &mut records,
            )?;
            let mut batch = Batch::new();
            for r in &records {
                let headers: Vec<(&str, &[u8])> = iter_headers(&r.headers).collect();
                batch.push_parts(r.timestamp, r.expires_at, &r.id, &headers, &r.payload)?;
            }
            batch.stamp(header.base_offset, header.durable_offset.min(first_removed));
            bytes.extend_from_slice(&batch.buf);
        }
        Ok(bytes)
    }

    /// Deletes whole sealed segments that hold only offsets below `offset`;
    /// returns the new start offset. The active segment is never deleted.
    pub fn purge_before(&mut self, offset: Offset) -> Result<Offset, EngineError> {
        self.detach_before(offset).remove()?;
        Ok(self.start_offset())
    }

    /// Takes the whole sealed segments holding only offsets below `offset`
    /// out of the log (its start moves past them at once) and returns them
    /// for `Detached::remove`, which the caller runs without its lock: file
    /// deletions and the directory's fsync can take milliseconds. Until
    /// they are removed a reopen finds them again, as after a crash part-way
    /// through a purge: a log that starts earlier.
    pub fn detach_before(&mut self, offset: Offset) -> Detached {
        let count = self
            .segments
            .iter()
            .take_while(|s| s.seal.is_some() && s.next <= offset)
            .count();
        self.detach_first(count)
    }

    /// Deletes the oldest sealed segments (rolled, then sealed by the flush
    /// that made them durable) whose every record has expired at `now` and, when `retention_bytes_max` is set, the oldest sealed
    /// segments while the log is larger than it. Only a prefix of the log is
    /// ever deleted, so it stays contiguous: one long-lived record keeps the
    /// segments after it.
    pub fn apply_retention(&mut self, now: Timestamp) -> Result<RetentionReport, EngineError> {
        let (report, detached) = self.detach_retention(now);
        detached.remove()?;
        Ok(report)
    }

    /// What `apply_retention` deletes, detached from the log (as by
    /// `detach_before`) for the caller to remove without its lock.
    pub fn detach_retention(&mut self, now: Timestamp) -> (RetentionReport, Detached) {
        let sealed = || self.segments.iter().take_while(|s| s.seal.is_some());
        let mut count = sealed().take_while(|s| s.max_expires_at <= now).count();
        if let Some(max) = self.config.retention_bytes_max {
            let mut size = self.size_bytes() - sealed().take(count).map(|s| s.len).sum::<u64>();
            for s in sealed().skip(count) {
                if size <= max {
                    break;
                }
                size -= s.len;
                count += 1;
            }
        }
        let bytes_removed = self.segments[..count].iter().map(|s| s.len).sum();
        let detached = self.detach_first(count);
        let report = RetentionReport {
            segments_removed: count,
            bytes_removed,
            start_offset: self.start_offset(),
        };
        (report, detached)
    }

    /// Removes the `count` oldest segments (all sealed), oldest first, so a
    /// crash part-way leaves a contiguous log.
    /// Takes the `count` oldest segments (all sealed) out of the log; the
    /// active segment always stays.
    fn detach_first(&mut self, count: usize) -> Detached {
        let count = count.min(self.segments.len() - 1);
        Detached {
            disk: Arc::clone(&self.disk),
            dir: self.dir.clone(),
            spares: Arc::clone(&self.spares),
            segments: self.segments.drain(..count).collect(),
        }
    }

    /// Checks the log's invariants (debug builds, after open and truncate).
    #[cfg(debug_assertions)]
    pub(crate) fn check_invariants(&self) {
        assert!(!self.segments.is_empty());
        for w in self.segments.windows(2) {
            assert_eq!(w[0].next, w[1].base, "segments must meet");
            assert!(
                w[0].seal.is_some() || w[1].seal.is_none(),
                "sealed segments form a prefix"
            );
        }
        assert!(self.active().seal.is_none(), "the last segment is unsealed");
        assert!(self.start_offset() <= self.durable && self.durable <= self.next_offset());
    }
}
