//! A segment file whose appends bypass the page cache (`WriteMode::Direct`).
//!
//! Why: on the ext4 virtio disk this project measures on, a buffered
//! append followed by `fdatasync` is the slowest way to make bytes
//! durable; the same bytes written with `O_DIRECT` went 1.7–1.8× faster
//! beside a partition writer (docs/benchmarks.md, "The disk's write
//! paths"). The node WAL is that append-then-fsync loop.
//!
//! How: appends are copied into an aligned in-memory tail and written out
//! in one `O_DIRECT` write when the file is synced (or read, mapped, cut,
//! or the tail grows past `PENDING_BYTES_MAX`). A write-out covers whole
//! `ALIGN_BYTES` blocks: it starts at the block holding the first byte not
//! yet written out (so a partial last block is written again, whole, by
//! the next write-out) and pads its last block with zeros. Reads, maps,
//! `set_len` and `fdatasync` go through a second, ordinary descriptor; the
//! kernel drops the page cache over every range a direct write covers, so
//! reads through that descriptor and its mappings see the new bytes.
//!
//! Invariants:
//! - The file holds every byte below `Tail::written`, except those of a
//!   write-out under way (`Tail::in_flight`), whose buffer holds them
//!   until its write returns; the tail buffer holds `[Tail::start,
//!   Tail::end())`, and `[written, end)` is pending.
//! - Write-outs run one at a time (the `out` lock), oldest bytes first, so
//!   a block written twice ends with its newer contents.
//! - The file's length is the furthest write or `set_len`, or up to the
//!   end of the block that write ends in: a write-out's padding stays in
//!   the file until a `set_len` cuts it (`DiskFile::len_bytes` says so).
//!   Cutting it at every write-out would cost an `ftruncate`, and make
//!   each group-commit `fdatasync` also commit a size change to the
//!   journal (a third fewer syncs per second, docs/benchmarks.md). The
//!   padding may zero bytes after a write's end up to the next block
//!   boundary; the engine never reads past what it wrote, cuts the padding
//!   before it seals a segment (`Log::roll`), and recovery cuts it from an
//!   unsealed one.
//! - Lock order: `out`, then `tail`.
//!
//! Over a simulated file (`DirectFile::simulated`) the write-outs are
//! ordinary writes of the same whole blocks, so the crash simulations
//! check this module's fsync discipline: a sync must write out before it
//! fsyncs.
//!
//! Reads of bytes still held in memory (the pending ones, the head of the
//! block they start in, and those of a write-out under way) are copied
//! from memory, without a write-out and without waiting for one in
//! progress: a reader following a log's tail never reaches the device.
//! `DiskFile::memory_from` tells a reader where those bytes begin, so
//! that it maps only what precedes them.
//!
//! Failure: a failed write-out is sticky: every later write, read, map or
//! sync of the file fails, so the log's flush poisons it (as a failed
//! `fdatasync` does). A file system that refuses the alignment (`EINVAL`)
//! gets ordinary writes from then on, with a warning.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use super::aligned::{self, ALIGN_BYTES, AlignedBuf, align_up};
use super::{DiskFile, Mapping, RealFile};

/// Pending bytes past which an append writes the tail out at once, without
/// waiting for a sync: bounds the memory one file holds.
pub(crate) const PENDING_BYTES_MAX: usize = 8 * 1024 * 1024;

/// Pending bytes below which `start_writeback` leaves them in memory: a
/// slow log's write-outs stay large (and its readers in memory longer).
const WRITEBACK_BYTES_MIN: u64 = 1024 * 1024;

fn align_down(pos: u64) -> u64 {
    pos - pos % ALIGN_BYTES as u64
}

/// The bytes appended since the last write-out, and the block they start in.
#[derive(Default)]
struct Tail {
    /// File position of `buf`'s first byte (block-aligned); `None` until
    /// the first write, and again after a `set_len`.
    start: Option<u64>,
    buf: AlignedBuf,
    /// Bytes below this position are in the file.
    written: u64,
    /// The write-out under way: its bytes are not all in the file yet,
    /// and readers copy them from here.
    in_flight: Option<InFlight>,
}

