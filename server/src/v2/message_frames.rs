//! The binary framing of delivered messages: what fetch and consumer-group
//! polls answer when the request says `Accept: application/vnd.sluice.batch`
//! (the JSON answer's fields that are not messages travel as `X-Sluice-*`
//! response headers). It spares a busy consumer JSON escaping on the server
//! and JSON parsing on its side. All integers are little-endian:
//!
//! ```text
//! magic        4 bytes  "SLM1"
//! count        u32      messages that follow
//! message × count:
//!   partition    u32
//!   offset       u64
//!   timestamp_ms u64
//!   id           16 bytes
//!   flags        u8     bit 0 key, bit 1 content type; other bits 0
//!   key          u32 length, bytes (bit 0)
//!   content_type u32 length, bytes (bit 1)
//!   headers      u32 count, then per header: u32 name length, name (UTF-8),
//!                u32 value length, value
//!   body         u32 length, bytes
//! ```
//!
//! Nothing follows the last message. [`decode`] checks every length against
//! what is left, so a client can read answers from an untrusted peer.

use axum::http::{HeaderMap, HeaderName, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use sluice_engine::{Record, Timestamp};
use sluice_raft::data::partition::{CONTENT_TYPE_HEADER, KEY_HEADER};

use crate::v2::cursor::Reader;
use crate::v2::error::V2Error;
use crate::v2::framing::{FrameError, MEDIA_TYPE};

/// The framing's first four bytes (its version is the `1`).
pub const MAGIC: &[u8; 4] = b"SLM1";

const HAS_KEY: u8 = 1;
const HAS_CONTENT_TYPE: u8 = 1 << 1;

/// Most messages one frame may announce, so that a corrupt count cannot
/// make [`decode`] reserve memory for billions (a server answers at most
/// 10,000 per request).
const COUNT_MAX: usize = 1_000_000;

/// One delivered message, as [`decode`] reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveredMessage {
    /// The partition (numbered from 0).
    pub partition: u32,
    /// The message's offset in its partition.
    pub offset: u64,
    /// When the message was accepted, in milliseconds since the epoch.
    pub timestamp_ms: u64,
    /// The message id.
    pub id: [u8; 16],
    /// The producer's key, if any.
    pub key: Option<Bytes>,
    /// The content type given at produce time (v1), if any.
    pub content_type: Option<Bytes>,
    /// The message's own headers.
    pub headers: Vec<(String, Bytes)>,
    /// The body.
    pub body: Bytes,
}

/// Whether the request asked for this framing (`Accept` names its media
/// type); otherwise the answer is JSON.
pub fn wanted(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|v| v.split(';').next().map(str::trim) == Some(MEDIA_TYPE))
}

