//! Coalesces concurrent proposals to one data group into one Raft entry.
//!
//! Every client write is one proposal; proposed one by one, each pays a
//! whole Raft round (append, replicate, fsync, apply) in the group's
//! single-threaded core. Here, proposals wait in a per-group queue while
//! earlier entries are in flight (`IN_FLIGHT_SMALL_MAX` for a small batch,
//! `IN_FLIGHT_MAX` for one of `BATCH_READY_BYTES`), and whatever queued up
//! meanwhile goes out as one `DataCommand::Batch`. Under no load a
//! proposal goes at once and alone, so batching adds no waiting of its
//! own. Each proposal keeps its request id inside the batch, so a retried
//! batch (the node retries through leader changes) still applies each
//! proposal at most once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use sluice_raft::GroupId;
use sluice_raft::data::command::{DataCommand, DataProposal, DataReply};
use sluice_raft::node::Node;
use tokio::sync::{Notify, Semaphore, mpsc, oneshot};

use crate::cluster::{ClusterFailure, Led, new_request_id};

/// Most batches of one group in flight at once.
pub const IN_FLIGHT_MAX: usize = 8;
/// Batches in flight past which a small batch waits for one of them to
/// finish, gathering more proposals meanwhile. Two: with the batch append
/// (one engine append per partition per entry) fewer, larger entries cost
/// less per message, and two keep the WAL busy while the previous entry
/// applies (see `docs/benchmarks.md`).
pub const IN_FLIGHT_SMALL_MAX: usize = 2;
/// A batch of at least this many encoded bytes goes without waiting while
/// fewer than `IN_FLIGHT_MAX` are in flight: waiting would not make its
/// per-message cost smaller, only its latency longer. One produce of 100
/// messages of 1 KiB is over it; 64 single-message POSTs are needed.
pub const BATCH_READY_BYTES: usize = 64 * 1024;
/// Most proposals in one batch.
pub const BATCH_PROPOSALS_MAX: usize = 1_024;
/// A batch stops growing past this many encoded bytes (a single larger
/// proposal still goes, alone).
pub const BATCH_BYTES_MAX: usize = 4 * 1024 * 1024;
/// Proposals that may wait per group before callers wait to enqueue.
const QUEUE_MAX: usize = 16_384;

/// A proposal's reply, with its command handed back: a caller may
/// propose it again after repairing what refused it, without having
/// copied it beforehand.
pub type Answer = Result<(Led<DataReply>, DataCommand), ClusterFailure>;

/// A proposal waiting for its batch.
struct Pending {
    proposal: DataProposal,
    /// The proposal encoded once: sent as is when it goes alone, and its
    /// length bounds a batch.
    encoded: Vec<u8>,
    reply: oneshot::Sender<Answer>,
}

/// The per-group queues of one node.
#[derive(Default)]
pub struct Batcher {
    queues: Mutex<HashMap<GroupId, mpsc::Sender<Pending>>>,
}

impl Batcher {
    /// Proposes through `group`'s queue and waits for this proposal's
    /// reply.
    pub async fn propose(
        &self,
        node: &Arc<Node>,
        group: GroupId,
        proposal: DataProposal,
    ) -> Answer {
        let encoded = proposal.encode().map_err(internal)?;
        let sender = {
            let mut queues = self.queues.lock().unwrap_or_else(|p| p.into_inner());
            queues
                .entry(group)
                .or_insert_with(|| {
                    let (tx, rx) = mpsc::channel(QUEUE_MAX);
                    tokio::spawn(drain(Arc::clone(node), group, rx));
                    tx
                })
                .clone()
        };
        let (tx, rx) = oneshot::channel();
        let pending = Pending {
            proposal,
            encoded,
            reply: tx,
        };
        sender
            .send(pending)
            .await
            .map_err(|_| ClusterFailure::Internal("the proposal queue stopped".into()))?;
        rx.await
            .map_err(|_| ClusterFailure::Internal("the proposal was dropped".into()))?
    }
}

/// Takes proposals off `group`'s queue in batches until every sender is
/// gone. A batch goes once a slot is free: any of `IN_FLIGHT_MAX` when it
/// carries `BATCH_READY_BYTES`, else one of the first `IN_FLIGHT_SMALL_MAX`;
/// while it waits, what queues joins it.
async fn drain(node: Arc<Node>, group: GroupId, mut queue: mpsc::Receiver<Pending>) {
    let slots = Arc::new(Semaphore::new(IN_FLIGHT_MAX));
    let finished = Arc::new(Notify::new());
    loop {
        let Some(first) = queue.recv().await else {
            return;
        };
        let mut batch = Gathering::new(first);
        batch.take_queued(&mut queue);
        let slot = loop {
            let in_flight = IN_FLIGHT_MAX - slots.available_permits();
            if may_go(in_flight, batch.bytes)
                && let Ok(slot) = Arc::clone(&slots).try_acquire_owned()
            {
                break slot;
            }
            // `notify_one` keeps a wake-up for a waiter not yet waiting, so
            // a batch finishing before this wait starts is not missed.
            let done = finished.notified();
            if batch.is_full() {
                done.await;
                continue;
            }
            tokio::select! {
                () = done => {}
                next = queue.recv() => match next {
                    Some(next) => {
                        batch.push(next);
                        batch.take_queued(&mut queue);
                    }
                    // Every sender is gone: what was gathered still goes.
                    None => match Arc::clone(&slots).acquire_owned().await {
                        Ok(slot) => break slot,
                        Err(_) => return,
                    },
                },
            }
        };
        let node = Arc::clone(&node);
        let finished = Arc::clone(&finished);
        tokio::spawn(async move {
            propose_batch(&node, group, batch.proposals).await;
            drop(slot);
            finished.notify_one();
        });
    }
}

