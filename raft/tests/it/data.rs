//! The data group's state machine on its own: deterministic produce,
//! idempotent producers and request retries, put/delete visibility, and
//! checkpoint + replay after a crash (simulated disk) giving back exactly
//! the offsets, timestamps and ids that were lost.

use std::sync::Arc;

use sluice_engine::sim::{CrashMode, SimDisk};
use sluice_engine::{LogConfig, MessageId, Offset, Record, Timestamp};
use sluice_raft::data::command::{
    DataCommand, DataProposal, DataReply, NewMessage, Produce, Produced, PutMessage, Refusal,
};
use sluice_raft::data::machine::DataMachine;
use sluice_raft::data::message_id::message_id;
use sluice_raft::{GroupId, PartitionId, PartitionKey, ProducerId, QueueId, RequestId};

const GROUP: GroupId = GroupId(3);
const Q: QueueId = QueueId(41);
const DIR: &str = "/node/groups/3";

fn open(disk: &SimDisk) -> DataMachine {
    let config = LogConfig {
        segment_bytes_max: 4096,
        index_interval_bytes: 256,
        ..sluice_raft::node::partition_log_config_default()
    };
    DataMachine::open(Arc::new(disk.clone()), DIR, GROUP, config).expect("open")
}

fn t(secs: u64) -> Timestamp {
    Timestamp::from_secs(1_700_000_000 + secs)
}

fn propose(m: &mut DataMachine, request: u128, at: Timestamp, command: DataCommand) -> DataReply {
    m.apply(DataProposal {
        request_id: RequestId(request),
        proposed_at: at,
        command,
    })
    .expect("apply")
}

fn message(partition: u32, body: &str) -> NewMessage {
    NewMessage {
        partition: PartitionId(partition),
        ttl_secs: 3600,
        sequence: None,
        content_type: Some("text/plain".into()),
        headers: vec![("trace".into(), b"abc".to_vec())],
        body: body.as_bytes().to_vec(),
    }
}

fn produce(messages: Vec<NewMessage>) -> DataCommand {
    DataCommand::Produce(Produce {
        queue: Q,
        producer: None,
        messages,
    })
}

fn produced(reply: DataReply) -> Produced {
    match reply {
        DataReply::Produced(p) => p,
        other => panic!("not produced: {other:?}"),
    }
}

fn key(partition: u32) -> PartitionKey {
    PartitionKey {
        queue: Q,
        partition: PartitionId(partition),
    }
}

/// Every record readers see in a partition, with its body.
fn visible(m: &DataMachine, partition: u32, now: Timestamp) -> Vec<(Offset, MessageId, String)> {
    let p = m.partition(key(partition)).expect("partition");
    let records: Vec<Record> = p
        .log()
        .read(p.log().start_offset(), 10_000, usize::MAX)
        .expect("read");
    records
        .into_iter()
        .filter(|r| p.is_visible(r, now))
        .map(|r| {
            (
                r.offset,
                r.id,
                String::from_utf8_lossy(&r.payload).into_owned(),
            )
        })
        .collect()
}

fn create(m: &mut DataMachine, request: u128, partitions: u32) {
    let reply = propose(
        m,
        request,
        t(0),
        DataCommand::CreateQueue {
            queue: Q,
            partitions,
        },
    );
    assert_eq!(reply, DataReply::Done);
}

#[test]
fn a_batch_applies_each_proposal_as_if_alone_and_retries_write_nothing() {
    let disk = SimDisk::new();
    let mut m = open(&disk);
    create(&mut m, 1, 1);
    let inner = |request: u128, command: DataCommand| DataProposal {
        request_id: RequestId(request),
        proposed_at: t(10),
        command,
    };
    let first = inner(2, produce(vec![message(0, "a")]));
    let refused = inner(3, produce(vec![message(5, "no such partition")]));
    let nested = inner(4, DataCommand::Batch(vec![]));
    let second = inner(5, produce(vec![message(0, "b")]));
    let batch = DataCommand::Batch(vec![first.clone(), refused, nested, second]);
    let DataReply::Batch(replies) = propose(&mut m, 6, t(10), batch) else {
        panic!("not a batch reply");
    };
    assert_eq!(replies.len(), 4);
    assert!(matches!(replies[0], DataReply::Produced(_)));
    assert!(matches!(
        replies[1],
        DataReply::Refused(Refusal::UnknownPartition { .. })
    ));
    assert!(matches!(
        replies[2],
        DataReply::Refused(Refusal::Undecodable(_))
    ));
    // An inner proposal retried alone (or in another batch) gets its first
    // answer and writes nothing.
    assert_eq!(propose(&mut m, 2, t(11), first.command), replies[0]);
    let again = DataCommand::Batch(vec![inner(5, produce(vec![message(0, "b")]))]);
    let DataReply::Batch(again) = propose(&mut m, 7, t(12), again) else {
        panic!("not a batch reply");
    };
    assert_eq!(again[0], replies[3]);
    let bodies: Vec<String> = visible(&m, 0, t(13)).into_iter().map(|r| r.2).collect();
    assert_eq!(bodies, vec!["a", "b"]);
}

