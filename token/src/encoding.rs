//! The text encodings tokenlib and Hawk use.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE, URL_SAFE_NO_PAD};

/// URL-safe base64 with padding (token ids and keys).
pub fn b64url(bytes: &[u8]) -> String {
    URL_SAFE.encode(bytes)
}

/// URL-safe base64 without padding (`fxa_kid`, `X-KeyID`).
pub fn b64url_nopad(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Decodes URL-safe base64, padded or not.
pub fn b64url_decode(text: &str) -> Option<Vec<u8>> {
    URL_SAFE
        .decode(text)
        .ok()
        .or_else(|| URL_SAFE_NO_PAD.decode(text).ok())
}

/// Standard base64 with padding (Hawk MACs and payload hashes).
pub fn b64(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    hex_into(&mut out, bytes);
    out
}

/// Appends `bytes` in lowercase hex to `out`.
pub fn hex_into(out: &mut String, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    out.reserve(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
}

/// Decodes hex (either case); `None` for odd lengths or other characters.
pub fn hex_decode(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    let digit = |c: u8| char::from(c).to_digit(16).map(|d| d as u8);
    text.as_bytes()
        .chunks(2)
        .map(|pair| Some(digit(pair[0])? << 4 | digit(pair[1])?))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips_and_refuses_junk() {
        assert_eq!(hex(&[0, 0xab, 0xff]), "00abff");
        assert_eq!(hex(&[0x00, 0x0f, 0xa5, 0xff]), "000fa5ff");
        assert_eq!(hex(&[]), "");
        assert_eq!(hex_decode("00ABff"), Some(vec![0, 0xab, 0xff]));
        assert_eq!(hex_decode("abc"), None);
        assert_eq!(hex_decode("zz"), None);
        assert_eq!(
            b64url_decode(&b64url_nopad(b"\xff\xfe")),
            Some(vec![0xff, 0xfe])
        );
    }
}
