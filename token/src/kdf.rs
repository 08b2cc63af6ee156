//! HMAC-SHA256 and HKDF-SHA256 (RFC 5869) as tokenlib uses them: an
//! absent salt means 32 zero bytes.

use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// HMAC-SHA256 of `message` under `key`.
pub fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    // HMAC accepts keys of any length; `new_from_slice` cannot fail here.
    let mut mac = match Hmac::<Sha256>::new_from_slice(key) {
        Ok(mac) => mac,
        Err(_) => unreachable!("HMAC takes keys of any length"),
    };
    mac.update(message);
    mac.finalize().into_bytes().into()
}

/// HKDF-SHA256 of `secret` with `salt` (`None`: 32 zero bytes) and
/// `info`, `len` bytes long (at most 255 × 32).
pub fn hkdf_sha256(secret: &[u8], salt: Option<&[u8]>, info: &[u8], len: usize) -> Option<Vec<u8>> {
    let mut out = vec![0u8; len];
    Hkdf::<Sha256>::new(salt, secret)
        .expand(info, &mut out)
        .ok()?;
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encoding::hex;

    #[test]
    fn rfc_5869_case_1() {
        let ikm = [0x0b; 22];
        let salt: Vec<u8> = (0x00..=0x0c).collect();
        let info: Vec<u8> = (0xf0..=0xf9).collect();
        let okm = hkdf_sha256(&ikm, Some(&salt), &info, 42).expect("length");
        assert_eq!(
            hex(&okm),
            "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865"
        );
        assert!(hkdf_sha256(&ikm, None, b"", 255 * 32 + 1).is_none());
    }
}
