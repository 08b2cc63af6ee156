//! Tokens byte-compatible with tokenlib 2.0.
//!
//! `id = base64url(payload || HMAC-SHA256(sig_key, payload))` and
//! `key = base64url(HKDF(secret, salt = payload.salt, info = prefix + id))`,
//! with `sig_key = HKDF(secret, info = signing prefix)`. The payload bytes
//! are checked exactly as the issuer wrote them: never re-serialized
//! before the HMAC is verified.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use subtle::ConstantTimeEq;

use crate::encoding::{b64url, b64url_decode};
use crate::kdf::{hkdf_sha256, hmac_sha256};

/// HKDF info of the signing key.
const SIGNING_INFO: &[u8] = b"services.mozilla.com/tokenlib/v1/signing";
/// HKDF info prefix of a token's derived key (`+ id`).
const DERIVE_INFO: &str = "services.mozilla.com/tokenlib/v1/derive/";
/// Length of the HMAC that ends a token's bytes.
const SIGNATURE_BYTES: usize = 32;
/// Longest token id accepted (a payload of a few hundred bytes, encoded).
pub const TOKEN_ID_BYTES_MAX: usize = 4_096;

/// What a token says. The identity fields default to empty, so tokens
/// from other tokenlib issuers that omit them still verify.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Payload {
    /// The user's numeric id on its node.
    pub uid: u64,
    /// The node (service URL) the token is for.
    pub node: String,
    /// Expiry, unix seconds (tokenlib may write a float).
    pub expires: f64,
    /// 6 hex characters: the derived key's HKDF salt.
    pub salt: String,
    /// The identity provider's user id.
    #[serde(default)]
    pub fxa_uid: String,
    /// `keys_changed_at`-`client_state` (see `ids::fxa_kid`).
    #[serde(default)]
    pub fxa_kid: String,
    /// Metrics id of the user.
    #[serde(default)]
    pub hashed_fxa_uid: String,
    /// Metrics id of the device.
    #[serde(default)]
    pub hashed_device_id: String,
}

/// A token as handed to a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    /// The token (Hawk id).
    pub id: String,
    /// Its derived secret (Hawk key).
    pub key: String,
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not base64, too short or too long, or not a JSON payload.
    #[error("malformed token")]
    Malformed,
    /// No configured secret signed it.
    #[error("bad token signature")]
    BadSignature,
    /// Its `expires` is at or before now.
    #[error("expired token")]
    Expired,
}

/// The signing key of `secret` (the UTF-8 bytes of the secret string).
pub fn signing_key(secret: &str) -> [u8; 32] {
    let mut key = [0u8; 32];
    if let Some(k) = hkdf_sha256(secret.as_bytes(), None, SIGNING_INFO, 32) {
        key.copy_from_slice(&k);
    }
    key
}

/// Signs payload bytes exactly as given and derives the token's key.
pub fn sign(secret: &str, payload: &[u8], salt: &str) -> Token {
    let mut bytes = payload.to_vec();
    bytes.extend_from_slice(&hmac_sha256(&signing_key(secret), payload));
    let id = b64url(&bytes);
    let key = derived_key(secret, salt, &id);
    Token { id, key }
}

/// Makes a token for `payload` (compact JSON; tokenlib reads it).
pub fn make(secret: &str, payload: &Payload) -> Result<Token, TokenError> {
    let bytes = serde_json::to_vec(payload).map_err(|_| TokenError::Malformed)?;
    Ok(sign(secret, &bytes, &payload.salt))
}

/// The key of token `id` under `secret`.
pub fn derived_key(secret: &str, salt: &str, id: &str) -> String {
    let info = format!("{DERIVE_INFO}{id}");
    let key = hkdf_sha256(
        secret.as_bytes(),
        Some(salt.as_bytes()),
        info.as_bytes(),
        32,
    )
    .unwrap_or_default();
    b64url(&key)
}

/// What a token claims, before its signature is checked: only for choosing
/// which secret to verify it with (its `node`). Never trust it otherwise.
pub fn unverified_payload(id: &str) -> Result<Payload, TokenError> {
    if id.len() > TOKEN_ID_BYTES_MAX {
        return Err(TokenError::Malformed);
    }
    let bytes = b64url_decode(id).ok_or(TokenError::Malformed)?;
    if bytes.len() <= SIGNATURE_BYTES {
        return Err(TokenError::Malformed);
    }
    serde_json::from_slice(&bytes[..bytes.len() - SIGNATURE_BYTES])
        .map_err(|_| TokenError::Malformed)
}

/// A verified token: its payload and, under the secret that signed it,
/// its key.
#[derive(Debug, Clone, PartialEq)]
pub struct Verified {
    /// What it says.
    pub payload: Payload,
    /// Its Hawk key.
    pub key: String,
}

