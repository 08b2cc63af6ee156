//! Goal: the node runtime hosts the meta group and N data groups over one
//! WAL, forms them from a static member list, registers the data groups
//! in the meta group, spreads the leaders over the nodes, and routes
//! proposals and linearizable reads from any node through the leader.
//! Method: three `Node`s in-process on 127.0.0.1 with real directories;
//! waits are on Raft metrics with deadlines.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use sluice_engine::disk::FileDisk;
use sluice_raft::GroupId;
use sluice_raft::node::{META_GROUP, Node, NodeConfig, NodeMachine, preferred_leader};

use crate::cluster::secret;

const DATA_GROUPS: u32 = 3;
const WAIT: Option<Duration> = Some(Duration::from_secs(30));

struct Running {
    node: Node,
    server: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

async fn start_three() -> (Vec<Running>, BTreeMap<u64, String>) {
    let mut listeners = Vec::new();
    let mut members = BTreeMap::new();
    for id in 1..=3u64 {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        members.insert(id, listener.local_addr().expect("addr").to_string());
        listeners.push(listener);
    }
    let mut nodes = Vec::new();
    for (i, listener) in listeners.into_iter().enumerate() {
        let id = i as u64 + 1;
        let dir = tempfile::tempdir().expect("dir");
        let mut config =
            NodeConfig::new(id, members[&id].clone(), dir.path().to_path_buf(), secret());
        config.data_groups = DATA_GROUPS;
        config.heartbeat_ms = 100;
        config.election_ms = (400, 800);
        let node = Node::open(config, Arc::new(FileDisk)).await.expect("open");
        let router = node.router();
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        nodes.push(Running {
            node,
            server,
            _dir: dir,
        });
    }
    (nodes, members)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_form_every_group_register_data_groups_and_spread_leaders() {
    let (nodes, members) = start_three().await;
    for n in &nodes {
        n.node.form(&members).await.expect("form");
    }
    let groups: Vec<GroupId> = nodes[0].node.groups().collect();
    assert_eq!(groups.len(), 1 + DATA_GROUPS as usize);
    // Every group elects a leader.
    for g in &groups {
        nodes[0]
            .node
            .raft(*g)
            .expect("hosted")
            .wait(WAIT)
            .metrics(|m| m.current_leader.is_some(), "a leader")
            .await
            .expect("leader");
    }
    // Spread leaders until each group is led by its preferred node.
    let voters: Vec<u64> = members.keys().copied().collect();
    // A node hands over only what it knows it leads, so hand over until
    // every group is led by its preferred node (bounded attempts).
    let mut settled = false;
    for _ in 0..20 {
        for n in &nodes {
            n.node.spread_leaders().await.expect("spread");
        }
        let mut all = true;
        for g in &groups {
            let preferred = preferred_leader(*g, &voters).expect("voters");
            let led = nodes[0]
                .node
                .raft(*g)
                .expect("hosted")
                .wait(Some(Duration::from_secs(2)))
                .metrics(
                    |m| m.current_leader == Some(preferred),
                    "the preferred node leads",
                )
                .await;
            all &= led.is_ok();
        }
        if all {
            settled = true;
            break;
        }
    }
    assert!(settled, "every group ends up led by its preferred node");
    let leaders: std::collections::BTreeSet<u64> = groups
        .iter()
        .map(|g| preferred_leader(*g, &voters).expect("voters"))
        .collect();
    assert_eq!(leaders.len(), 3, "four groups are led by all three nodes");

    // A follower of the meta group registers the data groups and its URL:
    // its proposals are forwarded to the leader. A linearizable read
    // through every node then sees them at once.
    let meta_leader = preferred_leader(META_GROUP, &voters).expect("voters");
    let follower_id = voters
        .iter()
        .copied()
        .find(|id| *id != meta_leader)
        .expect("a follower");
    let follower = &nodes[(follower_id - 1) as usize].node;
    follower
        .register("http://127.0.0.1:9")
        .await
        .expect("register through the leader");
    follower
        .register("http://127.0.0.1:9")
        .await
        .expect("a repeat is harmless");
    for n in &nodes {
        let led_by = n.node.linearizable(META_GROUP).await.expect("read index");
        assert_eq!(led_by, meta_leader);
        let hosted = n.node.machine(META_GROUP).expect("meta").read();
        let NodeMachine::Meta(meta) = hosted.machine() else {
            panic!("group 0 is the meta group")
        };
        assert_eq!(meta.state().data_groups().len(), DATA_GROUPS as usize);
        assert_eq!(
            meta.state().nodes().get(&follower_id).map(String::as_str),
            Some("http://127.0.0.1:9")
        );
    }
    for n in nodes {
        n.node.shutdown().await.expect("shutdown");
        n.server.abort();
    }
}
