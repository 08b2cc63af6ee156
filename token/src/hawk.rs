//! Hawk request authentication (the header scheme only), as the storage
//! side checks it: header parsing, the normalized string, the MAC, the
//! payload hash, the timestamp skew and a bounded nonce cache. The token
//! in the header's `id` is verified separately (`token.rs`).

use std::collections::{BTreeMap, HashMap};

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::encoding::b64;
use crate::kdf::hmac_sha256;

/// Longest `Authorization: Hawk ...` header looked at.
pub const HEADER_BYTES_MAX: usize = 8_192;
/// Default allowed difference between a request's `ts` and the clock.
pub const SKEW_SECS_DEFAULT: u64 = 60;
/// Default number of nonces one node remembers; when full of live
/// entries, new requests are refused rather than letting a replay in.
pub const NONCES_MAX_DEFAULT: usize = 1_000_000;

/// The attributes of a Hawk header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// The token id.
    pub id: String,
    /// The client's timestamp, unix seconds.
    pub ts: u64,
    /// A client-chosen nonce.
    pub nonce: String,
    /// The request MAC, base64.
    pub mac: String,
    /// The payload hash, base64, when the client sent one.
    pub hash: Option<String>,
    /// Application data covered by the MAC.
    pub ext: Option<String>,
}

/// The request as the client sent it to this node.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// `GET`, `POST`, ...
    pub method: &'a str,
    /// Path and query, as sent.
    pub path_and_query: &'a str,
    /// The `Host` the client used (lowercased here).
    pub host: &'a str,
    /// Its port (80 for http and 443 for https when the Host has none).
    pub port: u16,
    /// The `Content-Type`, for the payload hash.
    pub content_type: &'a str,
    /// The body, for the payload hash.
    pub body: &'a [u8],
}

/// Why a Hawk request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HawkError {
    /// Not a Hawk header, or a malformed one.
    #[error("malformed Hawk header: {0}")]
    Malformed(String),
    /// The MAC does not match.
    #[error("bad Hawk MAC")]
    BadMac,
    /// The payload hash does not match the body.
    #[error("bad Hawk payload hash")]
    BadHash,
    /// `ts` is outside the allowed skew.
    #[error("stale Hawk timestamp")]
    Stale,
    /// The nonce was seen within the window.
    #[error("replayed Hawk nonce")]
    Replayed,
    /// The nonce cache is full of live entries.
    #[error("too many Hawk requests in the window")]
    Busy,
}

/// Parses `Hawk id="..", ts="..", nonce="..", mac=".." [, hash=".."]
/// [, ext=".."]` (scheme case-insensitive; every attribute once).
pub fn parse(header: &str) -> Result<Header, HawkError> {
    let bad = |why: &str| HawkError::Malformed(why.to_string());
    if header.len() > HEADER_BYTES_MAX {
        return Err(bad("too long"));
    }
    let (scheme, rest) = header.split_once(' ').ok_or_else(|| bad("no attributes"))?;
    if !scheme.eq_ignore_ascii_case("hawk") {
        return Err(bad("not the Hawk scheme"));
    }
    let mut attrs: BTreeMap<&str, &str> = BTreeMap::new();
    let mut rest = rest.trim_start();
    while !rest.is_empty() {
        let (name, after) = rest
            .split_once('=')
            .ok_or_else(|| bad("an attribute has no value"))?;
        let name = name.trim();
        let after = after
            .strip_prefix('"')
            .ok_or_else(|| bad("values are quoted"))?;
        let (value, tail) = after
            .split_once('"')
            .ok_or_else(|| bad("an unterminated value"))?;
        if !matches!(
            name,
            "id" | "ts" | "nonce" | "mac" | "hash" | "ext" | "app" | "dlg"
        ) {
            return Err(bad("an unknown attribute"));
        }
        if attrs.insert(name, value).is_some() {
            return Err(bad("a repeated attribute"));
        }
        let tail = tail.trim_start();
        rest = match tail.strip_prefix(',') {
            Some(next) => next.trim_start(),
            None if tail.is_empty() => tail,
            None => return Err(bad("attributes are separated by commas")),
        };
    }
    let required = |name: &str| {
        attrs
            .get(name)
            .map(|v| v.to_string())
            .ok_or_else(|| HawkError::Malformed(format!("{name} is required")))
    };
    let ts = required("ts")?
        .parse::<u64>()
        .map_err(|_| bad("ts is not a number"))?;
    Ok(Header {
        id: required("id")?,
        ts,
        nonce: required("nonce")?,
        mac: required("mac")?,
        hash: attrs.get("hash").map(|v| v.to_string()),
        ext: attrs.get("ext").map(|v| v.to_string()),
    })
}

