//! One Sluice node: the node WAL, the meta group (0) and data groups
//! `1..=N`, each a Raft over that WAL with its state machine, and the RPC
//! routes its peers call. The server builds on this.
//!
//! On disk, under the data directory:
//!
//! ```text
//! wal/          the node WAL (every group's Raft log)
//! groups/0/     the meta group's checkpoint
//! groups/{g}/   a data group's checkpoint, partition logs and pins
//! ```
//!
//! Every node is a voter of every group for now. Leaders are spread: group
//! `g`'s preferred leader is the `g mod n`-th member by id, and
//! `spread_leaders` hands each group this node leads to its preferred
//! leader. Timeouts are slower than openraft's defaults so idle groups cost
//! little (`docs/benchmarks.md`, idle groups).

use bytes::Bytes;
use std::collections::BTreeMap;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use openraft::Raft;
use openraft::async_runtime::watch::WatchReceiver;
use openraft::impls::BasicNode;
use sluice_engine::LogConfig;
use sluice_engine::disk::{Disk, WriteMode};

use crate::data::machine::{DataMachine, MachineError};
use crate::data::snapshot::PinnedSegments;
use crate::glue::cluster::{self, ClusterError};
use crate::glue::{
    GroupLogStore, GroupMachine, HttpNetwork, HttpSegmentFetcher, LeaderClient, Prepared, RaftHost,
    StateMachine, TypeConfig, http_client,
};
use crate::ids::{GroupId, RequestId};
use crate::meta::command::{MetaCommand, MetaProposal};
use crate::meta::machine::MetaMachine;
use crate::transport::rpc::ClusterSecret;
use crate::wal::{Wal, WalError};

mod read_rounds;
mod repair;
mod routing;
mod status;
mod wal_space;
mod watch;

use read_rounds::ReadRounds;
pub use repair::ScrubCursor;
pub use routing::{MEMBERSHIP_TIMEOUT_MS, RouteError, Routed};
pub use status::GroupStatus;
pub use wal_space::WAL_SEGMENTS_SOFT_MAX;

/// The meta group.
pub const META_GROUP: GroupId = GroupId(0);
/// Default interval between leader heartbeats.
pub const HEARTBEAT_MS_DEFAULT: u64 = 500;
/// Default shortest election timeout.
pub const ELECTION_MS_MIN_DEFAULT: u64 = 1_500;
/// Default longest election timeout.
pub const ELECTION_MS_MAX_DEFAULT: u64 = 3_000;
/// Default longest wait for a group's leader when routing a request.
pub const ROUTE_TIMEOUT_MS_DEFAULT: u64 = 10_000;
/// Default entries between checkpoints (snapshots) of a group.
pub const CHECKPOINT_ENTRIES_DEFAULT: u64 = 10_000;
/// Removed WAL segments kept for recycling by default (4 × 64 MiB): every
/// acknowledgement waits for a WAL `fdatasync`, which is cheaper over
/// blocks the file system already allocated (engine
/// `LogConfig::recycle_segments_max`).
pub const WAL_RECYCLE_SEGMENTS_DEFAULT: usize = 4;

/// The engine configuration of the node WAL by default: recycled segments,
/// and appends written with `O_DIRECT` at each group-commit fsync (engine
/// `WriteMode::Direct`), which on the measured disk makes them durable
/// sooner than a buffered write and `fdatasync` do.
pub fn wal_config_default() -> LogConfig {
    LogConfig {
        recycle_segments_max: WAL_RECYCLE_SEGMENTS_DEFAULT,
        write_mode: WriteMode::Direct,
        ..LogConfig::default()
    }
}

/// The engine configuration of partition logs by default: appends written
/// with `O_DIRECT` (engine `WriteMode::Direct`), out at each writeback tick
/// or checkpoint, and read from memory until then. Buffered appends cost
/// new page-cache pages, which on the measured VM (whose balloon reclaims
/// free memory) were a third of batched produce's CPU
/// (docs/benchmarks.md, "Direct partition logs").
pub fn partition_log_config_default() -> LogConfig {
    LogConfig {
        write_mode: WriteMode::Direct,
        ..LogConfig::default()
    }
}

