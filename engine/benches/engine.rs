//! Criterion benchmarks of the engine beside the raw loops they are judged
//! against (docs/benchmarks.md has the figures and how to read them).
//!
//! Run: `cargo bench -p sluice-engine --bench engine` (release profile).
//! Files go under `$SLUICE_BENCH_DIR` (default: the system temp dir), on the
//! disk being measured. The reopen benchmark builds a log of
//! `$SLUICE_BENCH_REOPEN_GIB` GiB (default 10) once.

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use criterion::measurement::WallTime;
use criterion::{
    BenchmarkGroup, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main,
};
use sluice_engine::{Batch, Log, LogConfig, MessageId, NewRecord, Offset, Timestamp};

const MIB: usize = 1024 * 1024;
/// Upper bound on bytes appended without fsync in one sample, so the kernel's
/// dirty-page throttling does not turn a memory benchmark into a disk one.
const UNFLUSHED_BYTES_PER_SAMPLE_MAX: usize = 1024 * MIB;

fn bench_dir(name: &str) -> tempfile::TempDir {
    let root = std::env::var_os("SLUICE_BENCH_DIR").map_or_else(std::env::temp_dir, PathBuf::from);
    std::fs::create_dir_all(&root).expect("bench dir");
    tempfile::Builder::new()
        .prefix(name)
        .tempdir_in(root)
        .expect("tempdir")
}

/// A group of few, long samples: each sample does real I/O.
fn group<'a>(
    c: &'a mut Criterion,
    name: &str,
    measurement_secs: u64,
) -> BenchmarkGroup<'a, WallTime> {
    let mut g = c.benchmark_group(name);
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(measurement_secs));
    g
}

/// Times `iters` MiB-sized write steps, at most a GiB per fresh directory:
/// `setup` opens what `write` writes to in each directory; creating,
/// opening and removing are outside the clock.
fn time_per_fresh_gib<T>(
    iters: u64,
    name: &str,
    mut setup: impl FnMut(&Path) -> T,
    mut write: impl FnMut(&mut T, usize),
) -> Duration {
    let mut elapsed = Duration::ZERO;
    let mut left = iters as usize;
    while left > 0 {
        let steps = left.min(UNFLUSHED_BYTES_PER_SAMPLE_MAX / MIB);
        let dir = bench_dir(name);
        let mut target = setup(dir.path());
        let start = Instant::now();
        write(&mut target, steps);
        elapsed += start.elapsed();
        left -= steps;
    }
    elapsed
}

fn record(n: u64, size: usize) -> NewRecord {
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&n.to_be_bytes());
    NewRecord {
        timestamp: Timestamp(n),
        expires_at: Timestamp::NEVER,
        id: MessageId(id),
        headers: vec![],
        payload: vec![(n % 251) as u8; size].into(),
    }
}

/// Fills `batch` with `count` records of `size` bytes: the producer's work
/// of encoding and checksumming, counted in every engine figure.
fn fill(batch: &mut Batch, records: &[NewRecord]) {
    batch.clear();
    for r in records {
        batch.push(r).expect("push");
    }
}

/// The machine's limits: raw write + fdatasync and cached reads, no engine.
fn raw_disk(c: &mut Criterion) {
    let mut g = group(c, "raw", 8);
    for size in [MIB, 4096] {
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_function(BenchmarkId::new("append_fdatasync", size), |b| {
            let dir = bench_dir("raw-sync");
            let file = OpenOptions::new()
                .create(true)
                .truncate(true)
                .write(true)
                .open(dir.path().join("f"))
                .expect("open");
            let buf = vec![7u8; size];
            let mut pos = 0u64;
            b.iter(|| {
                file.write_all_at(&buf, pos).expect("write");
                file.sync_data().expect("sync");
                pos += size as u64;
                if pos >= 1024 * MIB as u64 {
                    file.set_len(0).expect("reset");
                    pos = 0;
                }
            });
        });
    }
    g.throughput(Throughput::Bytes(MIB as u64));
    g.bench_function("append_no_sync/1048576", |b| {
        // The same discipline as the engine's no-flush figure: at most 1 GiB
        // to a fresh file, created and removed outside the clock.
        let buf = vec![7u8; MIB];
        b.iter_custom(|iters| {
            let open = |dir: &Path| {
                OpenOptions::new()
                    .create(true)
                    .truncate(true)
                    .write(true)
                    .open(dir.join("f"))
                    .expect("open")
            };
            time_per_fresh_gib(iters, "raw-nosync", open, |file, steps| {
                for i in 0..steps {
                    file.write_all_at(&buf, (i * MIB) as u64).expect("write");
                }
            })
        });
    });
    g.throughput(Throughput::Bytes(MIB as u64 * 256));
    g.bench_function("read_cached_256MiB", |b| {
        let dir = bench_dir("raw-read");
        let path = dir.path().join("f");
        std::fs::write(&path, vec![3u8; 256 * MIB]).expect("write");
        let mut buf = vec![0u8; MIB];
        b.iter(|| {
            let mut f = File::open(&path).expect("open");
            let mut total = 0usize;
            loop {
                let n = f.read(&mut buf).expect("read");
                if n == 0 {
                    break;
                }
                total += n;
            }
            assert_eq!(total, 256 * MIB);
        });
    });
    g.finish();
}

