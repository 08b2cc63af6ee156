//! Raft replication for Sluice.
//!
//! Built so far: the node's write-ahead log ([`wal`]), one `sluice-engine`
//! log holding the Raft entries, votes and commit markers of every group on
//! the node, with group commit: one `fdatasync` per flush round however
//! many groups wrote; [`glue`], the openraft log store on it (it passes
//! openraft's storage suite); and [`data`], the deterministic pieces of the
//! data groups' state machine (message ids and timestamps, idempotent
//! producer windows, the request-id window). Still to come (issue [2/5]):
//! the state machines and snapshots, the node-to-node transport and many
//! groups per process.

#![deny(missing_docs)]

mod checkpoint;
pub mod data;
pub mod glue;
mod ids;
pub mod meta;
pub mod node;
#[cfg(feature = "testing")]
pub mod testing;
pub mod transport;
pub mod wal;

pub use glue::{
    Command, GroupLogStore, GroupMachine, Hosted, HttpNetwork, RaftHost, Reply, SnapshotBytes,
    StateMachine, TypeConfig, http_client,
};
pub use ids::{GroupId, LogIndex, PartitionId, PartitionKey, ProducerId, QueueId, RequestId};
pub use wal::{FlushCallback, Wal, WalError, WalGroupState, WalStats};
