//! Identity verification: an FxA-compatible remote verifier (`POST
//! {url}/v1/verify` with `{"token": credential}`). Local JWT verification
//! (RS256, EdDSA) is still to come.

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
    identity(&body, scope)
}

/// The identity in a verifier's answer, if it carries `scope`.
fn identity(body: &Value, scope: &str) -> Result<Identity, TokenError> {
    let invalid = || TokenError::invalid("invalid-credentials");
    let user = body
        .get("user")
        .and_then(Value::as_str)
        .filter(|u| !u.is_empty() && u.len() <= USER_BYTES_MAX && !u.contains('@'))
        .ok_or_else(invalid)?;
    let scoped = match body.get("scope") {
        Some(Value::Array(list)) => list.iter().any(|s| s.as_str() == Some(scope)),
        Some(Value::String(text)) => text.split_whitespace().any(|s| s == scope),
        _ => false,
    };
    if !scoped {
        return Err(invalid());
    }
    let generation = match body.get("generation") {
        None | Some(Value::Null) => None,
        Some(v) => Some(v.as_u64().ok_or_else(invalid)?),
    };
    Ok(Identity {
        user: user.to_string(),
        generation,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_need_a_user_and_the_scope() {
        let ok = identity(
            &json!({"user": "u1", "scope": ["sluice"], "generation": 7}),
            "sluice",
        )
        .expect("valid");
        assert_eq!(ok.generation, Some(7));
        assert!(identity(&json!({"user": "u1", "scope": "a sluice b"}), "sluice").is_ok());
        for bad in [
            json!({"scope": ["sluice"]}),
            json!({"user": "u1", "scope": ["other"]}),
            json!({"user": "u@1", "scope": ["sluice"]}),
            json!({"user": "u1", "scope": ["sluice"], "generation": "x"}),
        ] {
            assert_eq!(
                identity(&bad, "sluice").map_err(|e| e.status),
                Err("invalid-credentials"),
                "{bad}"
            );
        }
    }
}
