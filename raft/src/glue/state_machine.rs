//! openraft's state-machine traits over a Sluice [`GroupMachine`].
//!
//! The machine knows nothing of openraft: it applies command bytes, and
//! saves an opaque "Raft state" (the applied log id and the membership,
//! encoded here) inside its own checkpoint, so the two are durable
//! together. A snapshot *is* a checkpoint: openraft purges its log only up
//! to a snapshot, so the WAL always holds every entry after the last
//! checkpoint, which a restart replays.

use bytes::Bytes;
use std::io;
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};

use futures_util::StreamExt;
use openraft::alias::{LogIdOf, SnapshotMetaOf, SnapshotOf, StoredMembershipOf};
use openraft::entry::RaftEntry;
use openraft::storage::{EntryResponder, RaftStateMachine};
use openraft::{EntryPayload, OptionalSend, RaftSnapshotBuilder, StoredMembership};

use crate::glue::codec;
use crate::glue::network::SnapshotBytes;
use crate::glue::{Reply, TypeConfig};

type C = TypeConfig;

/// A group's state machine as the Raft glue drives it.
pub trait GroupMachine: Send + Sync + 'static {
    /// Applies one committed command and returns the encoded reply. Must be
    /// deterministic. An error stops the group on this node: its state can
    /// no longer follow the log.
    fn apply(&mut self, command: &[u8]) -> io::Result<Vec<u8>>;
    /// Makes everything applied durable together with `raft_state`, and
    /// returns the snapshot data describing it (under the write lock).
    fn checkpoint(&mut self, raft_state: Vec<u8>) -> io::Result<Bytes>;
    /// Captures a checkpoint of the state as applied now, under the read
    /// lock, for [`Prepared::write`] to write with no lock held (apply goes
    /// on) and [`GroupMachine::finish_checkpoint`] to record under the
    /// write lock. `None`: the machine checkpoints only through
    /// [`GroupMachine::checkpoint`].
    fn prepare_checkpoint(&self, raft_state: Vec<u8>) -> io::Result<Option<Box<dyn Prepared>>> {
        let _ = raft_state;
        Ok(None)
    }
    /// Records a checkpoint `prepare_checkpoint` captured and `write`
    /// wrote; returns the snapshot data describing it.
    fn finish_checkpoint(&mut self, prepared: Box<dyn Prepared>) -> io::Result<Bytes> {
        let _ = prepared;
        Err(io::Error::other("this machine prepares no checkpoints"))
    }
    /// The Raft state saved by the last checkpoint (empty if none).
    fn raft_state(&self) -> &[u8];
    /// Replaces the whole state with a snapshot built by another replica,
    /// durably, with `raft_state`.
    fn install(&mut self, raft_state: Vec<u8>, snapshot: &[u8]) -> io::Result<()>;
}

/// A checkpoint captured at one applied index, written with no lock held.
pub trait Prepared: Send + 'static {
    /// Makes the captured data durable and writes the checkpoint; the
    /// outcome is kept for `finish_checkpoint`.
    fn write(&mut self);
    /// For `finish_checkpoint` to recover its own type.
    fn into_any(self: Box<Self>) -> Box<dyn std::any::Any>;
}

/// The machine and what openraft needs to know about it.
#[derive(Debug)]
pub struct Hosted<M> {
    machine: M,
    last_applied: Option<LogIdOf<C>>,
    membership: StoredMembershipOf<C>,
    /// Shared, not copied, by every reader of it: a checkpoint's data is
    /// megabytes when the request window is full.
    snapshot: Option<(SnapshotMetaOf<C>, Bytes)>,
}

impl<M> Hosted<M> {
    /// The machine, for reads.
    pub fn machine(&self) -> &M {
        &self.machine
    }

    /// The snapshot meta of the state as applied now.
    fn snapshot_meta(&self) -> SnapshotMetaOf<C> {
        SnapshotMetaOf::<C> {
            last_log_id: self.last_applied,
            last_membership: self.membership.clone(),
        }
    }

    /// The index of the last applied entry (0 before any).
    pub fn applied_index(&self) -> u64 {
        self.last_applied.map_or(0, |id| id.index)
    }
}

/// openraft's state machine (and snapshot builder) for one group; clones
/// share the machine, so the server reads through one while openraft
/// applies through another.
#[derive(Debug)]
pub struct StateMachine<M> {
    shared: Arc<RwLock<Hosted<M>>>,
    /// Held through a checkpoint or a snapshot install.
    checkpoints: Arc<Mutex<()>>,
}

impl<M> Clone for StateMachine<M> {
    fn clone(&self) -> Self {
        StateMachine {
            shared: Arc::clone(&self.shared),
            checkpoints: Arc::clone(&self.checkpoints),
        }
    }
}

impl<M: GroupMachine> StateMachine<M> {
    /// Hosts `machine`, restoring the applied log id and membership its last
    /// checkpoint saved.
    pub fn new(machine: M) -> io::Result<StateMachine<M>> {
        let (last_applied, membership) = if machine.raft_state().is_empty() {
            (None, StoredMembership::default())
        } else {
            codec::decode::<(Option<LogIdOf<C>>, StoredMembershipOf<C>)>(machine.raft_state())?
        };
        Ok(StateMachine {
            shared: Arc::new(RwLock::new(Hosted {
                machine,
                last_applied,
                membership,
                snapshot: None,
            })),
            checkpoints: Arc::new(Mutex::new(())),
        })
    }

