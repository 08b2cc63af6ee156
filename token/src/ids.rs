//! The identifiers derived around a token: `fxa_kid`, the hashed user and
//! device ids for metrics, and per-node secrets derived from a master.

use crate::encoding::{b64url_nopad, hex, hex_decode};
use crate::kdf::{hkdf_sha256, hmac_sha256};

/// HKDF info prefix of a node secret (`+ node_url`).
const NODE_SECRET_INFO: &str = "services.mozilla.com/mozsvc/v1/node_secret/";

/// `"{keys_changed_at:013}-{base64url_nopad(client_state bytes)}"`; `None`
/// when `client_state` is not hex.
pub fn fxa_kid(keys_changed_at: u64, client_state_hex: &str) -> Option<String> {
    let state = hex_decode(client_state_hex)?;
    Some(format!("{keys_changed_at:013}-{}", b64url_nopad(&state)))
}

/// `hex(HMAC-SHA256(metrics_secret, fxa_uid))[..32]`.
pub fn hashed_fxa_uid(metrics_secret: &str, fxa_uid: &str) -> String {
    let mut h = hex(&hmac_sha256(metrics_secret.as_bytes(), fxa_uid.as_bytes()));
    h.truncate(32);
    h
}

/// `hex(HMAC-SHA256(metrics_secret, hashed_fxa_uid + "none"))[..32]` (no
/// device id is known).
pub fn hashed_device_id(metrics_secret: &str, hashed_fxa_uid: &str) -> String {
    let message = format!("{hashed_fxa_uid}none");
    let mut h = hex(&hmac_sha256(metrics_secret.as_bytes(), message.as_bytes()));
    h.truncate(32);
    h
}

/// A node's secret derived from the master secret:
/// `hex(HKDF(master, info = prefix + node_url, L = len(master) / 2))`.
/// `None` for a master shorter than 2 bytes or longer than HKDF allows.
pub fn node_secret(master: &str, node_url: &str) -> Option<String> {
    let len = master.len() / 2;
    if len == 0 {
        return None;
    }
    let info = format!("{NODE_SECRET_INFO}{node_url}");
    hkdf_sha256(master.as_bytes(), None, info.as_bytes(), len).map(|k| hex(&k))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The vector in `token.md`.
    #[test]
    fn the_spec_vector() {
        assert_eq!(fxa_kid(1234, "aaaa").as_deref(), Some("0000000001234-qqo"));
        let fxa_uid = "0123456789abcdef0123456789abcdef";
        let hashed = hashed_fxa_uid("secret0", fxa_uid);
        assert_eq!(hashed, "dbf9e62f4ed48c193921dd518f0459f3");
        assert_eq!(
            hashed_device_id("secret0", &hashed),
            "cfa8d478d2144fb4de7cc770f8a17334"
        );
        assert_eq!(
            node_secret(
                "0123456789abcdef0123456789abcdef",
                "https://node1.example.com"
            )
            .as_deref(),
            Some("4af39c8679591a781bd0430ea263d815")
        );
        assert_eq!(fxa_kid(1, "xyz"), None);
        assert_eq!(node_secret("a", "n"), None);
    }
}
