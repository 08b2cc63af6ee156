//! Integration tests of the node WAL (`sluice_raft::wal`), in one binary.

mod common;
mod crash;
mod group_commit;
mod replay;
