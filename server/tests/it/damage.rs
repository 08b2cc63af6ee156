//! Goal: corruption fencing through the server. A node whose copy of a
//! partition is damaged never serves it: reads go to another replica, or
//! answer 503 `ReplicaRepairing` when no other exists; writes go on; and in
//! a cluster the copy is repaired from a peer, after which the node serves
//! it again, whole.
//! Method: real `sluice serve` processes with 4 KiB segments and frequent
//! checkpoints (which seal segments); a byte of a sealed segment file is
//! flipped on disk; the scrubber (fast here) finds it. Waits are on the
//! nodes' `/metrics`, with deadlines.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::{LocalCluster, Server};

/// Longest the scrubber and the repair may take.
const WAIT: Duration = Duration::from_secs(60);
/// Flags that make sealed segments and scrubbing quick.
const FLAGS: [&str; 6] = [
    "--segment-kib",
    "4",
    "--checkpoint-entries",
    "10",
    "--scrub-mib-per-s",
    "1000",
];

/// Produces 300 messages of about 200 bytes to partition 0 of `app`'s
/// queue `q`, 10 per request; returns their bodies.
async fn produce(s: &Server, app: &str) -> Vec<String> {
    let mut bodies = Vec::new();
    for batch in 0..30 {
        let messages: Vec<Value> = (0..10)
            .map(|i| {
                let body = format!("m{batch}.{i} {}", "x".repeat(180));
                bodies.push(body.clone());
                json!({"body": body, "partition": 0})
            })
            .collect();
        s.json(
            "POST",
            &format!("/v2/{app}/q/messages"),
            &json!({ "messages": messages }),
        )
        .await
        .expect(201);
    }
    bodies
}

/// The bodies of partition 0 of `app`'s queue `q` read through `s`, or
/// the error status and code.
async fn read_all(s: &Server, app: &str) -> Result<Vec<String>, (u16, String)> {
    let reply = s
        .app(
            "GET",
            &format!(
                "/v2/{app}/q/partitions/0/messages?offset=0&max_messages=1000&max_bytes=1000000"
            ),
            "",
        )
        .await;
    if reply.status != 200 {
        let code = reply.json["error"]["code"]
            .as_str()
            .unwrap_or("")
            .to_string();
        return Err((reply.status, code));
    }
    Ok(reply.json["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| m["body"].as_str().expect("a text body").to_string())
        .collect())
}

/// The sealed segment files of partition 0 in `group` under `data_dir`.
fn sealed_segments(data_dir: &Path, group: u64) -> Vec<PathBuf> {
    let group_dir = data_dir.join("groups").join(group.to_string());
    let mut sealed = Vec::new();
    for entry in std::fs::read_dir(&group_dir).expect("group dir").flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let partition_zero = name.starts_with('q') && name.contains("-p0");
        if !partition_zero || !entry.path().is_dir() {
            continue;
        }
        for file in std::fs::read_dir(entry.path())
            .expect("partition dir")
            .flatten()
        {
            let path = file.path();
            if path.extension().is_some_and(|e| e == "seal") {
                sealed.push(path.with_extension("log"));
            }
        }
    }
    sealed.sort();
    sealed
}

/// Waits until `s` has sealed at least two segments of partition 0, then
/// flips a byte in the first.
async fn damage_a_sealed_segment(s: &Server, group: u64) -> PathBuf {
    let deadline = Instant::now() + WAIT;
    let victim = loop {
        let sealed = sealed_segments(s.data_dir(), group);
        if sealed.len() >= 2 {
            break sealed[0].clone();
        }
        assert!(Instant::now() < deadline, "segments get sealed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut bytes = std::fs::read(&victim).expect("read segment");
    bytes[200] ^= 0x20;
    std::fs::write(&victim, &bytes).expect("damage");
    victim
}

/// Waits until `series` on `s` satisfies `ok`.
async fn wait_metric(s: &Server, series: &str, ok: impl Fn(f64) -> bool) {
    let deadline = Instant::now() + WAIT;
    loop {
        if s.metric(series).await.is_some_and(&ok) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{series} never reached the value wanted"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_node_never_serves_its_damaged_partition_and_keeps_writing() {
    let dir = tempfile::tempdir().expect("dir");
    let s = Server::start(dir.path(), &FLAGS).await;
    let created = s
        .json(
            "POST",
            "/v2/default/queues",
            &json!({"name": "q", "partitions": 2}),
        )
        .await;
    let group = created.expect(201)["group"].as_u64().expect("group");
    let bodies = produce(&s, "default").await;
    assert_eq!(read_all(&s, "default").await, Ok(bodies));
    damage_a_sealed_segment(&s, group).await;
    wait_metric(&s, "sluice_damaged_segments", |v| v == 1.0).await;

    let status = s
        .call("GET", "/admin/status", Some(&s.admin_auth()), &[], "")
        .await;
    let damaged = status.expect(200)["damaged_segments"].clone();
    assert_eq!(damaged.as_array().map(Vec::len), Some(1), "{damaged}");
    assert_eq!(damaged[0]["partition"], 0);
    // No peer to repair from: the partition stays fenced, and every read
    // of it is refused rather than served from damaged bytes.
    assert_eq!(
        read_all(&s, "default").await,
        Err((503, "ReplicaRepairing".to_string()))
    );
    s.app("GET", "/v1/default/q?partitions=1", "")
        .await
        .expect(503);
    // Writes append to the active segment, which the damage does not touch.
    s.json(
        "POST",
        "/v2/default/q/messages",
        &json!({"messages": [{"body": "after", "partition": 0}]}),
    )
    .await
    .expect(201);
    // Other partitions are served.
    s.app("GET", "/v2/default/q/partitions/1/messages?offset=0", "")
        .await
        .expect(200);
    assert_eq!(
        s.metric("sluice_damaged_segments_repaired_total").await,
        Some(0.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_replica_is_repaired_from_a_peer_and_serves_whole_data() {
    let cluster = LocalCluster::start_with(3, 1, &FLAGS).await;
    let first = cluster.node(1);
    let created = first
        .json(
            "POST",
            "/v2/test/queues",
            &json!({"name": "q", "partitions": 1}),
        )
        .await;
    let group = created.expect(201)["group"].as_u64().expect("group");
    let bodies = produce(first, "test").await;
    let victim = cluster.node(3);
    damage_a_sealed_segment(victim, group).await;
    wait_metric(victim, "sluice_damaged_segments_found_total", |v| v >= 1.0).await;
    // Fenced or already repaired, node 3 answers with the whole data.
    assert_eq!(read_all(victim, "test").await, Ok(bodies.clone()));
    wait_metric(victim, "sluice_damaged_segments_repaired_total", |v| {
        v >= 1.0
    })
    .await;
    wait_metric(victim, "sluice_damaged_segments", |v| v == 0.0).await;
    assert_eq!(read_all(victim, "test").await, Ok(bodies));
    // The repaired copy is whole on disk: a full scrub round finds nothing
    // more (the counter does not move past the one damage).
    let scrubbed = victim
        .metric("sluice_scrubbed_bytes_total")
        .await
        .unwrap_or(0.0);
    wait_metric(victim, "sluice_scrubbed_bytes_total", |v| {
        v > scrubbed + 8192.0
    })
    .await;
    assert_eq!(
        victim.metric("sluice_damaged_segments_found_total").await,
        Some(1.0)
    );
}
