//! The engine's only door to the file system, so that tests can swap the
//! real disk ([`FileDisk`]) for a simulated one that loses un-fsynced bytes
//! at a simulated crash (`sim::SimDisk`, feature `sim`).
//!
//! Contract every implementation keeps (and the engine relies on):
//! - `write_all_at` and `set_len` are visible to later reads and `map`s at
//!   once, but survive a crash only after `sync_data` on that file.
//! - A new name (`create_new`, `rename`) or a removed one survives a crash
//!   only after `sync_dir` on its directory; `rename` is atomic.
//! - A mapping stays readable after its file is renamed over or removed;
//!   the engine never shrinks a file below what a live mapping covers.

use std::any::Any;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};

use bytes::Bytes;

pub(crate) mod aligned;
pub(crate) mod direct;

/// How a log's segment data files are written (`LogConfig::write_mode`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum WriteMode {
    /// Through the page cache, one `pwrite` per append.
    #[default]
    Buffered,
    /// Appends gathered in memory and written with `O_DIRECT` when the
    /// file is synced (`disk/direct.rs`). Bytes after a write's end, up to
    /// the next 4 KiB boundary, may read as zeros afterwards. File
    /// systems without `O_DIRECT` get buffered writes; the simulated disk
    /// runs the same buffering and write-outs over its own files.
    Direct,
}

/// A read-only view of the first `len` bytes of a file, shared by every
/// `Bytes` handed out from it.
///
/// The address range behind it (its capacity) may run past the file's end,
/// so that a growing file is mapped once, not once per append: unmapping
/// costs a TLB shootdown on every core, and a tail-following reader would
/// otherwise pay one per fetch. Only `[0, len)` is ever turned into a
/// slice, and `len` only grows to bytes the file is known to hold.
#[derive(Clone)]
pub struct Mapping {
    inner: Arc<MappedBytes>,
    len: usize,
}

enum MappedBytes {
    Mmap(memmap2::Mmap),
    Owned(Vec<u8>),
}

impl MappedBytes {
    /// Bytes of address space behind the mapping.
    fn capacity(&self) -> usize {
        match self {
            MappedBytes::Mmap(m) => m.len(),
            MappedBytes::Owned(v) => v.len(),
        }
    }

    /// The first `len` bytes; `len` is at most the capacity and, for a
    /// file mapping, at most what the file holds.
    #[allow(unsafe_code)]
    fn prefix(&self, len: usize) -> &[u8] {
        match self {
            // Not `Deref`: that would make a slice of the whole range,
            // including pages past the file's end.
            MappedBytes::Mmap(m) => {
                assert!(len <= m.len(), "mapping prefix past its capacity");
                // SAFETY: `[0, len)` lies inside the mapped range (checked
                // above) and inside the file (the invariant of `Mapping`),
                // and lives as long as `self` holds the mapping.
                unsafe { std::slice::from_raw_parts(m.as_ptr(), len) }
            }
            MappedBytes::Owned(v) => &v[..len],
        }
    }
}

/// Owner of a mapping inside `Bytes`: keeps the mapping alive while any
/// slice of it is.
struct MappingOwner {
    inner: Arc<MappedBytes>,
    len: usize,
}

impl AsRef<[u8]> for MappingOwner {
    fn as_ref(&self) -> &[u8] {
        self.inner.prefix(self.len)
    }
}

impl Mapping {
    /// A mapping of bytes held in memory (the simulated disk, empty files).
    pub fn from_vec(bytes: Vec<u8>) -> Mapping {
        let len = bytes.len();
        Mapping {
            inner: Arc::new(MappedBytes::Owned(bytes)),
            len,
        }
    }

    /// The mapped bytes.
    pub fn as_slice(&self) -> &[u8] {
        self.inner.prefix(self.len)
    }

    /// Length of the mapping.
    pub fn len(&self) -> u64 {
        self.len as u64
    }

    /// Whether the mapping is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The whole mapping as `Bytes`; slices of it are zero-copy.
    pub fn to_bytes(&self) -> Bytes {
        Bytes::from_owner(MappingOwner {
            inner: Arc::clone(&self.inner),
            len: self.len,
        })
    }

    /// A handle that tells, later, whether any view of this mapping (this
    /// value, its clones, or `Bytes` made from it) is still alive.
    pub(crate) fn watch(&self) -> MappingWatch {
        MappingWatch(Arc::downgrade(&self.inner))
    }

