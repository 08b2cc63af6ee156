//! Opening a log directory: what is trusted, what is checked, and the one
//! thing that is repaired (docs/format.md#recovery).
//!
//! 1. Sealed segments are checked cheaply: the seal's CRC, its base against
//!    the file name, the `.log` length against the seal. They are not read.
//!    Seals are not fsynced, so one that fails its CRC counts as missing
//!    (step 3 or 4 then reads the segment); a readable seal that disagrees
//!    with its file is corruption.
//! 2. Neighbouring segments must meet exactly (`EngineError::Gap`).
//! 3. A segment without a (readable) seal followed by sealed ones is
//!    scanned in full; if every batch is valid it is sealed again, else it
//!    is corrupt.
//! 4. The unsealed segments after the last sealed one (the *tail*: the
//!    active segment, and any segments rolled but not yet made durable and
//!    sealed by a flush) are scanned batch by batch. At the first damaged
//!    batch, or where a segment ends before the next one begins, the rest of
//!    the tail is searched for valid batches. If one of them was written
//!    after the damaged point had been fsynced (its header's
//!    `durable_offset` is past the damaged offset), durable data is damaged:
//!    `EngineError::Corrupted`. Otherwise the damage is a torn or reordered
//!    write of data never reported durable: the segment is cut there, later
//!    tail segments are deleted, and the cut is made durable. That is the
//!    only repair recovery makes. Surviving tail segments are fsynced, and
//!    all but the last are sealed.
//! 5. Stray temporary files and side files without a `.log` are removed.
//! 6. Spare data files (`.spare`, kept for recycling) are handed back to
//!    the log, up to `LogConfig::recycle_segments_max`; the rest go.
//!
//! Recycled segments (step 6) write over a removed segment's bytes, so a
//! file may hold stale batches past its valid ones. They never pass as
//! data: a batch counts only if its base offset is the next one, and a
//! stale batch's offsets are below the log's start (offsets only grow past
//! a purge). Nor can they fake the proof that durable data was damaged:
//! their `durable_offset` is below the start too. A rolled tail segment
//! whose batches reach the next segment's base exactly ends there: what
//! follows in its file is stale and is cut. So is the zero padding a
//! direct write-out leaves after the last segment's last batch (less than
//! a block, up to a block boundary), without the torn-tail warning.
//!
//! Indexes are not read here: sealed segments load (or rebuild) them on
//! first use, and the active segment's come from its scan.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::config::LogConfig;
use crate::disk::aligned::ALIGN_BYTES;
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

/// What opening a log directory found.
#[derive(Debug)]
pub(crate) struct Recovered {
    /// In offset order; the last one may be sealed (the caller adds an
    /// active one).
    pub segments: Vec<Segment>,
    /// Spare data files kept for recycling.
    pub spares: Vec<PathBuf>,
}

