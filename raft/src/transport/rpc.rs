//! The checks every node-to-node RPC passes, in order, before openraft
//! sees it. Each failure is a typed [`RpcRejection`] with the HTTP status
//! the transport answers; nothing here can panic on what a peer sends.
//!
//! 1. The cluster secret (`Authorization: Cluster <secret>`), compared in
//!    constant time (401). Checked first, so an unauthenticated caller
//!    learns nothing about groups or formats.
//! 2. The group id in the path: a decimal `u32` this node hosts (404).
//! 3. The body size, against [`RPC_BODY_BYTES_MAX`] (413), before decoding.
//! 4. The bincode body: it must decode completely, with no bytes left over
//!    (400). bincode's own allocation limit is set to the body size, so a
//!    forged length prefix cannot make the decoder allocate more.

use std::fmt;

use serde::de::DeserializeOwned;
use subtle::ConstantTimeEq;

use crate::ids::GroupId;

/// Largest RPC body: 64 MiB. Append requests carry batches of entries
/// (each at most a 32 MiB engine batch); snapshots travel as segment files,
/// not as one RPC body.
pub const RPC_BODY_BYTES_MAX: usize = 64 * 1024 * 1024;

/// Shortest accepted cluster secret, so that a typo-sized secret is
/// refused at start-up rather than guessed.
pub const SECRET_BYTES_MIN: usize = 16;

/// Longest accepted cluster secret (it travels in a header).
pub const SECRET_BYTES_MAX: usize = 1024;

/// The scheme of the `Authorization` header node-to-node RPCs carry.
pub const AUTH_SCHEME: &str = "Cluster";

/// Why an RPC was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RpcRejection {
    /// No, malformed or wrong cluster secret.
    #[error("missing or wrong cluster secret")]
    Unauthorized,
    /// The path's group is not a number, or not hosted here.
    #[error("unknown group {0:?}")]
    UnknownGroup(String),
    /// The body is over `RPC_BODY_BYTES_MAX`.
    #[error("body of {size_bytes} bytes is over the {max_bytes}-byte limit")]
    BodyTooLarge {
        /// The body's size.
        size_bytes: usize,
        /// The limit.
        max_bytes: usize,
    },
    /// The body is not a bincode encoding of the expected message.
    #[error("malformed body: {0}")]
    Malformed(String),
}

impl RpcRejection {
    /// The HTTP status the transport answers with.
    pub fn status(&self) -> u16 {
        match self {
            RpcRejection::Unauthorized => 401,
            RpcRejection::UnknownGroup(_) => 404,
            RpcRejection::BodyTooLarge { .. } => 413,
            RpcRejection::Malformed(_) => 400,
        }
    }
}

/// Errors in configuring the cluster secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "cluster secret must be {SECRET_BYTES_MIN}..={SECRET_BYTES_MAX} bytes of visible ASCII, got {len_bytes} bytes"
)]
pub struct InvalidSecret {
    /// The length given.
    pub len_bytes: usize,
}

/// The secret every node of a cluster shares. `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct ClusterSecret(Vec<u8>);

impl fmt::Debug for ClusterSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClusterSecret(<redacted>)")
    }
}

impl ClusterSecret {
    /// Validates a configured secret: visible ASCII (it goes in a header),
    /// within the length bounds.
    pub fn new(secret: &str) -> Result<ClusterSecret, InvalidSecret> {
        let b = secret.as_bytes();
        let visible = b.iter().all(|c| c.is_ascii_graphic());
        if !visible || !(SECRET_BYTES_MIN..=SECRET_BYTES_MAX).contains(&b.len()) {
            return Err(InvalidSecret { len_bytes: b.len() });
        }
        Ok(ClusterSecret(b.to_vec()))
    }

    /// The `Authorization` header value that carries this secret.
    pub fn header_value(&self) -> String {
        format!("{AUTH_SCHEME} {}", String::from_utf8_lossy(&self.0))
    }

    /// Checks an `Authorization` header value. The comparison of the secret
    /// takes the same time wherever the first differing byte is (only the
    /// length can show).
    pub fn check_header(&self, header: Option<&[u8]>) -> Result<(), RpcRejection> {
        let presented = header
            .and_then(|h| h.strip_prefix(AUTH_SCHEME.as_bytes()))
            .and_then(|h| h.strip_prefix(b" "))
            .ok_or(RpcRejection::Unauthorized)?;
        if bool::from(presented.ct_eq(&self.0)) {
            Ok(())
        } else {
            Err(RpcRejection::Unauthorized)
        }
    }
}

