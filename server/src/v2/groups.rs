//! Consumer groups (`/v2/{app}/{queue}/groups/{group}...`): join,
//! heartbeat, leave, poll, commit and status.
//!
//! Every route runs on the leader of the queue's data group (other nodes
//! forward to it), because sessions and positions live in its memory
//! (`coordinator.rs`). Changes (join, leave, acknowledging a revocation,
//! commit) are Raft commands; heartbeats and polls are not.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::{FromRequest, FromRequestParts, Path, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use sluice_engine::{Offset, Timestamp};
use sluice_raft::data::command::{DataCommand, DataReply, Refusal};
use sluice_raft::data::consumer::{
    ConsumerCommand, ConsumerReply, GROUP_NAME_BYTES_MAX, GroupView, MemberId, MemberView,
    SESSION_TIMEOUT_MS_MAX, SESSION_TIMEOUT_MS_MIN, StartPolicy,
};
use sluice_raft::meta::command::{Consistency, Queue};
use sluice_raft::{PartitionId, PartitionKey};

use crate::http::AppState;
use crate::v1::lookup_queue;
use crate::v2::chunk::{self, ChunkError};
use crate::v2::coordinator::MemberKey;
use crate::v2::error::V2Error;
use crate::v2::fetch::ReadBounds;
use crate::v2::forward::{self, Place, Replay};
use crate::v2::message_frames;
use crate::v2::{Query, read_body};

/// Session timeout when a join names none.
pub const SESSION_TIMEOUT_MS_DEFAULT: u32 = 30_000;

/// A consumer-group request that reached the group's leader: an
/// extractor that runs the routes' shared prologue. In order: 404s, then
/// credentials (the queue's delete permission: consuming is what deleting
/// was in v1), then the group name, then the leader. A request that must
/// be served elsewhere is forwarded, and the leader's answer is the
/// rejection, so the handler never runs here.
pub struct AtLeader {
    queue: Arc<Queue>,
    group: String,
    member: Option<String>,
    term: u64,
    body: axum::body::Bytes,
    query: Option<String>,
    /// Whether the client asked for binary message frames.
    frames: bool,
}

/// The path parameters of the group routes.
#[derive(Deserialize)]
struct GroupPath {
    app: String,
    queue: String,
    group: String,
    #[serde(default)]
    member: Option<String>,
}

impl FromRequest<AppState> for AtLeader {
    type Rejection = Response;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, Response> {
        let (mut parts, body) = request.into_parts();
        let Path(path) = Path::<GroupPath>::from_request_parts(&mut parts, state)
            .await
            .map_err(|e| V2Error::bad("path", e.body_text()).into_response())?;
        let prologue = async {
            let (queue, caller) =
                lookup_queue(state, &path.app, &path.queue, &parts.headers).await?;
            caller?.may_delete(&queue)?;
            check_group_name(&path.group)?;
            let body = read_body(state, body).await?;
            let replay = Replay {
                method: &parts.method,
                uri: &parts.uri,
                headers: &parts.headers,
                body: body.clone(),
            };
            let place = forward::to_leader(state, queue.group, replay).await?;
            Ok::<_, V2Error>((queue, body, place))
        };
        match prologue.await.map_err(IntoResponse::into_response)? {
            (_, _, Place::Forwarded(response)) => Err(response),
            (queue, body, Place::Here(term)) => Ok(AtLeader {
                queue,
                group: path.group,
                member: path.member,
                term,
                body,
                query: parts.uri.query().map(str::to_string),
                frames: message_frames::wanted(&parts.headers),
            }),
        }
    }
}

impl AtLeader {
    /// The `{member}` path parameter, parsed.
    fn member(&self) -> Result<MemberId, V2Error> {
        parse_member(self.member.as_deref().unwrap_or_default())
    }
}

fn check_group_name(name: &str) -> Result<(), V2Error> {
    let ok = !name.is_empty()
        && name.len() <= GROUP_NAME_BYTES_MAX
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(V2Error::bad(
            "group",
            format!("group names are 1..={GROUP_NAME_BYTES_MAX} of A-Z a-z 0-9 _ - ."),
        ))
    }
}

