//! Queuey v1 queue routes: list and create (`/v1/{app}`), update and
//! delete (`/v1/{app}/{queue}`).
//!
//! A queue is created in the meta group first (it gets its id and data
//! group there), then in its data group (the partition logs). Deleting
//! goes the same way, so a deleted queue is gone for readers at once.

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use sluice_engine::Timestamp;
use sluice_raft::data::command::{DataCommand, DataReply};
use sluice_raft::meta::command::{
    Consistency, MetaCommand, MetaRefusal, MetaReply, Queue, QueueSettings, QueueType,
};

use crate::http::AppState;
use crate::v1::auth::Credentials;
use crate::v1::error::V1Error;
use crate::v1::messages;
use crate::v1::params::Params;
use crate::v1::{lookup, lookup_queue, read_body};

/// Most partitions a v1 queue may have.
pub const PARTITIONS_MAX: u64 = 200;
/// Most queues one list answers.
pub const LIST_LIMIT_MAX: u64 = 10_000;
/// Most principles a queue may list.
const PRINCIPLES_MAX: usize = 100;

/// `GET /v1/{app}`: the application's queues, by name.
pub async fn list(
    State(state): State<AppState>,
    Path(app): Path<String>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Response, V1Error> {
    let credentials = Credentials::from_headers(&headers);
    let found = lookup(&state, &app, None, &credentials).await?;
    found.caller?.require_app(&app)?;
    let query = Params::parse(query.unwrap_or_default().as_bytes())?;
    let limit = query
        .int_in("limit", 1, LIST_LIMIT_MAX)?
        .unwrap_or(LIST_LIMIT_MAX);
    let from = query.get("offset").map(str::to_string);
    let (details, include_count) = (query.flag("details"), query.flag("include_count"));
    let queues: Vec<Queue> = state
        .cluster
        .meta(|m| {
            m.queues_of(&app, from.as_deref(), limit as usize)
                .into_iter()
                .cloned()
                .collect()
        })
        .await?;
    let mut out = Vec::with_capacity(queues.len());
    for q in queues {
        let mut entry = json!({"queue_name": q.name});
        if details {
            entry["partitions"] = json!(q.settings.partitions);
            entry["created"] = json!(q.created_at.0 / Timestamp::TICKS_PER_SEC);
            entry["type"] = json!(type_name(q.settings.queue_type));
            entry["consistency"] = json!(consistency_name(q.settings.consistency));
            entry["principles"] = json!(q.settings.principles);
        }
        if include_count {
            entry["count"] = json!(messages::live_count(&state, &q).await?);
        }
        out.push(entry);
    }
    Ok(Json(json!({"status": "ok", "queues": out})).into_response())
}

/// `POST /v1/{app}`: creates a queue (201).
pub async fn create(
    State(state): State<AppState>,
    Path(app): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, V1Error> {
    let credentials = Credentials::from_headers(&headers);
    let found = lookup(&state, &app, None, &credentials).await?;
    found.caller?.require_app(&app)?;
    let form = Params::parse(&read_body(&state, body).await?)?;
    let name = match form.get("queue_name") {
        Some(name) => check_queue_name(name)?,
        None => uuid4_hex()?,
    };
    let partitions = form.int_in("partitions", 1, PARTITIONS_MAX)?.unwrap_or(1) as u32;
    let settings = QueueSettings {
        partitions,
        queue_type: parse_type(&form)?.unwrap_or_default(),
        consistency: parse_consistency(&form)?.unwrap_or_default(),
        principles: parse_principles(&form)?.unwrap_or_default(),
    };
    let queue = create_queue(&state, &app, &name, settings).await?;
    let body = json!({
        "status": "ok",
        "queue_name": queue.name,
        "partitions": queue.settings.partitions,
        "type": type_name(queue.settings.queue_type),
        "consistency": consistency_name(queue.settings.consistency),
        "principles": queue.settings.principles,
    });
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

/// Creates a queue in the meta group, then its partitions in its data
/// group (409 when the name is taken).
pub async fn create_queue(
    state: &AppState,
    app: &str,
    name: &str,
    settings: QueueSettings,
) -> Result<Queue, V1Error> {
    state.disk.check(0)?;
    let pinned_group = pinned_group(state, &settings.principles);
    let reply = state
        .cluster
        .propose_meta(MetaCommand::CreateQueue {
            app: app.to_string(),
            name: name.to_string(),
            settings,
            pinned_group,
        })
        .await?;
    let queue = match reply {
        MetaReply::Queue(q) => q,
        MetaReply::Refused(MetaRefusal::QueueExists(_)) => {
            return Err(V1Error::new(
                StatusCode::CONFLICT,
                "queue_name",
                format!("Queue \"{name}\" already exists."),
            ));
        }
        other => return Err(refused(other)),
    };
    ensure_partitions(state, &queue).await?;
    Ok(queue)
}

/// The group of the token user a queue's principles name, when they name
/// exactly one (`user:<uid>`): the queue goes where that user's requests
/// are routed (`token.md`, "Placement").
fn pinned_group(state: &AppState, principles: &[String]) -> Option<sluice_raft::GroupId> {
    let mut users = principles.iter().filter_map(|p| p.strip_prefix("user:"));
    let (Some(uid), None) = (users.next(), users.next()) else {
        return None;
    };
    let uid: u64 = uid.parse().ok()?;
    let node = state
        .cluster
        .meta_local(|m| m.tokens().node_of_uid(uid).map(str::to_string))
        .ok()??;
    let group = node.rsplit_once("/g/")?.1.parse::<u32>().ok()?;
    Some(sluice_raft::GroupId(group))
}

/// `PUT /v1/{app}/{queue}`: changes the settings given; the rest keep
/// their values. Partitions only grow.
pub async fn update(
    State(state): State<AppState>,
    Path((app, name)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, V1Error> {
    let (current, caller) = lookup_queue(&state, &app, &name, &headers).await?;
    caller?.require_app(&app)?;
    let form = Params::parse(&read_body(&state, body).await?)?;
    let partitions = form
        .int_in("partitions", 1, PARTITIONS_MAX)?
        .map(|p| p as u32);
    if let Some(p) = partitions
        && p < current.settings.partitions
    {
        return Err(V1Error::bad(
            "partitions",
            format!(
                "{p} is less than the queue's {} partitions (partitions only grow)",
                current.settings.partitions
            ),
        ));
    }
    let command = MetaCommand::UpdateQueue {
        app: app.clone(),
        name: name.clone(),
        partitions,
        queue_type: parse_type(&form)?,
        consistency: parse_consistency(&form)?,
        principles: parse_principles(&form)?,
    };
    let queue = update_queue(&state, command).await?;
    let body = json!({
        "status": "ok",
        "queue_name": queue.name,
        "partitions": queue.settings.partitions,
        "created": queue.created_at.0 / Timestamp::TICKS_PER_SEC,
        "principles": queue.settings.principles,
        "type": type_name(queue.settings.queue_type),
    });
    Ok(Json(body).into_response())
}

/// Applies an `UpdateQueue` command, then grows the data group's
/// partitions to match.
pub async fn update_queue(state: &AppState, command: MetaCommand) -> Result<Queue, V1Error> {
    let name = match &command {
        MetaCommand::UpdateQueue { name, .. } => name.clone(),
        _ => return Err(refused(MetaReply::Done)),
    };
    let queue = match state.cluster.propose_meta(command).await? {
        MetaReply::Queue(q) => q,
        MetaReply::Refused(MetaRefusal::UnknownQueue(_)) => return Err(V1Error::no_queue(&name)),
        other => return Err(refused(other)),
    };
    ensure_partitions(state, &queue).await?;
    Ok(queue)
}

/// `DELETE /v1/{app}/{queue}`: deletes the queue and its messages.
pub async fn delete(
    State(state): State<AppState>,
    Path((app, name)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, V1Error> {
    let (_, caller) = lookup_queue(&state, &app, &name, &headers).await?;
    caller?.require_app(&app)?;
    delete_queue(&state, &app, &name).await?;
    Ok(Json(json!({"status": "ok"})).into_response())
}

/// Deletes a queue from the meta group (readers stop seeing it at once),
/// then drops its partitions in its data group.
pub async fn delete_queue(state: &AppState, app: &str, name: &str) -> Result<(), V1Error> {
    let reply = state
        .cluster
        .propose_meta(MetaCommand::DeleteQueue {
            app: app.to_string(),
            name: name.to_string(),
        })
        .await?;
    let queue = match reply {
        MetaReply::Queue(q) => q,
        MetaReply::Refused(MetaRefusal::UnknownQueue(_)) => return Err(V1Error::no_queue(name)),
        other => return Err(refused(other)),
    };
    let dropped = state
        .cluster
        .propose_data(queue.group, DataCommand::DropQueue { queue: queue.id })
        .await?;
    if let DataReply::Refused(r) = dropped.value {
        tracing::warn!(queue = %name, refusal = %r, "data group refused to drop a deleted queue");
    }
    Ok(())
}

/// Makes the queue's data group hold all its partitions (creating them,
/// or growing them after an update). Idempotent: it also repairs a queue
/// whose data-group step was cut short.
pub async fn ensure_partitions(state: &AppState, queue: &Queue) -> Result<(), V1Error> {
    let reply = state
        .cluster
        .propose_data(
            queue.group,
            DataCommand::CreateQueue {
                queue: queue.id,
                partitions: queue.settings.partitions,
            },
        )
        .await?;
    match reply.value {
        DataReply::Done => Ok(()),
        other => Err(V1Error::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalError",
            format!("data group {} answered {other:?}", queue.group.0),
        )),
    }
}

/// A meta refusal the handler did not expect, as a 400 naming the field.
fn refused(reply: MetaReply) -> V1Error {
    match reply {
        MetaReply::Refused(MetaRefusal::Invalid { field, reason }) => V1Error::bad(field, reason),
        MetaReply::Refused(MetaRefusal::PartitionsShrink(p)) => V1Error::bad(
            "partitions",
            format!("partitions only grow (the queue has {p})"),
        ),
        MetaReply::Refused(MetaRefusal::UnknownApp(app)) => V1Error::no_app(&app),
        MetaReply::Refused(MetaRefusal::Full(why)) => {
            V1Error::new(StatusCode::INSUFFICIENT_STORAGE, "Full", why)
        }
        other => V1Error::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalError",
            format!("unexpected meta reply: {other:?}"),
        ),
    }
}

/// The name if it is a valid queue name (400 otherwise).
pub fn check_queue_name(name: &str) -> Result<String, V1Error> {
    if sluice_raft::meta::machine::valid_name(name) {
        Ok(name.to_string())
    } else {
        Err(V1Error::bad(
            "queue_name",
            "Queue names are 1 to 50 characters of A-Z, a-z, 0-9, '_' and '-'.",
        ))
    }
}

/// A new queue name: a random UUID version 4 as 32 lowercase hex digits.
pub fn uuid4_hex() -> Result<String, V1Error> {
    let mut b = crate::secrets::random_bytes::<16>().map_err(|e| {
        V1Error::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalError",
            e.to_string(),
        )
    })?;
    b[6] = (b[6] & 0x0F) | 0x40;
    b[8] = (b[8] & 0x3F) | 0x80;
    Ok(sluice_token::encoding::hex(&b))
}

fn parse_type(form: &Params) -> Result<Option<QueueType>, V1Error> {
    form.get("type")
        .map(|t| match t {
            "user" => Ok(QueueType::User),
            "public" => Ok(QueueType::Public),
            _ => Err(V1Error::bad("type", "Must be one of: user, public.")),
        })
        .transpose()
}

fn parse_consistency(form: &Params) -> Result<Option<Consistency>, V1Error> {
    form.get("consistency")
        .map(|c| match c {
            "weak" => Ok(Consistency::Weak),
            "strong" => Ok(Consistency::Strong),
            "very_strong" => Ok(Consistency::VeryStrong),
            _ => Err(V1Error::bad(
                "consistency",
                "Must be one of: weak, strong, very_strong.",
            )),
        })
        .transpose()
}

/// Principles: a comma list of `bid:<local>@<domain>.<tld>`, `app:<name>`
/// or `user:<uid>` (word characters as Queuey's `\w`, ASCII).
fn parse_principles(form: &Params) -> Result<Option<Vec<String>>, V1Error> {
    let Some(text) = form.get("principles") else {
        return Ok(None);
    };
    let list: Vec<String> = text
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(str::to_string)
        .collect();
    check_principles(list).map(Some)
}

/// Checks a principle list: at most `PRINCIPLES_MAX`, each valid.
pub fn check_principles(list: Vec<String>) -> Result<Vec<String>, V1Error> {
    if list.len() > PRINCIPLES_MAX {
        return Err(V1Error::bad(
            "principles",
            format!("at most {PRINCIPLES_MAX} principles"),
        ));
    }
    if let Some(bad) = list.iter().find(|p| !valid_principle(p)) {
        let shown: String = bad.chars().take(80).collect();
        return Err(V1Error::bad(
            "principles",
            format!(
                "\"{shown}\" is not a valid principle (bid:user@host.tld, app:name or user:uid)"
            ),
        ));
    }
    Ok(list)
}

fn word(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// `^(bid:\w+@\w+\.\w+|app:\w+|user:\w+)$`. A bid domain's last dot splits
/// it; `\w+` before it cannot hold a dot, so there is exactly one.
fn valid_principle(p: &str) -> bool {
    if let Some(rest) = p.strip_prefix("bid:") {
        let Some((local, domain)) = rest.split_once('@') else {
            return false;
        };
        let Some((host, tld)) = domain.split_once('.') else {
            return false;
        };
        return word(local) && word(host) && word(tld);
    }
    p.strip_prefix("app:")
        .or_else(|| p.strip_prefix("user:"))
        .is_some_and(word)
}

/// The v1 name of a queue type.
pub fn type_name(t: QueueType) -> &'static str {
    match t {
        QueueType::User => "user",
        QueueType::Public => "public",
    }
}

/// The v1 name of a consistency level.
pub fn consistency_name(c: Consistency) -> &'static str {
    match c {
        Consistency::Weak => "weak",
        Consistency::Strong => "strong",
        Consistency::VeryStrong => "very_strong",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn principles_follow_queueys_pattern() {
        for ok in ["bid:bob@example.com", "app:notes", "user:42", "bid:a_1@b.c"] {
            assert!(valid_principle(ok), "{ok}");
        }
        for bad in [
            "bid:bob@example",
            "bid:bob@ex.am.ple",
            "bid:@a.b",
            "app:",
            "app:a-b",
            "user:",
            "x:y",
            "app:a b",
            "bid:bob@éx.com",
        ] {
            assert!(!valid_principle(bad), "{bad}");
        }
    }
}
