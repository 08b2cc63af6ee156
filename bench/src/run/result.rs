//! The JSON result of a run. Field names are OMB's `TestResult` where one
//! exists (latencies in milliseconds, rates per second, one array entry
//! per second of the measured period), so OMB's chart scripts read it;
//! Sluice's additions follow, and `environment` says where it ran.

use serde_json::{Map, Value, json};

use super::flushes::DiskCounters;
use super::stats::{Collector, Percentiles, Point};
use crate::workload::Workload;

/// Reads one figure of [`Percentiles`].
type Pick = fn(&Percentiles) -> f64;

/// OMB's latency field suffixes, in its order, and how to read each.
const LATENCY_FIELDS: [(&str, Pick); 8] = [
    ("Avg", |p| p.avg),
    ("50pct", |p| p.p50),
    ("75pct", |p| p.p75),
    ("95pct", |p| p.p95),
    ("99pct", |p| p.p99),
    ("999pct", |p| p.p999),
    ("9999pct", |p| p.p9999),
    ("Max", |p| p.max),
];

/// Quantiles of the aggregated curves (percent).
const QUANTILES: [f64; 16] = [
    10.0, 25.0, 50.0, 75.0, 90.0, 95.0, 97.0, 98.0, 99.0, 99.5, 99.9, 99.95, 99.99, 99.995, 99.999,
    100.0,
];

/// Everything a result is made of.
pub struct Outcome<'a> {
    /// The workload run.
    pub workload: &'a Workload,
    /// `sluice`, `nats`, `redis` or `rabbitmq`.
    pub driver: &'a str,
    /// The measured periods.
    pub collector: &'a Collector,
    /// Messages acknowledged during the measured period.
    pub measured_published: u64,
    /// Seconds measured.
    pub measured_s: f64,
    /// Messages acknowledged over the whole run (warm-up and drain too).
    pub published: u64,
    /// Messages received over the whole run.
    pub consumed: u64,
    /// Messages whose produce request failed, whole run.
    pub publish_errors: u64,
    /// Disk activity during the measured period.
    pub disk: DiskCounters,
    /// Payload bytes acknowledged during the measured period.
    pub measured_bytes: u64,
    /// Seconds from the consumers' start to an empty backlog (backlog
    /// workloads only).
    pub backlog_drained_s: Option<f64>,
    /// Where and how it ran.
    pub environment: Value,
}

/// The result document.
pub fn to_json(o: &Outcome<'_>) -> Value {
    let w = o.workload;
    let points = &o.collector.points;
    let mut doc = Map::new();
    let mut put = |k: &str, v: Value| {
        doc.insert(k.to_string(), v);
    };
    put("workload", json!(w.name));
    put("driver", json!(o.driver));
    put("messageSize", json!(w.message_size));
    put("topics", json!(w.topics));
    put("partitions", json!(w.partitions_per_topic));
    put("producersPerTopic", json!(w.producers_per_topic));
    put(
        "consumersPerTopic",
        json!(w.subscriptions_per_topic * w.consumer_per_subscription),
    );
    let series = |f: fn(&Point) -> f64| json!(points.iter().map(f).collect::<Vec<_>>());
    put("publishRate", series(|p| p.publish_rate));
    put("publishErrorRate", series(|p| p.publish_error_rate));
    put("consumeRate", series(|p| p.consume_rate));
    put(
        "backlog",
        json!(points.iter().map(|p| p.backlog).collect::<Vec<_>>()),
    );
    for (prefix, pick, total) in [
        (
            "publishLatency",
            (|p: &Point| p.publish) as fn(&Point) -> Percentiles,
            &o.collector.publish,
        ),
        (
            "endToEndLatency",
            |p: &Point| p.end_to_end,
            &o.collector.end_to_end,
        ),
    ] {
        let aggregated = Percentiles::of(total);
        for (suffix, read) in LATENCY_FIELDS {
            let per_period: Vec<f64> = points.iter().map(|p| read(&pick(p))).collect();
            put(&format!("{prefix}{suffix}"), json!(per_period));
            put(
                &format!("aggregated{}{suffix}", capitalized(prefix)),
                json!(read(&aggregated)),
            );
        }
        let quantiles: Map<String, Value> = QUANTILES
            .iter()
            .map(|q| {
                let ms = if total.is_empty() {
                    0.0
                } else {
                    total.value_at_quantile(q / 100.0) as f64 / 1_000.0
                };
                (format!("{q}"), json!(ms))
            })
            .collect();
        put(
            &format!("aggregated{}Quantiles", capitalized(prefix)),
            Value::Object(quantiles),
        );
    }
    // Sluice's additions.
    let per_s = |n: u64| n as f64 / o.measured_s.max(1e-9);
    put("batchSize", json!(w.batch_size));
    put("requestsInFlight", json!(w.requests_in_flight));
    put("producerRate", json!(w.producer_rate));
    put("warmupSeconds", json!(w.warmup_duration_s));
    put("measuredSeconds", json!(o.measured_s));
    put("aggregatedPublishRate", json!(per_s(o.measured_published)));
    put(
        "aggregatedPublishThroughputMiBps",
        json!(per_s(o.measured_bytes) / 1_048_576.0),
    );
    put(
        "aggregatedConsumeRate",
        json!(points.iter().map(|p| p.consume_rate).sum::<f64>() / points.len().max(1) as f64),
    );
    put("messagesPublished", json!(o.published));
    put("messagesConsumed", json!(o.consumed));
    put("publishErrors", json!(o.publish_errors));
    put("backlogDrainedSeconds", json!(o.backlog_drained_s));
    put("deviceFlushes", json!(o.disk.flushes));
    put(
        "deviceFlushesPerMessage",
        json!(ratio(o.disk.flushes, o.measured_published)),
    );
    put("deviceBytesWritten", json!(o.disk.bytes_written()));
    put(
        "deviceBytesPerPayloadByte",
        json!(ratio(o.disk.bytes_written(), o.measured_bytes)),
    );
    put("environment", o.environment.clone());
    Value::Object(doc)
}

