//! Goal: a cluster grows from 1 node to 3 and shrinks to 2 through the
//! admin API with no acknowledged write lost.
//! Method: real `sluice serve` processes on loopback. Node 1 starts alone;
//! nodes 2 and 3 start knowing the peers but not forming anything, and
//! are added with `POST /admin/nodes` (learner, caught up, then voter in
//! every group); node 3 is then removed with `DELETE /admin/nodes/3`.
//! Writes are acknowledged between every step; at the end both remaining
//! replicas hold all of them.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::{Server, free_ports};

const SECRET: &str = "membership-test-secret-0123";
const ADMIN: &str = "Bearer admin-key-0123456789abcdef";
const APP: &str = "test=membership-key-0123456789";
const CONVERGE_TIMEOUT: Duration = Duration::from_secs(60);

fn args(id: u64, ports: &[u16], alone: bool) -> Vec<String> {
    let mut a = vec![
        "--listen".to_string(),
        format!("127.0.0.1:{}", ports[(id - 1) as usize]),
        "--node-id".into(),
        id.to_string(),
        "--cluster-secret".into(),
        SECRET.into(),
        "--groups".into(),
        "2".into(),
        "--admin-key".into(),
        ADMIN.trim_start_matches("Bearer ").into(),
        "--app-key".into(),
        APP.into(),
    ];
    if !alone {
        let peers: Vec<String> = ports
            .iter()
            .enumerate()
            .map(|(i, p)| format!("{}=127.0.0.1:{p}", i + 1))
            .collect();
        a.extend(["--peers".to_string(), peers.join(",")]);
    }
    a
}

async fn spawn(dir: &std::path::Path, args: &[String]) -> Server {
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut s = Server::spawn(dir, &a).await;
    s.key = APP.split_once('=').expect("key").1.to_string();
    s
}

async fn write(s: &Server, acked: &mut Vec<String>, n: usize) {
    for i in 0..n {
        let reply = s
            .app("POST", "/v1/test/grow", format!("m{}-{i}", acked.len()))
            .await;
        let key = reply.expect(201)["messages"][0]["key"]
            .as_str()
            .expect("key")
            .to_string();
        acked.push(key);
    }
}

async fn add(admin: &Server, id: u64, port: u16) {
    let body = json!({"id": id, "addr": format!("127.0.0.1:{port}")}).to_string();
    let reply = admin
        .call("POST", "/admin/nodes", Some(ADMIN), &[], body)
        .await;
    reply.expect(200);
}

async fn converge(s: &Server, acked: &[String]) {
    let deadline = Instant::now() + CONVERGE_TIMEOUT;
    loop {
        let read = s.app("GET", "/v1/test/grow", "").await;
        let ids: Vec<String> = read.json["messages"]
            .as_array()
            .map(|l| {
                l.iter()
                    .filter_map(|m| m["message_id"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        if ids == acked {
            return;
        }
        assert!(
            acked.starts_with(&ids),
            "a replica holds what was never acknowledged"
        );
        assert!(Instant::now() < deadline, "the replica did not converge");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn voters(status: &Value) -> Vec<Vec<u64>> {
    status["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .map(|g| {
            g["voters"]
                .as_array()
                .expect("voters")
                .iter()
                .map(|v| v.as_u64().expect("id"))
                .collect()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_grows_to_three_and_shrinks_to_two_losing_nothing() {
    let ports = free_ports(3);
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().expect("dir")).collect();
    let one = spawn(dirs[0].path(), &args(1, &ports, true)).await;
    one.form("POST", "/v1/test", "queue_name=grow&consistency=weak")
        .await
        .expect(201);
    let mut acked = Vec::new();
    write(&one, &mut acked, 10).await;

    // The admin API wants its key.
    one.call("GET", "/admin/status", None, &[], "")
        .await
        .expect_error(401, "InvalidAdminKey");
    let bad = [("content-type", "application/json")];
    one.call(
        "POST",
        "/admin/nodes",
        Some(ADMIN),
        &bad,
        "{\"id\": 0, \"addr\": \"x:1\"}",
    )
    .await
    .expect_error(400, "id");

    // Grow: each new node starts (waiting to be added) while node 1 adds it.
    let args_two = args(2, &ports, false);
    let (two, ()) = tokio::join!(spawn(dirs[1].path(), &args_two), add(&one, 2, ports[1]));
    write(&two, &mut acked, 10).await;
    let args_three = args(3, &ports, false);
    let (three, ()) = tokio::join!(spawn(dirs[2].path(), &args_three), add(&two, 3, ports[2]));
    write(&three, &mut acked, 10).await;
    let status = one.call("GET", "/admin/status", Some(ADMIN), &[], "").await;
    for v in voters(status.expect(200)) {
        assert_eq!(v, vec![1, 2, 3]);
    }
    assert_eq!(status.json["nodes"].as_object().map(|n| n.len()), Some(3));

    // Shrink: remove node 3 from every group, then stop it.
    one.call("DELETE", "/admin/nodes/3", Some(ADMIN), &[], "")
        .await
        .expect(200);
    three.kill().await;
    write(&two, &mut acked, 10).await;
    let status = two.call("GET", "/admin/status", Some(ADMIN), &[], "").await;
    for v in voters(status.expect(200)) {
        assert_eq!(v, vec![1, 2]);
    }
    converge(&one, &acked).await;
    converge(&two, &acked).await;
}
