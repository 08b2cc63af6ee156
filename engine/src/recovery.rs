//! Opening a log directory: what is trusted, what is checked, and the one
//! thing that is repaired (docs/format.md#recovery).
//!
//! 1. Sealed segments are checked cheaply: the seal's CRC, its base against
//!    the file name, the `.log` length against the seal. They are not read.
//! 2. Neighbouring segments must meet exactly (`EngineError::Gap`).
//! 3. A non-last segment without a seal (its seal was lost) is scanned in
//!    full; if every batch is valid it is sealed again, else it is corrupt.
//! 4. The last unsealed segment is scanned batch by batch. At the first
//!    damaged batch, the rest of the file is searched for valid batches. If
//!    one of them was written after the damaged batch had been fsynced (its
//!    header's `durable_offset` is past the damaged offset), durable data is
//!    damaged: `EngineError::Corrupted`. Otherwise the damage is a torn or
//!    reordered write of data never reported durable: the file is cut
//!    before it and fsynced. That is the only repair recovery makes.
//! 5. Stray temporary files and side files without a `.log` are removed.
//!
//! Indexes are not read here: sealed segments load (or rebuild) them on
//! first use, and the active segment's come from its scan.

use std::collections::BTreeMap;
use std::path::Path;

use crate::config::LogConfig;
use crate::disk::{self, Disk};
use crate::error::EngineError;
use crate::format::{BatchHeader, Seal};
use crate::record::Offset;
use crate::segment::{self, Segment, SegmentPaths};

/// The files found for one base offset.
#[derive(Debug, Default)]
struct Found {
    log: bool,
    side_files: Vec<String>,
}

/// Parses `{20 digits}.{ext}` into a base offset and an extension.
fn parse_name(name: &str) -> Option<(Offset, &str)> {
    let (stem, ext) = name.split_once('.')?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((Offset(stem.parse().ok()?), ext))
}

/// Opens the segments of `dir`, repairing only a torn tail. Returns them in
/// offset order; the last one may be sealed (the caller adds an active one).
pub(crate) fn recover(
    disk: &dyn Disk,
    dir: &Path,
    config: &LogConfig,
) -> Result<Vec<Segment>, EngineError> {
    let names = disk.list_dir(dir).map_err(|e| EngineError::io(dir, e))?;
    let mut found: BTreeMap<Offset, Found> = BTreeMap::new();
    let mut removed_any = false;
    for name in names {
        if name.ends_with(".tmp") {
            // An interrupted atomic write (seal, truncation copy): the real
            // file was never replaced, so the temporary is garbage.
            disk::remove_if_exists(disk, &dir.join(&name))
                .map_err(|e| EngineError::io(dir.join(&name), e))?;
            removed_any = true;
            continue;
        }
        match parse_name(&name) {
            Some((base, "log")) => found.entry(base).or_default().log = true,
            Some((base, "seal" | "index" | "timeindex")) => {
                found.entry(base).or_default().side_files.push(name)
            }
            _ if name == "LOCK" => {}
            _ => {
                tracing::warn!(dir = %dir.display(), file = %name, "ignoring unknown file in log directory")
            }
        }
    }
    // Side files whose log is gone: a purge removed the log first and
    // stopped (or crashed) before removing them.
    for (_, f) in found.iter().filter(|(_, f)| !f.log) {
        for name in &f.side_files {
            disk::remove_if_exists(disk, &dir.join(name))
                .map_err(|e| EngineError::io(dir.join(name), e))?;
            removed_any = true;
        }
    }
    let bases: Vec<Offset> = found
        .iter()
        .filter(|(_, f)| f.log)
        .map(|(b, _)| *b)
        .collect();

    let mut segments: Vec<Segment> = Vec::with_capacity(bases.len());
    for (i, &base) in bases.iter().enumerate() {
        let is_last = i + 1 == bases.len();
        let paths = SegmentPaths::new(dir, base);
        let segment = match read_seal(disk, &paths, base)? {
            Some(seal) => Segment::sealed(dir, seal),
            None if is_last => recover_active(disk, dir, base, config)?,
            None => reseal(disk, dir, base, config)?,
        };
        if let Some(prev) = segments.last()
            && prev.next != segment.base
        {
            return Err(EngineError::Gap {
                previous: prev.paths.log.clone(),
                expected: prev.next,
                found: segment.base,
            });
        }
        segments.push(segment);
    }
    if removed_any {
        disk.sync_dir(dir).map_err(|e| EngineError::io(dir, e))?;
    }
    Ok(segments)
}

