//! The state machine of a data group: its queues' partition logs and its
//! small state (producer windows, recent requests, consumer groups).
//!
//! **Apply** appends to partition logs without fsync: the Raft entries
//! are already durable in the node WAL. **Checkpoint** makes the partition
//! logs durable, then writes the small state, each partition's end offset
//! and the caller's Raft state (applied log id, membership) into one
//! checkpoint file. **Open** truncates every partition log back to the
//! checkpoint's end offsets and removes partitions created after it, so
//! replaying the WAL from the checkpoint's applied index rebuilds exactly
//! the state that was lost, with the same offsets, timestamps and ids
//! (apply is deterministic).
//!
//! A dropped queue's partition directories are deleted only after the next
//! checkpoint: until then, a restart replays entries that may still append
//! to them.
//!
//! On disk, in the group's directory: `checkpoint` (see `checkpoint.rs`)
//! and one engine log directory per partition, `q{queue}-p{partition}`.

use bytes::Bytes;
use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sluice_engine::disk::Disk;
use sluice_engine::{Detached, EngineError, FlushTicket, Log, LogConfig, Offset, Timestamp};

use crate::checkpoint;
use crate::data::command::{
    DataCommand, DataProposal, DataReply, NewMessage, Produce, Produced, PutMessage, Refusal,
};
use crate::data::consumer::ConsumerGroups;
use crate::data::message_id::message_id;
use crate::data::partition::{Partition, PartitionState};
use crate::data::producers::{ProducerWindows, SequenceCheck};
use crate::data::requests::{RequestWindow, WINDOW_REQUESTS_DEFAULT};
use crate::data::snapshot::{self, Manifest, PinnedSegment, SegmentFetcher, SegmentRef};
use crate::glue::{GroupMachine, Prepared, codec};
use crate::ids::{GroupId, PartitionId, PartitionKey, QueueId};

mod batch;

/// Most partitions one queue may have.
pub const QUEUE_PARTITIONS_MAX: u32 = 1_000;
const CHECKPOINT_FILE: &str = "checkpoint";

/// Why a data group's state machine failed. Any of these stops the group
/// on this replica: its state can no longer follow the log.
#[derive(Debug, thiserror::Error)]
pub enum MachineError {
    /// A partition log failed.
    #[error("{key}: {source}")]
    Engine {
        /// The partition.
        key: PartitionKey,
        /// The engine's error.
        source: EngineError,
    },
    /// A file outside the partition logs failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// The state on disk contradicts itself.
    #[error("corrupted state in {path}: {reason}")]
    Corrupted {
        /// Where.
        path: PathBuf,
        /// What does not hold.
        reason: String,
    },
}

impl From<MachineError> for io::Error {
    fn from(e: MachineError) -> io::Error {
        let kind = match &e {
            MachineError::Io { source, .. } => source.kind(),
            MachineError::Engine { .. } => io::ErrorKind::Other,
            MachineError::Corrupted { .. } => io::ErrorKind::InvalidData,
        };
        io::Error::new(kind, e.to_string())
    }
}

/// Everything a checkpoint holds besides the partition logs themselves.
#[derive(Debug, Serialize, Deserialize)]
struct CheckpointBody {
    /// Counts checkpoints (and names pin sets and directory generations).
    seq: u64,
    raft_state: Vec<u8>,
    queues: BTreeMap<QueueId, u32>,
    partitions: BTreeMap<PartitionKey, PartitionCheckpoint>,
    producers: ProducerWindows,
    requests: RequestWindow<DataReply>,
    consumers: ConsumerGroups,
}

/// A partition as a checkpoint records it.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct PartitionCheckpoint {
    /// Its end offset: everything before it is durable.
    end: Offset,
    /// Its directory's generation (0: `q{q}-p{p}`; n: `q{q}-p{p}-g{n}`,
    /// written by a snapshot install).
    generation: u64,
    state: PartitionState,
}

/// A checkpoint captured by [`DataMachine::prepare_checkpoint`], written
/// by [`PreparedCheckpoint::write`] with no lock held, and recorded by
/// [`DataMachine::finish_checkpoint`].
pub struct PreparedCheckpoint {
    disk: Arc<dyn Disk>,
    dir: PathBuf,
    source: String,
    body: CheckpointBody,
    files: BTreeMap<PartitionKey, Vec<(SegmentRef, PathBuf)>>,
    tickets: Vec<(PartitionKey, FlushTicket)>,
    synced: Vec<(PartitionKey, FlushTicket, io::Result<()>)>,
    /// Segments the previous checkpoint's retention took out of their
    /// logs, deleted here, with no lock held.
    retired: Vec<Detached>,
    /// How many of the machine's doomed directories predate the capture.
    doomed: usize,
    /// The encoded manifest once written, or why writing failed.
    written: Option<Result<Bytes, MachineError>>,
    /// The last checkpoint's size: this one's encoding starts with room
    /// for about as much, instead of doubling its way there (each doubling
    /// a copy into fresh memory).
    size_hint_bytes: usize,
}

