//! `POST /v2/{app}/{queue}/messages`: produce, in JSON or the binary
//! framing, with idempotent producers.
//!
//! The whole request is checked before anything is proposed: one bad
//! message is a 400 naming it by index and nothing is written. The answer
//! is sent after the data group has committed (majority, fsynced) and
//! applied the batch.

use std::sync::atomic::{AtomicU64, Ordering};

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use sluice_raft::data::command::{DataCommand, DataReply, NewMessage, Produce, Refusal};
use sluice_raft::data::message_id::message_id;
use sluice_raft::data::partition::{KEY_HEADER, Partition};
use sluice_raft::{PartitionId, ProducerId};

use crate::http::AppState;
use crate::v1::lookup_queue;
use crate::v1::messages::{
    TTL_SECS_DEFAULT, TTL_SECS_MAX, header_text, is_json, propose_repairing, routed,
};
use crate::v1::params;
use crate::v2::batch::{self, Draft, KEY_BYTES_MAX};
use crate::v2::error::V2Error;
use crate::v2::{framing, read_body};

/// Spreads messages that name neither a partition nor a key over a
/// queue's partitions, round-robin across this node's requests.
static ROUND_ROBIN: AtomicU64 = AtomicU64::new(0);

/// `POST /v2/{app}/{queue}/messages`.
/// Most such requests never reach this handler: `hot_route.rs` serves
/// them before the router, through [`produce_parts`].
pub async fn produce(
    State(state): State<AppState>,
    Path((app, name)): Path<(String, String)>,
    request: Request,
) -> Result<Response, V2Error> {
    // The request taken whole: a `HeaderMap` extractor clones every header.
    let (parts, body) = request.into_parts();
    produce_parts(&state, &app, &name, &parts.headers, body).await
}

/// The produce of [`produce`], from the request's parts.
pub async fn produce_parts(
    state: &AppState,
    app: &str,
    name: &str,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, V2Error> {
    let (queue, caller) = lookup_queue(state, app, name, headers).await?;
    caller?.require_app(app)?;
    let bytes = read_body(state, body).await?;
    let content_type = header_text(headers, &header::CONTENT_TYPE).unwrap_or_default();
    let request = if is_json(&content_type) {
        batch::from_json(&bytes)?
    } else if media_type(&content_type).eq_ignore_ascii_case(framing::MEDIA_TYPE) {
        framing::decode(&bytes).map_err(|e| match e.index {
            Some(i) => V2Error::bad_message(i, e.reason),
            None => V2Error::bad("body", e.reason),
        })?
    } else {
        return Err(V2Error::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UnsupportedMediaType",
            format!(
                "send application/json or {}, not {content_type:?}",
                framing::MEDIA_TYPE
            ),
        ));
    };
    let partitions = queue.settings.partitions;
    let messages = checked(request.messages, request.producer_id.is_some(), partitions)?;
    let order: Vec<PartitionId> = messages.iter().map(|m| m.partition).collect();
    let body_bytes: u64 = messages.iter().map(|m| m.body.len() as u64).sum();
    state.disk.check(body_bytes)?;
    let command = DataCommand::Produce(Produce {
        queue: queue.id,
        producer: request.producer_id.map(ProducerId),
        messages,
    });
    let led = propose_repairing(state, &queue, command).await?;
    let produced = match &led.value {
        DataReply::Produced(p) => p,
        DataReply::Refused(refusal) => return Err(refused(refusal)),
        other => return Err(V2Error::internal(format!("unexpected reply {other:?}"))),
    };
    let placements = produced
        .placements(&order)
        .ok_or_else(|| V2Error::internal("the data group's reply does not match the request"))?;
    let out: Vec<Placed> = placements
        .iter()
        .map(|p| Placed {
            partition: p.partition.0,
            offset: p.offset.0,
            id: params::format_id(&message_id(p.timestamp, queue.group, p.partition)),
        })
        .collect();
    state.metrics.produced(out.len() as u64, body_bytes);
    let body = Json(Produced { messages: out });
    Ok(routed((StatusCode::CREATED, body).into_response(), &led))
}

/// The answer to a produce (docs/api.md): typed, not `json!`, because a
/// batch of 100 built a map per message and serialized it again.
#[derive(serde::Serialize)]
struct Produced {
    messages: Vec<Placed>,
}

/// Where one message landed.
#[derive(serde::Serialize)]
struct Placed {
    partition: u32,
    offset: u64,
    id: String,
}

