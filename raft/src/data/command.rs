//! What a data group's log holds, and what applying it answers.
//!
//! A proposal is validated at the HTTP edge before it is proposed, and
//! again, cheaply, at apply: the queue may have been dropped or the
//! producer's window moved between the two. Apply never half-applies a
//! proposal: it is refused whole (a [`Refusal`]) or applied whole.
//!
//! Proposals are encoded with the glue codec (a version byte, then bincode),
//! so a change to these types needs a new codec version.

use serde::{Deserialize, Serialize};
use sluice_engine::{MessageId, Offset, Timestamp};

use crate::data::consumer::{ConsumerCommand, ConsumerReply};
use crate::data::producers::RunStart;
use crate::ids::{PartitionId, ProducerId, QueueId, RequestId};

/// One proposal to a data group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataProposal {
    /// Same for every retry of one client request.
    pub request_id: RequestId,
    /// The leader's clock when it proposed; apply derives every time from
    /// it (message timestamps, expiries, producer idleness).
    pub proposed_at: Timestamp,
    /// What to do.
    pub command: DataCommand,
}

impl DataProposal {
    /// The proposal as the bytes of a Raft command.
    pub fn encode(&self) -> std::io::Result<Vec<u8>> {
        crate::glue::codec::encode_vec_sized(self, self.command.size_hint())
    }

    /// The bytes `encode` gives for a `DataCommand::Batch` of proposals
    /// already encoded (each `encode`'s output), without encoding them
    /// again: bincode writes a struct's fields and a sequence's items one
    /// after another, so the batch is its own header, the count, and the
    /// items' bytes (each without its version byte).
    pub fn encode_batch(
        request_id: RequestId,
        proposed_at: Timestamp,
        encoded: &[Vec<u8>],
    ) -> std::io::Result<Vec<u8>> {
        let empty = DataProposal {
            request_id,
            proposed_at,
            command: DataCommand::Batch(Vec::new()),
        };
        let mut out = empty.encode()?;
        // The empty batch ends with its count, a one-byte zero.
        if out.pop() != Some(0) {
            return Err(std::io::Error::other("a batch header without its count"));
        }
        out.extend_from_slice(&crate::glue::codec::encode_len(encoded.len())?);
        let body: usize = encoded.iter().map(|e| e.len().saturating_sub(1)).sum();
        out.reserve(body);
        for one in encoded {
            match one.split_first() {
                Some((&crate::glue::codec::CODEC_VERSION, item)) => out.extend_from_slice(item),
                _ => {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidInput,
                        "a batch item not encoded by DataProposal::encode",
                    ));
                }
            }
        }
        Ok(out)
    }
}

impl DataReply {
    /// Decodes the bytes of a Raft reply.
    pub fn decode(bytes: &[u8]) -> std::io::Result<DataReply> {
        crate::glue::codec::decode(bytes)
    }
}

/// The commands of a data group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum DataCommand {
    /// Creates a queue's partition logs, or grows its partition count
    /// (partitions never shrink).
    CreateQueue {
        /// The meta group's id for the queue.
        queue: QueueId,
        /// Partitions it has from now on.
        partitions: u32,
    },
    /// Drops a queue and all its messages.
    DropQueue {
        /// The queue.
        queue: QueueId,
    },
    /// Appends new messages.
    Produce(Produce),
    /// Writes messages with given ids: replaces the body of a message that
    /// exists (a supersede record), creates one that does not.
    Put {
        /// The queue.
        queue: QueueId,
        /// The messages.
        messages: Vec<PutMessage>,
    },
    /// Deletes messages by id (tombstone records); absent ids are ignored.
    Delete {
        /// The queue.
        queue: QueueId,
        /// The messages.
        ids: Vec<(PartitionId, MessageId)>,
    },
    /// A consumer-group change.
    Consumer {
        /// The queue the group consumes.
        queue: QueueId,
        /// The change.
        command: ConsumerCommand,
    },
    /// Independent proposals coalesced into one entry by the node that
    /// received them (one Raft round for many client requests). Each is
    /// applied, or refused, on its own, in order, as if proposed alone;
    /// batches do not nest. Appended last: variant numbers are the
    /// encoding.
    Batch(Vec<DataProposal>),
}

/// New messages for one queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Produce {
    /// The queue.
    pub queue: QueueId,
    /// An idempotent producer: then every message has a `sequence`.
    pub producer: Option<ProducerId>,
    /// The messages, in request order.
    pub messages: Vec<NewMessage>,
}

impl DataCommand {
    /// About how many bytes the command encodes to: its message bodies,
    /// the larger part of a produce, and a margin for the rest.
    fn size_hint(&self) -> usize {
        const MARGIN_BYTES: usize = 64;
        match self {
            DataCommand::Produce(p) => p
                .messages
                .iter()
                .map(|m| m.body.len() + MARGIN_BYTES)
                .sum::<usize>()
                .saturating_add(MARGIN_BYTES),
            _ => MARGIN_BYTES,
        }
    }
}

/// One new message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewMessage {
    /// Its partition (chosen at the edge).
    pub partition: PartitionId,
    /// Seconds it lives after its timestamp.
    pub ttl_secs: u64,
    /// The idempotent producer's sequence number.
    pub sequence: Option<u64>,
    /// The content type, when the client gave one.
    pub content_type: Option<String>,
    /// Client headers (names never start with `:`, which is reserved).
    pub headers: Vec<(String, Vec<u8>)>,
    /// The body.
    #[serde(with = "serde_bytes")]
    pub body: Vec<u8>,
}