/// 1 KiB records in 1 MiB batches, one flush per batch.
fn append_flush(c: &mut Criterion) {
    let mut g = group(c, "engine", 8);
    for (record_size, per_batch) in [(1024usize, 1024usize), (4096, 1)] {
        g.throughput(Throughput::Bytes((record_size * per_batch) as u64));
        let name = format!("append_flush/{}x{}B", per_batch, record_size);
        g.bench_function(name, |b| {
            let dir = bench_dir("append-flush");
            let mut log = Log::open(dir.path(), LogConfig::default()).expect("open");
            let records: Vec<NewRecord> = (0..per_batch as u64)
                .map(|n| record(n, record_size))
                .collect();
            let mut batch = Batch::with_capacity(per_batch * (record_size + 64));
            b.iter(|| {
                fill(&mut batch, &records);
                log.append(&mut batch).expect("append");
                log.flush().expect("flush");
            });
        });
    }
    g.finish();
}

/// Appends without fsync: the engine's CPU and page-cache cost.
fn append_no_flush(c: &mut Criterion) {
    let mut g = group(c, "engine", 8);
    g.throughput(Throughput::Bytes(MIB as u64));
    let records: Vec<NewRecord> = (0..1024u64).map(|n| record(n, 1024)).collect();
    g.bench_function("batch_build/1024x1024B", |b| {
        // Encoding and checksumming alone, no I/O: the engine's CPU share.
        let mut batch = Batch::with_capacity(MIB + 128 * 1024);
        b.iter(|| {
            fill(&mut batch, &records);
            batch.records_crc()
        });
    });
    g.bench_function("append_no_flush/1024x1024B", |b| {
        let mut batch = Batch::with_capacity(MIB + 128 * 1024);
        b.iter_custom(|iters| {
            let open = |dir: &Path| Log::open(dir, LogConfig::default()).expect("open");
            time_per_fresh_gib(iters, "append-noflush", open, |log, steps| {
                for _ in 0..steps {
                    fill(&mut batch, &records);
                    log.append(&mut batch).expect("append");
                }
            })
        });
    });
    g.finish();
}

/// Sequential read of sealed segments from the page cache, each pass on a
/// freshly opened log, so every batch's CRCs are verified on the way.
fn read_sequential(c: &mut Criterion) {
    let mut g = group(c, "engine", 8);
    let dir = bench_dir("read");
    let total_mib = 256usize;
    {
        let mut log = Log::open(dir.path(), LogConfig::default()).expect("open");
        let records: Vec<NewRecord> = (0..1024u64).map(|n| record(n, 1024)).collect();
        let mut batch = Batch::new();
        for _ in 0..total_mib {
            fill(&mut batch, &records);
            log.append(&mut batch).expect("append");
        }
        log.roll().expect("seal the last segment");
    }
    g.throughput(Throughput::Bytes((total_mib * MIB) as u64));
    g.bench_function("read_sealed_256MiB_first_pass", |b| {
        b.iter(|| {
            let log = Log::open(dir.path(), LogConfig::default()).expect("open");
            let mut at = log.start_offset();
            let mut bytes = 0usize;
            while at < log.next_offset() {
                let records = log.read(at, 4096, 4 * MIB).expect("read");
                bytes += records.iter().map(|r| r.payload.len()).sum::<usize>();
                at = records.last().expect("records").offset.plus(1);
            }
            assert_eq!(bytes, total_mib * MIB);
        });
    });
    g.finish();
}

/// Reopen of a large log of sealed 64 MiB segments.
fn reopen(c: &mut Criterion) {
    let gib: usize = std::env::var("SLUICE_BENCH_REOPEN_GIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let mut g = group(c, "engine", 5);
    let dir = bench_dir("reopen");
    {
        let mut log = Log::open(dir.path(), LogConfig::default()).expect("open");
        let records: Vec<NewRecord> = (0..1024u64).map(|n| record(n, 1024)).collect();
        let mut batch = Batch::new();
        for i in 0..gib * 1024 {
            fill(&mut batch, &records);
            log.append(&mut batch).expect("append");
            if i % 1024 == 1023 {
                // Keep dirty pages bounded while building.
                log.flush().expect("flush");
            }
        }
        log.flush().expect("flush");
    }
    let segments = Log::open(dir.path(), LogConfig::default())
        .expect("open")
        .segment_bases()
        .len();
    eprintln!("reopen: {gib} GiB in {segments} segments");
    g.bench_function(format!("reopen_{gib}GiB_{segments}_segments"), |b| {
        b.iter(|| {
            let log = Log::open(dir.path(), LogConfig::default()).expect("open");
            assert!(log.next_offset() > Offset(0));
        });
    });
    g.finish();
}

criterion_group!(
    benches,
    raw_disk,
    append_flush,
    append_no_flush,
    read_sequential,
    reopen
);
criterion_main!(benches);