/// `POST .../groups/{group}/members`: join. Body (optional):
/// `{"session_timeout_ms"?, "start"?: "earliest" | "latest"}`.
pub async fn join(State(state): State<AppState>, at: AtLeader) -> Result<Response, V2Error> {
    let fields = json_object(&at.body)?;
    let mut session_timeout_ms = SESSION_TIMEOUT_MS_DEFAULT;
    let mut start = StartPolicy::Earliest;
    for (field, value) in &fields {
        match field.as_str() {
            "session_timeout_ms" => {
                session_timeout_ms = value
                    .as_u64()
                    .filter(|t| {
                        (u64::from(SESSION_TIMEOUT_MS_MIN)..=u64::from(SESSION_TIMEOUT_MS_MAX))
                            .contains(t)
                    })
                    .ok_or_else(|| {
                        V2Error::bad(
                            field.clone(),
                            format!(
                                "session_timeout_ms must be in {SESSION_TIMEOUT_MS_MIN}..={SESSION_TIMEOUT_MS_MAX}"
                            ),
                        )
                    })? as u32
            }
            "start" => {
                start = match value.as_str() {
                    Some("earliest") => StartPolicy::Earliest,
                    Some("latest") => StartPolicy::Latest,
                    _ => {
                        return Err(V2Error::bad(
                            field.clone(),
                            "start must be \"earliest\" or \"latest\"",
                        ));
                    }
                }
            }
            other => return Err(V2Error::bad(other, format!("unknown field {other:?}"))),
        }
    }
    let member = MemberId(u128::from_le_bytes(
        crate::secrets::random_bytes::<16>().map_err(|e| V2Error::internal(e.to_string()))?,
    ));
    let reply = change(
        &state,
        &at,
        ConsumerCommand::Join {
            group: at.group.clone(),
            member,
            session_timeout_ms,
            start,
        },
    )
    .await?;
    let key = member_key(&at, member);
    state.coordinator.touch(at.queue.group, at.term, &key);
    let (epoch, partitions) = assignment_of(reply)?;
    let body = json!({
        "member_id": member_text(member),
        "member_epoch": epoch,
        "partitions": partitions,
        "session_timeout_ms": session_timeout_ms,
    });
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

/// `POST .../members/{member}/heartbeat`: keeps the session alive and
/// answers the member's current epoch and assignment. Body (optional):
/// `{"member_epoch": N}`, the epoch the member now works at; when that
/// epoch revoked partitions, the heartbeat releases them to others.
pub async fn heartbeat(State(state): State<AppState>, at: AtLeader) -> Result<Response, V2Error> {
    let member = at.member()?;
    let fields = json_object(&at.body)?;
    let acked = match fields.get("member_epoch") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            v.as_u64()
                .ok_or_else(|| V2Error::bad("member_epoch", "member_epoch must be an integer"))?,
        ),
    };
    if let Some(unknown) = fields.keys().find(|k| *k != "member_epoch") {
        return Err(V2Error::bad(
            unknown.clone(),
            format!("unknown field {unknown:?}"),
        ));
    }
    let view = member_view(&state, &at, member).await?;
    state
        .coordinator
        .touch(at.queue.group, at.term, &member_key(&at, member));
    let (epoch, partitions) = if view.revoking && acked == Some(view.epoch) {
        let reply = change(
            &state,
            &at,
            ConsumerCommand::Ack {
                group: at.group.clone(),
                member,
                epoch: view.epoch,
            },
        )
        .await?;
        assignment_of(reply)?
    } else {
        (view.epoch, view.partitions.iter().map(|p| p.0).collect())
    };
    Ok(Json(json!({
        "member_id": member_text(member),
        "member_epoch": epoch,
        "partitions": partitions,
    }))
    .into_response())
}

