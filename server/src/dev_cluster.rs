//! `sluice dev-cluster`: a local cluster on loopback in one command. It
//! runs `sluice serve` once per node as child processes sharing a
//! generated cluster secret and admin key, prefixes their output with the
//! node, and on Ctrl-C (which the terminal delivers to every child too)
//! waits for them to shut down gracefully.

use std::path::PathBuf;
use std::process::{ExitCode, Stdio};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};

use crate::secrets;

/// Most nodes a dev cluster may have.
const NODES_MAX: u16 = 9;
/// How long children get to stop after Ctrl-C before they are killed.
const STOP_GRACE_MS: u64 = 10_000;

/// The flags of `sluice dev-cluster`.
#[derive(Debug, Clone, clap::Args)]
pub struct DevClusterArgs {
    /// Number of nodes (1..=9).
    #[arg(long, default_value_t = 3)]
    pub nodes: u16,
    /// Node i listens on 127.0.0.1:(base-port + i - 1).
    #[arg(long, default_value_t = 8080)]
    pub base_port: u16,
    /// Data directories go under this one (node-1, node-2, ...).
    #[arg(long, default_value = "./sluice-dev")]
    pub data_dir: PathBuf,
    /// Data groups at formation.
    #[arg(long, default_value_t = 4)]
    pub groups: u32,
}

/// Runs the cluster until Ctrl-C.
pub async fn run(args: DevClusterArgs) -> ExitCode {
    if !(1..=NODES_MAX).contains(&args.nodes) {
        eprintln!("sluice: --nodes must be in 1..={NODES_MAX}");
        return ExitCode::from(2);
    }
    let Some(last_port) = args.base_port.checked_add(args.nodes - 1) else {
        eprintln!(
            "sluice: --base-port leaves no room for {} nodes",
            args.nodes
        );
        return ExitCode::from(2);
    };
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("sluice: finding the sluice binary: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Err(e) = std::fs::create_dir_all(&args.data_dir) {
        eprintln!("sluice: creating {}: {e}", args.data_dir.display());
        return ExitCode::FAILURE;
    }
    let keep = |name: &str| secrets::load_or_create(&args.data_dir.join(name), secrets::new_key);
    let (secret, admin_key) = match (keep("cluster.secret"), keep("admin.key")) {
        (Ok((s, _)), Ok((a, _))) => (s, a),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("sluice: keeping the dev cluster's keys: {e}");
            return ExitCode::FAILURE;
        }
    };
    let peers: Vec<String> = (1..=args.nodes)
        .map(|i| format!("{i}=127.0.0.1:{}", args.base_port + i - 1))
        .collect();
    let peers = peers.join(",");
    let mut children: Vec<Child> = Vec::new();
    for i in 1..=args.nodes {
        let port = args.base_port + i - 1;
        let spawned = Command::new(&exe)
            .arg("serve")
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--node-id", &i.to_string()])
            .args(["--peers", &peers])
            .args(["--groups", &args.groups.to_string()])
            .args(["--cluster-secret", &secret])
            .args(["--admin-key", &admin_key])
            .arg("--data-dir")
            .arg(args.data_dir.join(format!("node-{i}")))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn();
        let mut child = match spawned {
            Ok(c) => c,
            Err(e) => {
                eprintln!("sluice: starting node {i}: {e}");
                return ExitCode::FAILURE;
            }
        };
        if let Some(out) = child.stdout.take() {
            tokio::spawn(prefix(i, out, false));
        }
        if let Some(err) = child.stderr.take() {
            tokio::spawn(prefix(i, err, true));
        }
        children.push(child);
    }
    println!(
        "sluice: dev cluster of {} nodes on 127.0.0.1:{}..={last_port}, data in {}; admin key {admin_key}; Ctrl-C stops it",
        args.nodes,
        args.base_port,
        args.data_dir.display()
    );
    let _ = tokio::signal::ctrl_c().await;
    println!("sluice: stopping the dev cluster");
    // A terminal's Ctrl-C reaches the children too, but a signal sent to
    // this process alone (a supervisor, `kill -INT`) does not: pass it on.
    for child in &children {
        if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
    }
    let mut failed = false;
    for (i, child) in children.iter_mut().enumerate() {
        let waited = tokio::time::timeout(Duration::from_millis(STOP_GRACE_MS), child.wait()).await;
        match waited {
            Ok(Ok(status)) if status.success() => {}
            Ok(Ok(status)) => {
                eprintln!("sluice: node {} exited with {status}", i + 1);
                failed = true;
            }
            Ok(Err(e)) => {
                eprintln!("sluice: node {}: {e}", i + 1);
                failed = true;
            }
            Err(_) => {
                eprintln!("sluice: node {} did not stop in time; killing it", i + 1);
                let _ = child.kill().await;
                failed = true;
            }
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// Copies a child's output line by line, prefixed with its node.
async fn prefix(node: u16, stream: impl AsyncRead + Unpin, to_stderr: bool) {
    let mut lines = BufReader::new(stream).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if to_stderr {
            eprintln!("[node {node}] {line}");
        } else {
            println!("[node {node}] {line}");
        }
    }
}
