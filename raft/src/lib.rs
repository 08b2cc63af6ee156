//! Raft replication for Sluice (not yet built; see issue [2/5]).
//!
//! This crate will own the openraft glue: one write-ahead log per node on a
//! `sluice-engine` log with group commit, the meta and data state machines,
//! snapshots as segment manifests, and the authenticated node-to-node
//! transport. It exists now so the workspace shows the architecture.
