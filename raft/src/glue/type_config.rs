//! Sluice's openraft type configuration.

use std::fmt;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// An encoded command proposed to a group. Opaque to openraft: each group's
/// state machine decodes its own command enum. Serialised as one byte
/// string (`serde_bytes`), not as a sequence of `u8`. Held as `Bytes` so
/// that a proposal retried through a leader change, or forwarded, is
/// shared rather than copied.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command(#[serde(with = "shared_bytes")] pub Bytes);

/// `Bytes` through `serde_bytes`: the same encoding as a `Vec<u8>` there,
/// so the WAL's entries read the same either way.
mod shared_bytes {
    use bytes::Bytes;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &Bytes, serializer: S) -> Result<S::Ok, S::Error> {
        serde_bytes::serialize(&bytes[..], serializer)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Bytes, D::Error> {
        serde_bytes::ByteBuf::deserialize(deserializer).map(|b| Bytes::from(b.into_vec()))
    }
}

/// A state machine's encoded answer to a command.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reply(#[serde(with = "serde_bytes")] pub Vec<u8>);

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "command of {} bytes", self.0.len())
    }
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "reply of {} bytes", self.0.len())
    }
}

openraft::declare_raft_types!(
    /// The openraft configuration shared by every Sluice group: node ids are
    /// `u64`, nodes are addresses, commands and replies are opaque bytes.
    pub TypeConfig:
        D = Command,
        R = Reply,
        NodeId = u64,
        Node = openraft::impls::BasicNode,
);

#[cfg(test)]
mod tests {
    use super::*;

    /// A command as it was held before it became `Bytes`.
    #[derive(Serialize, Deserialize)]
    struct VecCommand(#[serde(with = "serde_bytes")] Vec<u8>);

    #[test]
    fn a_command_encodes_as_the_byte_string_the_wal_already_holds() {
        for len in [0usize, 1, 250, 251, 70_000] {
            let bytes: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let new =
                crate::glue::codec::encode(&Command(Bytes::from(bytes.clone()))).expect("encode");
            let old = crate::glue::codec::encode(&VecCommand(bytes.clone())).expect("encode");
            assert_eq!(new, old, "{len} bytes");
            let back: Command = crate::glue::codec::decode(&old).expect("decode");
            assert_eq!(back.0, bytes);
        }
    }
}