impl std::fmt::Debug for PreparedCheckpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PreparedCheckpoint")
            .field("seq", &self.body.seq)
            .field("partitions", &self.body.partitions.len())
            .finish()
    }
}

impl Prepared for PreparedCheckpoint {
    fn write(&mut self) {
        PreparedCheckpoint::write(self);
    }

    fn into_any(self: Box<Self>) -> Box<dyn std::any::Any> {
        self
    }
}

impl PreparedCheckpoint {
    /// Fsyncs the logs up to the captured ends, then writes the checkpoint
    /// file and pins the segments it covers. Needs no access to the
    /// machine; the outcome is kept for `finish_checkpoint`.
    pub fn write(&mut self) {
        for retired in std::mem::take(&mut self.retired) {
            // Left on disk, they come back at the next open and are
            // retired again: nothing is lost by trying later.
            if let Err(e) = retired.remove() {
                tracing::warn!(dir = %self.dir.display(), error = %e, "deleting expired segments failed");
            }
        }
        self.synced = std::mem::take(&mut self.tickets)
            .into_iter()
            .map(|(key, ticket)| {
                let result = ticket.sync();
                (key, ticket, result)
            })
            .collect();
        self.written = Some(self.write_files());
    }

    fn write_files(&self) -> Result<Bytes, MachineError> {
        for (key, _, result) in &self.synced {
            if let Err(e) = result {
                // The logs are not durable up to the captured ends: no
                // checkpoint may claim they are.
                return Err(MachineError::Io {
                    path: self.dir.clone(),
                    source: io::Error::new(e.kind(), format!("{key}: {e}")),
                });
            }
        }
        let path = self.dir.join(CHECKPOINT_FILE);
        let io_err = |source| MachineError::Io {
            path: path.clone(),
            source,
        };
        // Encoded once, written, then moved into the manifest: the body is
        // megabytes when the request window is full, and every copy of it
        // is fresh memory (docs/benchmarks.md, "Checkpoints without copies").
        let bytes = codec::encode_vec_sized(&self.body, self.size_hint_bytes).map_err(io_err)?;
        checkpoint::write(self.disk.as_ref(), &path, &bytes).map_err(io_err)?;
        snapshot::pin(self.disk.as_ref(), &self.dir, self.body.seq, &self.files).map_err(io_err)?;
        let manifest = Manifest {
            pins: self.body.seq,
            source: self.source.clone(),
            checkpoint: bytes,
            segments: self
                .files
                .iter()
                .map(|(k, segments)| (*k, segments.iter().map(|(r, _)| *r).collect()))
                .collect(),
        };
        // The body, and a little for the segment list around it.
        let segments: usize = manifest.segments.values().map(Vec::len).sum();
        let manifest_bytes = manifest.checkpoint.len() + 1024 + 64 * segments;
        Ok(Bytes::from(
            codec::encode_vec_sized(&manifest, manifest_bytes).map_err(io_err)?,
        ))
    }
}

/// A data group's state machine (see the module docs).
#[derive(Debug)]
pub struct DataMachine {
    group: GroupId,
    disk: Arc<dyn Disk>,
    dir: PathBuf,
    log_config: LogConfig,
    queues: BTreeMap<QueueId, u32>,
    partitions: BTreeMap<PartitionKey, Partition>,
    producers: ProducerWindows,
    requests: RequestWindow<DataReply>,
    consumers: ConsumerGroups,
    raft_state: Vec<u8>,
    /// Directory generations that are not 0.
    generations: BTreeMap<PartitionKey, u64>,
    seq: u64,
    /// The encoded manifest of the last checkpoint (the snapshot data).
    last_checkpoint: Bytes,
    doomed: Vec<PathBuf>,
    /// Expired segments taken out of their logs at the last checkpoint,
    /// deleted by the next one's write step (no lock held): unlinking and
    /// unmapping them under the write lock stalled apply.
    retired: std::sync::Mutex<Vec<Detached>>,
    /// This node's RPC address, named in manifests as their source.
    source: String,
    fetcher: Option<Arc<dyn SegmentFetcher>>,
}

