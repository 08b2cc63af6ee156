//! Goal: a data group replicated on three nodes gives every replica the
//! same partition logs (same records at the same offsets, with the same
//! ids and timestamps), checkpoints as it goes, and loses no acknowledged
//! message when every disk crashes at once.
//! Method: in-process nodes with WALs and partition logs on simulated
//! disks; snapshots (checkpoints) every few entries, so restarts replay
//! the WAL from a checkpoint; the disks crash in each mode and the nodes
//! restart on the images.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use openraft::{Config, SnapshotPolicy};
use sluice_engine::sim::{CrashMode, SimDisk};
use sluice_engine::{Log, LogConfig, MessageId, Offset, Timestamp};
use sluice_raft::data::command::{
    DataCommand, DataProposal, DataReply, NewMessage, Produce, Produced,
};
use sluice_raft::data::machine::DataMachine;
use sluice_raft::data::snapshot::{PinnedSegment, PinnedSegments, SegmentFetcher};
use sluice_raft::testing::{LoopbackContext, LoopbackNode, Made, TestError, members};
use sluice_raft::{Command, GroupId, PartitionId, PartitionKey, QueueId, RequestId, StateMachine};

use crate::cluster::{leader_of, secret, wait_applied};

const GROUP: GroupId = GroupId(1);
const Q: QueueId = QueueId(9);
const PARTITIONS: u32 = 3;

type Node = LoopbackNode<StateMachine<DataMachine>>;

fn config() -> Arc<Config> {
    let config = Config {
        heartbeat_interval: 100,
        election_timeout_min: 400,
        election_timeout_max: 800,
        // Checkpoint every 8 entries, and purge the WAL behind them, so a
        // restart replays from a checkpoint, not from the first entry.
        snapshot_policy: SnapshotPolicy::LogsSinceLast(8),
        max_in_snapshot_log_to_keep: 0,
        ..Config::default()
    };
    Arc::new(config.validate().expect("config"))
}

fn machine(
    disk: &SimDisk,
    node: u64,
    group: GroupId,
    context: &LoopbackContext,
) -> Result<Made<StateMachine<DataMachine>>, TestError> {
    let log_config = LogConfig {
        segment_bytes_max: 4096,
        index_interval_bytes: 256,
        ..sluice_raft::node::partition_log_config_default()
    };
    let dir = format!("/node{node}/groups/{}", group.0);
    let machine = DataMachine::open(Arc::new(disk.clone()), &dir, group, log_config)?
        .with_transfer(context.addr.clone(), Arc::clone(&context.fetcher));
    let pins = PinnedSegments::new(Arc::new(disk.clone()), dir);
    Ok((StateMachine::new(machine)?, Some(pins)))
}

async fn start(disks: &[SimDisk], addrs: &[String]) -> Vec<Node> {
    let mut nodes = Vec::new();
    let secret = secret();
    for (i, (disk, addr)) in disks.iter().zip(addrs).enumerate() {
        let id = i as u64 + 1;
        let node = LoopbackNode::start_on_sim_with(
            id,
            [GROUP],
            config(),
            &secret,
            disk,
            addr,
            |g, context| machine(disk, id, g, context),
        );
        nodes.push(node.await.expect("node"));
    }
    nodes
}

/// Proposes through `leader`; returns the reply and the entry's index.
async fn propose(leader: &Node, request: u128, command: DataCommand) -> (DataReply, u64) {
    let proposal = DataProposal {
        request_id: RequestId(request),
        // The leader's clock: checkpoints apply retention by the real
        // clock, and these messages must not expire during the test.
        proposed_at: Timestamp::now(),
        command,
    };
    let written = leader
        .raft(GROUP)
        .client_write(Command(proposal.encode().expect("encode").into()))
        .await
        .expect("commit");
    let reply = DataReply::decode(&written.data.0).expect("reply");
    (reply, written.log_id.index)
}

fn batch(n: u64) -> DataCommand {
    DataCommand::Produce(Produce {
        queue: Q,
        producer: None,
        messages: (0..1 + n % 4)
            .map(|j| NewMessage {
                partition: PartitionId(((n + j) % u64::from(PARTITIONS)) as u32),
                ttl_secs: 86_400 * 365,
                sequence: None,
                content_type: None,
                headers: Vec::new(),
                body: format!("message {n}.{j} {}", "z".repeat((n * 31 % 200) as usize))
                    .into_bytes(),
            })
            .collect(),
    })
}

