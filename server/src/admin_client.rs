//! `sluice admin`: the operators' API from the command line.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::secrets;

/// Where the admin API is, and its key (`sluice admin` and `sluice token`).
#[derive(Debug, Clone, clap::Args)]
pub struct Connection {
    /// Any node's URL.
    #[arg(long, env = "SLUICE_URL", default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// The admin key [default: read from <data-dir>/admin.key].
    #[arg(long, env = "SLUICE_ADMIN_KEY", hide_env_values = true)]
    pub admin_key: Option<String>,
    /// Where to find admin.key when --admin-key is not given.
    #[arg(long, env = "SLUICE_DATA_DIR", default_value = "./sluice-data")]
    pub data_dir: PathBuf,
}

/// The flags of `sluice admin`.
#[derive(Debug, Clone, clap::Args)]
pub struct AdminArgs {
    /// Where and with which key.
    #[command(flatten)]
    pub connection: Connection,
    /// What to do.
    #[command(subcommand)]
    pub action: AdminAction,
}

/// The flags of `sluice token`.
#[derive(Debug, Clone, clap::Args)]
pub struct TokenArgs {
    /// Where and with which key.
    #[command(flatten)]
    pub connection: Connection,
    /// What to do.
    #[command(subcommand)]
    pub action: TokenAction,
}

/// Operators' token commands (`{service}` is `{app}-{version}`, e.g.
/// `queuey-1.0`).
#[derive(Debug, Clone, clap::Subcommand)]
pub enum TokenAction {
    /// Adds a node, or changes what is given of one.
    SetNode {
        /// The service.
        service: String,
        /// The node's URL (`{public_url}/g/{group}`).
        url: String,
        /// Users it may hold.
        #[arg(long)]
        capacity: Option<u32>,
        /// New users it may take before capacity is released again.
        #[arg(long)]
        available: Option<u32>,
        /// Users it holds.
        #[arg(long)]
        current_load: Option<u32>,
        /// Out of service.
        #[arg(long)]
        downed: Option<bool>,
        /// Takes no new users for now.
        #[arg(long)]
        backoff: Option<bool>,
    },
    /// Moves a node's users to other nodes at their next login.
    UnassignNode {
        /// The service.
        service: String,
        /// The node's URL.
        url: String,
    },
    /// Unassigns, then removes a node.
    RemoveNode {
        /// The service.
        service: String,
        /// The node's URL.
        url: String,
    },
    /// Forgets rows replaced longer ago than the grace period.
    Purge {
        /// The service.
        service: String,
        /// Grace period, milliseconds.
        #[arg(long, default_value_t = 7 * 24 * 3600 * 1000)]
        grace_ms: u64,
    },
    /// Sets how new users are placed: `least-loaded`, or `bucketed` with
    /// `--buckets N` (buckets map round-robin over the nodes).
    SetPolicy {
        /// The service.
        service: String,
        /// `least-loaded` or `bucketed`.
        policy: String,
        /// Buckets, for `bucketed`.
        #[arg(long)]
        buckets: Option<u32>,
    },
    /// Shows a service's policy and bucket map.
    Policy {
        /// The service.
        service: String,
    },
    /// Maps a bucket to a node; its users on other nodes move at their
    /// next login.
    MoveBucket {
        /// The service.
        service: String,
        /// The bucket (from 0).
        bucket: u32,
        /// The node's URL.
        url: String,
    },
    /// Places a user on a node (or where the policy says), with a new uid.
    AllocateUser {
        /// The service.
        service: String,
        /// `<user>@<domain>`.
        email: String,
        /// The node's URL (default: the policy chooses).
        #[arg(long)]
        node: Option<String>,
    },
    /// Users with a current assignment.
    CountUsers {
        /// The service.
        service: String,
    },
    /// Allows (`true`) or refuses (`false`) new users.
    NewUsers {
        /// Whether new users are allowed.
        allow: bool,
    },
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
    let action = args.action;
    send(&args.connection, |client, base| {
        admin_request(client, base, &action)
    })
    .await
}

/// Runs one token action and prints the answer.
pub async fn run_token(args: TokenArgs) -> ExitCode {
    let action = args.action;
    send(&args.connection, |client, base| {
        token_request(client, base, &action)
    })
    .await
}

fn token_request(
    client: &reqwest::Client,
    base: &str,
    action: &TokenAction,
) -> reqwest::RequestBuilder {
    let segment = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    let json = |request: reqwest::RequestBuilder, body: serde_json::Value| {
        request
            .header("content-type", "application/json")
            .body(body.to_string())
    };
    match action {
        TokenAction::SetNode {
            service,
            url,
            capacity,
            available,
            current_load,
            downed,
            backoff,
        } => json(
            client.put(format!("{base}/admin/token/{}/nodes", segment(service))),
            serde_json::json!({
                "url": url, "capacity": capacity, "available": available,
                "current_load": current_load, "downed": downed, "backoff": backoff,
            }),
        ),
        TokenAction::UnassignNode { service, url } => json(
            client.post(format!(
                "{base}/admin/token/{}/nodes/unassign",
                segment(service)
            )),
            serde_json::json!({ "url": url }),
        ),
        TokenAction::RemoveNode { service, url } => json(
            client.post(format!(
                "{base}/admin/token/{}/nodes/remove",
                segment(service)
            )),
            serde_json::json!({ "url": url }),
        ),
        TokenAction::Purge { service, grace_ms } => json(
            client.post(format!("{base}/admin/token/{}/purge", segment(service))),
            serde_json::json!({ "grace_ms": grace_ms }),
        ),
        TokenAction::SetPolicy {
            service,
            policy,
            buckets,
        } => json(
            client.put(format!("{base}/admin/token/{}/policy", segment(service))),
            serde_json::json!({ "policy": policy, "buckets": buckets }),
        ),
        TokenAction::Policy { service } => {
            client.get(format!("{base}/admin/token/{}/policy", segment(service)))
        }
        TokenAction::MoveBucket {
            service,
            bucket,
            url,
        } => json(
            client.put(format!(
                "{base}/admin/token/{}/buckets/{bucket}",
                segment(service)
            )),
            serde_json::json!({ "url": url }),
        ),
        TokenAction::AllocateUser {
            service,
            email,
            node,
        } => json(
            client.post(format!("{base}/admin/token/{}/users", segment(service))),
            serde_json::json!({ "email": email, "node": node }),
        ),
        TokenAction::CountUsers { service } => {
            client.get(format!("{base}/admin/token/{}/users", segment(service)))
        }
        TokenAction::NewUsers { allow } => json(
            client.put(format!("{base}/admin/token/new-users")),
            serde_json::json!({ "allow": allow }),
        ),
    }
}

/// Sends the request `build` makes with the admin key and prints the
/// answer.
async fn send(
    args: &Connection,
    build: impl FnOnce(&reqwest::Client, &str) -> reqwest::RequestBuilder,
) -> ExitCode {
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
    let request = build(&client, base);
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

fn admin_request(
    client: &reqwest::Client,
    base: &str,
    action: &AdminAction,
) -> reqwest::RequestBuilder {
    match action {
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
    }
}