impl DataMachine {
    /// Opens group `group`'s state in `dir`: the last checkpoint, with
    /// partition logs truncated back to it (see the module docs).
    pub fn open(
        disk: Arc<dyn Disk>,
        dir: impl AsRef<Path>,
        group: GroupId,
        log_config: LogConfig,
    ) -> Result<DataMachine, MachineError> {
        let dir = dir.as_ref().to_path_buf();
        let io_at = |path: &Path| {
            let path = path.to_path_buf();
            move |source| MachineError::Io { path, source }
        };
        disk.create_dir_all(&dir).map_err(io_at(&dir))?;
        let checkpoint_path = dir.join(CHECKPOINT_FILE);
        let body = match checkpoint::read(disk.as_ref(), &checkpoint_path) {
            Ok(Some(bytes)) => {
                codec::decode::<CheckpointBody>(&bytes).map_err(|e| MachineError::Corrupted {
                    path: checkpoint_path.clone(),
                    reason: e.to_string(),
                })?
            }
            Ok(None) => CheckpointBody {
                seq: 0,
                raft_state: Vec::new(),
                queues: BTreeMap::new(),
                partitions: BTreeMap::new(),
                producers: ProducerWindows::default(),
                requests: RequestWindow::new(WINDOW_REQUESTS_DEFAULT),
                consumers: ConsumerGroups::default(),
            },
            Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                return Err(MachineError::Corrupted {
                    path: checkpoint_path,
                    reason: e.to_string(),
                });
            }
            Err(e) => return Err(io_at(&checkpoint_path)(e)),
        };
        let mut machine = DataMachine {
            group,
            disk: Arc::clone(&disk),
            dir: dir.clone(),
            log_config: log_config.clone(),
            queues: body.queues,
            partitions: BTreeMap::new(),
            producers: body.producers,
            requests: body.requests,
            consumers: body.consumers,
            raft_state: body.raft_state,
            generations: BTreeMap::new(),
            seq: body.seq,
            last_checkpoint: Bytes::new(),
            doomed: Vec::new(),
            retired: std::sync::Mutex::new(Vec::new()),
            source: String::new(),
            fetcher: None,
        };
        // Directories the checkpoint does not name were created after it
        // (replay recreates what it needs), dropped before it, or replaced
        // by an install.
        let names = disk.list_dir(&dir).map_err(io_at(&dir))?;
        for name in names {
            let Some((key, generation)) = parse_partition_dir(&name) else {
                continue;
            };
            if body.partitions.get(&key).map(|p| p.generation) != Some(generation) {
                snapshot::remove_tree(disk.as_ref(), &dir.join(&name)).map_err(io_at(&dir))?;
            }
        }
        disk.sync_dir(&dir).map_err(io_at(&dir))?;
        for (key, checkpointed) in body.partitions {
            let PartitionCheckpoint {
                end,
                generation,
                state,
            } = checkpointed;
            if generation != 0 {
                machine.generations.insert(key, generation);
            }
            let path = machine.partition_dir(key);
            if disk.list_dir(&path).is_err() {
                return Err(MachineError::Corrupted {
                    path,
                    reason: format!("the checkpoint lists {key} but its log is missing"),
                });
            }
            let mut partition =
                Partition::open(Arc::clone(&disk), &path, log_config.clone(), state)
                    .map_err(|source| MachineError::Engine { key, source })?;
            let next = partition.log().next_offset();
            if next < end {
                return Err(MachineError::Corrupted {
                    path,
                    reason: format!(
                        "the checkpoint says {key} ends at {end:?}, the log at {next:?}"
                    ),
                });
            }
            if next > end {
                partition
                    .log_mut()
                    .truncate_from(end)
                    .map_err(|source| MachineError::Engine { key, source })?;
            }
            machine.partitions.insert(key, partition);
        }
        Ok(machine)
    }

    /// Lets this machine send and receive snapshots: `source` is this
    /// node's RPC address (named in manifests), `fetcher` fetches segments
    /// from other nodes. Without it, installing a snapshot fails.
    pub fn with_transfer(
        mut self,
        source: String,
        fetcher: Arc<dyn SegmentFetcher>,
    ) -> DataMachine {
        self.source = source;
        self.fetcher = Some(fetcher);
        self
    }

    /// The group this machine belongs to.
    pub fn group(&self) -> GroupId {
        self.group
    }

    /// The Raft state saved by the last checkpoint (empty before the first).
    pub fn raft_state(&self) -> &[u8] {
        &self.raft_state
    }

    /// The partition count of `queue`, if this group holds it.
    pub fn queue_partitions(&self, queue: QueueId) -> Option<u32> {
        self.queues.get(&queue).copied()
    }

    /// The queues this group holds and their partition counts.
    pub fn queues(&self) -> &BTreeMap<QueueId, u32> {
        &self.queues
    }

    /// One partition, for reads.
    pub fn partition(&self, key: PartitionKey) -> Option<&Partition> {
        self.partitions.get(&key)
    }

    /// What every partition appended since the last call (`Log::
    /// writeback_due`), to start its writeback outside the lock
    /// (`Node::start_writeback`).
    pub fn writeback_due(&self) -> Vec<(Arc<dyn sluice_engine::disk::DiskFile>, u64, u64)> {
        self.partitions
            .values()
            .flat_map(|p| p.log().writeback_due())
            .collect()
    }

    /// Every partition this group holds, in order.
    pub fn partition_keys(&self) -> impl Iterator<Item = PartitionKey> + '_ {
        self.partitions.keys().copied()
    }

    /// The consumer groups, for reads.
    pub fn consumers(&self) -> &ConsumerGroups {
        &self.consumers
    }

    /// Replaces the damaged sealed segment at `base` of partition `key`
    /// with `bytes`, another replica's batches for exactly its offsets
    /// (`Log::replace_sealed_segment` checks them first). This changes no
    /// state a reader can see: the records are the same, only whole again.
    pub fn replace_damaged_segment(
        &mut self,
        key: PartitionKey,
        base: Offset,
        bytes: &[u8],
    ) -> Result<(), MachineError> {
        // A dropped partition has no segment left to repair.
        let gone = MachineError::Engine {
            key,
            source: EngineError::NoSuchSegment { base },
        };
        let partition = self.partitions.get_mut(&key).ok_or(gone)?;
        partition
            .log_mut()
            .replace_sealed_segment(base, bytes)
            .map_err(|source| MachineError::Engine { key, source })
    }

    /// Applies an encoded proposal and returns the encoded reply. An
    /// undecodable proposal is refused like any other: every replica
    /// decodes the same bytes the same way.
    pub fn apply_bytes(&mut self, bytes: &[u8]) -> Result<Vec<u8>, MachineError> {
        let reply = match codec::decode::<DataProposal>(bytes) {
            Ok(proposal) => self.apply(proposal)?,
            Err(e) => DataReply::Refused(Refusal::Undecodable(e.to_string())),
        };
        codec::encode(&reply)
            .map(|b| b.to_vec())
            .map_err(|source| MachineError::Io {
                path: self.dir.clone(),
                source,
            })
    }

    /// Applies a proposal: a request applied recently gets its first
    /// reply again, and writes nothing.
    pub fn apply(&mut self, proposal: DataProposal) -> Result<DataReply, MachineError> {
        if let Some(reply) = self.requests.reply_of(proposal.request_id) {
            return Ok(reply.clone());
        }
        let now = proposal.proposed_at;
        let reply = match proposal.command {
            DataCommand::CreateQueue { queue, partitions } => {
                self.create_queue(queue, partitions)?
            }
            DataCommand::DropQueue { queue } => self.drop_queue(queue),
            DataCommand::Produce(produce) => self.produce(produce, now)?,
            DataCommand::Put { queue, messages } => self.put(queue, &messages, now)?,
            DataCommand::Delete { queue, ids } => self.delete(queue, &ids, now)?,
            // Each proposal inside is remembered under its own id, which
            // is all a retried batch needs: the batch is not remembered.
            DataCommand::Batch(proposals) => return self.apply_batch(proposals),
            DataCommand::Consumer { queue, command } => match self.queues.get(&queue) {
                None => DataReply::Refused(Refusal::UnknownQueue(queue)),
                Some(&partitions) => match self.consumers.apply(queue, partitions, command) {
                    Ok(reply) => DataReply::Consumer(reply),
                    Err(reason) => DataReply::Refused(Refusal::Consumer(reason)),
                },
            },
        };
        self.requests.remember(proposal.request_id, reply.clone());
        Ok(reply)
    }

    fn create_queue(&mut self, queue: QueueId, partitions: u32) -> Result<DataReply, MachineError> {
        let current = self.queues.get(&queue).copied().unwrap_or(0);
        if partitions < current {
            return Ok(DataReply::Refused(Refusal::PartitionsShrink {
                partitions: current,
            }));
        }
        if partitions == 0 || partitions > QUEUE_PARTITIONS_MAX {
            return Ok(DataReply::Refused(Refusal::UnknownPartition {
                partition: PartitionId(partitions),
                partitions: QUEUE_PARTITIONS_MAX,
            }));
        }
        for p in current..partitions {
            let key = PartitionKey {
                queue,
                partition: PartitionId(p),
            };
            let partition = Partition::open(
                Arc::clone(&self.disk),
                &self.partition_dir(key),
                self.log_config.clone(),
                PartitionState::default(),
            )
            .map_err(|source| MachineError::Engine { key, source })?;
            self.partitions.insert(key, partition);
        }
        self.queues.insert(queue, partitions);
        if current != 0 {
            self.consumers.partitions_changed(queue, partitions);
        }
        Ok(DataReply::Done)
    }

    fn drop_queue(&mut self, queue: QueueId) -> DataReply {
        if let Some(partitions) = self.queues.remove(&queue) {
            for p in 0..partitions {
                let key = PartitionKey {
                    queue,
                    partition: PartitionId(p),
                };
                if self.partitions.remove(&key).is_some() {
                    self.doomed.push(self.partition_dir(key));
                    self.generations.remove(&key);
                }
            }
            self.consumers.drop_queue(queue);
        }
        DataReply::Done
    }

    fn produce(&mut self, produce: Produce, now: Timestamp) -> Result<DataReply, MachineError> {
        let Produce {
            queue,
            producer,
            messages,
        } = produce;
        let Some(&count) = self.queues.get(&queue) else {
            return Ok(DataReply::Refused(Refusal::UnknownQueue(queue)));
        };
        // Validate everything before appending anything.
        let mut by_partition: Vec<(PartitionId, Vec<&NewMessage>)> = Vec::new();
        for (index, m) in messages.iter().enumerate() {
            if let Some(refusal) = check_new_message(count, index, m) {
                return Ok(DataReply::Refused(refusal));
            }
            if producer.is_some() && m.sequence.is_none() {
                return Ok(DataReply::Refused(Refusal::BadSequence { index }));
            }
            match by_partition.iter_mut().find(|(p, _)| *p == m.partition) {
                Some((_, run)) => {
                    // An idempotent producer's sequences advance by one
                    // per partition within a request.
                    let previous = run.last().and_then(|r| r.sequence);
                    if producer.is_some() && m.sequence != previous.map(|s| s.wrapping_add(1)) {
                        return Ok(DataReply::Refused(Refusal::BadSequence { index }));
                    }
                    run.push(m);
                }
                None => by_partition.push((m.partition, vec![m])),
            }
        }
        let mut checks = Vec::with_capacity(by_partition.len());
        if let Some(producer) = producer {
            self.producers.expire(now);
            for (partition, run) in &by_partition {
                let key = PartitionKey {
                    queue,
                    partition: *partition,
                };
                let first = run.first().and_then(|m| m.sequence).unwrap_or(0);
                match self.producers.check(producer, key, first, run.len() as u64) {
                    SequenceCheck::OutOfSequence { expected } => {
                        return Ok(DataReply::Refused(Refusal::OutOfSequence {
                            partition: *partition,
                            expected,
                        }));
                    }
                    check => checks.push(check),
                }
            }
        }
        let mut runs = Vec::with_capacity(by_partition.len());
        for (i, (partition, run)) in by_partition.iter().enumerate() {
            let key = PartitionKey {
                queue,
                partition: *partition,
            };
            if let Some(SequenceCheck::Duplicate { first }) = checks.get(i) {
                runs.push((*partition, *first, run.len() as u64));
                continue;
            }
            let group = self.group;
            let log = self.partitions.get_mut(&key).ok_or_else(|| missing(key))?;
            let start = log
                .append_new(now, |t| message_id(t, group, *partition), run)
                .map_err(|source| MachineError::Engine { key, source })?;
            if let (Some(producer), Some(first_sequence)) =
                (producer, run.first().and_then(|m| m.sequence))
            {
                self.producers
                    .record(producer, key, first_sequence, run.len() as u64, start, now);
            }
            runs.push((*partition, start, run.len() as u64));
        }
        Ok(DataReply::Produced(Produced { runs }))
    }

    fn put(
        &mut self,
        queue: QueueId,
        messages: &[PutMessage],
        now: Timestamp,
    ) -> Result<DataReply, MachineError> {
        let Some(&count) = self.queues.get(&queue) else {
            return Ok(DataReply::Refused(Refusal::UnknownQueue(queue)));
        };
        if let Some(m) = messages.iter().find(|m| m.partition.0 >= count) {
            return Ok(DataReply::Refused(Refusal::UnknownPartition {
                partition: m.partition,
                partitions: count,
            }));
        }
        for (index, m) in messages.iter().enumerate() {
            if let Err(reason) =
                Partition::check_record(m.content_type.as_deref(), &[], m.body.len())
            {
                return Ok(DataReply::Refused(Refusal::Invalid { index, reason }));
            }
        }
        for m in messages {
            let key = PartitionKey {
                queue,
                partition: m.partition,
            };
            let partition = self.partitions.get_mut(&key).ok_or_else(|| missing(key))?;
            partition
                .put(
                    m.id,
                    now,
                    now.plus_secs(m.ttl_secs),
                    m.content_type.as_deref(),
                    &m.body,
                )
                .map_err(|source| MachineError::Engine { key, source })?;
        }
        Ok(DataReply::Done)
    }

    fn delete(
        &mut self,
        queue: QueueId,
        ids: &[(PartitionId, sluice_engine::MessageId)],
        now: Timestamp,
    ) -> Result<DataReply, MachineError> {
        if !self.queues.contains_key(&queue) {
            return Ok(DataReply::Refused(Refusal::UnknownQueue(queue)));
        }
        for (partition, id) in ids {
            let key = PartitionKey {
                queue,
                partition: *partition,
            };
            // Partitions outside the queue are ignored, as absent ids are.
            if let Some(p) = self.partitions.get_mut(&key) {
                p.delete(*id, now)
                    .map_err(|source| MachineError::Engine { key, source })?;
            }
        }
        Ok(DataReply::Done)
    }

    /// Makes everything applied so far durable and records it, with
    /// `raft_state` (see the module docs); pins the segments it covers and
    /// keeps the manifest as the snapshot data; then deletes dropped
    /// queues' files and takes expired segments out of their logs (the
    /// next checkpoint deletes their files). `now` only drives retention.
    /// The three steps of [`DataMachine::prepare_checkpoint`] in one call.
    pub fn checkpoint(&mut self, raft_state: Vec<u8>, now: Timestamp) -> Result<(), MachineError> {
        let mut prepared = self.prepare_checkpoint(raft_state)?;
        prepared.write();
        self.finish_checkpoint(prepared, now)
    }

    /// Captures a checkpoint of the state as applied now: the small state
    /// (cloned), each partition's end offset and segments, and a ticket to
    /// fsync each log up to that end. It only reads, so the host can call
    /// it under a read lock, run [`PreparedCheckpoint::write`] (the fsyncs
    /// and the file writes) with no lock held while apply goes on, and
    /// take the write lock only for [`DataMachine::finish_checkpoint`].
    /// Entries applied after the capture are not in it: a restart from it
    /// truncates the logs back to its ends and replays them from the WAL.
    pub fn prepare_checkpoint(
        &self,
        raft_state: Vec<u8>,
    ) -> Result<PreparedCheckpoint, MachineError> {
        let mut partitions = BTreeMap::new();
        let mut files = BTreeMap::new();
        let mut tickets = Vec::new();
        for (key, partition) in &self.partitions {
            let log = partition.log();
            let ticket = log
                .flush_ticket()
                .map_err(|source| MachineError::Engine { key: *key, source })?;
            tickets.push((*key, ticket));
            partitions.insert(
                *key,
                PartitionCheckpoint {
                    end: log.next_offset(),
                    generation: self.generations.get(key).copied().unwrap_or(0),
                    state: partition.state().clone(),
                },
            );
            let segments: Vec<(SegmentRef, PathBuf)> = log
                .segments()
                .into_iter()
                .filter(|s| s.next > s.base)
                .map(|s| {
                    let r = SegmentRef {
                        base: s.base,
                        next: s.next,
                        len_bytes: s.len_bytes,
                    };
                    (r, s.path)
                })
                .collect();
            files.insert(*key, segments);
        }
        Ok(PreparedCheckpoint {
            disk: Arc::clone(&self.disk),
            dir: self.dir.clone(),
            source: self.source.clone(),
            body: CheckpointBody {
                seq: self.seq + 1,
                raft_state,
                queues: self.queues.clone(),
                partitions,
                producers: self.producers.clone(),
                requests: self.requests.clone(),
                consumers: self.consumers.clone(),
            },
            files,
            tickets,
            synced: Vec::new(),
            retired: std::mem::take(&mut *self.retired.lock().unwrap_or_else(|p| p.into_inner())),
            doomed: self.doomed.len(),
            written: None,
            size_hint_bytes: self.last_checkpoint.len() + self.last_checkpoint.len() / 8,
        })
    }

    /// Records a written checkpoint: the logs' new durable offsets (or
    /// their poisoning, when an fsync failed), the manifest as the
    /// snapshot data; then deletes the files of queues dropped before the
    /// capture, and retires expired segments (taken out of their logs here,
    /// deleted by the next checkpoint's write step, with no lock held).
    /// Fails when the write did.
    pub fn finish_checkpoint(
        &mut self,
        prepared: PreparedCheckpoint,
        now: Timestamp,
    ) -> Result<(), MachineError> {
        let PreparedCheckpoint {
            body,
            synced,
            doomed,
            written,
            dir,
            ..
        } = prepared;
        for (key, ticket, result) in synced {
            // A partition dropped meanwhile has nothing left to record.
            if let Some(partition) = self.partitions.get_mut(&key) {
                partition
                    .log_mut()
                    .complete_flush(ticket, result)
                    .map_err(|source| MachineError::Engine { key, source })?;
            }
        }
        let manifest = match written {
            Some(Ok(manifest)) => manifest,
            Some(Err(e)) => return Err(e),
            None => {
                return Err(MachineError::Io {
                    path: dir,
                    source: io::Error::other("the checkpoint was prepared but never written"),
                });
            }
        };
        self.seq = body.seq;
        self.raft_state = body.raft_state;
        self.last_checkpoint = manifest;
        let io_err = |source| MachineError::Io {
            path: dir.clone(),
            source,
        };
        // Only the queues dropped before the capture: the checkpoint just
        // written still lists those dropped since.
        for doomed_dir in self.doomed.drain(..doomed.min(self.doomed.len())) {
            snapshot::remove_tree(self.disk.as_ref(), &doomed_dir).map_err(io_err)?;
        }
        let retired = self.retired.get_mut().unwrap_or_else(|p| p.into_inner());
        for partition in self.partitions.values_mut() {
            partition.prune_ids(now);
            let (_, detached) = partition.log_mut().detach_retention(now);
            if !detached.is_empty() {
                retired.push(detached);
            }
        }
        Ok(())
    }

    /// Replaces the whole state with a snapshot's (see `snapshot.rs`).
    fn install_manifest(
        &mut self,
        raft_state: Vec<u8>,
        manifest: &[u8],
    ) -> Result<(), MachineError> {
        let corrupted = |reason: String| MachineError::Corrupted {
            path: self.dir.clone(),
            reason,
        };
        let manifest: Manifest =
            codec::decode(manifest).map_err(|e| corrupted(format!("snapshot manifest: {e}")))?;
        let mut body: CheckpointBody = codec::decode(&manifest.checkpoint)
            .map_err(|e| corrupted(format!("snapshot checkpoint: {e}")))?;
        let Some(fetcher) = self.fetcher.clone() else {
            return Err(MachineError::Io {
                path: self.dir.clone(),
                source: io::Error::new(
                    io::ErrorKind::Unsupported,
                    "this node cannot fetch snapshot segments (no transfer configured)",
                ),
            });
        };
        let disk = Arc::clone(&self.disk);
        let io_at = |path: &Path| {
            let path = path.to_path_buf();
            move |source| MachineError::Io { path, source }
        };
        let generation = self.seq + 1;
        for (key, refs) in &manifest.segments {
            let Some(checkpointed) = body.partitions.get_mut(key) else {
                return Err(corrupted(format!(
                    "the manifest lists {key}, its checkpoint not"
                )));
            };
            checkpointed.generation = generation;
            let target = self.dir.join(generation_dir_name(*key, generation));
            snapshot::remove_tree(disk.as_ref(), &target).map_err(io_at(&target))?;
            disk.create_dir_all(&target).map_err(io_at(&target))?;
            let local = self
                .partitions
                .get(key)
                .map(|p| p.log().segments())
                .unwrap_or_default();
            for r in refs {
                let file = target.join(Log::segment_file_name(r.base));
                let reuse = local
                    .iter()
                    .find(|l| l.sealed && l.base == r.base && l.next == r.next);
                if let Some(l) = reuse {
                    disk.hard_link(&l.path, &file).map_err(io_at(&file))?;
                    continue;
                }
                let segment = PinnedSegment {
                    pins: manifest.pins,
                    key: *key,
                    base: r.base,
                    len_bytes: r.len_bytes,
                };
                let bytes = fetcher
                    .fetch(&manifest.source, self.group, segment)
                    .map_err(io_at(&file))?;
                if bytes.len() as u64 != r.len_bytes {
                    return Err(corrupted(format!(
                        "fetched {} bytes of {key} segment {:?}, expected {}",
                        bytes.len(),
                        r.base,
                        r.len_bytes
                    )));
                }
                let f = disk.create_new(&file).map_err(io_at(&file))?;
                f.write_all_at(&bytes, 0).map_err(io_at(&file))?;
                f.sync_data().map_err(io_at(&file))?;
            }
            disk.sync_dir(&target).map_err(io_at(&target))?;
        }
        // Partitions with no segments (nothing written yet) start empty.
        for (key, checkpointed) in body.partitions.iter_mut() {
            if !manifest.segments.contains_key(key) {
                checkpointed.generation = generation;
                let target = self.dir.join(generation_dir_name(*key, generation));
                snapshot::remove_tree(disk.as_ref(), &target).map_err(io_at(&target))?;
                disk.create_dir_all(&target).map_err(io_at(&target))?;
            }
        }
        disk.sync_dir(&self.dir).map_err(io_at(&self.dir))?;
        // The commit point: the checkpoint now names the new directories.
        body.raft_state = raft_state;
        body.seq = generation;
        let path = self.dir.join(CHECKPOINT_FILE);
        let bytes = codec::encode(&body).map_err(io_at(&path))?;
        self.partitions.clear(); // closes the old logs
        checkpoint::write(disk.as_ref(), &path, &bytes).map_err(io_at(&path))?;
        let source = std::mem::take(&mut self.source);
        let reopened = DataMachine::open(disk, &self.dir, self.group, self.log_config.clone())?;
        *self = reopened.with_transfer(source, fetcher);
        Ok(())
    }

    fn partition_dir(&self, key: PartitionKey) -> PathBuf {
        let generation = self.generations.get(&key).copied().unwrap_or(0);
        self.dir.join(generation_dir_name(key, generation))
    }
}