/// `DELETE .../members/{member}`: leave; the member's partitions are
/// reassigned at once (204).
pub async fn leave(State(state): State<AppState>, at: AtLeader) -> Result<Response, V2Error> {
    let member = at.member()?;
    member_view(&state, &at, member).await?;
    change(
        &state,
        &at,
        ConsumerCommand::Leave {
            group: at.group.clone(),
            member,
        },
    )
    .await?;
    state
        .coordinator
        .forget(at.queue.group, at.term, &member_key(&at, member));
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `GET .../groups/{group}/poll?member=M&max_messages=N&max_bytes=B
/// &wait_ms=W`: messages from the member's partitions, from its
/// positions; waits for data when there is none. Also keeps the session
/// alive.
pub async fn poll(State(state): State<AppState>, at: AtLeader) -> Result<Response, V2Error> {
    let query = Query::parse(at.query.clone())?;
    let member = parse_member(
        query
            .get("member")
            .ok_or_else(|| V2Error::bad("member", "member is required"))?,
    )?;
    let bounds = ReadBounds::from_query(&query, state.limits.wait_ms_max)?;
    let key = member_key(&at, member);
    let data_group = at.queue.group;
    let node = state.cluster.node();
    let mut deadline = Instant::now() + bounds.wait;
    loop {
        state.coordinator.touch(data_group, at.term, &key);
        let applied = node.applied_index(data_group).unwrap_or(0);
        let polled = state
            .cluster
            .data(data_group, Consistency::Weak, |data| {
                let view = data
                    .consumers()
                    .view(at.queue.id, &at.group)
                    .ok_or(Polled::NoGroup)?;
                let me = view
                    .members
                    .iter()
                    .find(|m| m.id == member)
                    .ok_or(Polled::NoMember)?;
                let partition = |p: PartitionId| {
                    data.partition(PartitionKey {
                        queue: at.queue.id,
                        partition: p,
                    })
                };
                let positions =
                    state
                        .coordinator
                        .positions(data_group, at.term, &key, &me.partitions, |p| {
                            start_offset(&view, p, partition(p).map(|p| p.log()))
                        });
                let now = Timestamp::now();
                let mut messages = Vec::new();
                let mut delivered = BTreeMap::new();
                let mut delivered_bytes = 0u64;
                let (mut left_messages, mut left_bytes) = (bounds.max_messages, bounds.max_bytes);
                for (&p, &at_offset) in &positions {
                    if left_messages == 0 || left_bytes == 0 {
                        break;
                    }
                    let Some(part) = partition(p) else { continue };
                    let partition_key = PartitionKey {
                        queue: at.queue.id,
                        partition: p,
                    };
                    // A damaged copy here serves nothing: this node hands
                    // the group's leadership (and the polls) to a peer.
                    if node.fences().is_fenced(data_group, partition_key) {
                        continue;
                    }
                    // A commit past the end (or a truncation) is clamped.
                    let from = at_offset.min(part.log().next_offset());
                    let chunk = match chunk::read(part, Some(from), left_messages, left_bytes, now)
                    {
                        Ok(chunk) => chunk,
                        Err(ChunkError::PastEnd { .. }) => continue,
                        Err(ChunkError::Storage(e))
                            if node.report_damage(data_group, partition_key, &e) =>
                        {
                            continue;
                        }
                        Err(ChunkError::Storage(e)) => return Err(Polled::Storage(e.to_string())),
                    };
                    left_messages -= chunk.records.len();
                    let bytes: usize = chunk.records.iter().map(|r| r.payload.len()).sum();
                    left_bytes = left_bytes.saturating_sub(bytes);
                    delivered_bytes += bytes as u64;
                    messages.extend(chunk.records.into_iter().map(|r| (p.0, r)));
                    if chunk.next_offset != at_offset {
                        delivered.insert(p, chunk.next_offset);
                    }
                }
                Ok((
                    me.epoch,
                    me.partitions.clone(),
                    messages,
                    delivered,
                    delivered_bytes,
                ))
            })
            .await?;
        let (epoch, partitions, messages, delivered, bytes) = match polled.value {
            Ok(found) => found,
            Err(Polled::NoGroup | Polled::NoMember) => return Err(unknown_member(member)),
            Err(Polled::Storage(e)) => {
                return Err(V2Error::internal(format!("reading a partition: {e}")));
            }
        };
        state
            .coordinator
            .advance(data_group, at.term, &key, &delivered);
        let remaining = deadline.saturating_duration_since(Instant::now());
        if !messages.is_empty() || remaining.is_zero() {
            state.metrics.consumed(messages.len() as u64, bytes);
            let partitions: Vec<u32> = partitions.iter().map(|p| p.0).collect();
            if at.frames {
                let listed: Vec<String> = partitions.iter().map(u32::to_string).collect();
                let fields = [
                    ("x-sluice-member-epoch", epoch.to_string()),
                    ("x-sluice-partitions", listed.join(",")),
                ];
                let records = messages.iter().map(|(p, r)| (*p, r));
                return message_frames::response(records, &fields);
            }
            let messages: Vec<Value> = messages
                .iter()
                .map(|(p, r)| chunk::message_json(r, *p))
                .collect();
            return Ok(Json(json!({
                "member_epoch": epoch,
                "partitions": partitions,
                "messages": messages,
            }))
            .into_response());
        }
        // Wake on the next apply of the group (new data or a new
        // assignment), at most every second to keep the session alive.
        let nap = remaining.min(Duration::from_secs(1));
        if !node.wait_applied_past(data_group, applied, nap).await && nap == remaining {
            deadline = Instant::now();
        }
    }
}

/// Why a poll found nothing to read.
enum Polled {
    NoGroup,
    NoMember,
    Storage(String),
}

/// `PUT .../groups/{group}/offsets`: commit `{"member_id", "member_epoch",
/// "offsets": {"partition": next_offset}}`; 409 with the member's current
/// assignment when it does not own them at that epoch.
pub async fn commit(State(state): State<AppState>, at: AtLeader) -> Result<Response, V2Error> {
    let fields = json_object(&at.body)?;
    if let Some(unknown) = fields
        .keys()
        .find(|k| !matches!(k.as_str(), "member_id" | "member_epoch" | "offsets"))
    {
        return Err(V2Error::bad(
            unknown.clone(),
            format!("unknown field {unknown:?}"),
        ));
    }
    let member = parse_member(
        fields
            .get("member_id")
            .and_then(Value::as_str)
            .ok_or_else(|| V2Error::bad("member_id", "member_id (a string) is required"))?,
    )?;
    let epoch = fields
        .get("member_epoch")
        .and_then(Value::as_u64)
        .ok_or_else(|| V2Error::bad("member_epoch", "member_epoch (an integer) is required"))?;
    let partitions = at.queue.settings.partitions;
    let offsets = match fields.get("offsets") {
        Some(Value::Object(map)) if !map.is_empty() => map
            .iter()
            .map(|(p, o)| {
                let p = crate::v2::partition_in(p, partitions)
                    .map_err(|e| V2Error::bad("offsets", e.message))?;
                let o = o.as_u64().ok_or_else(|| {
                    V2Error::bad("offsets", "offsets must be non-negative integers")
                })?;
                Ok((p, Offset(o)))
            })
            .collect::<Result<Vec<_>, V2Error>>()?,
        _ => {
            return Err(V2Error::bad(
                "offsets",
                "offsets must be a non-empty object of partition: next offset",
            ));
        }
    };
    let command = ConsumerCommand::Commit {
        group: at.group.clone(),
        member,
        epoch,
        offsets: offsets.clone(),
    };
    match change(&state, &at, command).await {
        Ok(_) => {}
        Err(e) if e.status == StatusCode::CONFLICT => {
            // Fenced: answer the member's current assignment.
            let current = member_view(&state, &at, member).await.ok();
            let mut e = e;
            if let Some(view) = current {
                let partitions: Vec<u32> = view.partitions.iter().map(|p| p.0).collect();
                e = e
                    .with("member_epoch", view.epoch)
                    .with("partitions", json!(partitions));
            }
            return Err(e);
        }
        Err(e) => return Err(e),
    }
    state
        .coordinator
        .touch(at.queue.group, at.term, &member_key(&at, member));
    let committed: Map<String, Value> = offsets
        .iter()
        .map(|(p, o)| (p.0.to_string(), json!(o.0)))
        .collect();
    Ok(Json(json!({ "committed": committed })).into_response())
}

/// `GET .../groups/{group}`: members, assignment, committed offsets, end
/// offsets and lag per partition.
pub async fn status(State(state): State<AppState>, at: AtLeader) -> Result<Response, V2Error> {
    let body = group_status(&state, &at.queue, &at.group, Consistency::Weak)
        .await?
        .ok_or_else(|| {
            V2Error::new(
                StatusCode::NOT_FOUND,
                "NoSuchGroup",
                format!("consumer group {:?} does not exist", at.group),
            )
        })?;
    Ok(Json(body).into_response())
}

/// A group's status as JSON (`None` when it does not exist), read with
/// `consistency`: shared with the admin API.
pub async fn group_status(
    state: &AppState,
    queue: &Queue,
    group: &str,
    consistency: Consistency,
) -> Result<Option<Value>, V2Error> {
    let led = state
        .cluster
        .data(queue.group, consistency, |data| {
            let view = data.consumers().view(queue.id, group)?;
            let members: Vec<Value> = view
                .members
                .iter()
                .map(|m| {
                    json!({
                        "member_id": member_text(m.id),
                        "member_epoch": m.epoch,
                        "partitions": m.partitions.iter().map(|p| p.0).collect::<Vec<_>>(),
                        "session_timeout_ms": m.session_timeout_ms,
                    })
                })
                .collect();
            let mut total_lag = 0u64;
            let partitions: Vec<Value> = (0..queue.settings.partitions)
                .map(|p| {
                    let p = PartitionId(p);
                    let end = data
                        .partition(PartitionKey {
                            queue: queue.id,
                            partition: p,
                        })
                        .map_or(0, |part| part.log().next_offset().0);
                    let committed = view.committed.get(&p).map(|o| o.0);
                    let lag = end.saturating_sub(committed.unwrap_or(0));
                    total_lag += lag;
                    let owner = view
                        .members
                        .iter()
                        .find(|m| m.partitions.contains(&p))
                        .map(|m| member_text(m.id));
                    json!({
                        "partition": p.0,
                        "owner": owner,
                        "committed": committed,
                        "end_offset": end,
                        "lag": lag,
                    })
                })
                .collect();
            Some(json!({
                "group": group,
                "start": match view.start {
                    StartPolicy::Earliest => "earliest",
                    StartPolicy::Latest => "latest",
                },
                "members": members,
                "partitions": partitions,
                "lag": total_lag,
            }))
        })
        .await?;
    Ok(led.value)
}

/// Where a newly assigned partition starts: the committed offset, else
/// the group's start policy.
fn start_offset(view: &GroupView, p: PartitionId, log: Option<&sluice_engine::Log>) -> Offset {
    match (view.committed.get(&p), log) {
        (Some(committed), _) => *committed,
        (None, Some(log)) => match view.start {
            StartPolicy::Earliest => log.start_offset(),
            StartPolicy::Latest => log.next_offset(),
        },
        (None, None) => Offset(0),
    }
}

/// Proposes a consumer-group change; a refusal is 409 (404 when the group
/// or member is unknown).
async fn change(
    state: &AppState,
    at: &AtLeader,
    command: ConsumerCommand,
) -> Result<ConsumerReply, V2Error> {
    let led = state
        .cluster
        .propose_data(
            at.queue.group,
            DataCommand::Consumer {
                queue: at.queue.id,
                command,
            },
        )
        .await?;
    match led.value {
        DataReply::Consumer(reply) => Ok(reply),
        DataReply::Refused(Refusal::Consumer(reason)) => {
            Err(V2Error::new(StatusCode::CONFLICT, "Fenced", reason))
        }
        DataReply::Refused(Refusal::UnknownQueue(_)) => Err(V2Error::new(
            StatusCode::NOT_FOUND,
            "InvalidQueueName",
            "the queue was deleted",
        )),
        other => Err(V2Error::internal(format!("unexpected reply {other:?}"))),
    }
}

/// The member as the leader's state has it (404 when it left or expired).
async fn member_view(
    state: &AppState,
    at: &AtLeader,
    member: MemberId,
) -> Result<MemberView, V2Error> {
    let led = state
        .cluster
        .data(at.queue.group, Consistency::Weak, |data| {
            data.consumers()
                .view(at.queue.id, &at.group)
                .and_then(|v| v.members.into_iter().find(|m| m.id == member))
        })
        .await?;
    led.value.ok_or_else(|| unknown_member(member))
}

fn unknown_member(member: MemberId) -> V2Error {
    V2Error::new(
        StatusCode::NOT_FOUND,
        "UnknownMember",
        format!(
            "member {} is not in the group (it left, or its session expired): join again",
            member_text(member)
        ),
    )
}

fn assignment_of(reply: ConsumerReply) -> Result<(u64, Vec<u32>), V2Error> {
    match reply {
        ConsumerReply::Assignment {
            epoch, partitions, ..
        } => Ok((epoch, partitions.iter().map(|p| p.0).collect())),
        other => Err(V2Error::internal(format!("unexpected reply {other:?}"))),
    }
}

fn member_key(at: &AtLeader, member: MemberId) -> MemberKey {
    MemberKey {
        queue: at.queue.id,
        group: at.group.clone(),
        member,
    }
}

/// A member id as 32 lowercase hex digits.
pub fn member_text(member: MemberId) -> String {
    format!("{:032x}", member.0)
}

fn parse_member(text: &str) -> Result<MemberId, V2Error> {
    (text.len() == 32 && text.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| u128::from_str_radix(text, 16).ok())
        .flatten()
        .map(MemberId)
        .ok_or_else(|| V2Error::bad("member", "a member id is 32 hex digits"))
}

/// An optional JSON object body (empty means `{}`).
fn json_object(bytes: &[u8]) -> Result<Map<String, Value>, V2Error> {
    if bytes.is_empty() {
        return Ok(Map::new());
    }
    match serde_json::from_slice(bytes) {
        Ok(Value::Object(fields)) => Ok(fields),
        Ok(_) => Err(V2Error::bad("body", "the body must be a JSON object")),
        Err(e) => Err(V2Error::bad("body", format!("invalid JSON: {e}"))),
    }
}
