//! A simulated disk for crash tests (feature `sim`).
//!
//! A killed process keeps the kernel's page cache, so `kill -9` tests cannot
//! show that the engine fsyncs what it reports durable. `SimDisk` can: it
//! keeps, per file, the *live* bytes (what reads see) and the *durable*
//! bytes (what the last `sync_data` made safe), plus the writes since then.
//! Directory changes are durable only after `sync_dir` of their directory.
//! A simulated crash builds the state a real disk could be left in: the
//! durable bytes plus any subset of the later writes ([`CrashMode`]), cut
//! into 512-byte sectors, and a prefix of the later directory changes (a
//! journalling file system commits them in order).
//!
//! Simplifications, each erring towards the adversarial: directories
//! themselves are always durable; a write is torn only at sector bounds.

use std::any::Any;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::disk::{Disk, DiskFile, Mapping, WriteMode, direct::DirectFile};

/// Which un-fsynced writes survive a simulated crash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashMode {
    /// None of them.
    LoseAll,
    /// A random prefix, in the order they were made (sector by sector).
    KeepPrefix,
    /// Each sector independently, with probability one half.
    RandomSectors,
}

impl CrashMode {
    /// Every mode, for tests that try each.
    pub const ALL: [CrashMode; 3] = [
        CrashMode::LoseAll,
        CrashMode::KeepPrefix,
        CrashMode::RandomSectors,
    ];
}

/// Size of the unit a write can be torn into.
pub const SECTOR_BYTES: usize = 512;

#[derive(Debug, Clone)]
enum Pending {
    Write { pos: u64, data: Vec<u8> },
    SetLen(u64),
}

#[derive(Debug, Clone, Default)]
struct Inode {
    live: Vec<u8>,
    durable: Vec<u8>,
    pending: Vec<Pending>,
}

#[derive(Debug, Clone)]
enum MetaOp {
    Link {
        path: PathBuf,
        ino: u64,
    },
    Unlink {
        path: PathBuf,
    },
    Rename {
        from: PathBuf,
        to: PathBuf,
        ino: u64,
    },
}

impl MetaOp {
    fn touches_dir(&self, dir: &Path) -> bool {
        let parent = |p: &PathBuf| p.parent() == Some(dir);
        match self {
            MetaOp::Link { path, .. } | MetaOp::Unlink { path } => parent(path),
            MetaOp::Rename { from, to, .. } => parent(from) || parent(to),
        }
    }

    fn apply(&self, names: &mut BTreeMap<PathBuf, u64>) {
        match self {
            MetaOp::Link { path, ino } => {
                names.insert(path.clone(), *ino);
            }
            MetaOp::Unlink { path } => {
                names.remove(path);
            }
            MetaOp::Rename { from, to, ino } => {
                names.remove(from);
                names.insert(to.clone(), *ino);
            }
        }
    }
}

#[derive(Debug, Default)]
struct State {
    inodes: HashMap<u64, Inode>,
    next_ino: u64,
    names: BTreeMap<PathBuf, u64>,
    durable_names: BTreeMap<PathBuf, u64>,
    pending_meta: Vec<MetaOp>,
    dirs: BTreeSet<PathBuf>,
    locks: BTreeSet<PathBuf>,
    capacity_bytes: Option<u64>,
    fail_syncs: bool,
    ops: u64,
    syncs: u64,
    crash_plan: Option<(u64, CrashMode, u64)>,
    crash_image: Option<Box<State>>,
}

/// Splitmix64: a small deterministic generator, so a failing seed replays.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }
}

fn crashed_error() -> io::Error {
    io::Error::other("simulated crash: the machine is down")
}

impl State {
    /// Counts a mutating operation; at the planned one, freezes the crash
    /// image and fails this and every later operation.
    fn tick(&mut self) -> io::Result<()> {
        if self.crash_image.is_some() {
            return Err(crashed_error());
        }
        self.ops += 1;
        if let Some((at, mode, seed)) = self.crash_plan
            && self.ops >= at
        {
            self.crash_image = Some(Box::new(self.crash(mode, seed)));
            return Err(crashed_error());
        }
        Ok(())
    }

    fn used_bytes(&self) -> u64 {
        self.inodes.values().map(|i| i.live.len() as u64).sum()
    }

