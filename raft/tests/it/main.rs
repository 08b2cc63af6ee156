//! Integration tests of `sluice-raft`, in one binary: the node WAL
//! (`common`, `crash`, `group_commit`, `replay`) and openraft's storage
//! suite run against the WAL-backed log store (`storage_suite`), and the
//! RPC input checks (`rpc_input`).

mod cluster;
mod common;
mod crash;
mod data;
mod data_cluster;
mod group_commit;
mod node;
mod replay;
mod rpc_input;
mod storage_suite;
