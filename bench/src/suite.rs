//! `sluice-bench suite-table DIR`: the Markdown tables of a
//! `bench/run-suite.sh` run, from the results it wrote under its naming:
//! `{system}-{nodes}-max.json` (the comparison shape at max rate),
//! `{peer}-{nodes}-half.json` and `sluice-{nodes}-half-{peer}.json` (both
//! at half the lower of the two max rates), and `sluice-{nodes}-{workload}.json`.

use std::fmt::Write as _;
use std::path::Path;

use serde_json::Value;

/// The peers, as the suite names them, and their display names.
const PEERS: [(&str, &str); 3] = [
    ("nats", "NATS JetStream 2.15 (sync always)"),
    ("redis", "Redis Streams (AOF always)"),
    ("rabbitmq", "RabbitMQ quorum queues"),
];

/// Goal: Sluice's max rate over the peer's.
const THROUGHPUT_RATIO_GOAL: f64 = 1.5;

fn load(dir: &Path, name: &str) -> Option<Value> {
    let text = std::fs::read_to_string(dir.join(format!("{name}.json"))).ok()?;
    serde_json::from_str(&text).ok()
}

fn f(doc: &Value, field: &str) -> Option<f64> {
    doc.get(field)?.as_f64()
}

fn rate(v: Option<f64>) -> String {
    v.map_or("–".into(), |r| format!("{r:.0}"))
}

fn ms(v: Option<f64>) -> String {
    v.map_or("–".into(), |r| format!("{r:.2}"))
}

/// The rate both systems of a pair run at for the latency comparison:
/// half the lower of their max rates.
pub fn half_rate(a: &Value, b: &Value) -> Option<u64> {
    let low = f(a, "aggregatedPublishRate")?.min(f(b, "aggregatedPublishRate")?);
    (low >= 2.0).then(|| (low / 2.0) as u64)
}

/// Prints [`half_rate`] of two result files.
pub fn print_half_rate(a: &Path, b: &Path) -> anyhow::Result<()> {
    let read = |p: &Path| -> anyhow::Result<Value> {
        Ok(serde_json::from_str(&std::fs::read_to_string(p)?)?)
    };
    let rate = half_rate(&read(a)?, &read(b)?).ok_or_else(|| {
        anyhow::anyhow!(
            "no publish rate to halve in {} and {}",
            a.display(),
            b.display()
        )
    })?;
    println!("{rate}");
    Ok(())
}