    /// The same mapping grown to `len` bytes without a new `mmap`, if its
    /// capacity reaches that far. The caller has written the file up to
    /// `len` (reading a mapped page past a file's end is `SIGBUS`).
    pub(crate) fn grown_to(&self, len: u64) -> Option<Mapping> {
        let len = usize::try_from(len).ok()?;
        (len >= self.len && len <= self.inner.capacity()).then(|| Mapping {
            inner: Arc::clone(&self.inner),
            len,
        })
    }
}

/// Whether a mapping's bytes are still visible to anyone: a file may be
/// written over (segment recycling) only once no view of it is.
#[derive(Debug, Clone)]
pub(crate) struct MappingWatch(Weak<MappedBytes>);

impl MappingWatch {
    /// Whether a view of the mapping is still alive.
    pub(crate) fn in_use(&self) -> bool {
        self.0.strong_count() > 0
    }
}

impl fmt::Debug for Mapping {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mapping")
            .field("len", &self.len)
            .field("capacity", &self.inner.capacity())
            .finish()
    }
}

/// One open file.
pub trait DiskFile: Send + Sync + fmt::Debug {
    /// Current length of the file. A `WriteMode::Direct` file's may run
    /// past its furthest write to the end of that write's block (zero
    /// padding) until `set_len` cuts it.
    fn len_bytes(&self) -> io::Result<u64>;
    /// Reads exactly `buf.len()` bytes at `pos`.
    fn read_exact_at(&self, buf: &mut [u8], pos: u64) -> io::Result<()>;
    /// Writes all of `buf` at `pos`, extending the file if needed.
    fn write_all_at(&self, buf: &[u8], pos: u64) -> io::Result<()>;
    /// Truncates or extends the file to `len` bytes.
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// Makes every write to this file durable (`fdatasync`).
    fn sync_data(&self) -> io::Result<()>;
    /// Starts writing back the dirty pages of `[from, from + len)` without
    /// waiting and without a device flush: a hint that spreads the disk's
    /// work, so a later `sync_data` finds little left. Durability is
    /// unchanged (only `sync_data` promises anything); implementations may
    /// do nothing.
    fn start_writeback(&self, from: u64, len: u64) -> io::Result<()> {
        let _ = (from, len);
        Ok(())
    }
    /// Where this file's newest bytes begin that are held only in memory
    /// (`WriteMode::Direct`'s pending appends), if any: `read_exact_at`
    /// copies them from memory, while a `map` reaching them first writes
    /// them out. Always `None` for a buffered file.
    fn memory_from(&self) -> Option<u64> {
        None
    }
    /// Maps the first `len` bytes (at most the file's length) read-only.
    fn map(&self, len: u64) -> io::Result<Mapping>;
    /// Maps the first `len` bytes read-only, reserving address space for
    /// `capacity` bytes (≥ `len`) so that the mapping can grow with the
    /// file ([`Mapping::grown_to`]). Implementations may reserve nothing.
    fn map_growable(&self, len: u64, capacity: u64) -> io::Result<Mapping> {
        let _ = capacity;
        self.map(len)
    }
}

/// A file system.
pub trait Disk: Send + Sync + fmt::Debug {
    /// Creates a directory and its parents.
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// Names of the entries of a directory.
    fn list_dir(&self, dir: &Path) -> io::Result<Vec<String>>;
    /// Creates a file that must not exist yet, open for reading and writing.
    fn create_new(&self, path: &Path) -> io::Result<Arc<dyn DiskFile>>;
    /// Opens an existing file for reading and writing.
    fn open(&self, path: &Path) -> io::Result<Arc<dyn DiskFile>>;
    /// `create_new` for a segment data file, written as `mode` says.
    fn create_new_with(&self, path: &Path, mode: WriteMode) -> io::Result<Arc<dyn DiskFile>>;
    /// `open` for a segment data file, written as `mode` says.
    fn open_with(&self, path: &Path, mode: WriteMode) -> io::Result<Arc<dyn DiskFile>>;
    /// Removes a file.
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// Atomically renames `from` to `to`, replacing `to`.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Removes an empty directory.
    fn remove_dir(&self, dir: &Path) -> io::Result<()>;
    /// Gives the file at `existing` a second name, `new` (a hard link).
    fn hard_link(&self, existing: &Path, new: &Path) -> io::Result<()>;
    /// Makes the directory's entries (creations, renames, removals) durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// Takes an exclusive lock on the directory for the life of the guard,
    /// or fails with `ErrorKind::WouldBlock` if someone else holds it.
    fn lock_dir(&self, dir: &Path) -> io::Result<Box<dyn Any + Send + Sync>>;
}

