//! Runs `sluice serve` as a child process on a free loopback port, in a
//! temporary data directory, and talks to it over HTTP. The child is
//! killed when the handle drops, even when a test fails.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use reqwest::Method;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// Longest a node may take to print `sluice: ready`.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A running `sluice serve`.
pub struct Server {
    child: Child,
    /// Its base URL (`http://127.0.0.1:PORT`).
    pub url: String,
    /// The `default` application's key.
    pub key: String,
    /// Everything it printed on stdout up to `ready`.
    pub banner: Vec<String>,
    data_dir: PathBuf,
    client: reqwest::Client,
}

/// A response: status, headers, body, and the body as JSON
/// (`Value::Null` if not JSON).
pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub bytes: bytes::Bytes,
    pub json: Value,
}

impl Server {
    /// Starts a single node with data in `data_dir` (reused across
    /// restarts), plus `extra` flags; uses the `default` application.
    pub async fn start(data_dir: &Path, extra: &[&str]) -> Server {
        let mut args = vec!["--listen", "127.0.0.1:0"];
        args.extend_from_slice(extra);
        let mut server = Server::spawn(data_dir, &args).await;
        server.key = std::fs::read_to_string(data_dir.join("default-app.key"))
            .expect("the default key is kept")
            .trim()
            .to_string();
        server
    }

    /// Starts `sluice serve --data-dir <data_dir> <args>` and waits until it
    /// prints `sluice: ready`. `key` is left empty.
    pub async fn spawn(data_dir: &Path, args: &[&str]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_sluice"))
            .arg("serve")
            .arg("--data-dir")
            .arg(data_dir)
            .args(args)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn sluice");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let mut banner = Vec::new();
        let read = async {
            while let Some(line) = lines.next_line().await.expect("read stdout") {
                let done = line == "sluice: ready";
                banner.push(line);
                if done {
                    return true;
                }
            }
            false
        };
        let ready = tokio::time::timeout(START_TIMEOUT, read).await;
        assert!(
            matches!(ready, Ok(true)),
            "sluice did not start: {banner:?}"
        );
        // Keep draining stdout so the child never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let url = banner
            .iter()
            .find_map(|l| l.split(" listening on ").nth(1))
            .expect("the banner names the URL")
            .to_string();
        Server {
            child,
            url,
            key: String::new(),
            banner,
            data_dir: data_dir.to_path_buf(),
            client: reqwest::Client::new(),
        }
    }

    /// Kills the process with SIGKILL and waits for it.
    pub async fn kill(mut self) -> PathBuf {
        self.child.kill().await.expect("kill");
        self.data_dir.clone()
    }

    /// Its data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The value of one series of its `/metrics` (None when absent).
    pub async fn metric(&self, series: &str) -> Option<f64> {
        let text = self
            .client
            .get(format!("{}/metrics", self.url))
            .send()
            .await
            .expect("scrape")
            .text()
            .await
            .expect("text");
        crate::metrics::value(&text, series)
    }

    /// `Authorization: Bearer <admin key>`, with the key `sluice serve`
    /// wrote into its data directory.
    pub fn admin_auth(&self) -> String {
        let key = std::fs::read_to_string(self.data_dir.join("admin.key")).expect("admin key");
        format!("Bearer {}", key.trim())
    }

    /// `Authorization: Application <default key>`.
    pub fn auth(&self) -> String {
        format!("Application {}", self.key)
    }

    /// Sends a request; `auth` is the `Authorization` header, if any.
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        auth: Option<&str>,
        headers: &[(&str, &str)],
        body: impl Into<reqwest::Body>,
    ) -> Reply {
        let method = Method::from_bytes(method.as_bytes()).expect("method");
        let mut request = self
            .client
            .request(method, format!("{}{path}", self.url))
            .body(body);
        if let Some(auth) = auth {
            request = request.header("authorization", auth);
        }
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        let response = request.send().await.expect("send");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.expect("body");
        let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Reply {
            status,
            headers,
            bytes,
            json,
        }
    }

    /// A request with the default application's key.
    pub async fn app(&self, method: &str, path: &str, body: impl Into<reqwest::Body>) -> Reply {
        let auth = self.auth();
        self.call(method, path, Some(&auth), &[], body).await
    }

    /// A form-encoded request with the default application's key.
    pub async fn form(&self, method: &str, path: &str, form: &str) -> Reply {
        let auth = self.auth();
        let ct = [("content-type", "application/x-www-form-urlencoded")];
        self.call(method, path, Some(&auth), &ct, form.to_string())
            .await
    }
}

impl Server {
    /// A JSON request with the default application's key.
    pub async fn json(&self, method: &str, path: &str, body: &Value) -> Reply {
        let auth = self.auth();
        let ct = [("content-type", "application/json")];
        self.call(method, path, Some(&auth), &ct, body.to_string())
            .await
    }
}

