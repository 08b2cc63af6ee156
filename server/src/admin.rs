//! The operators' API under `/admin`, with `Authorization: Bearer <admin
//! key>` (compared in constant time): cluster status, adding and removing
//! nodes, listing queues.

use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use serde::Deserialize;
use serde_json::json;
use subtle::ConstantTimeEq;

use sluice_raft::meta::command::Consistency;

use crate::http::AppState;
use crate::v1::error::V1Error;
use crate::v1::params::Params;
use crate::v1::read_body;

/// Most queues one admin listing returns.
const QUEUES_LIST_MAX: usize = 10_000;

/// The admin routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/admin/status", get(status))
        .route("/admin/nodes", post(add_node))
        .route("/admin/nodes/{id}", delete(remove_node))
        .route("/admin/queues", get(queues))
        .route(
            "/admin/queues/{app}/{queue}/groups/{group}",
            get(consumer_group),
        )
}

/// 401 unless the request carries the admin key.
pub(crate) fn check(state: &AppState, headers: &HeaderMap) -> Result<(), V1Error> {
    let presented = headers
        .get(header::AUTHORIZATION)
        .map(|v| v.as_bytes())
        .and_then(|v| v.strip_prefix(b"Bearer "))
        .unwrap_or_default();
    if bool::from(presented.ct_eq(state.admin_key.as_bytes())) {
        Ok(())
    } else {
        Err(V1Error::new(
            StatusCode::UNAUTHORIZED,
            "InvalidAdminKey",
            "This needs Authorization: Bearer <admin key>.",
        ))
    }
}

/// `GET /admin/status`: nodes, every group's leader, term, indexes,
/// members and (where this node leads) each follower's lag, and this
/// node's damaged segments awaiting repair.
async fn status(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, V1Error> {
    check(&state, &headers)?;
    let node = state.cluster.node();
    let nodes = state.cluster.meta(|m| m.nodes().clone()).await?;
    let groups: Vec<_> = node.groups().filter_map(|g| node.status(g)).collect();
    let damaged: Vec<_> = node
        .fences()
        .list()
        .into_iter()
        .map(|(d, reason)| {
            json!({
                "group": d.group.0,
                "queue_id": d.key.queue.0,
                "partition": d.key.partition.0,
                "segment_base": d.base.0,
                "reason": reason,
            })
        })
        .collect();
    Ok(Json(json!({
        "status": "ok",
        "node": node.id(),
        "nodes": nodes,
        "groups": groups,
        "damaged_segments": damaged,
    }))
    .into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewNode {
    id: u64,
    addr: String,
}

/// Longest accepted node address.
const ADDR_BYTES_MAX: usize = 256;

/// `POST /admin/nodes` `{"id": 4, "addr": "host:port"}`: adds the node
/// to every group (learner, caught up, then voter).
async fn add_node(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, V1Error> {
    check(&state, &headers)?;
    let bytes = read_body(&state, body).await?;
    let new: NewNode = serde_json::from_slice(&bytes).map_err(|e| {
        V1Error::bad(
            "body",
            format!("want {{\"id\": N, \"addr\": \"host:port\"}}: {e}"),
        )
    })?;
    if new.id == 0 {
        return Err(V1Error::bad("id", "node ids start at 1"));
    }
    let addr_ok = new.addr.len() <= ADDR_BYTES_MAX
        && new
            .addr
            .rsplit_once(':')
            .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok());
    if !addr_ok {
        return Err(V1Error::bad("addr", "want host:port"));
    }
    state
        .cluster
        .node()
        .add_node(new.id, &new.addr)
        .await
        .map_err(|e| {
            V1Error::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceUnavailable",
                e.to_string(),
            )
        })?;
    Ok(Json(json!({"status": "ok", "added": new.id})).into_response())
}

/// `DELETE /admin/nodes/{id}`: removes the node from every group.
async fn remove_node(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, V1Error> {
    check(&state, &headers)?;
    let id: u64 = id
        .parse()
        .ok()
        .filter(|id| *id >= 1)
        .ok_or_else(|| V1Error::bad("id", "want a node id ≥ 1"))?;
    state.cluster.node().remove_node(id).await.map_err(|e| {
        V1Error::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            e.to_string(),
        )
    })?;
    Ok(Json(json!({"status": "ok", "removed": id})).into_response())
}

/// `GET /admin/queues/{app}/{queue}/groups/{group}`: a consumer group's
/// members, committed offsets and lag per partition (linearizable).
async fn consumer_group(
    State(state): State<AppState>,
    Path((app, name, group)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Result<Response, Response> {
    check(&state, &headers).map_err(IntoResponse::into_response)?;
    let queue = state
        .cluster
        .meta(|m| m.queue(&app, &name).cloned())
        .await
        .map_err(|e| V1Error::from(e).into_response())?
        .ok_or_else(|| V1Error::no_queue(&name).into_response())?;
    let status = crate::v2::groups::group_status(&state, &queue, &group, Consistency::Strong)
        .await
        .map_err(IntoResponse::into_response)?;
    match status {
        Some(body) => Ok(Json(body).into_response()),
        None => Err(V1Error::new(
            StatusCode::NOT_FOUND,
            "NoSuchGroup",
            format!("consumer group {group:?} does not exist"),
        )
        .into_response()),
    }
}

/// `GET /admin/queues[?app=NAME]`: every queue with its id, data group and
/// partitions.
async fn queues(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Response, V1Error> {
    check(&state, &headers)?;
    let query = Params::parse(query.unwrap_or_default().as_bytes())?;
    let app = query.get("app").map(str::to_string);
    let list = state
        .cluster
        .meta(|m| {
            m.all_queues()
                .filter(|q| app.as_deref().is_none_or(|a| q.app == a))
                .take(QUEUES_LIST_MAX)
                .map(|q| {
                    json!({
                        "app": q.app,
                        "queue_name": q.name,
                        "id": q.id.0,
                        "group": q.group.0,
                        "partitions": q.settings.partitions,
                    })
                })
                .collect::<Vec<_>>()
        })
        .await?;
    Ok(Json(json!({"status": "ok", "queues": list})).into_response())
}