/// Reads and checks a segment's seal, if it has one.
fn read_seal(
    disk: &dyn Disk,
    paths: &SegmentPaths,
    base: Offset,
) -> Result<Option<Seal>, EngineError> {
    let bytes = match disk::read_small_file(disk, &paths.seal) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(EngineError::io(&paths.seal, e)),
    };
    // A seal is written to a temporary file, fsynced and renamed, so a
    // crash cannot leave a damaged one: damage here is real corruption.
    let corrupt = |reason: String| EngineError::corrupted(&paths.seal, base, 0, reason);
    let seal = Seal::decode(&bytes).map_err(|e| corrupt(e.0))?;
    if seal.base_offset != base {
        return Err(corrupt(format!(
            "seal names base offset {}",
            seal.base_offset
        )));
    }
    let log_len = disk
        .open(&paths.log)
        .and_then(|f| f.len_bytes())
        .map_err(|e| EngineError::io(&paths.log, e))?;
    if log_len != seal.log_len {
        return Err(EngineError::corrupted(
            &paths.log,
            base,
            log_len.min(seal.log_len),
            format!(
                "sealed segment is {log_len} bytes, seal says {}",
                seal.log_len
            ),
        ));
    }
    Ok(Some(seal))
}

/// A non-last segment whose seal is missing: valid only if whole.
fn reseal(
    disk: &dyn Disk,
    dir: &Path,
    base: Offset,
    config: &LogConfig,
) -> Result<Segment, EngineError> {
    let paths = SegmentPaths::new(dir, base);
    tracing::warn!(segment = %paths.log.display(), "sealed segment has no seal; verifying it in full");
    let file = disk
        .open(&paths.log)
        .map_err(|e| EngineError::io(&paths.log, e))?;
    let len = file
        .len_bytes()
        .map_err(|e| EngineError::io(&paths.log, e))?;
    let mapping = file.map(len).map_err(|e| EngineError::io(&paths.log, e))?;
    let scan = segment::scan(mapping.as_slice(), base, config.index_interval_bytes);
    if let Some(d) = scan.damage {
        return Err(EngineError::corrupted(
            &paths.log, d.offset, d.position, d.reason,
        ));
    }
    if scan.batch_count == 0 {
        return Err(EngineError::corrupted(
            &paths.log,
            base,
            0,
            "empty segment before the last",
        ));
    }
    let mut segment = Segment::active_from_scan(dir, base, scan, file);
    segment.seal(disk)?;
    disk.sync_dir(dir).map_err(|e| EngineError::io(dir, e))?;
    Ok(segment)
}

/// The last, unsealed segment: scanned, and cut before a torn tail.
fn recover_active(
    disk: &dyn Disk,
    dir: &Path,
    base: Offset,
    config: &LogConfig,
) -> Result<Segment, EngineError> {
    let paths = SegmentPaths::new(dir, base);
    let io = |e| EngineError::io(&paths.log, e);
    let file = disk.open(&paths.log).map_err(io)?;
    let file_len = file.len_bytes().map_err(io)?;
    let mapping = file.map(file_len).map_err(io)?;
    let scan = segment::scan(mapping.as_slice(), base, config.index_interval_bytes);
    if let Some(d) = &scan.damage {
        if let Some(later) = durable_batch_after(mapping.as_slice(), d.position + 1, d.offset) {
            return Err(EngineError::corrupted(
                &paths.log,
                d.offset,
                d.position,
                format!(
                    "{}; the valid batch at byte {later} was written after this one was fsynced",
                    d.reason
                ),
            ));
        }
        tracing::warn!(
            segment = %paths.log.display(),
            offset = %d.offset,
            position = d.position,
            dropped_bytes = file_len - scan.valid_len,
            reason = %d.reason,
            "cutting a torn tail that was never reported durable"
        );
        // The only mapping of this file is ours, and it is dropped first.
        drop(mapping);
        file.set_len(scan.valid_len).map_err(io)?;
    }
    // Whatever survived a process crash may still be only in the page
    // cache; make it durable before reporting it as such.
    file.sync_data().map_err(io)?;
    Ok(Segment::active_from_scan(dir, base, scan, file))
}

/// The position of a valid batch at or after `from` whose header says the
/// log was durable past `damaged_offset` when it was written, if any.
fn durable_batch_after(bytes: &[u8], from: u64, damaged_offset: Offset) -> Option<u64> {
    let mut pos = usize::try_from(from).ok()?;
    while pos + 4 <= bytes.len() {
        let hit = bytes[pos..].windows(4).position(BatchHeader::has_magic)?;
        pos += hit;
        if let Ok(h) = segment::verify_batch_at(bytes, pos as u64)
            && h.durable_offset > damaged_offset
        {
            return Some(pos as u64);
        }
        pos += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_only_in_the_canonical_form() {
        assert_eq!(
            parse_name("00000000000000000042.log"),
            Some((Offset(42), "log"))
        );
        assert_eq!(parse_name("42.log"), None);
        assert_eq!(parse_name("0000000000000000004x.log"), None);
        assert_eq!(parse_name("LOCK"), None);
    }
}
