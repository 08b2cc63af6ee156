//! Goal: the requests the Queuey Python client (`queuey-py`) makes get the
//! answers its live-server test suite expects. That suite is Python 2
//! (and an old `requests`), so it cannot run here unchanged; these are its
//! flows, request for request, against a real `sluice serve`.
//! Method: one `sluice serve`; form-encoded posts and query strings as the
//! client builds them.

use serde_json::Value;

use crate::support::Server;

/// A version 1 UUID for `unix_secs`, as Python's `uuid.uuid1().hex`.
fn uuid1_hex(unix_secs: u64, node: u64) -> String {
    let t = unix_secs * 10_000_000 + 0x01B2_1DD2_1381_4000;
    format!(
        "{:08x}{:04x}{:04x}{:04x}{:012x}",
        t & 0xffff_ffff,
        (t >> 32) & 0xffff,
        ((t >> 48) & 0x0fff) | 0x1000,
        0x8000 | 0x1234,
        node & 0xffff_ffff_ffff
    )
}

fn queue_names(list: &Value) -> Vec<String> {
    list["queues"]
        .as_array()
        .expect("queues")
        .iter()
        .map(|q| q["queue_name"].as_str().expect("name").to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_clients_flows_get_the_answers_it_expects() {
    let dir = tempfile::tempdir().expect("dir");
    let s = Server::start(dir.path(), &[]).await;
    // connect(): HEAD /__heartbeat__.
    assert_eq!(
        s.call("HEAD", "/__heartbeat__", None, &[], "").await.status,
        200
    );
    // get(): the application's queues.
    let listed = s.app("GET", "/v1/default", "").await;
    assert!(listed.expect(200).get("queues").is_some());
    // create_queue(), create_queue(partitions=3), create_queue(queue_name=…).
    let made = s.form("POST", "/v1/default", "partitions=1").await;
    let name = made.expect(201)["queue_name"]
        .as_str()
        .expect("name")
        .to_string();
    s.form("POST", "/v1/default", "partitions=3&queue_name=test-queue")
        .await
        .expect(201);
    let details = s.app("GET", "/v1/default?details=True", "").await;
    let queues = details.expect(200)["queues"]
        .as_array()
        .expect("list")
        .clone();
    let partitions = |n: &str| {
        queues
            .iter()
            .find(|q| q["queue_name"] == n)
            .map(|q| q["partitions"].clone())
    };
    assert_eq!(partitions(&name), Some(Value::from(1)));
    assert_eq!(partitions("test-queue"), Some(Value::from(3)));
    // create_queue(partitions=-1) is an HTTP error.
    let bad = s.form("POST", "/v1/default", "partitions=-1").await;
    assert_eq!(bad.status, 400);

    // put(name + "/" + quote_plus("1:" + uuid1().hex), data="hello"), then
    // messages(name): one message, that body and that id.
    let id = uuid1_hex(1_795_000_000, 0x0242_ac11_0002);
    let path = format!("/v1/default/{name}/1%3A{id}");
    s.app("PUT", &path, "hello").await.expect(200);
    let read = s
        .app(
            "GET",
            &format!("/v1/default/{name}?limit=100&order=ascending&partitions=1"),
            "",
        )
        .await;
    let messages = read.expect(200)["messages"]
        .as_array()
        .expect("list")
        .clone();
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0]["body"], "hello");
    assert_eq!(messages[0]["message_id"], id.as_str());
    // The client filters with float(str(m["timestamp"])).
    let ts = messages[0]["timestamp"].as_str().expect("a string");
    assert!(ts.parse::<f64>().is_ok(), "{ts}");

    // post(name, data=["a", "b", "c"]): a JSON batch with ttl 259200.
    let batch = r#"{"messages": [{"body": "a", "ttl": 259200}, {"body": "b", "ttl": 259200}, {"body": "c", "ttl": 259200}]}"#;
    let auth = s.auth();
    let posted = s
        .call(
            "POST",
            &format!("/v1/default/{name}"),
            Some(&auth),
            &[("content-type", "application/json")],
            batch,
        )
        .await;
    assert_eq!(
        posted.expect(201)["messages"].as_array().map(Vec::len),
        Some(3)
    );
    // messages(name, since=time.time() + 1000): none; the client sends the
    // float's repr.
    let future = s
        .app(
            "GET",
            &format!(
                "/v1/default/{name}?limit=100&order=ascending&partitions=1&since=2795000000.123456"
            ),
            "",
        )
        .await;
    assert_eq!(future.expect(200)["messages"], Value::Array(Vec::new()));
    // messages(name, order="undefined"): 400 naming "order".
    let undefined = s
        .app(
            "GET",
            &format!("/v1/default/{name}?limit=100&order=undefined&partitions=1"),
            "",
        )
        .await;
    undefined.expect_error(400, "order");
    // delete(name): gone from the list.
    s.app("DELETE", &format!("/v1/default/{name}"), "")
        .await
        .expect(200);
    let after = s.app("GET", "/v1/default", "").await;
    assert!(!queue_names(after.expect(200)).contains(&name));
}