/// A write-out under way (see `Tail::in_flight`).
struct InFlight {
    /// File position of `buf`'s first byte (block-aligned).
    start: u64,
    /// The first of its bytes that were pending (the rest of its first
    /// block was in the file already).
    pending_from: u64,
    buf: Arc<AlignedBuf>,
}

impl Tail {
    /// One past the last byte the tail holds, if a run of appends is open.
    fn end(&self) -> Option<u64> {
        self.start.map(|s| s + self.buf.len as u64)
    }

    fn pending_bytes(&self) -> u64 {
        self.end().map_or(0, |e| e - self.written)
    }
}

/// State of the write-outs, held for the whole of one.
struct Out {
    /// The file's length as the kernel has it.
    file_len: u64,
    /// The buffer of the previous write-out, reused by the next.
    spare: AlignedBuf,
    /// Set by a write-out that failed: the pending bytes are lost.
    failed: Option<(io::ErrorKind, String)>,
    /// The file system refused an aligned direct write: use `file`.
    buffered: bool,
}

/// Opens `path` for `O_DIRECT` writes; fails where the file system does
/// not take them.
pub(crate) fn open_direct(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
}

/// A segment file written with `O_DIRECT` (see the module docs).
pub(crate) struct DirectFile {
    /// Reads, maps, `set_len`, `fdatasync`, and writes once `buffered`.
    file: Arc<dyn DiskFile>,
    /// Opened with `O_DIRECT`: the write-outs. `None` over a simulated
    /// file, where the same whole-block write-outs go through `file`.
    direct: Option<File>,
    out: Mutex<Out>,
    tail: Mutex<Tail>,
    /// `out.failed.is_some()`, readable without waiting for a write-out.
    failed: AtomicBool,
}