/// The normalized string the MAC covers.
pub fn normalized(header: &Header, request: &Request<'_>) -> String {
    format!(
        "hawk.1.header\n{}\n{}\n{}\n{}\n{}\n{}\n{}\n{}\n",
        header.ts,
        header.nonce,
        request.method.to_ascii_uppercase(),
        request.path_and_query,
        request.host.to_ascii_lowercase(),
        request.port,
        header.hash.as_deref().unwrap_or(""),
        header.ext.as_deref().unwrap_or(""),
    )
}

/// `base64(HMAC-SHA256(key, normalized))`, the key being the token key's
/// ASCII bytes.
pub fn mac(key: &str, normalized: &str) -> String {
    b64(&hmac_sha256(key.as_bytes(), normalized.as_bytes()))
}

/// `base64(SHA-256("hawk.1.payload\n" + content type + "\n" + body +
/// "\n"))`, the content type lowercased without parameters.
pub fn payload_hash(content_type: &str, body: &[u8]) -> String {
    let media = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let mut h = Sha256::new();
    h.update(b"hawk.1.payload\n");
    h.update(media.as_bytes());
    h.update(b"\n");
    h.update(body);
    h.update(b"\n");
    b64(&h.finalize())
}

/// Checks the MAC (constant time), the payload hash when sent, and the
/// timestamp against `now_secs` within `skew_secs`. The nonce is checked
/// after this, so a forged request cannot fill the cache.
pub fn verify(
    header: &Header,
    request: &Request<'_>,
    key: &str,
    now_secs: u64,
    skew_secs: u64,
) -> Result<(), HawkError> {
    let expected = mac(key, &normalized(header, request));
    if !bool::from(expected.as_bytes().ct_eq(header.mac.as_bytes())) {
        return Err(HawkError::BadMac);
    }
    if let Some(hash) = &header.hash {
        let body_hash = payload_hash(request.content_type, request.body);
        if !bool::from(body_hash.as_bytes().ct_eq(hash.as_bytes())) {
            return Err(HawkError::BadHash);
        }
    }
    if header.ts.abs_diff(now_secs) > skew_secs {
        return Err(HawkError::Stale);
    }
    Ok(())
}

/// The nonces seen within the skew window, per token id.
#[derive(Debug)]
pub struct NonceCache {
    seen: HashMap<(String, String), u64>,
    max: usize,
    window_secs: u64,
}

impl NonceCache {
    /// A cache of at most `max` nonces, each kept `window_secs` (the
    /// skew on either side) after its timestamp.
    pub fn new(max: usize, skew_secs: u64) -> NonceCache {
        NonceCache {
            seen: HashMap::new(),
            max: max.max(1),
            window_secs: skew_secs.saturating_mul(2),
        }
    }

    /// Records (id, nonce) at `ts`; refuses a nonce seen in the window.
    pub fn check(
        &mut self,
        id: &str,
        nonce: &str,
        ts: u64,
        now_secs: u64,
    ) -> Result<(), HawkError> {
        let key = (id.to_string(), nonce.to_string());
        if self.seen.contains_key(&key) {
            return Err(HawkError::Replayed);
        }
        if self.seen.len() >= self.max {
            let horizon = now_secs.saturating_sub(self.window_secs);
            self.seen.retain(|_, at| *at >= horizon);
            if self.seen.len() >= self.max {
                return Err(HawkError::Busy);
            }
        }
        self.seen.insert(key, ts);
        Ok(())
    }

    /// Nonces remembered.
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    /// Whether none are remembered.
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "LGqI6bMSgAqT0Vg3_amqXIs6ebwKinC5z9dkmcqia9M=";

