//! The native API's binary produce framing (`Content-Type:
//! application/vnd.sluice.batch`), the compact form of the JSON request
//! that the benchmark uses. All integers are little-endian:
//!
//! ```text
//! magic      4 bytes  "SLB1"
//! flags      u8       bit 0: a producer id follows; other bits 0
//! producer   u64      (only with flag bit 0)
//! count      u32      messages that follow, 1..=BATCH_MESSAGES_MAX
//! message × count:
//!   flags    u8       bit 0 partition, bit 1 key, bit 2 ttl, bit 3 sequence
//!   partition u32     (bit 0)
//!   ttl      u32      seconds (bit 2)
//!   sequence u64      (bit 3)
//!   key      u16 length, bytes (bit 1)
//!   headers  u8 count, then per header: u8 name length, name (UTF-8),
//!            u16 value length, value
//!   body     u32 length, bytes
//! ```
//!
//! Every length is checked against what is left before it is used, and
//! nothing may follow the last message.

use crate::v2::batch::{BATCH_MESSAGES_MAX, Draft, KEY_BYTES_MAX, ProduceRequest};
use crate::v2::cursor::Reader;

/// The media type of the framing.
pub const MEDIA_TYPE: &str = "application/vnd.sluice.batch";
/// The framing's first four bytes (its version is the `1`).
pub const MAGIC: &[u8; 4] = b"SLB1";

const HAS_PRODUCER: u8 = 1;
const HAS_PARTITION: u8 = 1;
const HAS_KEY: u8 = 1 << 1;
const HAS_TTL: u8 = 1 << 2;
const HAS_SEQUENCE: u8 = 1 << 3;

/// Why a frame does not decode: the message index (when inside one) and
/// what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{reason}", .index.map(|i| format!("message {i}: ")).unwrap_or_default())]
pub struct FrameError {
    /// The message at fault, if the damage is inside one.
    pub index: Option<usize>,
    /// What is wrong.
    pub reason: String,
}

/// Decodes a binary produce request.
pub fn decode(bytes: &[u8]) -> Result<ProduceRequest, FrameError> {
    let mut r = Reader { bytes, at: 0 };
    let top = |reason: String| FrameError {
        index: None,
        reason,
    };
    if r.take(4).map_err(top)? != MAGIC {
        return Err(top(format!("the body does not start with {MAGIC:?}")));
    }
    let flags = r.u8().map_err(top)?;
    if flags & !HAS_PRODUCER != 0 {
        return Err(top(format!("unknown request flags {flags:#04x}")));
    }
    let producer_id = if flags & HAS_PRODUCER != 0 {
        Some(r.u64().map_err(top)?)
    } else {
        None
    };
    let count = r.u32().map_err(top)? as usize;
    if count == 0 || count > BATCH_MESSAGES_MAX {
        return Err(top(format!(
            "the message count {count} is not in 1..={BATCH_MESSAGES_MAX}"
        )));
    }
    let mut messages = Vec::with_capacity(count);
    for index in 0..count {
        let message = decode_message(&mut r).map_err(|reason| FrameError {
            index: Some(index),
            reason,
        })?;
        messages.push(message);
    }
    if r.at != bytes.len() {
        return Err(top(format!(
            "{} bytes follow the last message",
            bytes.len() - r.at
        )));
    }
    Ok(ProduceRequest {
        producer_id,
        messages,
    })
}

fn decode_message(r: &mut Reader<'_>) -> Result<Draft, String> {
    let flags = r.u8()?;
    if flags & !(HAS_PARTITION | HAS_KEY | HAS_TTL | HAS_SEQUENCE) != 0 {
        return Err(format!("unknown message flags {flags:#04x}"));
    }
    let mut draft = Draft::default();
    if flags & HAS_PARTITION != 0 {
        draft.partition = Some(r.u32()?);
    }
    if flags & HAS_TTL != 0 {
        draft.ttl_secs = Some(u64::from(r.u32()?));
    }
    if flags & HAS_SEQUENCE != 0 {
        draft.sequence = Some(r.u64()?);
    }
    if flags & HAS_KEY != 0 {
        let len = usize::from(r.u16()?);
        if len > KEY_BYTES_MAX {
            return Err(format!("the key is over {KEY_BYTES_MAX} bytes"));
        }
        draft.key = Some(r.take(len)?.to_vec());
    }
    let headers = r.u8()?;
    for _ in 0..headers {
        let name_len = usize::from(r.u8()?);
        let name = std::str::from_utf8(r.take(name_len)?)
            .map_err(|_| "a header name is not UTF-8".to_string())?
            .to_string();
        let value_len = usize::from(r.u16()?);
        draft.headers.push((name, r.take(value_len)?.to_vec()));
    }
    let body_len = r.u32()? as usize;
    draft.body = r.take(body_len)?.to_vec();
    Ok(draft)
}

