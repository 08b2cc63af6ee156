//! What the meta group's log holds, and what applying it answers.

use serde::{Deserialize, Serialize};
use sluice_engine::Timestamp;

use crate::ids::{GroupId, QueueId, RequestId};

/// Longest application or queue name, in bytes.
pub const NAME_BYTES_MAX: usize = 50;
/// Most partitions a queue may have (the v1 API allows fewer).
pub const PARTITIONS_MAX: u32 = 1_000;
/// Most principles on one queue.
pub const PRINCIPLES_MAX: usize = 100;
/// Longest principle, in bytes.
pub const PRINCIPLE_BYTES_MAX: usize = 256;
/// Most keys per application.
pub const APP_KEYS_MAX: usize = 100;
/// Most applications.
pub const APPS_MAX: usize = 10_000;
/// Most queues over all applications.
pub const QUEUES_MAX: usize = 1_000_000;
/// Most data groups.
pub const DATA_GROUPS_MAX: u32 = 4_096;

/// One proposal to the meta group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetaProposal {
    /// Same for every retry of one client request.
    pub request_id: RequestId,
    /// The leader's clock when it proposed (creation times come from it).
    pub proposed_at: Timestamp,
    /// What to do.
    pub command: MetaCommand,
}

impl MetaProposal {
    /// The proposal as the bytes of a Raft command.
    pub fn encode(&self) -> std::io::Result<Vec<u8>> {
        Ok(crate::glue::codec::encode(self)?.to_vec())
    }
}

/// Who may read a queue without being one of its principles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum QueueType {
    /// Only the owning application and the principles.
    #[default]
    User,
    /// Anyone may read, without credentials.
    Public,
}

/// How reads of a queue are served (writes always commit on a majority).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Consistency {
    /// A follower may serve reads from its own state.
    Weak,
    /// Reads are linearizable.
    #[default]
    Strong,
    /// Reads are linearizable (kept distinct for the v1 API).
    VeryStrong,
}

/// A queue's settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueSettings {
    /// Partition count (only grows).
    pub partitions: u32,
    /// Type.
    pub queue_type: QueueType,
    /// Consistency of reads.
    pub consistency: Consistency,
    /// Who besides the application may read and delete (`app:x`,
    /// `bid:a@b.c`, `user:uid`).
    pub principles: Vec<String>,
}

/// A queue as the meta group knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Queue {
    /// Internal id: a re-created name gets a new one.
    pub id: QueueId,
    /// The owning application.
    pub app: String,
    /// The name, unique within the application.
    pub name: String,
    /// The data group that holds its partitions.
    pub group: GroupId,
    /// When it was created.
    pub created_at: Timestamp,
    /// Its settings.
    pub settings: QueueSettings,
}

/// The commands of the meta group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MetaCommand {
    /// Declares the data groups (at cluster formation; later, to add more).
    /// Groups are never removed.
    AddDataGroups {
        /// The groups.
        groups: Vec<GroupId>,
    },
    /// Records a node's public URL (where clients and peers reach it).
    SetNode {
        /// The node's Raft id.
        node: u64,
        /// Its public URL.
        public_url: String,
    },
    /// Adds a key to an application, creating the application if needed.
    /// Keys are stored as SHA-256 digests, never in clear.
    AddAppKey {
        /// The application.
        app: String,
        /// SHA-256 of the key.
        key_digest: [u8; 32],
    },
    /// Creates a queue.
    CreateQueue {
        /// The owning application.
        app: String,
        /// The name.
        name: String,
        /// The settings.
        settings: QueueSettings,
        /// The group to place it on when the token server pinned its only
        /// user to one; else the data group with the fewest partitions.
        pinned_group: Option<GroupId>,
    },
    /// Changes a queue's settings; `None` keeps the current value.
    UpdateQueue {
        /// The owning application.
        app: String,
        /// The name.
        name: String,
        /// A larger partition count.
        partitions: Option<u32>,
        /// A new type.
        queue_type: Option<QueueType>,
        /// A new consistency.
        consistency: Option<Consistency>,
        /// New principles.
        principles: Option<Vec<String>>,
    },
    /// Deletes a queue (its data group then drops its partitions).
    DeleteQueue {
        /// The owning application.
        app: String,
        /// The name.
        name: String,
    },
    /// A token-server assignment change (logins, nodes, purges). Appended
    /// last: variant numbers are the encoding.
    Token(sluice_token::assign::Command),
}

/// What applying a meta proposal answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MetaReply {
    /// Done.
    Done,
    /// The queue as it now is (create, update) or was (delete).
    Queue(Queue),
    /// Refused whole; nothing changed.
    Refused(MetaRefusal),
    /// A token-server command's answer.
    Token(sluice_token::assign::Reply),
}

impl MetaReply {
    /// Decodes the bytes of a Raft reply.
    pub fn decode(bytes: &[u8]) -> std::io::Result<MetaReply> {
        crate::glue::codec::decode(bytes)
    }
}

/// Why the meta group refused a proposal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum MetaRefusal {
    /// No such application.
    #[error("no such application: {0}")]
    UnknownApp(String),
    /// No such queue.
    #[error("no such queue: {0}")]
    UnknownQueue(String),
    /// The name is taken.
    #[error("queue {0} already exists")]
    QueueExists(String),
    /// Partitions can only grow.
    #[error("partitions can only grow (the queue has {0})")]
    PartitionsShrink(u32),
    /// No data group exists to place a queue on.
    #[error("the cluster has no data groups")]
    NoDataGroups,
    /// A field breaks a rule (the message names it).
    #[error("{field}: {reason}")]
    Invalid {
        /// The field.
        field: String,
        /// The rule.
        reason: String,
    },
    /// A bound on the whole state (applications, queues, keys).
    #[error("{0}")]
    Full(String),
    /// The proposal's bytes do not decode.
    #[error("undecodable proposal: {0}")]
    Undecodable(String),
}
