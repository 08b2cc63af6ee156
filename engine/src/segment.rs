//! One segment: a `.log` file of batches plus its sparse indexes and, once
//! sealed, its `.seal` file (docs/format.md#segment-files).
//!
//! Invariants: offsets are contiguous from `base` to `next`; bytes past
//! `len` are never read (they may be a torn write being rolled back); a
//! sealed segment's file is exactly `seal.log_len` bytes and never written.
//! Concurrency: one writer (`&mut self`); readers (`&self`) share immutable
//! mappings, and a mapping is replaced, never shrunk, when the file grows.
//! Failure: errors are returned; the owning `Log` decides about poisoning.

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use bytes::Bytes;

use crate::batch::Batch;
use crate::disk::{self, Disk, DiskFile, Mapping, MappingWatch, WriteMode};
use crate::error::EngineError;
use crate::format::{BATCH_HEADER_BYTES, BatchHeader, RecordIter, Seal};
use crate::index::{ScanStart, SegmentIndex};
use crate::record::{MessageId, Offset, Record, Timestamp};

/// Address space reserved past the end of an active segment's mapping, so
/// that appends do not force a new `mmap` (and an unmap with its TLB
/// shootdown) for every read of the tail.
const MAP_RESERVE_BYTES: u64 = 8 * 1024 * 1024;

/// Bytes a reader copies at a time from the newest, in-memory part of an
/// active segment (`Segment::tail_window`); a larger batch is read whole.
const TAIL_READ_BYTES: u64 = 256 * 1024;

/// Bytes of a segment from position `from`.
#[derive(Clone)]
struct Window {
    bytes: Bytes,
    from: u64,
}

impl Window {
    /// Whether these bytes hold the whole batch that starts at `pos`, as
    /// far as its (CRC-checked) header says.
    fn holds_batch_at(&self, pos: u64) -> bool {
        let Some(at) = pos.checked_sub(self.from) else {
            return false;
        };
        let rest = usize::try_from(at)
            .ok()
            .and_then(|at| self.bytes.get(at..))
            .unwrap_or_default();
        BatchHeader::decode(rest).is_ok_and(|h| h.total_len() <= rest.len() as u64)
    }
}

/// The four file names of a segment.
#[derive(Debug, Clone)]
pub(crate) struct SegmentPaths {
    pub log: PathBuf,
    pub seal: PathBuf,
    pub offset_index: PathBuf,
    pub time_index: PathBuf,
}

impl SegmentPaths {
    pub fn new(dir: &Path, base: Offset) -> SegmentPaths {
        let stem = format!("{:020}", base.0);
        SegmentPaths {
            log: dir.join(format!("{stem}.log")),
            seal: dir.join(format!("{stem}.seal")),
            offset_index: dir.join(format!("{stem}.index")),
            time_index: dir.join(format!("{stem}.timeindex")),
        }
    }

    /// Removes every file of the segment that exists, the log first: a
    /// failure part-way leaves at worst orphan side files, which open
    /// deletes.
    pub fn remove_all(&self, disk: &dyn Disk) -> Result<(), EngineError> {
        disk::remove_if_exists(disk, &self.log).map_err(|e| EngineError::io(&self.log, e))?;
        self.remove_side_files(disk)
    }

    /// Removes the seal and the indexes, whichever exist.
    pub fn remove_side_files(&self, disk: &dyn Disk) -> Result<(), EngineError> {
        for path in [&self.seal, &self.offset_index, &self.time_index] {
            disk::remove_if_exists(disk, path).map_err(|e| EngineError::io(path, e))?;
        }
        Ok(())
    }
}

/// The name a removed segment's data file takes while it waits, as a
/// spare, to be recycled (`LogConfig::recycle_segments_max`).
pub(crate) fn spare_path(dir: &Path, base: Offset) -> PathBuf {
    dir.join(format!("{:020}.{SPARE_EXTENSION}", base.0))
}

/// The extension of spare data files.
pub(crate) const SPARE_EXTENSION: &str = "spare";

/// The result of reading a segment's batches from the start, verifying each.
#[derive(Debug, Clone)]
pub(crate) struct Scan {
    /// Bytes of whole, valid batches from position 0.
    pub valid_len: u64,
    /// One past the last valid offset.
    pub next: Offset,
    pub batch_count: u32,
    pub max_timestamp: Timestamp,
    pub max_expires_at: Timestamp,
    pub headers_crc: crc32fast::Hasher,
    pub index: SegmentIndex,
    /// The first damaged batch, if the scan stopped before the end.
    pub damage: Option<Damage>,
}

