//! Goal: the WAL-backed log store satisfies openraft's own storage test
//! suite (`openraft::testing::log::Suite`). Method: each of the suite's
//! cases gets a fresh WAL in a temporary directory on the real disk.
//!
//! The suite checks a log store and a state machine together. Sluice's
//! state machines (meta and data groups) are not built yet, so the suite
//! runs with the smallest state machine openraft accepts
//! (`state_machine.rs`); the log store is what is under test.

use std::sync::Arc;

use openraft::StorageError;
use openraft::testing::log::{StoreBuilder, Suite};
use openraft::type_config::TypeConfigExt;
use sluice_raft::{GroupId, GroupLogStore, TypeConfig, Wal};

use sluice_raft::testing::TestStateMachine;

type C = TypeConfig;

/// Builds a fresh WAL per suite case; the temporary directory lives as long
/// as the case (the suite's guard value).
struct Builder;

impl StoreBuilder<C, GroupLogStore, TestStateMachine, tempfile::TempDir> for Builder {
    async fn build(
        &self,
    ) -> Result<(tempfile::TempDir, GroupLogStore, TestStateMachine), StorageError<C>> {
        let dir = tempfile::tempdir().map_err(|e| StorageError::write(C::err_from_error(&e)))?;
        let wal = Wal::open(dir.path()).map_err(|e| StorageError::write(C::err_from_error(&e)))?;
        // Group 3: any group id works; not 0, so that nothing relies on it.
        Ok((
            dir,
            GroupLogStore::new(Arc::new(wal), GroupId(3)),
            TestStateMachine::default(),
        ))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wal_log_store_passes_openraft_storage_suite() -> Result<(), StorageError<C>> {
    Suite::test_all(Builder).await
}