impl std::fmt::Debug for DirectFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DirectFile").finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl DirectFile {
    /// Wraps `file` (open for reading and writing) and `direct`, a
    /// descriptor of the same file from `open_direct`.
    pub(crate) fn new(file: File, direct: File) -> io::Result<DirectFile> {
        DirectFile::over(Arc::new(RealFile { file }), Some(direct))
    }

    /// The buffering and whole-block write-outs of a direct file over any
    /// file: what the simulated disk gives for `WriteMode::Direct`, so
    /// that its crashes test them too.
    #[cfg(any(test, feature = "sim"))]
    pub(crate) fn simulated(file: Arc<dyn DiskFile>) -> io::Result<DirectFile> {
        DirectFile::over(file, None)
    }

    fn over(file: Arc<dyn DiskFile>, direct: Option<File>) -> io::Result<DirectFile> {
        let file_len = file.len_bytes()?;
        Ok(DirectFile {
            file,
            direct,
            out: Mutex::new(Out {
                file_len,
                spare: AlignedBuf::default(),
                failed: None,
                buffered: false,
            }),
            tail: Mutex::new(Tail::default()),
            failed: AtomicBool::new(false),
        })
    }

    fn check(out: &Out) -> io::Result<()> {
        match &out.failed {
            None => Ok(()),
            Some((kind, message)) => Err(io::Error::new(
                *kind,
                format!("an earlier write-out of this file failed: {message}"),
            )),
        }
    }

    /// Writes every pending byte to the file (no fsync).
    fn write_out(&self) -> io::Result<()> {
        let mut out = lock(&self.out);
        self.write_out_locked(&mut out)
    }

    fn write_out_locked(&self, out: &mut Out) -> io::Result<()> {
        Self::check(out)?;
        let (start, end, buf) = {
            let mut tail = lock(&self.tail);
            let (Some(start), Some(end)) = (tail.start, tail.end()) else {
                return Ok(());
            };
            if tail.written == end {
                return Ok(());
            }
            // The next run starts with the block this one ends in, which
            // the next write-out rewrites whole.
            let keep_from = align_down(end);
            let mut next = std::mem::take(&mut out.spare);
            next.clear();
            let kept = (keep_from - start) as usize;
            next.extend_from_slice(&tail.buf.as_slice()[kept..]);
            let mut buf = std::mem::replace(&mut tail.buf, next);
            buf.pad();
            let buf = Arc::new(buf);
            tail.in_flight = Some(InFlight {
                start,
                pending_from: tail.written,
                buf: Arc::clone(&buf),
            });
            tail.start = Some(keep_from);
            tail.written = end;
            (start, end, buf)
        };
        let result = self.write_at(out, &buf, start, end);
        if let Err(e) = &result {
            out.failed = Some((e.kind(), e.to_string()));
            self.failed.store(true, Ordering::Release);
        }
        lock(&self.tail).in_flight = None;
        // Readers copy from the buffer under the tail lock and never keep
        // a handle, so this is its last one.
        if let Ok(buf) = Arc::try_unwrap(buf) {
            out.spare = buf;
        }
        result
    }

    /// Writes `buf` (the bytes of `[start, end)`) to the file and keeps
    /// the file's length where the contract puts it.
    fn write_at(&self, out: &mut Out, buf: &AlignedBuf, start: u64, end: u64) -> io::Result<()> {
        if !out.buffered {
            let written = match &self.direct {
                Some(direct) => direct.write_all_at(buf.padded(), start),
                None => self.file.write_all_at(buf.padded(), start),
            };
            match written {
                Ok(()) => {
                    let padded_end = start + align_up(buf.len) as u64;
                    out.file_len = out.file_len.max(padded_end);
                    return Ok(());
                }
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                    tracing::warn!(error = %e, "the file system refused an aligned O_DIRECT write; writing through the page cache instead");
                    out.buffered = true;
                }
                Err(e) => return Err(e),
            }
        }
        self.file.write_all_at(buf.as_slice(), start)?;
        out.file_len = out.file_len.max(end);
        Ok(())
    }

    /// Copies `[pos, pos + buf.len())` from memory if the tail, or the
    /// buffer of a write-out under way followed by the tail, holds all of
    /// it; returns whether it did. (The two overlap by the block the
    /// write-out ends in, which both hold.)
    fn read_from_memory(&self, buf: &mut [u8], pos: u64) -> bool {
        let Some(read_end) = pos.checked_add(buf.len() as u64) else {
            return false;
        };
        let tail = lock(&self.tail);
        let copy = |to: &mut [u8], from: &AlignedBuf, from_start: u64, at: u64| {
            let i = (at - from_start) as usize;
            to.copy_from_slice(&from.as_slice()[i..i + to.len()]);
        };
        let tail_range = tail.start.zip(tail.end());
        if let Some((start, end)) = tail_range
            && pos >= start
            && read_end <= end
        {
            copy(buf, &tail.buf, start, pos);
            return true;
        }
        let Some(InFlight {
            start: f_start,
            buf: f_buf,
            ..
        }) = &tail.in_flight
        else {
            return false;
        };
        let f_end = f_start + f_buf.len as u64;
        if pos < *f_start {
            return false;
        }
        if read_end <= f_end {
            copy(buf, f_buf, *f_start, pos);
            return true;
        }
        // The rest must come from the tail, which starts inside the
        // write-out's last block.
        match tail_range {
            Some((start, end)) if start <= f_end && start > pos && read_end <= end => {
                let (low, high) = buf.split_at_mut((start - pos) as usize);
                copy(low, f_buf, *f_start, pos);
                copy(high, &tail.buf, start, start);
                true
            }
            _ => false,
        }
    }

    /// Writes out whatever of `[pos, pos + len)` is still pending.
    fn write_out_overlapping(&self, pos: u64, len: u64) -> io::Result<()> {
        let pending = {
            let tail = lock(&self.tail);
            tail.end()
                .is_some_and(|end| tail.written < end && pos.saturating_add(len) > tail.written)
        };
        if pending {
            self.write_out()
        } else {
            Self::check(&lock(&self.out))
        }
    }
}

