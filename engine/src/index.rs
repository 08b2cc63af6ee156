//! The sparse offset and time indexes of one segment
//! (docs/format.md#index-files).
//!
//! Indexes are caches, never the source of truth: every lookup lands on a
//! batch boundary whose header (CRC, base offset) is checked before use, a
//! damaged or stale index file is rebuilt from the log, and the active
//! segment's index lives only in memory (it is rebuilt by the open scan).
//!
//! Entries are added at batch boundaries once `index_interval_bytes` of log
//! have passed since the previous entry. Position 0 is implicit.

use crate::format::{self, IndexKind, OFFSET_INDEX_ENTRY_BYTES, TIME_INDEX_ENTRY_BYTES};
use crate::record::{Offset, Timestamp};

/// One offset-index entry: the batch at `position` starts at
/// `base + relative_offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct OffsetEntry {
    relative_offset: u32,
    position: u32,
}

/// One time-index entry: every record before `position` has a timestamp of
/// at most `max_timestamp_before`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct TimeEntry {
    max_timestamp_before: Timestamp,
    relative_offset: u32,
    position: u32,
}

/// Both sparse indexes of one segment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct SegmentIndex {
    offsets: Vec<OffsetEntry>,
    times: Vec<TimeEntry>,
}

/// A place to start scanning: a batch boundary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ScanStart {
    /// Offset of the batch at `position`, relative to the segment's base.
    pub relative_offset: u32,
    /// Byte position of a batch header.
    pub position: u64,
}

impl SegmentIndex {
    /// Records the batch about to be placed at `position`, if an entry is due.
    /// `max_timestamp_before` is the largest timestamp of the records before it.
    pub fn on_batch(
        &mut self,
        interval_bytes: u32,
        position: u64,
        relative_offset: u32,
        max_timestamp_before: Timestamp,
    ) {
        let last = self.offsets.last().map_or(0, |e| u64::from(e.position));
        if position == 0 || position - last < u64::from(interval_bytes) {
            return;
        }
        // Positions fit u32 because segments are bounded (limits.rs).
        let position = position as u32;
        self.offsets.push(OffsetEntry {
            relative_offset,
            position,
        });
        self.times.push(TimeEntry {
            max_timestamp_before,
            relative_offset,
            position,
        });
    }

    /// The last indexed batch at or before `relative_offset`.
    pub fn start_for_offset(&self, relative_offset: u32) -> ScanStart {
        let i = self
            .offsets
            .partition_point(|e| e.relative_offset <= relative_offset);
        match i.checked_sub(1).map(|i| self.offsets[i]) {
            Some(e) => ScanStart {
                relative_offset: e.relative_offset,
                position: u64::from(e.position),
            },
            None => ScanStart {
                relative_offset: 0,
                position: 0,
            },
        }
    }

    /// The last indexed batch before which every record is older than `t`:
    /// the first record at or after `t` is at or after it.
    pub fn start_for_time(&self, t: Timestamp) -> ScanStart {
        // `max_timestamp_before` never decreases along the index.
        let i = self.times.partition_point(|e| e.max_timestamp_before < t);
        match i.checked_sub(1).map(|i| self.times[i]) {
            Some(e) => ScanStart {
                relative_offset: e.relative_offset,
                position: u64::from(e.position),
            },
            None => ScanStart {
                relative_offset: 0,
                position: 0,
            },
        }
    }

    /// Encodes the two index files' contents.
    pub fn encode(&self, base: Offset, covered_len: u64) -> (Vec<u8>, Vec<u8>) {
        let covered = covered_len as u32;
        let mut offsets = Vec::with_capacity(self.offsets.len() * OFFSET_INDEX_ENTRY_BYTES);
        for e in &self.offsets {
            offsets.extend_from_slice(&e.relative_offset.to_le_bytes());
            offsets.extend_from_slice(&e.position.to_le_bytes());
        }
        let mut times = Vec::with_capacity(self.times.len() * TIME_INDEX_ENTRY_BYTES);
        for e in &self.times {
            times.extend_from_slice(&e.max_timestamp_before.0.to_le_bytes());
            times.extend_from_slice(&e.relative_offset.to_le_bytes());
            times.extend_from_slice(&e.position.to_le_bytes());
        }
        (
            format::encode_index(IndexKind::Offset, base, covered, &offsets),
            format::encode_index(IndexKind::Time, base, covered, &times),
        )
    }