/// The real file system.
#[derive(Debug, Default, Clone, Copy)]
pub struct FileDisk;

#[derive(Debug)]
struct RealFile {
    file: File,
}

impl DiskFile for RealFile {
    fn len_bytes(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }

    fn read_exact_at(&self, buf: &mut [u8], pos: u64) -> io::Result<()> {
        self.file.read_exact_at(buf, pos)
    }

    fn write_all_at(&self, buf: &[u8], pos: u64) -> io::Result<()> {
        self.file.write_all_at(buf, pos)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.file.set_len(len)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    #[cfg(target_os = "linux")]
    #[allow(unsafe_code)]
    fn start_writeback(&self, from: u64, len: u64) -> io::Result<()> {
        use std::os::fd::AsRawFd;
        let (Ok(from), Ok(len)) = (i64::try_from(from), i64::try_from(len)) else {
            return Ok(()); // past any real file: nothing to write back
        };
        // SAFETY: the descriptor is open for as long as `self.file` lives,
        // and SYNC_FILE_RANGE_WRITE only starts I/O on the file's pages.
        let rc = unsafe {
            libc::sync_file_range(
                self.file.as_raw_fd(),
                from,
                len,
                libc::SYNC_FILE_RANGE_WRITE,
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    fn map(&self, len: u64) -> io::Result<Mapping> {
        self.map_growable(len, len)
    }

    #[allow(unsafe_code)]
    fn map_growable(&self, len: u64, capacity: u64) -> io::Result<Mapping> {
        if len == 0 && capacity == 0 {
            // mmap rejects empty mappings.
            return Ok(Mapping::from_vec(Vec::new()));
        }
        let file_len = self.len_bytes()?;
        if len > file_len || capacity < len {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("cannot map {len} bytes ({capacity} reserved) of a {file_len}-byte file"),
            ));
        }
        let too_large = || io::Error::new(io::ErrorKind::InvalidInput, "mapping too large");
        let len = usize::try_from(len).map_err(|_| too_large())?;
        let capacity = usize::try_from(capacity).map_err(|_| too_large())?;
        // SAFETY: a mapping is undefined behaviour only if the mapped bytes
        // change under it or the file shrinks below it. Readers only ever
        // see `[0, len)` (see `Mapping`), and the engine writes a segment
        // only past every readable length (appends go to the end) and never
        // shrinks a file region a mapping covers: `truncate` writes a new
        // file and renames it over the old one instead, which leaves
        // existing mappings on the old inode. Other processes are kept out
        // by the directory lock. Pages of the range past the file's end are
        // never touched until the file holds them (`Mapping::grown_to`).
        // A recycled file (a removed segment's, written over from position
        // 0) is reused only once no view of any mapping of it is alive
        // (`MappingWatch`), and its new mappings, too, expose only what the
        // new segment wrote; cutting it at a roll keeps every readable byte.
        let mmap = unsafe { memmap2::MmapOptions::new().len(capacity).map(&self.file)? };
        Ok(Mapping {
            inner: Arc::new(MappedBytes::Mmap(mmap)),
            len,
        })
    }
}

impl Disk for FileDisk {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        fs::create_dir_all(dir)
    }

    fn list_dir(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            if let Ok(name) = entry.file_name().into_string() {
                names.push(name);
            }
        }
        Ok(names)
    }

    fn create_new(&self, path: &Path) -> io::Result<Arc<dyn DiskFile>> {
        self.create_new_with(path, WriteMode::Buffered)
    }

    fn open(&self, path: &Path) -> io::Result<Arc<dyn DiskFile>> {
        self.open_with(path, WriteMode::Buffered)
    }

    fn create_new_with(&self, path: &Path, mode: WriteMode) -> io::Result<Arc<dyn DiskFile>> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)?;
        with_mode(file, path, mode)
    }

    fn open_with(&self, path: &Path, mode: WriteMode) -> io::Result<Arc<dyn DiskFile>> {
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        with_mode(file, path, mode)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to)
    }

    fn remove_dir(&self, dir: &Path) -> io::Result<()> {
        fs::remove_dir(dir)
    }

    fn hard_link(&self, existing: &Path, new: &Path) -> io::Result<()> {
        fs::hard_link(existing, new)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }

    fn lock_dir(&self, dir: &Path) -> io::Result<Box<dyn Any + Send + Sync>> {
        let path: PathBuf = dir.join("LOCK");
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)?;
        match file.try_lock() {
            Ok(()) => Ok(Box::new(file)),
            Err(fs::TryLockError::WouldBlock) => Err(io::Error::from(io::ErrorKind::WouldBlock)),
            Err(fs::TryLockError::Error(e)) => Err(e),
        }
    }
}

