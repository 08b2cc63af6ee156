//! The checkpoint file of a group's state machine: written whole, fsynced,
//! renamed over the previous one, the directory fsynced; so after any
//! crash the file is the old checkpoint or the new one, never a mix.
//!
//! ```text
//! magic "SLCK" (4) | version u32 LE | body_len u64 LE | body_crc u32 LE
//! | header_crc u32 LE (CRC-32 of the 20 bytes before it) | body
//! ```
//!
//! The header's CRC is checked before its length is used, and the body's
//! CRC before it is decoded. A checkpoint that fails either check is
//! corruption, never "no checkpoint": starting empty would replay a WAL
//! that may already be purged.

use std::io;
use std::path::Path;

use sluice_engine::disk::Disk;

/// First bytes of a checkpoint file.
const MAGIC: &[u8; 4] = b"SLCK";
/// The header layout's version.
pub const CHECKPOINT_VERSION: u32 = 1;
const HEADER_BYTES: usize = 24;
/// Largest checkpoint body read back (the state machine's small state).
pub const CHECKPOINT_BODY_BYTES_MAX: u64 = 1 << 30;

/// Writes `body` as the checkpoint at `path`, durably (see the module docs).
pub fn write(disk: &dyn Disk, path: &Path, body: &[u8]) -> io::Result<()> {
    // The header and the body are written apart, not joined: a data
    // group's body is megabytes when its request window is full.
    let mut bytes = Vec::with_capacity(HEADER_BYTES);
    bytes.extend_from_slice(MAGIC);
    bytes.extend_from_slice(&CHECKPOINT_VERSION.to_le_bytes());
    bytes.extend_from_slice(&(body.len() as u64).to_le_bytes());
    bytes.extend_from_slice(&crc32fast::hash(body).to_le_bytes());
    let header_crc = crc32fast::hash(&bytes[..20]);
    bytes.extend_from_slice(&header_crc.to_le_bytes());
    debug_assert_eq!(bytes.len(), HEADER_BYTES);
    let tmp = path.with_extension("tmp");
    match disk.remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let file = disk.create_new(&tmp)?;
    file.write_all_at(&bytes, 0)?;
    file.write_all_at(body, HEADER_BYTES as u64)?;
    file.sync_data()?;
    disk.rename(&tmp, path)?;
    let dir = path.parent().unwrap_or(Path::new("."));
    disk.sync_dir(dir)
}

/// Reads the checkpoint at `path`: `None` if there is none, the body if it
/// is whole, `InvalidData` if it is damaged or of an unknown version.
pub fn read(disk: &dyn Disk, path: &Path) -> io::Result<Option<Vec<u8>>> {
    let file = match disk.open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let invalid = |reason: String| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("checkpoint {}: {reason}", path.display()),
        )
    };
    let len = file.len_bytes()?;
    if len < HEADER_BYTES as u64 {
        return Err(invalid(format!("{len} bytes is shorter than its header")));
    }
    let mut header = [0u8; HEADER_BYTES];
    file.read_exact_at(&mut header, 0)?;
    let field = |at: usize, n: usize| &header[at..at + n];
    let u32_at = |at: usize| {
        u32::from_le_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]])
    };
    if field(0, 4) != MAGIC {
        return Err(invalid("bad magic".into()));
    }
    if u32_at(20) != crc32fast::hash(&header[..20]) {
        return Err(invalid("header checksum mismatch".into()));
    }
    let version = u32_at(4);
    if version != CHECKPOINT_VERSION {
        return Err(invalid(format!(
            "version {version} is not {CHECKPOINT_VERSION}"
        )));
    }
    let mut len_bytes = [0u8; 8];
    len_bytes.copy_from_slice(field(8, 8));
    let body_len = u64::from_le_bytes(len_bytes);
    if body_len > CHECKPOINT_BODY_BYTES_MAX || HEADER_BYTES as u64 + body_len != len {
        return Err(invalid(format!(
            "body length {body_len} does not match the file's {len} bytes"
        )));
    }
    let mut body = vec![0u8; body_len as usize];
    file.read_exact_at(&mut body, HEADER_BYTES as u64)?;
    if crc32fast::hash(&body) != u32_at(16) {
        return Err(invalid("body checksum mismatch".into()));
    }
    Ok(Some(body))
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_engine::sim::{CrashMode, SimDisk};

    #[test]
    fn a_checkpoint_is_old_or_new_after_any_crash_and_damage_is_reported() {
        let disk = SimDisk::new();
        let dir = Path::new("/g");
        disk.create_dir_all(dir).expect("dir");
        let path = dir.join("checkpoint");
        assert_eq!(read(&disk, &path).expect("none"), None);
        write(&disk, &path, b"first").expect("write");
        for (seed, mode) in CrashMode::ALL.iter().enumerate() {
            // A copy of the disk as it is durably (all of it is synced).
            let before = disk.crash(CrashMode::LoseAll, 0);
            write(&before, &path, b"second, longer").expect("write");
            let after = before.crash(*mode, seed as u64);
            let body = read(&after, &path).expect("whole").expect("present");
            assert!(body == b"first" || body == b"second, longer", "{body:?}");
        }
        let mut bytes = disk.read_file(&path).expect("file");
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        disk.write_file(&path, &bytes).expect("write");
        let err = read(&disk, &path).expect_err("damaged");
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        bytes[last] ^= 1;
        bytes[8] ^= 0xFF; // the length: caught by the header CRC
        disk.write_file(&path, &bytes).expect("write");
        assert!(read(&disk, &path).is_err());
    }
}
