//! Large buffers kept for reuse instead of freed.
//!
//! Why: the engine's big buffers (a batch being encoded, a direct file's
//! tail) are allocated and freed many times a second under load, at sizes
//! the allocator serves from memory it hands back to the kernel when freed.
//! The next allocation's first touch of each page is then a page fault that
//! zeroes it, and on this project's VM that is slow: `perf` of batched
//! produce put 12–20 % of the server's samples in `clear_page_erms` under
//! `AlignedBuf::reserve_total` and `Batch::with_capacity`
//! (docs/benchmarks.md, "Buffers kept warm"). A pooled buffer keeps its
//! pages mapped.
//!
//! Bounds: a pool holds at most `BUFFERS_MAX` buffers and `BYTES_MAX`
//! bytes of capacity, and only buffers of at least its `min_bytes` (the
//! allocator serves smaller ones well). A taker gets the smallest buffer
//! that fits, of at most `TAKE_SLACK`× the capacity it asked for: a
//! direct file asks for 128 KiB on its way to the megabytes its
//! write-outs reach (at least `WRITEBACK_BYTES_MIN`, pending and spare),
//! and takes a pooled buffer then rather than at every doubling.

use std::sync::{Mutex, MutexGuard};

/// Most buffers one pool keeps.
const BUFFERS_MAX: usize = 16;
/// Most bytes of capacity one pool keeps.
const BYTES_MAX: usize = 64 * 1024 * 1024;
/// A pooled buffer is handed out only up to this many times the capacity
/// asked for.
const TAKE_SLACK: usize = 64;
/// The engine's pools keep no smaller buffers: the allocator serves those
/// well.
pub(crate) const POOLED_BYTES_MIN: usize = 64 * 1024;

/// What a pool can keep.
pub(crate) trait Reusable {
    /// Bytes the buffer can hold without growing.
    fn capacity_bytes(&self) -> usize;
    /// Forgets the contents, keeping the memory.
    fn clear(&mut self);
}

impl Reusable for Vec<u8> {
    fn capacity_bytes(&self) -> usize {
        self.capacity()
    }

    fn clear(&mut self) {
        Vec::clear(self);
    }
}

/// Buffers kept within `BUFFERS_MAX` and `BYTES_MAX`.
pub(crate) struct Pool<T> {
    min_bytes: usize,
    bufs: Mutex<Vec<T>>,
}

impl<T: Reusable> Pool<T> {
    /// An empty pool of buffers of at least `min_bytes`.
    pub(crate) const fn new(min_bytes: usize) -> Pool<T> {
        Pool {
            min_bytes,
            bufs: Mutex::new(Vec::new()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Vec<T>> {
        self.bufs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The smallest pooled buffer of `want` to `TAKE_SLACK × want` bytes.
    pub(crate) fn take(&self, want: usize) -> Option<T> {
        if want < self.min_bytes {
            return None;
        }
        let fits = |b: &T| (want..=want.saturating_mul(TAKE_SLACK)).contains(&b.capacity_bytes());
        let mut bufs = self.lock();
        let (at, _) = bufs
            .iter()
            .enumerate()
            .filter(|(_, b)| fits(b))
            .min_by_key(|(_, b)| b.capacity_bytes())?;
        Some(bufs.swap_remove(at))
    }

    /// Keeps `buf` within the bounds (emptied); when the pool is full, a
    /// larger buffer takes the place of the smallest.
    pub(crate) fn give_back(&self, mut buf: T) {
        let capacity = buf.capacity_bytes();
        if capacity < self.min_bytes || capacity > BYTES_MAX {
            return;
        }
        buf.clear();
        let mut bufs = self.lock();
        let held: usize = bufs.iter().map(Reusable::capacity_bytes).sum();
        if bufs.len() < BUFFERS_MAX && held + capacity <= BYTES_MAX {
            bufs.push(buf);
            return;
        }
        let smallest = bufs
            .iter()
            .enumerate()
            .min_by_key(|(_, b)| b.capacity_bytes())
            .map(|(at, b)| (at, b.capacity_bytes()));
        if let Some((at, smallest)) = smallest
            && smallest < capacity
            && held - smallest + capacity <= BYTES_MAX
        {
            bufs[at] = buf;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KIB: usize = 1024;

    #[test]
    fn only_a_buffer_of_about_the_size_asked_for_is_taken() {
        let pool = Pool::<Vec<u8>>::new(KIB);
        let size = 300 * KIB;
        pool.give_back(Vec::with_capacity(size));
        assert!(pool.take(size * TAKE_SLACK + 1).is_none(), "too small");
        assert!(pool.take(size / TAKE_SLACK - 1).is_none(), "too large");
        let taken = pool.take(size).map(|b| b.capacity());
        assert!(taken.is_some_and(|c| c >= size), "{taken:?}");
        assert!(pool.take(size).is_none(), "taken once");
    }

    #[test]
    fn a_buffer_comes_back_empty_and_small_ones_are_not_kept() {
        let pool = Pool::<Vec<u8>>::new(64 * KIB);
        pool.give_back(vec![7u8; 100 * KIB]);
        pool.give_back(vec![7u8; KIB]);
        assert_eq!(pool.lock().len(), 1);
        assert_eq!(pool.take(64 * KIB).map(|b| b.len()), Some(0));
        assert!(pool.take(KIB).is_none(), "under the pool's minimum");
    }

    #[test]
    fn the_pool_keeps_no_more_than_its_bounds() {
        let pool = Pool::<Vec<u8>>::new(KIB);
        for _ in 0..2 * BUFFERS_MAX {
            pool.give_back(Vec::with_capacity(KIB));
        }
        assert_eq!(pool.lock().len(), BUFFERS_MAX);
        for _ in 0..8 {
            pool.give_back(Vec::with_capacity(BYTES_MAX / 4));
        }
        pool.give_back(Vec::with_capacity(2 * BYTES_MAX));
        let bufs = pool.lock();
        assert!(bufs.len() <= BUFFERS_MAX);
        let held: usize = bufs.iter().map(Vec::capacity).sum();
        assert!(held <= BYTES_MAX, "{held}");
        let large = bufs
            .iter()
            .filter(|b| b.capacity() >= BYTES_MAX / 4)
            .count();
        assert_eq!(
            large, 3,
            "large buffers displace small ones, as many as fit"
        );
    }
}