fn ratio(a: u64, b: u64) -> Option<f64> {
    (b > 0).then(|| a as f64 / b as f64)
}

fn capitalized(s: &str) -> String {
    let mut chars = s.chars();
    chars
        .next()
        .map(|c| c.to_ascii_uppercase().to_string() + chars.as_str())
        .unwrap_or_default()
}

/// Every field a result has (the test of a real run checks them all).
pub fn field_names() -> Vec<String> {
    let mut names: Vec<String> = [
        "workload",
        "driver",
        "messageSize",
        "topics",
        "partitions",
        "producersPerTopic",
        "consumersPerTopic",
        "publishRate",
        "publishErrorRate",
        "consumeRate",
        "backlog",
        "aggregatedPublishLatencyQuantiles",
        "aggregatedEndToEndLatencyQuantiles",
        "batchSize",
        "requestsInFlight",
        "producerRate",
        "warmupSeconds",
        "measuredSeconds",
        "aggregatedPublishRate",
        "aggregatedPublishThroughputMiBps",
        "aggregatedConsumeRate",
        "messagesPublished",
        "messagesConsumed",
        "publishErrors",
        "backlogDrainedSeconds",
        "deviceFlushes",
        "deviceFlushesPerMessage",
        "deviceBytesWritten",
        "deviceBytesPerPayloadByte",
        "environment",
    ]
    .map(String::from)
    .to_vec();
    for prefix in ["publishLatency", "endToEndLatency"] {
        for (suffix, _) in LATENCY_FIELDS {
            names.push(format!("{prefix}{suffix}"));
            names.push(format!("aggregated{}{suffix}", capitalized(prefix)));
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::stats::Stats;
    use std::time::Duration;

    #[test]
    fn a_result_has_omb_names_and_units() {
        let w = crate::workload::parse(
            "name: w\ntopics: 1\npartitionsPerTopic: 2\nmessageSize: 10\nsubscriptionsPerTopic: 1\nconsumerPerSubscription: 3\nproducersPerTopic: 1\nproducerRate: 10\ntestDurationSeconds: 2\n",
        )
        .expect("workload");
        let stats = Stats::new().expect("stats");
        let mut c = Collector::new(stats.counts(), 1).expect("collector");
        for ms in [1, 2] {
            stats.published(10, 100, Duration::from_millis(ms));
            let (p, counts) = stats.tick().expect("tick");
            c.add(&p, counts, 1.0).expect("add");
        }
        let doc = to_json(&Outcome {
            workload: &w,
            driver: "sluice",
            collector: &c,
            measured_published: 20,
            measured_s: 2.0,
            published: 25,
            consumed: 25,
            publish_errors: 0,
            disk: DiskCounters {
                flushes: 5,
                sectors_written: 8,
            },
            measured_bytes: 200,
            backlog_drained_s: None,
            environment: json!({"cores": 2}),
        });
        for name in field_names() {
            assert!(doc.get(&name).is_some(), "{name} missing");
        }
        assert_eq!(doc.as_object().map(Map::len), Some(field_names().len()));
        assert_eq!(doc["publishLatency50pct"], json!([1.0, 2.0]));
        assert_eq!(doc["aggregatedPublishLatencyMax"], json!(2.0));
        assert_eq!(doc["aggregatedPublishLatencyQuantiles"]["50"], json!(1.0));
        assert_eq!(doc["consumersPerTopic"], json!(3));
        assert_eq!(doc["aggregatedPublishRate"], json!(10.0));
        assert_eq!(doc["deviceFlushesPerMessage"], json!(0.25));
        assert_eq!(doc["deviceBytesPerPayloadByte"], json!(8.0 * 512.0 / 200.0));
    }
}
