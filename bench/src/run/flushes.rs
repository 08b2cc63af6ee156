//! Device flushes and writes, read from `/sys/block/*/stat`, so a report
//! shows how many cache flushes the disk really did per acknowledged
//! message instead of assuming the system fsynced.
//!
//! Only whole physical devices count: loop, RAM, zram, device-mapper and
//! md devices pass their flushes on to a physical one (counting both
//! would count twice). The counts are machine-wide: anything else
//! writing during a run is included, so runs should be alone.

use std::path::Path;

/// Sums over the machine's physical block devices.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DiskCounters {
    /// Flush requests completed (field 16 of the stat file; kernels
    /// before 5.5 have no such field and count 0).
    pub flushes: u64,
    /// 512-byte sectors written (field 7).
    pub sectors_written: u64,
}

impl DiskCounters {
    /// The counters now (zeros where `/sys/block` cannot be read).
    pub fn read() -> DiskCounters {
        read_from(Path::new("/sys/block"))
    }

    /// What happened between `earlier` and `self`.
    pub fn since(self, earlier: DiskCounters) -> DiskCounters {
        DiskCounters {
            flushes: self.flushes.saturating_sub(earlier.flushes),
            sectors_written: self.sectors_written.saturating_sub(earlier.sectors_written),
        }
    }

    /// Bytes written.
    pub fn bytes_written(self) -> u64 {
        self.sectors_written.saturating_mul(512)
    }
}

fn read_from(dir: &Path) -> DiskCounters {
    let mut sum = DiskCounters::default();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return sum;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if ["loop", "ram", "zram", "dm-", "md", "nbd"]
            .iter()
            .any(|p| name.starts_with(p))
        {
            continue;
        }
        if let Ok(text) = std::fs::read_to_string(entry.path().join("stat")) {
            let c = parse_stat(&text);
            sum.flushes += c.flushes;
            sum.sectors_written += c.sectors_written;
        }
    }
    sum
}

/// One device's stat line.
fn parse_stat(text: &str) -> DiskCounters {
    let fields: Vec<u64> = text
        .split_whitespace()
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    DiskCounters {
        flushes: fields.get(15).copied().unwrap_or(0),
        sectors_written: fields.get(6).copied().unwrap_or(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn physical_devices_are_summed_and_virtual_ones_skipped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let line = "2523339 33393 96178010 9589899 6125926 1017521 1000 3122835 0 764644 12919145 541703 74 1065552992 135296 7 71113\n";
        for dev in ["vda", "nvme0n1", "loop0", "dm-0", "zram0"] {
            std::fs::create_dir(dir.path().join(dev)).expect("mkdir");
            std::fs::write(dir.path().join(dev).join("stat"), line).expect("write");
        }
        let c = read_from(dir.path());
        assert_eq!(
            c,
            DiskCounters {
                flushes: 14,
                sectors_written: 2_000
            }
        );
        let old_kernel = parse_stat("1 2 3 4 5 6 7 8 9 10 11\n");
        assert_eq!((old_kernel.flushes, old_kernel.sectors_written), (0, 7));
        assert_eq!(c.since(old_kernel).bytes_written(), (2_000 - 7) * 512);
    }
}