/// Where and why a scan stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Damage {
    pub position: u64,
    /// The offset the damaged batch should have started at.
    pub offset: Offset,
    pub reason: String,
}

/// Decodes and fully verifies the batch at `pos` of `bytes`: header CRC,
/// bounds, then records CRC. Returns the header.
pub(crate) fn verify_batch_at(bytes: &[u8], pos: u64) -> Result<BatchHeader, String> {
    let start = usize::try_from(pos).map_err(|_| "position overflows".to_string())?;
    let rest = bytes.get(start..).ok_or("position past end")?;
    let header = BatchHeader::decode(rest).map_err(|e| e.0)?;
    let records = rest
        .get(BATCH_HEADER_BYTES..BATCH_HEADER_BYTES + header.records_len as usize)
        .ok_or_else(|| {
            format!(
                "batch records truncated: {} of {} bytes present",
                rest.len().saturating_sub(BATCH_HEADER_BYTES),
                header.records_len
            )
        })?;
    let computed = crate::format::crc(records);
    if computed != header.records_crc {
        return Err(format!(
            "records crc mismatch: stored {:#010x}, computed {computed:#010x}",
            header.records_crc
        ));
    }
    Ok(header)
}

/// Reads `bytes` batch by batch from position 0 for a segment based at
/// `base`, verifying every CRC and offset, and rebuilding the indexes.
pub(crate) fn scan(bytes: &[u8], base: Offset, interval_bytes: u32) -> Scan {
    let mut s = Scan {
        valid_len: 0,
        next: base,
        batch_count: 0,
        max_timestamp: Timestamp(0),
        max_expires_at: Timestamp(0),
        headers_crc: crc32fast::Hasher::new(),
        index: SegmentIndex::default(),
        damage: None,
    };
    while (s.valid_len as usize) < bytes.len() {
        let pos = s.valid_len;
        let checked = verify_batch_at(bytes, pos).and_then(|h| {
            if h.base_offset == s.next {
                Ok(h)
            } else {
                Err(format!(
                    "batch base offset {}, expected {}",
                    h.base_offset, s.next
                ))
            }
        });
        let header = match checked {
            Ok(h) => h,
            Err(reason) => {
                s.damage = Some(Damage {
                    position: pos,
                    offset: s.next,
                    reason,
                });
                break;
            }
        };
        let relative = (s.next.0 - base.0) as u32;
        s.index
            .on_batch(interval_bytes, pos, relative, s.max_timestamp);
        s.headers_crc
            .update(&bytes[pos as usize..pos as usize + BATCH_HEADER_BYTES]);
        s.batch_count += 1;
        s.max_timestamp = s.max_timestamp.max(header.max_timestamp);
        s.max_expires_at = s.max_expires_at.max(header.max_expires_at);
        s.next = header.next_offset();
        s.valid_len = pos + header.total_len();
    }
    s
}

/// One segment of a log.
#[derive(Debug)]
pub(crate) struct Segment {
    pub base: Offset,
    /// One past the last offset.
    pub next: Offset,
    /// Bytes of valid batches; the file may be longer only transiently.
    pub len: u64,
    pub max_timestamp: Timestamp,
    pub max_expires_at: Timestamp,
    pub batch_count: u32,
    headers_crc: crc32fast::Hasher,
    /// `Some` once sealed: the segment is immutable.
    pub seal: Option<Seal>,
    pub paths: SegmentPaths,
    /// The open file of the active segment.
    writer: Option<Arc<dyn DiskFile>>,
    /// When the first batch went in, for rolling by age.
    pub first_append: Option<Instant>,
    /// Loaded lazily for sealed segments; always present for the active one.
    index: OnceLock<SegmentIndex>,
    /// The newest mapping; grown in place or replaced when a read needs
    /// bytes past its end.
    mapping: Mutex<Option<Mapping>>,
    /// Bytes from position 0 whose CRCs have been checked since open.
    verified_len: AtomicU64,
    /// Bytes from position 0 whose writeback has been started
    /// (`Log::writeback_due`).
    writeback_started: AtomicU64,
    /// Every mapping made of the file, to tell whether a view is alive.
    watches: Mutex<Vec<MappingWatch>>,
    /// The `Log::trims` count at which the roll cut this file's tail:
    /// it may be sealed once a flush has synced that cut.
    pub trim_change: Option<u64>,
}