impl Reply {
    /// Asserts a native (v2) error answer: its status and code; returns
    /// the error object.
    #[track_caller]
    pub fn expect_code(&self, status: u16, code: &str) -> &Value {
        assert_eq!(self.status, status, "body: {}", self.json);
        assert_eq!(self.json["error"]["code"], code, "{}", self.json);
        &self.json["error"]
    }

    /// Asserts the status and returns the JSON body.
    #[track_caller]
    pub fn expect(&self, status: u16) -> &Value {
        assert_eq!(self.status, status, "body: {}", self.json);
        &self.json
    }

    /// Asserts an error answer: its status and the `error_msg` key.
    #[track_caller]
    pub fn expect_error(&self, status: u16, field: &str) -> String {
        assert_eq!(self.status, status, "body: {}", self.json);
        assert_eq!(self.json["status"], "error", "{}", self.json);
        let msg = &self.json["error_msg"];
        assert!(
            msg.get(field).is_some(),
            "expected error_msg.{field}: {}",
            self.json
        );
        msg[field].as_str().unwrap_or_default().to_string()
    }
}

/// Free loopback ports: bound, read, released (a test then binds them by
/// number; nothing else on a test machine races for them in practice).
pub fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<std::net::TcpListener> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("bind"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("addr").port())
        .collect()
}

/// The application every cluster test uses (configured on every node).
pub const CLUSTER_APP_KEY: &str = "test=cluster-test-key-0123456789";

/// A cluster of `sluice serve` processes on loopback.
pub struct LocalCluster {
    /// The nodes, by index (node id = index + 1); `None` while stopped.
    pub nodes: Vec<Option<Server>>,
    dirs: Vec<tempfile::TempDir>,
    args: Vec<Vec<String>>,
}

impl LocalCluster {
    /// Starts `n` nodes forming one cluster with `groups` data groups.
    pub async fn start(n: usize, groups: u32) -> LocalCluster {
        LocalCluster::start_with(n, groups, &[]).await
    }

    /// As [`LocalCluster::start`], every node also given `extra` flags.
    pub async fn start_with(n: usize, groups: u32, extra: &[&str]) -> LocalCluster {
        let ports = free_ports(n);
        let peers: Vec<String> = ports
            .iter()
            .enumerate()
            .map(|(i, p)| format!("{}=127.0.0.1:{p}", i + 1))
            .collect();
        let peers = peers.join(",");
        let mut dirs = Vec::new();
        let mut args = Vec::new();
        for (i, port) in ports.iter().enumerate() {
            dirs.push(tempfile::tempdir().expect("dir"));
            args.push(vec![
                "--listen".to_string(),
                format!("127.0.0.1:{port}"),
                "--node-id".into(),
                (i + 1).to_string(),
                "--peers".into(),
                peers.clone(),
                "--cluster-secret".into(),
                "cluster-test-secret-0123456789".into(),
                "--groups".into(),
                groups.to_string(),
                "--app-key".into(),
                CLUSTER_APP_KEY.into(),
            ]);
            args[i].extend(extra.iter().map(|a| a.to_string()));
        }
        // Start every node at once: each waits for a quorum to be ready.
        let starts = dirs
            .iter()
            .zip(&args)
            .map(|(dir, a)| {
                let a: Vec<&str> = a.iter().map(String::as_str).collect();
                let dir = dir.path().to_path_buf();
                async move { Server::spawn(&dir, &a).await }
            })
            .collect::<Vec<_>>();
        let mut nodes = Vec::new();
        for mut server in futures_util::future::join_all(starts).await {
            server.key = CLUSTER_APP_KEY.split_once('=').expect("key").1.to_string();
            nodes.push(Some(server));
        }
        LocalCluster { nodes, dirs, args }
    }

    /// The running node with id `id`.
    pub fn node(&self, id: u64) -> &Server {
        self.nodes[(id - 1) as usize].as_ref().expect("running")
    }

    /// `kill -9`s node `id`.
    pub async fn kill(&mut self, id: u64) {
        let server = self.nodes[(id - 1) as usize].take().expect("running");
        server.kill().await;
    }

    /// Restarts node `id` on its data directory and waits until ready.
    pub async fn restart(&mut self, id: u64) {
        let i = (id - 1) as usize;
        let a: Vec<&str> = self.args[i].iter().map(String::as_str).collect();
        let mut server = Server::spawn(self.dirs[i].path(), &a).await;
        server.key = CLUSTER_APP_KEY.split_once('=').expect("key").1.to_string();
        self.nodes[i] = Some(server);
    }
}