/// One message written by id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PutMessage {
    /// Its partition.
    pub partition: PartitionId,
    /// Its id (a version 1 UUID: its time becomes the timestamp).
    pub id: MessageId,
    /// Seconds it lives from the proposal's time.
    pub ttl_secs: u64,
    /// The content type, when the client gave one.
    pub content_type: Option<String>,
    /// The body.
    #[serde(with = "serde_bytes")]
    pub body: Vec<u8>,
}

/// What applying a proposal answered. Kept in the request window, so a
/// retried proposal gets the same answer: kept small.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum DataReply {
    /// Done (create, drop, put, delete).
    Done,
    /// Messages were appended (or had been, for a duplicate).
    Produced(Produced),
    /// A consumer-group change's answer.
    Consumer(ConsumerReply),
    /// Refused whole; nothing was written.
    Refused(Refusal),
    /// A batch's replies, one per proposal, in order.
    Batch(Vec<DataReply>),
}

/// Where a produce request's messages went: one run per partition, in the
/// order partitions first appear in the request. Within a run, offsets and
/// timestamps advance by one per message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Produced {
    /// (partition, start, message count) per partition.
    pub runs: Vec<(PartitionId, RunStart, u64)>,
}

/// Where one produced message landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placement {
    /// Its partition.
    pub partition: PartitionId,
    /// Its offset.
    pub offset: Offset,
    /// Its timestamp (its id follows from it).
    pub timestamp: Timestamp,
}

impl Produced {
    /// Each message's placement, in request order, given the partition of
    /// each message in the request. `None` when the partitions do not match
    /// the runs (a reply to another request).
    pub fn placements(&self, partitions: &[PartitionId]) -> Option<Vec<Placement>> {
        let mut used = vec![0u64; self.runs.len()];
        let mut out = Vec::with_capacity(partitions.len());
        for &p in partitions {
            let i = self.runs.iter().position(|(rp, _, _)| *rp == p)?;
            let (_, start, count) = self.runs[i];
            if used[i] >= count {
                return None;
            }
            let at = start.advanced(used[i]);
            used[i] += 1;
            out.push(Placement {
                partition: p,
                offset: at.offset,
                timestamp: at.timestamp,
            });
        }
        let all_used = used
            .iter()
            .zip(&self.runs)
            .all(|(u, (_, _, count))| u == count);
        all_used.then_some(out)
    }
}

/// Why apply refused a proposal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum Refusal {
    /// The queue does not exist in this group (dropped, or never created).
    #[error("no such queue: {0}")]
    UnknownQueue(QueueId),
    /// A partition number at or above the queue's count.
    #[error("partition {partition:?} does not exist (the queue has {partitions})")]
    UnknownPartition {
        /// The partition asked for.
        partition: PartitionId,
        /// The queue's partition count.
        partitions: u32,
    },
    /// Partitions can only grow.
    #[error("partitions can only grow (the queue has {partitions})")]
    PartitionsShrink {
        /// The queue's partition count.
        partitions: u32,
    },
    /// An idempotent producer's message without a sequence, or sequences
    /// that do not increase by one within a partition.
    #[error("message {index}: sequences must be given and increase by 1 per partition")]
    BadSequence {
        /// The message's index in the request.
        index: usize,
    },
    /// A gap, a stale run, or duplicates mixed with new messages (409).
    #[error("partition {partition:?} expects sequence {expected}")]
    OutOfSequence {
        /// The partition.
        partition: PartitionId,
        /// The sequence it would accept.
        expected: u64,
    },
    /// A message breaks a limit (400).
    #[error("message {index}: {reason}")]
    Invalid {
        /// The message's index in the request.
        index: usize,
        /// The limit it breaks.
        reason: String,
    },
    /// The proposal's bytes do not decode (a bug or a version skew).
    #[error("undecodable proposal: {0}")]
    Undecodable(String),
    /// A consumer-group change that does not hold (409, with the reason).
    #[error("{0}")]
    Consumer(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(i: u64) -> DataProposal {
        DataProposal {
            request_id: RequestId(u128::from(i) << 70 | 7),
            proposed_at: Timestamp(1_700_000_000_000_000 + i),
            command: DataCommand::Produce(Produce {
                queue: QueueId(3),
                producer: None,
                messages: vec![NewMessage {
                    partition: PartitionId((i % 5) as u32),
                    ttl_secs: 60 + i,
                    sequence: i.is_multiple_of(2).then_some(i),
                    content_type: Some("text/plain".into()),
                    headers: vec![("h".into(), vec![1, 2, 3])],
                    body: vec![(i % 251) as u8; (i as usize * 37) % 2000],
                }],
            }),
        }
    }

    #[test]
    fn a_batch_of_encoded_proposals_encodes_as_the_batch_itself() {
        // Counts either side of the varint's one-byte limit (250).
        for n in [0u64, 1, 3, 250, 251, 300] {
            let proposals: Vec<DataProposal> = (0..n).map(one).collect();
            let encoded: Vec<Vec<u8>> = proposals
                .iter()
                .map(|p| p.encode().expect("encode"))
                .collect();
            let whole = DataProposal {
                request_id: RequestId(99),
                proposed_at: Timestamp(5),
                command: DataCommand::Batch(proposals),
            };
            let joined =
                DataProposal::encode_batch(RequestId(99), Timestamp(5), &encoded).expect("join");
            assert_eq!(joined, whole.encode().expect("encode"), "{n} proposals");
        }
        assert!(
            DataProposal::encode_batch(RequestId(1), Timestamp(1), &[vec![9, 9]]).is_err(),
            "an item without the version byte is refused"
        );
    }
}