impl Segment {
    /// Creates a new, empty active segment file at `base`. The caller syncs
    /// the directory.
    pub fn create(
        disk: &dyn Disk,
        dir: &Path,
        base: Offset,
        mode: WriteMode,
    ) -> Result<Segment, EngineError> {
        let paths = SegmentPaths::new(dir, base);
        let writer = disk
            .create_new_with(&paths.log, mode)
            .map_err(|e| EngineError::io(&paths.log, e))?;
        Ok(Segment::empty(base, paths, writer))
    }

    /// A new, empty active segment at `base` over a spare data file (a
    /// removed segment's), renamed into place: appends overwrite its old
    /// bytes. The caller syncs the directory.
    pub fn from_spare(
        disk: &dyn Disk,
        dir: &Path,
        base: Offset,
        spare: &Path,
        mode: WriteMode,
    ) -> Result<Segment, EngineError> {
        let paths = SegmentPaths::new(dir, base);
        disk.rename(spare, &paths.log)
            .map_err(|e| EngineError::io(spare, e))?;
        let writer = disk
            .open_with(&paths.log, mode)
            .map_err(|e| EngineError::io(&paths.log, e))?;
        Ok(Segment::empty(base, paths, writer))
    }

    fn empty(base: Offset, paths: SegmentPaths, writer: Arc<dyn DiskFile>) -> Segment {
        let index = OnceLock::new();
        let _ = index.set(SegmentIndex::default());
        Segment {
            base,
            next: base,
            len: 0,
            max_timestamp: Timestamp(0),
            max_expires_at: Timestamp(0),
            batch_count: 0,
            headers_crc: crc32fast::Hasher::new(),
            seal: None,
            paths,
            writer: Some(writer),
            first_append: None,
            index,
            mapping: Mutex::new(None),
            verified_len: AtomicU64::new(0),
            writeback_started: AtomicU64::new(0),
            watches: Mutex::new(Vec::new()),
            trim_change: None,
        }
    }

    /// A sealed segment known from its seal; nothing is read until needed.
    pub fn sealed(dir: &Path, seal: Seal) -> Segment {
        Segment {
            base: seal.base_offset,
            next: seal.next_offset,
            len: seal.log_len,
            max_timestamp: seal.max_timestamp,
            max_expires_at: seal.max_expires_at,
            batch_count: seal.batch_count,
            headers_crc: crc32fast::Hasher::new(),
            seal: Some(seal),
            paths: SegmentPaths::new(dir, seal.base_offset),
            writer: None,
            first_append: None,
            index: OnceLock::new(),
            mapping: Mutex::new(None),
            verified_len: AtomicU64::new(0),
            writeback_started: AtomicU64::new(0),
            watches: Mutex::new(Vec::new()),
            trim_change: None,
        }
    }

