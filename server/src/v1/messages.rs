//! Queuey v1 message routes: post and read (`/v1/{app}/{queue}`), and by
//! id (`/v1/{app}/{queue}/{ids}`).
//!
//! A request is checked whole before anything is proposed, so a bad
//! message in a batch writes nothing. Writes answer after the data group
//! has committed (majority, fsynced) and applied them.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde_json::{Value, json};
use sluice_engine::{EngineError, MessageId, Offset, Record, Timestamp};
use sluice_raft::data::command::{
    DataCommand, DataReply, NewMessage, Produce, PutMessage, Refusal,
};
use sluice_raft::data::message_id::{message_id, timestamp_of};
use sluice_raft::data::partition::{CONTENT_TYPE_HEADER, Partition};
use sluice_raft::meta::command::Queue;
use sluice_raft::node::Node;
use sluice_raft::{GroupId, PartitionId, PartitionKey};

use crate::cluster::Led;
use crate::http::AppState;
use crate::v1::error::V1Error;
use crate::v1::params::{self, Params, int_in, partition_id, partition_number};
use crate::v1::queues::ensure_partitions;
use crate::v1::{lookup_queue, read_body};
use crate::v2::forward::{self, Replay};

/// Default time to live: 3 days.
pub const TTL_SECS_DEFAULT: u64 = 259_200;
/// Longest time to live: 2^25 s (about 388 days).
pub const TTL_SECS_MAX: u64 = 1 << 25;
/// Largest `limit` of a read (per partition).
pub const READ_LIMIT_MAX: u64 = 1_000;
/// Most messages one batch may carry.
pub const BATCH_MESSAGES_MAX: usize = 1_000;
/// Records fetched from a partition log per step of a read.
const READ_CHUNK_RECORDS: usize = 512;
/// Bytes fetched from a partition log per step of a read.
const READ_CHUNK_BYTES: usize = 4 * 1024 * 1024;

/// `POST /v1/{app}/{queue}`: one message (the whole body) or a JSON batch.
/// Most such requests never reach this handler: `hot_route.rs` serves
/// them before the router, through [`post_parts`].
pub async fn post(
    State(state): State<AppState>,
    Path((app, name)): Path<(String, String)>,
    request: Request,
) -> Result<Response, V1Error> {
    // The request taken whole: a `HeaderMap` extractor would clone every
    // header of the hottest route there is.
    let (parts, body) = request.into_parts();
    post_parts(&state, &app, &name, &parts.headers, body).await
}

