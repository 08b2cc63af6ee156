//! A produce request as the native API receives it, before validation:
//! decoded from JSON here, or from the binary framing (`framing.rs`).

use base64::Engine as _;
use serde_json::Value;

use crate::v2::error::V2Error;

/// Most messages one produce request may carry.
pub const BATCH_MESSAGES_MAX: usize = 10_000;
/// Longest message key, in bytes.
pub const KEY_BYTES_MAX: usize = 1_024;

/// One message as the client sent it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Draft {
    /// An explicit partition (numbered from 0).
    pub partition: Option<u32>,
    /// A key: messages with one key go to one partition, in order.
    pub key: Option<Vec<u8>>,
    /// Seconds to live (the default when absent).
    pub ttl_secs: Option<u64>,
    /// The idempotent producer's sequence.
    pub sequence: Option<u64>,
    /// Client headers.
    pub headers: Vec<(String, Vec<u8>)>,
    /// The body.
    pub body: Vec<u8>,
}

/// A whole produce request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProduceRequest {
    /// The idempotent producer, if any.
    pub producer_id: Option<u64>,
    /// The messages, in order.
    pub messages: Vec<Draft>,
}

/// Decodes the JSON form: `{"producer_id"?, "messages": [{"body" |
/// "body_base64", "partition"?, "key"?, "ttl"?, "headers"?,
/// "sequence"?}]}`. Every error names the message by index.
pub fn from_json(bytes: &[u8]) -> Result<ProduceRequest, V2Error> {
    let value: Value = serde_json::from_slice(bytes)
        .map_err(|e| V2Error::bad("body", format!("invalid JSON: {e}")))?;
    let Value::Object(top) = value else {
        return Err(V2Error::bad("body", "the body must be a JSON object"));
    };
    if let Some(unknown) = top
        .keys()
        .find(|k| !matches!(k.as_str(), "producer_id" | "messages"))
    {
        return Err(V2Error::bad(
            unknown.clone(),
            format!("unknown field {unknown:?}"),
        ));
    }
    let producer_id = match top.get("producer_id") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            v.as_u64()
                .ok_or_else(|| V2Error::bad("producer_id", "must be an integer 0..2^64"))?,
        ),
    };
    let list = match top.get("messages") {
        Some(Value::Array(list)) if !list.is_empty() => list,
        Some(Value::Array(_)) | None | Some(Value::Null) => {
            return Err(V2Error::bad("messages", "at least one message is required"));
        }
        Some(_) => return Err(V2Error::bad("messages", "must be an array")),
    };
    if list.len() > BATCH_MESSAGES_MAX {
        return Err(V2Error::bad(
            "messages",
            format!("at most {BATCH_MESSAGES_MAX} messages per request"),
        ));
    }
    let messages = list
        .iter()
        .enumerate()
        .map(|(i, m)| message_from_json(m).map_err(|why| V2Error::bad_message(i, why)))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(ProduceRequest {
        producer_id,
        messages,
    })
}

fn message_from_json(m: &Value) -> Result<Draft, String> {
    let Value::Object(fields) = m else {
        return Err("a message must be a JSON object".into());
    };
    if let Some(unknown) = fields.keys().find(|k| {
        !matches!(
            k.as_str(),
            "body" | "body_base64" | "partition" | "key" | "ttl" | "headers" | "sequence"
        )
    }) {
        return Err(format!("unknown field {unknown:?}"));
    }
    let body =
        match (fields.get("body"), fields.get("body_base64")) {
            (Some(Value::String(text)), None) => text.as_bytes().to_vec(),
            (None, Some(Value::String(b64))) => base64::engine::general_purpose::STANDARD
                .decode(b64)
                .map_err(|e| format!("body_base64 is not base64: {e}"))?,
            (Some(_), Some(_)) => return Err("give body or body_base64, not both".into()),
            (None, None) => return Err("body (or body_base64) is required".into()),
            _ => return Err("body and body_base64 must be strings".into()),
        };
    let number = |name: &str, max: u64| -> Result<Option<u64>, String> {
        match fields.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_u64()
                .filter(|n| *n <= max)
                .map(Some)
                .ok_or_else(|| format!("{name} must be an integer 0..={max}")),
        }
    };
    let key = match fields.get("key") {
        None | Some(Value::Null) => None,
        Some(Value::String(k)) => Some(k.as_bytes().to_vec()),
        Some(_) => return Err("key must be a string".into()),
    };
    let headers = match fields.get("headers") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Object(map)) => map
            .iter()
            .map(|(k, v)| match v {
                Value::String(s) => Ok((k.clone(), s.as_bytes().to_vec())),
                _ => Err(format!("header {k:?} must be a string")),
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err("headers must be an object of strings".into()),
    };
    Ok(Draft {
        partition: number("partition", u64::from(u32::MAX))?.map(|p| p as u32),
        key,
        ttl_secs: number("ttl", u64::MAX)?,
        sequence: number("sequence", u64::MAX)?,
        headers,
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_batches_decode_with_every_field() {
        let req = from_json(
            br#"{"producer_id": 7, "messages": [
                {"body": "hi", "partition": 2, "key": "k", "ttl": 60,
                 "headers": {"h": "v"}, "sequence": 0},
                {"body_base64": "AAE="}]}"#,
        )
        .expect("valid");
        assert_eq!(req.producer_id, Some(7));
        assert_eq!(req.messages[0].partition, Some(2));
        assert_eq!(req.messages[0].key.as_deref(), Some(&b"k"[..]));
        assert_eq!(req.messages[0].headers, vec![("h".into(), b"v".to_vec())]);
        assert_eq!(req.messages[1].body, vec![0, 1]);
    }

    #[test]
    fn a_bad_message_is_named_by_index() {
        for (body, index) in [
            (r#"{"messages": [{"body": "a"}, {"body": 3}]}"#, 1),
            (r#"{"messages": [{"body_base64": "!!"}]}"#, 0),
            (
                r#"{"messages": [{"body": "a"}, {"body": "b", "ttl": -1}]}"#,
                1,
            ),
            (r#"{"messages": [{"body": "a", "body_base64": "AA=="}]}"#, 0),
            (r#"{"messages": [{"body": "a", "colour": "red"}]}"#, 0),
            (r#"{"messages": [{"body": "a", "headers": {"h": 1}}]}"#, 0),
        ] {
            let err = from_json(body.as_bytes()).expect_err(body);
            assert_eq!(err.code, "InvalidMessage", "{body}");
            assert_eq!(err.details["index"], index, "{body}");
        }
    }

    #[test]
    fn malformed_requests_are_refused() {
        for body in [
            &b"{"[..],
            b"[]",
            br#"{"messages": []}"#,
            br#"{"messages": {}}"#,
            br#"{"producer_id": "x", "messages": [{"body": "a"}]}"#,
            br#"{"messages": [{"body": "a"}], "extra": 1}"#,
            b"\xff\xfe",
        ] {
            let err = from_json(body).expect_err("malformed");
            assert_eq!(err.status, 400);
            assert_eq!(err.code, "InvalidRequest");
        }
    }
}