/// Parses the group of an RPC path and checks that it is hosted here.
pub fn parse_group(
    segment: &str,
    hosted: impl Fn(GroupId) -> bool,
) -> Result<GroupId, RpcRejection> {
    // Digits only: `str::parse` would also accept a leading `+`.
    let group = segment
        .bytes()
        .all(|b| b.is_ascii_digit())
        .then(|| segment.parse::<u32>().ok())
        .flatten()
        .map(GroupId)
        .filter(|g| hosted(*g));
    group.ok_or_else(|| RpcRejection::UnknownGroup(segment.chars().take(32).collect()))
}

/// Decodes an RPC body, bounded by `RPC_BODY_BYTES_MAX`.
pub fn decode_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, RpcRejection> {
    if body.len() > RPC_BODY_BYTES_MAX {
        return Err(RpcRejection::BodyTooLarge {
            size_bytes: body.len(),
            max_bytes: RPC_BODY_BYTES_MAX,
        });
    }
    // A decoder never needs more memory than the body has bytes (bincode
    // encodes every element in at least one byte), so a length prefix that
    // claims more is refused instead of allocated.
    let config = bincode::config::standard().with_limit::<RPC_BODY_BYTES_MAX>();
    let (value, read) = bincode::serde::decode_from_slice(body, config)
        .map_err(|e| RpcRejection::Malformed(e.to_string()))?;
    if read != body.len() {
        return Err(RpcRejection::Malformed(format!(
            "{} bytes after the message",
            body.len() - read
        )));
    }
    Ok(value)
}

/// Encodes an RPC body (the same encoding `decode_body` reads).
pub fn encode_body<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, RpcRejection> {
    let config = bincode::config::standard().with_limit::<RPC_BODY_BYTES_MAX>();
    bincode::serde::encode_to_vec(value, config).map_err(|e| RpcRejection::Malformed(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret() -> ClusterSecret {
        ClusterSecret::new("correct-horse-battery-staple").expect("valid secret")
    }

    #[test]
    fn the_secret_is_checked_and_never_shown() {
        let s = secret();
        assert_eq!(s.check_header(Some(s.header_value().as_bytes())), Ok(()));
        for bad in [
            None,
            Some(&b"Cluster correct-horse-battery-stapl"[..]),
            Some(b"Cluster correct-horse-battery-staple "),
            Some(b"Bearer correct-horse-battery-staple"),
            Some(b"Clustercorrect-horse-battery-staple"),
            Some(b"Cluster "),
            Some(b""),
        ] {
            assert_eq!(
                s.check_header(bad),
                Err(RpcRejection::Unauthorized),
                "{bad:?}"
            );
        }
        assert!(!format!("{s:?}").contains("horse"));
        assert!(ClusterSecret::new("short").is_err());
        assert!(
            ClusterSecret::new("sixteen chars ok").is_err(),
            "a space is not visible ASCII"
        );
        assert!(ClusterSecret::new(&"x".repeat(1025)).is_err());
    }

    #[test]
    fn groups_must_be_plain_numbers_hosted_here() {
        let hosted = |g: GroupId| g.0 < 4;
        assert_eq!(parse_group("3", hosted), Ok(GroupId(3)));
        for bad in ["4", "+3", "-1", "03x", "", "99999999999"] {
            assert!(
                matches!(parse_group(bad, hosted), Err(RpcRejection::UnknownGroup(_))),
                "{bad}"
            );
        }
        assert_eq!(RpcRejection::UnknownGroup("9".into()).status(), 404);
    }

    #[test]
    fn bodies_decode_completely_or_are_rejected() {
        let body = encode_body(&(7u64, "entries".to_string())).expect("encode");
        assert_eq!(
            decode_body::<(u64, String)>(&body),
            Ok((7, "entries".to_string()))
        );
        let mut extra = body.clone();
        extra.push(0);
        assert!(matches!(
            decode_body::<(u64, String)>(&extra),
            Err(RpcRejection::Malformed(_))
        ));
        assert!(matches!(
            decode_body::<(u64, String)>(&body[..body.len() - 1]),
            Err(RpcRejection::Malformed(_))
        ));
        // A length prefix claiming 2^60 elements is refused, not allocated.
        let forged = [0xFF, 0, 0, 0, 0, 0, 0, 0x10, 0];
        assert!(matches!(
            decode_body::<Vec<u64>>(&forged),
            Err(RpcRejection::Malformed(_))
        ));
        let too_big = vec![0u8; RPC_BODY_BYTES_MAX + 1];
        assert_eq!(
            decode_body::<Vec<u8>>(&too_big).map_err(|e| e.status()),
            Err(413)
        );
    }
}
