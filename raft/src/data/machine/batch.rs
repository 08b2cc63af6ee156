//! Applying a coalesced batch of proposals (`DataCommand::Batch`).
//!
//! The server coalesces concurrent client writes into one Raft entry;
//! under single-message POSTs that is dozens of one-message produces per
//! entry. Applied one by one, each was its own engine append (a `pwrite`
//! per message). Here consecutive plain produces (no idempotent
//! producer) are gathered into a *run* and appended together, one append
//! per partition, then each proposal gets the reply it would have got
//! alone: the same offsets, timestamps and ids, because within a
//! partition the messages keep proposal order and each is stamped with
//! its own proposal's time (see `Partition::append_proposed`). Anything
//! else (idempotent produces, deletes, consumer commands, queue changes)
//! first appends the pending run, then applies in order as before.

use std::collections::HashSet;

use sluice_engine::{Offset, Timestamp};

use crate::data::command::{
    DataCommand, DataProposal, DataReply, NewMessage, Produce, Produced, Refusal,
};
use crate::data::machine::{DataMachine, MachineError, check_new_message, missing};
use crate::data::message_id::message_id;
use crate::data::producers::RunStart;
use crate::ids::{PartitionId, PartitionKey, RequestId};

/// A plain produce waiting in the run.
struct Waiting {
    /// Its place in the batch.
    index: usize,
    request_id: RequestId,
    proposed_at: Timestamp,
    produce: Produce,
}

/// One partition's share of a run: (index in the run, proposal time,
/// message), in append order.
type PartitionRun<'a> = (PartitionKey, Vec<(usize, Timestamp, &'a NewMessage)>);

/// Consecutive plain produces not yet appended.
#[derive(Default)]
struct Run {
    waiting: Vec<Waiting>,
    ids: HashSet<RequestId>,
}

impl DataMachine {
    /// Applies the proposals of a batch in order and answers each; a
    /// proposal applied recently gets its first reply again.
    pub(super) fn apply_batch(
        &mut self,
        proposals: Vec<DataProposal>,
    ) -> Result<DataReply, MachineError> {
        let mut replies: Vec<Option<DataReply>> = vec![None; proposals.len()];
        let mut run = Run::default();
        for (index, inner) in proposals.into_iter().enumerate() {
            if run.ids.contains(&inner.request_id) {
                // The same request twice in one batch: the first must be
                // applied (and remembered) before the second is answered.
                self.append_run(&mut run, &mut replies)?;
            }
            if let Some(reply) = self.requests.reply_of(inner.request_id) {
                replies[index] = Some(reply.clone());
                continue;
            }
            match inner.command {
                DataCommand::Batch(_) => {
                    let nested = Refusal::Undecodable("batches do not nest".into());
                    replies[index] = Some(DataReply::Refused(nested));
                }
                DataCommand::Produce(produce) if produce.producer.is_none() => {
                    match self.check_plain_produce(&produce) {
                        Some(refusal) => {
                            let reply = DataReply::Refused(refusal);
                            self.requests.remember(inner.request_id, reply.clone());
                            replies[index] = Some(reply);
                        }
                        None => {
                            run.ids.insert(inner.request_id);
                            run.waiting.push(Waiting {
                                index,
                                request_id: inner.request_id,
                                proposed_at: inner.proposed_at,
                                produce,
                            });
                        }
                    }
                }
                command => {
                    self.append_run(&mut run, &mut replies)?;
                    let alone = DataProposal {
                        request_id: inner.request_id,
                        proposed_at: inner.proposed_at,
                        command,
                    };
                    replies[index] = Some(self.apply(alone)?);
                }
            }
        }
        self.append_run(&mut run, &mut replies)?;
        let replies = replies
            .into_iter()
            .map(|r| {
                r.unwrap_or_else(|| {
                    DataReply::Refused(Refusal::Undecodable("a proposal went unanswered".into()))
                })
            })
            .collect();
        Ok(DataReply::Batch(replies))
    }

    /// Why a produce without an idempotent producer would be refused, if
    /// it would: the checks `produce` makes before it appends anything.
    fn check_plain_produce(&self, produce: &Produce) -> Option<Refusal> {
        let Some(&count) = self.queues.get(&produce.queue) else {
            return Some(Refusal::UnknownQueue(produce.queue));
        };
        produce
            .messages
            .iter()
            .enumerate()
            .find_map(|(index, m)| check_new_message(count, index, m))
    }

    /// Appends the run's messages, one engine append per partition, and
    /// answers and remembers each of its proposals.
    fn append_run(
        &mut self,
        run: &mut Run,
        replies: &mut [Option<DataReply>],
    ) -> Result<(), MachineError> {
        let waiting = std::mem::take(&mut run.waiting);
        run.ids.clear();
        if waiting.is_empty() {
            return Ok(());
        }
        // Per partition, in order of first appearance: (proposal, time,
        // message) in proposal order, then message order.
        let mut logs: Vec<PartitionRun<'_>> = Vec::new();
        for (w, one) in waiting.iter().enumerate() {
            for m in &one.produce.messages {
                let key = PartitionKey {
                    queue: one.produce.queue,
                    partition: m.partition,
                };
                let entry = match logs.iter().position(|(k, _)| *k == key) {
                    Some(i) => &mut logs[i].1,
                    None => {
                        logs.push((key, Vec::new()));
                        let last = logs.len() - 1;
                        &mut logs[last].1
                    }
                };
                entry.push((w, one.proposed_at, m));
            }
        }
        let mut runs: Vec<Vec<(PartitionId, RunStart, u64)>> = vec![Vec::new(); waiting.len()];
        let group = self.group;
        for (key, messages) in &logs {
            let log = self.partitions.get_mut(key).ok_or_else(|| missing(*key))?;
            let timed: Vec<(Timestamp, &NewMessage)> =
                messages.iter().map(|(_, t, m)| (*t, *m)).collect();
            let (first, stamps) = log
                .append_proposed(|t| message_id(t, group, key.partition), &timed)
                .map_err(|source| MachineError::Engine { key: *key, source })?;
            for (position, ((w, _, _), stamp)) in messages.iter().zip(&stamps).enumerate() {
                let mine = &mut runs[*w];
                match mine.iter_mut().find(|(p, _, _)| *p == key.partition) {
                    Some((_, _, count)) => *count += 1,
                    None => mine.push((
                        key.partition,
                        RunStart {
                            offset: Offset(first.0 + position as u64),
                            timestamp: *stamp,
                        },
                        1,
                    )),
                }
            }
        }
        for (one, mut mine) in waiting.into_iter().zip(runs) {
            // The order `produce` gives: partitions by first appearance.
            mine.sort_by_key(|(p, _, _)| {
                one.produce
                    .messages
                    .iter()
                    .position(|m| m.partition == *p)
                    .unwrap_or(usize::MAX)
            });
            let reply = DataReply::Produced(Produced { runs: mine });
            self.requests.remember(one.request_id, reply.clone());
            replies[one.index] = Some(reply);
        }
        Ok(())
    }
}
