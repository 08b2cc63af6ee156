//! openraft values to WAL payloads and back, with bincode 2 (standard
//! configuration: little-endian, varint integers). A payload that does not
//! decode is corruption (the engine's CRCs already matched), reported as
//! `io::ErrorKind::InvalidData`.

use std::io;

use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Encodes a value for the WAL.
pub(crate) fn encode<T: Serialize>(value: &T) -> io::Result<Bytes> {
    bincode::serde::encode_to_vec(value, bincode::config::standard())
        .map(Bytes::from)
        .map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("encoding for the WAL: {e}"),
            )
        })
}

/// Decodes a value read from the WAL; trailing bytes are an error.
pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> io::Result<T> {
    let (value, read) = bincode::serde::decode_from_slice(bytes, bincode::config::standard())
        .map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("decoding a WAL payload: {e}"),
            )
        })?;
    if read != bytes.len() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("WAL payload has {} trailing bytes", bytes.len() - read),
        ));
    }
    Ok(value)
}
