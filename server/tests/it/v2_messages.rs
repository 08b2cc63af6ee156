//! Goal: the native API's produce, fetch and queue administration answer
//! as `native-v2.md` and `docs/api.md` say: placements after commit,
//! keyed order, both encodings, long-poll, idempotent producers (retries
//! write nothing, gaps conflict), and malformed input refused whole.
//! Method: one real `sluice serve` process, requests over HTTP; what was
//! written is checked by fetching it back.

use serde_json::{Value, json};

use sluice_server::v2::batch::{Draft, ProduceRequest};
use sluice_server::v2::{framing, message_frames};

use crate::support::Server;

async fn with_queue(partitions: u32) -> (tempfile::TempDir, Server) {
    let dir = tempfile::tempdir().expect("dir");
    let s = Server::start(dir.path(), &[]).await;
    s.json(
        "POST",
        "/v2/default/queues",
        &json!({"name": "q", "partitions": partitions}),
    )
    .await
    .expect(201);
    (dir, s)
}

/// An `Accept` value asking for message frames among other types.
fn message_frames_media() -> &'static str {
    "application/json;q=0.5, application/vnd.sluice.batch"
}

async fn fetch(s: &Server, partition: u32, query: &str) -> Value {
    s.app(
        "GET",
        &format!("/v2/default/q/partitions/{partition}/messages?{query}"),
        "",
    )
    .await
    .expect(200)
    .clone()
}