#[test]
fn a_batch_of_produces_lands_exactly_as_its_proposals_would_one_at_a_time() {
    let at = |secs: u64, request: u128, command: DataCommand| DataProposal {
        request_id: RequestId(request),
        proposed_at: t(secs),
        command,
    };
    let sequenced = NewMessage {
        sequence: Some(0),
        ..message(1, "idempotent")
    };
    // Plain produces over three partitions, proposed at times that go
    // back and forth; a refused one; an idempotent one (applied alone, in
    // order, between the others); and a request sent twice.
    let proposals = vec![
        at(
            10,
            2,
            produce(vec![message(0, "a"), message(2, "b"), message(0, "c")]),
        ),
        at(9, 3, produce(vec![message(1, "d")])),
        at(12, 4, produce(vec![message(7, "no such partition")])),
        at(12, 5, produce(vec![message(2, "e"), message(1, "f")])),
        at(
            12,
            6,
            DataCommand::Produce(Produce {
                queue: Q,
                producer: Some(ProducerId(9)),
                messages: vec![sequenced],
            }),
        ),
        at(11, 7, produce(vec![message(1, "g"), message(0, "h")])),
        at(11, 7, produce(vec![message(1, "g"), message(0, "h")])),
        at(20, 8, produce(vec![])),
        at(20, 9, produce(vec![message(0, "i")])),
    ];
    let batched_disk = SimDisk::new();
    let mut batched = open(&batched_disk);
    create(&mut batched, 1, 3);
    let DataReply::Batch(replies) = propose(
        &mut batched,
        100,
        t(20),
        DataCommand::Batch(proposals.clone()),
    ) else {
        panic!("not a batch reply");
    };
    let alone_disk = SimDisk::new();
    let mut alone = open(&alone_disk);
    create(&mut alone, 1, 3);
    let one_by_one: Vec<DataReply> = proposals
        .into_iter()
        .map(|p| alone.apply(p).expect("apply"))
        .collect();
    assert_eq!(replies, one_by_one);
    assert!(matches!(
        replies[2],
        DataReply::Refused(Refusal::UnknownPartition { .. })
    ));
    assert_eq!(replies[5], replies[6], "the repeat got the first answer");
    for partition in 0..3 {
        assert_eq!(
            visible(&batched, partition, t(21)),
            visible(&alone, partition, t(21)),
            "partition {partition}"
        );
    }
    let bodies: Vec<String> = visible(&batched, 1, t(21))
        .into_iter()
        .map(|r| r.2)
        .collect();
    assert_eq!(bodies, vec!["d", "f", "idempotent", "g"]);
}

