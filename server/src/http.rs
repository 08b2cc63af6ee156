//! The HTTP surface of a node: the APIs, health and version endpoints,
//! the Raft RPC routes, and a JSON 404 for everything else.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Json;
use axum::Router;
use axum::extract::Request;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use openraft::async_runtime::watch::WatchReceiver;
use serde_json::json;
use tower::Layer as _;
use tower::util::{MapRequest, MapRequestLayer};

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

/// What every handler shares; one `Arc`, since axum clones it for every
/// extractor and middleware of every request (a clone of ten `Arc`s and
/// its drop were ~2 % of the CPU of single-message POSTs).
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl AppState {
    /// Shares `shared` with every handler.
    pub fn new(shared: Shared) -> AppState {
        AppState(Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// The fields of [`AppState`].
pub struct Shared {
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
    /// The token service, when configured.
    pub token: Option<Arc<crate::token::TokenService>>,
    /// Hawk nonces seen recently on this node.
    pub nonces: Arc<std::sync::Mutex<sluice_token::hawk::NonceCache>>,
    /// Seconds a Hawk timestamp may differ from the clock.
    pub hawk_skew_s: u64,
}

/// The node's whole router: APIs, health, Raft RPC.
pub fn router(state: AppState) -> Router {
    let raft = state.cluster.node().router();
    Router::new()
        .merge(crate::v1::router())
        .merge(crate::v2::router())
        .route_layer(crate::hawk_auth::layer(state.clone()))
        .merge(crate::token::router())
        .merge(crate::admin::router())
        .route("/__heartbeat__", get(heartbeat))
        .route("/__lbheartbeat__", get(lb_heartbeat))
        .route("/__version__", get(version))
        .route("/metrics", get(crate::metrics::endpoint))
        .route_layer(crate::metrics::track_layer(Arc::clone(&state.metrics)))
        .fallback(not_found)
        .with_state(state)
        .merge(raft)
}

/// The whole HTTP service: the router behind a rewrite that strips a
/// leading `/g/{group}` (a client's routing hint: the data group it
/// believes owns the queue). Routing always follows the queue, so the hint
/// is accepted and needs no other effect. The rewrite must wrap the
/// router: a layer inside it would run after routing.
pub fn service(state: AppState) -> MapRequest<Router, fn(Request) -> Request> {
    MapRequestLayer::new(strip_group_hint as fn(Request) -> Request).layer(router(state))
}

/// The path and query as the client sent them (before the `/g/{group}`
/// hint was stripped): what a Hawk MAC covers.
#[derive(Debug, Clone)]
pub struct SentPath(pub String);

/// `/g/{digits}/rest` becomes `/rest` (remembering the path as sent in
/// `SentPath`); anything else is left alone, and then the request's own
/// path is the one sent.
fn strip_group_hint(mut request: Request) -> Request {
    let uri = request.uri();
    let Some(rest) = uri.path().strip_prefix("/g/") else {
        return request;
    };
    let (group, tail) = rest.split_once('/').unwrap_or((rest, ""));
    if group.is_empty() || group.len() > 10 || !group.bytes().all(|b| b.is_ascii_digit()) {
        return request;
    }
    let sent = uri
        .path_and_query()
        .map_or_else(|| "/".to_string(), |p| p.as_str().to_string());
    let path_and_query = match uri.query() {
        Some(q) => format!("/{tail}?{q}"),
        None => format!("/{tail}"),
    };
    let mut parts = uri.clone().into_parts();
    if let Ok(pq) = path_and_query.parse() {
        parts.path_and_query = Some(pq);
        if let Ok(rewritten) = axum::http::Uri::from_parts(parts) {
            *request.uri_mut() = rewritten;
            request.extensions_mut().insert(SentPath(sent));
        }
    }
    request
}

async fn not_found() -> V1Error {
    no_such_resource()
}

/// The 404 of a path no route serves.
pub(crate) fn no_such_resource() -> V1Error {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn rewritten(uri: &str) -> String {
        let request = Request::builder()
            .uri(uri)
            .body(axum::body::Body::empty())
            .expect("request");
        strip_group_hint(request).uri().to_string()
    }

    #[test]
    fn a_group_hint_is_stripped_and_anything_else_kept() {
        assert_eq!(rewritten("/g/3/v1/app/q?since=1"), "/v1/app/q?since=1");
        assert_eq!(rewritten("/g/12/v2/a/q/messages"), "/v2/a/q/messages");
        assert_eq!(rewritten("/g/x/v1/app"), "/g/x/v1/app");
        assert_eq!(rewritten("/g//v1/app"), "/g//v1/app");
        assert_eq!(rewritten("/v1/g/3"), "/v1/g/3");
    }

    #[test]
    fn the_path_as_sent_is_kept_only_when_rewritten() {
        let sent = |uri: &str| {
            let request = Request::builder()
                .uri(uri)
                .body(axum::body::Body::empty())
                .expect("request");
            strip_group_hint(request)
                .extensions()
                .get::<SentPath>()
                .map(|s| s.0.clone())
        };
        assert_eq!(
            sent("/g/3/v1/app/q?since=1").as_deref(),
            Some("/g/3/v1/app/q?since=1")
        );
        assert_eq!(
            sent("/v1/app/q"),
            None,
            "the request's own path is the one sent"
        );
    }
}
