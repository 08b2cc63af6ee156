//! Goal: consumer groups behave as `native-v2.md` says: 3 members of a
//! 6-partition queue get 2 partitions each; a member that stops
//! heartbeating loses its partitions after its session timeout and the
//! others resume from its last commit (what came after is delivered
//! again, nothing at or before it); stale commits are fenced with 409; no
//! partition is ever assigned to two members at once, even mid-rebalance;
//! and any node of a cluster serves group requests.
//! Method: real `sluice serve` processes; members are HTTP clients that
//! heartbeat in rounds until a condition holds (with a deadline). A
//! "killed" member is one that stops calling, as a crashed process would.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use sluice_server::v2::message_frames;

use crate::support::{LocalCluster, Server};

/// Longest a group may take to settle.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Pause between heartbeat rounds (a member's heartbeat interval).
const ROUND_PAUSE: Duration = Duration::from_millis(100);
/// The members' session timeout.
const SESSION_TIMEOUT_MS: u64 = 1_500;

const GROUP: &str = "/v2/test/q/groups/workers";

/// One member as its client knows it.
#[derive(Debug, Clone)]
struct Member {
    id: String,
    epoch: u64,
    partitions: BTreeSet<u64>,
}

fn partitions_of(json: &Value) -> BTreeSet<u64> {
    json["partitions"]
        .as_array()
        .expect("partitions")
        .iter()
        .map(|p| p.as_u64().expect("number"))
        .collect()
}

async fn join(s: &Server) -> Member {
    let joined = s
        .json(
            "POST",
            &format!("{GROUP}/members"),
            &json!({"session_timeout_ms": SESSION_TIMEOUT_MS}),
        )
        .await;
    let body = joined.expect(201);
    Member {
        id: body["member_id"].as_str().expect("id").to_string(),
        epoch: body["member_epoch"].as_u64().expect("epoch"),
        partitions: partitions_of(body),
    }
}

/// A heartbeat at the member's epoch; updates what it knows.
async fn heartbeat(s: &Server, m: &mut Member) {
    let reply = s
        .json(
            "POST",
            &format!("{GROUP}/members/{}/heartbeat", m.id),
            &json!({"member_epoch": m.epoch}),
        )
        .await;
    let body = reply.expect(200);
    m.epoch = body["member_epoch"].as_u64().expect("epoch");
    m.partitions = partitions_of(body);
}

/// No partition is in two members' views (the views each client holds,
/// which is what it consumes).
#[track_caller]
fn assert_exclusive(members: &[&Member]) {
    let mut seen = BTreeMap::new();
    for m in members {
        for p in &m.partitions {
            if let Some(other) = seen.insert(*p, m.id.clone()) {
                panic!("partition {p} held by {other} and {}", m.id);
            }
        }
    }
}

/// Heartbeats every member in rounds until each holds `share` partitions,
/// checking exclusivity after every heartbeat.
async fn settle(s: &Server, members: &mut [Member], share: usize) {
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    loop {
        for i in 0..members.len() {
            let mut m = members[i].clone();
            heartbeat(s, &mut m).await;
            members[i] = m;
            assert_exclusive(&members.iter().collect::<Vec<_>>());
        }
        if members.iter().all(|m| m.partitions.len() == share) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the group did not settle: {members:?}"
        );
        tokio::time::sleep(ROUND_PAUSE).await;
    }
}

/// Polls everything the member has now: (partition, offset) delivered.
async fn poll(s: &Server, m: &Member) -> Vec<(u64, u64)> {
    let reply = s
        .app(
            "GET",
            &format!("{GROUP}/poll?member={}&max_messages=1000", m.id),
            "",
        )
        .await;
    let body = reply.expect(200);
    let delivered: Vec<(u64, u64)> = body["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|msg| {
            (
                msg["partition"].as_u64().expect("partition"),
                msg["offset"].as_u64().expect("offset"),
            )
        })
        .collect();
    let allowed = partitions_of(body);
    assert!(
        delivered.iter().all(|(p, _)| allowed.contains(p)),
        "delivered outside the assignment"
    );
    delivered
}