    /// The active segment after an open scan verified its first
    /// `scan.valid_len` bytes (the caller has cut anything after them).
    pub fn active_from_scan(
        dir: &Path,
        base: Offset,
        scan: Scan,
        writer: Arc<dyn DiskFile>,
    ) -> Segment {
        let index = OnceLock::new();
        let _ = index.set(scan.index);
        Segment {
            base,
            next: scan.next,
            len: scan.valid_len,
            max_timestamp: scan.max_timestamp,
            max_expires_at: scan.max_expires_at,
            batch_count: scan.batch_count,
            headers_crc: scan.headers_crc,
            seal: None,
            paths: SegmentPaths::new(dir, base),
            writer: Some(writer),
            // Age counts from open: the time of the first append before a
            // restart is not recorded, and rolling early is harmless.
            first_append: (scan.batch_count > 0).then(Instant::now),
            index,
            mapping: Mutex::new(None),
            verified_len: AtomicU64::new(scan.valid_len),
            writeback_started: AtomicU64::new(0),
            watches: Mutex::new(Vec::new()),
            trim_change: None,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.next == self.base
    }

    pub fn writer(&self) -> Option<&Arc<dyn DiskFile>> {
        self.writer.as_ref()
    }

    /// The byte range appended since the last call, if any: marks it as
    /// having its writeback started.
    pub fn writeback_due(&self) -> Option<(u64, u64)> {
        let from = self.writeback_started.swap(self.len, Ordering::AcqRel);
        (self.len > from).then(|| (from, self.len - from))
    }

    /// Appends a stamped batch at the end of this (active) segment.
    pub fn append(
        &mut self,
        batch: &mut Batch,
        durable: Offset,
        interval_bytes: u32,
    ) -> Result<(Offset, Offset), EngineError> {
        let Some(writer) = self.writer.clone() else {
            unreachable!("append to a sealed segment");
        };
        let header = batch.stamp(self.next, durable);
        if let Err(e) = writer.write_all_at(&batch.buf, self.len) {
            // Cut what a partial write left, so the file ends at `len` again.
            // The region was never mapped (mappings stop at `len`), so this
            // cannot pull bytes from under a reader. If the cut fails too,
            // the next append overwrites the garbage, and recovery would
            // treat it as a torn tail.
            let _ = writer.set_len(self.len);
            return Err(EngineError::io(&self.paths.log, e));
        }
        let relative = (self.next.0 - self.base.0) as u32;
        if let Some(index) = self.index.get_mut() {
            index.on_batch(interval_bytes, self.len, relative, self.max_timestamp);
        }
        self.headers_crc.update(&batch.buf[..BATCH_HEADER_BYTES]);
        self.batch_count += 1;
        self.max_timestamp = self.max_timestamp.max(header.max_timestamp);
        self.max_expires_at = self.max_expires_at.max(header.max_expires_at);
        self.len += header.total_len();
        self.next = header.next_offset();
        self.verified_len.store(self.len, Ordering::Release);
        self.first_append.get_or_insert_with(Instant::now);
        Ok((header.base_offset, Offset(self.next.0 - 1)))
    }

    /// Seals this segment, whose bytes the caller has made durable: writes
    /// its indexes and its seal, neither fsynced. Correctness never needs
    /// the seal durable: a segment whose seal is missing or fails its CRC is
    /// verified in full at open. The segment is immutable from here on.
    pub fn write_seal(&mut self, disk: &dyn Disk) -> Result<(), EngineError> {
        debug_assert!(self.seal.is_none() && !self.is_empty());
        if let Some(index) = self.index.get() {
            write_index_files(disk, &self.paths, index, self.base, self.len);
        }
        let seal = Seal {
            base_offset: self.base,
            next_offset: self.next,
            log_len: self.len,
            max_timestamp: self.max_timestamp,
            max_expires_at: self.max_expires_at,
            batch_count: self.batch_count,
            headers_crc: self.headers_crc.clone().finalize(),
        };
        disk::replace_file(disk, &self.paths.seal, &seal.encode())
            .map_err(|e| EngineError::io(&self.paths.seal, e))?;
        self.seal = Some(seal);
        self.writer = None;
        Ok(())
    }

    /// The segment's bytes `[0, len)` as zero-copy `Bytes`.
    pub fn view(&self, disk: &dyn Disk) -> Result<Bytes, EngineError> {
        self.view_to(disk, self.len)
    }

    /// The segment's bytes `[0, len)` (`len` ≤ `self.len`) as zero-copy
    /// `Bytes`.
    fn view_to(&self, disk: &dyn Disk, len: u64) -> Result<Bytes, EngineError> {
        debug_assert!(len <= self.len);
        let mut slot = self.mapping.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(m) = slot.as_ref() {
            if m.len() >= len {
                return Ok(m.to_bytes().slice(..len as usize));
            }
            // The file holds `[0, self.len)`: every byte below `len` was
            // written before `len` moved past it.
            if let Some(grown) = m.grown_to(len) {
                let bytes = grown.to_bytes();
                *slot = Some(grown);
                return Ok(bytes);
            }
        }
        let mapping = match &self.writer {
            // The active segment grows; reserve room so that a reader
            // following its tail maps it once per `MAP_RESERVE_BYTES`.
            Some(w) => w.map_growable(len, len + MAP_RESERVE_BYTES),
            None => disk.open(&self.paths.log).and_then(|f| f.map(len)),
        }
        .map_err(|e| EngineError::io(&self.paths.log, e))?;
        let bytes = mapping.to_bytes();
        let mut watches = self.watches.lock().unwrap_or_else(|p| p.into_inner());
        // Bounded by the views alive at once, not by the mappings ever made.
        watches.retain(MappingWatch::in_use);
        watches.push(mapping.watch());
        *slot = Some(mapping);
        Ok(bytes)
    }

    /// Whether anyone still holds bytes of this segment's file (a read's
    /// records, a scrubber's check), after dropping the segment's own
    /// mapping. Such a file must not be written over.
    pub fn views_in_use(&mut self) -> bool {
        *self.mapping.get_mut().unwrap_or_else(|p| p.into_inner()) = None;
        let watches = self.watches.get_mut().unwrap_or_else(|p| p.into_inner());
        watches.iter().any(MappingWatch::in_use)
    }

    /// The segment's index, loading or rebuilding it on first use.
    pub fn index(
        &self,
        disk: &dyn Disk,
        interval_bytes: u32,
    ) -> Result<&SegmentIndex, EngineError> {
        if let Some(ix) = self.index.get() {
            return Ok(ix);
        }
        let loaded = disk::read_small_file(disk, &self.paths.offset_index)
            .ok()
            .zip(disk::read_small_file(disk, &self.paths.time_index).ok())
            .and_then(|(o, t)| SegmentIndex::decode(self.base, self.next, self.len, &o, &t));
        let index = match loaded {
            Some(ix) => ix,
            None => {
                let view = self.view(disk)?;
                let s = scan(&view, self.base, interval_bytes);
                if let Some(d) = s.damage {
                    return Err(EngineError::corrupted(
                        &self.paths.log,
                        d.offset,
                        d.position,
                        d.reason,
                    ));
                }
                if s.next != self.next || s.valid_len != self.len {
                    return Err(EngineError::corrupted(
                        &self.paths.log,
                        s.next,
                        s.valid_len,
                        format!("segment ends at offset {}, seal says {}", s.next, self.next),
                    ));
                }
                self.verified_len.fetch_max(s.valid_len, Ordering::AcqRel);
                tracing::info!(segment = %self.paths.log.display(), "rebuilt index");
                write_index_files(disk, &self.paths, &s.index, self.base, self.len);
                s.index
            }
        };
        let _ = self.index.set(index);
        Ok(self
            .index
            .get()
            .unwrap_or_else(|| unreachable!("index was just set")))
    }

    /// Verifies (once) and returns the batch at `pos`, which must start at
    /// `expected`; the records section is returned as a zero-copy slice.
    fn batch_at(
        &self,
        bytes: &Window,
        pos: u64,
        expected: Offset,
    ) -> Result<(BatchHeader, Bytes), EngineError> {
        let corrupt =
            |reason: String| EngineError::corrupted(&self.paths.log, expected, pos, reason);
        let view = &bytes.bytes;
        let at = pos
            .checked_sub(bytes.from)
            .ok_or_else(|| corrupt("batch before the bytes read".into()))?;
        let header = if pos < self.verified_len.load(Ordering::Acquire) {
            // Verified before: the header CRC is still checked (it is cheap
            // and guards the lengths used below), the records CRC is not.
            BatchHeader::decode(view.get(at as usize..).unwrap_or_default())
                .map_err(|e| corrupt(e.0))?
        } else {
            let h = verify_batch_at(view, at).map_err(corrupt)?;
            // Advance the watermark only over a contiguous verified prefix.
            let _ = self.verified_len.compare_exchange(
                pos,
                pos + h.total_len(),
                Ordering::AcqRel,
                Ordering::Acquire,
            );
            h
        };
        if header.base_offset != expected {
            return Err(corrupt(format!(
                "batch base offset {}, expected {expected}",
                header.base_offset
            )));
        }
        let start = at as usize + BATCH_HEADER_BYTES;
        let end = start + header.records_len as usize;
        if end > view.len() {
            return Err(corrupt("batch runs past the end of the segment".into()));
        }
        Ok((header, view.slice(start..end)))
    }

    /// The segment's first `len` bytes as a window, mapped into `slot` on
    /// first use (one read maps once).
    fn mapped<'a>(
        &self,
        disk: &dyn Disk,
        slot: &'a mut Option<Window>,
        len: u64,
    ) -> Result<&'a Window, EngineError> {
        match slot {
            Some(window) => Ok(window),
            None => Ok(slot.insert(Window {
                bytes: self.view_to(disk, len)?,
                from: 0,
            })),
        }
    }

    /// Bytes of the active segment from `pos`, a batch's start at or past
    /// `memory_from` (where the writer's newest bytes are held in memory),
    /// covering at least that whole batch: read (copied) from the writer,
    /// so that a reader of the tail neither maps nor waits for the device.
    /// Reuses `held` when it already covers the batch.
    fn tail_window(
        &self,
        writer: &dyn DiskFile,
        held: &mut Option<Window>,
        pos: u64,
        expected: Offset,
    ) -> Result<Window, EngineError> {
        let corrupt =
            |reason: String| EngineError::corrupted(&self.paths.log, expected, pos, reason);
        let io = |e| EngineError::io(&self.paths.log, e);
        let remaining = self.len - pos;
        if let Some(w) = held.as_ref().filter(|w| w.holds_batch_at(pos)) {
            return Ok(w.clone());
        }
        let mut len = remaining.min(TAIL_READ_BYTES);
        let mut buf = vec![0u8; len as usize];
        writer.read_exact_at(&mut buf, pos).map_err(io)?;
        let header = BatchHeader::decode(&buf).map_err(|e| corrupt(e.0))?;
        if header.total_len() > remaining {
            return Err(corrupt("batch runs past the end of the segment".into()));
        }
        if header.total_len() > len {
            // A batch larger than one read: read it whole.
            len = header.total_len();
            buf = vec![0u8; len as usize];
            writer.read_exact_at(&mut buf, pos).map_err(io)?;
        }
        let window = Window {
            bytes: Bytes::from(buf),
            from: pos,
        };
        *held = Some(window.clone());
        Ok(window)
    }

    /// Calls `f` with each batch from `start` to the end of the segment,
    /// until it breaks.
    fn for_each_batch(
        &self,
        disk: &dyn Disk,
        start: ScanStart,
        mut f: impl FnMut(&BatchHeader, &Bytes) -> Result<ControlFlow<()>, EngineError>,
    ) -> Result<(), EngineError> {
        // Bytes the writer holds in memory are read from it; only what
        // precedes them is mapped.
        let in_memory = self
            .writer
            .as_deref()
            .and_then(|w| Some((w, w.memory_from()?.min(self.len))));
        let mapped_len = in_memory.map_or(self.len, |(_, from)| from);
        let mut mapped: Option<Window> = None;
        let mut held: Option<Window> = None;
        let mut pos = start.position;
        let mut expected = self.base.plus(u64::from(start.relative_offset));
        while pos < self.len {
            let window = match in_memory {
                // Past the mapped bytes, or a batch running past them (into
                // memory, or written since): read from the writer.
                Some((w, from))
                    if pos >= from
                        || !self.mapped(disk, &mut mapped, from)?.holds_batch_at(pos) =>
                {
                    self.tail_window(w, &mut held, pos, expected)?
                }
                _ => self.mapped(disk, &mut mapped, mapped_len)?.clone(),
            };
            let (header, records) = self.batch_at(&window, pos, expected)?;
            if f(&header, &records)?.is_break() {
                break;
            }
            pos += header.total_len();
            expected = header.next_offset();
        }
        Ok(())
    }

    /// Decodes the records of one batch, calling `f` with each.
    fn decode_records(
        &self,
        header: &BatchHeader,
        records: &Bytes,
        mut f: impl FnMut(Record) -> ControlFlow<()>,
    ) -> Result<ControlFlow<()>, EngineError> {
        let mut iter = RecordIter::new(records, header.record_count);
        for raw in iter.by_ref() {
            let raw = raw
                .map_err(|e| EngineError::corrupted(&self.paths.log, header.base_offset, 0, e.0))?;
            let record = Record {
                offset: header.base_offset.plus(u64::from(raw.offset_delta)),
                timestamp: Timestamp(
                    header
                        .first_timestamp
                        .0
                        .wrapping_add(raw.timestamp_delta as u64),
                ),
                expires_at: raw.expires_at,
                id: raw.id,
                headers: records.slice(raw.headers.0..raw.headers.1),
                payload: records.slice(raw.payload.0..raw.payload.1),
            };
            if f(record).is_break() {
                return Ok(ControlFlow::Break(()));
            }
        }
        iter.finish()
            .map_err(|e| EngineError::corrupted(&self.paths.log, header.base_offset, 0, e.0))?;
        Ok(ControlFlow::Continue(()))
    }

    /// Appends records from `from` to `out` until `max_records` records or
    /// `*budget_bytes` bytes are used up (at least one record if `out` is
    /// empty, so that a reader always makes progress).
    pub fn read_into(
        &self,
        disk: &dyn Disk,
        interval_bytes: u32,
        from: Offset,
        max_records: usize,
        budget_bytes: &mut usize,
        out: &mut Vec<Record>,
    ) -> Result<(), EngineError> {
        let start = self
            .index(disk, interval_bytes)?
            .start_for_offset((from.0 - self.base.0) as u32);
        self.for_each_batch(disk, start, |header, records| {
            if header.next_offset() <= from {
                return Ok(ControlFlow::Continue(()));
            }
            self.decode_records(header, records, |r| {
                if r.offset < from {
                    return ControlFlow::Continue(());
                }
                let size = r.encoded_len();
                if out.len() >= max_records || (size > *budget_bytes && !out.is_empty()) {
                    return ControlFlow::Break(());
                }
                *budget_bytes = budget_bytes.saturating_sub(size);
                out.push(r);
                ControlFlow::Continue(())
            })
        })
    }

    /// The first record whose timestamp is at or after `t`, if any.
    pub fn find_time(
        &self,
        disk: &dyn Disk,
        interval_bytes: u32,
        t: Timestamp,
    ) -> Result<Option<Offset>, EngineError> {
        let start = self.index(disk, interval_bytes)?.start_for_time(t);
        let mut found = None;
        self.for_each_batch(disk, start, |header, records| {
            if header.max_timestamp < t {
                return Ok(ControlFlow::Continue(()));
            }
            self.decode_records(header, records, |r| {
                if r.timestamp >= t {
                    found = Some(r.offset);
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            })
        })?;
        Ok(found)
    }

    /// The last record with `id` among offsets `[from, to)` of this segment.
    pub fn find_id(
        &self,
        disk: &dyn Disk,
        interval_bytes: u32,
        id: &MessageId,
        from: Offset,
        to: Offset,
    ) -> Result<Option<Record>, EngineError> {
        let from = from.max(self.base);
        let start = self
            .index(disk, interval_bytes)?
            .start_for_offset((from.0 - self.base.0) as u32);
        let mut found = None;
        self.for_each_batch(disk, start, |header, records| {
            if header.base_offset >= to {
                return Ok(ControlFlow::Break(()));
            }
            if header.next_offset() <= from {
                return Ok(ControlFlow::Continue(()));
            }
            self.decode_records(header, records, |r| {
                if r.offset >= from && r.offset < to && r.id == *id {
                    found = Some(r);
                }
                ControlFlow::Continue(())
            })
        })?;
        Ok(found)
    }

    /// What verifying this segment needs, taken so that the check itself
    /// can run without the log's lock (see `SegmentCheck`).
    pub fn check(&self, disk: &dyn Disk, interval_bytes: u32) -> Result<SegmentCheck, EngineError> {
        Ok(SegmentCheck {
            view: self.view(disk)?,
            base: self.base,
            next: self.next,
            seal: self.seal,
            path: self.paths.log.clone(),
            interval_bytes,
        })
    }

    /// Appends to `out` the bytes of this segment's whole batches from the
    /// one starting exactly at `from` up to (not past) `to`, each verified;
    /// returns the offset reached. A batch that straddles `from` is
    /// `NotAligned`: the caller asked for a range this copy splits.
    pub fn copy_batches(
        &self,
        disk: &dyn Disk,
        interval_bytes: u32,
        from: Offset,
        to: Offset,
        out: &mut Vec<u8>,
    ) -> Result<Offset, EngineError> {
        let view = self.view(disk)?;
        let start = self
            .index(disk, interval_bytes)?
            .start_for_offset((from.0 - self.base.0) as u32);
        let mut pos = start.position;
        let mut expected = self.base.plus(u64::from(start.relative_offset));
        let mut reached = from;
        while pos < self.len && reached < to {
            let corrupt =
                |reason: String| EngineError::corrupted(&self.paths.log, expected, pos, reason);
            let header = verify_batch_at(&view, pos).map_err(corrupt)?;
            if header.base_offset != expected {
                return Err(corrupt(format!(
                    "batch base offset {}, expected {expected}",
                    header.base_offset
                )));
            }
            let end = pos + header.total_len();
            if header.next_offset() > from {
                if header.base_offset != reached || header.next_offset() > to {
                    return Err(EngineError::NotAligned {
                        offset: header.base_offset.max(reached),
                    });
                }
                out.extend_from_slice(&view[pos as usize..end as usize]);
                reached = header.next_offset();
            }
            pos = end;
            expected = header.next_offset();
        }
        Ok(reached)
    }

    /// A sealed segment over a file whose `scan` found it whole and `seal`
    /// describes (after a repair replaced the file).
    pub fn sealed_from_scan(dir: &Path, seal: Seal, scan: Scan) -> Segment {
        let segment = Segment::sealed(dir, seal);
        let _ = segment.index.set(scan.index);
        segment
            .verified_len
            .store(scan.valid_len, Ordering::Release);
        segment
    }

    /// The seal describing `scan`, a whole segment based at `base`.
    pub fn seal_for(base: Offset, scan: &Scan) -> Seal {
        Seal {
            base_offset: base,
            next_offset: scan.next,
            log_len: scan.valid_len,
            max_timestamp: scan.max_timestamp,
            max_expires_at: scan.max_expires_at,
            batch_count: scan.batch_count,
            headers_crc: scan.headers_crc.clone().finalize(),
        }
    }

    /// Writes this segment's index files (best effort: they are caches).
    pub fn write_index(&self, disk: &dyn Disk) {
        if let Some(index) = self.index.get() {
            write_index_files(disk, &self.paths, index, self.base, self.len);
        }
    }

    /// Becomes the active segment over a rewritten file (after a
    /// truncation). The old mapping is dropped with the old state; readers
    /// keep the `Bytes` they hold, which map the old, unlinked file.
    pub fn reset_after_rewrite(&mut self, writer: Arc<dyn DiskFile>, scan: Scan) {
        let dir = self
            .paths
            .log
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        *self = Segment::active_from_scan(&dir, self.base, scan, writer);
    }
}

