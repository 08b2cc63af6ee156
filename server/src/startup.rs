//! `sluice serve`: opens the node, serves HTTP, forms or joins the
//! cluster, makes sure of the applications and keys, and on SIGINT or
//! SIGTERM stops accepting, finishes in-flight requests and stops the
//! Raft groups.
//!
//! Files it keeps in the data directory besides the node's own:
//! `cluster.secret` (generated for a single node when none is given),
//! `admin.key` (generated when `--admin-key` is not given) and
//! `default-app.key` (the key of the `default` application created at
//! the cluster's first start), each mode 0600.

use std::collections::BTreeMap;
use std::io;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sluice_engine::disk::FileDisk;
use sluice_raft::meta::command::{MetaCommand, MetaReply};
use sluice_raft::meta::machine::key_digest;
use sluice_raft::node::{Node, NodeConfig, NodeError};
use sluice_raft::transport::rpc::ClusterSecret;
use tokio::sync::watch;

use crate::cluster::{Cluster, ClusterFailure};
use crate::config::ServeConfig;
use crate::disk_space::DiskSpace;
use crate::http::{AppState, BODY_BYTES_MAX_DEFAULT, Limits, Shared, WAIT_MS_MAX_DEFAULT};
use crate::metrics::Metrics;
use crate::secrets;
use crate::v2::coordinator::{Coordinator, SWEEP_INTERVAL_MS};

/// The application every new cluster starts with.
pub const DEFAULT_APP: &str = "default";
/// Pause between attempts to register with a cluster that is not ready.
const JOIN_RETRY_MS: u64 = 1_000;

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A file or socket operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The failure.
        source: io::Error,
    },
    /// The node could not open or form its groups.
    #[error(transparent)]
    Node(#[from] NodeError),
    /// A setting is unusable.
    #[error("{0}")]
    Setting(String),
    /// The cluster refused a start-up step.
    #[error("{0}")]
    Cluster(String),
}

fn io_error(what: impl Into<String>) -> impl FnOnce(io::Error) -> StartError {
    let what = what.into();
    move |source| StartError::Io { what, source }
}

