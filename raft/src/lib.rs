//! Raft replication for Sluice.
//!
//! - [`wal`]: the node's write-ahead log, one `sluice-engine` log holding
//!   the Raft entries, votes and commit markers of every group on the
//!   node, with group commit (one `fdatasync` per flush round however many
//!   groups wrote);
//! - [`glue`]: openraft on it: the log store (it passes openraft's storage
//!   suite), the state machine host with checkpoints, and Raft RPC over
//!   HTTP with the cluster secret;
//! - [`data`] and [`meta`]: the data groups' and the meta group's state
//!   machines, snapshots as manifests of pinned segments, and the fences
//!   around damaged partition data;
//! - [`node`]: the node runtime: the meta group and N data groups over one
//!   WAL, routing from any node to a group's leader, the scrubber and
//!   repairs from peers.

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