#[test]
fn produce_is_deterministic_and_placements_follow_the_request() {
    let disk = SimDisk::new();
    let mut m = open(&disk);
    create(&mut m, 1, 2);
    let batch = vec![message(0, "a"), message(1, "b"), message(0, "c")];
    let partitions: Vec<PartitionId> = batch.iter().map(|m| m.partition).collect();
    let reply = produced(propose(&mut m, 2, t(10), produce(batch)));
    let placed = reply.placements(&partitions).expect("placements");
    assert_eq!(
        placed
            .iter()
            .map(|p| (p.partition.0, p.offset.0))
            .collect::<Vec<_>>(),
        vec![(0, 0), (1, 0), (0, 1)]
    );
    // The leader's clock went backwards: timestamps still increase.
    let reply = produced(propose(&mut m, 3, t(5), produce(vec![message(0, "d")])));
    let d = reply.placements(&[PartitionId(0)]).expect("placement")[0];
    assert_eq!(d.offset, Offset(2));
    assert_eq!(d.timestamp, Timestamp(t(10).0 + 2));
    let seen = visible(&m, 0, t(11));
    assert_eq!(
        seen.iter().map(|(_, _, b)| b.as_str()).collect::<Vec<_>>(),
        vec!["a", "c", "d"]
    );
    assert_eq!(seen[2].1, message_id(d.timestamp, GROUP, PartitionId(0)));
    let p = m.partition(key(0)).expect("partition");
    let record = p.get(&seen[2].1, t(11)).expect("get").expect("found by id");
    assert_eq!(record.header(":ct"), Some(&b"text/plain"[..]));
    assert_eq!(record.header("trace"), Some(&b"abc"[..]));
    assert!(
        visible(&m, 0, t(10 + 3601)).is_empty(),
        "everything expired after its TTL"
    );
}

#[test]
fn bad_requests_are_refused_whole() {
    let disk = SimDisk::new();
    let mut m = open(&disk);
    create(&mut m, 1, 2);
    let mut reserved = message(0, "x");
    reserved.headers.push((":k".into(), b"t".to_vec()));
    let cases = [
        (
            vec![message(0, "ok"), message(2, "no such partition")],
            "partition",
        ),
        (vec![message(0, "ok"), reserved], "reserved header"),
        (
            vec![
                message(1, "ok"),
                NewMessage {
                    body: vec![0; sluice_engine::limits::RECORD_PAYLOAD_BYTES_MAX + 1],
                    ..message(0, "")
                },
            ],
            "too large",
        ),
    ];
    for (i, (batch, why)) in cases.into_iter().enumerate() {
        let reply = propose(&mut m, 10 + i as u128, t(1), produce(batch));
        assert!(matches!(reply, DataReply::Refused(_)), "{why}: {reply:?}");
    }
    assert_eq!(
        propose(
            &mut m,
            20,
            t(1),
            DataCommand::Produce(Produce {
                queue: QueueId(999),
                producer: None,
                messages: vec![message(0, "x")],
            })
        ),
        DataReply::Refused(Refusal::UnknownQueue(QueueId(999)))
    );
    for p in 0..2 {
        assert!(visible(&m, p, t(2)).is_empty(), "nothing was written");
    }
    assert!(matches!(
        propose(
            &mut m,
            21,
            t(1),
            DataCommand::CreateQueue {
                queue: Q,
                partitions: 1
            }
        ),
        DataReply::Refused(Refusal::PartitionsShrink { partitions: 2 })
    ));
}

#[test]
fn retries_and_idempotent_producers_write_once() {
    let disk = SimDisk::new();
    let mut m = open(&disk);
    create(&mut m, 1, 1);
    let first = propose(&mut m, 7, t(1), produce(vec![message(0, "once")]));
    let retry = propose(&mut m, 7, t(9), produce(vec![message(0, "once")]));
    assert_eq!(first, retry, "a retried request gets its first reply");
    assert_eq!(visible(&m, 0, t(10)).len(), 1);

    let sequenced = |from: u64, n: u64| {
        DataCommand::Produce(Produce {
            queue: Q,
            producer: Some(ProducerId(5)),
            messages: (from..from + n)
                .map(|s| NewMessage {
                    sequence: Some(s),
                    ..message(0, &format!("seq {s}"))
                })
                .collect(),
        })
    };
    let a = produced(propose(&mut m, 100, t(2), sequenced(0, 3)));
    let again = produced(propose(&mut m, 101, t(3), sequenced(0, 3)));
    assert_eq!(a, again, "a duplicate run gets the original offsets");
    assert_eq!(visible(&m, 0, t(10)).len(), 4, "and writes nothing");
    assert_eq!(
        propose(&mut m, 102, t(3), sequenced(5, 1)),
        DataReply::Refused(Refusal::OutOfSequence {
            partition: PartitionId(0),
            expected: 3
        })
    );
    assert!(matches!(
        propose(&mut m, 103, t(3), sequenced(2, 2)),
        DataReply::Refused(Refusal::OutOfSequence { .. })
    ));
    let next = produced(propose(&mut m, 104, t(3), sequenced(3, 1)));
    assert_eq!(next.runs[0].1.offset, Offset(4));
    let mut missing = sequenced(4, 1);
    if let DataCommand::Produce(p) = &mut missing {
        p.messages[0].sequence = None;
    }
    assert!(matches!(
        propose(&mut m, 105, t(3), missing),
        DataReply::Refused(Refusal::BadSequence { index: 0 })
    ));
}

