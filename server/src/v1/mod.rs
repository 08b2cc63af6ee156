//! The Queuey v1 API (`../shared/spec/queuey-v1.md`): queues and messages
//! under `/v1/{app}`, with Queuey 0.8's order of checks: an unknown
//! application or queue (404), a malformed `{ids}` (400), an unknown key
//! (401), a caller without permission (403), then bad parameters (400).

use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use sluice_raft::meta::command::Queue;

use crate::http::AppState;
use crate::v1::auth::{Caller, Credentials};
use crate::v1::error::V1Error;

pub mod auth;
pub mod error;
pub mod messages;
pub mod params;
pub mod queues;

/// The v1 routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/v1/{app}",
            get(queues::list)
                .post(queues::create)
                .fallback(method_not_allowed),
        )
        .route(
            crate::hot_route::QUEUE_ROUTE,
            get(messages::read)
                .post(messages::post)
                .put(queues::update)
                .delete(queues::delete)
                .fallback(method_not_allowed),
        )
        .route(
            "/v1/{app}/{queue}/{ids}",
            get(messages::get_by_ids)
                .put(messages::put_by_ids)
                .delete(messages::delete_by_ids)
                .fallback(method_not_allowed),
        )
}

async fn method_not_allowed() -> V1Error {
    V1Error::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "MethodNotAllowed",
        "This method is not allowed on this resource.",
    )
}

/// What a request found in the meta state: the caller (not yet checked,
/// so that 404s and malformed ids are reported first) and the queue.
pub struct Found {
    /// The caller, or the 401 its credentials earn.
    pub caller: Result<Caller, V1Error>,
    /// The queue, when the path names one.
    pub queue: Option<Arc<Queue>>,
}

/// Looks up the application and queue (404 if either is unknown) and
/// resolves the caller, in one linearizable read of the meta state.
pub async fn lookup(
    state: &AppState,
    app: &str,
    queue: Option<&str>,
    credentials: &Credentials<'_>,
) -> Result<Found, V1Error> {
    let (app_exists, found, caller) = state
        .cluster
        .meta(|m| {
            (
                m.has_app(app),
                queue.and_then(|q| m.queue(app, q).cloned()),
                Caller::resolve(credentials, m),
            )
        })
        .await?;
    if !app_exists {
        return Err(V1Error::no_app(app));
    }
    if let Some(name) = queue
        && found.is_none()
    {
        return Err(V1Error::no_queue(name));
    }
    Ok(Found {
        caller,
        queue: found,
    })
}

/// Looks up the queue a path names (404s first) and the caller, whose
/// credentials the handler checks next.
pub async fn lookup_queue(
    state: &AppState,
    app: &str,
    name: &str,
    headers: &HeaderMap,
) -> Result<(Arc<Queue>, Result<Caller, V1Error>), V1Error> {
    let credentials = Credentials::from_headers(headers);
    let found = lookup(state, app, Some(name), &credentials).await?;
    let queue = found.queue.ok_or_else(|| V1Error::no_queue(name))?;
    Ok((queue, found.caller))
}

/// Reads a request body up to the configured limit (413 past it).
pub async fn read_body(state: &AppState, body: Body) -> Result<Bytes, V1Error> {
    let max = state.limits.body_bytes_max;
    crate::body::collect(body, max).await.ok_or_else(|| {
        V1Error::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body",
            format!("The request body is over the {max}-byte limit."),
        )
    })
}