impl GroupMachine for DataMachine {
    fn apply(&mut self, command: &[u8]) -> io::Result<Vec<u8>> {
        Ok(self.apply_bytes(command)?)
    }

    fn checkpoint(&mut self, raft_state: Vec<u8>) -> io::Result<Bytes> {
        DataMachine::checkpoint(self, raft_state, Timestamp::now())?;
        Ok(self.last_checkpoint.clone())
    }

    fn prepare_checkpoint(&self, raft_state: Vec<u8>) -> io::Result<Option<Box<dyn Prepared>>> {
        Ok(Some(Box::new(DataMachine::prepare_checkpoint(
            self, raft_state,
        )?)))
    }

    fn finish_checkpoint(&mut self, prepared: Box<dyn Prepared>) -> io::Result<Bytes> {
        let prepared = prepared
            .into_any()
            .downcast::<PreparedCheckpoint>()
            .map_err(|_| io::Error::other("a checkpoint prepared by another kind of machine"))?;
        DataMachine::finish_checkpoint(self, *prepared, Timestamp::now())?;
        Ok(self.last_checkpoint.clone())
    }

    fn raft_state(&self) -> &[u8] {
        &self.raft_state
    }

    fn install(&mut self, raft_state: Vec<u8>, snapshot: &[u8]) -> io::Result<()> {
        Ok(self.install_manifest(raft_state, snapshot)?)
    }
}