/// Writes both index files, best effort: they are caches, validated by CRC
/// on load and rebuilt when missing or damaged, so a failure only costs a
/// rebuild later.
fn write_index_files(
    disk: &dyn Disk,
    paths: &SegmentPaths,
    index: &SegmentIndex,
    base: Offset,
    len: u64,
) {
    let (offsets, times) = index.encode(base, len);
    for (path, bytes) in [(&paths.offset_index, offsets), (&paths.time_index, times)] {
        let result = disk::remove_if_exists(disk, path)
            .and_then(|()| disk.create_new(path))
            .and_then(|f| f.write_all_at(&bytes, 0));
        if let Err(e) = result {
            tracing::warn!(path = %path.display(), error = %e, "could not write index; it will be rebuilt");
        }
    }
}

/// A segment's bytes (a mapping that stays valid even if the file is
/// replaced or deleted meanwhile) and what they must hold: a full check
/// of every CRC, record and offset, and of every seal field, that needs no
/// lock on the log (`Log::segment_check`).
#[derive(Debug, Clone)]
pub struct SegmentCheck {
    view: Bytes,
    base: Offset,
    next: Offset,
    seal: Option<Seal>,
    path: PathBuf,
    interval_bytes: u32,
}

impl SegmentCheck {
    /// Bytes the check reads.
    pub fn len_bytes(&self) -> u64 {
        self.view.len() as u64
    }

