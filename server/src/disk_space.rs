//! Refusing writes before the disk fills: a write that would leave the
//! data directory's file system with less than the reserve is answered
//! 507 and nothing is proposed. Running out for real inside the WAL or a
//! partition log would stop the node's Raft groups, so the reserve keeps
//! room for what is already in flight, checkpoints and compaction.
//!
//! The check runs on the node that receives the request; nodes of one
//! cluster are expected to have alike disks.

use std::path::PathBuf;

/// Every byte of a message is written about twice on each node: to the
/// node WAL and to the partition log.
const WRITE_AMPLIFICATION: u64 = 2;

/// The data directory's free space, and the reserve writes may not eat.
#[derive(Debug, Clone)]
pub struct DiskSpace {
    dir: PathBuf,
    reserve_bytes: u64,
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
        DiskSpace { dir, reserve_bytes }
    }

    /// Whether `incoming_bytes` more can be written and the reserve still
    /// kept. A file system that cannot be queried is not refused (the
    /// failure is logged): the check protects, it must not itself fail
    /// writes.
    pub fn check(&self, incoming_bytes: u64) -> Result<(), DiskFull> {
        let free_bytes = match nix::sys::statvfs::statvfs(&self.dir) {
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
                return Ok(());
            }
        };
        let needed = self
            .reserve_bytes
            .saturating_add(incoming_bytes.saturating_mul(WRITE_AMPLIFICATION));
        if free_bytes < needed {
            return Err(DiskFull {
                free_bytes,
                reserve_bytes: self.reserve_bytes,
            });
        }
        Ok(())
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
}