/// A 200 answer carrying `records` as one frame, with the answer's other
/// fields as `X-Sluice-*` headers.
pub fn response<'a>(
    records: impl ExactSizeIterator<Item = (u32, &'a Record)>,
    fields: &[(&'static str, String)],
) -> Result<Response, V2Error> {
    let frame =
        encode(records).map_err(|e| V2Error::internal(format!("framing the answer: {e}")))?;
    let mut response = ([(header::CONTENT_TYPE, MEDIA_TYPE)], frame).into_response();
    for (name, value) in fields {
        let value = HeaderValue::try_from(value.as_str())
            .map_err(|e| V2Error::internal(format!("header {name}: {e}")))?;
        response
            .headers_mut()
            .insert(HeaderName::from_static(name), value);
    }
    Ok(response)
}

/// Encodes records (each with its partition) as one frame. Engine records
/// are far below the framing's `u32` lengths; a record that is not is
/// refused rather than cut.
pub fn encode<'a>(
    records: impl ExactSizeIterator<Item = (u32, &'a Record)>,
) -> Result<Vec<u8>, FrameError> {
    let top = |reason: String| FrameError {
        index: None,
        reason,
    };
    let count = u32::try_from(records.len()).map_err(|e| top(e.to_string()))?;
    let mut out = Vec::new();
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&count.to_le_bytes());
    for (index, (partition, record)) in records.enumerate() {
        encode_message(&mut out, partition, record).map_err(|reason| FrameError {
            index: Some(index),
            reason,
        })?;
    }
    Ok(out)
}

fn encode_message(out: &mut Vec<u8>, partition: u32, record: &Record) -> Result<(), String> {
    let key = record.header(KEY_HEADER);
    let content_type = record.header(CONTENT_TYPE_HEADER);
    out.reserve(64 + record.encoded_len());
    out.extend_from_slice(&partition.to_le_bytes());
    out.extend_from_slice(&record.offset.0.to_le_bytes());
    let timestamp_ms = record.timestamp.0 / (Timestamp::TICKS_PER_SEC / 1_000);
    out.extend_from_slice(&timestamp_ms.to_le_bytes());
    out.extend_from_slice(&record.id.0);
    let flag = |present: bool, bit: u8| if present { bit } else { 0 };
    out.push(flag(key.is_some(), HAS_KEY) | flag(content_type.is_some(), HAS_CONTENT_TYPE));
    for field in [key, content_type].into_iter().flatten() {
        put_bytes(out, field)?;
    }
    // Names starting with ':' are the server's own (key, content type).
    let own = || record.headers().filter(|(name, _)| !name.starts_with(':'));
    put_len(out, own().count())?;
    for (name, value) in own() {
        put_bytes(out, name.as_bytes())?;
        put_bytes(out, value)?;
    }
    put_bytes(out, &record.payload)
}

fn put_len(out: &mut Vec<u8>, len: usize) -> Result<(), String> {
    let len = u32::try_from(len).map_err(|_| format!("{len} does not fit the framing's u32"))?;
    out.extend_from_slice(&len.to_le_bytes());
    Ok(())
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) -> Result<(), String> {
    put_len(out, bytes.len())?;
    out.extend_from_slice(bytes);
    Ok(())
}

/// Decodes a frame; the messages' byte fields are slices of `frame`.
pub fn decode(frame: &Bytes) -> Result<Vec<DeliveredMessage>, FrameError> {
    let mut r = Reader {
        bytes: frame,
        at: 0,
    };
    let top = |reason: String| FrameError {
        index: None,
        reason,
    };
    if r.take(4).map_err(top)? != MAGIC {
        return Err(top(format!("the answer does not start with {MAGIC:?}")));
    }
    let count = r.u32().map_err(top)? as usize;
    if count > COUNT_MAX {
        return Err(top(format!(
            "the message count {count} is over {COUNT_MAX}"
        )));
    }
    let mut messages = Vec::with_capacity(count);
    for index in 0..count {
        let message = decode_message(&mut r, frame).map_err(|reason| FrameError {
            index: Some(index),
            reason,
        })?;
        messages.push(message);
    }
    if r.at != frame.len() {
        return Err(top(format!(
            "{} bytes follow the last message",
            frame.len() - r.at
        )));
    }
    Ok(messages)
}

fn decode_message(r: &mut Reader<'_>, frame: &Bytes) -> Result<DeliveredMessage, String> {
    let partition = r.u32()?;
    let offset = r.u64()?;
    let timestamp_ms = r.u64()?;
    let id = r.array::<16>()?;
    let flags = r.u8()?;
    if flags & !(HAS_KEY | HAS_CONTENT_TYPE) != 0 {
        return Err(format!("unknown message flags {flags:#04x}"));
    }
    let bytes = |r: &mut Reader<'_>| -> Result<Bytes, String> {
        let len = r.u32()? as usize;
        let start = r.at;
        r.take(len)?;
        Ok(frame.slice(start..start + len))
    };
    let key = (flags & HAS_KEY != 0).then(|| bytes(r)).transpose()?;
    let content_type = (flags & HAS_CONTENT_TYPE != 0)
        .then(|| bytes(r))
        .transpose()?;
    let header_count = r.u32()? as usize;
    // Each header takes at least 8 bytes: a count past that is corrupt.
    if header_count > (r.bytes.len() - r.at) / 8 {
        return Err(format!("{header_count} headers cannot fit what is left"));
    }
    let mut headers = Vec::with_capacity(header_count);
    for _ in 0..header_count {
        let name = bytes(r)?;
        let name = std::str::from_utf8(&name)
            .map_err(|_| "a header name is not UTF-8".to_string())?
            .to_string();
        headers.push((name, bytes(r)?));
    }
    let body = bytes(r)?;
    Ok(DeliveredMessage {
        partition,
        offset,
        timestamp_ms,
        id,
        key,
        content_type,
        headers,
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_engine::{MessageId, NewRecord, Offset};

    fn record(offset: u64, headers: &[(&str, &[u8])], body: &[u8]) -> Record {
        let mut new = NewRecord::new(
            Timestamp(1_795_594_975_570 * (Timestamp::TICKS_PER_SEC / 1_000)),
            MessageId([offset as u8; 16]),
            Bytes::copy_from_slice(body),
        );
        new.headers = headers
            .iter()
            .map(|(k, v)| (k.to_string(), Bytes::copy_from_slice(v)))
            .collect();
        Record::at(Offset(offset), &new)
    }

    fn sample() -> Vec<Record> {
        vec![
            record(
                7,
                &[
                    (KEY_HEADER, b"k-1"),
                    ("trace", b"abc"),
                    (CONTENT_TYPE_HEADER, b"text/plain"),
                ],
                b"hello",
            ),
            record(8, &[], &[0, 159, 146, 150]),
        ]
    }

    #[test]
    fn frames_round_trip_without_the_servers_own_headers() {
        let records = sample();
        let frame = Bytes::from(encode(records.iter().map(|r| (3, r))).expect("encodes"));
        let got = decode(&frame).expect("decodes");
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].partition, 3);
        assert_eq!(got[0].offset, 7);
        assert_eq!(got[0].timestamp_ms, 1_795_594_975_570);
        assert_eq!(got[0].id, [7; 16]);
        assert_eq!(got[0].key.as_deref(), Some(&b"k-1"[..]));
        assert_eq!(got[0].content_type.as_deref(), Some(&b"text/plain"[..]));
        assert_eq!(
            got[0].headers,
            vec![("trace".to_string(), Bytes::from_static(b"abc"))]
        );
        assert_eq!(&got[0].body[..], b"hello");
        assert_eq!((got[1].key.clone(), got[1].headers.len()), (None, 0));
        assert_eq!(&got[1].body[..], &[0, 159, 146, 150]);
    }

    #[test]
    fn an_empty_answer_is_a_valid_frame() {
        let frame = Bytes::from(encode(std::iter::empty()).expect("encodes"));
        assert_eq!(decode(&frame).expect("decodes"), vec![]);
    }

    #[test]
    fn every_truncation_and_any_trailing_byte_is_refused() {
        let records = sample();
        let frame = encode(records.iter().map(|r| (0, r))).expect("encodes");
        for cut in 0..frame.len() {
            assert!(
                decode(&Bytes::copy_from_slice(&frame[..cut])).is_err(),
                "cut at {cut}"
            );
        }
        let mut longer = frame.clone();
        longer.push(0);
        assert!(decode(&Bytes::from(longer)).is_err());
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let records = sample();
        let base = encode(records.iter().map(|r| (0, r))).expect("encodes");
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..5_000 {
            let mut frame = base.clone();
            for _ in 0..3 {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let at = (seed as usize) % frame.len();
                frame[at] = (seed >> 32) as u8;
            }
            let _ = decode(&Bytes::from(frame));
        }
    }
}
