//! Identity verification: local JWTs (RS256 or EdDSA, against the keys
//! of a JWKS file, with an issuer allow-list), or an FxA-compatible remote
//! verifier (`POST {url}/v1/verify` with `{"token": credential}`).

use std::time::Duration;

use serde_json::{Value, json};

use crate::token::error::TokenError;

/// How long the verifier may take before the request gets a 503.
pub const VERIFY_TIMEOUT_MS: u64 = 5_000;
/// Longest user id accepted from a verifier.
pub const USER_BYTES_MAX: usize = 200;
/// Longest answer read from a verifier.
const ANSWER_BYTES_MAX: usize = 64 * 1024;

/// A verified identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The user id (`sub`, or the verifier's `user`).
    pub user: String,
    /// The identity's generation, when the verifier knows it.
    pub generation: Option<u64>,
    /// Who vouched for it: a JWT's `iss`, a remote verifier's `issuer`, or
    /// (when the answer names none) the remote verifier's URL. The
    /// per-issuer new-user cap counts by it.
    pub issuer: String,
}

/// Public keys and rules for local JWT verification.
pub struct LocalJwt {
    keys: jsonwebtoken::jwk::JwkSet,
    issuers: Vec<String>,
}

impl std::fmt::Debug for LocalJwt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalJwt")
            .field("keys", &self.keys.keys.len())
            .field("issuers", &self.issuers)
            .finish()
    }
}

/// Longest JWKS file read.
const JWKS_BYTES_MAX: usize = 1024 * 1024;
/// Longest JWT accepted.
const JWT_BYTES_MAX: usize = 8 * 1024;

impl LocalJwt {
    /// Reads a JWKS document; `issuers` empty means any issuer.
    pub fn from_jwks(text: &[u8], issuers: Vec<String>) -> Result<LocalJwt, String> {
        if text.len() > JWKS_BYTES_MAX {
            return Err(format!("the JWKS is over {JWKS_BYTES_MAX} bytes"));
        }
        let keys: jsonwebtoken::jwk::JwkSet =
            serde_json::from_slice(text).map_err(|e| format!("not a JWKS: {e}"))?;
        if keys.keys.is_empty() {
            return Err("the JWKS has no keys".into());
        }
        Ok(LocalJwt { keys, issuers })
    }

    /// Whether a credential has a JWT's shape (three dot-separated parts).
    pub fn looks_like_jwt(credential: &str) -> bool {
        credential.split('.').count() == 3
    }

    /// Verifies `jwt`: its key (by `kid`, else the only key), signature
    /// (RS256 or EdDSA, as the key says), `exp`, the issuer allow-list,
    /// and `scope`; the identity is `sub` and `fxa-generation`.
    pub fn verify(&self, jwt: &str, scope: &str) -> Result<Identity, TokenError> {
        use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header};
        let invalid = || TokenError::invalid("invalid-credentials");
        if jwt.len() > JWT_BYTES_MAX {
            return Err(invalid());
        }
        let header = decode_header(jwt).map_err(|_| invalid())?;
        let jwk = match &header.kid {
            Some(kid) => self.keys.find(kid),
            None if self.keys.keys.len() == 1 => self.keys.keys.first(),
            None => None,
        }
        .ok_or_else(invalid)?;
        if !matches!(header.alg, Algorithm::RS256 | Algorithm::EdDSA) {
            return Err(invalid());
        }
        let key = DecodingKey::from_jwk(jwk).map_err(|_| invalid())?;
        let mut validation = Validation::new(header.alg);
        validation.validate_aud = false;
        validation.set_required_spec_claims(&["exp", "sub"]);
        if !self.issuers.is_empty() {
            validation.set_issuer(&self.issuers);
        }
        let claims = decode::<Value>(jwt, &key, &validation)
            .map_err(|_| invalid())?
            .claims;
        let fields = Fields {
            user: "sub",
            generation: "fxa-generation",
            issuer: "iss",
        };
        identity(&claims, &fields, "", scope)
    }
}