    /// The state after a crash now.
    fn crash(&self, mode: CrashMode, seed: u64) -> State {
        let mut rng = Rng(seed);
        let mut names = self.durable_names.clone();
        let keep_meta = match mode {
            CrashMode::LoseAll => 0,
            _ => rng.below(self.pending_meta.len() as u64 + 1) as usize,
        };
        for op in &self.pending_meta[..keep_meta] {
            op.apply(&mut names);
        }
        let mut inodes = HashMap::new();
        for &ino in names.values() {
            if inodes.contains_key(&ino) {
                continue;
            }
            let Some(inode) = self.inodes.get(&ino) else {
                continue;
            };
            let bytes = surviving_bytes(inode, mode, &mut rng);
            inodes.insert(
                ino,
                Inode {
                    live: bytes.clone(),
                    durable: bytes,
                    pending: Vec::new(),
                },
            );
        }
        State {
            inodes,
            next_ino: self.next_ino,
            durable_names: names.clone(),
            names,
            dirs: self.dirs.clone(),
            capacity_bytes: self.capacity_bytes,
            ..State::default()
        }
    }
}

/// The durable bytes of `inode` plus the pending pieces `mode` keeps.
fn surviving_bytes(inode: &Inode, mode: CrashMode, rng: &mut Rng) -> Vec<u8> {
    let mut pieces: Vec<Pending> = Vec::new();
    for p in &inode.pending {
        match p {
            Pending::Write { pos, data } => {
                let mut at = 0usize;
                while at < data.len() {
                    // Cut at absolute sector bounds, as a device would.
                    let abs = *pos as usize + at;
                    let end = (abs / SECTOR_BYTES + 1) * SECTOR_BYTES - *pos as usize;
                    let end = end.min(data.len());
                    pieces.push(Pending::Write {
                        pos: abs as u64,
                        data: data[at..end].to_vec(),
                    });
                    at = end;
                }
            }
            Pending::SetLen(len) => pieces.push(Pending::SetLen(*len)),
        }
    }
    let keep: Vec<bool> = match mode {
        CrashMode::LoseAll => vec![false; pieces.len()],
        CrashMode::KeepPrefix => {
            let k = rng.below(pieces.len() as u64 + 1) as usize;
            (0..pieces.len()).map(|i| i < k).collect()
        }
        CrashMode::RandomSectors => (0..pieces.len()).map(|_| rng.next() & 1 == 1).collect(),
    };
    let mut bytes = inode.durable.clone();
    for (piece, _) in pieces.iter().zip(keep).filter(|(_, k)| *k) {
        match piece {
            Pending::Write { pos, data } => {
                let end = *pos as usize + data.len();
                if bytes.len() < end {
                    bytes.resize(end, 0);
                }
                bytes[*pos as usize..end].copy_from_slice(data);
            }
            Pending::SetLen(len) => bytes.resize(*len as usize, 0),
        }
    }
    bytes
}

/// A simulated disk. Cheap to clone: clones share the same state.
#[derive(Debug, Clone, Default)]
pub struct SimDisk {
    state: Arc<Mutex<State>>,
}

