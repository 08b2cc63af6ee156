//! `sluice admin`: the operators' API from the command line.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::secrets;

/// The flags of `sluice admin`.
#[derive(Debug, Clone, clap::Args)]
pub struct AdminArgs {
    /// Any node's URL.
    #[arg(long, env = "SLUICE_URL", default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// The admin key [default: read from <data-dir>/admin.key].
    #[arg(long, env = "SLUICE_ADMIN_KEY", hide_env_values = true)]
    pub admin_key: Option<String>,
    /// Where to find admin.key when --admin-key is not given.
    #[arg(long, env = "SLUICE_DATA_DIR", default_value = "./sluice-data")]
    pub data_dir: PathBuf,
    /// What to do.
    #[command(subcommand)]
    pub action: AdminAction,
}

/// Admin actions.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum AdminAction {
    /// Nodes, groups, leaders, indexes and replication lag.
    Status,
    /// Adds a node to every group (it must be running with --peers).
    AddNode {
        /// Its node id.
        id: u64,
        /// Its address, HOST:PORT.
        addr: String,
    },
    /// Removes a node from every group.
    RemoveNode {
        /// Its node id.
        id: u64,
    },
    /// Lists queues.
    Queues {
        /// Only this application's.
        #[arg(long)]
        app: Option<String>,
    },
    /// A consumer group's members, committed offsets and lag.
    GroupLag {
        /// The application.
        app: String,
        /// The queue.
        queue: String,
        /// The consumer group.
        group: String,
    },
}

/// Runs one admin action and prints the answer.
pub async fn run(args: AdminArgs) -> ExitCode {
    let key = match &args.admin_key {
        Some(k) => k.clone(),
        None => match secrets::read_secret(&args.data_dir.join("admin.key")) {
            Ok(Some(k)) => k,
            Ok(None) => {
                eprintln!(
                    "sluice: no --admin-key and no {}",
                    args.data_dir.join("admin.key").display()
                );
                return ExitCode::from(2);
            }
            Err(e) => {
                eprintln!("sluice: reading the admin key: {e}");
                return ExitCode::FAILURE;
            }
        },
    };
    let base = args.url.trim_end_matches('/');
    let client = reqwest::Client::new();
    let request = match &args.action {
        AdminAction::Status => client.get(format!("{base}/admin/status")),
        AdminAction::AddNode { id, addr } => client
            .post(format!("{base}/admin/nodes"))
            .header("content-type", "application/json")
            .body(serde_json::json!({"id": id, "addr": addr}).to_string()),
        AdminAction::RemoveNode { id } => client.delete(format!("{base}/admin/nodes/{id}")),
        AdminAction::Queues { app } => {
            let query = app
                .as_ref()
                .map(|a| {
                    format!(
                        "?app={}",
                        form_urlencoded::byte_serialize(a.as_bytes()).collect::<String>()
                    )
                })
                .unwrap_or_default();
            client.get(format!("{base}/admin/queues{query}"))
        }
        AdminAction::GroupLag { app, queue, group } => {
            let segment =
                |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
            client.get(format!(
                "{base}/admin/queues/{}/{}/groups/{}",
                segment(app),
                segment(queue),
                segment(group)
            ))
        }
    };
    let response = match request.bearer_auth(&key).send().await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("sluice: {base}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    let pretty = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| serde_json::to_string_pretty(&v).ok())
        .unwrap_or(text);
    println!("{pretty}");
    if status.is_success() {
        ExitCode::SUCCESS
    } else {
        eprintln!("sluice: HTTP {status}");
        ExitCode::FAILURE
    }
}