/// Runs a node until SIGINT or SIGTERM.
pub async fn serve(config: ServeConfig) -> Result<(), StartError> {
    let data_dir = config.data_dir.clone();
    std::fs::create_dir_all(&data_dir)
        .map_err(io_error(format!("creating {}", data_dir.display())))?;
    let secret_text = match &config.cluster_secret {
        Some(s) => s.clone(),
        None => load_or_create(&data_dir.join("cluster.secret"))?.0,
    };
    let secret = ClusterSecret::new(&secret_text)
        .map_err(|e| StartError::Setting(format!("--cluster-secret: {e}")))?;
    let admin_key_path = data_dir.join("admin.key");
    let (admin_key, admin_created) = match &config.admin_key {
        Some(k) => (k.clone(), false),
        None => load_or_create(&admin_key_path)?,
    };
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(io_error(format!("listening on {}", config.listen)))?;
    let local = listener
        .local_addr()
        .map_err(io_error("reading the bound address"))?;
    let members: BTreeMap<u64, String> = if config.peers.is_empty() {
        BTreeMap::from([(config.node_id, local.to_string())])
    } else {
        config.peers.clone()
    };
    let addr = members
        .get(&config.node_id)
        .cloned()
        .unwrap_or_else(|| local.to_string());
    let public_url = config
        .public_url
        .clone()
        .unwrap_or_else(|| format!("http://{local}"));

    let mut node_config = NodeConfig::new(config.node_id, addr, data_dir.clone(), secret);
    node_config.data_groups = config.groups;
    node_config.log_config.segment_bytes_max = config.segment_bytes;
    node_config.log_config.write_mode = config.partition_writes.write_mode();
    node_config.checkpoint_entries = config.checkpoint_entries;
    let route_timeout_ms = node_config.route_timeout_ms;
    let node = Arc::new(Node::open(node_config, Arc::new(FileDisk)).await?);
    let state = AppState::new(Shared {
        cluster: Cluster::new(Arc::clone(&node)),
        limits: Limits {
            body_bytes_max: BODY_BYTES_MAX_DEFAULT,
            read_cap: config.read_cap,
            wait_ms_max: WAIT_MS_MAX_DEFAULT,
            route_timeout_ms,
        },
        ready: Arc::new(AtomicBool::new(false)),
        admin_key: Arc::from(admin_key.as_str()),
        coordinator: Arc::new(Coordinator::default()),
        forwarder: reqwest::Client::builder()
            .pool_idle_timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| StartError::Setting(format!("the HTTP client: {e}")))?,
        metrics: Arc::new(Metrics::default()),
        disk: Arc::new(DiskSpace::new(data_dir.clone(), config.disk_reserve_bytes)),
        nonces: Arc::new(std::sync::Mutex::new(sluice_token::hawk::NonceCache::new(
            sluice_token::hawk::NONCES_MAX_DEFAULT,
            config.hawk_skew_s,
        ))),
        hawk_skew_s: config.hawk_skew_s,
        token: match config.token.clone() {
            Some(settings) => Some(crate::token::service(settings).map_err(StartError::Setting)?),
            None => None,
        },
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(wait_for_signal(stop_tx));
    tokio::spawn(sweep_sessions(state.clone(), stop_rx.clone()));
    tokio::spawn(crate::maintenance::scrub(
        Arc::clone(&node),
        config.scrub_bytes_per_s,
        stop_rx.clone(),
    ));
    tokio::spawn(crate::maintenance::repair(
        Arc::clone(&node),
        stop_rx.clone(),
    ));
    tokio::spawn(crate::maintenance::writeback(
        Arc::clone(&node),
        stop_rx.clone(),
    ));
    tokio::spawn(crate::maintenance::relieve_wal(
        Arc::clone(&node),
        stop_rx.clone(),
    ));
    let server = {
        // Producers' posts are served before the router (`hot_route.rs`);
        // the rest get the peer's address, by which the token endpoint
        // limits clients.
        let app =
            crate::hot_route::MakeHotRoute::new(state.clone(), crate::http::service(state.clone()));
        let mut stop = stop_rx.clone();
        // Replies are small and latency-bound (Raft RPCs, acks): without
        // TCP_NODELAY, Nagle's algorithm meets the peer's delayed ACK and a
        // reply can wait ~40 ms.
        let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::debug!(error = %e, "TCP_NODELAY on an accepted connection");
            }
        });
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stop.wait_for(|s| *s).await;
                })
                .await
        })
    };
    tracing::info!(node = config.node_id, %local, data_dir = %data_dir.display(), "serving");

    let started = tokio::select! {
        r = start_cluster(&state, &node, &members, &public_url, &config) => Some(r),
        _ = stopped(stop_rx.clone()) => None,
    };
    match started {
        Some(Ok(default_key)) => {
            state.ready.store(true, Ordering::Release);
            print_banner(
                &public_url,
                &config,
                &admin_key,
                admin_created,
                &admin_key_path,
                default_key,
            );
        }
        Some(Err(e)) => {
            let _ = node.shutdown().await;
            server.abort();
            return Err(e);
        }
        None => {}
    }
    let served = server.await;
    tracing::info!("stopping the Raft groups");
    node.shutdown().await?;
    match served {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(StartError::Io {
            what: "serving HTTP".into(),
            source: e,
        }),
        Err(e) => Err(StartError::Setting(format!(
            "the HTTP server task failed: {e}"
        ))),
    }
}

