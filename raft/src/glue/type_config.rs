//! Sluice's openraft type configuration.

use std::fmt;

use serde::{Deserialize, Serialize};

/// An encoded command proposed to a group. Opaque to openraft: each group's
/// state machine decodes its own command enum. Serialised as one byte
/// string (`serde_bytes`), not as a sequence of `u8`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command(#[serde(with = "serde_bytes")] pub Vec<u8>);

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
