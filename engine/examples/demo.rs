//! A tour of the engine: append, flush, reopen, read, look up by time and
//! id. Run with `cargo run --release -p sluice-engine --example demo [DIR]`.

use std::time::Instant;

use sluice_engine::{Batch, EngineError, Log, LogConfig, MessageId, NewRecord, Offset, Timestamp};

const BATCHES: u64 = 200;
const RECORDS_PER_BATCH: u64 = 500;

fn main() -> Result<(), EngineError> {
    let given = std::env::args().nth(1).map(std::path::PathBuf::from);
    let dir = given.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("sluice-demo-{}", std::process::id()))
    });
    let config = LogConfig {
        segment_bytes_max: 16 * 1024 * 1024,
        ..LogConfig::default()
    };
    println!("log directory: {}", dir.display());

    let started = Instant::now();
    let mut log = Log::open(&dir, config.clone())?;
    let first = log.next_offset();
    let t0 = Timestamp::now();
    let mut batch = Batch::new();
    for b in 0..BATCHES {
        batch.clear();
        for r in 0..RECORDS_PER_BATCH {
            let n = b * RECORDS_PER_BATCH + r;
            let mut id = [0u8; 16];
            id[..8].copy_from_slice(&(first.0 + n).to_be_bytes());
            let record = NewRecord {
                timestamp: Timestamp(t0.0 + n),
                expires_at: t0.plus_secs(3600),
                id: MessageId(id),
                headers: vec![("content-type".into(), "text/plain".into())],
                payload: format!("message {n:>10} {}", "x".repeat(1000)).into(),
            };
            batch.push(&record)?;
        }
        log.append(&mut batch)?;
        log.flush()?; // one fdatasync per batch
    }
    let elapsed = started.elapsed();
    let total = BATCHES * RECORDS_PER_BATCH;
    println!(
        "appended and fsynced {total} records ({:.1} MiB) in {:.2?}: {:.0} records/s",
        log.size_bytes() as f64 / (1024.0 * 1024.0),
        elapsed,
        total as f64 / elapsed.as_secs_f64()
    );
    drop(log);

    let reopen = Instant::now();
    let log = Log::open(&dir, config)?;
    println!(
        "reopened in {:.2?}: offsets {}..{} in {} segments, durable through {}",
        reopen.elapsed(),
        log.start_offset(),
        log.next_offset(),
        log.segment_bases().len(),
        log.durable_offset()
    );
    let middle = Offset(first.0 + total / 2);
    let records = log.read(middle, 3, 1 << 20)?;
    for r in &records {
        let text = String::from_utf8_lossy(&r.payload[..18]);
        println!(
            "read offset {}: {text:?} ({} bytes)",
            r.offset,
            r.payload.len()
        );
    }
    let by_time = log.offset_for_timestamp(Timestamp(t0.0 + total / 4))?;
    println!(
        "first offset at or after t0 + {} ticks: {by_time}",
        total / 4
    );
    if let Some(r) = records.first() {
        let found = log.find_by_id(&r.id, middle, log.next_offset())?;
        println!(
            "found id {:?} at offset {:?}",
            r.id,
            found.map(|f| f.offset)
        );
    }
    drop(log);
    if given.is_none() {
        // A directory we made up is ours to remove; a given one is kept.
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(())
}