/// The request id that registers the data groups: the same on every node
/// and every start, so the meta group applies it once.
const REGISTER_GROUPS_REQUEST: RequestId = RequestId(1);

/// A group's state machine on a node.
#[derive(Debug)]
pub enum NodeMachine {
    /// The meta group's.
    Meta(MetaMachine),
    /// A data group's.
    Data(DataMachine),
}

impl GroupMachine for NodeMachine {
    fn apply(&mut self, command: &[u8]) -> io::Result<Vec<u8>> {
        match self {
            NodeMachine::Meta(m) => m.apply(command),
            NodeMachine::Data(m) => GroupMachine::apply(m, command),
        }
    }

    fn checkpoint(&mut self, raft_state: Vec<u8>) -> io::Result<Bytes> {
        match self {
            NodeMachine::Meta(m) => GroupMachine::checkpoint(m, raft_state),
            NodeMachine::Data(m) => GroupMachine::checkpoint(m, raft_state),
        }
    }

    fn prepare_checkpoint(&self, raft_state: Vec<u8>) -> io::Result<Option<Box<dyn Prepared>>> {
        match self {
            NodeMachine::Meta(m) => GroupMachine::prepare_checkpoint(m, raft_state),
            NodeMachine::Data(m) => GroupMachine::prepare_checkpoint(m, raft_state),
        }
    }

    fn finish_checkpoint(&mut self, prepared: Box<dyn Prepared>) -> io::Result<Bytes> {
        match self {
            NodeMachine::Meta(m) => GroupMachine::finish_checkpoint(m, prepared),
            NodeMachine::Data(m) => GroupMachine::finish_checkpoint(m, prepared),
        }
    }

    fn raft_state(&self) -> &[u8] {
        match self {
            NodeMachine::Meta(m) => m.raft_state(),
            NodeMachine::Data(m) => GroupMachine::raft_state(m),
        }
    }

    fn install(&mut self, raft_state: Vec<u8>, snapshot: &[u8]) -> io::Result<()> {
        match self {
            NodeMachine::Meta(m) => m.install(raft_state, snapshot),
            NodeMachine::Data(m) => m.install(raft_state, snapshot),
        }
    }
}

/// A group's Raft on a node.
pub type GroupRaft = Raft<TypeConfig, StateMachine<NodeMachine>>;

/// How a node is set up.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// This node's Raft id (≥ 1).
    pub id: u64,
    /// This node's RPC address as peers reach it (`host:port`).
    pub addr: String,
    /// Where its files live.
    pub data_dir: PathBuf,
    /// Data groups (`1..=data_groups`); must not change once formed.
    pub data_groups: u32,
    /// The cluster secret.
    pub secret: ClusterSecret,
    /// Leader heartbeat interval.
    pub heartbeat_ms: u64,
    /// Election timeout range.
    pub election_ms: (u64, u64),
    /// Entries between checkpoints.
    pub checkpoint_entries: u64,
    /// Partition logs' configuration.
    pub log_config: LogConfig,
    /// The node WAL's configuration (its segment size bounds how much a
    /// compaction deletes at once).
    pub wal_config: LogConfig,
    /// Longest a routed proposal or read waits for a leader.
    pub route_timeout_ms: u64,
}

impl NodeConfig {
    /// A configuration with the defaults above.
    pub fn new(id: u64, addr: String, data_dir: PathBuf, secret: ClusterSecret) -> NodeConfig {
        NodeConfig {
            id,
            addr,
            data_dir,
            data_groups: 1,
            secret,
            heartbeat_ms: HEARTBEAT_MS_DEFAULT,
            election_ms: (ELECTION_MS_MIN_DEFAULT, ELECTION_MS_MAX_DEFAULT),
            checkpoint_entries: CHECKPOINT_ENTRIES_DEFAULT,
            log_config: partition_log_config_default(),
            wal_config: wal_config_default(),
            route_timeout_ms: ROUTE_TIMEOUT_MS_DEFAULT,
        }
    }
}

