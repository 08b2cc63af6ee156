//! Keys and secrets a node generates for itself: random bytes from the
//! OS, written once into the data directory readable by its owner only.

use std::io::{self, Write};
use std::path::Path;

/// Random bytes from the operating system's source.
pub fn random_bytes<const N: usize>() -> io::Result<[u8; N]> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).map_err(|e| io::Error::other(e.to_string()))?;
    Ok(bytes)
}

/// A fresh key: 32 lowercase hex digits (128 random bits).
pub fn new_key() -> io::Result<String> {
    Ok(sluice_token::encoding::hex(&random_bytes::<16>()?))
}

/// Longest secret file read back.
const SECRET_FILE_BYTES_MAX: u64 = 4096;

/// Reads the secret kept in `path`, if the file exists.
pub fn read_secret(path: &Path) -> io::Result<Option<String>> {
    match std::fs::metadata(path) {
        Ok(m) if m.len() > SECRET_FILE_BYTES_MAX => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "{}: {} bytes is too long for a key",
                path.display(),
                m.len()
            ),
        )),
        Ok(_) => Ok(Some(std::fs::read_to_string(path)?.trim().to_string())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Writes `secret` to a new file at `path` with mode 0600, durably (the
/// file and its directory are synced). Fails if the file exists.
pub fn write_secret(path: &Path, secret: &str) -> io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(secret.as_bytes())?;
    file.write_all(b"\n")?;
    file.sync_all()?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// The secret in `path`, or a new one (from `make`) written there.
/// Returns it and whether it was created now.
pub fn load_or_create(
    path: &Path,
    make: impl FnOnce() -> io::Result<String>,
) -> io::Result<(String, bool)> {
    if let Some(secret) = read_secret(path)? {
        return Ok((secret, false));
    }
    let secret = make()?;
    write_secret(path, &secret)?;
    Ok((secret, true))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_created_secret_is_private_and_read_back() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("admin.key");
        let (first, created) = load_or_create(&path, new_key).expect("create");
        assert!(created);
        assert_eq!(first.len(), 32);
        let (again, created) = load_or_create(&path, new_key).expect("read");
        assert_eq!((again.as_str(), created), (first.as_str(), false));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert_ne!(new_key().expect("key"), new_key().expect("key"));
    }
}
