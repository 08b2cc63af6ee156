//! Goal: the WAL-backed log store satisfies openraft's own storage test
//! suite (`openraft::testing::log::Suite`). Method: each of the suite's
//! cases gets a fresh WAL in a temporary directory on the real disk.
//!
//! The suite checks a log store and a state machine together. Sluice's
//! state machines (meta and data groups) are not built yet, so this file
//! carries the smallest state machine the suite accepts: it records the
//! applied log id and membership and snapshots them. It exists to drive the
//! suite; the log store is what is under test.

use std::io::{self, Cursor};
use std::sync::{Arc, Mutex};

use futures_util::StreamExt;
use openraft::alias::{LogIdOf, SnapshotMetaOf, SnapshotOf, StoredMembershipOf};
use openraft::entry::RaftEntry;
use openraft::storage::{EntryResponder, RaftStateMachine};
use openraft::testing::log::{StoreBuilder, Suite};
use openraft::type_config::TypeConfigExt;
use openraft::{OptionalSend, RaftSnapshotBuilder, StorageError, StoredMembership};
use sluice_raft::{GroupId, GroupLogStore, Reply, TypeConfig, Wal};

type C = TypeConfig;

#[derive(Debug, Default)]
struct Applied {
    last_applied: Option<LogIdOf<C>>,
    membership: StoredMembershipOf<C>,
    snapshot: Option<(SnapshotMetaOf<C>, Vec<u8>)>,
}

/// The suite's state machine (see the module docs).
#[derive(Debug, Clone, Default)]
struct SuiteStateMachine {
    applied: Arc<Mutex<Applied>>,
}

impl SuiteStateMachine {
    fn lock(&self) -> std::sync::MutexGuard<'_, Applied> {
        self.applied.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl RaftSnapshotBuilder<C> for SuiteStateMachine {
    type SnapshotData = Cursor<Vec<u8>>;

    async fn build_snapshot(&mut self) -> Result<SnapshotOf<C, Self::SnapshotData>, io::Error> {
        let mut applied = self.lock();
        let meta = SnapshotMetaOf::<C> {
            last_log_id: applied.last_applied,
            last_membership: applied.membership.clone(),
        };
        let data = format!("{:?}", meta.last_log_id).into_bytes();
        applied.snapshot = Some((meta.clone(), data.clone()));
        Ok(SnapshotOf::<C, _> {
            meta,
            snapshot: Cursor::new(data),
        })
    }
}

impl RaftStateMachine<C> for SuiteStateMachine {
    type SnapshotData = Cursor<Vec<u8>>;
    type SnapshotBuilder = SuiteStateMachine;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogIdOf<C>>, StoredMembershipOf<C>), io::Error> {
        let applied = self.lock();
        Ok((applied.last_applied, applied.membership.clone()))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: futures_util::Stream<Item = Result<EntryResponder<C>, io::Error>>
            + Unpin
            + OptionalSend,
    {
        while let Some(item) = entries.next().await {
            let (entry, responder) = item?;
            {
                let mut applied = self.lock();
                applied.last_applied = Some(entry.log_id());
                if let Some(membership) = entry.get_membership() {
                    applied.membership = StoredMembership::new(Some(entry.log_id()), membership);
                }
            }
            if let Some(responder) = responder {
                responder.send(Reply::default());
            }
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMetaOf<C>,
        snapshot: Self::SnapshotData,
    ) -> Result<(), io::Error> {
        let mut applied = self.lock();
        applied.last_applied = meta.last_log_id;
        applied.membership = meta.last_membership.clone();
        applied.snapshot = Some((meta.clone(), snapshot.into_inner()));
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<SnapshotOf<C, Self::SnapshotData>>, io::Error> {
        Ok(self
            .lock()
            .snapshot
            .clone()
            .map(|(meta, data)| SnapshotOf::<C, _> {
                meta,
                snapshot: Cursor::new(data),
            }))
    }
}

/// Builds a fresh WAL per suite case; the temporary directory lives as long
/// as the case (the suite's guard value).
struct Builder;

impl StoreBuilder<C, GroupLogStore, SuiteStateMachine, tempfile::TempDir> for Builder {
    async fn build(
        &self,
    ) -> Result<(tempfile::TempDir, GroupLogStore, SuiteStateMachine), StorageError<C>> {
        let dir = tempfile::tempdir().map_err(|e| StorageError::write(C::err_from_error(&e)))?;
        let wal = Wal::open(dir.path()).map_err(|e| StorageError::write(C::err_from_error(&e)))?;
        // Group 3: any group id works; not 0, so that nothing relies on it.
        Ok((
            dir,
            GroupLogStore::new(Arc::new(wal), GroupId(3)),
            SuiteStateMachine::default(),
        ))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wal_log_store_passes_openraft_storage_suite() -> Result<(), StorageError<C>> {
    Suite::test_all(Builder).await
}
