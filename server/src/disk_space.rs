//! Refusing writes before the disk fills: a write that would leave the
//! data directory's file system with less than the reserve is answered
//! 507 and nothing is proposed. Running out for real inside the WAL or a
//! partition log would stop the node's Raft groups, so the reserve keeps
//! room for what is already in flight, checkpoints and compaction.
//!
//! The check runs on the node that receives the request; nodes of one
//! cluster are expected to have alike disks.
//!
//! The file system is asked at most every `MEASURE_EVERY_MS` while the
//! last answer, less everything admitted since, still leaves the reserve
//! (a `statfs` per request was ~3 % of a single-message POST's CPU). A
//! refusal always follows a fresh measurement, so space freed since the
//! last one is never refused; space taken by other writers of the same
//! file system shows up within `MEASURE_EVERY_MS`.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Every byte of a message is written about twice on each node: to the
/// node WAL and to the partition log.
const WRITE_AMPLIFICATION: u64 = 2;
/// Longest a measurement of the free space is reused.
const MEASURE_EVERY_MS: u64 = 100;

/// The data directory's free space, and the reserve writes may not eat.
#[derive(Debug)]
pub struct DiskSpace {
    dir: PathBuf,
    reserve_bytes: u64,
    last: Mutex<Option<Measured>>,
}

/// One answer of the file system, and what was admitted since.
#[derive(Debug, Clone, Copy)]
struct Measured {
    at: Instant,
    free_bytes: u64,
    admitted_bytes: u64,
}

/// Why a write was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the disk is full: {free_bytes} bytes free, {reserve_bytes} kept in reserve; nothing was written"
)]
pub struct DiskFull {
    /// Bytes free for unprivileged writers.
    pub free_bytes: u64,
    /// The configured reserve.
    pub reserve_bytes: u64,
}

impl DiskSpace {
    /// Watches the file system holding `dir`.
    pub fn new(dir: PathBuf, reserve_bytes: u64) -> DiskSpace {
        DiskSpace {
            dir,
            reserve_bytes,
            last: Mutex::new(None),
        }
    }

    /// Whether `incoming_bytes` more can be written and the reserve still
    /// kept. A file system that cannot be queried is not refused (the
    /// failure is logged): the check protects, it must not itself fail
    /// writes.
    pub fn check(&self, incoming_bytes: u64) -> Result<(), DiskFull> {
        let written = incoming_bytes.saturating_mul(WRITE_AMPLIFICATION);
        let needed = self.reserve_bytes.saturating_add(written);
        {
            let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(m) = last.as_mut()
                && m.at.elapsed() < Duration::from_millis(MEASURE_EVERY_MS)
                && m.free_bytes.saturating_sub(m.admitted_bytes) >= needed
            {
                m.admitted_bytes = m.admitted_bytes.saturating_add(written);
                return Ok(());
            }
        }
        let free_bytes = self.measure();
        *self.last.lock().unwrap_or_else(|p| p.into_inner()) = Some(Measured {
            at: Instant::now(),
            free_bytes,
            admitted_bytes: written,
        });
        if free_bytes < needed {
            return Err(DiskFull {
                free_bytes,
                reserve_bytes: self.reserve_bytes,
            });
        }
        Ok(())
    }

    /// Bytes free for unprivileged writers; `u64::MAX` when the file
    /// system cannot be asked.
    fn measure(&self) -> u64 {
        match nix::sys::statvfs::statvfs(&self.dir) {
            Ok(stat) => {
                // The field widths differ between platforms.
                #[allow(clippy::useless_conversion)]
                let (blocks, size) = (
                    u64::from(stat.blocks_available()),
                    u64::from(stat.fragment_size()),
                );
                blocks.saturating_mul(size)
            }
            Err(e) => {
                tracing::warn!(error = %e, dir = %self.dir.display(), "statvfs failed");
                u64::MAX
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reserve_larger_than_the_disk_refuses_and_none_allows() {
        let dir = tempfile::tempdir().expect("dir");
        let none = DiskSpace::new(dir.path().to_path_buf(), 0);
        assert_eq!(none.check(1), Ok(()));
        let huge = DiskSpace::new(dir.path().to_path_buf(), u64::MAX / 2);
        let full = huge.check(1).expect_err("no disk is that large");
        assert_eq!(full.reserve_bytes, u64::MAX / 2);
        assert!(none.check(u64::MAX / 2).is_err(), "the write itself counts");
    }

    #[test]
    fn admitted_writes_count_against_a_reused_measurement() {
        let dir = tempfile::tempdir().expect("dir");
        let space = DiskSpace::new(dir.path().to_path_buf(), 0);
        space.check(0).expect("measured");
        let free = space
            .last
            .lock()
            .expect("lock")
            .expect("measured")
            .free_bytes;
        // Two writes that each fit, but not together: the second is
        // measured afresh, and the file system has no room for it.
        let half = free / 2 / WRITE_AMPLIFICATION + 1;
        space.check(half).expect("the first fits");
        assert_eq!(
            space
                .last
                .lock()
                .expect("lock")
                .expect("kept")
                .admitted_bytes,
            half * WRITE_AMPLIFICATION
        );
        space
            .check(half)
            .expect("re-measured: the first wrote nothing");
        assert!(
            space.check(free).is_err(),
            "more than the disk holds is refused"
        );
    }
}