/// One record as the replicas must agree on it: offset, id, timestamp, body.
type Stored = (Offset, MessageId, Timestamp, Vec<u8>);

/// Per partition, every record.
fn contents(node: &Node) -> Vec<Vec<Stored>> {
    per_partition(node, |log| {
        log.read(log.start_offset(), 100_000, usize::MAX)
            .expect("read")
            .into_iter()
            .map(|r| (r.offset, r.id, r.timestamp, r.payload.to_vec()))
            .collect()
    })
}

/// `f` of each partition's log of the test queue, in partition order.
fn per_partition<T>(node: &Node, f: impl Fn(&Log) -> T) -> Vec<T> {
    let hosted = node.sm(GROUP).read();
    let machine = hosted.machine();
    (0..PARTITIONS)
        .map(|p| {
            let key = PartitionKey {
                queue: Q,
                partition: PartitionId(p),
            };
            f(machine.partition(key).expect("partition").log())
        })
        .collect()
}

/// Method: create a queue, commit 30 produce batches (acknowledged
/// offsets recorded), check that the replicas agree; crash every disk at
/// once in each mode, restart, commit one more batch, and check that every
/// replica holds every acknowledged message at its acknowledged offset,
/// and that the replicas still agree record for record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_agree_and_a_crash_of_every_disk_loses_no_acknowledged_message() {
    for (seed, mode) in CrashMode::ALL.into_iter().enumerate() {
        let disks: Vec<SimDisk> = (0..3).map(|_| SimDisk::new()).collect();
        let nodes = start(&disks, &vec!["127.0.0.1:0".to_string(); 3]).await;
        nodes[0]
            .raft(GROUP)
            .initialize(members(&nodes))
            .await
            .expect("initialize");
        let leader = leader_of(&nodes, GROUP).await;
        let (reply, _) = propose(
            leader,
            1,
            DataCommand::CreateQueue {
                queue: Q,
                partitions: PARTITIONS,
            },
        )
        .await;
        assert_eq!(reply, DataReply::Done);
        let mut acked: Vec<(PartitionId, Offset, Vec<u8>)> = Vec::new();
        let mut last = 0;
        for n in 0..30u64 {
            let command = batch(n);
            let DataCommand::Produce(produce) = &command else {
                unreachable!("batch() produces")
            };
            let produce = produce.clone();
            let (reply, index) = propose(leader, 100 + u128::from(n), command).await;
            let DataReply::Produced(produced) = reply else {
                panic!("batch {n}: {reply:?}")
            };
            record_acks(&mut acked, &produce, &produced);
            last = index;
        }
        wait_applied(&nodes.iter().collect::<Vec<_>>(), GROUP, last).await;
        for node in &nodes {
            // The restart below must replay from a checkpoint.
            node.raft(GROUP)
                .wait(Some(std::time::Duration::from_secs(20)))
                .metrics(|m| m.purged.is_some(), "checkpointed and purged")
                .await
                .expect("checkpoint");
        }
        let before = contents(&nodes[0]);
        for node in &nodes[1..] {
            assert!(contents(node) == before, "{mode:?}: replicas differ");
        }

        let images: Vec<SimDisk> = disks.iter().map(|d| d.crash(mode, seed as u64)).collect();
        let addrs: Vec<String> = nodes.iter().map(|n| n.addr.clone()).collect();
        for node in nodes {
            node.stop().await.expect("stop");
        }
        let restarted = start(&images, &addrs).await;
        let leader = leader_of(&restarted, GROUP).await;
        let (_, last) = propose(leader, 1_000, batch(99)).await;
        wait_applied(&restarted.iter().collect::<Vec<_>>(), GROUP, last).await;
        let after = contents(&restarted[0]);
        for node in &restarted[1..] {
            assert!(
                contents(node) == after,
                "{mode:?}: replicas differ after the crash"
            );
        }
        for (partition, offset, body) in &acked {
            let found = after[partition.0 as usize]
                .iter()
                .find(|(o, _, _, _)| o == offset);
            assert_eq!(
                found.map(|(_, _, _, b)| b),
                Some(body),
                "{mode:?}: acknowledged message at {partition:?} {offset:?}"
            );
        }
        for (p, records) in before.iter().enumerate() {
            assert!(
                after[p].starts_with(records),
                "{mode:?}: partition {p} kept its ids and timestamps"
            );
        }
        for node in restarted {
            node.stop().await.expect("stop");
        }
    }
}