/// Whether a batch of `bytes` may go with `in_flight` batches in flight.
fn may_go(in_flight: usize, bytes: usize) -> bool {
    in_flight < IN_FLIGHT_SMALL_MAX || (in_flight < IN_FLIGHT_MAX && bytes >= BATCH_READY_BYTES)
}

/// A batch being gathered, within `BATCH_PROPOSALS_MAX` and
/// `BATCH_BYTES_MAX`.
struct Gathering {
    proposals: Vec<Pending>,
    bytes: usize,
}

impl Gathering {
    fn new(first: Pending) -> Gathering {
        Gathering {
            bytes: first.encoded.len(),
            proposals: vec![first],
        }
    }

    fn is_full(&self) -> bool {
        self.proposals.len() >= BATCH_PROPOSALS_MAX || self.bytes >= BATCH_BYTES_MAX
    }

    fn push(&mut self, next: Pending) {
        self.bytes += next.encoded.len();
        self.proposals.push(next);
    }

    /// Adds what is already queued, up to the limits.
    fn take_queued(&mut self, queue: &mut mpsc::Receiver<Pending>) {
        while !self.is_full() {
            match queue.try_recv() {
                Ok(next) => self.push(next),
                Err(_) => break,
            }
        }
    }
}

/// Proposes one batch (a lone proposal as itself) and hands each caller
/// its reply.
async fn propose_batch(node: &Node, group: GroupId, mut batch: Vec<Pending>) {
    if batch.len() == 1 {
        let Some(one) = batch.pop() else { return };
        let result = propose_encoded(node, group, one.encoded).await;
        let _ = one
            .reply
            .send(result.map(|led| (led, one.proposal.command)));
        return;
    }
    let mut proposals = Vec::with_capacity(batch.len());
    let mut encoded = Vec::with_capacity(batch.len());
    let mut replies = Vec::with_capacity(batch.len());
    for p in batch {
        proposals.push(p.proposal);
        encoded.push(p.encoded);
        replies.push(p.reply);
    }
    // The batch from its proposals' bytes: each was encoded once, on
    // arrival, and is not encoded again.
    let bytes = new_request_id().and_then(|request_id| {
        DataProposal::encode_batch(request_id, sluice_engine::Timestamp::now(), &encoded)
            .map_err(internal)
    });
    drop(encoded);
    let result = match bytes {
        Ok(bytes) => propose_encoded(node, group, bytes).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(Led {
            value: DataReply::Batch(answers),
            group,
            leader,
        }) if answers.len() == replies.len() => {
            for ((reply, value), proposal) in replies.into_iter().zip(answers).zip(proposals) {
                let led = Led {
                    value,
                    group,
                    leader,
                };
                let _ = reply.send(Ok((led, proposal.command)));
            }
        }
        Ok(other) => {
            let why = format!("a batch of {} got {:?}", replies.len(), other.value);
            for reply in replies {
                let _ = reply.send(Err(ClusterFailure::Internal(why.clone())));
            }
        }
        Err(failure) => {
            for reply in replies {
                let _ = reply.send(Err(failure.duplicate()));
            }
        }
    }
}

async fn propose_encoded(
    node: &Node,
    group: GroupId,
    bytes: Vec<u8>,
) -> Result<Led<DataReply>, ClusterFailure> {
    let routed = node.propose(group, bytes).await?;
    Ok(Led {
        value: DataReply::decode(&routed.value).map_err(internal)?,
        group,
        leader: Some(routed.leader),
    })
}

fn internal(e: impl std::fmt::Display) -> ClusterFailure {
    ClusterFailure::Internal(e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_batches_wait_behind_two_and_ready_ones_behind_eight() {
        assert!(may_go(0, 1));
        assert!(may_go(IN_FLIGHT_SMALL_MAX - 1, 1));
        assert!(!may_go(IN_FLIGHT_SMALL_MAX, BATCH_READY_BYTES - 1));
        assert!(may_go(IN_FLIGHT_SMALL_MAX, BATCH_READY_BYTES));
        assert!(may_go(IN_FLIGHT_MAX - 1, BATCH_BYTES_MAX));
        assert!(!may_go(IN_FLIGHT_MAX, BATCH_BYTES_MAX));
    }
}
