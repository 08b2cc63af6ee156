//! The HTTP surface of a node: the APIs, health and version endpoints,
//! the Raft RPC routes, and a JSON 404 for everything else.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use openraft::async_runtime::watch::WatchReceiver;
use serde_json::json;

use crate::cluster::Cluster;
use crate::disk_space::DiskSpace;
use crate::metrics::Metrics;
use crate::v1::error::V1Error;
use crate::v2::coordinator::Coordinator;

/// Default largest request body: 16 MiB.
pub const BODY_BYTES_MAX_DEFAULT: usize = 16 * 1024 * 1024;

/// Bounds on what clients may ask.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest request body.
    pub body_bytes_max: usize,
    /// Per-partition cap of a v1 read without `limit`.
    pub read_cap: usize,
    /// Longest long-poll wait; longer `wait_ms` are cut to it.
    pub wait_ms_max: u64,
    /// How long a request waits for a group leader before a 503.
    pub route_timeout_ms: u64,
}

/// Default longest long-poll wait: 30 s.
pub const WAIT_MS_MAX_DEFAULT: u64 = 30_000;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    /// The cluster, through this node.
    pub cluster: Cluster,
    /// Input bounds.
    pub limits: Limits,
    /// Set once the node has joined its cluster and registered.
    pub ready: Arc<AtomicBool>,
    /// The operators' key.
    pub admin_key: Arc<str>,
    /// Consumer-group sessions and positions of the groups this node leads.
    pub coordinator: Arc<Coordinator>,
    /// HTTP client for forwarding consumer-group requests to leaders.
    pub forwarder: reqwest::Client,
    /// Counters for `/metrics`.
    pub metrics: Arc<Metrics>,
    /// Free space on the data directory's disk (507 below the reserve).
    pub disk: Arc<DiskSpace>,
}

/// The node's whole router: APIs, health, Raft RPC.
pub fn router(state: AppState) -> Router {
    let raft = state.cluster.node().router();
    Router::new()
        .merge(crate::v1::router())
        .merge(crate::v2::router())
        .merge(crate::admin::router())
        .route("/__heartbeat__", get(heartbeat))
        .route("/__lbheartbeat__", get(lb_heartbeat))
        .route("/__version__", get(version))
        .route("/metrics", get(crate::metrics::endpoint))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::metrics::track,
        ))
        .fallback(not_found)
        .with_state(state)
        .merge(raft)
}

async fn not_found() -> V1Error {
    V1Error::new(StatusCode::NOT_FOUND, "NotFound", "No such resource.")
}

/// 200 once the process serves HTTP.
async fn lb_heartbeat() -> StatusCode {
    StatusCode::OK
}

/// The build's version.
async fn version() -> Json<serde_json::Value> {
    Json(json!({
        "name": "sluice",
        "version": env!("CARGO_PKG_VERSION"),
    }))
}

/// 200 when the meta group and every data group have a leader, else 503
/// naming the groups without one.
async fn heartbeat(State(state): State<AppState>) -> Response {
    let node = state.cluster.node();
    let mut groups = serde_json::Map::new();
    let mut healthy = state.ready.load(Ordering::Acquire);
    for g in node.groups() {
        let leader = node
            .raft(g)
            .and_then(|r| r.metrics().borrow_watched().current_leader);
        healthy &= leader.is_some();
        groups.insert(g.0.to_string(), json!({"leader": leader}));
    }
    let status = if healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({
        "status": if healthy { "ok" } else { "unavailable" },
        "node": node.id(),
        "ready": state.ready.load(Ordering::Acquire),
        "groups": groups,
    });
    (status, Json(body)).into_response()
}