/// `file` (open at `path`) as a `DiskFile` written as `mode` says; direct
/// writes fall back to buffered ones where the file system refuses them.
fn with_mode(file: File, path: &Path, mode: WriteMode) -> io::Result<Arc<dyn DiskFile>> {
    if mode == WriteMode::Direct {
        match direct::open_direct(path) {
            Ok(fd) => return Ok(Arc::new(direct::DirectFile::new(file, fd)?)),
            Err(e) => {
                // Once per process: a node opens a file per partition.
                static WARNED: std::sync::Once = std::sync::Once::new();
                WARNED.call_once(|| {
                    tracing::warn!(file = %path.display(), error = %e, "O_DIRECT unavailable; writing through the page cache (warned once)");
                });
            }
        }
    }
    Ok(Arc::new(RealFile { file }))
}

/// Reads a whole small file (seals, indexes).
pub(crate) fn read_small_file(disk: &dyn Disk, path: &Path) -> io::Result<Vec<u8>> {
    let file = disk.open(path)?;
    let len = file.len_bytes()?;
    // Seal and index files are small; refuse anything absurd before
    // allocating (a damaged file system could report any length).
    if len > 64 * 1024 * 1024 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "{} is {len} bytes, too large for a seal or index",
                path.display()
            ),
        ));
    }
    let mut buf = vec![0u8; len as usize];
    file.read_exact_at(&mut buf, 0)?;
    Ok(buf)
}

/// Replaces the file at `path` with `bytes`: a temporary file is written
/// and renamed over `path`, so readers see the old file or the new one.
/// **Not fsynced**: after a crash the file may be missing, empty or partial,
/// so use it only for files whose reader checks them (CRC) and can do
/// without them (seals, indexes). An fsync here would force a file-system
/// journal commit, which on ext4 waits for other files' dirty data too.
pub(crate) fn replace_file(disk: &dyn Disk, path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = tmp_path(path);
    match disk.remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let file = disk.create_new(&tmp)?;
    file.write_all_at(bytes, 0)?;
    disk.rename(&tmp, path)
}

/// The temporary name used while writing `path`.
pub(crate) fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(".tmp");
    path.with_file_name(name)
}

/// Removes a file, treating "already gone" as success.
pub(crate) fn remove_if_exists(disk: &dyn Disk, path: &Path) -> io::Result<()> {
    match disk.remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writeback_hints_accept_any_range_and_change_no_bytes() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("f");
        let file = FileDisk.create_new(&path).expect("create");
        file.write_all_at(b"hello", 0).expect("write");
        for (from, len) in [(0, 5), (0, u64::MAX >> 1), (3, 0), (u64::MAX, 1)] {
            file.start_writeback(from, len).expect("hint");
        }
        let mut back = [0u8; 5];
        file.read_exact_at(&mut back, 0).expect("read");
        assert_eq!(&back, b"hello");
    }

    #[test]
    fn a_growable_mapping_grows_with_the_file_and_keeps_old_views() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = FileDisk.create_new(&dir.path().join("f")).expect("create");
        file.write_all_at(&[1; 100], 0).expect("write");
        let first = file.map_growable(100, 4096).expect("map");
        let before = first.to_bytes();

        file.write_all_at(&[2; 100], 100).expect("write");
        let grown = first.grown_to(200).expect("within the reserve");
        assert_eq!(grown.len(), 200);
        assert_eq!(&grown.as_slice()[..100], &[1; 100][..]);
        assert_eq!(&grown.as_slice()[100..], &[2; 100][..]);
        // A view handed out earlier keeps its length.
        assert_eq!(before.len(), 100);
        // Past the reserve, and backwards, a new mapping is needed.
        assert!(first.grown_to(4097).is_none());
        assert!(grown.grown_to(50).is_none());
    }

    #[test]
    fn a_mapping_never_starts_past_the_file_or_its_reserve() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = FileDisk.create_new(&dir.path().join("f")).expect("create");
        file.write_all_at(&[1; 10], 0).expect("write");
        assert!(file.map(11).is_err());
        assert!(file.map_growable(10, 5).is_err());
        assert_eq!(file.map_growable(0, 4096).expect("map").len(), 0);
    }
}
