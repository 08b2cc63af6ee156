//! Test support (feature `testing`), never enabled in release binaries:
//! - `TestStateMachine`, the smallest state machine openraft accepts, until
//!   Sluice's own exist (milestone C). It records the applied log id, the
//!   membership and the applied commands, and snapshots them as bytes.
//! - `LoopbackNode`, one node of an in-process cluster on 127.0.0.1, for
//!   the cluster tests and the measurements in `examples/`.

use std::collections::BTreeMap;
use std::io;
use std::sync::{Arc, Mutex};

use crate::data::snapshot::{PinnedSegments, SegmentFetcher};
use crate::glue::{
    Command, GroupLogStore, HttpNetwork, HttpSegmentFetcher, RaftHost, Reply, SnapshotBytes,
    TypeConfig, http_client,
};
use crate::ids::GroupId;
use crate::transport::rpc::ClusterSecret;
use crate::wal::Wal;
use bytes::Bytes;
use futures_util::StreamExt;
use openraft::alias::{LogIdOf, SnapshotMetaOf, SnapshotOf, StoredMembershipOf};
use openraft::entry::RaftEntry;
use openraft::impls::BasicNode;
use openraft::storage::{EntryResponder, RaftStateMachine};
use openraft::{EntryPayload, OptionalSend, Raft, RaftSnapshotBuilder, StoredMembership};
use sluice_engine::sim::SimDisk;

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
    type SnapshotData = SnapshotBytes;

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
            snapshot: Bytes::from(data),
        })
    }
}

impl RaftStateMachine<C> for TestStateMachine {
    type SnapshotData = SnapshotBytes;
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
        applied.snapshot = Some((meta.clone(), snapshot.to_vec()));
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
                snapshot: Bytes::from(data),
            }))
    }
}

/// One node of an in-process cluster on loopback (tests and
/// measurements): a WAL (in a temporary directory or on a simulated disk),
/// one Raft per group over it with a state machine `SM`, one HTTP client
/// and one RPC router served on 127.0.0.1. Dropping it stops its server.
pub struct LoopbackNode<SM: RaftStateMachine<C> = TestStateMachine> {
    /// The node's groups, in the order given, with their state machines.
    pub groups: Vec<(GroupId, Raft<C, SM>, SM)>,
    /// The node's WAL.
    pub wal: Arc<Wal>,
    /// `127.0.0.1:port` of its RPC listener.
    pub addr: String,
    server: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

/// What a loopback node gives each state machine it makes.
pub struct LoopbackContext {
    /// The node's RPC address.
    pub addr: String,
    /// Fetches snapshot segments from peers.
    pub fetcher: Arc<dyn SegmentFetcher>,
}

/// A state machine, and the snapshot segments its node serves, if any.
pub type Made<SM> = (SM, Option<PinnedSegments>);

/// Errors at the edge of test support.
pub type TestError = Box<dyn std::error::Error + Send + Sync>;

impl LoopbackNode<TestStateMachine> {
    /// Starts node `id` hosting `groups` on a fresh port, its WAL on the
    /// real disk; `counting` state machines count commands instead of
    /// keeping them.
    pub async fn start(
        id: u64,
        groups: impl IntoIterator<Item = GroupId>,
        config: Arc<openraft::Config>,
        secret: &ClusterSecret,
        counting: bool,
    ) -> Result<LoopbackNode, TestError> {
        let dir = tempfile::tempdir()?;
        let wal = Arc::new(Wal::open(dir.path())?);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        LoopbackNode::serve(id, groups, config, secret, wal, listener, dir, |_, _| {
            let sm = if counting {
                TestStateMachine::counting()
            } else {
                TestStateMachine::default()
            };
            Ok((sm, None))
        })
        .await
    }