/// Asks the verifier at `url` about `credential`; the identity must carry
/// `scope`.
pub async fn remote(
    client: &reqwest::Client,
    url: &str,
    credential: &str,
    scope: &str,
) -> Result<Identity, TokenError> {
    let answer = client
        .post(format!("{url}/v1/verify"))
        .header("content-type", "application/json")
        .timeout(Duration::from_millis(VERIFY_TIMEOUT_MS))
        .body(json!({ "token": credential }).to_string())
        .send()
        .await
        .map_err(|e| {
            tracing::warn!(error = %e, "the token verifier is unreachable");
            TokenError::unavailable()
        })?;
    let status = answer.status();
    if status.is_server_error() {
        tracing::warn!(%status, "the token verifier failed");
        return Err(TokenError::unavailable());
    }
    if !status.is_success() {
        return Err(TokenError::invalid("invalid-credentials"));
    }
    let bytes = answer
        .bytes()
        .await
        .map_err(|_| TokenError::unavailable())?;
    if bytes.len() > ANSWER_BYTES_MAX {
        return Err(TokenError::unavailable());
    }
    let body: Value =
        serde_json::from_slice(&bytes).map_err(|_| TokenError::invalid("invalid-credentials"))?;
    let fields = Fields {
        user: "user",
        generation: "generation",
        issuer: "issuer",
    };
    identity(&body, &fields, url, scope)
}

/// Where a verifier's claims keep the identity's parts.
struct Fields {
    user: &'static str,
    generation: &'static str,
    issuer: &'static str,
}

/// Longest issuer kept; a longer one is cut (it only names a cap bucket).
const ISSUER_BYTES_MAX: usize = 256;

/// The identity in verified claims (a JWT's, or a remote verifier's
/// answer): the user, which must carry `scope`, its generation, and its
/// issuer (`default_issuer` when the claims name none).
fn identity(
    claims: &Value,
    fields: &Fields,
    default_issuer: &str,
    scope: &str,
) -> Result<Identity, TokenError> {
    let invalid = || TokenError::invalid("invalid-credentials");
    let user = claims
        .get(fields.user)
        .and_then(Value::as_str)
        .filter(|u| !u.is_empty() && u.len() <= USER_BYTES_MAX && !u.contains('@'))
        .ok_or_else(invalid)?;
    let scoped = match claims.get("scope") {
        Some(Value::Array(list)) => list.iter().any(|s| s.as_str() == Some(scope)),
        Some(Value::String(text)) => text.split_whitespace().any(|s| s == scope),
        _ => false,
    };
    if !scoped {
        return Err(invalid());
    }
    let generation = match claims.get(fields.generation) {
        None | Some(Value::Null) => None,
        Some(v) => Some(v.as_u64().ok_or_else(invalid)?),
    };
    let issuer = claims
        .get(fields.issuer)
        .and_then(Value::as_str)
        .unwrap_or(default_issuer);
    let cut = (0..=issuer.len().min(ISSUER_BYTES_MAX))
        .rev()
        .find(|i| issuer.is_char_boundary(*i))
        .unwrap_or(0);
    Ok(Identity {
        user: user.to_string(),
        generation,
        issuer: issuer[..cut].to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const REMOTE: Fields = Fields {
        user: "user",
        generation: "generation",
        issuer: "issuer",
    };

    #[test]
    fn answers_need_a_user_and_the_scope() {
        let ok = identity(
            &json!({"user": "u1", "scope": ["sluice"], "generation": 7}),
            &REMOTE,
            "http://verifier",
            "sluice",
        )
        .expect("valid");
        assert_eq!(ok.generation, Some(7));
        assert_eq!(ok.issuer, "http://verifier", "the verifier vouches");
        assert!(
            identity(
                &json!({"user": "u1", "scope": "a sluice b"}),
                &REMOTE,
                "",
                "sluice"
            )
            .is_ok()
        );
        let named = identity(
            &json!({"user": "u1", "scope": "sluice", "issuer": "é".repeat(200)}),
            &REMOTE,
            "",
            "sluice",
        )
        .expect("valid");
        assert_eq!(named.issuer, "é".repeat(128), "cut at a character");
        for bad in [
            json!({"scope": ["sluice"]}),
            json!({"user": "u1", "scope": ["other"]}),
            json!({"user": "u@1", "scope": ["sluice"]}),
            json!({"user": "u1", "scope": ["sluice"], "generation": "x"}),
        ] {
            assert_eq!(
                identity(&bad, &REMOTE, "", "sluice").map_err(|e| e.status),
                Err("invalid-credentials"),
                "{bad}"
            );
        }
    }
}