/// Why a node could not start or act.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The WAL failed to open.
    #[error("node WAL: {0}")]
    Wal(#[from] WalError),
    /// A state machine failed to open.
    #[error("state machine: {0}")]
    Machine(#[from] MachineError),
    /// Other I/O (the meta machine, the HTTP client).
    #[error("{0}")]
    Io(#[from] io::Error),
    /// openraft refused the configuration or failed to start a group.
    #[error("raft: {0}")]
    Raft(String),
    /// A cluster operation failed.
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    /// A routed proposal or read failed.
    #[error(transparent)]
    Route(#[from] RouteError),
}

/// One running node (see the module docs).
pub struct Node {
    config: NodeConfig,
    wal: Arc<Wal>,
    groups: BTreeMap<GroupId, (GroupRaft, StateMachine<NodeMachine>)>,
    host: Arc<RaftHost<StateMachine<NodeMachine>>>,
    leaders: LeaderClient,
    /// Per group: concurrent linearizable reads share read-index rounds.
    reads: BTreeMap<GroupId, Arc<ReadRounds<Result<u64, RouteError>>>>,
}

impl Node {
    /// Opens the node's WAL and state machines on `disk` and starts a Raft
    /// per group. Call from within a tokio runtime.
    pub async fn open(config: NodeConfig, disk: Arc<dyn Disk>) -> Result<Node, NodeError> {
        let raft_config = openraft::Config {
            heartbeat_interval: config.heartbeat_ms,
            election_timeout_min: config.election_ms.0,
            election_timeout_max: config.election_ms.1,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(config.checkpoint_entries),
            max_in_snapshot_log_to_keep: 0,
            ..openraft::Config::default()
        };
        let raft_config = Arc::new(
            raft_config
                .validate()
                .map_err(|e| NodeError::Raft(e.to_string()))?,
        );
        let wal = Arc::new(Wal::open_on(
            Arc::clone(&disk),
            config.data_dir.join("wal"),
            config.wal_config.clone(),
        )?);
        let client = http_client().map_err(io::Error::other)?;
        let fetcher = Arc::new(HttpSegmentFetcher::new(
            client.clone(),
            config.secret.clone(),
            tokio::runtime::Handle::current(),
        ));
        let host = RaftHost::new(config.secret.clone());
        let mut groups = BTreeMap::new();
        for g in 0..=config.data_groups {
            let group = GroupId(g);
            let dir = config.data_dir.join("groups").join(g.to_string());
            let machine = if group == META_GROUP {
                NodeMachine::Meta(MetaMachine::open(Arc::clone(&disk), &dir)?)
            } else {
                host.insert_pins(group, PinnedSegments::new(Arc::clone(&disk), dir.clone()));
                let machine =
                    DataMachine::open(Arc::clone(&disk), &dir, group, config.log_config.clone())?
                        .with_transfer(config.addr.clone(), fetcher.clone());
                NodeMachine::Data(machine)
            };
            let sm = StateMachine::new(machine)?;
            let network = HttpNetwork::new(client.clone(), config.secret.clone(), group);
            let store = GroupLogStore::new(Arc::clone(&wal), group);
            let raft = Raft::new(
                config.id,
                Arc::clone(&raft_config),
                network,
                store,
                sm.clone(),
            )
            .await
            .map_err(|e| NodeError::Raft(e.to_string()))?;
            host.insert(group, raft.clone());
            groups.insert(group, (raft, sm));
        }
        host.set_batch_source(Arc::new(repair::LocalBatches {
            machines: groups
                .iter()
                .filter(|(g, _)| **g != META_GROUP)
                .map(|(g, (_, sm))| (*g, sm.clone()))
                .collect(),
            fences: Arc::clone(host.fences()),
        }));
        let leaders = LeaderClient::new(client, config.secret.clone());
        let reads = groups
            .keys()
            .map(|g| (*g, Arc::new(ReadRounds::new())))
            .collect();
        Ok(Node {
            config,
            wal,
            groups,
            host,
            leaders,
            reads,
        })
    }

    /// This node's id.
    pub fn id(&self) -> u64 {
        self.config.id
    }

    /// The routes peers call (`/raft/...`), to merge into the server's.
    pub fn router(&self) -> axum::Router {
        Arc::clone(&self.host).router()
    }

    /// A group's Raft, if this node hosts it.
    pub fn raft(&self, group: GroupId) -> Option<&GroupRaft> {
        self.groups.get(&group).map(|(raft, _)| raft)
    }

    /// A group's state machine, if this node hosts it.
    pub fn machine(&self, group: GroupId) -> Option<&StateMachine<NodeMachine>> {
        self.groups.get(&group).map(|(_, sm)| sm)
    }

    /// The groups this node hosts.
    pub fn groups(&self) -> impl Iterator<Item = GroupId> + '_ {
        self.groups.keys().copied()
    }

    /// The node WAL.
    pub fn wal(&self) -> &Arc<Wal> {
        &self.wal
    }

    /// Forms every group from the static member list (`id → address`): the
    /// lowest id initializes each group, once. Safe on every start.
    pub async fn form(&self, members: &BTreeMap<u64, String>) -> Result<(), NodeError> {
        let nodes: BTreeMap<u64, BasicNode> = members
            .iter()
            .map(|(id, addr)| (*id, BasicNode::new(addr)))
            .collect();
        for (raft, _) in self.groups.values() {
            cluster::form_cluster(raft, self.config.id, nodes.clone()).await?;
        }
        Ok(())
    }

    /// Registers the data groups and this node's public URL in the meta
    /// group, through its leader. Idempotent.
    pub async fn register(&self, public_url: &str) -> Result<(), NodeError> {
        let groups = (1..=self.config.data_groups).map(GroupId).collect();
        let proposals = [
            (
                REGISTER_GROUPS_REQUEST,
                MetaCommand::AddDataGroups { groups },
            ),
            (
                // One registration per node and URL.
                RequestId(u128::from(self.config.id) << 64 | u128::from(url_tag(public_url))),
                MetaCommand::SetNode {
                    node: self.config.id,
                    public_url: public_url.to_string(),
                },
            ),
        ];
        for (request_id, command) in proposals {
            let proposal = MetaProposal {
                request_id,
                proposed_at: sluice_engine::Timestamp::now(),
                command,
            };
            self.propose(META_GROUP, proposal.encode()?).await?;
        }
        Ok(())
    }

    /// Hands every group this node leads to its preferred leader (see the
    /// module docs); returns how many it handed over.
    pub async fn spread_leaders(&self) -> Result<usize, NodeError> {
        let mut handed = 0;
        for (group, (raft, _)) in &self.groups {
            let metrics = raft.metrics().borrow_watched().clone();
            if metrics.current_leader != Some(self.config.id) {
                continue;
            }
            let voters: Vec<u64> = metrics.membership_config.membership().voter_ids().collect();
            let Some(preferred) = preferred_leader(*group, &voters) else {
                continue;
            };
            if preferred != self.config.id {
                cluster::transfer_leader(raft, preferred).await?;
                handed += 1;
            }
        }
        Ok(handed)
    }

    /// Stops every group.
    pub async fn shutdown(&self) -> Result<(), NodeError> {
        for (raft, _) in self.groups.values() {
            raft.shutdown()
                .await
                .map_err(|e| NodeError::Raft(e.to_string()))?;
        }
        Ok(())
    }
}

/// The preferred leader of `group` among `voters`: the `group mod n`-th by
/// id, so n groups spread over n nodes.
pub fn preferred_leader(group: GroupId, voters: &[u64]) -> Option<u64> {
    let mut sorted = voters.to_vec();
    sorted.sort_unstable();
    let n = sorted.len();
    (n > 0).then(|| sorted[group.0 as usize % n])
}

/// A stable 64-bit tag of a URL (FNV-1a), so a changed URL is a new
/// registration while a repeated one is a retry.
fn url_tag(url: &str) -> u64 {
    url.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}