    fn vector_request() -> Request<'static> {
        Request {
            method: "GET",
            path_and_query: "/1.5/42/info/collections",
            host: "node1.example.com",
            port: 443,
            content_type: "",
            body: b"",
        }
    }

    /// The vector in `token.md`, made with mohawk 1.1.0.
    #[test]
    fn the_spec_vector() {
        let header = parse(&format!(
            "Hawk id=\"x\", ts=\"1700000000\", nonce=\"abc123\", mac=\"{}\"",
            "Rnc1hD9sVgTWif8cshCiLsg/C4Lr2b/GHhqe3WucQ9Q="
        ))
        .expect("parses");
        let req = vector_request();
        assert_eq!(mac(KEY, &normalized(&header, &req)), header.mac);
        assert_eq!(verify(&header, &req, KEY, 1_700_000_030, 60), Ok(()));
        assert_eq!(
            verify(&header, &req, KEY, 1_700_000_061, 60),
            Err(HawkError::Stale)
        );
        assert_eq!(
            verify(&header, &req, "other", 1_700_000_000, 60),
            Err(HawkError::BadMac)
        );
        let moved = Request { port: 80, ..req };
        assert_eq!(
            verify(&header, &moved, KEY, 1_700_000_000, 60),
            Err(HawkError::BadMac)
        );
    }

    #[test]
    fn payload_hashes_are_checked_when_sent() {
        let body = b"{\"a\": 1}";
        let hash = payload_hash("Application/JSON; charset=utf-8", body);
        let mut header = Header {
            id: "x".into(),
            ts: 100,
            nonce: "n".into(),
            mac: String::new(),
            hash: Some(hash),
            ext: Some("e".into()),
        };
        let req = Request {
            method: "post",
            content_type: "application/json",
            body,
            ..vector_request()
        };
        header.mac = mac(KEY, &normalized(&header, &req));
        assert_eq!(verify(&header, &req, KEY, 100, 60), Ok(()));
        let other = Request {
            body: b"{\"a\": 2}",
            ..req
        };
        assert_eq!(
            verify(&header, &other, KEY, 100, 60),
            Err(HawkError::BadHash)
        );
    }

    #[test]
    fn malformed_headers_are_refused() {
        for bad in [
            "Bearer x",
            "Hawk",
            "Hawk id=\"a\"",
            "Hawk id=\"a\", ts=\"x\", nonce=\"n\", mac=\"m\"",
            "Hawk id=a, ts=\"1\", nonce=\"n\", mac=\"m\"",
            "Hawk id=\"a\", id=\"b\", ts=\"1\", nonce=\"n\", mac=\"m\"",
            "Hawk id=\"a\" ts=\"1\", nonce=\"n\", mac=\"m\"",
            "Hawk id=\"a\", ts=\"1\", nonce=\"n\", mac=\"m\", evil=\"1\"",
            "Hawk id=\"a, ts=\"1\"",
        ] {
            assert!(matches!(parse(bad), Err(HawkError::Malformed(_))), "{bad}");
        }
        assert!(parse(&format!("Hawk id=\"{}\"", "a".repeat(HEADER_BYTES_MAX))).is_err());
        let ok = parse("hawk id=\"a\",ts=\"1\",nonce=\"n\",mac=\"m\",ext=\"\"").expect("parses");
        assert_eq!(ok.ext.as_deref(), Some(""));
    }

    #[test]
    fn nonces_are_refused_within_the_window_and_the_cache_is_bounded() {
        let mut cache = NonceCache::new(2, 60);
        assert_eq!(cache.check("t", "n1", 1_000, 1_000), Ok(()));
        assert_eq!(
            cache.check("t", "n1", 1_000, 1_001),
            Err(HawkError::Replayed)
        );
        assert_eq!(
            cache.check("u", "n1", 1_000, 1_001),
            Ok(()),
            "nonces are per token"
        );
        // Full of live nonces: refused, not evicted.
        assert_eq!(cache.check("t", "n2", 1_001, 1_001), Err(HawkError::Busy));
        // Once they leave the window, room is made.
        assert_eq!(cache.check("t", "n2", 1_200, 1_200), Ok(()));
        assert_eq!(cache.len(), 1);
    }
}