impl SimDisk {
    /// An empty disk with unlimited space.
    pub fn new() -> SimDisk {
        SimDisk::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The disk as a crash now would leave it (this disk is unaffected).
    pub fn crash(&self, mode: CrashMode, seed: u64) -> SimDisk {
        let image = self.lock().crash(mode, seed);
        SimDisk {
            state: Arc::new(Mutex::new(image)),
        }
    }

    /// Plans a crash just before the `op`-th mutating operation from now
    /// (writes, truncations, syncs, creations, renames, removals): that
    /// operation and every later one fail, and `crash_image` returns what
    /// the disk held.
    pub fn crash_at_op(&self, op: u64, mode: CrashMode, seed: u64) {
        let mut s = self.lock();
        let at = s.ops + op.max(1);
        s.crash_plan = Some((at, mode, seed));
    }

    /// The disk as the planned crash left it, once it has happened.
    pub fn crash_image(&self) -> Option<SimDisk> {
        let image = self.lock().crash_image.take()?;
        Some(SimDisk {
            state: Arc::new(Mutex::new(*image)),
        })
    }

    /// Mutating operations performed so far.
    pub fn op_count(&self) -> u64 {
        self.lock().ops
    }

    /// `sync_data` and `sync_dir` calls that succeeded so far.
    pub fn sync_count(&self) -> u64 {
        self.lock().syncs
    }

    /// Limits the bytes all files together may hold (`None`: unlimited).
    pub fn set_capacity_bytes(&self, capacity: Option<u64>) {
        self.lock().capacity_bytes = capacity;
    }

    /// Makes every `sync_data` fail with an I/O error while set.
    pub fn set_fail_syncs(&self, fail: bool) {
        self.lock().fail_syncs = fail;
    }

    /// The live bytes of the file at `path`.
    pub fn read_file(&self, path: &Path) -> io::Result<Vec<u8>> {
        let s = self.lock();
        let ino = s.names.get(path).ok_or_else(|| not_found(path))?;
        Ok(s.inodes
            .get(ino)
            .map(|i| i.live.clone())
            .unwrap_or_default())
    }

    /// Replaces the live bytes of the file at `path` and makes them durable
    /// (for tests that damage files on purpose).
    pub fn write_file(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        let mut s = self.lock();
        let ino = *s.names.get(path).ok_or_else(|| not_found(path))?;
        let inode = s.inodes.entry(ino).or_default();
        inode.live = bytes.to_vec();
        inode.durable = bytes.to_vec();
        inode.pending.clear();
        Ok(())
    }

    /// Names of the files below `dir`.
    pub fn file_names(&self, dir: &Path) -> Vec<String> {
        self.list_dir(dir).unwrap_or_default()
    }
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("{}: no such file", path.display()),
    )
}

#[derive(Debug)]
struct SimFile {
    state: Arc<Mutex<State>>,
    ino: u64,
}

impl SimFile {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl DiskFile for SimFile {
    fn len_bytes(&self) -> io::Result<u64> {
        let s = self.lock();
        Ok(s.inodes.get(&self.ino).map_or(0, |i| i.live.len() as u64))
    }

    fn read_exact_at(&self, buf: &mut [u8], pos: u64) -> io::Result<()> {
        let s = self.lock();
        let live = s
            .inodes
            .get(&self.ino)
            .map(|i| &i.live[..])
            .unwrap_or_default();
        let src = usize::try_from(pos)
            .ok()
            .and_then(|p| live.get(p..p.checked_add(buf.len())?))
            .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))?;
        buf.copy_from_slice(src);
        Ok(())
    }

    fn write_all_at(&self, buf: &[u8], pos: u64) -> io::Result<()> {
        let mut s = self.lock();
        s.tick()?;
        let used = s.used_bytes();
        let capacity = s.capacity_bytes;
        let inode = s.inodes.entry(self.ino).or_default();
        let end = pos as usize + buf.len();
        let growth = end.saturating_sub(inode.live.len()) as u64;
        let mut data = buf;
        let mut full = false;
        if let Some(cap) = capacity
            && used + growth > cap
        {
            // A partial write up to the limit, as a real full disk does.
            let room = cap.saturating_sub(used) as usize;
            let fits = (inode.live.len() + room)
                .saturating_sub(pos as usize)
                .min(buf.len());
            data = &buf[..fits];
            full = true;
        }
        let end = pos as usize + data.len();
        if inode.live.len() < end {
            inode.live.resize(end, 0);
        }
        inode.live[pos as usize..end].copy_from_slice(data);
        inode.pending.push(Pending::Write {
            pos,
            data: data.to_vec(),
        });
        if full {
            return Err(io::Error::from_raw_os_error(28));
        }
        Ok(())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        let mut s = self.lock();
        s.tick()?;
        let inode = s.inodes.entry(self.ino).or_default();
        inode.live.resize(len as usize, 0);
        inode.pending.push(Pending::SetLen(len));
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        let mut s = self.lock();
        s.tick()?;
        if s.fail_syncs {
            return Err(io::Error::other("simulated fsync failure"));
        }
        s.syncs += 1;
        let inode = s.inodes.entry(self.ino).or_default();
        inode.durable = inode.live.clone();
        inode.pending.clear();
        Ok(())
    }

    fn map(&self, len: u64) -> io::Result<Mapping> {
        let s = self.lock();
        let live = s
            .inodes
            .get(&self.ino)
            .map(|i| &i.live[..])
            .unwrap_or_default();
        let bytes = live
            .get(..len as usize)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "map past end of file"))?;
        Ok(Mapping::from_vec(bytes.to_vec()))
    }
}