    /// Reads the hosted machine.
    pub fn read(&self) -> RwLockReadGuard<'_, Hosted<M>> {
        self.shared.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Changes the hosted machine outside apply, for a repair that leaves
    /// its state as readers see it (damaged bytes replaced by the same
    /// records). Waits for a running checkpoint or install, then holds the
    /// write lock: applies and reads wait for `f`.
    pub fn repair<T>(&self, f: impl FnOnce(&mut M) -> T) -> T {
        let _apart = self.checkpoints.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut self.write().machine)
    }

    fn write(&self) -> RwLockWriteGuard<'_, Hosted<M>> {
        self.shared.write().unwrap_or_else(|p| p.into_inner())
    }
}

/// The Raft state a machine saves with its checkpoint: the snapshot
/// meta's applied log id and membership (`StateMachine::new` decodes it).
fn encode_raft_state(meta: &SnapshotMetaOf<C>) -> io::Result<Vec<u8>> {
    Ok(codec::encode(&(meta.last_log_id, &meta.last_membership))?.to_vec())
}

impl<M: GroupMachine> RaftSnapshotBuilder<C> for StateMachine<M> {
    type SnapshotData = SnapshotBytes;

    async fn build_snapshot(&mut self) -> Result<SnapshotOf<C, Self::SnapshotData>, io::Error> {
        let shared = Arc::clone(&self.shared);
        let checkpoints = Arc::clone(&self.checkpoints);
        // A checkpoint fsyncs: keep it off the async workers.
        let (meta, data) = tokio::task::spawn_blocking(move || -> io::Result<_> {
            // One checkpoint or snapshot install at a time: a checkpoint
            // writes its files with no lock on the machine.
            let _one = checkpoints.lock().unwrap_or_else(|p| p.into_inner());
            // Captured at the applied index read with it, then written
            // while apply goes on; apply stops only to record it.
            let (meta, prepared) = {
                let hosted = shared.read().unwrap_or_else(|p| p.into_inner());
                let meta = hosted.snapshot_meta();
                let prepared = hosted
                    .machine
                    .prepare_checkpoint(encode_raft_state(&meta)?)?;
                (meta, prepared)
            };
            let (meta, data, mut hosted) = match prepared {
                Some(mut prepared) => {
                    prepared.write();
                    let mut hosted = shared.write().unwrap_or_else(|p| p.into_inner());
                    let data = hosted.machine.finish_checkpoint(prepared)?;
                    (meta, data, hosted)
                }
                None => {
                    let mut hosted = shared.write().unwrap_or_else(|p| p.into_inner());
                    // The applied index may have moved since the read.
                    let meta = hosted.snapshot_meta();
                    let data = hosted.machine.checkpoint(encode_raft_state(&meta)?)?;
                    (meta, data, hosted)
                }
            };
            hosted.snapshot = Some((meta.clone(), data.clone()));
            Ok((meta, data))
        })
        .await
        .map_err(io::Error::other)??;
        Ok(SnapshotOf::<C, _> {
            meta,
            snapshot: data,
        })
    }
}

impl<M: GroupMachine> RaftStateMachine<C> for StateMachine<M> {
    type SnapshotData = SnapshotBytes;
    type SnapshotBuilder = StateMachine<M>;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogIdOf<C>>, StoredMembershipOf<C>), io::Error> {
        let hosted = self.read();
        Ok((hosted.last_applied, hosted.membership.clone()))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: futures_util::Stream<Item = Result<EntryResponder<C>, io::Error>>
            + Unpin
            + OptionalSend,
    {
        while let Some(item) = entries.next().await {
            let (entry, responder) = item?;
            let reply = {
                let mut hosted = self.write();
                let reply = match &entry.payload {
                    EntryPayload::Normal(command) => hosted.machine.apply(&command.0)?,
                    _ => Vec::new(),
                };
                if let Some(membership) = entry.get_membership() {
                    hosted.membership = StoredMembership::new(Some(entry.log_id()), membership);
                }
                hosted.last_applied = Some(entry.log_id());
                reply
            };
            if let Some(responder) = responder {
                responder.send(Reply(reply));
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
        let shared = Arc::clone(&self.shared);
        let checkpoints = Arc::clone(&self.checkpoints);
        let meta = meta.clone();
        tokio::task::spawn_blocking(move || -> io::Result<()> {
            let _one = checkpoints.lock().unwrap_or_else(|p| p.into_inner());
            let mut hosted = shared.write().unwrap_or_else(|p| p.into_inner());
            hosted
                .machine
                .install(encode_raft_state(&meta)?, &snapshot)?;
            hosted.last_applied = meta.last_log_id;
            hosted.membership = meta.last_membership.clone();
            hosted.snapshot = Some((meta, snapshot));
            Ok(())
        })
        .await
        .map_err(io::Error::other)?
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<SnapshotOf<C, Self::SnapshotData>>, io::Error> {
        Ok(self
            .read()
            .snapshot
            .clone()
            .map(|(meta, data)| SnapshotOf::<C, _> {
                meta,
                snapshot: data,
            }))
    }
}