/// Opens the segments of `dir`, repairing only a torn tail.
pub(crate) fn recover(
    disk: &dyn Disk,
    dir: &Path,
    config: &LogConfig,
) -> Result<Recovered, EngineError> {
    let names = disk.list_dir(dir).map_err(|e| EngineError::io(dir, e))?;
    let mut found: BTreeMap<Offset, Found> = BTreeMap::new();
    let mut spares = Vec::new();
    for name in names {
        if name.ends_with(".tmp") {
            // An interrupted atomic write (seal, truncation copy): the real
            // file was never replaced, so the temporary is garbage.
            disk::remove_if_exists(disk, &dir.join(&name))
                .map_err(|e| EngineError::io(dir.join(&name), e))?;
            continue;
        }
        match parse_name(&name) {
            Some((base, "log")) => found.entry(base).or_default().log = true,
            Some((base, "seal" | "index" | "timeindex")) => {
                found.entry(base).or_default().side_files.push(name)
            }
            Some((_, segment::SPARE_EXTENSION)) => spares.push(dir.join(&name)),
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
        }
    }
    let bases: Vec<Offset> = found
        .iter()
        .filter(|(_, f)| f.log)
        .map(|(b, _)| *b)
        .collect();

    let mut seals = Vec::with_capacity(bases.len());
    for &base in &bases {
        seals.push(read_seal(disk, &SegmentPaths::new(dir, base), base)?);
    }
    // Segments are sealed in offset order, so everything up to the last
    // sealed one was durable when it was sealed; what follows is the tail.
    let tail_start = seals.iter().rposition(Option::is_some).map_or(0, |i| i + 1);
    let mut segments: Vec<Segment> = Vec::with_capacity(bases.len());
    for (&base, seal) in bases[..tail_start].iter().zip(seals) {
        let segment = match seal {
            Some(seal) => Segment::sealed(dir, seal),
            None => reseal(disk, dir, base, config)?,
        };
        check_meets(segments.last(), segment.base)?;
        segments.push(segment);
    }
    if let Some(&first) = bases.get(tail_start) {
        check_meets(segments.last(), first)?;
        recover_tail(disk, dir, &bases[tail_start..], config, &mut segments)?;
    }
    spares.sort();
    let surplus = spares.len().saturating_sub(config.recycle_segments_max);
    for spare in spares.drain(..surplus) {
        disk::remove_if_exists(disk, &spare).map_err(|e| EngineError::io(&spare, e))?;
    }
    // Always: a segment's data can be durable while its name is not (a log
    // created, written and closed before any flush synced the directory),
    // and the caller is about to report every recovered offset durable.
    disk.sync_dir(dir).map_err(|e| EngineError::io(dir, e))?;
    Ok(Recovered { segments, spares })
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
    // Seals are not fsynced, so a crash can leave one empty or partial: a
    // seal that fails its checks is treated as missing, and the segment is
    // then verified in full from its log (the source of truth).
    let corrupt = |reason: String| EngineError::corrupted(&paths.seal, base, 0, reason);
    let seal = match Seal::decode(&bytes) {
        Ok(seal) => seal,
        Err(e) => {
            tracing::warn!(seal = %paths.seal.display(), reason = %e.0, "ignoring an unreadable seal");
            return Ok(None);
        }
    };
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
    file.sync_data()
        .map_err(|e| EngineError::io(&paths.log, e))?;
    let mut segment = Segment::active_from_scan(dir, base, scan, file);
    try_seal(disk, &mut segment);
    Ok(segment)
}

/// Seals a durable segment found without a seal. Failing (a full disk, say)
/// is not fatal: the log opens with the segment unsealed, and the next
/// flush seals it. The caller syncs the directory.
fn try_seal(disk: &dyn Disk, segment: &mut Segment) {
    if let Err(e) = segment.write_seal(disk) {
        tracing::warn!(segment = %segment.paths.log.display(), error = %e, "could not seal a recovered segment; the next flush will");
    }
}

/// Fails with `Gap` unless `prev` ends exactly at `base`.
fn check_meets(prev: Option<&Segment>, base: Offset) -> Result<(), EngineError> {
    match prev {
        Some(prev) if prev.next != base => Err(EngineError::Gap {
            previous: prev.paths.log.clone(),
            expected: prev.next,
            found: base,
        }),
        _ => Ok(()),
    }
}

