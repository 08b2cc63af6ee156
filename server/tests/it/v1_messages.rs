//! Goal: the Queuey v1 message routes answer as the contract says: posts
//! (single and batch) validated whole, reads by time and id in either
//! order, reads/updates/deletes by id, permissions and the order of checks.
//! Method: one real `sluice serve` process, requests over HTTP.

use serde_json::{Value, json};

use crate::support::Server;

fn ids(messages: &Value) -> Vec<String> {
    messages["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| m["message_id"].as_str().expect("id").to_string())
        .collect()
}

fn bodies(messages: &Value) -> Vec<String> {
    messages["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| m["body"].as_str().expect("body").to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn posts_and_reads_follow_the_contract() {
    let dir = tempfile::tempdir().expect("dir");
    let s = Server::start(dir.path(), &[]).await;
    let auth = s.auth();
    s.form("POST", "/v1/default", "queue_name=q&partitions=2")
        .await
        .expect(201);

    // One message: the whole body, any content type, recorded.
    let posted = s
        .call(
            "POST",
            "/v1/default/q",
            Some(&auth),
            &[
                ("content-type", "text/plain"),
                ("x-ttl", "60"),
                ("x-partition", "2"),
            ],
            "first",
        )
        .await;
    assert!(posted.headers.contains_key("x-sluice-group"));
    assert!(posted.headers.contains_key("x-sluice-leader"));
    let first = posted.expect(201)["messages"][0].clone();
    let key = first["key"].as_str().expect("key").to_string();
    assert_eq!(key.len(), 32);
    assert_eq!(&key[12..13], "1", "a version 1 UUID");
    assert_eq!(first["partition"], 2);
    let ts = first["timestamp"].as_str().expect("a string timestamp");
    assert!(
        ts.contains('.') && ts.split('.').nth(1).expect("fraction").len() <= 7,
        "{ts}"
    );

    // A batch, in request order, with per-message partitions.
    let batch = json!({"messages": [
        {"body": "a", "partition": 1},
        {"body": "b", "partition": 2, "ttl": 3600},
        {"body": "c", "partition": 1},
    ]});
    let reply = s
        .call(
            "POST",
            "/v1/default/q",
            Some(&auth),
            &[("content-type", "Application/JSON; charset=utf-8")],
            batch.to_string(),
        )
        .await;
    let placed = reply.expect(201)["messages"]
        .as_array()
        .expect("list")
        .clone();
    let partitions: Vec<u64> = placed
        .iter()
        .map(|m| m["partition"].as_u64().expect("p"))
        .collect();
    assert_eq!(partitions, vec![1, 2, 1]);

    // Validation: nothing is stored when anything is wrong.
    let ct_json = [("content-type", "application/json")];
    // (headers, body, error field, exact message)
    type Case<'a> = (Vec<(&'a str, &'a str)>, String, &'a str, Option<&'a str>);
    let cases: Vec<Case> = vec![
        (vec![], String::new(), "body", Some("Required")),
        (
            vec![("x-partition", "fred")],
            "x".into(),
            "partition",
            Some("\"fred\" is not a number"),
        ),
        (
            vec![("x-partition", "3")],
            "x".into(),
            "partition",
            Some("3 is greater than maximum value 2"),
        ),
        (vec![("x-ttl", "0")], "x".into(), "ttl", None),
        (vec![("x-ttl", "33554433")], "x".into(), "ttl", None),
        (ct_json.to_vec(), "{\"messages\": [".into(), "body", None),
        (ct_json.to_vec(), "{}".into(), "messages", None),
        (
            ct_json.to_vec(),
            json!({"messages": [{"body": "ok"}, {"body": "x", "partition": 4}]}).to_string(),
            "1.partition",
            Some("4 is greater than maximum value 2"),
        ),
        (
            ct_json.to_vec(),
            json!({"messages": [{"body": "ok"}, {"body": ""}]}).to_string(),
            "1.body",
            Some("Required"),
        ),
        (
            ct_json.to_vec(),
            json!({"messages": [{"body": "ok", "ttl": "soon"}]}).to_string(),
            "0.ttl",
            None,
        ),
    ];
    for (headers, body, field, message) in cases {
        let reply = s
            .call("POST", "/v1/default/q", Some(&auth), &headers, body)
            .await;
        let got = reply.expect_error(400, field);
        if let Some(message) = message {
            assert_eq!(got, message);
        }
    }
    let all = s.app("GET", "/v1/default/q?partitions=1,2", "").await;
    assert_eq!(
        bodies(all.expect(200)),
        vec!["a", "c", "first", "b"],
        "nothing more was stored"
    );

    // Reads: since an id (inclusive), since a time, descending, limit.
    let p2 = s.app("GET", "/v1/default/q?partitions=2", "").await;
    let p2_ids = ids(p2.expect(200));
    assert_eq!(p2_ids.len(), 2);
    let since = s
        .app(
            "GET",
            &format!("/v1/default/q?partitions=2&since={}", p2_ids[1]),
            "",
        )
        .await;
    assert_eq!(ids(since.expect(200)), vec![p2_ids[1].clone()]);
    let since_time = s
        .app("GET", &format!("/v1/default/q?partitions=2&since={ts}"), "")
        .await;
    assert_eq!(
        ids(since_time.expect(200)),
        p2_ids,
        "inclusive of the timestamp"
    );
    let desc = s
        .app("GET", "/v1/default/q?partitions=2&order=descending", "")
        .await;
    assert_eq!(bodies(desc.expect(200)), vec!["b", "first"]);
    let desc_since = s
        .app(
            "GET",
            &format!(
                "/v1/default/q?partitions=2&order=descending&since={}",
                p2_ids[0]
            ),
            "",
        )
        .await;
    assert_eq!(bodies(desc_since.expect(200)), vec!["first"]);
    let limited = s
        .app("GET", "/v1/default/q?partitions=1,2&limit=1", "")
        .await;
    assert_eq!(
        bodies(limited.expect(200)),
        vec!["a", "first"],
        "limit is per partition"
    );
    let late = s.app("GET", "/v1/default/q?since=9999999999", "").await;
    assert_eq!(late.expect(200)["messages"], json!([]));
    let first_read = &all.json["messages"][2];
    assert_eq!(first_read["content_type"], "text/plain");
    assert_eq!(first_read["timestamp"], ts);
    for (query, field) in [
        ("since=yesterday", "since"),
        ("order=sideways", "order"),
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("partitions=one", "partitions"),
    ] {
        s.app("GET", &format!("/v1/default/q?{query}"), "")
            .await
            .expect_error(400, field);
    }

    // A body that is not UTF-8 comes back base64-encoded.
    s.call(
        "POST",
        "/v1/default/q",
        Some(&auth),
        &[("x-partition", "1")],
        vec![0xFFu8, 0xFE],
    )
    .await
    .expect(201);
    let binary = s
        .app("GET", "/v1/default/q?order=descending&limit=1", "")
        .await;
    let m = &binary.expect(200)["messages"][0];
    assert_eq!(
        (m["body"].as_str(), m["body_encoding"].as_str()),
        (Some("//4="), Some("base64"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_by_id_and_permissions_follow_the_contract() {
    let dir = tempfile::tempdir().expect("dir");
    let s = Server::start(dir.path(), &["--app-key", "reader=reader-key-0123456789"]).await;
    let auth = s.auth();
    s.form("POST", "/v1/default", "queue_name=q&partitions=2")
        .await
        .expect(201);
    let reply = s
        .call(
            "POST",
            "/v1/default/q",
            Some(&auth),
            &[("x-partition", "2")],
            "original",
        )
        .await;
    let key = reply.expect(201)["messages"][0]["key"]
        .as_str()
        .expect("key")
        .to_string();
    let by_id = format!("/v1/default/q/2:{key}");

    // GET by id; an id in the wrong partition, or outside, is absent.
    let got = s.app("GET", &by_id, "").await;
    assert_eq!(bodies(got.expect(200)), vec!["original"]);
    let wrong = s
        .app("GET", &format!("/v1/default/q/{key},9:{key}"), "")
        .await;
    assert_eq!(wrong.expect(200)["messages"], json!([]));

    // PUT replaces the body and content type, keeping id and timestamp.
    let before = got.json["messages"][0]["timestamp"].clone();
    s.call(
        "PUT",
        &by_id,
        Some(&auth),
        &[("content-type", "text/x-new")],
        "replaced",
    )
    .await
    .expect(200);
    let after = s.app("GET", &by_id, "").await;
    let m = &after.expect(200)["messages"][0];
    assert_eq!(
        (m["body"].as_str(), m["content_type"].as_str()),
        (Some("replaced"), Some("text/x-new"))
    );
    assert_eq!(m["timestamp"], before);
    let listed = s.app("GET", "/v1/default/q?partitions=2", "").await;
    assert_eq!(
        bodies(listed.expect(200)),
        vec!["replaced"],
        "one live version"
    );
    // PUT of an unknown version 1 id creates it at the id's time.
    let chosen = "5ef67d83e8a411f18000000000000001";
    s.app("PUT", &format!("/v1/default/q/{chosen}"), "chosen")
        .await
        .expect(200);
    let created = s.app("GET", &format!("/v1/default/q/1:{chosen}"), "").await;
    assert_eq!(
        created.expect(200)["messages"][0]["timestamp"],
        "1795592809.0688899"
    );
    s.app("PUT", "/v1/default/q/0123456789abcdef0123456789abcdef", "x")
        .await
        .expect_error(400, "messages");
    s.app("PUT", &format!("/v1/default/q/3:{chosen}"), "x")
        .await
        .expect_error(400, "partition");
    s.app("PUT", &by_id, "").await.expect_error(400, "body");

    // DELETE removes; unknown partitions are ignored.
    s.app("DELETE", &format!("/v1/default/q/2:{key},7:{key}"), "")
        .await
        .expect(200);
    let gone = s.app("GET", &by_id, "").await;
    assert_eq!(gone.expect(200)["messages"], json!([]));
    let listed = s.app("GET", "/v1/default/q?partitions=2", "").await;
    assert_eq!(listed.expect(200)["messages"], json!([]));

    // The order of checks: 404, malformed ids, 401, 403, then parameters.
    s.call("GET", "/v1/default/nosuch/zz", None, &[], "")
        .await
        .expect_error(404, "InvalidQueueName");
    s.call(
        "GET",
        "/v1/default/q/zz",
        Some("Application wrong-key-000000"),
        &[],
        "",
    )
    .await
    .expect_error(400, "messages");
    s.call(
        "GET",
        "/v1/default/q?order=x",
        Some("Application wrong-key-000000"),
        &[],
        "",
    )
    .await
    .expect_error(401, "InvalidApplicationKey");
    s.call("GET", "/v1/default/q?order=x", None, &[], "")
        .await
        .expect_error(403, "Forbidden");
    s.app("GET", "/v1/default/q?order=x", "")
        .await
        .expect_error(400, "order");

    // Principles: only they may read and delete; the application may
    // still post. A public queue is readable by anyone.
    let reader = "Application reader-key-0123456789";
    s.call("GET", "/v1/default/q", Some(reader), &[], "")
        .await
        .expect_error(403, "Forbidden");
    s.form("PUT", "/v1/default/q", "principles=app:reader")
        .await
        .expect(200);
    s.call("GET", "/v1/default/q", Some(reader), &[], "")
        .await
        .expect(200);
    s.app("GET", "/v1/default/q", "")
        .await
        .expect_error(403, "Forbidden");
    let partition_1 = [("x-partition", "1")];
    s.call(
        "POST",
        "/v1/default/q",
        Some(&auth),
        &partition_1,
        "still allowed",
    )
    .await
    .expect(201);
    s.call("POST", "/v1/default/q", Some(reader), &[], "x")
        .await
        .expect_error(403, "Forbidden");
    s.form("PUT", "/v1/default/q", "type=public")
        .await
        .expect(200);
    let public = s.call("GET", "/v1/default/q", None, &[], "").await;
    assert_eq!(bodies(public.expect(200)), vec!["chosen", "still allowed"]);
    s.call("DELETE", &format!("/v1/default/q/{chosen}"), None, &[], "")
        .await
        .expect_error(403, "Forbidden");
}