/// The post of [`post`], from the request's parts.
pub async fn post_parts(
    state: &AppState,
    app: &str,
    name: &str,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, V1Error> {
    let (queue, caller) = lookup_queue(state, app, name, headers).await?;
    caller?.require_app(app)?;
    let bytes = read_body(state, body).await?;
    let partitions = queue.settings.partitions;
    let mut pick = PartitionPicker::new();
    let content_type = header_text(headers, &header::CONTENT_TYPE);
    let messages = if content_type.as_deref().is_some_and(is_json) {
        parse_batch(&bytes, partitions, &mut pick)?
    } else {
        if bytes.is_empty() {
            return Err(V1Error::bad("body", "Required"));
        }
        let ttl_secs = ttl_header(headers)?;
        let partition = match header_text(headers, &PARTITION_HEADER) {
            Some(text) => int_in("partition", &text, 1, u64::from(partitions))? as u32,
            None => pick.next(partitions),
        };
        vec![NewMessage {
            partition: partition_id(partition, partitions).unwrap_or(PartitionId(0)),
            ttl_secs,
            sequence: None,
            content_type,
            headers: Vec::new(),
            body: bytes.to_vec(),
        }]
    };
    let single = messages.len() == 1;
    for (i, m) in messages.iter().enumerate() {
        if let Err(reason) = Partition::check_record(m.content_type.as_deref(), &[], m.body.len()) {
            let field = if single {
                "body".to_string()
            } else {
                format!("{i}.body")
            };
            return Err(V1Error::new(StatusCode::PAYLOAD_TOO_LARGE, field, reason));
        }
    }
    // The messages' partitions in order, to match the reply's runs to
    // them: one message (most posts) needs no list of its own.
    let first = messages.first().map(|m| m.partition);
    let many: Vec<PartitionId> = if single {
        Vec::new()
    } else {
        messages.iter().map(|m| m.partition).collect()
    };
    let order = match &first {
        Some(p) if single => std::slice::from_ref(p),
        _ => &many,
    };
    let body_bytes: u64 = messages.iter().map(|m| m.body.len() as u64).sum();
    state.disk.check(body_bytes)?;
    let command = DataCommand::Produce(Produce {
        queue: queue.id,
        producer: None,
        messages,
    });
    let led = propose_repairing(state, &queue, command).await?;
    let DataReply::Produced(produced) = &led.value else {
        return Err(unexpected(&led.value));
    };
    let placements = produced.placements(order).ok_or_else(|| {
        V1Error::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalError",
            "the data group's reply does not match the request",
        )
    })?;
    state.metrics.produced(placements.len() as u64, body_bytes);
    let answer = post_answer(placements.iter().map(|p| {
        (
            message_id(p.timestamp, queue.group, p.partition),
            p.timestamp,
            partition_number(p.partition),
        )
    }));
    let mut response = Response::new(Body::from(answer));
    *response.status_mut() = StatusCode::CREATED;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(routed(response, &led))
}

