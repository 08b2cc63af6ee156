//! Block-aligned buffers for `O_DIRECT` write-outs.
//!
//! A direct file's tail buffer starts small and doubles up to what its
//! write-outs need (megabytes, under load), and a sealed segment drops its
//! buffers; grown and dropped buffers go to a pool (`crate::pool`, which
//! says why), so the next segment's buffer grows on pages already mapped.

use crate::pool::{POOLED_BYTES_MIN, Pool, Reusable};

/// Block size every direct write is aligned to: the largest logical block
/// size of the devices this runs on (4 KiB; 512-byte devices accept it).
pub(crate) const ALIGN_BYTES: usize = 4096;

/// Buffers of dropped direct files, waiting for a file that grows.
static POOL: Pool<AlignedBuf> = Pool::new(POOLED_BYTES_MIN);

/// A buffer whose first byte sits on an `ALIGN_BYTES` boundary, as
/// `O_DIRECT` requires of the memory it writes from.
#[derive(Default)]
pub(crate) struct AlignedBuf {
    storage: Vec<u8>,
    /// Index in `storage` of the first aligned byte.
    offset: usize,
    /// Bytes held, from the aligned start.
    pub(crate) len: usize,
}

impl AlignedBuf {
    /// The held bytes.
    pub(crate) fn as_slice(&self) -> &[u8] {
        &self.storage[self.offset..self.offset + self.len]
    }

    /// Bytes the buffer can hold from its aligned start.
    pub(crate) fn capacity(&self) -> usize {
        self.storage.len().saturating_sub(self.offset)
    }

    /// Forgets the held bytes, keeping the memory.
    pub(crate) fn clear(&mut self) {
        self.len = 0;
    }

    /// Makes room for `len` bytes, rounded up to whole blocks (a write-out
    /// pads to one), keeping what is held. Grows at least twofold, from
    /// the pool when it has a buffer of about that size.
    pub(crate) fn reserve_total(&mut self, len: usize) {
        let want = align_up(len.max(ALIGN_BYTES));
        if self.capacity() >= want {
            return;
        }
        let want = want.max(self.capacity() * 2);
        let mut grown = POOL
            .take(want)
            .unwrap_or_else(|| AlignedBuf::allocate(want));
        grown.storage[grown.offset..grown.offset + self.len].copy_from_slice(self.as_slice());
        grown.len = self.len;
        let old = std::mem::replace(self, grown);
        POOL.give_back(old);
    }

    /// A new, empty buffer of at least `capacity` aligned bytes.
    fn allocate(capacity: usize) -> AlignedBuf {
        let storage = vec![0u8; capacity + ALIGN_BYTES];
        let offset = storage.as_ptr().align_offset(ALIGN_BYTES);
        AlignedBuf {
            storage,
            offset,
            len: 0,
        }
    }

    /// Appends `bytes`.
    pub(crate) fn extend_from_slice(&mut self, bytes: &[u8]) {
        self.reserve_total(self.len + bytes.len());
        let at = self.offset + self.len;
        self.storage[at..at + bytes.len()].copy_from_slice(bytes);
        self.len += bytes.len();
    }

    /// Writes zeros after the held bytes up to a whole number of blocks
    /// (`padded` returns them).
    pub(crate) fn pad(&mut self) {
        let padded = align_up(self.len);
        self.reserve_total(padded);
        let (from, to) = (self.offset + self.len, self.offset + padded);
        self.storage[from..to].fill(0);
    }

    /// The held bytes and the zeros `pad` wrote after them.
    pub(crate) fn padded(&self) -> &[u8] {
        &self.storage[self.offset..self.offset + align_up(self.len)]
    }
}

/// `n` rounded up to a whole number of blocks.
pub(crate) fn align_up(n: usize) -> usize {
    n.div_ceil(ALIGN_BYTES) * ALIGN_BYTES
}

/// Keeps `buf`'s memory for a file that grows.
pub(crate) fn give_back(buf: AlignedBuf) {
    POOL.give_back(buf);
}

impl Reusable for AlignedBuf {
    fn capacity_bytes(&self) -> usize {
        self.capacity()
    }

    fn clear(&mut self) {
        AlignedBuf::clear(self);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_grown_buffer_keeps_its_bytes_and_alignment() {
        let mut buf = AlignedBuf::default();
        let bytes: Vec<u8> = (0..3 * ALIGN_BYTES + 5).map(|i| i as u8).collect();
        for chunk in bytes.chunks(1000) {
            buf.extend_from_slice(chunk);
        }
        assert_eq!(buf.as_slice(), &bytes[..]);
        assert_eq!(buf.as_slice().as_ptr().align_offset(ALIGN_BYTES), 0);
        buf.pad();
        assert_eq!(buf.padded().len(), 4 * ALIGN_BYTES);
        assert!(buf.padded()[bytes.len()..].iter().all(|&b| b == 0));
    }

    #[test]
    fn a_pooled_buffer_is_padded_with_zeros_not_its_old_bytes() {
        let pool = Pool::<AlignedBuf>::new(ALIGN_BYTES);
        // The pool hands out a buffer with another file's bytes after the
        // new ones: padding must not write them out.
        let mut old = AlignedBuf::allocate(2 * ALIGN_BYTES);
        old.extend_from_slice(&[0xAB; 2 * ALIGN_BYTES]);
        pool.give_back(old);
        let mut buf = pool.take(2 * ALIGN_BYTES).unwrap_or_default();
        assert!(buf.capacity() >= 2 * ALIGN_BYTES, "the pooled buffer");
        buf.extend_from_slice(b"new");
        buf.pad();
        assert_eq!(&buf.padded()[..3], b"new");
        assert!(buf.padded()[3..].iter().all(|&b| b == 0));
        assert_eq!(buf.as_slice().as_ptr().align_offset(ALIGN_BYTES), 0);
    }
}