impl DiskFile for DirectFile {
    fn len_bytes(&self) -> io::Result<u64> {
        let out = lock(&self.out);
        Self::check(&out)?;
        let tail = lock(&self.tail);
        Ok(tail.end().map_or(out.file_len, |e| e.max(out.file_len)))
    }

    fn read_exact_at(&self, buf: &mut [u8], pos: u64) -> io::Result<()> {
        if self.read_from_memory(buf, pos) {
            if self.failed.load(Ordering::Acquire) {
                return Self::check(&lock(&self.out));
            }
            return Ok(());
        }
        self.write_out_overlapping(pos, buf.len() as u64)?;
        self.file.read_exact_at(buf, pos)
    }

    fn start_writeback(&self, _from: u64, _len: u64) -> io::Result<()> {
        // The pending bytes are the only ones not yet on their way to the
        // device; writing them out here, off the appender's path, keeps
        // the write-outs of `PENDING_BYTES_MAX` (taken by an append) rare.
        // Fewer than `WRITEBACK_BYTES_MIN` wait for more.
        if lock(&self.tail).pending_bytes() < WRITEBACK_BYTES_MIN {
            return Ok(());
        }
        self.write_out()
    }

    fn memory_from(&self) -> Option<u64> {
        let tail = lock(&self.tail);
        if let Some(f) = &tail.in_flight {
            return Some(f.pending_from);
        }
        let end = tail.end()?;
        (tail.written < end).then_some(tail.written)
    }

    fn write_all_at(&self, buf: &[u8], pos: u64) -> io::Result<()> {
        {
            let mut tail = lock(&self.tail);
            if tail.end() == Some(pos) {
                tail.buf.extend_from_slice(buf);
                if tail.pending_bytes() <= PENDING_BYTES_MAX as u64 {
                    return Ok(());
                }
                drop(tail);
                return self.write_out();
            }
        }
        // Not an append to the open run: write that run out and start a
        // new one at `pos`, from the head of its block as the file has it.
        let mut out = lock(&self.out);
        self.write_out_locked(&mut out)?;
        let start = align_down(pos);
        let head_len = (pos - start) as usize;
        let mut head = vec![0u8; head_len];
        let present = out.file_len.saturating_sub(start).min(head_len as u64) as usize;
        self.file.read_exact_at(&mut head[..present], start)?;
        let mut tail = lock(&self.tail);
        tail.buf.clear();
        tail.buf.extend_from_slice(&head);
        tail.buf.extend_from_slice(buf);
        tail.start = Some(start);
        tail.written = pos;
        drop(tail);
        if buf.len() > PENDING_BYTES_MAX {
            return self.write_out_locked(&mut out);
        }
        Ok(())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        let mut out = lock(&self.out);
        self.write_out_locked(&mut out)?;
        self.file.set_len(len)?;
        out.file_len = len;
        let mut tail = lock(&self.tail);
        tail.start = None;
        tail.buf.clear();
        tail.written = 0;
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        self.write_out()?;
        self.file.sync_data()
    }

    fn map(&self, len: u64) -> io::Result<Mapping> {
        self.write_out_overlapping(0, len)?;
        self.file.map(len)
    }

    /// Never reserves room to grow: a mapping grown past what was written
    /// out would fault on pages past the file's end (`Mapping::grown_to`
    /// trusts its caller), so each map covers exactly `len`.
    fn map_growable(&self, len: u64, _capacity: u64) -> io::Result<Mapping> {
        self.map(len)
    }
}

