//! Test support (feature `testing`): the smallest state machine openraft
//! accepts, for the storage suite, the cluster tests and the idle-groups
//! measurement until Sluice's own state machines exist (milestone C). It
//! records the applied log id, the membership and the applied commands,
//! and snapshots them as bytes. Never enabled in release binaries.

use std::io::{self, Cursor};
use std::sync::{Arc, Mutex};

use crate::glue::{Command, Reply, TypeConfig};
use futures_util::StreamExt;
use openraft::alias::{LogIdOf, SnapshotMetaOf, SnapshotOf, StoredMembershipOf};
use openraft::entry::RaftEntry;
use openraft::storage::{EntryResponder, RaftStateMachine};
use openraft::{EntryPayload, OptionalSend, RaftSnapshotBuilder, StoredMembership};

type C = TypeConfig;

#[derive(Debug, Default)]
/// What the state machine has applied.
pub struct Applied {
    /// Commands applied, in order (empty in counting mode).
    pub commands: Vec<Command>,
    /// Commands applied, and their bytes.
    pub command_count: u64,
    /// Bytes of the commands applied.
    pub command_bytes: u64,
    /// Counting mode: commands are counted, not kept.
    count_only: bool,
    /// The last applied log id.
    pub last_applied: Option<LogIdOf<C>>,
    membership: StoredMembershipOf<C>,
    snapshot: Option<(SnapshotMetaOf<C>, Vec<u8>)>,
}

/// The test state machine (see the module docs).
#[derive(Debug, Clone, Default)]
pub struct TestStateMachine {
    /// Shared with every clone.
    pub applied: Arc<Mutex<Applied>>,
}

impl TestStateMachine {
    /// A state machine that counts commands instead of keeping them (for
    /// measurements that apply gigabytes).
    pub fn counting() -> TestStateMachine {
        let sm = TestStateMachine::default();
        sm.lock().count_only = true;
        sm
    }

    /// Locks the applied state.
    pub fn lock(&self) -> std::sync::MutexGuard<'_, Applied> {
        self.applied.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl RaftSnapshotBuilder<C> for TestStateMachine {
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

impl RaftStateMachine<C> for TestStateMachine {
    type SnapshotData = Cursor<Vec<u8>>;
    type SnapshotBuilder = TestStateMachine;

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
                if let EntryPayload::Normal(command) = &entry.payload {
                    applied.command_count += 1;
                    applied.command_bytes += command.0.len() as u64;
                    if !applied.count_only {
                        applied.commands.push(command.clone());
                    }
                }
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