/// The unsealed segments at the end of the log (see the module docs).
/// Pushes the surviving ones onto `segments`; the caller syncs the
/// directory afterwards.
fn recover_tail(
    disk: &dyn Disk,
    dir: &Path,
    bases: &[Offset],
    config: &LogConfig,
    segments: &mut Vec<Segment>,
) -> Result<(), EngineError> {
    let mut files = Vec::with_capacity(bases.len());
    for &base in bases {
        let paths = SegmentPaths::new(dir, base);
        let io = |e| EngineError::io(&paths.log, e);
        let file = disk.open_with(&paths.log, config.write_mode).map_err(io)?;
        let mapping = file.len_bytes().and_then(|len| file.map(len)).map_err(io)?;
        files.push((paths, file, mapping));
    }
    let mut kept = Vec::with_capacity(bases.len());
    let mut cut = None;
    // Rolled recycled files whose stale bytes after their last batch go.
    let mut stale_tails = Vec::new();
    for (i, (paths, _, mapping)) in files.iter().enumerate() {
        let base = bases[i];
        let scan = segment::scan(mapping.as_slice(), base, config.index_interval_bytes);
        let next_base = bases.get(i + 1).copied();
        let damage = match (&scan.damage, next_base) {
            // Every offset up to the next segment is here: nothing after
            // them was ever appended to this file (see the module docs).
            (Some(_), Some(nb)) if scan.next == nb && scan.batch_count > 0 => {
                stale_tails.push((i, scan.valid_len));
                None
            }
            // The zeros a direct write-out padded its last block with.
            (Some(_), None) if is_padding(mapping.as_slice(), scan.valid_len) => {
                stale_tails.push((i, scan.valid_len));
                None
            }
            (Some(d), _) => Some((d.position, d.offset, d.reason.clone())),
            (None, Some(nb)) if scan.next > nb => {
                return Err(EngineError::Gap {
                    previous: paths.log.clone(),
                    expected: scan.next,
                    found: nb,
                });
            }
            (None, Some(nb)) if scan.next < nb => Some((
                scan.valid_len,
                scan.next,
                format!(
                    "segment ends at offset {}, the next starts at {nb}",
                    scan.next
                ),
            )),
            _ => None,
        };
        if scan.batch_count == 0 && next_base.is_some() && damage.is_none() {
            return Err(EngineError::corrupted(
                &paths.log,
                base,
                0,
                "empty segment before the last",
            ));
        }
        let valid_len = scan.valid_len;
        kept.push(scan);
        if let Some((position, offset, reason)) = damage {
            // Was anything after this point written after it became durable?
            let later = std::iter::once((i, position + 1))
                .chain((i + 1..files.len()).map(|j| (j, 0)))
                .find_map(|(j, from)| {
                    durable_batch_after(files[j].2.as_slice(), from, offset).map(|p| (j, p))
                });
            if let Some((j, p)) = later {
                return Err(EngineError::corrupted(
                    &paths.log,
                    offset,
                    position,
                    format!(
                        "{reason}; the valid batch at byte {p} of {} was written after this point was fsynced",
                        files[j].0.log.display()
                    ),
                ));
            }
            let dropped: u64 = files[i + 1..].iter().map(|f| f.2.len()).sum::<u64>()
                + (files[i].2.len() - valid_len);
            tracing::warn!(
                segment = %paths.log.display(),
                offset = %offset,
                position,
                dropped_bytes = dropped,
                reason = %reason,
                "cutting a torn tail that was never reported durable"
            );
            cut = Some((i, valid_len));
            break;
        }
    }
    // Our own mappings are the only ones; drop them before any file shrinks.
    let files: Vec<_> = files.into_iter().map(|(p, f, _)| (p, f)).collect();
    if let Some((i, valid_len)) = cut {
        for (paths, _) in files[i + 1..].iter().rev() {
            paths.remove_all(disk)?;
        }
        stale_tails.push((i, valid_len));
    }
    for (i, valid_len) in stale_tails {
        let (paths, file) = &files[i];
        file.set_len(valid_len)
            .map_err(|e| EngineError::io(&paths.log, e))?;
    }
    let last = kept.len() - 1;
    for (i, (scan, (paths, file))) in kept.into_iter().zip(files).enumerate() {
        // Whatever survived a process crash may still be only in the page
        // cache; make it durable before reporting it as such.
        file.sync_data()
            .map_err(|e| EngineError::io(&paths.log, e))?;
        let mut segment = Segment::active_from_scan(dir, bases[i], scan, file);
        if i < last {
            try_seal(disk, &mut segment);
        }
        segments.push(segment);
    }
    Ok(())
}

/// Whether `bytes` from `valid_len` on are the zero padding of a direct
/// write-out (`disk::direct`): fewer than a block, all zero, ending the
/// file on a block boundary. A torn write past the last durable batch
/// could look the same, and is cut the same way; only the warning differs.
fn is_padding(bytes: &[u8], valid_len: u64) -> bool {
    let Ok(from) = usize::try_from(valid_len) else {
        return false;
    };
    let Some(rest) = bytes.get(from..) else {
        return false;
    };
    rest.len() < ALIGN_BYTES
        && bytes.len().is_multiple_of(ALIGN_BYTES)
        && rest.iter().all(|b| *b == 0)
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
    fn only_zeros_to_a_block_boundary_count_as_padding() {
        let mut file = vec![7u8; 1000];
        file.resize(ALIGN_BYTES, 0);
        assert!(is_padding(&file, 1000));
        assert!(
            is_padding(&file, ALIGN_BYTES as u64),
            "nothing after the end"
        );
        assert!(!is_padding(&file[..2000], 1000), "not on a block boundary");
        file[3000] = 1;
        assert!(!is_padding(&file, 1000), "a non-zero byte");
        let long = vec![0u8; 2 * ALIGN_BYTES];
        assert!(!is_padding(&long, 0), "a block or more");
        assert!(!is_padding(&file, 5000), "past the end");
    }

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
