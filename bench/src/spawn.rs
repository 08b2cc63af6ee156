//! `--spawn N`: a local Sluice cluster for one run, on free loopback
//! ports, with its own data directories, stopped (SIGTERM, then SIGKILL
//! after a grace period) when the run ends. Node output goes to
//! `node-N.log` beside each node's data, not into the run's progress.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use tokio::process::{Child, Command};

/// Most nodes a spawned cluster may have.
pub const NODES_MAX: u16 = 9;
/// How long the cluster gets to elect leaders for every group.
const READY_TIMEOUT_MS: u64 = 60_000;
/// How long nodes get to stop after SIGTERM.
const STOP_GRACE_MS: u64 = 10_000;

/// A running local cluster.
pub struct Cluster {
    children: Vec<Child>,
    /// Holds the data directories (removed on drop) unless kept.
    _dir: Option<tempfile::TempDir>,
    /// Each node's base URL.
    pub urls: Vec<String>,
    /// The key of application `default`.
    pub app_key: String,
    /// What the run's environment records about it.
    pub settings: serde_json::Value,
}

impl Cluster {
    /// Starts `nodes` nodes with `groups` data groups and waits until every
    /// group has a leader. Data goes under `data_root` (kept) or a
    /// temporary directory (removed when the cluster is dropped).
    pub async fn start(
        bin: &Path,
        nodes: u16,
        groups: u32,
        data_root: Option<&Path>,
    ) -> anyhow::Result<Cluster> {
        if !(1..=NODES_MAX).contains(&nodes) {
            bail!("--spawn must be 1..={NODES_MAX}");
        }
        let (dir, root) = match data_root {
            Some(r) => {
                std::fs::create_dir_all(r).with_context(|| format!("creating {}", r.display()))?;
                (None, r.to_path_buf())
            }
            None => {
                let t = tempfile::Builder::new()
                    .prefix("sluice-bench-")
                    .tempdir()
                    .context("creating a data directory")?;
                let root = t.path().to_path_buf();
                (Some(t), root)
            }
        };
        let ports = free_ports(nodes)?;
        let key = |n: u8| {
            sluice_server::secrets::new_key().map(|k| format!("{}{k}", char::from(b'a' + n)))
        };
        let (secret, admin_key, app_key) = (key(0)?, key(1)?, key(2)?);
        let peers: Vec<String> = ports
            .iter()
            .enumerate()
            .map(|(i, p)| format!("{}=127.0.0.1:{p}", i + 1))
            .collect();
        let mut children = Vec::new();
        for (i, port) in ports.iter().enumerate() {
            let node_dir = root.join(format!("node-{}", i + 1));
            std::fs::create_dir_all(&node_dir)?;
            let log = std::fs::File::create(root.join(format!("node-{}.log", i + 1)))?;
            let mut cmd = Command::new(bin);
            cmd.arg("serve")
                .args(["--listen", &format!("127.0.0.1:{port}")])
                .args(["--node-id", &(i + 1).to_string()])
                .args(["--groups", &groups.to_string()])
                .args(["--admin-key", &admin_key])
                .args(["--app-key", &format!("default={app_key}")])
                .arg("--data-dir")
                .arg(&node_dir)
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log)
                .kill_on_drop(true);
            if nodes > 1 {
                cmd.args(["--peers", &peers.join(",")])
                    .args(["--cluster-secret", &secret]);
            }
            children.push(
                cmd.spawn()
                    .with_context(|| format!("starting {}", bin.display()))?,
            );
        }
        let urls: Vec<String> = ports
            .iter()
            .map(|p| format!("http://127.0.0.1:{p}"))
            .collect();
        let mut cluster = Cluster {
            children,
            _dir: dir,
            urls,
            app_key,
            settings: serde_json::json!({
                "nodes": nodes,
                "groups": groups,
                "binary": bin.display().to_string(),
                "data": root.display().to_string(),
                "fsync": "before every acknowledgement (Sluice has no other mode)",
            }),
        };
        if let Err(e) = cluster.wait_ready().await {
            cluster.stop().await;
            return Err(e.context(format!("node logs are in {}", root.display())));
        }
        Ok(cluster)
    }

    /// Polls every node's `/__heartbeat__` until all answer 200.
    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()?;
        let deadline = Instant::now() + Duration::from_millis(READY_TIMEOUT_MS);
        for url in &self.urls {
            loop {
                for (i, child) in self.children.iter_mut().enumerate() {
                    if let Some(status) = child.try_wait()? {
                        bail!("node {} exited at start-up with {status}", i + 1);
                    }
                }
                let ok = client
                    .get(format!("{url}/__heartbeat__"))
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success());
                if ok {
                    break;
                }
                if Instant::now() > deadline {
                    bail!("{url} had no leader for every group after {READY_TIMEOUT_MS} ms");
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        Ok(())
    }

    /// Stops every node: SIGTERM, then SIGKILL after the grace period.
    pub async fn stop(&mut self) {
        for child in &self.children {
            if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGTERM,
                );
            }
        }
        for child in &mut self.children {
            let waited =
                tokio::time::timeout(Duration::from_millis(STOP_GRACE_MS), child.wait()).await;
            if waited.is_err() {
                let _ = child.kill().await;
            }
        }
        self.children.clear();
    }
}

/// `n` ports that were free a moment ago on 127.0.0.1.
fn free_ports(n: u16) -> anyhow::Result<Vec<u16>> {
    let listeners = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()?;
    listeners
        .iter()
        .map(|l| Ok(l.local_addr()?.port()))
        .collect()
}

/// The `sluice` binary: `explicit`, else the one beside this program,
/// else built now with `cargo build --release` (from the workspace this
/// program was built in).
pub fn find_sluice(explicit: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(p) = explicit {
        if !p.is_file() {
            bail!("--sluice-bin {}: no such file", p.display());
        }
        return Ok(p.to_path_buf());
    }
    let exe = std::env::current_exe()?;
    if let Some(beside) = exe.parent().map(|d| d.join("sluice"))
        && beside.is_file()
    {
        return Ok(beside);
    }
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("the workspace folder")?;
    eprintln!("building sluice (release) in {}", workspace.display());
    let status = std::process::Command::new("cargo")
        .args([
            "build",
            "--release",
            "-p",
            "sluice-server",
            "--bin",
            "sluice",
        ])
        .current_dir(workspace)
        .status()
        .context("running cargo")?;
    if !status.success() {
        bail!("cargo build of sluice failed: {status}");
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace.join("target"));
    Ok(target.join("release").join("sluice"))
}
