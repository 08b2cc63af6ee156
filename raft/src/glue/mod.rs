//! The only module that imports openraft (an upgrade touches this folder).
//!
//! - `type_config.rs`: one openraft configuration for every group. Commands
//!   travel as opaque bytes; each state machine decodes its own command
//!   enum, so the meta and data groups share one configuration.
//! - `codec.rs`: how openraft values become WAL payloads (bincode 2).
//! - `log_store.rs`: a group's Raft log and vote, stored in the node WAL.
//! - `entry_cache.rs`: the newest entries of a group's log, kept in memory
//!   so that apply and replication read them without the WAL.
//! - `state_machine.rs`: openraft's state-machine traits over a Sluice
//!   `GroupMachine`; a snapshot is a checkpoint.
//! - `cluster.rs`: forming a cluster, membership changes, linearizable
//!   reads, with typed errors.
//! - `network.rs`: Raft RPC over HTTP, client (`HttpNetwork`) and server
//!   (`RaftHost::router`).

pub mod cluster;
pub(crate) mod codec;
mod entry_cache;
mod log_store;
mod network;
mod state_machine;
mod type_config;

pub use log_store::GroupLogStore;
pub use network::{
    BatchCopyError, BatchSource, ForwardFailed, HttpNetwork, HttpPeer, HttpSegmentFetcher,
    LeaderClient, RaftHost, SnapshotBytes, http_client,
};
pub use state_machine::{GroupMachine, Hosted, Prepared, StateMachine};
pub use type_config::{Command, Reply, TypeConfig};
