//! Repairing a damaged sealed segment from another replica's copy.
//!
//! Replicas of a partition hold the same records at the same offsets in
//! the same batches (apply is deterministic), but not the same segment
//! files: segments roll by age too, and each replica stamps its own
//! `durable_offset` into batch headers. So a repair moves *batches*: the
//! healthy replica copies the verified batches covering exactly the damaged
//! segment's offsets (`copy_batches`), and the damaged one checks them
//! against what the segment must hold and swaps its file
//! (`replace_sealed_segment`).
//!
//! Crash safety of the swap: the new bytes are fsynced under a temporary
//! name, renamed over the data file, then the seal is replaced. A crash
//! between the two renames leaves the old seal over the new file; both
//! describe the same records at the same length (batches are encoded
//! identically on every replica), so open accepts it and the scrubber's
//! full check reports only the seal's header checksum, which a second
//! repair fixes.

use std::sync::Arc;

use super::Log;
use crate::disk;
use crate::error::EngineError;
use crate::limits::{BATCH_RECORDS_BYTES_MAX, SEGMENT_BYTES_MAX};
use crate::record::Offset;
use crate::segment::{self, Segment};

/// Most bytes one `copy_batches` returns: a whole segment plus the batch
/// that may run past its nominal size.
pub const COPY_BYTES_MAX: u64 = SEGMENT_BYTES_MAX + BATCH_RECORDS_BYTES_MAX as u64 + 64;

impl Log {
    /// The verified bytes of the whole batches holding exactly offsets
    /// `[from, to)`, copied from however many segments hold them: what a
    /// healthy replica sends to one repairing a damaged segment. A range
    /// whose ends fall inside batches is `NotAligned`; one outside the log
    /// is `OffsetOutOfRange`.
    pub fn copy_batches(&self, from: Offset, to: Offset) -> Result<Vec<u8>, EngineError> {
        let (start, next) = (self.start_offset(), self.next_offset());
        if from >= to || from < start || to > next {
            return Err(EngineError::OffsetOutOfRange {
                requested: if from < start || from >= to { from } else { to },
                start,
                next,
            });
        }
        let mut out = Vec::new();
        let mut reached = from;
        for segment in &self.segments[self.segment_for(from)..] {
            if reached >= to {
                break;
            }
            // Bounded before copying, so a wide range never holds more
            // than the bound in memory.
            if out.len() as u64 + segment.len > COPY_BYTES_MAX {
                return Err(EngineError::BatchTooLarge {
                    size_bytes: (out.len() as u64 + segment.len) as usize,
                    max_bytes: COPY_BYTES_MAX as usize,
                });
            }
            reached = segment.copy_batches(
                self.disk.as_ref(),
                self.config.index_interval_bytes,
                reached,
                to,
                &mut out,
            )?;
        }
        if reached != to {
            return Err(EngineError::NotAligned { offset: reached });
        }
        Ok(out)
    }

    /// Replaces the data file of the sealed segment at `base` with `bytes`,
    /// which must be whole, verified batches holding exactly the segment's
    /// offsets (as `copy_batches` on another replica returns them). Checks
    /// everything before touching the disk: on `ReplacementRefused` nothing
    /// changed. Readers holding records of the old file keep them (its
    /// mapping outlives the unlink). See the module docs for crash safety.
    pub fn replace_sealed_segment(
        &mut self,
        base: Offset,
        bytes: &[u8],
    ) -> Result<(), EngineError> {
        self.check_writable()?;
        let refused = |reason: String| EngineError::ReplacementRefused { base, reason };
        let i = self
            .segments
            .iter()
            .position(|s| s.base == base)
            .ok_or(EngineError::NoSuchSegment { base })?;
        let old = &self.segments[i];
        if old.seal.is_none() {
            return Err(refused("the segment is not sealed".into()));
        }
        let scan = segment::scan(bytes, base, self.config.index_interval_bytes);
        if let Some(d) = &scan.damage {
            return Err(refused(format!(
                "damaged at byte {} (offset {}): {}",
                d.position, d.offset, d.reason
            )));
        }
        if scan.next != old.next || scan.batch_count == 0 {
            return Err(refused(format!(
                "the bytes end at offset {}, the segment at {}",
                scan.next, old.next
            )));
        }
        // Equal lengths keep a crash between the renames safe (module docs).
        if scan.valid_len != old.len {
            return Err(refused(format!(
                "{} bytes, the segment has {}",
                scan.valid_len, old.len
            )));
        }
        let paths = old.paths.clone();
        let disk = Arc::clone(&self.disk);
        let disk = disk.as_ref();
        let tmp = disk::tmp_path(&paths.log);
        let io = |e| EngineError::io(&tmp, e);
        disk::remove_if_exists(disk, &tmp).map_err(io)?;
        let file = disk.create_new(&tmp).map_err(io)?;
        file.write_all_at(bytes, 0).map_err(io)?;
        file.sync_data().map_err(io)?;
        drop(file);
        // The index files describe positions in the old file: caches, so
        // they go first and are rewritten at the end.
        for path in [&paths.offset_index, &paths.time_index] {
            disk::remove_if_exists(disk, path).map_err(|e| EngineError::io(path, e))?;
        }
        disk.rename(&tmp, &paths.log).map_err(io)?;
        self.sync_dir()?;
        let seal = Segment::seal_for(base, &scan);
        disk::replace_file(disk, &paths.seal, &seal.encode())
            .map_err(|e| EngineError::io(&paths.seal, e))?;
        self.sync_dir()?;
        let dir = self.dir.clone();
        let segment = Segment::sealed_from_scan(&dir, seal, scan);
        segment.write_index(disk);
        self.segments[i] = segment;
        Ok(())
    }
}
