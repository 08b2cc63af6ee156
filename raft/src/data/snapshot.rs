//! Data group snapshots: a manifest, and segment files fetched separately.
//!
//! A checkpoint pins the partition segments it covers: each segment's data
//! file gets a hard link under `pins/{seq}/q{queue}-p{partition}/`, so the
//! bytes stay readable while a replica fetches them, whatever retention or
//! truncation does to the live log meanwhile (truncation rewrites into a
//! new file; appends only go past the pinned length). The snapshot data is
//! a [`Manifest`]: the checkpoint body and, per partition, the segments as
//! (base, next, length). The two newest pin sets are kept.
//!
//! A replica installing a snapshot reuses its own sealed segments that
//! cover exactly a listed range (the records of an applied range are the
//! same on every replica: apply is deterministic) and fetches the others
//! from the manifest's source. Installing never touches the current
//! state until its commit point:
//! 1. every partition of the new state is built in a directory of a new
//!    generation, `q{queue}-p{partition}-g{n}` (hard links to reused local
//!    files, fetched files fsynced, directories fsynced);
//! 2. the checkpoint is rewritten to name those directories: the commit
//!    point (the checkpoint file is replaced atomically);
//! 3. the state is reopened from it; open deletes every partition
//!    directory the checkpoint does not name, old or half-built.

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sluice_engine::disk::Disk;
use sluice_engine::{Log, Offset};

use crate::ids::{GroupId, PartitionKey};

/// Directory of pinned segment links, inside the group's directory.
pub(crate) const PINS_DIR: &str = "pins";
/// Pin sets kept: the newest checkpoint's and the one before it, which a
/// replica may still be fetching.
const PIN_SETS_KEPT: usize = 2;
/// Largest segment a fetch returns (the engine's segment bound).
pub const SEGMENT_FETCH_BYTES_MAX: u64 = sluice_engine::limits::SEGMENT_BYTES_MAX;

/// One segment a snapshot covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentRef {
    /// Its first offset.
    pub base: Offset,
    /// One past its last offset.
    pub next: Offset,
    /// Bytes of its data file that belong to the snapshot.
    pub len_bytes: u64,
}

/// A data group's snapshot data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// The pin set holding the segments on the source.
    pub pins: u64,
    /// Where to fetch segments: the source node's RPC address.
    pub source: String,
    /// The encoded checkpoint body.
    #[serde(with = "serde_bytes")]
    pub checkpoint: Vec<u8>,
    /// The segments of each partition, oldest first.
    pub segments: BTreeMap<PartitionKey, Vec<SegmentRef>>,
}

/// The first `len_bytes` of the segment at `base` of `key` in pin set
/// `pins`: what a replica fetches (the body of a segment RPC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PinnedSegment {
    /// The pin set.
    pub pins: u64,
    /// The partition.
    pub key: PartitionKey,
    /// The segment's base offset.
    pub base: Offset,
    /// Bytes wanted from its start.
    pub len_bytes: u64,
}

/// Fetches a pinned segment from another node.
pub trait SegmentFetcher: Send + Sync + fmt::Debug {
    /// `segment` of `group` on the node at `source`.
    fn fetch(&self, source: &str, group: GroupId, segment: PinnedSegment) -> io::Result<Vec<u8>>;
}

/// Serves this node's pinned segments of one group.
#[derive(Debug, Clone)]
pub struct PinnedSegments {
    disk: std::sync::Arc<dyn Disk>,
    group_dir: PathBuf,
}

impl PinnedSegments {
    /// The pins of the group whose directory is `group_dir`.
    pub fn new(disk: std::sync::Arc<dyn Disk>, group_dir: impl Into<PathBuf>) -> PinnedSegments {
        PinnedSegments {
            disk,
            group_dir: group_dir.into(),
        }
    }

    /// The first `len_bytes` of a pinned segment (`NotFound` once its pin
    /// set is gone; `InvalidInput` past the bound or the file).
    pub fn read(&self, segment: PinnedSegment) -> io::Result<Vec<u8>> {
        let PinnedSegment {
            pins,
            key,
            base,
            len_bytes,
        } = segment;
        if len_bytes > SEGMENT_FETCH_BYTES_MAX {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{len_bytes} bytes is more than a segment holds"),
            ));
        }
        let path = pin_dir(&self.group_dir, pins)
            .join(partition_dir_name(key))
            .join(Log::segment_file_name(base));
        let file = self.disk.open(&path)?;
        if file.len_bytes()? < len_bytes {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} is shorter than {len_bytes} bytes", path.display()),
            ));
        }
        let mut buf = vec![0u8; len_bytes as usize];
        file.read_exact_at(&mut buf, 0)?;
        Ok(buf)
    }
}

/// `q{queue}-p{partition}`: a partition's directory name.
pub(crate) fn partition_dir_name(key: PartitionKey) -> String {
    format!("q{}-p{}", key.queue.0, key.partition.0)
}

fn pin_dir(group_dir: &Path, pins: u64) -> PathBuf {
    group_dir.join(PINS_DIR).join(pins.to_string())
}

/// Links the data file of every listed segment into pin set `pins`, then
/// deletes pin sets older than the kept ones.
pub(crate) fn pin(
    disk: &dyn Disk,
    group_dir: &Path,
    pins: u64,
    files: &BTreeMap<PartitionKey, Vec<(SegmentRef, PathBuf)>>,
) -> io::Result<()> {
    let set = pin_dir(group_dir, pins);
    remove_tree(disk, &set)?;
    disk.create_dir_all(&set)?;
    for (key, segments) in files {
        let dir = set.join(partition_dir_name(*key));
        disk.create_dir_all(&dir)?;
        for (segment, path) in segments {
            disk.hard_link(path, &dir.join(Log::segment_file_name(segment.base)))?;
        }
    }
    // Links need no fsync: pins only matter while this process runs.
    let root = group_dir.join(PINS_DIR);
    let mut sets: Vec<u64> = disk
        .list_dir(&root)?
        .iter()
        .filter_map(|n| n.parse().ok())
        .collect();
    sets.sort_unstable();
    let excess = sets.len().saturating_sub(PIN_SETS_KEPT);
    for old in &sets[..excess] {
        remove_tree(disk, &pin_dir(group_dir, *old))?;
    }
    Ok(())
}

/// Removes a directory holding files and directories of files (pins,
/// staging, partition logs). Absent is fine.
pub(crate) fn remove_tree(disk: &dyn Disk, dir: &Path) -> io::Result<()> {
    let names = match disk.list_dir(dir) {
        Ok(names) => names,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for name in names {
        let path = dir.join(&name);
        match disk.remove_file(&path) {
            Ok(()) => {}
            // A subdirectory (sim disk and Linux differ in the error kind).
            Err(_) => remove_tree(disk, &path)?,
        }
    }
    disk.remove_dir(dir)
}