/// Both tables.
pub fn tables(dir: &Path) -> String {
    let mut out = String::new();
    out.push_str("| peer | nodes | Sluice max msg/s | peer max msg/s | Sluice ÷ peer (goal ≥ 1.5) | half rate msg/s | Sluice p99 ms | peer p99 ms | p99 goal (Sluice ≤ peer) | flushes/msg Sluice | flushes/msg peer |\n");
    out.push_str("|---|---|---|---|---|---|---|---|---|---|---|\n");
    for (peer, display) in PEERS {
        for nodes in [1, 3] {
            let Some(theirs) = load(dir, &format!("{peer}-{nodes}-max")) else {
                continue;
            };
            let ours = load(dir, &format!("sluice-{nodes}-max"));
            let our_rate = ours.as_ref().and_then(|d| f(d, "aggregatedPublishRate"));
            let their_rate = f(&theirs, "aggregatedPublishRate");
            let ratio = match (our_rate, their_rate) {
                (Some(a), Some(b)) if b > 0.0 => {
                    let verdict = if a / b >= THROUGHPUT_RATIO_GOAL {
                        "met"
                    } else {
                        "missed"
                    };
                    format!("{:.2}× ({verdict})", a / b)
                }
                _ => "–".into(),
            };
            let our_half = load(dir, &format!("sluice-{nodes}-half-{peer}"));
            let their_half = load(dir, &format!("{peer}-{nodes}-half"));
            let p99 = |d: &Option<Value>| {
                d.as_ref()
                    .and_then(|d| f(d, "aggregatedPublishLatency99pct"))
            };
            let verdict = match (p99(&our_half), p99(&their_half)) {
                (Some(a), Some(b)) => {
                    if a <= b {
                        "met"
                    } else {
                        "missed"
                    }
                }
                _ => "–",
            };
            let half = our_half
                .as_ref()
                .and_then(|d| d.get("producerRate")?.as_u64())
                .map_or("–".into(), |r| r.to_string());
            let flushes = |d: Option<&Value>| {
                d.and_then(|d| f(d, "deviceFlushesPerMessage"))
                    .map_or("–".into(), |v| format!("{v:.3}"))
            };
            let _ = writeln!(
                out,
                "| {display} | {nodes} | {} | {} | {ratio} | {half} | {} | {} | {verdict} | {} | {} |",
                rate(our_rate),
                rate(their_rate),
                ms(p99(&our_half)),
                ms(p99(&their_half)),
                flushes(ours.as_ref()),
                flushes(Some(&theirs)),
            );
        }
    }
    out.push('\n');
    out.push_str("| workload | nodes | publish msg/s | MiB/s | publish p50 / p99 ms | end-to-end p50 / p99 ms | published = consumed | flushes/msg |\n");
    out.push_str("|---|---|---|---|---|---|---|---|\n");
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter_map(|n| n.strip_suffix(".json").map(str::to_string))
        .filter(|n| n.starts_with("sluice-") && !n.ends_with("-max") && !n.contains("-half-"))
        .collect();
    names.sort();
    for name in names {
        let Some(d) = load(dir, &name) else { continue };
        let nodes = name.split('-').nth(1).unwrap_or("?");
        let same = d["messagesPublished"] == d["messagesConsumed"];
        let _ = writeln!(
            out,
            "| {} | {nodes} | {} | {:.1} | {} / {} | {} / {} | {} | {} |",
            d["workload"].as_str().unwrap_or(&name),
            rate(f(&d, "aggregatedPublishRate")),
            f(&d, "aggregatedPublishThroughputMiBps").unwrap_or(0.0),
            ms(f(&d, "aggregatedPublishLatency50pct")),
            ms(f(&d, "aggregatedPublishLatency99pct")),
            ms(f(&d, "aggregatedEndToEndLatency50pct")),
            ms(f(&d, "aggregatedEndToEndLatency99pct")),
            if same { "yes" } else { "no" },
            f(&d, "deviceFlushesPerMessage").map_or("–".into(), |v| format!("{v:.3}")),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_tables_pair_sluice_with_each_peer() {
        let dir = tempfile::tempdir().expect("tempdir");
        let put = |name: &str, v: Value| {
            std::fs::write(dir.path().join(format!("{name}.json")), v.to_string()).expect("write")
        };
        put(
            "sluice-1-max",
            json!({"aggregatedPublishRate": 30000.0, "deviceFlushesPerMessage": 0.01}),
        );
        put(
            "nats-1-max",
            json!({"aggregatedPublishRate": 5000.0, "deviceFlushesPerMessage": 1.0}),
        );
        put(
            "sluice-1-half-nats",
            json!({"producerRate": 2500, "aggregatedPublishLatency99pct": 3.0}),
        );
        put(
            "nats-1-half",
            json!({"producerRate": 2500, "aggregatedPublishLatency99pct": 9.0}),
        );
        put(
            "sluice-1-many",
            json!({"workload": "many", "aggregatedPublishRate": 10.0, "messagesPublished": 5, "messagesConsumed": 5}),
        );
        put(
            "sluice-3-max-rate-x",
            json!({"workload": "max rate x", "aggregatedPublishRate": 20.0}),
        );
        let t = tables(dir.path());
        assert!(
            t.contains("| NATS JetStream 2.15 (sync always) | 1 | 30000 | 5000 | 6.00× (met) | 2500 | 3.00 | 9.00 | met | 0.010 | 1.000 |"),
            "{t}"
        );
        assert!(!t.contains("Redis"), "absent peers are left out: {t}");
        assert!(t.contains("| max rate x | 3 | 20 |"), "{t}");
        assert_eq!(
            t.matches("| 1 | 30000 |").count(),
            1,
            "comparison runs stay out of the workload table: {t}"
        );
        assert!(t.contains("| many | 1 | 10 |"), "{t}");
        assert_eq!(
            half_rate(
                &json!({"aggregatedPublishRate": 30000.0}),
                &json!({"aggregatedPublishRate": 5000.0})
            ),
            Some(2500)
        );
    }
}