fn record_acks(
    acked: &mut Vec<(PartitionId, Offset, Vec<u8>)>,
    produce: &Produce,
    produced: &Produced,
) {
    let partitions: Vec<PartitionId> = produce.messages.iter().map(|m| m.partition).collect();
    let placements = produced.placements(&partitions).expect("placements");
    for (m, p) in produce.messages.iter().zip(placements) {
        acked.push((p.partition, p.offset, m.body.clone()));
    }
}

/// Counts the segments a node fetched from peers.
#[derive(Debug)]
struct CountingFetcher {
    inner: Arc<dyn SegmentFetcher>,
    fetched: Arc<AtomicUsize>,
}

impl SegmentFetcher for CountingFetcher {
    fn fetch(
        &self,
        source: &str,
        group: GroupId,
        segment: PinnedSegment,
    ) -> std::io::Result<Vec<u8>> {
        self.fetched.fetch_add(1, Ordering::SeqCst);
        self.inner.fetch(source, group, segment)
    }
}

/// Method: a follower stops; the others commit enough to checkpoint and
/// purge the WAL past it (so it can only catch up from a snapshot); it
/// restarts on its disk and must end with every message, record for
/// record like the leader, having fetched fewer segments than the snapshot
/// lists: the sealed segments it already had are reused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_follower_catches_up_from_a_snapshot_fetching_only_missing_segments() {
    let disks: Vec<SimDisk> = (0..3).map(|_| SimDisk::new()).collect();
    let mut nodes = start(&disks, &vec!["127.0.0.1:0".to_string(); 3]).await;
    nodes[0]
        .raft(GROUP)
        .initialize(members(&nodes))
        .await
        .expect("initialize");
    let leader_addr = leader_of(&nodes, GROUP).await.addr.clone();
    let lagging = nodes
        .iter()
        .position(|n| n.addr != leader_addr)
        .expect("a follower");
    let leader = |nodes: &[Node]| -> usize {
        nodes
            .iter()
            .position(|n| n.addr == leader_addr)
            .expect("leader")
    };
    let (reply, _) = propose(
        &nodes[leader(&nodes)],
        1,
        DataCommand::CreateQueue {
            queue: Q,
            partitions: PARTITIONS,
        },
    )
    .await;
    assert_eq!(reply, DataReply::Done);
    let mut last = 0;
    for n in 0..40u64 {
        last = propose(&nodes[leader(&nodes)], 100 + u128::from(n), batch(n))
            .await
            .1;
    }
    wait_applied(&nodes.iter().collect::<Vec<_>>(), GROUP, last).await;
    let stopped = nodes.remove(lagging);
    let lagging_id = lagging as u64 + 1;
    let lagging_addr = stopped.addr.clone();
    stopped.stop().await.expect("stop");

    for n in 40..120u64 {
        last = propose(&nodes[leader(&nodes)], 100 + u128::from(n), batch(n))
            .await
            .1;
    }
    let leader_node = &nodes[leader(&nodes)];
    leader_node
        .raft(GROUP)
        .wait(Some(std::time::Duration::from_secs(20)))
        .metrics(
            |m| m.purged.is_some_and(|p| p.index > last - 30),
            "the leader purged its log well past the stopped follower",
        )
        .await
        .expect("purged");

    let fetched = Arc::new(AtomicUsize::new(0));
    let secret = secret();
    let disk = &disks[lagging];
    let counter = Arc::clone(&fetched);
    let restarted = LoopbackNode::start_on_sim_with(
        lagging_id,
        [GROUP],
        config(),
        &secret,
        disk,
        &lagging_addr,
        move |g, context| {
            let counting = LoopbackContext {
                addr: context.addr.clone(),
                fetcher: Arc::new(CountingFetcher {
                    inner: Arc::clone(&context.fetcher),
                    fetched: Arc::clone(&counter),
                }),
            };
            machine(disk, lagging_id, g, &counting)
        },
    )
    .await
    .expect("restart");
    wait_applied(&[&restarted], GROUP, last).await;
    let leader_node = &nodes[leader(&nodes)];
    assert!(
        contents(&restarted) == contents(leader_node),
        "the restarted follower holds what the leader holds"
    );
    let listed: usize = per_partition(leader_node, |log| log.segments().len())
        .into_iter()
        .sum();
    let fetched = fetched.load(Ordering::SeqCst);
    assert!(fetched > 0, "the follower installed a snapshot");
    assert!(
        fetched < listed,
        "fetched {fetched} segments; the snapshot lists about {listed}"
    );
    restarted.stop().await.expect("stop");
    for node in nodes {
        node.stop().await.expect("stop");
    }
}