    /// Decodes the two index files of a sealed segment of `log_len` bytes
    /// holding offsets `base..next`. `None` means stale or damaged: rebuild.
    pub fn decode(
        base: Offset,
        next: Offset,
        log_len: u64,
        offset_file: &[u8],
        time_file: &[u8],
    ) -> Option<SegmentIndex> {
        let (covered_o, offsets) =
            format::decode_index(IndexKind::Offset, base, offset_file).ok()?;
        let (covered_t, times) = format::decode_index(IndexKind::Time, base, time_file).ok()?;
        if u64::from(covered_o) != log_len || u64::from(covered_t) != log_len {
            return None;
        }
        let span = next.0 - base.0;
        let mut index = SegmentIndex::default();
        for e in offsets.chunks_exact(OFFSET_INDEX_ENTRY_BYTES) {
            index.offsets.push(OffsetEntry {
                relative_offset: format::index_u32(e, 0),
                position: format::index_u32(e, 4),
            });
        }
        for e in times.chunks_exact(TIME_INDEX_ENTRY_BYTES) {
            index.times.push(TimeEntry {
                max_timestamp_before: Timestamp(format::index_u64(e, 0)),
                relative_offset: format::index_u32(e, 8),
                position: format::index_u32(e, 12),
            });
        }
        // Entries must be strictly increasing and inside the segment, or the
        // binary searches above would be meaningless.
        let offsets_ok =
            index.offsets.windows(2).all(|w| {
                w[0].relative_offset < w[1].relative_offset && w[0].position < w[1].position
            }) && index
                .offsets
                .iter()
                .all(|e| u64::from(e.position) < log_len && u64::from(e.relative_offset) < span);
        let times_ok = index.times.windows(2).all(|w| {
            w[0].max_timestamp_before <= w[1].max_timestamp_before && w[0].position < w[1].position
        }) && index
            .times
            .iter()
            .all(|e| u64::from(e.position) < log_len && u64::from(e.relative_offset) < span);
        (offsets_ok && times_ok).then_some(index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> SegmentIndex {
        let mut ix = SegmentIndex::default();
        // Batches of 100 bytes, 10 records each, timestamps 10 per batch.
        for b in 0..10u32 {
            ix.on_batch(
                250,
                u64::from(b) * 100,
                b * 10,
                Timestamp(u64::from(b) * 10),
            );
        }
        ix
    }

    #[test]
    fn entries_are_sparse_and_lookups_land_at_or_before_the_target() {
        let ix = sample();
        assert_eq!(ix.offsets.len(), 3); // positions 300, 600, 900
        assert_eq!(ix.start_for_offset(0).position, 0);
        assert_eq!(ix.start_for_offset(29).position, 0);
        assert_eq!(ix.start_for_offset(30).position, 300);
        assert_eq!(ix.start_for_offset(95).position, 900);
        assert_eq!(ix.start_for_time(Timestamp(30)).position, 0);
        assert_eq!(ix.start_for_time(Timestamp(31)).position, 300);
        assert_eq!(ix.start_for_time(Timestamp(1000)).position, 900);
    }

    #[test]
    fn round_trip_and_stale_files_are_refused() {
        let ix = sample();
        let (o, t) = ix.encode(Offset(100), 1000);
        let back = SegmentIndex::decode(Offset(100), Offset(200), 1000, &o, &t);
        assert_eq!(back, Some(ix.clone()));
        assert_eq!(
            SegmentIndex::decode(Offset(100), Offset(200), 999, &o, &t),
            None
        );
        assert_eq!(
            SegmentIndex::decode(Offset(101), Offset(200), 1000, &o, &t),
            None
        );
        // A span too small for the entries is refused too.
        assert_eq!(
            SegmentIndex::decode(Offset(100), Offset(150), 1000, &o, &t),
            None
        );
    }
}
