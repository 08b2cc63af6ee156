//! openraft values to WAL payloads and back: one version byte, then bincode
//! 2 (standard configuration: little-endian, varint integers).
//!
//! The version names the encoding of openraft's types, which an openraft
//! upgrade or a change to `Command` can alter; a payload of an unknown
//! version is refused, never guessed at. Versions:
//! - 1: openraft 0.10.0-alpha.37 types; `Command`/`Reply` as byte strings.
//!
//! A payload that does not decode is corruption (the engine's CRCs already
//! matched), reported as `io::ErrorKind::InvalidData`.

use std::io;

use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// The encoding version written in front of every payload.
pub(crate) const CODEC_VERSION: u8 = 1;

/// Encodes a value for the WAL.
pub(crate) fn encode<T: Serialize>(value: &T) -> io::Result<Bytes> {
    encode_vec(value).map(Bytes::from)
}

/// `encode`, as a vector.
pub(crate) fn encode_vec<T: Serialize>(value: &T) -> io::Result<Vec<u8>> {
    encode_vec_sized(value, 0)
}

/// `encode_vec` into a vector first sized for `capacity_bytes`: a value
/// carrying message bodies would otherwise grow its vector by doubling,
/// copying what it holds each time.
pub(crate) fn encode_vec_sized<T: Serialize>(
    value: &T,
    capacity_bytes: usize,
) -> io::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(capacity_bytes.max(1));
    out.push(CODEC_VERSION);
    bincode::serde::encode_into_std_write(value, &mut out, bincode::config::standard()).map_err(
        |e| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("encoding for the WAL: {e}"),
            )
        },
    )?;
    Ok(out)
}

/// The encoding of `len` as a sequence length (a varint).
pub(crate) fn encode_len(len: usize) -> io::Result<Vec<u8>> {
    bincode::encode_to_vec(len as u64, bincode::config::standard()).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("encoding a length: {e}"),
        )
    })
}

/// The bytes after the version byte, if the version is ours.
fn versioned_body(bytes: &[u8]) -> io::Result<&[u8]> {
    let invalid = |reason: String| io::Error::new(io::ErrorKind::InvalidData, reason);
    let (&version, body) = bytes
        .split_first()
        .ok_or_else(|| invalid("empty WAL payload".into()))?;
    if version != CODEC_VERSION {
        return Err(invalid(format!(
            "WAL payload encoding version {version} is not {CODEC_VERSION}"
        )));
    }
    Ok(body)
}

/// Decodes a value `H` and returns it with the bytes after it, from which
/// optional extensions are read in order ([`Extensions::next`]): a payload
/// written before an extension existed ends early, and the extension reads
/// as its default. This is how a checkpoint grows trailing fields without
/// a new version: bincode writes a struct's fields one after another,
/// unframed.
pub(crate) fn decode_extended<H: DeserializeOwned>(
    bytes: &[u8],
) -> io::Result<(H, Extensions<'_>)> {
    let body = versioned_body(bytes)?;
    let (head, read) = bincode::serde::decode_from_slice(body, bincode::config::standard())
        .map_err(|e| invalid_data(format!("decoding a WAL payload: {e}")))?;
    Ok((
        head,
        Extensions {
            rest: &body[read..],
        },
    ))
}

/// The trailing extensions of a payload (see [`decode_extended`]).
pub(crate) struct Extensions<'a> {
    rest: &'a [u8],
}

impl Extensions<'_> {
    /// The next extension, or its default when the payload ends here.
    pub(crate) fn next<X: DeserializeOwned + Default>(&mut self) -> io::Result<X> {
        if self.rest.is_empty() {
            return Ok(X::default());
        }
        let (value, read) =
            bincode::serde::decode_from_slice(self.rest, bincode::config::standard())
                .map_err(|e| invalid_data(format!("decoding a payload's extension: {e}")))?;
        self.rest = &self.rest[read..];
        Ok(value)
    }

    /// Checks that nothing follows the last known extension.
    pub(crate) fn finish(self) -> io::Result<()> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(invalid_data(format!(
                "WAL payload has {} trailing bytes",
                self.rest.len()
            )))
        }
    }
}

fn invalid_data(reason: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, reason)
}

/// Decodes a value read from the WAL; trailing bytes are an error.
pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> io::Result<T> {
    let invalid = |reason: String| io::Error::new(io::ErrorKind::InvalidData, reason);
    let body = versioned_body(bytes)?;
    let (value, read) = bincode::serde::decode_from_slice(body, bincode::config::standard())
        .map_err(|e| invalid(format!("decoding a WAL payload: {e}")))?;
    if read != body.len() {
        return Err(invalid(format!(
            "WAL payload has {} trailing bytes",
            body.len() - read
        )));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_carry_their_version_and_other_versions_are_refused() {
        let bytes = encode(&(3u64, "x".to_string())).expect("encode");
        assert_eq!(bytes[0], CODEC_VERSION);
        assert_eq!(
            decode::<(u64, String)>(&bytes).expect("decode"),
            (3, "x".to_string())
        );
        let mut other = bytes.to_vec();
        other[0] = 2;
        assert_eq!(
            decode::<(u64, String)>(&other).map_err(|e| e.kind()),
            Err(io::ErrorKind::InvalidData)
        );
        assert!(decode::<(u64, String)>(&[]).is_err());
        let mut trailing = bytes.to_vec();
        trailing.push(0);
        assert!(decode::<(u64, String)>(&trailing).is_err());
    }
}
