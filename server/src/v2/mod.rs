//! The native API (`../shared/spec/native-v2.md`): produce, fetch,
//! consumer groups and queue administration under `/v2/{app}`.
//! Partitions are numbered from 0. Authentication and permissions are
//! v1's; errors are `{"error": {"code", "message", ...}}`.

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::StatusCode;
use axum::routing::{delete, get, post, put};
use sluice_raft::PartitionId;

use crate::http::AppState;
use crate::v1::params::Params;
use crate::v2::error::V2Error;

pub mod batch;
pub mod chunk;
pub mod coordinator;
mod cursor;
pub mod error;
pub mod fetch;
pub mod forward;
pub mod framing;
pub mod groups;
pub mod message_frames;
pub mod openapi;
pub mod produce;
pub mod queues;

/// The v2 routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v2/openapi.json", get(openapi::document))
        .route(
            "/v2/{app}/queues",
            get(queues::list)
                .post(queues::create)
                .fallback(method_not_allowed),
        )
        .route(
            "/v2/{app}/queues/{queue}",
            get(queues::describe)
                .put(queues::update)
                .delete(queues::delete)
                .fallback(method_not_allowed),
        )
        .route(
            crate::hot_route::PRODUCE_ROUTE,
            post(produce::produce).fallback(method_not_allowed),
        )
        .route(
            "/v2/{app}/{queue}/partitions/{partition}/messages",
            get(fetch::fetch).fallback(method_not_allowed),
        )
        .route(
            "/v2/{app}/{queue}/groups/{group}",
            get(groups::status).fallback(method_not_allowed),
        )
        .route(
            "/v2/{app}/{queue}/groups/{group}/members",
            post(groups::join).fallback(method_not_allowed),
        )
        .route(
            "/v2/{app}/{queue}/groups/{group}/members/{member}",
            delete(groups::leave).fallback(method_not_allowed),
        )
        .route(
            "/v2/{app}/{queue}/groups/{group}/members/{member}/heartbeat",
            post(groups::heartbeat).fallback(method_not_allowed),
        )
        .route(
            "/v2/{app}/{queue}/groups/{group}/poll",
            get(groups::poll).fallback(method_not_allowed),
        )
        .route(
            "/v2/{app}/{queue}/groups/{group}/offsets",
            put(groups::commit).fallback(method_not_allowed),
        )
}

async fn method_not_allowed() -> V2Error {
    V2Error::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "MethodNotAllowed",
        "this method is not allowed on this resource",
    )
}

/// A request's query parameters.
pub struct Query(Params);

impl Query {
    /// Parses a raw query string (at most 64 parameters, as v1).
    pub fn parse(raw: Option<String>) -> Result<Query, V2Error> {
        Ok(Query(Params::parse(raw.unwrap_or_default().as_bytes())?))
    }

    /// A parameter's text.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name)
    }

    /// An unsigned decimal parameter in `min..=max`, if present.
    pub fn number(&self, name: &str, min: u64, max: u64) -> Result<Option<u64>, V2Error> {
        self.get(name)
            .map(|text| parse_number(name, text, min, max))
            .transpose()
    }
}

/// Parses an unsigned decimal in `min..=max`, naming `field` when it is not.
pub fn parse_number(field: &str, text: &str, min: u64, max: u64) -> Result<u64, V2Error> {
    let shown: String = text.chars().take(40).collect();
    text.bytes()
        .all(|b| b.is_ascii_digit())
        .then(|| text.parse::<u64>().ok())
        .flatten()
        .filter(|n| (min..=max).contains(n))
        .ok_or_else(|| {
            V2Error::bad(
                field,
                format!("{field} must be an integer in {min}..={max}, not {shown:?}"),
            )
        })
}

/// A partition path segment, numbered from 0 (404 past the queue's count).
pub fn partition_in(text: &str, partitions: u32) -> Result<PartitionId, V2Error> {
    let n = parse_number("partition", text, 0, u64::from(u32::MAX))?;
    if n >= u64::from(partitions) {
        return Err(V2Error::new(
            StatusCode::NOT_FOUND,
            "NoSuchPartition",
            format!("partition {n} does not exist: the queue has partitions 0..{partitions}"),
        ));
    }
    Ok(PartitionId(n as u32))
}

/// Reads a request body up to the configured limit (413 past it).
pub async fn read_body(state: &AppState, body: Body) -> Result<Bytes, V2Error> {
    let max = state.limits.body_bytes_max;
    crate::body::collect(body, max).await.ok_or_else(|| {
        V2Error::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "PayloadTooLarge",
            format!("the request body is over the {max}-byte limit"),
        )
    })
}