    /// Starts node `id` with its WAL on a simulated disk (at `/node{id}`),
    /// listening on `addr` (`127.0.0.1:0` for a fresh port, or the address
    /// of a node being restarted). State machines start empty.
    pub async fn start_on_sim(
        id: u64,
        groups: impl IntoIterator<Item = GroupId>,
        config: Arc<openraft::Config>,
        secret: &ClusterSecret,
        disk: &SimDisk,
        addr: &str,
    ) -> Result<LoopbackNode, TestError> {
        LoopbackNode::start_on_sim_with(id, groups, config, secret, disk, addr, |_, _| {
            Ok((TestStateMachine::default(), None))
        })
        .await
    }
}

impl<SM: RaftStateMachine<C, SnapshotData = SnapshotBytes> + Clone> LoopbackNode<SM> {
    /// Starts node `id` with its WAL on a simulated disk (at
    /// `/node{id}/wal`), listening on `addr`, with the state machine `make`
    /// gives for each group (and the pinned snapshot segments to serve for
    /// it, if any).
    pub async fn start_on_sim_with(
        id: u64,
        groups: impl IntoIterator<Item = GroupId>,
        config: Arc<openraft::Config>,
        secret: &ClusterSecret,
        disk: &SimDisk,
        addr: &str,
        make: impl FnMut(GroupId, &LoopbackContext) -> Result<Made<SM>, TestError>,
    ) -> Result<LoopbackNode<SM>, TestError> {
        let wal_dir = format!("/node{id}/wal");
        let wal = Arc::new(Wal::open_on(
            Arc::new(disk.clone()),
            wal_dir,
            crate::node::wal_config_default(),
        )?);
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let dir = tempfile::tempdir()?;
        LoopbackNode::serve(id, groups, config, secret, wal, listener, dir, make).await
    }

    #[allow(clippy::too_many_arguments)]
    async fn serve(
        id: u64,
        groups: impl IntoIterator<Item = GroupId>,
        config: Arc<openraft::Config>,
        secret: &ClusterSecret,
        wal: Arc<Wal>,
        listener: tokio::net::TcpListener,
        dir: tempfile::TempDir,
        mut make: impl FnMut(GroupId, &LoopbackContext) -> Result<Made<SM>, TestError>,
    ) -> Result<LoopbackNode<SM>, TestError> {
        let client = http_client()?;
        let host = RaftHost::new(secret.clone());
        let mut hosted = Vec::new();
        let context = LoopbackContext {
            addr: listener.local_addr()?.to_string(),
            fetcher: Arc::new(HttpSegmentFetcher::new(
                client.clone(),
                secret.clone(),
                tokio::runtime::Handle::current(),
            )),
        };
        for group in groups {
            let network = HttpNetwork::new(client.clone(), secret.clone(), group);
            let store = GroupLogStore::new(Arc::clone(&wal), group);
            let (sm, pins) = make(group, &context)?;
            if let Some(pins) = pins {
                host.insert_pins(group, pins);
            }
            let raft = Raft::new(id, Arc::clone(&config), network, store, sm.clone()).await?;
            host.insert(group, raft.clone());
            hosted.push((group, raft, sm));
        }
        let addr = listener.local_addr()?.to_string();
        let router = host.router();
        // As the server does: TCP_NODELAY, or Nagle delays small replies.
        let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
            let _ = tcp.set_nodelay(true);
        });
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Ok(LoopbackNode {
            groups: hosted,
            wal,
            addr,
            server,
            _dir: dir,
        })
    }

    /// The Raft of `group`.
    pub fn raft(&self, group: GroupId) -> &Raft<C, SM> {
        &self.hosted(group).1
    }

    /// The state machine of `group`.
    pub fn sm(&self, group: GroupId) -> &SM {
        &self.hosted(group).2
    }

    fn hosted(&self, group: GroupId) -> &(GroupId, Raft<C, SM>, SM) {
        match self.groups.iter().find(|(g, _, _)| *g == group) {
            Some(hosted) => hosted,
            None => panic!("node {} does not host {group}", self.addr),
        }
    }

    /// Stops the node: shuts its groups down, then stops its server and
    /// waits until the listener is closed, so that a restarted node can bind
    /// the same address.
    pub async fn stop(mut self) -> Result<(), TestError> {
        self.shutdown().await?;
        self.server.abort();
        let _ = (&mut self.server).await;
        Ok(())
    }

    /// Shuts every group's Raft down.
    pub async fn shutdown(&self) -> Result<(), TestError> {
        for (_, raft, _) in &self.groups {
            raft.shutdown().await?;
        }
        Ok(())
    }
}

impl<SM: RaftStateMachine<C>> Drop for LoopbackNode<SM> {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// The member list of `nodes`, numbered from 1 in order.
pub fn members<SM: RaftStateMachine<C>>(nodes: &[LoopbackNode<SM>]) -> BTreeMap<u64, BasicNode> {
    nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (i as u64 + 1, BasicNode::new(&n.addr)))
        .collect()
}