#[test]
fn puts_supersede_deletes_tombstone_and_readers_see_only_the_latest() {
    let disk = SimDisk::new();
    let mut m = open(&disk);
    create(&mut m, 1, 1);
    produced(propose(
        &mut m,
        2,
        t(1),
        produce(vec![message(0, "a"), message(0, "b")]),
    ));
    let ids: Vec<MessageId> = visible(&m, 0, t(2))
        .into_iter()
        .map(|(_, id, _)| id)
        .collect();
    let put = |id, body: &str| PutMessage {
        partition: PartitionId(0),
        id,
        ttl_secs: 60,
        content_type: None,
        body: body.as_bytes().to_vec(),
    };
    // A client-chosen id (version 1, far in the past) is created.
    let chosen = message_id(
        Timestamp::from_secs(1_000_000_000),
        GroupId(9),
        PartitionId(9),
    );
    let reply = propose(
        &mut m,
        3,
        t(2),
        DataCommand::Put {
            queue: Q,
            messages: vec![put(ids[0], "a2"), put(chosen, "new")],
        },
    );
    assert_eq!(reply, DataReply::Done);
    let bodies = |m: &DataMachine| -> Vec<String> {
        visible(m, 0, t(3)).into_iter().map(|(_, _, b)| b).collect()
    };
    assert_eq!(bodies(&m), vec!["b", "a2", "new"]);
    propose(
        &mut m,
        4,
        t(3),
        DataCommand::Delete {
            queue: Q,
            ids: vec![
                (PartitionId(0), ids[1]),
                (PartitionId(0), chosen),
                (PartitionId(7), chosen),
            ],
        },
    );
    assert_eq!(bodies(&m), vec!["a2"]);
    let p = m.partition(key(0)).expect("partition");
    assert!(p.get(&ids[1], t(4)).expect("get").is_none());
    let a2 = p.get(&ids[0], t(4)).expect("get").expect("live");
    assert_eq!(&a2.payload[..], b"a2");
    assert_eq!(
        a2.timestamp,
        sluice_raft::data::message_id::timestamp_of(&ids[0]).expect("v1")
    );
    // Deletes survive a checkpoint and restart.
    m.checkpoint(Vec::new(), t(4)).expect("checkpoint");
    drop(m);
    let m = open(&disk);
    assert_eq!(bodies(&m), vec!["a2"]);
}

/// The state of a machine that the replay must reproduce exactly.
fn fingerprint(m: &DataMachine) -> Vec<(u32, Offset, MessageId, Timestamp, Vec<u8>)> {
    let mut out = Vec::new();
    for (&queue, &count) in m.queues() {
        for p in 0..count {
            let k = PartitionKey {
                queue,
                partition: PartitionId(p),
            };
            let log = m.partition(k).expect("partition").log();
            for r in log
                .read(log.start_offset(), 100_000, usize::MAX)
                .expect("read")
            {
                out.push((p, r.offset, r.id, r.timestamp, r.payload.to_vec()));
            }
        }
    }
    out
}