impl Drop for DirectFile {
    fn drop(&mut self) {
        // What a buffered file would have left in the page cache.
        if let Err(e) = self.write_out() {
            tracing::warn!(error = %e, "could not write out a direct file's last appends");
        }
        // For the next file that grows (the pool's module docs say why).
        let out = self.out.get_mut().unwrap_or_else(|p| p.into_inner());
        aligned::give_back(std::mem::take(&mut out.spare));
        let tail = self.tail.get_mut().unwrap_or_else(|p| p.into_inner());
        aligned::give_back(std::mem::take(&mut tail.buf));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disk::{Disk, FileDisk, WriteMode};
    use proptest::prelude::*;

    /// A direct file at `dir/f`, created empty; fails the test where the
    /// file system takes no `O_DIRECT` (so the fallback would hide bugs).
    fn create(dir: &Path) -> DirectFile {
        let path = dir.join("f");
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .expect("create");
        let direct = open_direct(&path).expect("this file system takes O_DIRECT");
        DirectFile::new(file, direct).expect("wrap")
    }

    fn reopen(dir: &Path) -> DirectFile {
        let path = dir.join("f");
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .expect("open");
        DirectFile::new(file, open_direct(&path).expect("O_DIRECT")).expect("wrap")
    }

    fn bytes(len: usize, seed: u8) -> Vec<u8> {
        (0..len).map(|i| seed.wrapping_add(i as u8) | 1).collect()
    }

    /// What the file must hold: its bytes, and which of them are promised
    /// (those after a write's end, up to the next block, are not).
    struct Model {
        bytes: Vec<u8>,
        known: Vec<bool>,
    }

    impl Model {
        fn write(&mut self, pos: usize, buf: &[u8]) {
            let end = pos + buf.len();
            if end > self.bytes.len() {
                self.bytes.resize(end, 0);
                self.known.resize(end, true);
            }
            self.bytes[pos..end].copy_from_slice(buf);
            self.known[pos..end].fill(true);
            let padded = align_up(end).min(self.bytes.len());
            self.known[end..padded].fill(false);
        }

        fn set_len(&mut self, len: usize) {
            self.bytes.resize(len, 0);
            self.known.resize(len, true);
        }

        fn check(&self, got: &[u8], from: usize) {
            for (i, (g, want)) in got.iter().zip(&self.bytes[from..]).enumerate() {
                if self.known[from + i] {
                    assert_eq!(g, want, "byte {} differs", from + i);
                }
            }
        }
    }

    /// A length of `want` bytes, or `want` padded to its block.
    fn exact_or_padded(got: usize, want: usize) -> bool {
        got == want || got == align_up(want)
    }

    #[derive(Debug, Clone)]
    enum Op {
        Append(usize),
        WriteAt(usize, usize),
        SetLen(usize),
        Read(usize, usize),
        Map,
        Sync,
        Reopen,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => (1usize..20_000).prop_map(Op::Append),
            1 => (0usize..100_000, 1usize..9_000).prop_map(|(p, n)| Op::WriteAt(p, n)),
            1 => (0usize..100_000).prop_map(Op::SetLen),
            2 => (0usize..100_000, 1usize..9_000).prop_map(|(p, n)| Op::Read(p, n)),
            1 => Just(Op::Map),
            2 => Just(Op::Sync),
            1 => Just(Op::Reopen),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

        /// Any mix of appends, writes elsewhere, cuts, reads, maps, syncs and
        /// reopenings reads back as a page-cache file would, but for the
        /// padding the module docs allow; and the file's length is the
        /// model's, or its last block padded with zeros.
        #[test]
        fn reads_back_what_a_buffered_file_would(ops in proptest::collection::vec(op(), 1..40)) {
            let dir = tempfile::tempdir().expect("tempdir");
            let mut file = create(dir.path());
            let mut model = Model { bytes: Vec::new(), known: Vec::new() };
            for (i, op) in ops.into_iter().enumerate() {
                let len = model.bytes.len();
                match op {
                    Op::Append(n) => {
                        let buf = bytes(n, i as u8);
                        file.write_all_at(&buf, len as u64).expect("append");
                        model.write(len, &buf);
                    }
                    Op::WriteAt(p, n) => {
                        let p = p.min(len);
                        let buf = bytes(n, i as u8);
                        file.write_all_at(&buf, p as u64).expect("write");
                        model.write(p, &buf);
                    }
                    Op::SetLen(n) => {
                        file.set_len(n as u64).expect("set_len");
                        model.set_len(n);
                    }
                    Op::Read(p, n) => {
                        let p = p.min(len);
                        let n = n.min(len - p);
                        let mut got = vec![0u8; n];
                        file.read_exact_at(&mut got, p as u64).expect("read");
                        model.check(&got, p);
                    }
                    Op::Map => {
                        let m = file.map_growable(len as u64, len as u64 + (1 << 20)).expect("map");
                        prop_assert_eq!(m.len(), len as u64);
                        model.check(m.as_slice(), 0);
                    }
                    Op::Sync => file.sync_data().expect("sync"),
                    Op::Reopen => {
                        drop(file);
                        file = reopen(dir.path());
                    }
                }
                let got = file.len_bytes().expect("len") as usize;
                let want = model.bytes.len();
                prop_assert!(exact_or_padded(got, want), "length {} for {}", got, want);
                prop_assert!(!lock(&file.out).buffered, "fell back to buffered writes");
            }
            drop(file);
            let on_disk = std::fs::read(dir.path().join("f")).expect("read back");
            let want = model.bytes.len();
            prop_assert!(exact_or_padded(on_disk.len(), want), "length {} on disk for {}", on_disk.len(), want);
            prop_assert!(on_disk[want.min(on_disk.len())..].iter().all(|b| *b == 0), "padding is zeros");
            model.check(&on_disk, 0);
        }
    }

    /// A file whose writes wait, once armed, until the test lets them go:
    /// holds a write-out under way.
    #[derive(Debug)]
    struct GatedFile {
        inner: Arc<dyn DiskFile>,
        armed: std::sync::atomic::AtomicBool,
        entered: Mutex<std::sync::mpsc::Sender<()>>,
        release: Mutex<std::sync::mpsc::Receiver<()>>,
    }

    impl DiskFile for GatedFile {
        fn len_bytes(&self) -> io::Result<u64> {
            self.inner.len_bytes()
        }
        fn read_exact_at(&self, buf: &mut [u8], pos: u64) -> io::Result<()> {
            self.inner.read_exact_at(buf, pos)
        }
        fn write_all_at(&self, buf: &[u8], pos: u64) -> io::Result<()> {
            if self.armed.swap(false, Ordering::AcqRel) {
                let _ = lock(&self.entered).send(());
                let _ = lock(&self.release).recv();
            }
            self.inner.write_all_at(buf, pos)
        }
        fn set_len(&self, len: u64) -> io::Result<()> {
            self.inner.set_len(len)
        }
        fn sync_data(&self) -> io::Result<()> {
            self.inner.sync_data()
        }
        fn map(&self, len: u64) -> io::Result<Mapping> {
            self.inner.map(len)
        }
    }

    /// Goal: a reader of the newest bytes does not wait for a write-out
    /// under way. Method: a write-out is held inside its write while a
    /// reader reads what it carries and what was appended after it.
    #[test]
    fn a_write_out_under_way_does_not_hold_up_readers_of_its_bytes() {
        use std::sync::mpsc::channel;
        let dir = tempfile::tempdir().expect("tempdir");
        let inner = FileDisk.create_new(&dir.path().join("f")).expect("create");
        let (entered_tx, entered) = channel();
        let (release, release_rx) = channel();
        let gated = Arc::new(GatedFile {
            inner,
            armed: std::sync::atomic::AtomicBool::new(false),
            entered: Mutex::new(entered_tx),
            release: Mutex::new(release_rx),
        });
        let file =
            Arc::new(DirectFile::simulated(Arc::clone(&gated) as Arc<dyn DiskFile>).expect("wrap"));
        let first = bytes(10_000, 1);
        file.write_all_at(&first, 0).expect("append");
        gated.armed.store(true, Ordering::Release);
        let syncing = {
            let file = Arc::clone(&file);
            std::thread::spawn(move || file.sync_data())
        };
        entered.recv().expect("the write-out started");
        assert_eq!(file.memory_from(), Some(0));
        let second = bytes(3_000, 2);
        file.write_all_at(&second, 10_000)
            .expect("append during the write-out");
        // Read on another thread: a reader that waited for the write-out
        // would never finish while it is held, and the test says so
        // rather than hanging.
        let (done_tx, done) = channel();
        let reader = {
            let file = Arc::clone(&file);
            std::thread::spawn(move || {
                let mut held = vec![0u8; 10_000];
                let mut spanning = vec![0u8; 4_000];
                let got = file
                    .read_exact_at(&mut held, 0)
                    .and_then(|()| file.read_exact_at(&mut spanning, 9_000));
                let _ = done_tx.send(got.map(|()| (held, spanning)));
            })
        };
        let got = done.recv_timeout(std::time::Duration::from_secs(60));
        release.send(()).expect("release the write-out");
        let (held, spanning) = got
            .expect("the reader waited for the write-out")
            .expect("read");
        assert_eq!(held, first);
        assert_eq!(&spanning[..1_000], &first[9_000..]);
        assert_eq!(&spanning[1_000..], &second[..]);
        syncing.join().expect("join").expect("sync");
        reader.join().expect("join");
        assert_eq!(file.memory_from(), Some(10_000));
    }

    /// Goal: readers racing appends and write-outs always read what was
    /// appended. Method: one thread appends and writes out, another reads
    /// random ranges of what is appended, and checks every byte.
    #[test]
    fn readers_racing_appends_and_write_outs_read_what_was_appended() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = Arc::new(create(dir.path()));
        let appended = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let byte_at = |p: u64| (p % 251) as u8;
        let writer = {
            let (file, appended) = (Arc::clone(&file), Arc::clone(&appended));
            std::thread::spawn(move || {
                let mut pos = 0u64;
                for i in 0..2_000u64 {
                    let n = 1 + (i * 7919) % 9_000;
                    let buf: Vec<u8> = (pos..pos + n).map(byte_at).collect();
                    file.write_all_at(&buf, pos).expect("append");
                    pos += n;
                    appended.store(pos, Ordering::Release);
                    match i % 5 {
                        0 => file.sync_data().expect("sync"),
                        1 => file.start_writeback(0, pos).expect("writeback"),
                        _ => {}
                    }
                }
            })
        };
        let mut reads = 0u64;
        let mut seed = 1u64;
        while !writer.is_finished() || reads == 0 {
            let end = appended.load(Ordering::Acquire);
            if end == 0 {
                std::thread::yield_now();
                continue;
            }
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let len = 1 + (seed >> 33) % end.min(20_000);
            let pos = end - len - (seed >> 20) % (end - len + 1);
            let mut got = vec![0u8; len as usize];
            file.read_exact_at(&mut got, pos).expect("read");
            for (i, b) in got.iter().enumerate() {
                assert_eq!(*b, byte_at(pos + i as u64), "byte at {}", pos + i as u64);
            }
            reads += 1;
        }
        writer.join().expect("writer");
    }

