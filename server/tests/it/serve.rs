//! Goal: `sluice serve` starts a usable single node with no configuration,
//! and what it acknowledged survives `kill -9`.
//! Method: real processes on free loopback ports, temporary data dirs.

use crate::support::Server;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_start_prints_keys_and_a_restart_after_kill_keeps_everything() {
    let dir = tempfile::tempdir().expect("dir");
    let server = Server::start(dir.path(), &["--app-key", "web=web-key-0123456789"]).await;
    let banner = server.banner.join("\n");
    assert!(
        banner.contains("created application \"default\""),
        "{banner}"
    );
    assert!(banner.contains("admin key"), "{banner}");
    assert!(banner.contains("curl"), "{banner}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        for file in ["admin.key", "default-app.key", "cluster.secret"] {
            let mode = std::fs::metadata(dir.path().join(file))
                .expect("kept")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{file}");
        }
    }
    assert_eq!(
        server
            .call("GET", "/__lbheartbeat__", None, &[], "")
            .await
            .status,
        200
    );
    assert_eq!(
        server
            .call("GET", "/__heartbeat__", None, &[], "")
            .await
            .status,
        200
    );
    server
        .form("POST", "/v1/default", "queue_name=keep&partitions=3")
        .await
        .expect(201);
    let mut acked = Vec::new();
    for i in 0..20 {
        let body = format!("message {i}");
        let reply = server.app("POST", "/v1/default/keep", body.clone()).await;
        let key = reply.expect(201)["messages"][0]["key"]
            .as_str()
            .expect("key")
            .to_string();
        acked.push((key, body));
    }
    // The configured application key works too.
    let web = server
        .call(
            "POST",
            "/v1/web",
            Some("Application web-key-0123456789"),
            &[],
            "queue_name=w",
        )
        .await;
    web.expect(201);

    let data_dir = server.kill().await;
    let again = Server::start(&data_dir, &[]).await;
    let banner = again.banner.join("\n");
    assert!(
        !banner.contains("created application"),
        "created only once: {banner}"
    );
    let read = again
        .app("GET", "/v1/default/keep?partitions=1,2,3", "")
        .await;
    let messages = read.expect(200)["messages"]
        .as_array()
        .expect("list")
        .clone();
    assert_eq!(messages.len(), acked.len());
    for (key, body) in &acked {
        let found = messages.iter().find(|m| m["message_id"] == key.as_str());
        assert_eq!(
            found.map(|m| m["body"].clone()),
            Some(body.clone().into()),
            "{key}"
        );
    }
    let web = again
        .call(
            "GET",
            "/v1/web",
            Some("Application web-key-0123456789"),
            &[],
            "",
        )
        .await;
    assert_eq!(web.expect(200)["queues"][0]["queue_name"], "w");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_settings_stop_the_start_with_a_message() {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["serve", "--peers", "1=127.0.0.1:1,2=127.0.0.1:2"])
        .output()
        .await
        .expect("run");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--cluster-secret"), "{stderr}");
}