async fn commit(s: &Server, m: &Member, offsets: Value) -> crate::support::Reply {
    s.json(
        "PUT",
        &format!("{GROUP}/offsets"),
        &json!({"member_id": m.id, "member_epoch": m.epoch, "offsets": offsets}),
    )
    .await
}

/// A node serving app `test` with a 6-partition queue `q` holding 10
/// messages per partition.
async fn node_with_messages(dir: &std::path::Path) -> Server {
    let mut s = Server::spawn(
        dir,
        &[
            "--listen",
            "127.0.0.1:0",
            "--app-key",
            crate::support::CLUSTER_APP_KEY,
        ],
    )
    .await;
    s.key = crate::support::CLUSTER_APP_KEY
        .split_once('=')
        .expect("key")
        .1
        .to_string();
    s.json(
        "POST",
        "/v2/test/queues",
        &json!({"name": "q", "partitions": 6}),
    )
    .await
    .expect(201);
    let messages: Vec<Value> = (0..6)
        .flat_map(|p| (0..10).map(move |i| json!({"body": format!("{p}/{i}"), "partition": p})))
        .collect();
    s.json(
        "POST",
        "/v2/test/q/messages",
        &json!({"messages": messages}),
    )
    .await
    .expect(201);
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_members_partitions_move_and_resume_after_its_commit() {
    let dir = tempfile::tempdir().expect("dir");
    let s = node_with_messages(dir.path()).await;
    let mut members = Vec::new();
    for _ in 0..3 {
        members.push(join(&s).await);
        let n = members.len();
        settle(&s, &mut members, 6 / n).await;
    }
    // Everyone consumes what it has; the doomed member commits half.
    let mut seen: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
    for m in &members {
        for (p, o) in poll(&s, m).await {
            seen.entry(p).or_default().push(o);
        }
    }
    let all: Vec<u64> = (0..10).collect();
    assert!(seen.values().all(|offsets| *offsets == all), "{seen:?}");
    assert_eq!(seen.len(), 6);
    let dead = members.remove(0);
    let commits: serde_json::Map<String, Value> = dead
        .partitions
        .iter()
        .map(|p| (p.to_string(), json!(5)))
        .collect();
    commit(&s, &dead, Value::Object(commits)).await.expect(200);

    // The dead member stops calling; the others keep heartbeating until
    // its partitions are theirs (after its session timeout).
    settle(&s, &mut members, 3).await;
    let mut again: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
    for m in &members {
        for (p, o) in poll(&s, m).await {
            again.entry(p).or_default().push(o);
        }
    }
    let redelivered: Vec<u64> = (5..10).collect();
    for p in &dead.partitions {
        assert_eq!(again.get(p), Some(&redelivered), "partition {p}");
    }
    // The survivors' own partitions are not delivered again.
    assert_eq!(again.len(), dead.partitions.len(), "{again:?}");
    // The dead member is gone: its calls are 404, its commits fenced.
    s.json(
        "POST",
        &format!("{GROUP}/members/{}/heartbeat", dead.id),
        &json!({}),
    )
    .await
    .expect_code(404, "UnknownMember");
    let p = dead.partitions.iter().next().expect("one");
    commit(&s, &dead, json!({ p.to_string(): 9 }))
        .await
        .expect_code(409, "Fenced");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_commits_are_fenced_and_leaving_hands_over_at_once() {
    let dir = tempfile::tempdir().expect("dir");
    let s = node_with_messages(dir.path()).await;
    let mut a = join(&s).await;
    let stale = a.clone();
    let mut members = vec![a.clone(), join(&s).await];
    settle(&s, &mut members, 3).await;
    a = members[0].clone();
    assert!(a.epoch > stale.epoch);
    // A commit at the old epoch is fenced, with the current assignment.
    let p = stale.partitions.iter().next().expect("one").to_string();
    let fenced = commit(&s, &stale, json!({ p.clone(): 1 })).await;
    let error = fenced.expect_code(409, "Fenced");
    assert_eq!(error["member_epoch"], a.epoch);
    assert_eq!(partitions_of(error), a.partitions);
    // A partition the member does not own is fenced too.
    let theirs = members[1].partitions.iter().next().expect("one");
    commit(&s, &a, json!({ theirs.to_string(): 1 }))
        .await
        .expect_code(409, "Fenced");
    // Bad bodies are 400s.
    for bad in [
        json!({"member_id": a.id, "member_epoch": a.epoch, "offsets": {}}),
        json!({"member_id": a.id, "member_epoch": a.epoch, "offsets": {"6": 1}}),
        json!({"member_id": "xyz", "member_epoch": 1, "offsets": {"0": 1}}),
        json!({"member_id": a.id, "offsets": {"0": 1}}),
    ] {
        s.json("PUT", &format!("{GROUP}/offsets"), &bad)
            .await
            .expect_code(400, "InvalidRequest");
    }
    // Leaving hands every partition to the other member at once.
    let left = s
        .app("DELETE", &format!("{GROUP}/members/{}", a.id), "")
        .await;
    assert_eq!(left.status, 204);
    let mut b = members[1].clone();
    heartbeat(&s, &mut b).await;
    assert_eq!(b.partitions, (0..6).collect());
    let status = s.app("GET", GROUP, "").await;
    let body = status.expect(200);
    assert_eq!(body["members"].as_array().expect("members").len(), 1);
    assert_eq!(body["lag"], 60);
    // Operators see the same through /admin, with the admin key.
    let bearer = s.admin_auth();
    let path = "/admin/queues/test/q/groups/workers";
    let admin = s.call("GET", path, Some(&bearer), &[], "").await;
    assert_eq!(admin.expect(200)["lag"], 60);
    let missing = s
        .call(
            "GET",
            "/admin/queues/test/q/groups/nobody",
            Some(&bearer),
            &[],
            "",
        )
        .await;
    missing.expect_error(404, "NoSuchGroup");
    let unauthorised = s.app("GET", path, "").await;
    unauthorised.expect_error(401, "InvalidAdminKey");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_node_serves_group_requests() {
    let cluster = LocalCluster::start(3, 1).await;
    let first = cluster.node(1);
    first
        .json(
            "POST",
            "/v2/test/queues",
            &json!({"name": "q", "partitions": 2}),
        )
        .await
        .expect(201);
    let produced = first
        .json(
            "POST",
            "/v2/test/q/messages",
            &json!({"messages": [{"body": "x", "partition": 0}, {"body": "y", "partition": 1}]}),
        )
        .await;
    produced.expect(201);
    let leader: u64 = produced.headers["x-sluice-leader"]
        .to_str()
        .expect("text")
        .parse()
        .expect("a node id");
    let follower = cluster.node(if leader == 1 { 2 } else { 1 });
    // Join through one node, heartbeat, poll and commit through the others.
    let mut m = join(cluster.node(2)).await;
    heartbeat(cluster.node(3), &mut m).await;
    assert_eq!(m.partitions, BTreeSet::from([0, 1]));
    // A follower forwards the poll, with its `Accept` for binary frames.
    let polled = follower
        .call(
            "GET",
            &format!("{GROUP}/poll?member={}&max_messages=1000", m.id),
            Some(&follower.auth()),
            &[("accept", sluice_server::v2::framing::MEDIA_TYPE)],
            "",
        )
        .await;
    assert_eq!(polled.status, 200);
    assert_eq!(polled.headers["x-sluice-partitions"], "0,1");
    assert_eq!(
        polled.headers["x-sluice-member-epoch"],
        m.epoch.to_string().as_str()
    );
    let mut delivered: Vec<(u32, u64, Vec<u8>)> = message_frames::decode(&polled.bytes)
        .expect("a frame")
        .into_iter()
        .map(|msg| (msg.partition, msg.offset, msg.body.to_vec()))
        .collect();
    delivered.sort();
    assert_eq!(
        delivered,
        vec![(0, 0, b"x".to_vec()), (1, 0, b"y".to_vec())]
    );
    commit(cluster.node(3), &m, json!({"0": 1, "1": 1}))
        .await
        .expect(200);
    let status = cluster.node(2).app("GET", GROUP, "").await;
    assert_eq!(status.expect(200)["lag"], 0);
}