/// Why message `index` of a produce to a queue of `partitions` would be
/// refused, if it would: the checks every produce makes of each message
/// before it appends anything.
fn check_new_message(partitions: u32, index: usize, m: &NewMessage) -> Option<Refusal> {
    if m.partition.0 >= partitions {
        return Some(Refusal::UnknownPartition {
            partition: m.partition,
            partitions,
        });
    }
    Partition::check_message(m)
        .err()
        .map(|reason| Refusal::Invalid { index, reason })
}

fn missing(key: PartitionKey) -> MachineError {
    MachineError::Corrupted {
        path: PathBuf::from(format!("q{}-p{}", key.queue.0, key.partition.0)),
        reason: format!("{key} is in the queue table but has no log"),
    }
}

/// A partition's directory name at a generation.
fn generation_dir_name(key: PartitionKey, generation: u64) -> String {
    match generation {
        0 => snapshot::partition_dir_name(key),
        g => format!("{}-g{g}", snapshot::partition_dir_name(key)),
    }
}

/// `q{queue}-p{partition}[-g{generation}]` → the key and generation;
/// anything else → `None`.
fn parse_partition_dir(name: &str) -> Option<(PartitionKey, u64)> {
    let (q, rest) = name.strip_prefix('q')?.split_once("-p")?;
    let (p, generation) = match rest.split_once("-g") {
        Some((p, g)) => (p, Some(g)),
        None => (rest, None),
    };
    let number = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !number(q) || !number(p) || generation.is_some_and(|g| !number(g)) {
        return None;
    }
    let key = PartitionKey {
        queue: QueueId(q.parse().ok()?),
        partition: PartitionId(p.parse().ok()?),
    };
    let generation = match generation {
        Some(g) => g.parse().ok().filter(|g| *g != 0)?,
        None => 0,
    };
    Some((key, generation))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_directory_names_round_trip_and_others_are_ignored() {
        let key = PartitionKey {
            queue: QueueId(12),
            partition: PartitionId(3),
        };
        assert_eq!(parse_partition_dir("q12-p3"), Some((key, 0)));
        assert_eq!(parse_partition_dir("q12-p3-g7"), Some((key, 7)));
        assert_eq!(
            parse_partition_dir(&generation_dir_name(key, 7)),
            Some((key, 7))
        );
        for other in [
            "checkpoint",
            "q-p1",
            "q1-p",
            "q1-p+2",
            "x1-p2",
            "q1p2",
            "q1-p2-g",
            "q1-p2-g0",
            "q1-p2-gx",
        ] {
            assert_eq!(parse_partition_dir(other), None, "{other}");
        }
    }
}
