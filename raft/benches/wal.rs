//! Group commit of the node WAL: `writers` threads, each a group, append one
//! 1 KiB entry and wait until it is durable before the next, as a Raft
//! append does. With one writer every write pays a whole fsync; with more,
//! writes share fsync rounds. Prints fsync rounds per write after each run.
//!
//! Run: `cargo bench -p sluice-raft --bench wal` (files under
//! `$SLUICE_BENCH_DIR`, default the system temp dir).

use std::path::PathBuf;
use std::sync::{Arc, Barrier, mpsc};
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use sluice_raft::{GroupId, LogIndex, Wal};

fn bench_dir() -> tempfile::TempDir {
    let root = std::env::var_os("SLUICE_BENCH_DIR").map_or_else(std::env::temp_dir, PathBuf::from);
    tempfile::Builder::new()
        .prefix("wal")
        .tempdir_in(root)
        .expect("tempdir")
}

fn group_commit(c: &mut Criterion) {
    let mut g = c.benchmark_group("wal");
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(6));
    for writers in [1usize, 4, 16, 64] {
        g.throughput(Throughput::Elements(writers as u64));
        g.bench_function(BenchmarkId::new("append_1KiB_wait_durable", writers), |b| {
            let dir = bench_dir();
            let wal = Arc::new(Wal::open(dir.path()).expect("open"));
            let next: Arc<Vec<std::sync::atomic::AtomicU64>> =
                Arc::new((0..writers).map(|_| std::sync::atomic::AtomicU64::new(0)).collect());
            let payload = Bytes::from(vec![7u8; 1024]);
            let before = wal.stats();
            b.iter_custom(|iters| {
                let barrier = Arc::new(Barrier::new(writers + 1));
                let threads: Vec<_> = (0..writers)
                    .map(|w| {
                        let (wal, next, payload, barrier) =
                            (Arc::clone(&wal), Arc::clone(&next), payload.clone(), Arc::clone(&barrier));
                        std::thread::spawn(move || {
                            barrier.wait();
                            for _ in 0..iters {
                                let index = next[w].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                                let (tx, rx) = mpsc::channel();
                                wal.append_entries(
                                    GroupId(w as u32),
                                    [(LogIndex(index), payload.clone())],
                                    Box::new(move |r| drop(tx.send(r))),
                                )
                                .expect("append");
                                rx.recv().expect("callback").expect("durable");
                            }
                        })
                    })
                    .collect();
                barrier.wait();
                let start = Instant::now();
                for t in threads {
                    t.join().expect("writer");
                }
                start.elapsed()
            });
            let after = wal.stats();
            let writes = after.flushed_writes - before.flushed_writes;
            let rounds = after.flush_rounds - before.flush_rounds;
            eprintln!(
                "wal/{writers} writers: {writes} writes in {rounds} fsync rounds ({:.1} writes per round)",
                writes as f64 / rounds.max(1) as f64
            );
        });
    }
    g.finish();
}

criterion_group!(benches, group_commit);
criterion_main!(benches);