/// Encodes a request (for clients, the benchmark and tests). Lengths past
/// the framing's fields are the caller's bug and are refused.
pub fn encode(request: &ProduceRequest) -> Result<Vec<u8>, FrameError> {
    let top = |reason: String| FrameError {
        index: None,
        reason,
    };
    let mut out = Vec::with_capacity(
        16 + request
            .messages
            .iter()
            .map(|m| 32 + m.body.len())
            .sum::<usize>(),
    );
    out.extend_from_slice(MAGIC);
    match request.producer_id {
        Some(id) => {
            out.push(HAS_PRODUCER);
            out.extend_from_slice(&id.to_le_bytes());
        }
        None => out.push(0),
    }
    let count = u32::try_from(request.messages.len()).map_err(|e| top(e.to_string()))?;
    out.extend_from_slice(&count.to_le_bytes());
    for (index, m) in request.messages.iter().enumerate() {
        encode_message(&mut out, m).map_err(|reason| FrameError {
            index: Some(index),
            reason,
        })?;
    }
    Ok(out)
}

fn encode_message(out: &mut Vec<u8>, m: &Draft) -> Result<(), String> {
    let flag = |present: bool, bit: u8| if present { bit } else { 0 };
    out.push(
        flag(m.partition.is_some(), HAS_PARTITION)
            | flag(m.key.is_some(), HAS_KEY)
            | flag(m.ttl_secs.is_some(), HAS_TTL)
            | flag(m.sequence.is_some(), HAS_SEQUENCE),
    );
    if let Some(p) = m.partition {
        out.extend_from_slice(&p.to_le_bytes());
    }
    if let Some(ttl) = m.ttl_secs {
        let ttl = u32::try_from(ttl).map_err(|_| "the ttl is over u32".to_string())?;
        out.extend_from_slice(&ttl.to_le_bytes());
    }
    if let Some(s) = m.sequence {
        out.extend_from_slice(&s.to_le_bytes());
    }
    if let Some(key) = &m.key {
        let len = u16::try_from(key.len()).map_err(|_| "the key is too long".to_string())?;
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(key);
    }
    let headers = u8::try_from(m.headers.len()).map_err(|_| "too many headers".to_string())?;
    out.push(headers);
    for (name, value) in &m.headers {
        let name_len = u8::try_from(name.len()).map_err(|_| "a header name is too long")?;
        let value_len = u16::try_from(value.len()).map_err(|_| "a header value is too long")?;
        out.push(name_len);
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(&value_len.to_le_bytes());
        out.extend_from_slice(value);
    }
    let body_len = u32::try_from(m.body.len()).map_err(|_| "the body is too long".to_string())?;
    out.extend_from_slice(&body_len.to_le_bytes());
    out.extend_from_slice(&m.body);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> ProduceRequest {
        ProduceRequest {
            producer_id: Some(42),
            messages: vec![
                Draft {
                    partition: Some(3),
                    key: Some(b"user-1".to_vec()),
                    ttl_secs: Some(60),
                    sequence: Some(9),
                    headers: vec![("trace".into(), b"abc".to_vec())],
                    body: b"hello".to_vec(),
                },
                Draft {
                    body: vec![0, 159, 146, 150],
                    ..Draft::default()
                },
            ],
        }
    }

    #[test]
    fn frames_round_trip() {
        let bytes = encode(&sample()).expect("encodes");
        assert_eq!(decode(&bytes).expect("decodes"), sample());
    }

    #[test]
    fn every_truncation_and_any_trailing_byte_is_refused() {
        let bytes = encode(&sample()).expect("encodes");
        for cut in 0..bytes.len() {
            assert!(decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(decode(&longer).is_err());
    }

    #[test]
    fn bad_headers_name_the_message() {
        let mut bytes = encode(&sample()).expect("encodes");
        // The second message's flags byte: an unknown bit.
        let second = bytes.len() - (1 + 1 + 4 + 4);
        bytes[second] = 0x80;
        let err = decode(&bytes).expect_err("unknown flag");
        assert_eq!(err.index, Some(1));
        let mut huge_count = encode(&sample()).expect("encodes");
        huge_count[13..17].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(decode(&huge_count).expect_err("count").index, None);
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let base = encode(&sample()).expect("encodes");
        for _ in 0..5_000 {
            let mut bytes = base.clone();
            for _ in 0..3 {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let at = (seed as usize) % bytes.len();
                bytes[at] = (seed >> 32) as u8;
            }
            let _ = decode(&bytes);
        }
    }
}