    /// Runs the check; the error names the segment and the damage.
    pub fn run(&self) -> Result<(), EngineError> {
        let corrupt = |offset, position, reason: String| {
            EngineError::corrupted(&self.path, offset, position, reason)
        };
        let s = scan(&self.view, self.base, self.interval_bytes);
        if let Some(d) = s.damage {
            return Err(corrupt(d.offset, d.position, d.reason));
        }
        let mismatch =
            |what: &str| corrupt(s.next, s.valid_len, format!("{what} differs from the seal"));
        if s.next != self.next || s.valid_len != self.view.len() as u64 {
            return Err(mismatch("end"));
        }
        if let Some(seal) = &self.seal {
            if s.headers_crc.clone().finalize() != seal.headers_crc {
                return Err(mismatch("checksum of batch headers"));
            }
            if s.batch_count != seal.batch_count
                || s.max_timestamp != seal.max_timestamp
                || s.max_expires_at != seal.max_expires_at
            {
                return Err(mismatch("batch count or time bounds"));
            }
        }
        // Records are parsed too: a CRC only proves the bytes are the ones
        // written, and this is the scrubber's chance to check their shape.
        let mut pos = 0usize;
        while pos < self.view.len() {
            let header = BatchHeader::decode(&self.view[pos..])
                .map_err(|e| corrupt(self.base, pos as u64, e.0))?;
            let start = pos + BATCH_HEADER_BYTES;
            let records = self
                .view
                .get(start..start + header.records_len as usize)
                .ok_or_else(|| {
                    corrupt(
                        header.base_offset,
                        pos as u64,
                        "records past the end".into(),
                    )
                })?;
            let mut iter = RecordIter::new(records, header.record_count);
            for raw in iter.by_ref() {
                raw.map_err(|e| corrupt(header.base_offset, pos as u64, e.0))?;
            }
            iter.finish()
                .map_err(|e| corrupt(header.base_offset, pos as u64, e.0))?;
            pos += header.total_len() as usize;
        }
        Ok(())
    }
}