    #[test]
    fn appends_wait_in_memory_until_a_sync_writes_them_in_one_go() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = create(dir.path());
        let path = dir.path().join("f");
        file.write_all_at(&bytes(1000, 1), 0).expect("append");
        file.write_all_at(&bytes(5000, 2), 1000).expect("append");
        // Nothing reached the file yet, though the file says it is 6,000 bytes.
        assert_eq!(std::fs::metadata(&path).expect("stat").len(), 0);
        assert_eq!(file.len_bytes().expect("len"), 6000);
        file.sync_data().expect("sync");
        let on_disk = std::fs::read(&path).expect("read");
        assert_eq!(&on_disk[..1000], &bytes(1000, 1)[..]);
        assert_eq!(&on_disk[1000..6000], &bytes(5000, 2)[..]);
        // The write-out's padding stays: no `ftruncate` per sync.
        assert_eq!(on_disk.len(), 2 * ALIGN_BYTES);
        assert!(on_disk[6000..].iter().all(|b| *b == 0));
        assert_eq!(file.len_bytes().expect("len"), 2 * ALIGN_BYTES as u64);
        // The partial last block is written again, whole, with what follows.
        file.write_all_at(&bytes(10, 3), 6000).expect("append");
        file.sync_data().expect("sync");
        let on_disk = std::fs::read(&path).expect("read");
        assert_eq!(&on_disk[1000..6000], &bytes(5000, 2)[..]);
        assert_eq!(&on_disk[6000..6010], &bytes(10, 3)[..]);
        // `set_len` cuts the padding.
        file.set_len(6010).expect("set_len");
        assert_eq!(std::fs::metadata(&path).expect("stat").len(), 6010);
        assert_eq!(file.len_bytes().expect("len"), 6010);
    }

    #[test]
    fn writeback_writes_out_only_a_megabyte_or_more() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = create(dir.path());
        let path = dir.path().join("f");
        let small = WRITEBACK_BYTES_MIN as usize - 1;
        file.write_all_at(&bytes(small, 1), 0).expect("append");
        file.start_writeback(0, small as u64).expect("writeback");
        assert_eq!(std::fs::metadata(&path).expect("stat").len(), 0);
        assert_eq!(file.memory_from(), Some(0));
        file.write_all_at(&bytes(1, 2), small as u64)
            .expect("append");
        file.start_writeback(0, small as u64 + 1)
            .expect("writeback");
        assert_eq!(
            std::fs::metadata(&path).expect("stat").len(),
            WRITEBACK_BYTES_MIN
        );
        assert_eq!(file.memory_from(), None);
    }

    #[test]
    fn a_long_run_of_appends_is_written_out_before_it_passes_the_bound() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = create(dir.path());
        let chunk = bytes(1 << 20, 7);
        for i in 0..(PENDING_BYTES_MAX / chunk.len() + 2) {
            file.write_all_at(&chunk, (i * chunk.len()) as u64)
                .expect("append");
            assert!(lock(&file.tail).pending_bytes() <= PENDING_BYTES_MAX as u64);
        }
        let written = std::fs::metadata(dir.path().join("f")).expect("stat").len();
        assert!(
            written >= PENDING_BYTES_MAX as u64,
            "only {written} bytes written out"
        );
    }

    #[test]
    fn file_disk_gives_segments_direct_writes_only_when_asked() {
        let dir = tempfile::tempdir().expect("tempdir");
        let direct = FileDisk
            .create_new_with(&dir.path().join("d"), WriteMode::Direct)
            .expect("create");
        let buffered = FileDisk
            .create_new_with(&dir.path().join("b"), WriteMode::Buffered)
            .expect("create");
        for f in [&direct, &buffered] {
            f.write_all_at(b"abc", 0).expect("write");
        }
        // A buffered write is in the file at once; a direct one at its sync.
        assert_eq!(std::fs::read(dir.path().join("b")).expect("read"), b"abc");
        assert_eq!(std::fs::read(dir.path().join("d")).expect("read"), b"");
        direct.sync_data().expect("sync");
        let on_disk = std::fs::read(dir.path().join("d")).expect("read");
        assert_eq!(&on_disk[..3], b"abc");
        assert_eq!(on_disk.len(), ALIGN_BYTES, "padded to its block");
    }
}
