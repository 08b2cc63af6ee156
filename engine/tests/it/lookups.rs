//! Goal: time and id lookups agree with a linear search of a model, with
//! timestamps in any order, and survive lost or stale index files.

use proptest::prelude::*;
use sluice_engine::{Batch, Log, LogConfig, MessageId, NewRecord, Offset, Timestamp};

use crate::common::{append_records, assert_records, read_all, small_config};

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Method: random (often out-of-order) timestamps and a small id space,
    /// then every lookup compared with a scan of the model.
    #[test]
    fn time_and_id_lookups_match_a_linear_scan(
        timestamps in prop::collection::vec(0u64..500, 1..300),
        per_batch in 1usize..9,
        probes in prop::collection::vec(0u64..520, 1..20),
    ) {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = LogConfig { segment_bytes_max: 4096, index_interval_bytes: 128, ..LogConfig::default() };
        let mut log = Log::open(dir.path(), config).expect("open");
        let records: Vec<NewRecord> = timestamps
            .iter()
            .enumerate()
            .map(|(i, &t)| NewRecord::new(Timestamp(t), MessageId([(i % 7) as u8; 16]), vec![0u8; 40]))
            .collect();
        for chunk in records.chunks(per_batch) {
            log.append(&mut Batch::from_records(chunk).expect("batch")).expect("append");
        }
        for &t in &probes {
            let expected = records.iter().position(|r| r.timestamp.0 >= t).map_or(records.len(), |i| i);
            prop_assert_eq!(log.offset_for_timestamp(Timestamp(t)).expect("lookup"), Offset(expected as u64));
        }
        let n = records.len() as u64;
        for &p in &probes {
            let (from, to) = (p % (n + 1), (p * 7) % (n + 1));
            let id = MessageId([(p % 7) as u8; 16]);
            let expected = (from..to).rev().find(|&o| records[o as usize].id == id);
            let found = log.find_by_id(&id, Offset(from), Offset(to)).expect("find");
            prop_assert_eq!(found.map(|r| r.offset.0), expected);
        }
    }
}

/// Goal: index files are caches. Method: delete them, then damage them
/// (stale contents and garbage); reopen each time and check that reads and
/// lookups still work and that the files come back valid.
#[test]
fn lost_or_damaged_indexes_are_rebuilt() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = Log::open(dir.path(), small_config()).expect("open");
    append_records(&mut log, 400, 3, 0, 100);
    log.flush().expect("flush");
    drop(log);

    let index_files = || -> Vec<std::path::PathBuf> {
        let mut v: Vec<_> = std::fs::read_dir(dir.path())
            .expect("dir")
            .map(|e| e.expect("entry").path())
            .filter(|p| {
                p.extension()
                    .is_some_and(|e| e == "index" || e == "timeindex")
            })
            .collect();
        v.sort();
        v
    };
    let originals: Vec<Vec<u8>> = index_files()
        .iter()
        .map(|p| std::fs::read(p).expect("read"))
        .collect();
    assert!(originals.len() >= 4, "several sealed segments expected");

    for damage in ["delete", "garbage", "other segment's"] {
        let files = index_files();
        for (i, path) in files.iter().enumerate() {
            match damage {
                "delete" => std::fs::remove_file(path).expect("rm"),
                "garbage" => std::fs::write(path, b"not an index").expect("write"),
                _ => std::fs::write(path, &originals[(i + 2) % originals.len()]).expect("write"),
            }
        }
        let log = Log::open(dir.path(), small_config()).expect("reopen");
        assert_records(&read_all(&log), 0, 0);
        assert_eq!(
            log.offset_for_timestamp(Timestamp(1_000_000 + 2500))
                .expect("t"),
            Offset(250)
        );
        drop(log);
        let rebuilt: Vec<Vec<u8>> = index_files()
            .iter()
            .map(|p| std::fs::read(p).expect("read"))
            .collect();
        assert_eq!(
            rebuilt, originals,
            "after {damage} indexes, the rebuilt files equal the originals"
        );
    }
}