#[test]
fn a_crash_after_a_checkpoint_replays_to_the_same_state() {
    let commands: Vec<(u128, Timestamp, DataCommand)> = (0..40u64)
        .map(|i| {
            let command = match i {
                0 => DataCommand::CreateQueue {
                    queue: Q,
                    partitions: 2,
                },
                15 => DataCommand::CreateQueue {
                    queue: Q,
                    partitions: 3,
                },
                25 => DataCommand::CreateQueue {
                    queue: QueueId(50),
                    partitions: 1,
                },
                30 => DataCommand::DropQueue { queue: QueueId(50) },
                _ => produce(
                    (0..(1 + i % 7))
                        .map(|j| {
                            message(
                                ((i + j) % 2) as u32,
                                &format!("m{i}-{j}-{}", "x".repeat((i * 37 % 300) as usize)),
                            )
                        })
                        .collect(),
                ),
            };
            (u128::from(i) + 1, t(i / 3), command)
        })
        .collect();
    // The reference: everything applied, never crashed.
    let reference_disk = SimDisk::new();
    let mut reference = open(&reference_disk);
    for (id, at, c) in &commands {
        propose(&mut reference, *id, *at, c.clone());
    }
    let want = fingerprint(&reference);
    for checkpoint_at in [0usize, 10, 20, 28, 35] {
        for (seed, mode) in CrashMode::ALL.iter().enumerate() {
            let disk = SimDisk::new();
            let mut m = open(&disk);
            for (i, (id, at, c)) in commands.iter().enumerate() {
                if i == checkpoint_at {
                    m.checkpoint(format!("raft state {i}").into_bytes(), *at)
                        .expect("checkpoint");
                }
                propose(&mut m, *id, *at, c.clone());
            }
            drop(m);
            let crashed = disk.crash(*mode, seed as u64);
            let mut m = open(&crashed);
            let raft_state = format!("raft state {checkpoint_at}").into_bytes();
            assert_eq!(
                m.raft_state(),
                &raft_state[..],
                "the checkpoint's Raft state"
            );
            // Replay the "WAL" from the checkpoint on.
            for (id, at, c) in &commands[checkpoint_at..] {
                propose(&mut m, *id, *at, c.clone());
            }
            let got = fingerprint(&m);
            let first_difference = got.iter().zip(&want).position(|(a, b)| a != b);
            assert!(
                got.len() == want.len() && first_difference.is_none(),
                "checkpoint before command {checkpoint_at}, {mode:?}: {} records, want {}; \
                 first difference at record {first_difference:?}",
                got.len(),
                want.len()
            );
            assert_eq!(m.queue_partitions(QueueId(50)), None);
        }
    }
}

/// Goal: retention runs at checkpoints without deleting files under the
/// machine's write lock. A checkpoint takes expired segments out of their
/// logs (readers no longer see them); the next checkpoint's write step
/// deletes their files; a crash in between leaves them on disk, where a
/// reopen finds them (and the next checkpoint retires them again).
#[test]
fn expired_segments_leave_at_one_checkpoint_and_the_disk_at_the_next() {
    let disk = SimDisk::new();
    let mut m = open(&disk);
    create(&mut m, 1, 1);
    let body = "e".repeat(900);
    for i in 0..20u64 {
        propose(
            &mut m,
            10 + u128::from(i),
            t(10),
            produce(vec![message(0, &body)]),
        );
    }
    let files = |disk: &SimDisk| {
        disk.file_names(std::path::Path::new(&format!("{DIR}/q{}-p0", Q.0)))
            .into_iter()
            .filter(|n| n.ends_with(".log"))
            .count()
    };
    m.checkpoint(Vec::new(), t(11))
        .expect("checkpoint seals the segments");
    let before = files(&disk);
    assert!(before > 3, "{before} segment files");
    // An hour and more later every message has expired.
    let later = t(10 + 3601);
    propose(&mut m, 100, later, produce(vec![message(0, "live")]));
    m.checkpoint(Vec::new(), later).expect("checkpoint retires");
    let start = m.partition(key(0)).expect("partition").log().start_offset();
    assert!(start > Offset(0), "expired segments left the log");
    assert_eq!(
        files(&disk),
        before,
        "their files wait for the next checkpoint"
    );
    // A crash now (the machine keeps running on `disk`): the image
    // reopens with the files still there.
    let image = disk.crash(CrashMode::LoseAll, 1);
    let reopened = open(&image);
    assert_eq!(
        reopened
            .partition(key(0))
            .expect("partition")
            .log()
            .start_offset(),
        Offset(0),
        "a reopen finds the files again"
    );
    m.checkpoint(Vec::new(), later).expect("checkpoint deletes");
    assert!(files(&disk) < before, "deleted by the next checkpoint");
    let bodies: Vec<String> = visible(&m, 0, later).into_iter().map(|r| r.2).collect();
    assert_eq!(bodies, vec!["live"]);
}
