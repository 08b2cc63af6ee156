//! Goal: `/metrics` exposes, in Prometheus text, what operators watch:
//! requests by route and status, produced and consumed messages,
//! partition offsets, consumer-group lag, Raft progress and WAL fsyncs.
//! Method: one real `sluice serve`; a known workload, then a scrape.

use serde_json::json;

use crate::support::Server;

/// The value of the series named exactly `series` (name and labels).
pub(crate) fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_describe_the_workload() {
    let dir = tempfile::tempdir().expect("dir");
    let s = Server::start(dir.path(), &[]).await;
    let created = s
        .json("POST", "/v2/default/queues", &json!({"name": "q"}))
        .await;
    let group = created.expect(201)["group"].as_u64().expect("group");
    let messages = json!({"messages": [{"body": "abc"}, {"body": "de"}, {"body": "f"}]});
    s.json("POST", "/v2/default/q/messages", &messages)
        .await
        .expect(201);
    // v1 posts are served before the router (`hot_route.rs`), and still
    // counted under their route, whatever their status.
    s.app("POST", "/v1/default/q", "ghij").await.expect(201);
    s.app("POST", "/v1/default/nope", "x").await.expect(404);
    s.app(
        "GET",
        "/v2/default/q/partitions/0/messages?max_messages=2",
        "",
    )
    .await
    .expect(200);
    let joined = s
        .json("POST", "/v2/default/q/groups/g/members", &json!({}))
        .await;
    let member = joined.expect(201).clone();
    s.json(
        "PUT",
        "/v2/default/q/groups/g/offsets",
        &json!({"member_id": member["member_id"], "member_epoch": member["member_epoch"], "offsets": {"0": 1}}),
    )
    .await
    .expect(200);

    let scrape = reqwest::get(format!("{}/metrics", s.url))
        .await
        .expect("scrape");
    assert_eq!(scrape.status(), 200);
    let text = scrape.text().await.expect("text");
    let expect = |series: &str, wanted: f64| {
        assert_eq!(value(&text, series), Some(wanted), "{series} in:\n{text}");
    };
    expect("sluice_produced_messages_total", 4.0);
    expect("sluice_produced_bytes_total", 10.0);
    expect("sluice_consumed_messages_total", 2.0);
    expect("sluice_consumed_bytes_total", 5.0);
    expect(
        "sluice_http_requests_total{route=\"/v2/{app}/{queue}/messages\",method=\"POST\",status=\"201\"}",
        1.0,
    );
    expect(
        "sluice_http_request_duration_seconds_count{route=\"/v2/{app}/{queue}/messages\",method=\"POST\",status=\"201\"}",
        1.0,
    );
    expect(
        "sluice_http_requests_total{route=\"/v1/{app}/{queue}\",method=\"POST\",status=\"201\"}",
        1.0,
    );
    expect(
        "sluice_http_requests_total{route=\"/v1/{app}/{queue}\",method=\"POST\",status=\"404\"}",
        1.0,
    );
    expect(
        "sluice_partition_end_offset{app=\"default\",queue=\"q\",partition=\"0\"}",
        4.0,
    );
    expect(
        "sluice_consumer_group_lag{app=\"default\",queue=\"q\",group=\"g\",partition=\"0\"}",
        3.0,
    );
    expect("sluice_raft_is_leader{group=\"0\"}", 1.0);
    expect("sluice_metrics_truncated", 0.0);
    let fsyncs = value(&text, "sluice_wal_fsync_seconds_count").expect("fsync count");
    assert!(fsyncs >= 1.0, "{text}");
    // Buckets are in seconds (the largest bound is 1 s), and cumulative.
    assert!(value(&text, "sluice_wal_fsync_seconds_bucket{le=\"1\"}").is_some());
    assert_eq!(
        value(&text, "sluice_wal_fsync_seconds_bucket{le=\"+Inf\"}"),
        Some(fsyncs)
    );
    let applied = value(
        &text,
        &format!("sluice_raft_applied_index{{group=\"{group}\"}}"),
    )
    .expect("applied");
    assert!(
        applied >= 3.0,
        "create, produce, join and commit were applied"
    );
}