/// Verifies token `id` against each of `secrets` (newest first: secrets
/// rotate), then its expiry against `now_secs`.
pub fn verify(id: &str, secrets: &[&str], now_secs: f64) -> Result<Verified, TokenError> {
    if id.len() > TOKEN_ID_BYTES_MAX {
        return Err(TokenError::Malformed);
    }
    let bytes = b64url_decode(id).ok_or(TokenError::Malformed)?;
    if bytes.len() <= SIGNATURE_BYTES {
        return Err(TokenError::Malformed);
    }
    let (payload, signature) = bytes.split_at(bytes.len() - SIGNATURE_BYTES);
    let secret = secrets
        .iter()
        .find(|s| bool::from(hmac_sha256(&signing_key(s), payload).ct_eq(signature)))
        .ok_or(TokenError::BadSignature)?;
    let value: Value = serde_json::from_slice(payload).map_err(|_| TokenError::Malformed)?;
    let payload: Payload = serde_json::from_value(value).map_err(|_| TokenError::Malformed)?;
    if payload.expires <= now_secs {
        return Err(TokenError::Expired);
    }
    let key = derived_key(secret, &payload.salt, id);
    Ok(Verified { payload, key })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encoding::hex;

    const PAYLOAD: &str = r#"{"uid": 42, "node": "https://node1.example.com", "expires": 2000000000, "salt": "a1b2c3", "fxa_uid": "0123456789abcdef0123456789abcdef", "fxa_kid": "0000000001234-qqo", "hashed_fxa_uid": "h1", "hashed_device_id": "h2"}"#;
    const ID: &str = "eyJ1aWQiOiA0MiwgIm5vZGUiOiAiaHR0cHM6Ly9ub2RlMS5leGFtcGxlLmNvbSIsICJleHBpcmVzIjogMjAwMDAwMDAwMCwgInNhbHQiOiAiYTFiMmMzIiwgImZ4YV91aWQiOiAiMDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWYiLCAiZnhhX2tpZCI6ICIwMDAwMDAwMDAxMjM0LXFxbyIsICJoYXNoZWRfZnhhX3VpZCI6ICJoMSIsICJoYXNoZWRfZGV2aWNlX2lkIjogImgyIn0ZGDeg8W8f-w-arf-Vy3Vtq4NTm-MRt4NyOSwrr5Undw==";
    const KEY: &str = "LGqI6bMSgAqT0Vg3_amqXIs6ebwKinC5z9dkmcqia9M=";

    /// The vector in `token.md`, made with tokenlib 2.0.0.
    #[test]
    fn the_spec_vector_signs_and_verifies() {
        assert_eq!(
            hex(&signing_key("secret0")),
            "d97f4804f510ebf3161e7c140bde92f3e988b59f5d90dd38e7bf5382ddddaf91"
        );
        let token = sign("secret0", PAYLOAD.as_bytes(), "a1b2c3");
        assert_eq!(token.id, ID);
        assert_eq!(token.key, KEY);
        let verified = verify(ID, &["other", "secret0"], 1_700_000_000.0).expect("valid");
        assert_eq!(verified.key, KEY);
        assert_eq!(verified.payload.uid, 42);
        assert_eq!(verified.payload.node, "https://node1.example.com");
    }

    #[test]
    fn tampered_expired_and_malformed_tokens_are_refused() {
        assert_eq!(verify(ID, &["secret1"], 0.0), Err(TokenError::BadSignature));
        assert_eq!(
            verify(ID, &["secret0"], 2_000_000_000.0),
            Err(TokenError::Expired)
        );
        let mut bytes = b64url_decode(ID).expect("base64");
        bytes[10] ^= 1;
        assert_eq!(
            verify(&b64url(&bytes), &["secret0"], 0.0),
            Err(TokenError::BadSignature)
        );
        for bad in ["", "!!!", "AAAA", &"A".repeat(TOKEN_ID_BYTES_MAX + 4)] {
            assert_eq!(
                verify(bad, &["secret0"], 0.0),
                Err(TokenError::Malformed),
                "{bad:.20}"
            );
        }
        // Validly signed bytes that are not a payload.
        let junk = sign("secret0", b"[1, 2]", "aaaaaa");
        assert_eq!(
            verify(&junk.id, &["secret0"], 0.0),
            Err(TokenError::Malformed)
        );
    }

    #[test]
    fn made_tokens_verify_and_float_expiries_are_read() {
        let payload: Payload = serde_json::from_str(PAYLOAD).expect("payload");
        let token = make("s", &payload).expect("token");
        let verified = verify(&token.id, &["s"], 1.0).expect("valid");
        assert_eq!(verified.payload, payload);
        assert_eq!(verified.key, token.key);
        let float = PAYLOAD.replace("2000000000", "2000000000.5");
        let token = sign("s", float.as_bytes(), "a1b2c3");
        let verified = verify(&token.id, &["s"], 2_000_000_000.0).expect("not yet expired");
        assert_eq!(verified.payload.expires, 2_000_000_000.5);
    }
}