struct SimLock {
    state: Arc<Mutex<State>>,
    dir: PathBuf,
}

impl Drop for SimLock {
    fn drop(&mut self) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        s.locks.remove(&self.dir);
    }
}

/// A simulated file as `mode` writes it: with `Direct`, behind the same
/// buffering and whole-block write-outs as on the real disk.
fn simulated_mode(file: Arc<dyn DiskFile>, mode: WriteMode) -> io::Result<Arc<dyn DiskFile>> {
    match mode {
        WriteMode::Buffered => Ok(file),
        WriteMode::Direct => Ok(Arc::new(DirectFile::simulated(file)?)),
    }
}

impl Disk for SimDisk {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        let mut s = self.lock();
        for d in dir.ancestors() {
            s.dirs.insert(d.to_path_buf());
        }
        Ok(())
    }

    fn list_dir(&self, dir: &Path) -> io::Result<Vec<String>> {
        let s = self.lock();
        if !s.dirs.contains(dir) {
            return Err(not_found(dir));
        }
        // Files and subdirectories, as a real directory lists them.
        Ok(s.names
            .keys()
            .chain(s.dirs.iter())
            .filter(|p| p.parent() == Some(dir))
            .filter_map(|p| p.file_name()?.to_str().map(str::to_owned))
            .collect())
    }

    fn create_new(&self, path: &Path) -> io::Result<Arc<dyn DiskFile>> {
        let mut s = self.lock();
        s.tick()?;
        if s.names.contains_key(path) {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                path.display().to_string(),
            ));
        }
        if !path.parent().is_some_and(|d| s.dirs.contains(d)) {
            return Err(not_found(path));
        }
        let ino = s.next_ino;
        s.next_ino += 1;
        s.inodes.insert(ino, Inode::default());
        s.names.insert(path.to_path_buf(), ino);
        s.pending_meta.push(MetaOp::Link {
            path: path.to_path_buf(),
            ino,
        });
        Ok(Arc::new(SimFile {
            state: Arc::clone(&self.state),
            ino,
        }))
    }

    fn open(&self, path: &Path) -> io::Result<Arc<dyn DiskFile>> {
        let s = self.lock();
        let ino = *s.names.get(path).ok_or_else(|| not_found(path))?;
        Ok(Arc::new(SimFile {
            state: Arc::clone(&self.state),
            ino,
        }))
    }

    fn create_new_with(&self, path: &Path, mode: WriteMode) -> io::Result<Arc<dyn DiskFile>> {
        simulated_mode(self.create_new(path)?, mode)
    }

    fn open_with(&self, path: &Path, mode: WriteMode) -> io::Result<Arc<dyn DiskFile>> {
        simulated_mode(self.open(path)?, mode)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let mut s = self.lock();
        s.tick()?;
        if s.names.remove(path).is_none() {
            return Err(not_found(path));
        }
        s.pending_meta.push(MetaOp::Unlink {
            path: path.to_path_buf(),
        });
        Ok(())
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut s = self.lock();
        s.tick()?;
        let ino = s.names.remove(from).ok_or_else(|| not_found(from))?;
        s.names.insert(to.to_path_buf(), ino);
        s.pending_meta.push(MetaOp::Rename {
            from: from.to_path_buf(),
            to: to.to_path_buf(),
            ino,
        });
        Ok(())
    }

    fn hard_link(&self, existing: &Path, new: &Path) -> io::Result<()> {
        let mut s = self.lock();
        s.tick()?;
        let ino = *s.names.get(existing).ok_or_else(|| not_found(existing))?;
        if s.names.contains_key(new) {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                new.display().to_string(),
            ));
        }
        if !new.parent().is_some_and(|d| s.dirs.contains(d)) {
            return Err(not_found(new));
        }
        s.names.insert(new.to_path_buf(), ino);
        s.pending_meta.push(MetaOp::Link {
            path: new.to_path_buf(),
            ino,
        });
        Ok(())
    }

    fn remove_dir(&self, dir: &Path) -> io::Result<()> {
        let mut s = self.lock();
        s.tick()?;
        if !s.dirs.contains(dir) {
            return Err(not_found(dir));
        }
        let busy = s.names.keys().any(|p| p.starts_with(dir))
            || s.dirs.iter().any(|d| d != dir && d.starts_with(dir));
        if busy {
            return Err(io::Error::new(
                io::ErrorKind::DirectoryNotEmpty,
                dir.display().to_string(),
            ));
        }
        s.dirs.remove(dir);
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut s = self.lock();
        s.tick()?;
        s.syncs += 1;
        let pending = std::mem::take(&mut s.pending_meta);
        let mut rest = Vec::new();
        for op in pending {
            if op.touches_dir(dir) {
                op.apply(&mut s.durable_names);
            } else {
                rest.push(op);
            }
        }
        s.pending_meta = rest;
        Ok(())
    }

    fn lock_dir(&self, dir: &Path) -> io::Result<Box<dyn Any + Send + Sync>> {
        let mut s = self.lock();
        if !s.locks.insert(dir.to_path_buf()) {
            return Err(io::Error::from(io::ErrorKind::WouldBlock));
        }
        Ok(Box::new(SimLock {
            state: Arc::clone(&self.state),
            dir: dir.to_path_buf(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsynced_writes_and_names_are_lost_and_synced_ones_kept() {
        let disk = SimDisk::new();
        let dir = Path::new("/d");
        disk.create_dir_all(dir).expect("mkdir");
        let a = disk.create_new(&dir.join("a")).expect("create");
        a.write_all_at(b"durable", 0).expect("write");
        a.sync_data().expect("sync");
        disk.sync_dir(dir).expect("sync dir");
        a.write_all_at(b"-lost", 7).expect("write");
        disk.create_new(&dir.join("b")).expect("create b");

        let after = disk.crash(CrashMode::LoseAll, 1);
        assert_eq!(after.read_file(&dir.join("a")).expect("a"), b"durable");
        assert!(
            after.read_file(&dir.join("b")).is_err(),
            "b's name was never synced"
        );
        // The original disk is untouched by taking an image.
        assert_eq!(disk.read_file(&dir.join("a")).expect("a"), b"durable-lost");
    }

    #[test]
    fn random_sectors_can_keep_a_later_sector_and_lose_an_earlier_one() {
        let disk = SimDisk::new();
        let dir = Path::new("/d");
        disk.create_dir_all(dir).expect("mkdir");
        let f = disk.create_new(&dir.join("f")).expect("create");
        disk.sync_dir(dir).expect("sync dir");
        f.write_all_at(&[1u8; 2 * SECTOR_BYTES], 0).expect("write");
        let seen = (0..64u64)
            .map(|seed| {
                disk.crash(CrashMode::RandomSectors, seed)
                    .read_file(&dir.join("f"))
                    .expect("f")
            })
            .any(|b| b.len() == 2 * SECTOR_BYTES && b[0] == 0 && b[SECTOR_BYTES] == 1);
        assert!(
            seen,
            "a hole before surviving data is a state a real disk can produce"
        );
    }

    #[test]
    fn a_planned_crash_freezes_the_image_and_fails_later_operations() {
        let disk = SimDisk::new();
        let dir = Path::new("/d");
        disk.create_dir_all(dir).expect("mkdir");
        disk.crash_at_op(2, CrashMode::LoseAll, 0);
        let f = disk.create_new(&dir.join("f")).expect("op 1 runs");
        assert!(f.write_all_at(b"x", 0).is_err(), "op 2 is the crash");
        assert!(disk.sync_dir(dir).is_err(), "the machine stays down");
        let image = disk.crash_image().expect("crashed");
        assert!(image.file_names(dir).is_empty());
    }

    #[test]
    fn a_full_disk_writes_what_fits_and_reports_enospc() {
        let disk = SimDisk::new();
        let dir = Path::new("/d");
        disk.create_dir_all(dir).expect("mkdir");
        disk.set_capacity_bytes(Some(10));
        let f = disk.create_new(&dir.join("f")).expect("create");
        let err = f.write_all_at(&[7u8; 16], 0).expect_err("full");
        assert_eq!(err.raw_os_error(), Some(28));
        assert_eq!(f.len_bytes().expect("len"), 10);
    }
}
