//! Goal: nodes form Raft groups over HTTP on loopback, replicate through
//! the WAL-backed log store, change membership without losing writes, host
//! many groups over one WAL, and refuse unauthenticated or malformed RPCs.
//! Method: in-process nodes (`sluice_raft::testing::LoopbackNode`), each
//! with its own WAL in a temporary directory and its own listener on
//! 127.0.0.1:0; waits are on Raft metrics with deadlines, never sleeps.

use std::sync::Arc;
use std::time::Duration;

use openraft::Config;
use openraft::storage::RaftStateMachine;
use sluice_raft::testing::{LoopbackNode, members};
use sluice_raft::transport::rpc::ClusterSecret;
use sluice_raft::{Command, GroupId, SnapshotBytes, TypeConfig};

const GROUP: GroupId = GroupId(1);
const WAIT: Option<Duration> = Some(Duration::from_secs(20));

/// What a loopback node's state machine must be.
pub(crate) trait Machine:
    RaftStateMachine<TypeConfig, SnapshotData = SnapshotBytes> + Clone
{
}
impl<T: RaftStateMachine<TypeConfig, SnapshotData = SnapshotBytes> + Clone> Machine for T {}

pub(crate) fn secret() -> ClusterSecret {
    ClusterSecret::new("loopback-test-cluster-secret").expect("secret")
}

pub(crate) fn config() -> Arc<Config> {
    let config = Config {
        heartbeat_interval: 100,
        election_timeout_min: 400,
        election_timeout_max: 800,
        ..Config::default()
    };
    Arc::new(config.validate().expect("config"))
}

async fn node(id: u64, groups: impl IntoIterator<Item = GroupId>) -> LoopbackNode {
    LoopbackNode::start(id, groups, config(), &secret(), false)
        .await
        .expect("node")
}

/// Waits until `node` leads `group`, has applied its log tail (its first,
/// blank entry), and every follower has acknowledged that tail: then it
/// holds a lease and takes writes. (A node restarted with a committed vote
/// for itself can resume leadership before any follower has answered it.)
pub(crate) async fn wait_leader_ready<SM: Machine>(node: &LoopbackNode<SM>, group: GroupId) {
    node.raft(group)
        .wait(WAIT)
        .metrics(
            |m| {
                let tail = m.last_log_index;
                m.state.is_leader()
                    && m.last_applied.map(|l| l.index) == tail
                    && m.replication
                        .as_ref()
                        .is_some_and(|r| r.values().all(|v| v.as_ref().map(|l| l.index) == tail))
            },
            "leads, has applied its log tail, and every follower acknowledged it",
        )
        .await
        .expect("leader ready");
}

/// The node leading `group`, once one is elected and ready.
pub(crate) async fn leader_of<SM: Machine>(
    nodes: &[LoopbackNode<SM>],
    group: GroupId,
) -> &LoopbackNode<SM> {
    let m = nodes[0]
        .raft(group)
        .wait(WAIT)
        .metrics(|m| m.current_leader.is_some(), "a leader is elected")
        .await
        .expect("leader");
    let leader = &nodes[(m.current_leader.expect("leader id") - 1) as usize];
    wait_leader_ready(leader, group).await;
    leader
}

fn command(group: GroupId, n: u8) -> Command {
    Command(vec![group.0 as u8, n].into())
}

fn commands(group: GroupId, range: std::ops::Range<u8>) -> Vec<Command> {
    range.map(|n| command(group, n)).collect()
}

/// Commits `range` through `leader`; returns the last log index.
async fn write(leader: &LoopbackNode, group: GroupId, range: std::ops::Range<u8>) -> u64 {
    let mut last = 0;
    for n in range {
        let written = leader
            .raft(group)
            .client_write(command(group, n))
            .await
            .expect("commit");
        last = written.log_id.index;
    }
    last
}