/// Checks every message and chooses its partition; the first bad one is
/// a 400 naming its index.
fn checked(
    drafts: Vec<Draft>,
    idempotent: bool,
    partitions: u32,
) -> Result<Vec<NewMessage>, V2Error> {
    let start = ROUND_ROBIN.fetch_add(drafts.len() as u64, Ordering::Relaxed);
    drafts
        .into_iter()
        .enumerate()
        .map(|(i, d)| {
            let bad = |why: String| V2Error::bad_message(i, why);
            let partition = match (d.partition, &d.key) {
                (Some(p), _) if p >= partitions => {
                    return Err(bad(format!(
                        "partition {p} does not exist: the queue has partitions 0..{partitions}"
                    )));
                }
                (Some(p), _) => p,
                (None, Some(key)) => key_partition(key, partitions),
                (None, None) => ((start + i as u64) % u64::from(partitions.max(1))) as u32,
            };
            let ttl_secs = d.ttl_secs.unwrap_or(TTL_SECS_DEFAULT);
            if !(1..=TTL_SECS_MAX).contains(&ttl_secs) {
                return Err(bad(format!("ttl must be 1..={TTL_SECS_MAX} seconds")));
            }
            match (idempotent, d.sequence) {
                (true, None) => {
                    return Err(bad("a producer_id needs a sequence on every message".into()));
                }
                (false, Some(_)) => return Err(bad("a sequence needs a producer_id".into())),
                _ => {}
            }
            let mut headers = d.headers;
            if let Some((name, _)) = headers.iter().find(|(name, _)| name.starts_with(':')) {
                return Err(bad(format!(
                    "header {name:?}: names starting with ':' are reserved"
                )));
            }
            if let Some(key) = d.key {
                if key.len() > KEY_BYTES_MAX {
                    return Err(bad(format!("the key is over {KEY_BYTES_MAX} bytes")));
                }
                headers.push((KEY_HEADER.to_string(), key));
            }
            let message = NewMessage {
                partition: PartitionId(partition),
                ttl_secs,
                sequence: d.sequence,
                content_type: None,
                headers,
                body: d.body,
            };
            Partition::check_message(&message).map_err(bad)?;
            Ok(message)
        })
        .collect()
}

/// The partition of a key: FNV-1a, stable across nodes, restarts and
/// versions (changing it would reorder keyed messages).
pub fn key_partition(key: &[u8], partitions: u32) -> u32 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in key {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (hash % u64::from(partitions.max(1))) as u32
}

/// A refused produce as its documented status.
fn refused(refusal: &Refusal) -> V2Error {
    match refusal {
        Refusal::OutOfSequence {
            partition,
            expected,
        } => V2Error::new(
            StatusCode::CONFLICT,
            "OutOfSequence",
            format!(
                "partition {} expects sequence {expected} from this producer",
                partition.0
            ),
        )
        .with("partition", partition.0)
        .with("expected_sequence", *expected),
        Refusal::BadSequence { index } => V2Error::bad_message(
            *index,
            "sequences must increase by 1 per partition within a request",
        ),
        Refusal::Invalid { index, reason } => V2Error::bad_message(*index, reason.clone()),
        Refusal::UnknownQueue(_) => V2Error::new(
            StatusCode::NOT_FOUND,
            "InvalidQueueName",
            "the queue was deleted",
        ),
        other => V2Error::internal(format!("refused: {other}")),
    }
}

/// The media type without parameters.
fn media_type(content_type: &str) -> &str {
    content_type.split(';').next().unwrap_or("").trim()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_map_to_stable_partitions() {
        // Pinned values: a change would move keyed messages between
        // partitions and break their order across an upgrade.
        assert_eq!(key_partition(b"", 7), (0xcbf2_9ce4_8422_2325u64 % 7) as u32);
        assert_eq!(key_partition(b"user-1", 1), 0);
        let spread: std::collections::BTreeSet<u32> = (0..100)
            .map(|i| key_partition(format!("k{i}").as_bytes(), 4))
            .collect();
        assert_eq!(spread.len(), 4);
    }

    #[test]
    fn checks_name_the_bad_message() {
        let ok = Draft {
            body: b"x".to_vec(),
            ..Draft::default()
        };
        let cases = [
            (
                Draft {
                    partition: Some(4),
                    ..ok.clone()
                },
                false,
            ),
            (
                Draft {
                    ttl_secs: Some(0),
                    ..ok.clone()
                },
                false,
            ),
            (
                Draft {
                    sequence: Some(1),
                    ..ok.clone()
                },
                false,
            ),
            (ok.clone(), true),
            (
                Draft {
                    headers: vec![(":key".into(), vec![])],
                    ..ok.clone()
                },
                false,
            ),
        ];
        for (bad, idempotent) in cases {
            let mut drafts = vec![ok.clone(); 3];
            if idempotent {
                for (i, d) in drafts.iter_mut().enumerate() {
                    d.sequence = Some(i as u64);
                }
            }
            drafts[2] = bad;
            let err = checked(drafts, idempotent, 4).expect_err("refused");
            assert_eq!(err.details["index"], 2, "{err:?}");
        }
        let keyed = Draft {
            key: Some(b"user-1".to_vec()),
            ..ok
        };
        let placed = checked(vec![keyed.clone(), keyed], false, 4).expect("valid");
        assert_eq!(placed[0].partition, placed[1].partition);
        assert_eq!(placed[0].partition.0, key_partition(b"user-1", 4));
    }
}
