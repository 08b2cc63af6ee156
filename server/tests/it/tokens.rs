//! Goal: `GET /1.0/{app}/{version}` answers as `token.md` says: a token
//! tokenlib can verify with the node's derived secret, sticky users,
//! the error table's bodies, and a clear 503 when no verifier is set up.
//! Method: a real `sluice serve` with `--token-*` flags, and a small
//! FxA-compatible verifier served by the test on loopback.

use axum::Json;
use axum::Router;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};
use sluice_token::{hawk, ids, token};

use crate::support::{Reply, Server};

/// The master token secret of the test nodes.
pub const SECRET: &str = "token-master-secret-0123456789";

/// Credentials `good-<user>-<generation>` verify, and so do
/// `from-<issuer>-<user>` (vouched for by `issuer`); `down` is a verifier
/// failure; anything else is refused.
async fn verifier(Json(body): Json<Value>) -> Response {
    let credential = body["token"].as_str().unwrap_or_default().to_string();
    if credential == "down" {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    let parts: Vec<&str> = credential.split('-').collect();
    match parts.as_slice() {
        ["good", user, generation] => Json(json!({
            "user": user,
            "scope": ["sluice"],
            "generation": generation.parse::<u64>().unwrap_or(0),
        }))
        .into_response(),
        ["from", issuer, user] => {
            Json(json!({"user": user, "scope": ["sluice"], "issuer": issuer})).into_response()
        }
        ["noscope", user] => Json(json!({"user": user, "scope": ["other"]})).into_response(),
        _ => StatusCode::UNAUTHORIZED.into_response(),
    }
}

/// Creates queue `inbox`, readable by token user `uid` alone, holding
/// one message "for alice".
pub async fn inbox_for(s: &Server, uid: u64) {
    s.form(
        "POST",
        "/v1/default",
        &format!("queue_name=inbox&principles=user:{uid}"),
    )
    .await
    .expect(201);
    s.app("POST", "/v1/default/inbox", "for alice")
        .await
        .expect(201);
}

/// Serves the test verifier on loopback; returns its base URL.
pub async fn start_verifier() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let app = Router::new().route("/v1/verify", post(verifier));
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

/// A node with the token service, verifying with `verify_url`, plus
/// `extra` flags.
pub async fn token_server(dir: &std::path::Path, verify_url: &str, extra: &[&str]) -> Server {
    let mut args = vec!["--token-secret", SECRET, "--token-verify-url", verify_url];
    args.extend_from_slice(extra);
    Server::start(dir, &args).await
}

/// A token request to `s` with `auth` and `extra` headers.
pub async fn token_get(s: &Server, auth: &str, extra: &[(&str, &str)]) -> Reply {
    s.call("GET", "/1.0/queuey/1.0", Some(auth), extra, "")
        .await
}

/// An operator's JSON request, with the admin key `sluice serve` wrote
/// into its data directory.
async fn admin_call(s: &Server, method: &str, path: impl AsRef<str>, body: Value) -> Reply {
    let bearer = s.admin_auth();
    let json = [("content-type", "application/json")];
    s.call(
        method,
        path.as_ref(),
        Some(&bearer),
        &json,
        body.to_string(),
    )
    .await
}

fn expect_error(reply: &crate::support::Reply, http: u16, status: &str, description: &str) {
    assert_eq!(reply.status, http, "{}", reply.json);
    assert_eq!(reply.json["status"], status, "{}", reply.json);
    assert_eq!(
        reply.json["errors"][0]["description"], description,
        "{}",
        reply.json
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_issued_and_the_error_table_holds() {
    let verify_url = start_verifier().await;
    let dir = tempfile::tempdir().expect("dir");
    let s = token_server(
        dir.path(),
        &verify_url,
        &[
            "--token-node-capacity",
            "10",
            // Every client here is 127.0.0.1: no per-client limit.
            "--token-ip-rate",
            "0",
            "--token-new-users-per-minute",
            "0",
        ],
    )
    .await;

    let first = token_get(&s, "Bearer good-alice-1", &[]).await;
    let body = first.expect(200).clone();
    assert_eq!(body["hashalg"], "sha256");
    assert_eq!(body["node_type"], "sluice");
    assert_eq!(body["duration"], 3600);
    assert!(first.headers.contains_key("x-timestamp"));
    // The token verifies with the node's secret derived from the master,
    // and names the user and the node.
    let node = body["api_endpoint"]
        .as_str()
        .and_then(|e| e.strip_suffix("/v1"))
        .expect("api_endpoint is {node}/v1")
        .to_string();
    assert!(node.starts_with(&s.url) && node.contains("/g/"), "{node}");
    let node_secret = ids::node_secret(SECRET, &node).expect("node secret");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64();
    let verified = token::verify(body["id"].as_str().expect("id"), &[&node_secret], now)
        .expect("the token verifies");
    assert_eq!(verified.key, body["key"]);
    assert_eq!(verified.payload.uid, body["uid"].as_u64().expect("uid"));
    assert_eq!(verified.payload.fxa_uid, "alice");
    // Sticky: the same user gets the same uid and node.
    let again = token_get(&s, "Bearer good-alice-1", &[]).await;
    assert_eq!(again.expect(200)["uid"], body["uid"]);
    // A shorter duration is honoured, a longer one is not.
    let short = s
        .call(
            "GET",
            "/1.0/queuey/1.0?duration=60",
            Some("Bearer good-alice-1"),
            &[],
            "",
        )
        .await;
    assert_eq!(short.expect(200)["duration"], 60);

    // The error table.
    expect_error(
        &s.call("GET", "/1.0/queuey/1.0", None, &[], "").await,
        401,
        "error",
        "Unauthorized",
    );
    expect_error(
        &token_get(&s, "BrowserID assertion", &[]).await,
        401,
        "error",
        "Unsupported",
    );
    expect_error(
        &token_get(&s, "Bearer wrong", &[]).await,
        401,
        "invalid-credentials",
        "Unauthorized",
    );
    expect_error(
        &token_get(&s, "Bearer noscope-bob", &[]).await,
        401,
        "invalid-credentials",
        "Unauthorized",
    );
    expect_error(
        &token_get(&s, "Bearer down", &[]).await,
        503,
        "error",
        "Resource is not available",
    );
    expect_error(
        &token_get(&s, "Bearer good-alice-0", &[]).await,
        401,
        "invalid-generation",
        "Unauthorized",
    );
    let unknown_app = s
        .call(
            "GET",
            "/1.0/nothing/1.0",
            Some("Bearer good-alice-1"),
            &[],
            "",
        )
        .await;
    expect_error(&unknown_app, 404, "error", "Unsupported application");
    assert_eq!(unknown_app.json["errors"][0]["name"], "application");
    let unknown_version = s
        .call(
            "GET",
            "/1.0/queuey/9.9",
            Some("Bearer good-alice-1"),
            &[],
            "",
        )
        .await;
    expect_error(
        &unknown_version,
        404,
        "error",
        "Unsupported application version",
    );
    assert_eq!(unknown_version.json["errors"][0]["name"], "9.9");
    let bad_state = token_get(&s, "Bearer good-carol-1", &[("x-client-state", "not hex!")]).await;
    expect_error(&bad_state, 400, "error", "Invalid client state value");
    assert_eq!(bad_state.json["errors"][0]["location"], "header");
    // A client-state change needs a newer generation.
    token_get(&s, "Bearer good-dave-5", &[("x-client-state", "aaaa")])
        .await
        .expect(200);
    let stale = token_get(&s, "Bearer good-dave-5", &[("x-client-state", "bbbb")]).await;
    expect_error(
        &stale,
        401,
        "invalid-client-state",
        "Unacceptable client-state value new value with no generation change",
    );
    let moved = token_get(&s, "Bearer good-dave-6", &[("x-client-state", "bbbb")]).await;
    assert_ne!(moved.expect(200)["uid"], Value::Null);

    // Hawk on the queue API: a queue whose principles name alice's uid is
    // hers to read, with requests signed by her token.
    let uid = body["uid"].as_u64().expect("uid");
    // Queues on the first groups, so that the least-loaded group is not
    // alice's: the pinning below is then what places her queue.
    for pad in ["pad1", "pad2", "pad3"] {
        s.form("POST", "/v1/default", &format!("queue_name={pad}"))
            .await
            .expect(201);
    }
    inbox_for(&s, uid).await;
    // Placed on alice's group: her requests go straight to its leader.
    let described = s.app("GET", "/v2/default/queues/inbox", "").await;
    let group = described.expect(200)["group"].as_u64().expect("group");
    assert!(
        node.ends_with(&format!("/g/{group}")),
        "{node} vs group {group}"
    );
    let path = format!(
        "{}/default/inbox",
        body["api_endpoint"]
            .as_str()
            .expect("endpoint")
            .trim_start_matches(&s.url)
    );
    let (host, port) = s
        .url
        .trim_start_matches("http://")
        .rsplit_once(':')
        .map(|(h, p)| (h.to_string(), p.parse::<u16>().expect("port")))
        .expect("host:port");
    let sign = |id: &str, key: &str, nonce: &str, ts: u64| {
        let mut header = hawk::Header {
            id: id.to_string(),
            ts,
            nonce: nonce.to_string(),
            mac: String::new(),
            hash: None,
            ext: None,
        };
        let request = hawk::Request {
            method: "GET",
            path_and_query: &path,
            host: &host,
            port,
            content_type: "",
            body: b"",
        };
        header.mac = hawk::mac(key, &hawk::normalized(&header, &request));
        format!(
            "Hawk id=\"{}\", ts=\"{}\", nonce=\"{}\", mac=\"{}\"",
            header.id, header.ts, header.nonce, header.mac
        )
    };
    let (id, key) = (
        body["id"].as_str().expect("id").to_string(),
        body["key"].as_str().expect("key").to_string(),
    );
    let now_s = now as u64;
    let signed = sign(&id, &key, "n1", now_s);
    let read = s.call("GET", &path, Some(&signed), &[], "").await;
    assert_eq!(read.expect(200)["messages"][0]["body"], "for alice");
    // The same request again is a replay.
    s.call("GET", &path, Some(&signed), &[], "")
        .await
        .expect_error(401, "InvalidHawk");
    // A wrong key, a stale timestamp.
    s.call(
        "GET",
        &path,
        Some(&sign(&id, "not-the-key", "n2", now_s)),
        &[],
        "",
    )
    .await
    .expect_error(401, "InvalidHawk");
    s.call(
        "GET",
        &path,
        Some(&sign(&id, &key, "n3", now_s - 3_600)),
        &[],
        "",
    )
    .await
    .expect_error(401, "InvalidHawk");
    // Another user's valid token may not read alice's queue.
    let bob = token_get(&s, "Bearer good-bob-1", &[])
        .await
        .expect(200)
        .clone();
    let bob_signed = sign(
        bob["id"].as_str().expect("id"),
        bob["key"].as_str().expect("key"),
        "n4",
        now_s,
    );
    s.call("GET", &path, Some(&bob_signed), &[], "")
        .await
        .expect_error(403, "Forbidden");
    // The internal user header cannot be sent from outside.
    s.call(
        "GET",
        "/v1/default/inbox",
        None,
        &[("x-sluice-hawk-user", &uid.to_string())],
        "",
    )
    .await
    .expect_error(403, "Forbidden");

    // Operators: count users, refuse new ones, move a node's users away.
    let users = admin_call(&s, "GET", "/admin/token/queuey-1.0/users", Value::Null).await;
    assert_eq!(users.expect(200)["users"], 3, "alice, bob and dave");
    admin_call(&s, "PUT", "/admin/token/new-users", json!({"allow": false}))
        .await
        .expect(200);
    let refused = token_get(&s, "Bearer good-erin-1", &[]).await;
    expect_error(
        &refused,
        403,
        "new-users-disabled",
        "New users are not allowed",
    );
    token_get(&s, "Bearer good-alice-1", &[]).await.expect(200);
    admin_call(&s, "PUT", "/admin/token/new-users", json!({"allow": true}))
        .await
        .expect(200);
    let unassigned = admin_call(
        &s,
        "POST",
        "/admin/token/queuey-1.0/nodes/unassign",
        json!({"url": node}),
    )
    .await;
    assert!(
        unassigned.expect(200)["rows"]
            .as_array()
            .is_some_and(|rows| rows.iter().any(|r| r["uid"] == body["uid"])),
        "{}",
        unassigned.json
    );
    let moved_alice = token_get(&s, "Bearer good-alice-1", &[])
        .await
        .expect(200)
        .clone();
    assert_ne!(moved_alice["uid"], body["uid"]);
    assert_ne!(moved_alice["api_endpoint"], body["api_endpoint"]);
    // Purging replaced rows deletes the replaced uid's queue (`inbox`,
    // alice's old uid alone), then frees the slot.
    s.app("GET", "/v2/default/queues/inbox", "")
        .await
        .expect(200);
    let purged = admin_call(
        &s,
        "POST",
        "/admin/token/queuey-1.0/purge",
        json!({"grace_ms": 0}),
    )
    .await;
    let answer = purged.expect(200);
    assert_eq!(answer["deleted_queues"], 1, "{answer}");
    assert_eq!(answer["more"], false);
    assert!(
        answer["rows"]
            .as_array()
            .is_some_and(|rows| rows.iter().any(|r| r["uid"] == body["uid"])),
        "{answer}"
    );
    s.app("GET", "/v2/default/queues/inbox", "")
        .await
        .expect_code(404, "InvalidQueueName");
    let again = admin_call(
        &s,
        "POST",
        "/admin/token/queuey-1.0/purge",
        json!({"grace_ms": 0}),
    )
    .await;
    assert_eq!(
        again.expect(200)["rows"],
        json!([]),
        "nothing left to purge"
    );
    let unauthorised = s
        .call("GET", "/admin/token/queuey-1.0/users", None, &[], "")
        .await;
    assert_eq!(unauthorised.status, 401);
    // The same through `sluice token`, with the key from the data dir.
    let cli = tokio::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["token", "--url", &s.url, "--data-dir"])
        .arg(dir.path())
        .args(["count-users", "queuey-1.0"])
        .output()
        .await
        .expect("sluice token");
    assert!(
        cli.status.success(),
        "{}",
        String::from_utf8_lossy(&cli.stderr)
    );
    let printed: Value = serde_json::from_slice(&cli.stdout).expect("JSON");
    assert_eq!(printed["users"], 3);

    // A node without token settings says so.
    let plain_dir = tempfile::tempdir().expect("dir");
    let plain = Server::start(plain_dir.path(), &[]).await;
    let reply = token_get(&plain, "Bearer good-alice-1", &[]).await;
    assert_eq!(reply.status, 503);
    assert!(
        reply.json["errors"][0]["description"]
            .as_str()
            .is_some_and(|d| d.contains("No token verifier")),
        "{}",
        reply.json
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_users_are_capped_and_clients_rate_limited() {
    let verify_url = start_verifier().await;
    let dir = tempfile::tempdir().expect("dir");
    let capped = token_server(
        dir.path(),
        &verify_url,
        &["--token-new-users-per-minute", "1", "--token-ip-rate", "0"],
    )
    .await;
    let get = |s: &Server, auth: &'static str| {
        let s = s.url.clone();
        async move {
            let answer = reqwest::Client::new()
                .get(format!("{s}/1.0/queuey/1.0"))
                .header("authorization", auth)
                .send()
                .await
                .expect("send");
            let status = answer.status().as_u16();
            let retry_after = answer.headers().contains_key("retry-after");
            (status, retry_after)
        }
    };
    // The first new user takes the minute's only slot; a second new user
    // gets 429 with Retry-After; the first, returning, is not capped.
    assert_eq!(get(&capped, "Bearer good-ann-1").await, (200, false));
    assert_eq!(get(&capped, "Bearer good-ben-1").await, (429, true));
    let over = token_get(&capped, "Bearer good-cy-1", &[]).await;
    expect_error(&over, 429, "error", "Too many requests");
    assert_eq!(get(&capped, "Bearer good-ann-1").await, (200, false));

    // One request a second per client, bursts of two: a quick run of 30
    // requests from one address meets the limit.
    let other = tempfile::tempdir().expect("dir");
    let limited = token_server(other.path(), &verify_url, &["--token-ip-rate", "1"]).await;
    let mut refused = 0;
    for _ in 0..30 {
        if get(&limited, "Bearer good-ann-1").await == (429, true) {
            refused += 1;
        }
    }
    assert!(refused > 0, "no request was limited");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rest_of_the_error_table_answers_as_the_spec_says() {
    let verify_url = start_verifier().await;
    let dir = tempfile::tempdir().expect("dir");
    // One data group taking one user: the second new user finds no room.
    let s = token_server(
        dir.path(),
        &verify_url,
        &[
            "--token-node-capacity",
            "1",
            "--token-ip-rate",
            "0",
            "--token-new-users-per-minute",
            "0",
            "--groups",
            "1",
        ],
    )
    .await;
    // X-KeyID is `<keys_changed_at>-<base64url(client state)>`: 0xaa is
    // "qg", 0xbb is "uw".
    token_get(&s, "Bearer good-erin-1", &[("x-keyid", "2000-qg")])
        .await
        .expect(200);
    expect_error(
        &token_get(&s, "Bearer good-erin-1", &[("x-keyid", "not a key id")]).await,
        401,
        "invalid-credentials",
        "Unauthorized",
    );
    expect_error(
        &token_get(&s, "Bearer good-erin-1", &[("x-keyid", "1000-qg")]).await,
        401,
        "invalid-keysChangedAt",
        "Unauthorized",
    );
    expect_error(
        &token_get(&s, "Bearer good-erin-1", &[]).await,
        401,
        "invalid-keysChangedAt",
        "Unauthorized",
    );
    let disagree = token_get(
        &s,
        "Bearer good-erin-1",
        &[("x-keyid", "2000-qg"), ("x-client-state", "bb")],
    )
    .await;
    assert_eq!(
        (disagree.status, &disagree.json["status"]),
        (401, &json!("invalid-client-state")),
        "{}",
        disagree.json
    );
    // Erin holds the only slot: Fred is new and there is no room.
    let full = token_get(&s, "Bearer good-fred-1", &[]).await;
    expect_error(&full, 503, "error", "No capacity");
    assert!(full.headers.contains_key("retry-after"));
    // Erin's client state: back to empty, to a new value without a newer
    // keys_changed_at, and (after a real change) back to the old value.
    expect_error(
        &token_get(&s, "Bearer good-erin-1", &[("x-keyid", "2000-")]).await,
        401,
        "invalid-client-state",
        "Unacceptable client-state value empty string",
    );
    expect_error(
        &token_get(&s, "Bearer good-erin-2", &[("x-keyid", "2000-uw")]).await,
        401,
        "invalid-client-state",
        "Unacceptable client-state value new value with no keys_changed_at change",
    );
    token_get(&s, "Bearer good-erin-2", &[("x-keyid", "3000-uw")])
        .await
        .expect(200);
    expect_error(
        &token_get(&s, "Bearer good-erin-3", &[("x-keyid", "4000-qg")]).await,
        401,
        "invalid-client-state",
        "Unacceptable client-state value stale value",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bucketed_assignment_places_users_by_bucket_and_moves_buckets() {
    use sluice_token::assign::bucket_of;
    let verify_url = start_verifier().await;
    let dir = tempfile::tempdir().expect("dir");
    let s = token_server(
        dir.path(),
        &verify_url,
        &[
            "--groups",
            "2",
            "--token-ip-rate",
            "0",
            "--token-new-users-per-minute",
            "0",
            "--token-release-rate",
            "0.5",
        ],
    )
    .await;
    let policy = "/admin/token/queuey-1.0/policy".to_string();
    admin_call(&s, "PUT", policy.clone(), json!({"policy": "bucketed"}))
        .await
        .expect_error(400, "policy");
    let set = admin_call(
        &s,
        "PUT",
        policy.clone(),
        json!({"policy": "bucketed", "buckets": 4}),
    )
    .await;
    let map: Vec<String> = serde_json::from_value(set.expect(200)["buckets"].clone()).expect("map");
    assert_eq!(map.len(), 4);
    assert_ne!(map[0], map[1], "buckets spread over both groups");
    let shown = admin_call(&s, "GET", policy.clone(), Value::Null).await;
    assert_eq!(shown.expect(200)["policy"], "bucketed");
    // An operator places a user; the user's next token names that node.
    let placed = admin_call(
        &s,
        "POST",
        "/admin/token/queuey-1.0/users".to_string(),
        json!({"email": "placed@api.accounts.firefox.com", "node": map[1]}),
    )
    .await;
    assert_eq!(placed.expect(200)["node"], map[1].as_str());
    let auth = "Bearer good-placed-1";
    let token = token_get(&s, auth, &[]).await;
    assert_eq!(
        token.expect(200)["api_endpoint"],
        format!("{}/v1", map[1]).as_str()
    );
    assert_eq!(token.json["uid"], placed.json["uid"]);
    // --token-release-rate 0.5: a new node offered half its capacity.
    let node = admin_call(
        &s,
        "PUT",
        "/admin/token/queuey-1.0/nodes".to_string(),
        json!({"url": map[0]}),
    )
    .await;
    assert_eq!(node.expect(200)["available"], 50_000, "{}", node.json);
    let login = |user: String| {
        let s = &s;
        async move {
            let auth = format!("Bearer good-{user}-1");
            let reply = token_get(s, &auth, &[]).await;
            let body = reply.expect(200).clone();
            let endpoint = body["api_endpoint"].as_str().expect("endpoint").to_string();
            (body["uid"].as_u64().expect("uid"), endpoint)
        }
    };
    let email = |user: &str| format!("{user}@api.accounts.firefox.com");
    let users: Vec<String> = (0..16).map(|i| format!("user{i}")).collect();
    for user in &users {
        let (_, endpoint) = login(user.clone()).await;
        assert_eq!(
            endpoint,
            format!("{}/v1", map[bucket_of(&email(user), 4)]),
            "{user}"
        );
    }
    // Bucket 0 moves to bucket 1's node: exactly its users move, on their
    // next login.
    let moved = admin_call(
        &s,
        "PUT",
        "/admin/token/queuey-1.0/buckets/0".to_string(),
        json!({"url": map[1]}),
    )
    .await;
    let rows = moved.expect(200)["rows"].as_array().expect("rows").len();
    let in_zero = users
        .iter()
        .filter(|u| bucket_of(&email(u), 4) == 0)
        .count();
    assert_eq!(rows, in_zero);
    for user in &users {
        let (_, endpoint) = login(user.clone()).await;
        let bucket = bucket_of(&email(user), 4);
        let node = if bucket == 0 { &map[1] } else { &map[bucket] };
        assert_eq!(endpoint, format!("{node}/v1"), "{user}");
    }
    admin_call(
        &s,
        "PUT",
        "/admin/token/queuey-1.0/buckets/x".to_string(),
        Value::Null,
    )
    .await
    .expect_error(400, "bucket");
    admin_call(&s, "PUT", policy.clone(), json!({"policy": "least-loaded"}))
        .await
        .expect(200);
    let shown = admin_call(&s, "GET", policy, Value::Null).await;
    assert_eq!(shown.expect(200)["policy"], "least-loaded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_keeps_its_uid_and_group_across_a_restart() {
    let verify_url = start_verifier().await;
    let dir = tempfile::tempdir().expect("dir");
    let flags = ["--groups", "3", "--token-ip-rate", "0"];
    let login = |s: &Server, user: &'static str| {
        let url = s.url.clone();
        async move {
            let auth = format!("Bearer good-{user}-1");
            let answer = reqwest::Client::new()
                .get(format!("{url}/1.0/queuey/1.0"))
                .header("authorization", auth)
                .send()
                .await
                .expect("send");
            assert_eq!(answer.status().as_u16(), 200);
            let body: Value = answer.json().await.expect("json");
            (body["uid"].clone(), body["api_endpoint"].clone())
        }
    };
    let s = token_server(dir.path(), &verify_url, &flags).await;
    let before = [login(&s, "ann").await, login(&s, "bob").await];
    s.kill().await;
    let s = token_server(dir.path(), &verify_url, &flags).await;
    let after = [login(&s, "ann").await, login(&s, "bob").await];
    assert_eq!(
        before, after,
        "same uid and group after kill -9 and restart"
    );
    assert_ne!(before[0].0, before[1].0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_new_identities_from_one_issuer_leaves_room_for_others() {
    const BURST: usize = 10_000;
    const CONCURRENCY: usize = 16;
    let verify_url = start_verifier().await;
    let dir = tempfile::tempdir().expect("dir");
    let s = token_server(
        dir.path(),
        &verify_url,
        &[
            "--token-new-users-per-minute",
            "0",
            "--token-new-users-per-issuer-per-minute",
            "5",
            "--token-ip-rate",
            "0",
        ],
    )
    .await;
    let client = reqwest::Client::new();
    let url = format!("{}/1.0/queuey/1.0", s.url);
    let login = |auth: String| {
        let (client, url) = (client.clone(), url.clone());
        async move {
            let answer = client
                .get(url)
                .header("authorization", auth)
                .send()
                .await
                .expect("send");
            let retry_after = answer.headers().contains_key("retry-after");
            (answer.status().as_u16(), retry_after)
        }
    };
    let (mut admitted, mut capped) = (Vec::new(), 0usize);
    let mut next = 0;
    while next < BURST {
        let users: Vec<usize> = (next..(next + CONCURRENCY).min(BURST)).collect();
        next += users.len();
        let wave = users
            .iter()
            .map(|i| login(format!("Bearer from-mass-u{i}")));
        for (user, answer) in users.iter().zip(futures_util::future::join_all(wave).await) {
            match answer {
                (200, _) => admitted.push(*user),
                (429, true) => capped += 1,
                other => panic!("user {user}: {other:?}"),
            }
        }
    }
    assert_eq!(admitted.len(), 5, "the issuer's cap");
    assert_eq!(capped, BURST - 5);
    // A new user vouched for by another issuer still gets a token, and a
    // user of the capped issuer who already has one keeps getting it.
    assert_eq!(login("Bearer from-other-zed".into()).await, (200, false));
    let returning = format!("Bearer from-mass-u{}", admitted[0]);
    assert_eq!(login(returning).await, (200, false));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simultaneous_first_logins_never_overfill_a_group() {
    const LOGINS: usize = 1_000;
    const CAPACITY: usize = 300;
    const GROUPS: usize = 2;
    let verify_url = start_verifier().await;
    let capacity = CAPACITY.to_string();
    let cluster = crate::support::LocalCluster::start_with(
        3,
        GROUPS as u32,
        &[
            "--token-secret",
            SECRET,
            "--token-verify-url",
            &verify_url,
            "--token-node-capacity",
            &capacity,
            "--token-ip-rate",
            "0",
            "--token-new-users-per-minute",
            "0",
            "--token-new-users-per-issuer-per-minute",
            "0",
        ],
    )
    .await;
    let client = reqwest::Client::new();
    // Every login at once, spread over the three nodes.
    let logins = (0..LOGINS).map(|i| {
        let url = format!("{}/1.0/queuey/1.0", cluster.node(1 + (i % 3) as u64).url);
        let client = client.clone();
        async move {
            let answer = client
                .get(url)
                .header("authorization", format!("Bearer good-user{i}-1"))
                .send()
                .await
                .expect("send");
            let status = answer.status().as_u16();
            let body: Value = answer.json().await.unwrap_or(Value::Null);
            (status, body)
        }
    });
    let mut per_group = std::collections::BTreeMap::new();
    let mut full = 0;
    for (status, body) in futures_util::future::join_all(logins).await {
        match status {
            200 => {
                let endpoint = body["api_endpoint"].as_str().expect("api_endpoint");
                let group = endpoint
                    .split("/g/")
                    .nth(1)
                    .and_then(|rest| rest.split('/').next())
                    .expect("a group in the endpoint")
                    .to_string();
                *per_group.entry(group).or_insert(0usize) += 1;
            }
            503 => full += 1,
            other => panic!("status {other}: {body}"),
        }
    }
    assert!(
        per_group.values().all(|n| *n <= CAPACITY),
        "a group past its capacity: {per_group:?}"
    );
    // Every slot was given out once, and the rest were told to retry.
    assert_eq!(per_group.values().sum::<usize>(), CAPACITY * GROUPS);
    assert_eq!(full, LOGINS - CAPACITY * GROUPS);
}

/// Signs `claims` with a test key (`tests/fixtures/jwt/`).
fn jwt(alg: jsonwebtoken::Algorithm, kid: &str, claims: &Value) -> String {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/jwt/");
    let key = match alg {
        jsonwebtoken::Algorithm::EdDSA => {
            let pem = std::fs::read(format!("{dir}ed25519-private.pem")).expect("test key");
            jsonwebtoken::EncodingKey::from_ed_pem(&pem).expect("key")
        }
        _ => {
            let pem = std::fs::read(format!("{dir}rsa-private.pem")).expect("test key");
            jsonwebtoken::EncodingKey::from_rsa_pem(&pem).expect("key")
        }
    };
    let mut header = jsonwebtoken::Header::new(alg);
    header.kid = Some(kid.to_string());
    jsonwebtoken::encode(&header, claims, &key).expect("sign")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_credentials_are_verified_locally() {
    let dir = tempfile::tempdir().expect("dir");
    let jwks = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/jwt/jwks.json");
    let s = Server::start(
        dir.path(),
        &[
            "--token-secret",
            SECRET,
            "--token-jwks",
            jwks,
            "--token-issuer",
            "https://issuer.example",
            "--token-ip-rate",
            "0",
        ],
    )
    .await;
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
        + 600;
    let claims = |sub: &str, iss: &str, scope: &str, exp: u64| json!({"sub": sub, "iss": iss, "scope": scope, "exp": exp, "fxa-generation": 3});
    let get = |credential: String| {
        let s = &s;
        async move {
            let auth = format!("Bearer {credential}");
            token_get(s, &auth, &[]).await
        }
    };
    use jsonwebtoken::Algorithm::{EdDSA, RS256};
    let good = claims("jwtuser", "https://issuer.example", "profile sluice", exp);
    let rsa = get(jwt(RS256, "rsa-1", &good)).await;
    let uid = rsa.expect(200)["uid"].clone();
    let ed = get(jwt(EdDSA, "ed-1", &good)).await;
    assert_eq!(ed.expect(200)["uid"], uid, "the same user either way");
    for (credential, why) in [
        (
            jwt(
                RS256,
                "rsa-1",
                &claims("jwtuser", "https://evil.example", "sluice", exp),
            ),
            "an issuer not on the list",
        ),
        (
            jwt(
                RS256,
                "rsa-1",
                &claims("jwtuser", "https://issuer.example", "sluice", exp - 1_200),
            ),
            "expired",
        ),
        (
            jwt(
                RS256,
                "rsa-1",
                &claims("jwtuser", "https://issuer.example", "other", exp),
            ),
            "without the scope",
        ),
        (
            jwt(RS256, "ed-1", &good),
            "signed with another key than its kid",
        ),
        (jwt(RS256, "nope", &good), "an unknown kid"),
        (
            "not-a-jwt".to_string(),
            "no remote verifier for other credentials",
        ),
    ] {
        let reply = get(credential).await;
        assert_eq!(reply.status, 401, "{why}: {}", reply.json);
        expect_error(&reply, 401, "invalid-credentials", "Unauthorized");
    }
    // A tampered signature: one character in its middle changed.
    let signed = jwt(RS256, "rsa-1", &good);
    let at = signed.rfind('.').expect("a signature") + 20;
    let flipped = if &signed[at..=at] == "A" { "B" } else { "A" };
    let tampered = format!("{}{flipped}{}", &signed[..at], &signed[at + 1..]);
    expect_error(
        &get(tampered).await,
        401,
        "invalid-credentials",
        "Unauthorized",
    );
}