pub(crate) async fn wait_applied<SM: Machine>(
    nodes: &[&LoopbackNode<SM>],
    group: GroupId,
    index: u64,
) {
    for node in nodes {
        node.raft(group)
            .wait(WAIT)
            .applied_index(Some(index), "replicated")
            .await
            .expect("applied");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_elect_commit_and_replicate_over_http() {
    let nodes = vec![
        node(1, [GROUP]).await,
        node(2, [GROUP]).await,
        node(3, [GROUP]).await,
    ];
    nodes[0]
        .raft(GROUP)
        .initialize(members(&nodes))
        .await
        .expect("initialize");
    let leader = leader_of(&nodes, GROUP).await;
    let last = write(leader, GROUP, 0..20).await;
    wait_applied(&nodes.iter().collect::<Vec<_>>(), GROUP, last).await;
    for node in &nodes {
        assert_eq!(
            node.sm(GROUP).lock().commands,
            commands(GROUP, 0..20),
            "node at {}",
            node.addr
        );
        node.shutdown().await.expect("shutdown");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rpcs_without_the_secret_or_with_bad_input_are_refused() {
    let node = node(1, [GROUP]).await;
    let client = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .expect("client");
    let good = Some(secret().header_value());
    let cases = [
        ("/raft/1/vote", None, vec![], 401),
        (
            "/raft/1/vote",
            Some("Cluster wrong-secret-of-some-length".to_string()),
            vec![],
            401,
        ),
        ("/raft/9/vote", good.clone(), vec![], 404),
        ("/raft/x/vote", good.clone(), vec![], 404),
        ("/raft/1/vote", good.clone(), vec![0xFF; 7], 400),
        ("/raft/1/nonsense", good.clone(), vec![], 404),
    ];
    for (path, auth, body, status) in cases {
        let mut request = client
            .post(format!("http://{}{path}", node.addr))
            .body(body);
        if let Some(auth) = &auth {
            request = request.header("authorization", auth);
        }
        let response = request.send().await.expect("response");
        assert_eq!(response.status().as_u16(), status, "{path} with {auth:?}");
    }
    node.shutdown().await.expect("shutdown");
}

/// Method: one node forms the cluster alone and takes writes; two more join
/// as learners, are promoted, and everything is replicated to them; one is
/// removed and stops receiving; no acknowledged write is lost on any voter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn membership_grows_1_to_3_and_shrinks_to_2_without_losing_writes() {
    use sluice_raft::glue::cluster::{
        ClusterError, add_learner, form_cluster, linearizable_read, promote, remove,
    };

    let n1 = node(1, [GROUP]).await;
    let alone = members(std::slice::from_ref(&n1));
    assert_eq!(
        form_cluster(n1.raft(GROUP), 1, alone.clone()).await,
        Ok(true),
        "lowest id forms it"
    );
    assert_eq!(
        form_cluster(n1.raft(GROUP), 1, alone).await,
        Ok(false),
        "only once"
    );
    wait_leader_ready(&n1, GROUP).await;
    write(&n1, GROUP, 0..10).await;

    let (n2, n3) = (node(2, [GROUP]).await, node(3, [GROUP]).await);
    let nodes = [n1, n2, n3];
    let [n1, n2, n3] = &nodes;
    assert_eq!(
        form_cluster(n2.raft(GROUP), 2, members(&nodes)).await,
        Ok(false),
        "not the lowest id"
    );
    add_learner(n1.raft(GROUP), 2, &n2.addr)
        .await
        .expect("learner 2");
    add_learner(n1.raft(GROUP), 3, &n3.addr)
        .await
        .expect("learner 3");
    promote(n1.raft(GROUP), [2, 3].into())
        .await
        .expect("promote");
    let last = write(n1, GROUP, 10..20).await;
    wait_applied(&[n1, n2, n3], GROUP, last).await;
    for node in &nodes {
        assert_eq!(
            node.sm(GROUP).lock().commands,
            commands(GROUP, 0..20),
            "node at {}",
            node.addr
        );
    }
    assert_eq!(
        linearizable_read(n2.raft(GROUP)).await,
        Err(ClusterError::NotLeader {
            leader_hint: Some(1)
        }),
        "a follower forwards linearizable reads"
    );
    linearizable_read(n1.raft(GROUP))
        .await
        .expect("the leader reads linearizably");

    remove(n1.raft(GROUP), [3].into()).await.expect("remove 3");
    let last = write(n1, GROUP, 20..25).await;
    wait_applied(&[n1, n2], GROUP, last).await;
    for node in [n1, n2] {
        assert_eq!(
            node.sm(GROUP).lock().commands,
            commands(GROUP, 0..25),
            "node at {}",
            node.addr
        );
    }
    let removed = n3.sm(GROUP).lock().commands.clone();
    assert_eq!(
        removed[..20],
        commands(GROUP, 0..20)[..],
        "the removed node kept what it had"
    );
    assert!(
        !removed.contains(&command(GROUP, 24)),
        "and got nothing after its removal"
    );
    for node in &nodes {
        node.shutdown().await.expect("shutdown");
    }
}

/// Method: three nodes host four groups each; every group forms, elects
/// and replicates on its own (writers run concurrently), every replica of
/// every group ends with the same commands, and each node's one WAL holds
/// all four groups. (That groups share fsync rounds is shown
/// deterministically in `group_commit.rs`; here it depends on timing, so
/// it is not asserted.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_groups_share_each_node_wal_and_replicate_independently() {
    let groups: Vec<GroupId> = (1..=4).map(GroupId).collect();
    let nodes = Arc::new(vec![
        node(1, groups.clone()).await,
        node(2, groups.clone()).await,
        node(3, groups.clone()).await,
    ]);
    for &group in &groups {
        nodes[0]
            .raft(group)
            .initialize(members(&nodes))
            .await
            .expect("initialize");
    }
    let mut writers = Vec::new();
    for &group in &groups {
        let nodes = Arc::clone(&nodes);
        writers.push(tokio::spawn(async move {
            let leader = leader_of(&nodes, group).await;
            let last = write(leader, group, 0..10).await;
            wait_applied(&nodes.iter().collect::<Vec<_>>(), group, last).await;
        }));
    }
    for w in writers {
        w.await.expect("group writer");
    }
    for node in nodes.iter() {
        for &group in &groups {
            assert_eq!(
                node.sm(group).lock().commands,
                commands(group, 0..10),
                "{group} at {}",
                node.addr
            );
        }
        assert_eq!(
            node.wal.groups(),
            groups,
            "one WAL holds every group of the node"
        );
        node.shutdown().await.expect("shutdown");
    }
}

/// Starts node `i + 1` on `disks[i]`, listening on `addrs[i]`.
async fn start_sim_nodes(
    disks: &[sluice_engine::sim::SimDisk],
    addrs: &[String],
    secret: &ClusterSecret,
) -> Vec<LoopbackNode> {
    let mut nodes = Vec::new();
    for (i, (disk, addr)) in disks.iter().zip(addrs).enumerate() {
        let node = LoopbackNode::start_on_sim(i as u64 + 1, [GROUP], config(), secret, disk, addr);
        nodes.push(node.await.expect("node"));
    }
    nodes
}

/// Method: three nodes with their WALs on simulated disks commit 30
/// commands; every disk then crashes at once, keeping none, a prefix or
/// random sectors of its un-fsynced writes; the nodes restart on the crash
/// images at their old addresses with empty state machines. After one more
/// write, every node must apply exactly the 31 commands, in order: nothing
/// acknowledged is lost, nothing is applied twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_of_every_disk_at_once_loses_no_committed_entry() {
    use sluice_engine::sim::{CrashMode, SimDisk};

    let secret = secret();
    for (seed, mode) in CrashMode::ALL.into_iter().enumerate() {
        let disks: Vec<SimDisk> = (0..3).map(|_| SimDisk::new()).collect();
        let fresh = vec!["127.0.0.1:0".to_string(); disks.len()];
        let nodes = start_sim_nodes(&disks, &fresh, &secret).await;
        nodes[0]
            .raft(GROUP)
            .initialize(members(&nodes))
            .await
            .expect("initialize");
        let leader = leader_of(&nodes, GROUP).await;
        write(leader, GROUP, 0..30).await;

        // The power goes out everywhere at once, with the nodes running.
        let images: Vec<SimDisk> = disks.iter().map(|d| d.crash(mode, seed as u64)).collect();
        let addrs: Vec<String> = nodes.iter().map(|n| n.addr.clone()).collect();
        for node in nodes {
            node.stop().await.expect("stop");
        }
        let restarted = start_sim_nodes(&images, &addrs, &secret).await;
        let leader = leader_of(&restarted, GROUP).await;
        let last = write(leader, GROUP, 30..31).await;
        wait_applied(&restarted.iter().collect::<Vec<_>>(), GROUP, last).await;
        for node in &restarted {
            let applied = node.sm(GROUP).lock().commands.clone();
            assert_eq!(
                applied,
                commands(GROUP, 0..31),
                "{mode:?}: node at {}",
                node.addr
            );
        }
        for node in restarted {
            node.stop().await.expect("stop");
        }
    }
}