/// The body of a post's answer, `{"status": "ok", "messages": [{"key",
/// "timestamp", "partition"}, ...]}`, written straight out: its strings
/// are hex digits and decimals, which JSON takes unescaped, so building
/// each message's strings and then serializing them only cost allocations.
fn post_answer(posted: impl ExactSizeIterator<Item = (MessageId, Timestamp, u32)>) -> Vec<u8> {
    const MESSAGE_BYTES: usize = 96;
    let mut out = String::with_capacity(32 + MESSAGE_BYTES * posted.len());
    out.push_str(r#"{"status":"ok","messages":["#);
    for (i, (id, timestamp, partition)) in posted.enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(r#"{"key":""#);
        params::write_id(&mut out, &id);
        out.push_str(r#"","timestamp":""#);
        params::write_timestamp(&mut out, timestamp);
        out.push_str(r#"","partition":"#);
        out.push_str(itoa::Buffer::new().format(partition));
        out.push('}');
    }
    out.push_str("]}");
    // Exact, so that the body's `Bytes` takes the buffer as it is rather
    // than allocating a shared header for the spare capacity (in place:
    // the allocator keeps a block that shrinks within its size class).
    out.shrink_to_fit();
    out.into_bytes()
}

/// `GET /v1/{app}/{queue}`: messages by time or id, per partition.
pub async fn read(
    State(state): State<AppState>,
    Path((app, name)): Path<(String, String)>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Response, V1Error> {
    let (queue, caller) = lookup_queue(&state, &app, &name, &headers).await?;
    caller?.may_read(&queue)?;
    let query = Params::parse(query.unwrap_or_default().as_bytes())?;
    let since = match query.get("since") {
        None => Since::Start,
        Some(text) => match params::parse_id(text) {
            Some(id) => Since::Id(id),
            None => Since::Time(params::parse_timestamp(text).ok_or_else(|| {
                V1Error::bad("since", "Must be a message id or a timestamp in seconds.")
            })?),
        },
    };
    let descending = match query.get("order") {
        None | Some("ascending") => false,
        Some("descending") => true,
        Some(_) => {
            return Err(V1Error::bad(
                "order",
                "Must be one of: ascending, descending.",
            ));
        }
    };
    let (limit, capped) = match query.int_in("limit", 1, READ_LIMIT_MAX)? {
        Some(l) => (l as usize, false),
        None => (state.limits.read_cap, true),
    };
    let numbers = parse_partition_list(query.get("partitions").unwrap_or("1"))?;
    let now = Timestamp::now();
    let count = queue.settings.partitions;
    let node = state.cluster.node();
    let led = state
        .cluster
        .data(queue.group, queue.settings.consistency, |data| {
            let mut out = Vec::new();
            let mut bytes = 0u64;
            let mut truncated = false;
            for &n in &numbers {
                let Some(p) = partition_id(n, count) else {
                    continue;
                };
                let key = PartitionKey {
                    queue: queue.id,
                    partition: p,
                };
                let Some(partition) = data.partition(key) else {
                    continue;
                };
                let (records, more) = unless_damaged(node, queue.group, key, || {
                    read_partition(partition, since, descending, limit, now)
                })?;
                truncated |= more;
                bytes += records.iter().map(|r| r.payload.len() as u64).sum::<u64>();
                out.extend(records.iter().map(|r| message_json(r, n)));
            }
            Ok((out, bytes, truncated))
        })
        .await?;
    let (messages, bytes, truncated) = match &led.value {
        Ok(read) => read,
        Err(ReadFailure::Damaged) => {
            return read_elsewhere(&state, &queue, &method, &uri, &headers).await;
        }
        Err(ReadFailure::Storage(e)) => return Err(storage_error(e)),
    };
    state.metrics.consumed(messages.len() as u64, *bytes);
    let mut response = Json(json!({"status": "ok", "messages": messages})).into_response();
    if capped && *truncated {
        response
            .headers_mut()
            .insert("x-sluice-truncated", HeaderValue::from_static("true"));
    }
    Ok(routed(response, &led))
}

/// `GET /v1/{app}/{queue}/{ids}`: the listed messages that exist.
pub async fn get_by_ids(
    State(state): State<AppState>,
    Path((app, name, ids)): Path<(String, String, String)>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, V1Error> {
    let (queue, caller) = lookup_queue(&state, &app, &name, &headers).await?;
    let ids = params::parse_ids(&ids)?;
    caller?.may_read(&queue)?;
    let now = Timestamp::now();
    let count = queue.settings.partitions;
    let node = state.cluster.node();
    let led = state
        .cluster
        .data(queue.group, queue.settings.consistency, |data| {
            let mut out = Vec::new();
            for (n, id) in &ids {
                let Some(p) = partition_id(*n, count) else {
                    continue;
                };
                let key = PartitionKey {
                    queue: queue.id,
                    partition: p,
                };
                let Some(partition) = data.partition(key) else {
                    continue;
                };
                let record = unless_damaged(node, queue.group, key, || partition.get(id, now))?;
                out.extend(record.map(|r| message_json(&r, *n)));
            }
            Ok(out)
        })
        .await?;
    let messages = match &led.value {
        Ok(messages) => messages,
        Err(ReadFailure::Damaged) => {
            return read_elsewhere(&state, &queue, &method, &uri, &headers).await;
        }
        Err(ReadFailure::Storage(e)) => return Err(storage_error(e)),
    };
    Ok(routed(
        Json(json!({"status": "ok", "messages": messages})).into_response(),
        &led,
    ))
}

/// `PUT /v1/{app}/{queue}/{ids}`: replaces (or creates) the listed
/// messages with the request's body.
pub async fn put_by_ids(
    State(state): State<AppState>,
    Path((app, name, ids)): Path<(String, String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, V1Error> {
    let (queue, caller) = lookup_queue(&state, &app, &name, &headers).await?;
    let ids = params::parse_ids(&ids)?;
    caller?.require_app(&app)?;
    let count = queue.settings.partitions;
    let mut targets = Vec::with_capacity(ids.len());
    for (n, id) in ids {
        int_in("partition", &n.to_string(), 1, u64::from(count))?;
        if timestamp_of(&id).is_none() {
            return Err(V1Error::bad(
                "messages",
                format!("{} is not a version 1 UUID", params::format_id(&id)),
            ));
        }
        targets.push((partition_id(n, count).unwrap_or(PartitionId(0)), id));
    }
    let ttl_secs = ttl_header(&headers)?;
    let bytes = read_body(&state, body).await?;
    if bytes.is_empty() {
        return Err(V1Error::bad("body", "Required"));
    }
    let content_type = header_text(&headers, &header::CONTENT_TYPE);
    if let Err(reason) = Partition::check_record(content_type.as_deref(), &[], bytes.len()) {
        return Err(V1Error::new(StatusCode::PAYLOAD_TOO_LARGE, "body", reason));
    }
    state
        .disk
        .check((bytes.len() as u64).saturating_mul(targets.len() as u64))?;
    let messages = targets
        .into_iter()
        .map(|(partition, id)| PutMessage {
            partition,
            id,
            ttl_secs,
            content_type: content_type.clone(),
            body: bytes.to_vec(),
        })
        .collect();
    let command = DataCommand::Put {
        queue: queue.id,
        messages,
    };
    propose_done(&state, &queue, command).await
}

/// `DELETE /v1/{app}/{queue}/{ids}`: deletes the listed messages.
pub async fn delete_by_ids(
    State(state): State<AppState>,
    Path((app, name, ids)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Result<Response, V1Error> {
    let (queue, caller) = lookup_queue(&state, &app, &name, &headers).await?;
    let ids = params::parse_ids(&ids)?;
    caller?.may_delete(&queue)?;
    let count = queue.settings.partitions;
    let ids: Vec<(PartitionId, MessageId)> = ids
        .into_iter()
        .filter_map(|(n, id)| partition_id(n, count).map(|p| (p, id)))
        .collect();
    if ids.is_empty() {
        return Ok(Json(json!({"status": "ok"})).into_response());
    }
    let command = DataCommand::Delete {
        queue: queue.id,
        ids,
    };
    propose_done(&state, &queue, command).await
}

/// The number of live messages in all of a queue's partitions (a full
/// scan: `include_count` is opt-in).
pub async fn live_count(state: &AppState, queue: &Queue) -> Result<u64, V1Error> {
    let now = Timestamp::now();
    let node = state.cluster.node();
    let led = state
        .cluster
        .data(queue.group, queue.settings.consistency, |data| {
            let mut total = 0u64;
            for p in 0..queue.settings.partitions {
                let key = PartitionKey {
                    queue: queue.id,
                    partition: PartitionId(p),
                };
                if let Some(partition) = data.partition(key) {
                    total += unless_damaged(node, queue.group, key, || count_live(partition, now))?;
                }
            }
            Ok(total)
        })
        .await?;
    match led.value {
        Ok(total) => Ok(total),
        Err(ReadFailure::Damaged) => Err(repairing()),
        Err(ReadFailure::Storage(e)) => Err(storage_error(&e)),
    }
}

/// Why a read of this node's replicas failed.
enum ReadFailure {
    /// A partition's copy here is damaged (fenced): another node must
    /// answer, and nothing read here may be served.
    Damaged,
    /// Any other storage failure.
    Storage(EngineError),
}

/// Runs `read` of partition `key` unless its copy here is fenced; a read
/// that finds damage fences it.
fn unless_damaged<T>(
    node: &Node,
    group: GroupId,
    key: PartitionKey,
    read: impl FnOnce() -> Result<T, EngineError>,
) -> Result<T, ReadFailure> {
    if node.fences().is_fenced(group, key) {
        return Err(ReadFailure::Damaged);
    }
    read().map_err(|e| {
        if node.report_damage(group, key, &e) {
            ReadFailure::Damaged
        } else {
            ReadFailure::Storage(e)
        }
    })
}

/// Serves a read from another node while a partition's copy here is
/// damaged (see `forward::read_elsewhere`).
async fn read_elsewhere(
    state: &AppState,
    queue: &Queue,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
) -> Result<Response, V1Error> {
    let replay = Replay {
        method,
        uri,
        headers,
        body: axum::body::Bytes::new(),
    };
    forward::read_elsewhere(state, queue.group, replay)
        .await
        .map_err(|e| V1Error::new(e.status, "partitions", e.message))
}

/// 503 while a partition's copy here is being repaired.
fn repairing() -> V1Error {
    V1Error::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "partitions",
        "a partition's copy on this node is damaged and being repaired from peers; retry",
    )
}

/// Proposes `command`; if the data group does not know the queue (or all
/// its partitions) because a create or grow was cut short after the meta
/// step, completes that step and proposes again. The refused attempt
/// wrote nothing, so the second one cannot duplicate it.
pub async fn propose_repairing(
    state: &AppState,
    queue: &Queue,
    command: DataCommand,
) -> Result<Led<DataReply>, V1Error> {
    let (led, command) = state
        .cluster
        .propose_data_returning(queue.group, command)
        .await?;
    match led.value {
        // Boxed, as rare: unboxed, the repair's futures would grow every
        // post's future, which each request moves into the heap.
        DataReply::Refused(Refusal::UnknownQueue(_) | Refusal::UnknownPartition { .. }) => {
            Box::pin(async move {
                ensure_partitions(state, queue).await?;
                Ok(state.cluster.propose_data(queue.group, command).await?)
            })
            .await
        }
        _ => Ok(led),
    }
}

/// Proposes a command whose success is `Done` (put, delete) and answers
/// `{"status": "ok"}` with the routing headers.
async fn propose_done(
    state: &AppState,
    queue: &Queue,
    command: DataCommand,
) -> Result<Response, V1Error> {
    let led = propose_repairing(state, queue, command).await?;
    match led.value {
        DataReply::Done => Ok(routed(Json(json!({"status": "ok"})).into_response(), &led)),
        ref other => Err(unexpected(other)),
    }
}

/// Where a read starts.
#[derive(Debug, Clone, Copy)]
enum Since {
    /// The log's start (or, descending, its end).
    Start,
    /// The message with this id, else the id's time.
    Id(MessageId),
    /// The first message at or after this time.
    Time(Timestamp),
}

/// Reads up to `limit` live messages of one partition; the flag says
/// whether more were left.
fn read_partition(
    partition: &Partition,
    since: Since,
    descending: bool,
    limit: usize,
    now: Timestamp,
) -> Result<(Vec<Record>, bool), EngineError> {
    let log = partition.log();
    let (low, next) = (log.start_offset(), log.next_offset());
    let point = match since {
        Since::Start => None,
        Since::Time(t) => Some(log.offset_for_timestamp(t)?),
        Since::Id(id) => match partition.get(&id, now)? {
            Some(record) => Some(record.offset),
            None => match timestamp_of(&id) {
                Some(t) => Some(log.offset_for_timestamp(t)?),
                // An unknown id with no time in it marks no position.
                None => return Ok((Vec::new(), false)),
            },
        },
    };
    let mut out = Vec::new();
    if descending {
        // Inclusive of the point; from the newest without one.
        let mut end = point.map_or(next, |o| o.plus(1).min(next)).max(low);
        while end > low && out.len() <= limit {
            let from = Offset(end.0.saturating_sub(READ_CHUNK_RECORDS as u64).max(low.0));
            let records = log.read(from, (end.0 - from.0) as usize, usize::MAX)?;
            for r in records.into_iter().rev().filter(|r| r.offset < end) {
                if partition.is_visible(&r, now) {
                    out.push(r);
                    if out.len() > limit {
                        break;
                    }
                }
            }
            end = from;
        }
    } else {
        let mut from = point.unwrap_or(low).max(low);
        while from < next && out.len() <= limit {
            let records = log.read(from, READ_CHUNK_RECORDS, READ_CHUNK_BYTES)?;
            let Some(last) = records.last() else {
                break;
            };
            from = last.offset.plus(1);
            for r in records {
                if partition.is_visible(&r, now) {
                    out.push(r);
                    if out.len() > limit {
                        break;
                    }
                }
            }
        }
    }
    let more = out.len() > limit;
    out.truncate(limit);
    Ok((out, more))
}

/// Counts a partition's live messages.
fn count_live(partition: &Partition, now: Timestamp) -> Result<u64, EngineError> {
    let log = partition.log();
    let (mut from, next) = (log.start_offset(), log.next_offset());
    let mut live = 0u64;
    while from < next {
        let records = log.read(from, READ_CHUNK_RECORDS, READ_CHUNK_BYTES)?;
        let Some(last) = records.last() else {
            break;
        };
        from = last.offset.plus(1);
        live += records
            .iter()
            .filter(|r| partition.is_visible(r, now))
            .count() as u64;
    }
    Ok(live)
}

/// A message as v1 shows it.
fn message_json(record: &Record, partition: u32) -> Value {
    let mut m = json!({
        "message_id": params::format_id(&record.id),
        "timestamp": params::format_timestamp(record.timestamp),
        "partition": partition,
    });
    match std::str::from_utf8(&record.payload) {
        Ok(text) => m["body"] = json!(text),
        Err(_) => {
            m["body"] = json!(base64::engine::general_purpose::STANDARD.encode(&record.payload));
            m["body_encoding"] = json!("base64");
        }
    }
    if let Some(ct) = record.header(CONTENT_TYPE_HEADER) {
        m["content_type"] = json!(String::from_utf8_lossy(ct));
    }
    m
}

/// Parses a batch body: `{"messages": [{"body", "ttl"?, "partition"?}]}`.
fn parse_batch(
    bytes: &[u8],
    partitions: u32,
    pick: &mut PartitionPicker,
) -> Result<Vec<NewMessage>, V1Error> {
    let value: Value = serde_json::from_slice(bytes)
        .map_err(|e| V1Error::bad("body", format!("Invalid JSON: {e}")))?;
    let list = value
        .get("messages")
        .and_then(Value::as_array)
        .filter(|l| !l.is_empty())
        .ok_or_else(|| V1Error::bad("messages", "Required"))?;
    if list.len() > BATCH_MESSAGES_MAX {
        return Err(V1Error::bad(
            "messages",
            format!("At most {BATCH_MESSAGES_MAX} messages per request."),
        ));
    }
    let mut messages = Vec::with_capacity(list.len());
    for (i, m) in list.iter().enumerate() {
        let body = match m.get("body") {
            Some(Value::String(s)) if !s.is_empty() => s.as_bytes().to_vec(),
            Some(Value::String(_)) | None | Some(Value::Null) => {
                return Err(V1Error::bad(format!("{i}.body"), "Required"));
            }
            Some(_) => return Err(V1Error::bad(format!("{i}.body"), "Must be a string.")),
        };
        let ttl_secs = match json_int(m.get("ttl")) {
            None => TTL_SECS_DEFAULT,
            Some(text) => int_in(&format!("{i}.ttl"), &text, 1, TTL_SECS_MAX)?,
        };
        let partition = match json_int(m.get("partition")) {
            None => pick.next(partitions),
            Some(text) => {
                int_in(&format!("{i}.partition"), &text, 1, u64::from(partitions))? as u32
            }
        };
        messages.push(NewMessage {
            partition: partition_id(partition, partitions).unwrap_or(PartitionId(0)),
            ttl_secs,
            sequence: None,
            content_type: None,
            headers: Vec::new(),
            body,
        });
    }
    Ok(messages)
}

/// A JSON integer field as text for `int_in` (numbers and numeric
/// strings, as Queuey's validators took them); absent or null is `None`.
fn json_int(value: Option<&Value>) -> Option<String> {
    match value? {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

/// Parses `partitions`: one number or a comma list.
fn parse_partition_list(text: &str) -> Result<Vec<u32>, V1Error> {
    let list: Vec<&str> = text.split(',').collect();
    if list.len() > params::READ_PARTITIONS_MAX {
        return Err(V1Error::bad(
            "partitions",
            format!("At most {} partitions.", params::READ_PARTITIONS_MAX),
        ));
    }
    list.into_iter()
        .map(|p| {
            let p = p.trim();
            let shown: String = p.chars().take(40).collect();
            (!p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
                .then(|| p.parse::<u32>().ok())
                .flatten()
                .ok_or_else(|| V1Error::bad("partitions", format!("\"{shown}\" is not a number")))
        })
        .collect()
}

/// `X-TTL`, validated (default 3 days).
fn ttl_header(headers: &HeaderMap) -> Result<u64, V1Error> {
    match header_text(headers, &TTL_HEADER) {
        Some(text) => int_in("ttl", &text, 1, TTL_SECS_MAX),
        None => Ok(TTL_SECS_DEFAULT),
    }
}

/// A header's value as trimmed text (lossy), if present.
pub fn header_text(headers: &HeaderMap, name: &header::HeaderName) -> Option<String> {
    headers
        .get(name)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).trim().to_string())
}

/// `application/json`, without case and ignoring parameters.
pub fn is_json(content_type: &str) -> bool {
    content_type
        .split(';')
        .next()
        .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"))
}

// Header names in statics: `HeaderName::from_static` in a function body
// checks the name's bytes on every call (bench/instructions.sh).
/// The v1 header choosing a message's partition.
static PARTITION_HEADER: header::HeaderName = header::HeaderName::from_static("x-partition");
/// The v1 header setting a message's TTL in seconds.
static TTL_HEADER: header::HeaderName = header::HeaderName::from_static("x-ttl");
/// The answer's header naming the data group that wrote it.
static GROUP_HEADER: header::HeaderName = header::HeaderName::from_static("x-sluice-group");
/// The answer's header naming the node that led that group.
static LEADER_HEADER: header::HeaderName = header::HeaderName::from_static("x-sluice-leader");

/// Adds the routing headers: the data group and the leader that answered.
pub fn routed<T>(mut response: Response, led: &Led<T>) -> Response {
    let headers = response.headers_mut();
    headers.insert(&GROUP_HEADER, number_value(u64::from(led.group.0)));
    if let Some(leader) = led.leader {
        headers.insert(&LEADER_HEADER, number_value(leader));
    }
    response
}

/// Numbers below this have their header value made once, and shared.
const SHARED_NUMBERS_MAX: u64 = 256;

/// `n` as a header value. Group and node ids are small, and every answer
/// carries two: formatting each anew cost an allocation apiece.
fn number_value(n: u64) -> HeaderValue {
    static SHARED: OnceLock<Vec<HeaderValue>> = OnceLock::new();
    let shared = SHARED.get_or_init(|| (0..SHARED_NUMBERS_MAX).map(HeaderValue::from).collect());
    usize::try_from(n)
        .ok()
        .and_then(|i| shared.get(i))
        .cloned()
        .unwrap_or_else(|| HeaderValue::from(n))
}

fn storage_error(e: &EngineError) -> V1Error {
    tracing::error!(error = %e, "reading a partition failed");
    V1Error::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "StorageError",
        format!("reading the partition failed: {e}"),
    )
}

fn unexpected(reply: &DataReply) -> V1Error {
    match reply {
        DataReply::Refused(Refusal::Invalid { index, reason }) => {
            V1Error::bad(format!("{index}.body"), reason.clone())
        }
        other => V1Error::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalError",
            format!("unexpected data reply: {other:?}"),
        ),
    }
}

/// Picks random partitions for messages that name none (xorshift seeded
/// from the OS once per request: spread, not secrecy, is the point).
struct PartitionPicker(u64);

impl PartitionPicker {
    /// A picker seeded from a per-process random draw and a counter: the
    /// spread needs no secrecy, and a `getrandom` call per request cost
    /// more than the rest of picking.
    fn new() -> PartitionPicker {
        static SEED: OnceLock<u64> = OnceLock::new();
        static PICKERS: AtomicU64 = AtomicU64::new(0);
        let seed = *SEED.get_or_init(|| {
            crate::secrets::random_bytes::<8>().map_or_else(
                |_| {
                    // No OS randomness: the clock still spreads processes.
                    SystemTime::now()
                        .duration_since(UNIX_EPOCH)
                        .map_or(0, |d| d.as_nanos() as u64)
                },
                u64::from_le_bytes,
            )
        });
        let n = PICKERS.fetch_add(1, Ordering::Relaxed);
        PartitionPicker(splitmix64(seed ^ n) | 1)
    }

    /// A v1 partition number in `1..=partitions`.
    fn next(&mut self, partitions: u32) -> u32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % u64::from(partitions.max(1))) as u32 + 1
    }
}

/// SplitMix64's finaliser: consecutive inputs give unrelated outputs.
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_post_answer_is_the_json_the_spec_shows() {
        let id = |b: u8| MessageId([b; 16]);
        let answer = post_answer(
            [
                (id(0xab), Timestamp(13_239_739_662_820_000), 1),
                (id(0x01), Timestamp(13_239_739_660_000_000), 12),
            ]
            .into_iter(),
        );
        let parsed: Value = serde_json::from_slice(&answer).expect("JSON");
        assert_eq!(
            parsed,
            json!({"status": "ok", "messages": [
                {"key": "ab".repeat(16), "timestamp": "1323973966.282", "partition": 1},
                {"key": "01".repeat(16), "timestamp": "1323973966", "partition": 12},
            ]})
        );
        let none: Value = serde_json::from_slice(&post_answer(std::iter::empty())).expect("JSON");
        assert_eq!(none, json!({"status": "ok", "messages": []}));
    }

    #[test]
    fn routing_headers_name_group_and_leader_past_the_shared_numbers() {
        for n in [0, 7, SHARED_NUMBERS_MAX - 1, SHARED_NUMBERS_MAX, u64::MAX] {
            assert_eq!(number_value(n).to_str().ok(), Some(n.to_string().as_str()));
        }
    }

    #[test]
    fn fresh_pickers_spread_single_messages_over_every_partition() {
        let mut seen = [0u32; 7];
        for _ in 0..7_000 {
            let p = PartitionPicker::new().next(7);
            assert!((1..=7).contains(&p), "{p}");
            seen[(p - 1) as usize] += 1;
        }
        // Uniform would be 1,000 each; a picker stuck on a few would not
        // come near.
        assert!(seen.iter().all(|&n| n > 700), "{seen:?}");
    }

    #[test]
    fn json_content_types_are_recognised_loosely() {
        for yes in [
            "application/json",
            "Application/JSON; charset=utf-8",
            " application/json ;x=1",
        ] {
            assert!(is_json(yes), "{yes}");
        }
        for no in [
            "text/plain",
            "application/x-www-form-urlencoded",
            "application/jsonx",
        ] {
            assert!(!is_json(no), "{no}");
        }
    }

    #[test]
    fn partition_lists_parse_or_name_the_parameter() {
        assert_eq!(parse_partition_list("1,3").expect("list"), vec![1, 3]);
        let err = parse_partition_list("1,x").expect_err("not a number");
        assert_eq!(
            (err.status.as_u16(), err.field.as_str()),
            (400, "partitions")
        );
    }
}