fn bodies(fetched: &Value) -> Vec<String> {
    fetched["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| m["body"].as_str().expect("a text body").to_string())
        .collect()
}

/// Produces `messages` (a JSON array) to queue `q`.
async fn produce(s: &Server, messages: Value) -> crate::support::Reply {
    s.json(
        "POST",
        "/v2/default/q/messages",
        &json!({ "messages": messages }),
    )
    .await
}

/// The high watermark of every partition, through the queue description.
async fn ends(s: &Server) -> Vec<u64> {
    let described = s.app("GET", "/v2/default/queues/q", "").await;
    described.expect(200)["partition_details"]
        .as_array()
        .expect("details")
        .iter()
        .map(|p| p["end_offset"].as_u64().expect("end"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produce_places_messages_and_fetch_reads_them_back() {
    let (_dir, s) = with_queue(3).await;
    // Keyed messages interleaved: each key keeps one partition, in order.
    let messages: Vec<Value> = (0..20)
        .map(|i| {
            let key = ["a", "b"][i % 2];
            json!({"body": format!("{key}-{i}"), "key": key})
        })
        .collect();
    let produced = s
        .json(
            "POST",
            "/v2/default/q/messages",
            &json!({"messages": messages}),
        )
        .await;
    let placed = produced.expect(201)["messages"]
        .as_array()
        .expect("list")
        .clone();
    assert_eq!(placed.len(), 20);
    assert!(produced.headers.contains_key("x-sluice-group"));
    for key in 0..2 {
        let mine: Vec<&Value> = placed.iter().skip(key).step_by(2).collect();
        let partition = mine[0]["partition"].as_u64().expect("partition") as u32;
        assert!(mine.iter().all(|m| m["partition"] == partition));
        let got = bodies(&fetch(&s, partition, "offset=0&max_messages=1000").await);
        let wanted: Vec<String> = (0..20)
            .filter(|i| i % 2 == key)
            .map(|i| format!("{}-{i}", ["a", "b"][key]))
            .collect();
        let keyed: Vec<String> = got
            .into_iter()
            .filter(|b| b.starts_with(["a", "b"][key]))
            .collect();
        assert_eq!(keyed, wanted, "key order in partition {partition}");
    }

    // Explicit partitions, base64 bodies, headers; and the binary framing.
    let produced = s
        .json(
            "POST",
            "/v2/default/q/messages",
            &json!({"messages": [
                {"body_base64": "/wD+", "partition": 2, "headers": {"trace": "t1"}},
            ]}),
        )
        .await;
    let offset = produced.expect(201)["messages"][0]["offset"]
        .as_u64()
        .expect("offset");
    let frame = framing::encode(&ProduceRequest {
        producer_id: None,
        messages: vec![Draft {
            partition: Some(2),
            key: Some(b"bin".to_vec()),
            body: b"framed".to_vec(),
            ..Draft::default()
        }],
    })
    .expect("encode");
    s.call(
        "POST",
        "/v2/default/q/messages",
        Some(&s.auth()),
        &[("content-type", framing::MEDIA_TYPE)],
        frame,
    )
    .await
    .expect(201);
    let got = fetch(&s, 2, &format!("offset={offset}")).await;
    let list = got["messages"].as_array().expect("list");
    assert_eq!(list[0]["body_base64"], "/wD+");
    assert_eq!(list[0]["headers"]["trace"], "t1");
    assert_eq!(list[1]["body"], "framed");
    assert_eq!(list[1]["key"], "bin");
    assert_eq!(got["next_offset"], offset + 2);
    assert_eq!(got["high_watermark"], offset + 2);

    // The same read as binary message frames, its other fields as headers.
    let framed = s
        .call(
            "GET",
            &format!("/v2/default/q/partitions/2/messages?offset={offset}"),
            Some(&s.auth()),
            &[("accept", message_frames_media())],
            "",
        )
        .await;
    assert_eq!(framed.status, 200);
    assert_eq!(framed.headers["content-type"], framing::MEDIA_TYPE);
    assert_eq!(
        framed.headers["x-sluice-next-offset"],
        (offset + 2).to_string().as_str()
    );
    assert_eq!(
        framed.headers["x-sluice-high-watermark"],
        (offset + 2).to_string().as_str()
    );
    assert_eq!(framed.headers["x-sluice-skipped"], "false");
    let delivered = message_frames::decode(&framed.bytes).expect("a frame");
    assert_eq!(delivered.len(), 2);
    assert_eq!((delivered[0].partition, delivered[0].offset), (2, offset));
    assert_eq!(&delivered[0].body[..], &[0xff, 0x00, 0xfe]);
    assert_eq!(delivered[0].headers[0].0, "trace");
    assert_eq!(&delivered[1].body[..], b"framed");
    assert_eq!(delivered[1].key.as_deref(), Some(&b"bin"[..]));
    assert_eq!(
        list[1]["id"].as_str().expect("id"),
        delivered[1]
            .id
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    );

    // Bounds: max_messages, and offsets past the end or partitions past
    // the count.
    let one = fetch(&s, 2, &format!("offset={offset}&max_messages=1")).await;
    assert_eq!(one["messages"].as_array().expect("list").len(), 1);
    assert_eq!(one["next_offset"], offset + 1);
    let past = s
        .app(
            "GET",
            &format!("/v2/default/q/partitions/2/messages?offset={}", offset + 3),
            "",
        )
        .await;
    assert_eq!(
        past.expect_code(416, "OffsetOutOfRange")["high_watermark"],
        offset + 2
    );
    s.app("GET", "/v2/default/q/partitions/3/messages", "")
        .await
        .expect_code(404, "NoSuchPartition");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_poll_answers_when_a_message_arrives() {
    let (_dir, s) = with_queue(1).await;
    // Nothing there and a short wait: an empty answer at the same offset.
    let empty = fetch(&s, 0, "offset=0&wait_ms=50").await;
    assert_eq!(empty["messages"], json!([]));
    assert_eq!(empty["next_offset"], 0);
    // A long wait ends with the message produced while it waits (it would
    // answer empty only after 60 s otherwise).
    let poll = fetch(&s, 0, "offset=0&wait_ms=60000");
    let produce = async {
        produce(&s, json!([{"body": "late"}])).await.expect(201);
    };
    let (polled, ()) = tokio::join!(poll, produce);
    assert_eq!(bodies(&polled), vec!["late"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_retries_write_nothing_and_gaps_conflict() {
    let (_dir, s) = with_queue(2).await;
    let batch = |seqs: &[u64]| {
        let messages: Vec<Value> = seqs
            .iter()
            .map(|seq| json!({"body": format!("m{seq}"), "partition": 0, "sequence": seq}))
            .collect();
        json!({"producer_id": 77, "messages": messages})
    };
    let first = s
        .json("POST", "/v2/default/q/messages", &batch(&[0, 1, 2]))
        .await
        .expect(201)
        .clone();
    // The same request again (a retry after a lost answer): the original
    // offsets, nothing written.
    let retry = s
        .json("POST", "/v2/default/q/messages", &batch(&[0, 1, 2]))
        .await
        .expect(201)
        .clone();
    assert_eq!(first, retry);
    assert_eq!(ends(&s).await, vec![3, 0]);
    // Continuing is appended; a gap, or duplicates mixed with new
    // messages, is 409 naming the expected sequence.
    s.json("POST", "/v2/default/q/messages", &batch(&[3]))
        .await
        .expect(201);
    let gap = s.json("POST", "/v2/default/q/messages", &batch(&[6])).await;
    assert_eq!(
        gap.expect_code(409, "OutOfSequence")["expected_sequence"],
        4
    );
    let mixed = s
        .json("POST", "/v2/default/q/messages", &batch(&[3, 4]))
        .await;
    mixed.expect_code(409, "OutOfSequence");
    // A sequence that does not grow by one inside a request is a 400.
    s.json("POST", "/v2/default/q/messages", &batch(&[4, 6]))
        .await
        .expect_code(400, "InvalidMessage");
    assert_eq!(ends(&s).await, vec![4, 0]);
    assert_eq!(
        bodies(&fetch(&s, 0, "offset=0").await),
        vec!["m0", "m1", "m2", "m3"]
    );
    // The producer's state survives a restart.
    let dir = s.kill().await;
    let s = Server::start(&dir, &[]).await;
    let retry = s
        .json("POST", "/v2/default/q/messages", &batch(&[0, 1, 2]))
        .await
        .expect(201)
        .clone();
    assert_eq!(first, retry);
    assert_eq!(ends(&s).await, vec![4, 0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_input_gets_the_documented_error_and_writes_nothing() {
    let (_dir, s) = with_queue(2).await;
    let auth = s.auth();
    let post = |ct: &'static str, body: Vec<u8>| {
        let auth = auth.clone();
        let s = &s;
        async move {
            s.call(
                "POST",
                "/v2/default/q/messages",
                Some(&auth),
                &[("content-type", ct)],
                body,
            )
            .await
        }
    };
    let json_ct = "application/json";
    for (body, code) in [
        (&b"{not json"[..], "InvalidRequest"),
        (b"[1, 2]", "InvalidRequest"),
        (br#"{"messages": "x"}"#, "InvalidRequest"),
        (b"\xff\xfe{}", "InvalidRequest"),
        (
            br#"{"messages": [{"body": "ok"}, {"body": 5}]}"#,
            "InvalidMessage",
        ),
        (
            br#"{"messages": [{"body": "ok"}, {"body_base64": "%%"}]}"#,
            "InvalidMessage",
        ),
        (
            br#"{"messages": [{"body": "ok", "partition": 2}]}"#,
            "InvalidMessage",
        ),
        (
            br#"{"messages": [{"body": "ok", "ttl": 0}]}"#,
            "InvalidMessage",
        ),
        (
            br#"{"messages": [{"body": "ok", "headers": {":key": "x"}}]}"#,
            "InvalidMessage",
        ),
    ] {
        let reply = post(json_ct, body.to_vec()).await;
        reply.expect_code(400, code);
    }
    let index = post(
        json_ct,
        br#"{"messages": [{"body": "ok"}, {"body": "ok"}, {"body": 5}]}"#.to_vec(),
    )
    .await;
    assert_eq!(index.expect_code(400, "InvalidMessage")["index"], 2);
    // A frame cut short, a body of another type, a body over the limit.
    let frame = framing::encode(&ProduceRequest {
        producer_id: None,
        messages: vec![Draft {
            body: b"x".to_vec(),
            ..Draft::default()
        }],
    })
    .expect("encode");
    post(framing::MEDIA_TYPE, frame[..frame.len() - 1].to_vec())
        .await
        .expect_code(400, "InvalidMessage");
    post("text/plain", b"hello".to_vec())
        .await
        .expect_code(415, "UnsupportedMediaType");
    // The server answers 413 without reading the rest and closes the
    // connection: send it on a connection of its own.
    let huge = reqwest::Client::new()
        .post(format!("{}/v2/default/q/messages", s.url))
        .header("authorization", &auth)
        .header("content-type", json_ct)
        .body(vec![b' '; 17 * 1024 * 1024])
        .send()
        .await
        .expect("send");
    assert_eq!(huge.status(), 413);
    let error: Value = huge.json().await.expect("a JSON error");
    assert_eq!(error["error"]["code"], "PayloadTooLarge");
    // Bad parameters and unknown routes.
    for query in ["offset=-1", "offset=x", "max_messages=0", "wait_ms=1e3"] {
        s.app(
            "GET",
            &format!("/v2/default/q/partitions/0/messages?{query}"),
            "",
        )
        .await
        .expect_code(400, "InvalidRequest");
    }
    let unknown = s.app("GET", "/v2/default/q/nothing/here", "").await;
    assert_eq!(unknown.status, 404);
    s.app("GET", "/v2/default/q/messages", "")
        .await
        .expect_code(405, "MethodNotAllowed");
    // Credentials: none, or a wrong key.
    let none = s
        .call(
            "POST",
            "/v2/default/q/messages",
            None,
            &[("content-type", json_ct)],
            r#"{"messages":[{"body":"x"}]}"#,
        )
        .await;
    none.expect_code(403, "Forbidden");
    let wrong = s
        .call(
            "GET",
            "/v2/default/q/partitions/0/messages",
            Some("Application nope"),
            &[],
            "",
        )
        .await;
    wrong.expect_code(401, "InvalidApplicationKey");
    assert_eq!(ends(&s).await, vec![0, 0], "nothing was written");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queues_are_administered_as_json() {
    let dir = tempfile::tempdir().expect("dir");
    let s = Server::start(dir.path(), &[]).await;
    let created = s
        .json(
            "POST",
            "/v2/default/queues",
            &json!({"name": "jobs", "partitions": 2, "type": "public", "principles": ["app:other"]}),
        )
        .await;
    let queue = created.expect(201);
    assert_eq!(queue["partitions"], 2);
    assert_eq!(queue["type"], "public");
    s.json("POST", "/v2/default/queues", &json!({"name": "jobs"}))
        .await
        .expect_code(409, "QueueExists");
    for bad in [
        json!({"name": "no spaces"}),
        json!({"partitions": 0}),
        json!({"partitions": 1001}),
        json!({"type": "secret"}),
        json!({"principles": ["nobody"]}),
        json!({"colour": "red"}),
    ] {
        s.json("POST", "/v2/default/queues", &bad)
            .await
            .expect_code(400, "InvalidRequest");
    }
    let listed = s.app("GET", "/v2/default/queues", "").await;
    let names: Vec<&str> = listed.expect(200)["queues"]
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|q| q["name"].as_str())
        .collect();
    assert_eq!(names, vec!["jobs"]);
    let grown = s
        .json("PUT", "/v2/default/queues/jobs", &json!({"partitions": 4}))
        .await;
    assert_eq!(grown.expect(200)["partitions"], 4);
    s.json("PUT", "/v2/default/queues/jobs", &json!({"partitions": 3}))
        .await
        .expect_code(400, "InvalidRequest");
    let described = s.app("GET", "/v2/default/queues/jobs", "").await;
    let details = described.expect(200)["partition_details"]
        .as_array()
        .expect("details")
        .clone();
    assert_eq!(details.len(), 4);
    assert!(details.iter().all(|p| p["end_offset"] == 0));
    assert_eq!(
        s.app("DELETE", "/v2/default/queues/jobs", "").await.status,
        204
    );
    s.app("GET", "/v2/default/queues/jobs", "")
        .await
        .expect_code(404, "InvalidQueueName");
    // A `/g/{group}` routing hint before any API path is accepted.
    s.app("GET", "/g/1/v2/default/queues", "").await.expect(200);
    s.app("GET", "/g/1/v1/default", "").await.expect(200);
    let spec = s.call("GET", "/v2/openapi.json", None, &[], "").await;
    assert_eq!(spec.expect(200)["openapi"], "3.1.0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_writes_with_507_and_writes_nothing() {
    let (_dir, s) = with_queue(1).await;
    produce(&s, json!([{"body": "before"}])).await.expect(201);
    // Restart with a reserve no disk has: the disk is "full".
    let dir = s.kill().await;
    let s = Server::start(&dir, &["--disk-reserve-mb", "1073741824"]).await;
    produce(&s, json!([{"body": "after"}]))
        .await
        .expect_code(507, "InsufficientStorage");
    s.app("POST", "/v1/default/q", "after")
        .await
        .expect_error(507, "InsufficientStorage");
    s.json("POST", "/v2/default/queues", &json!({"name": "other"}))
        .await
        .expect_code(507, "InsufficientStorage");
    // Reads still work, and show only what was written before.
    assert_eq!(bodies(&fetch(&s, 0, "offset=0").await), vec!["before"]);
}