/// Forms the groups, registers this node, and makes sure of the
/// applications; returns the `default` application's key if this start
/// created it.
async fn start_cluster(
    state: &AppState,
    node: &Node,
    members: &BTreeMap<u64, String>,
    public_url: &str,
    config: &ServeConfig,
) -> Result<Option<String>, StartError> {
    node.form(members).await?;
    // Peers may start later than this node: retry until a leader answers.
    loop {
        match node.register(public_url).await {
            Ok(()) => break,
            Err(NodeError::Route(e)) => {
                tracing::info!(error = %e, "waiting for the cluster to elect leaders");
                tokio::time::sleep(Duration::from_millis(JOIN_RETRY_MS)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
    // Hand the groups this node leads to their preferred leaders, so the
    // load spreads over the nodes (best effort: an election follows).
    match node.spread_leaders().await {
        Ok(0) => {}
        Ok(n) => tracing::info!(groups = n, "handed leadership to preferred nodes"),
        Err(e) => tracing::warn!(error = %e, "spreading leaders"),
    }
    for (app, key) in &config.app_keys {
        add_app_key(state, app, key).await?;
    }
    // The node that forms the cluster registers the token nodes and
    // creates the default application once.
    if members.keys().next() != Some(&config.node_id) {
        return Ok(None);
    }
    match crate::token::register_nodes(state, public_url).await {
        Ok(0) => {}
        Ok(n) => tracing::info!(nodes = n, "registered data groups as token nodes"),
        Err(e) => return Err(StartError::Cluster(format!("registering token nodes: {e}"))),
    }
    let exists = state
        .cluster
        .meta(|m| m.has_app(DEFAULT_APP))
        .await
        .map_err(cluster_error)?;
    if exists {
        return Ok(None);
    }
    let key = secrets::new_key().map_err(io_error("generating a key"))?;
    add_app_key(state, DEFAULT_APP, &key).await?;
    let path = config.data_dir.join("default-app.key");
    if let Err(e) = secrets::write_secret(&path, &key) {
        tracing::warn!(error = %e, path = %path.display(), "could not keep the default key");
    }
    Ok(Some(key))
}

async fn add_app_key(state: &AppState, app: &str, key: &str) -> Result<(), StartError> {
    let reply = state
        .cluster
        .propose_meta(MetaCommand::AddAppKey {
            app: app.to_string(),
            key_digest: key_digest(key),
        })
        .await
        .map_err(cluster_error)?;
    match reply {
        MetaReply::Done => Ok(()),
        other => Err(StartError::Cluster(format!(
            "adding a key to application {app}: {other:?}"
        ))),
    }
}

fn cluster_error(e: ClusterFailure) -> StartError {
    StartError::Cluster(e.to_string())
}

fn load_or_create(path: &Path) -> Result<(String, bool), StartError> {
    secrets::load_or_create(path, secrets::new_key)
        .map_err(io_error(format!("keeping {}", path.display())))
}

/// What a newcomer needs: where the node is, the keys, a first request.
fn print_banner(
    public_url: &str,
    config: &ServeConfig,
    admin_key: &str,
    admin_created: bool,
    admin_key_path: &Path,
    default_key: Option<String>,
) {
    println!("sluice: node {} listening on {public_url}", config.node_id);
    if let Some(key) = default_key {
        println!("sluice: created application \"{DEFAULT_APP}\" with key {key}");
        println!(
            "sluice: kept in {}",
            config.data_dir.join("default-app.key").display()
        );
        println!("try:");
        println!(
            "  curl -X POST -H 'Authorization: Application {key}' -d queue_name=demo {public_url}/v1/{DEFAULT_APP}"
        );
        println!(
            "  curl -X POST -H 'Authorization: Application {key}' -d 'hello' {public_url}/v1/{DEFAULT_APP}/demo"
        );
        println!("  curl -H 'Authorization: Application {key}' {public_url}/v1/{DEFAULT_APP}/demo");
    }
    if admin_created {
        println!(
            "sluice: admin key {admin_key} (kept in {})",
            admin_key_path.display()
        );
    }
    println!("sluice: ready");
}

/// Resolves once `stop` turns true (shutdown began).
pub(crate) async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Sends `true` on SIGINT or SIGTERM.
async fn wait_for_signal(stop: watch::Sender<bool>) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
    tracing::info!("shutting down: finishing in-flight requests");
    let _ = stop.send(true);
}

/// Expires consumer sessions in the groups this node leads, until stopped.
async fn sweep_sessions(state: AppState, stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(Duration::from_millis(SWEEP_INTERVAL_MS));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => state.coordinator.sweep(&state.cluster).await,
            _ = stopped(stop.clone()) => return,
        }
    }
}
