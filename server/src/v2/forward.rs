//! Sends a consumer-group request to the leader of the queue's data
//! group, where the coordinator's in-memory state lives.
//!
//! The request is replayed over HTTP to the leader's public address with
//! the client's credentials, and the leader's answer is passed back. A
//! hop count in `x-sluice-forwarded` bounds chains during leader changes.
//! While the group has no leader, this waits (bounded) like proposals do.

use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::Response;
use sluice_raft::GroupId;

use crate::http::AppState;
use crate::v2::error::V2Error;

/// Header carrying how many nodes forwarded the request so far.
pub const FORWARDED_HEADER: &str = "x-sluice-forwarded";
/// Most forwards one request may take.
const HOPS_MAX: u32 = 3;
/// Pause between attempts while no leader is known.
const RETRY_PAUSE_MS: u64 = 50;

/// Where a request is served.
pub enum Place {
    /// Here: this node leads the group in this term.
    Here(u64),
    /// Elsewhere: the leader's answer.
    Forwarded(Response),
}

/// The parts of a request that are replayed to the leader.
pub struct Replay<'a> {
    /// The method.
    pub method: &'a Method,
    /// Path and query.
    pub uri: &'a Uri,
    /// The client's headers.
    pub headers: &'a HeaderMap,
    /// The body, already read.
    pub body: Bytes,
}

/// Serves here if this node leads `group`, else forwards to the leader;
/// waits up to the routing timeout for one to be known.
pub async fn to_leader(
    state: &AppState,
    group: GroupId,
    request: Replay<'_>,
) -> Result<Place, V2Error> {
    let node = state.cluster.node();
    let hops = request
        .headers
        .get(FORWARDED_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u32>().ok())
        .unwrap_or(0);
    let started = Instant::now();
    let deadline = started + Duration::from_millis(state.limits.route_timeout_ms);
    let mut last = String::from("no leader elected yet");
    loop {
        if let Some(term) = node.leading_term(group) {
            return Ok(Place::Here(term));
        }
        if let Some((_, Some(addr))) = node.leader(group) {
            if hops >= HOPS_MAX {
                last = format!("the request was forwarded {hops} times");
            } else {
                match forward(state, &addr, &request, hops + 1).await {
                    Ok(response) => return Ok(Place::Forwarded(response)),
                    Err(e) => last = e,
                }
            }
        }
        if Instant::now() >= deadline {
            return Err(V2Error::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceUnavailable",
                format!(
                    "group {} has no reachable leader after {} ms: {last}",
                    group.0,
                    started.elapsed().as_millis()
                ),
            ));
        }
        tokio::time::sleep(Duration::from_millis(RETRY_PAUSE_MS)).await;
    }
}

/// Serves a read this node's replica must not answer: its copy of the
/// partition is fenced (damaged, being repaired from peers). The group's
/// leader answers instead; while this node leads (it is handing the
/// leadership away), the answer is 503 `ReplicaRepairing`.
pub async fn read_elsewhere(
    state: &AppState,
    group: GroupId,
    request: Replay<'_>,
) -> Result<Response, V2Error> {
    match to_leader(state, group, request).await? {
        Place::Forwarded(response) => Ok(response),
        Place::Here(_) => Err(V2Error::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "ReplicaRepairing",
            format!(
                "this node's copy of the partition is damaged and being repaired from peers; \
                 group {} has no other leader yet",
                group.0
            ),
        )),
    }
}

/// One forward; an error string when the leader could not be reached.
async fn forward(
    state: &AppState,
    addr: &str,
    request: &Replay<'_>,
    hops: u32,
) -> Result<Response, String> {
    let path = request.uri.path_and_query().map_or("/", |p| p.as_str());
    let url = format!("http://{addr}{path}");
    let mut outgoing = state
        .forwarder
        .request(request.method.clone(), &url)
        .header(FORWARDED_HEADER, hops)
        // Long-polls wait up to the cap on the leader.
        .timeout(Duration::from_millis(
            state.limits.wait_ms_max + state.limits.route_timeout_ms,
        ))
        .body(request.body.clone());
    for name in [header::AUTHORIZATION, header::CONTENT_TYPE, header::ACCEPT] {
        if let Some(value) = request.headers.get(&name) {
            outgoing = outgoing.header(name, value);
        }
    }
    let answer = outgoing.send().await.map_err(|e| e.to_string())?;
    let status = answer.status();
    let mut response = Response::builder().status(status.as_u16());
    for (name, value) in answer.headers() {
        let keep = name == header::CONTENT_TYPE || name.as_str().starts_with("x-sluice-");
        if keep && let Ok(value) = HeaderValue::from_bytes(value.as_bytes()) {
            response = response.header(name.as_str(), value);
        }
    }
    let bytes = answer.bytes().await.map_err(|e| e.to_string())?;
    response.body(Body::from(bytes)).map_err(|e| e.to_string())
}
