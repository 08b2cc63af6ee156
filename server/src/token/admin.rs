//! Operators' control of token assignments, under `/admin/token` with the
//! admin key: set a node's capacity and state, move a node's users away
//! (the recourse when a group dies), remove a node, purge replaced rows,
//! count users, and allow or refuse new users. Each change is one command
//! in the meta group; a purge first deletes the purged uids' queues.

use std::collections::BTreeSet;

use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use serde::Deserialize;
use serde_json::{Value, json};
use sluice_raft::meta::command::{MetaCommand, MetaReply};
use sluice_token::assign::{Command, Policy, Reply};

use crate::admin::check;
use crate::http::AppState;
use crate::v1::error::V1Error;
use crate::v1::queues::delete_queue;
use crate::v1::read_body;

/// The routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/admin/token/{service}/nodes", put(set_node))
        .route("/admin/token/{service}/nodes/unassign", post(unassign))
        .route("/admin/token/{service}/nodes/remove", post(remove))
        .route("/admin/token/{service}/purge", post(purge))
        .route(
            "/admin/token/{service}/users",
            get(count).post(allocate_user),
        )
        .route(
            "/admin/token/{service}/policy",
            get(show_policy).put(set_policy),
        )
        .route("/admin/token/{service}/buckets/{bucket}", put(move_bucket))
        .route("/admin/token/new-users", put(new_users))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NodeBody {
    url: String,
    capacity: Option<u32>,
    available: Option<u32>,
    current_load: Option<u32>,
    downed: Option<bool>,
    backoff: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UrlBody {
    url: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PurgeBody {
    /// Rows replaced longer ago than this are purged.
    grace_ms: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AllocateBody {
    /// `<user>@<domain>`.
    email: String,
    /// The node's URL; absent: the policy chooses.
    node: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyBody {
    /// `least-loaded` or `bucketed`.
    policy: String,
    /// Buckets, for `bucketed`.
    buckets: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AllowBody {
    allow: bool,
}

async fn parse<T: for<'de> Deserialize<'de>>(state: &AppState, body: Body) -> Result<T, V1Error> {
    let bytes = read_body(state, body).await?;
    serde_json::from_slice(&bytes).map_err(|e| V1Error::bad("body", format!("invalid JSON: {e}")))
}

/// Proposes a token command to the meta group; a refusal is a 400.
async fn propose(state: &AppState, command: Command) -> Result<Reply, V1Error> {
    match state
        .cluster
        .propose_meta(MetaCommand::Token(command))
        .await?
    {
        MetaReply::Token(Reply::Refused(refused)) => Err(V1Error::new(
            StatusCode::BAD_REQUEST,
            "Refused",
            refused.to_string(),
        )),
        MetaReply::Token(reply) => Ok(reply),
        other => Err(unexpected(&other)),
    }
}

fn unexpected(reply: &dyn std::fmt::Debug) -> V1Error {
    V1Error::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "InternalError",
        format!("unexpected reply {reply:?}"),
    )
}

/// Proposes a token command and answers its reply as JSON.
async fn run(state: &AppState, command: Command) -> Result<Response, V1Error> {
    let body = match propose(state, command).await? {
        Reply::Node(node) => json!({
            "status": "ok",
            "capacity": node.capacity,
            "available": node.available,
            "current_load": node.current_load,
            "downed": node.downed,
            "backoff": node.backoff,
        }),
        Reply::Rows(rows) => json!({"status": "ok", "rows": rows_json(rows)}),
        Reply::Assigned(row) => json!({"status": "ok", "uid": row.uid, "node": row.node}),
        Reply::Buckets(map) => json!({"status": "ok", "buckets": map}),
        Reply::Done => json!({"status": "ok"}),
        // `propose` answers refusals as errors.
        refused @ Reply::Refused(_) => return Err(unexpected(&refused)),
    };
    Ok(Json(body).into_response())
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Checks the admin key, parses the body as `B`, and runs the command
/// `make` builds from the service and the body.
async fn command<B: for<'de> Deserialize<'de>>(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
    make: impl FnOnce(B) -> Command,
) -> Result<Response, V1Error> {
    check(state, headers)?;
    let b: B = parse(state, body).await?;
    run(state, make(b)).await
}

/// `PUT /admin/token/{service}/nodes` `{"url", "capacity"?, "available"?,
/// "current_load"?, "downed"?, "backoff"?}`: adds or changes a node.
async fn set_node(
    State(state): State<AppState>,
    Path(service): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, V1Error> {
    command(&state, &headers, body, |b: NodeBody| Command::SetNode {
        service,
        url: b.url,
        capacity: b.capacity,
        available: b.available,
        current_load: b.current_load,
        downed: b.downed,
        backoff: b.backoff,
    })
    .await
}

/// `POST /admin/token/{service}/nodes/unassign` `{"url"}`: the node's
/// users move to other nodes on their next login.
async fn unassign(
    State(state): State<AppState>,
    Path(service): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, V1Error> {
    command(&state, &headers, body, |b: UrlBody| Command::UnassignNode {
        service,
        url: b.url,
        now_ms: now_ms(),
    })
    .await
}

/// `POST /admin/token/{service}/nodes/remove` `{"url"}`: unassigns, then
/// removes the node.
async fn remove(
    State(state): State<AppState>,
    Path(service): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, V1Error> {
    command(&state, &headers, body, |b: UrlBody| Command::RemoveNode {
        service,
        url: b.url,
        now_ms: now_ms(),
    })
    .await
}

/// `POST /admin/token/{service}/purge` `{"grace_ms"}`: deletes the queues
/// of uids replaced longer ago than the grace period, then forgets their
/// rows, freeing their slots.
async fn purge(
    State(state): State<AppState>,
    Path(service): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, V1Error> {
    check(&state, &headers)?;
    let b: PurgeBody = parse(&state, body).await?;
    let before_ms = now_ms().saturating_sub(b.grace_ms);
    // The data first, then the slots: a crash in between leaves rows that
    // the next purge finds again, never a freed slot whose data lingers.
    let doomed = state
        .cluster
        .meta(|m| {
            let uids: BTreeSet<u64> = m
                .tokens()
                .purgeable(&service, before_ms)
                .into_iter()
                .collect();
            m.all_queues()
                .filter(|q| sole_user(&q.settings.principles).is_some_and(|u| uids.contains(&u)))
                .take(PURGE_QUEUES_MAX)
                .map(|q| (q.app.clone(), q.name.clone()))
                .collect::<Vec<_>>()
        })
        .await?;
    for (app, name) in &doomed {
        match delete_queue(&state, app, name).await {
            // Deleted meanwhile by someone else: the goal holds.
            Ok(())
            | Err(V1Error {
                status: StatusCode::NOT_FOUND,
                ..
            }) => {}
            Err(e) => return Err(e),
        }
    }
    if doomed.len() == PURGE_QUEUES_MAX {
        // Slots are freed only once their data is gone: the operator runs
        // purge again for the rest.
        return Ok(Json(json!({
            "status": "ok",
            "rows": [],
            "deleted_queues": doomed.len(),
            "more": true,
        }))
        .into_response());
    }
    let purged = match propose(&state, Command::Purge { service, before_ms }).await? {
        Reply::Rows(rows) => rows_json(rows),
        other => return Err(unexpected(&other)),
    };
    Ok(Json(json!({
        "status": "ok",
        "rows": purged,
        "deleted_queues": doomed.len(),
        "more": false,
    }))
    .into_response())
}

/// Most queues one purge deletes; the answer says when more remain.
const PURGE_QUEUES_MAX: usize = 1_000;

/// The uid of a queue's only token user (`user:<uid>`), if exactly one
/// is named: such a queue is that user's data, placed on the user's group.
fn sole_user(principles: &[String]) -> Option<u64> {
    let mut users = principles.iter().filter_map(|p| p.strip_prefix("user:"));
    let only = users.next()?;
    users.next().is_none().then(|| only.parse().ok()).flatten()
}

/// Rows as JSON `[{"uid", "node"}]`.
fn rows_json(rows: Vec<(u64, String)>) -> Vec<Value> {
    rows.into_iter()
        .map(|(uid, node)| json!({"uid": uid, "node": node}))
        .collect()
}

/// `GET /admin/token/{service}/users`: users with a current assignment.
async fn count(
    State(state): State<AppState>,
    Path(service): Path<String>,
    headers: HeaderMap,
) -> Result<Response, V1Error> {
    check(&state, &headers)?;
    let users = state
        .cluster
        .meta(|m| m.tokens().count_users(&service))
        .await?;
    Ok(Json(json!({"status": "ok", "users": users})).into_response())
}

/// `POST /admin/token/{service}/users` `{"email", "node"?}`: places a
/// user on a node (or where the policy says) with a new uid.
async fn allocate_user(
    State(state): State<AppState>,
    Path(service): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, V1Error> {
    command(&state, &headers, body, |b: AllocateBody| {
        Command::AllocateUser {
            service,
            email: b.email,
            node: b.node,
            now_ms: now_ms(),
        }
    })
    .await
}

/// `PUT /admin/token/{service}/policy` `{"policy": "least-loaded"}` or
/// `{"policy": "bucketed", "buckets": N}`: how new users are placed.
async fn set_policy(
    State(state): State<AppState>,
    Path(service): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, V1Error> {
    check(&state, &headers)?;
    let b: PolicyBody = parse(&state, body).await?;
    let policy = match (b.policy.as_str(), b.buckets) {
        ("least-loaded", None) => Policy::LeastLoaded,
        ("bucketed", Some(buckets)) => Policy::Bucketed { buckets },
        _ => {
            return Err(V1Error::bad(
                "policy",
                "\"least-loaded\", or \"bucketed\" with \"buckets\"",
            ));
        }
    };
    run(&state, Command::SetPolicy { service, policy }).await
}

/// `GET /admin/token/{service}/policy`: the policy and the bucket map.
async fn show_policy(
    State(state): State<AppState>,
    Path(service): Path<String>,
    headers: HeaderMap,
) -> Result<Response, V1Error> {
    check(&state, &headers)?;
    let map = state
        .cluster
        .meta(|m| m.tokens().buckets(&service).map(<[String]>::to_vec))
        .await?;
    let policy = if map.is_some() {
        "bucketed"
    } else {
        "least-loaded"
    };
    Ok(
        Json(json!({"status": "ok", "policy": policy, "buckets": map.unwrap_or_default()}))
            .into_response(),
    )
}

/// `PUT /admin/token/{service}/buckets/{bucket}` `{"url"}`: maps a bucket
/// to a node; its users elsewhere move at their next login.
async fn move_bucket(
    State(state): State<AppState>,
    Path((service, bucket)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, V1Error> {
    let bucket: u32 = bucket
        .parse()
        .map_err(|_| V1Error::bad("bucket", "a bucket is a number from 0"))?;
    command(&state, &headers, body, |b: UrlBody| Command::MoveBucket {
        service,
        bucket,
        url: b.url,
        now_ms: now_ms(),
    })
    .await
}

/// `PUT /admin/token/new-users` `{"allow": bool}`.
async fn new_users(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, V1Error> {
    command(&state, &headers, body, |b: AllowBody| {
        Command::AllowNewUsers(b.allow)
    })
    .await
}
