//! Integration tests of `sluice-raft`, in one binary: the node WAL
//! (`common`, `crash`, `group_commit`, `replay`) and openraft's storage
//! suite run against the WAL-backed log store (`storage_suite`).

mod common;
mod crash;
mod group_commit;
mod replay;
mod storage_suite;
