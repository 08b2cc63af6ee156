//! `GET /v2/{app}/{queue}/partitions/{p}/messages`: fetch by offset, with
//! long-poll.
//!
//! The first read honours the queue's consistency (linearizable unless
//! `weak`); while waiting, this node re-reads its own replica each time it
//! applies an entry of the queue's group, so new data is returned as soon
//! as it is applied here.

use std::time::{Duration, Instant};

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use sluice_engine::{Offset, Timestamp};
use sluice_raft::meta::command::{Consistency, Queue};
use sluice_raft::{PartitionId, PartitionKey};

use crate::cluster::Led;
use crate::http::AppState;
use crate::v1::lookup_queue;
use crate::v1::messages::routed;
use crate::v2::chunk::{self, Chunk, ChunkError};
use crate::v2::error::V2Error;
use crate::v2::forward::{self, Replay};
use crate::v2::message_frames;
use crate::v2::{Query, partition_in};

/// Default `max_messages`.
pub const MAX_MESSAGES_DEFAULT: u64 = 100;
/// Largest `max_messages`.
pub const MAX_MESSAGES_MAX: u64 = 10_000;
/// Default `max_bytes`: 1 MiB.
pub const MAX_BYTES_DEFAULT: u64 = 1024 * 1024;
/// Largest `max_bytes`: 16 MiB.
pub const MAX_BYTES_MAX: u64 = 16 * 1024 * 1024;

/// The bounds of one read.
#[derive(Debug, Clone, Copy)]
pub struct ReadBounds {
    /// Most messages.
    pub max_messages: usize,
    /// About this many bytes of bodies (at least one message).
    pub max_bytes: usize,
    /// How long to wait for data when there is none.
    pub wait: Duration,
}

impl ReadBounds {
    /// `max_messages`, `max_bytes` and `wait_ms` from a query; `wait_ms`
    /// above the node's cap is cut to the cap.
    pub fn from_query(query: &Query, wait_cap_ms: u64) -> Result<ReadBounds, V2Error> {
        let max_messages = query
            .number("max_messages", 1, MAX_MESSAGES_MAX)?
            .unwrap_or(MAX_MESSAGES_DEFAULT);
        let max_bytes = query
            .number("max_bytes", 1, MAX_BYTES_MAX)?
            .unwrap_or(MAX_BYTES_DEFAULT);
        let wait_ms = query.number("wait_ms", 0, u64::MAX)?.unwrap_or(0);
        Ok(ReadBounds {
            max_messages: max_messages as usize,
            max_bytes: max_bytes as usize,
            wait: Duration::from_millis(wait_ms.min(wait_cap_ms)),
        })
    }
}

/// `GET /v2/{app}/{queue}/partitions/{p}/messages?offset=O&max_messages=N
/// &max_bytes=B&wait_ms=W`.
pub async fn fetch(
    State(state): State<AppState>,
    Path((app, name, partition)): Path<(String, String, String)>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Response, V2Error> {
    let (queue, caller) = lookup_queue(&state, &app, &name, &headers).await?;
    caller?.may_read(&queue)?;
    let partition = partition_in(&partition, queue.settings.partitions)?;
    let query = Query::parse(query)?;
    let offset = query.number("offset", 0, u64::MAX)?.map(Offset);
    let bounds = ReadBounds::from_query(&query, state.limits.wait_ms_max)?;
    let Some(led) = read_waiting(&state, &queue, partition, offset, bounds).await? else {
        let replay = Replay {
            method: &method,
            uri: &uri,
            headers: &headers,
            body: Bytes::new(),
        };
        return forward::read_elsewhere(&state, queue.group, replay).await;
    };
    let chunk = &led.value;
    let bytes: u64 = chunk.records.iter().map(|r| r.payload.len() as u64).sum();
    state.metrics.consumed(chunk.records.len() as u64, bytes);
    if message_frames::wanted(&headers) {
        let fields = [
            ("x-sluice-next-offset", chunk.next_offset.0.to_string()),
            (
                "x-sluice-high-watermark",
                chunk.high_watermark.0.to_string(),
            ),
            ("x-sluice-log-start-offset", chunk.log_start.0.to_string()),
            ("x-sluice-skipped", chunk.skipped.to_string()),
        ];
        let records = chunk.records.iter().map(|r| (partition.0, r));
        return Ok(routed(message_frames::response(records, &fields)?, &led));
    }
    let messages: Vec<Value> = chunk
        .records
        .iter()
        .map(|r| chunk::message_json(r, partition.0))
        .collect();
    let body = json!({
        "messages": messages,
        "next_offset": chunk.next_offset.0,
        "high_watermark": chunk.high_watermark.0,
        "log_start_offset": chunk.log_start.0,
        "skipped": chunk.skipped,
    });
    Ok(routed(Json(body).into_response(), &led))
}

/// Reads one partition from `offset`; when nothing is there yet, waits up
/// to `bounds.wait` for this replica to apply more. `None`: this replica
/// of the partition is fenced (damaged), and another must answer.
async fn read_waiting(
    state: &AppState,
    queue: &Queue,
    partition: PartitionId,
    offset: Option<Offset>,
    bounds: ReadBounds,
) -> Result<Option<Led<Chunk>>, V2Error> {
    let mut deadline = Instant::now() + bounds.wait;
    let key = PartitionKey {
        queue: queue.id,
        partition,
    };
    let node = state.cluster.node();
    let mut consistency = queue.settings.consistency;
    loop {
        if node.fences().is_fenced(queue.group, key) {
            return Ok(None);
        }
        // Read the applied index before the state: an apply in between
        // ends the wait below at once.
        let applied = node.applied_index(queue.group).unwrap_or(0);
        let led = state
            .cluster
            .data(queue.group, consistency, |data| {
                let p = data.partition(key).ok_or(None)?;
                chunk::read(
                    p,
                    offset,
                    bounds.max_messages,
                    bounds.max_bytes,
                    Timestamp::now(),
                )
                .map_err(Some)
            })
            .await?;
        let chunk = match led.value {
            Ok(chunk) => chunk,
            Err(None) => return Err(V2Error::internal("the partition is not in its data group")),
            Err(Some(ChunkError::PastEnd {
                asked,
                high_watermark,
            })) => {
                return Err(V2Error::new(
                    StatusCode::RANGE_NOT_SATISFIABLE,
                    "OffsetOutOfRange",
                    format!("offset {asked} is past the high watermark {high_watermark}"),
                )
                .with("high_watermark", high_watermark));
            }
            Err(Some(ChunkError::Storage(e))) => {
                if node.report_damage(queue.group, key, &e) {
                    return Ok(None);
                }
                return Err(V2Error::internal(format!("reading the partition: {e}")));
            }
        };
        let asked = offset.unwrap_or(chunk.log_start);
        let progressed = !chunk.records.is_empty() || chunk.next_offset != asked;
        let remaining = deadline.saturating_duration_since(Instant::now());
        if progressed || remaining.is_zero() {
            return Ok(Some(Led {
                value: chunk,
                group: led.group,
                leader: led.leader,
            }));
        }
        if !node
            .wait_applied_past(queue.group, applied, remaining)
            .await
        {
            // Timed out (or the group stopped): one last read, then answer.
            deadline = Instant::now();
        }
        // Later reads are of this replica, which only moves forward.
        consistency = Consistency::Weak;
    }
}
