//! Queue administration (`/v2/{app}/queues`): v1's settings as JSON, and a
//! description that shows each partition's offsets, size and data group.

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};
use sluice_engine::Timestamp;
use sluice_raft::meta::command::{
    Consistency, MetaCommand, PARTITIONS_MAX, Queue, QueueSettings, QueueType,
};
use sluice_raft::{PartitionId, PartitionKey};

use crate::http::AppState;
use crate::v1::auth::Credentials;
use crate::v1::queues::{
    check_principles, check_queue_name, consistency_name, create_queue, delete_queue, type_name,
    update_queue, uuid4_hex,
};
use crate::v1::{lookup, lookup_queue};
use crate::v2::error::V2Error;
use crate::v2::{Query, read_body};

/// Most queues one list answers.
pub const LIST_LIMIT_MAX: u64 = 10_000;

/// Settings a create or update body may carry.
#[derive(Debug, Default)]
struct SettingsBody {
    name: Option<String>,
    partitions: Option<u32>,
    queue_type: Option<QueueType>,
    consistency: Option<Consistency>,
    principles: Option<Vec<String>>,
}

/// `GET /v2/{app}/queues?from=NAME&limit=N`: the application's queues.
pub async fn list(
    State(state): State<AppState>,
    Path(app): Path<String>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Response, V2Error> {
    let found = lookup(&state, &app, None, &Credentials::from_headers(&headers)).await?;
    found.caller?.require_app(&app)?;
    let query = Query::parse(query)?;
    let limit = query.number("limit", 1, LIST_LIMIT_MAX)?.unwrap_or(1_000) as usize;
    let from = query.get("from").map(str::to_string);
    let queues: Vec<Value> = state
        .cluster
        .meta(|m| {
            m.queues_of(&app, from.as_deref(), limit)
                .into_iter()
                .map(settings_json)
                .collect()
        })
        .await?;
    Ok(Json(json!({ "queues": queues })).into_response())
}

/// `POST /v2/{app}/queues`: creates a queue (201).
pub async fn create(
    State(state): State<AppState>,
    Path(app): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, V2Error> {
    let found = lookup(&state, &app, None, &Credentials::from_headers(&headers)).await?;
    found.caller?.require_app(&app)?;
    let body = parse_settings(&read_body(&state, body).await?, true)?;
    let name = match body.name {
        Some(name) => check_queue_name(&name)?,
        None => uuid4_hex()?,
    };
    let settings = QueueSettings {
        partitions: body.partitions.unwrap_or(1),
        queue_type: body.queue_type.unwrap_or_default(),
        consistency: body.consistency.unwrap_or_default(),
        principles: body.principles.unwrap_or_default(),
    };
    let queue = create_queue(&state, &app, &name, settings)
        .await
        .map_err(|e| {
            if e.status == StatusCode::CONFLICT {
                V2Error::new(StatusCode::CONFLICT, "QueueExists", e.message)
            } else {
                e.into()
            }
        })?;
    Ok((StatusCode::CREATED, Json(settings_json(&queue))).into_response())
}

/// `GET /v2/{app}/queues/{queue}`: settings, and per partition its start
/// and end offsets and bytes.
pub async fn describe(
    State(state): State<AppState>,
    Path((app, name)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, V2Error> {
    let (queue, caller) = lookup_queue(&state, &app, &name, &headers).await?;
    caller?.require_app(&app)?;
    let led = state
        .cluster
        .data(queue.group, queue.settings.consistency, |data| {
            (0..queue.settings.partitions)
                .map(|p| {
                    let key = PartitionKey {
                        queue: queue.id,
                        partition: PartitionId(p),
                    };
                    match data.partition(key) {
                        Some(part) => json!({
                            "partition": p,
                            "start_offset": part.log().start_offset().0,
                            "end_offset": part.log().next_offset().0,
                            "bytes": part.log().size_bytes(),
                        }),
                        None => json!({"partition": p, "missing": true}),
                    }
                })
                .collect::<Vec<Value>>()
        })
        .await?;
    let mut body = settings_json(&queue);
    body["partition_details"] = json!(led.value);
    Ok(crate::v1::messages::routed(
        Json(body).into_response(),
        &led,
    ))
}

/// `PUT /v2/{app}/queues/{queue}`: changes the settings given (partitions
/// only grow).
pub async fn update(
    State(state): State<AppState>,
    Path((app, name)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, V2Error> {
    let (current, caller) = lookup_queue(&state, &app, &name, &headers).await?;
    caller?.require_app(&app)?;
    let body = parse_settings(&read_body(&state, body).await?, false)?;
    if let Some(p) = body.partitions
        && p < current.settings.partitions
    {
        return Err(V2Error::bad(
            "partitions",
            format!(
                "partitions only grow: the queue has {}",
                current.settings.partitions
            ),
        ));
    }
    let queue = update_queue(
        &state,
        MetaCommand::UpdateQueue {
            app: app.clone(),
            name: name.clone(),
            partitions: body.partitions,
            queue_type: body.queue_type,
            consistency: body.consistency,
            principles: body.principles,
        },
    )
    .await?;
    Ok(Json(settings_json(&queue)).into_response())
}

/// `DELETE /v2/{app}/queues/{queue}`: deletes the queue and its messages
/// (204).
pub async fn delete(
    State(state): State<AppState>,
    Path((app, name)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, V2Error> {
    let (_, caller) = lookup_queue(&state, &app, &name, &headers).await?;
    caller?.require_app(&app)?;
    delete_queue(&state, &app, &name).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// A queue's settings as JSON.
fn settings_json(queue: &Queue) -> Value {
    json!({
        "name": queue.name,
        "partitions": queue.settings.partitions,
        "type": type_name(queue.settings.queue_type),
        "consistency": consistency_name(queue.settings.consistency),
        "principles": queue.settings.principles,
        "group": queue.group.0,
        "created_ms": queue.created_at.0 / (Timestamp::TICKS_PER_SEC / 1_000),
    })
}

/// Parses `{"name"?, "partitions"?, "type"?, "consistency"?,
/// "principles"?}`; `name` only when creating.
fn parse_settings(bytes: &[u8], creating: bool) -> Result<SettingsBody, V2Error> {
    let fields: Map<String, Value> = if bytes.is_empty() {
        Map::new()
    } else {
        match serde_json::from_slice(bytes) {
            Ok(Value::Object(fields)) => fields,
            Ok(_) => return Err(V2Error::bad("body", "the body must be a JSON object")),
            Err(e) => return Err(V2Error::bad("body", format!("invalid JSON: {e}"))),
        }
    };
    let mut out = SettingsBody::default();
    for (field, value) in &fields {
        let bad = |why: &str| V2Error::bad(field.clone(), format!("{field} {why}"));
        match field.as_str() {
            "name" if creating => {
                out.name = Some(
                    value
                        .as_str()
                        .ok_or_else(|| bad("must be a string"))?
                        .into(),
                )
            }
            "partitions" => {
                let p = value
                    .as_u64()
                    .filter(|p| (1..=u64::from(PARTITIONS_MAX)).contains(p))
                    .ok_or_else(|| bad(&format!("must be an integer in 1..={PARTITIONS_MAX}")))?;
                out.partitions = Some(p as u32);
            }
            "type" => {
                out.queue_type = Some(match value.as_str() {
                    Some("user") => QueueType::User,
                    Some("public") => QueueType::Public,
                    _ => return Err(bad("must be \"user\" or \"public\"")),
                })
            }
            "consistency" => {
                out.consistency = Some(match value.as_str() {
                    Some("weak") => Consistency::Weak,
                    Some("strong") => Consistency::Strong,
                    Some("very_strong") => Consistency::VeryStrong,
                    _ => return Err(bad("must be \"weak\", \"strong\" or \"very_strong\"")),
                })
            }
            "principles" => {
                let list = value
                    .as_array()
                    .and_then(|l| {
                        l.iter()
                            .map(|p| p.as_str().map(str::to_string))
                            .collect::<Option<Vec<String>>>()
                    })
                    .ok_or_else(|| bad("must be an array of strings"))?;
                out.principles = Some(check_principles(list)?);
            }
            _ => return Err(bad("is not a setting")),
        }
    }
    Ok(out)
}
