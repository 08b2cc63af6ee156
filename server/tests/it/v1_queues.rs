//! Goal: the Queuey v1 queue routes answer as the contract says
//! (`../shared/spec/queuey-v1.md`), including every error case and the
//! order of checks.
//! Method: one real `sluice serve` process, requests over HTTP.

use crate::support::Server;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_routes_follow_the_contract() {
    let dir = tempfile::tempdir().expect("dir");
    let s = Server::start(dir.path(), &["--app-key", "other=other-key-0123456789"]).await;

    // Create: defaults, then every setting.
    let created = s.form("POST", "/v1/default", "").await;
    let body = created.expect(201);
    let generated = body["queue_name"].as_str().expect("name").to_string();
    assert_eq!(generated.len(), 32);
    assert!(generated.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(body["partitions"], 1);
    assert_eq!(body["type"], "user");
    assert_eq!(body["consistency"], "strong");
    assert_eq!(body["principles"], serde_json::json!([]));
    let full = s
        .form(
            "POST",
            "/v1/default",
            "queue_name=orders&partitions=3&type=public&consistency=weak&principles=app:other,bid:bob@example.com",
        )
        .await;
    let body = full.expect(201);
    assert_eq!(body["partitions"], 3);
    assert_eq!(body["type"], "public");
    assert_eq!(body["consistency"], "weak");
    assert_eq!(
        body["principles"],
        serde_json::json!(["app:other", "bid:bob@example.com"])
    );

    // Create errors.
    s.form("POST", "/v1/default", "queue_name=orders")
        .await
        .expect_error(409, "queue_name");
    for (form, field) in [
        ("queue_name=has%20space", "queue_name"),
        (
            &format!("queue_name={}", "x".repeat(51)) as &str,
            "queue_name",
        ),
        ("partitions=0", "partitions"),
        ("partitions=201", "partitions"),
        ("partitions=two", "partitions"),
        ("type=private", "type"),
        ("consistency=eventual", "consistency"),
        ("principles=bob", "principles"),
    ] {
        s.form("POST", "/v1/default", form)
            .await
            .expect_error(400, field);
    }
    // No credentials: 403; an unknown key: 401; another app's key: 403.
    s.call("POST", "/v1/default", None, &[], "")
        .await
        .expect_error(403, "Forbidden");
    s.call(
        "POST",
        "/v1/default",
        Some("Application not-a-key-000000"),
        &[],
        "",
    )
    .await
    .expect_error(401, "InvalidApplicationKey");
    s.call(
        "POST",
        "/v1/default",
        Some("Application other-key-0123456789"),
        &[],
        "",
    )
    .await
    .expect_error(403, "Forbidden");
    s.call("GET", "/v1/nosuchapp", None, &[], "")
        .await
        .expect_error(404, "InvalidApplicationName");

    // List: by name, paginated, with details and counts.
    for name in ["b-queue", "a-queue", "c-queue"] {
        s.form("POST", "/v1/default", &format!("queue_name={name}"))
            .await
            .expect(201);
    }
    s.app("POST", "/v1/default/a-queue", "one")
        .await
        .expect(201);
    s.app("POST", "/v1/default/a-queue", "two")
        .await
        .expect(201);
    let list = s.app("GET", "/v1/default", "").await;
    let names: Vec<String> = list.expect(200)["queues"]
        .as_array()
        .expect("queues")
        .iter()
        .map(|q| q["queue_name"].as_str().expect("name").to_string())
        .collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted, "stable order by name");
    assert_eq!(names.len(), 5);
    assert!(
        list.json["queues"][0].get("partitions").is_none(),
        "no details unless asked"
    );
    let page = s
        .app(
            "GET",
            "/v1/default?offset=b-queue&limit=2&details=1&include_count=true",
            "",
        )
        .await;
    let queues = page.expect(200)["queues"]
        .as_array()
        .expect("queues")
        .clone();
    assert_eq!(queues.len(), 2);
    assert_eq!(queues[0]["queue_name"], "b-queue");
    assert_eq!(queues[0]["count"], 0);
    assert!(queues[0]["created"].as_u64().is_some());
    let a = s
        .app("GET", "/v1/default?include_count=1&details=FALSE", "")
        .await;
    let a_queue = a.json["queues"]
        .as_array()
        .expect("queues")
        .iter()
        .find(|q| q["queue_name"] == "a-queue")
        .expect("a-queue")
        .clone();
    assert_eq!(a_queue["count"], 2);
    assert!(a_queue.get("type").is_none(), "details=FALSE is false");
    s.call("GET", "/v1/default", None, &[], "")
        .await
        .expect_error(403, "Forbidden");
    s.app("GET", "/v1/default?limit=x", "")
        .await
        .expect_error(400, "limit");

    // Update: omitted fields keep their values; partitions only grow.
    let updated = s.form("PUT", "/v1/default/orders", "partitions=5").await;
    let body = updated.expect(200);
    assert_eq!(body["partitions"], 5);
    assert_eq!(body["type"], "public", "type kept");
    assert_eq!(
        body["principles"],
        serde_json::json!(["app:other", "bid:bob@example.com"])
    );
    assert!(body["created"].as_u64().is_some());
    s.form("PUT", "/v1/default/orders", "partitions=4")
        .await
        .expect_error(400, "partitions");
    s.form("PUT", "/v1/default/orders", "type=user&principles=")
        .await
        .expect(200);
    let list = s
        .app("GET", "/v1/default?details=1&offset=orders&limit=1", "")
        .await;
    let orders = &list.expect(200)["queues"][0];
    assert_eq!(
        (orders["type"].as_str(), orders["consistency"].as_str()),
        (Some("user"), Some("weak"))
    );
    assert_eq!(orders["principles"], serde_json::json!([]));
    // The new partitions take messages.
    s.call(
        "POST",
        "/v1/default/orders",
        Some(&s.auth()),
        &[("x-partition", "5")],
        "m",
    )
    .await
    .expect(201);
    s.form("PUT", "/v1/default/nosuch", "partitions=2")
        .await
        .expect_error(404, "InvalidQueueName");

    // Delete: gone at once, messages too; a re-created name starts empty.
    s.app("DELETE", "/v1/default/a-queue", "").await.expect(200);
    s.app("GET", "/v1/default/a-queue", "")
        .await
        .expect_error(404, "InvalidQueueName");
    s.app("DELETE", "/v1/default/a-queue", "")
        .await
        .expect_error(404, "InvalidQueueName");
    s.form("POST", "/v1/default", "queue_name=a-queue")
        .await
        .expect(201);
    let fresh = s.app("GET", "/v1/default/a-queue", "").await;
    assert_eq!(fresh.expect(200)["messages"], serde_json::json!([]));

    // Unknown routes and methods get JSON errors.
    s.app("GET", "/v1/default/orders/x/y", "")
        .await
        .expect_error(404, "NotFound");
    s.app("GET", "/nothing", "")
        .await
        .expect_error(404, "NotFound");
    s.app("PATCH", "/v1/default/orders", "")
        .await
        .expect_error(405, "MethodNotAllowed");
    s.app("DELETE", "/v1/default", "")
        .await
        .expect_error(405, "MethodNotAllowed");
    let long = format!("/v1/default/{}", "q".repeat(51));
    s.app("GET", &long, "")
        .await
        .expect_error(404, "InvalidQueueName");
}
