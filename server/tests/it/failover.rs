//! Goal: in a 3-node cluster of real processes, any node serves writes
//! (forwarding to the leader), and `kill -9` of the leader under a stream
//! of writes loses nothing acknowledged and duplicates nothing; after the
//! killed node restarts, every replica holds the same messages in the
//! same order.
//! Method: three `sluice serve` processes on loopback; one writer posts
//! through a node that does not lead the queue's group; the leader is
//! killed mid-stream and restarted. Replicas are compared through `weak`
//! reads, which each node answers from its own replica, waiting (with a
//! deadline) for them to converge.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::LocalCluster;

/// Longest the replicas may take to converge after the writes stop.
const CONVERGE_TIMEOUT: Duration = Duration::from_secs(60);

fn leader_of(reply: &crate::support::Reply) -> u64 {
    reply
        .headers
        .get("x-sluice-leader")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("a leader header")
}

fn message_ids(json: &Value) -> Vec<String> {
    json["messages"]
        .as_array()
        .map(|list| {
            list.iter()
                .filter_map(|m| m["message_id"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_leader_mid_stream_loses_and_duplicates_nothing() {
    let mut cluster = LocalCluster::start(3, 2).await;
    let first = cluster.node(1);
    first
        .form("POST", "/v1/test", "queue_name=stream&consistency=weak")
        .await
        .expect(201);
    let probe = first.app("POST", "/v1/test/stream", "probe").await;
    probe.expect(201);
    let leader = leader_of(&probe);
    let mut acked = vec![
        probe.json["messages"][0]["key"]
            .as_str()
            .expect("key")
            .to_string(),
    ];
    // Write through a node that does not lead the queue's group.
    let entry = (1..=3).find(|id| *id != leader).expect("a follower");

    let mut killed_at = None;
    for i in 0..60 {
        if i == 20 {
            cluster.kill(leader).await;
            killed_at = Some(acked.len());
        }
        let reply = cluster
            .node(entry)
            .app("POST", "/v1/test/stream", format!("message {i}"))
            .await;
        let key = reply.expect(201)["messages"][0]["key"]
            .as_str()
            .expect("key")
            .to_string();
        if i >= 20 {
            assert_ne!(leader_of(&reply), leader, "a new leader answered");
        }
        acked.push(key);
    }
    assert_eq!(killed_at, Some(21));
    cluster.restart(leader).await;

    // Every replica, the restarted one included, converges on exactly the
    // acknowledged messages in acknowledgement order.
    let deadline = Instant::now() + CONVERGE_TIMEOUT;
    for id in 1..=3u64 {
        loop {
            let read = cluster.node(id).app("GET", "/v1/test/stream", "").await;
            let ids = message_ids(&read.json);
            if ids == acked {
                break;
            }
            assert!(
                ids.len() <= acked.len() && acked.starts_with(&ids),
                "node {id} holds something never acknowledged, or out of order: {} vs {}",
                ids.len(),
                acked.len()
            );
            assert!(Instant::now() < deadline, "node {id} did not converge");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
