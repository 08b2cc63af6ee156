//! OpenMessaging Benchmark workload files, read unchanged.
//!
//! OMB workloads are flat YAML mappings of scalars (`key: value`, `#`
//! comments). This reads exactly that shape, strictly: a line that is not
//! a comment, blank, or `key: scalar` is an error naming its line, and so
//! is an unknown key, so a typo never silently runs another benchmark.
//! Field meanings are OMB's; Sluice's extras are marked.

use std::collections::BTreeMap;
use std::path::Path;

/// Longest workload file read.
pub const FILE_BYTES_MAX: u64 = 1024 * 1024;

/// How producers choose message keys (OMB's `keyDistributor`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KeyDistributor {
    /// No key: messages spread over partitions.
    #[default]
    NoKey,
    /// Keys taken in turn from a fixed set.
    KeyRoundRobin,
    /// A random key per message.
    RandomNano,
}

/// One workload.
#[derive(Debug, Clone, PartialEq)]
pub struct Workload {
    /// `name`.
    pub name: String,
    /// `topics` (Sluice: queues).
    pub topics: u32,
    /// `partitionsPerTopic`.
    pub partitions_per_topic: u32,
    /// `messageSize`, bytes.
    pub message_size: usize,
    /// `payloadFile`, relative to the workload folder's parent.
    pub payload_file: Option<String>,
    /// `useRandomizedPayloads`.
    pub use_randomized_payloads: bool,
    /// `randomBytesRatio`: the random share of each randomized payload.
    pub random_bytes_ratio: f64,
    /// `randomizedPayloadPoolSize`.
    pub randomized_payload_pool_size: usize,
    /// `keyDistributor`.
    pub key_distributor: KeyDistributor,
    /// `subscriptionsPerTopic` (Sluice: consumer groups per queue).
    pub subscriptions_per_topic: u32,
    /// `consumerPerSubscription`.
    pub consumer_per_subscription: u32,
    /// `producersPerTopic`.
    pub producers_per_topic: u32,
    /// `producerRate`, messages per second over all producers (OMB's max-rate
    /// files ask for 10,000,000: more than any acknowledgement rate).
    pub producer_rate: u64,
    /// `consumerBacklogSizeGB`: build this backlog, then drain it.
    pub consumer_backlog_size_gb: u64,
    /// Measured time, seconds (`testDurationMinutes`, or Sluice's
    /// `testDurationSeconds`).
    pub test_duration_s: u64,
    /// Warm-up, seconds (`warmupDurationMinutes`, default 1 minute as OMB,
    /// or Sluice's `warmupDurationSeconds`).
    pub warmup_duration_s: u64,
    /// Sluice extra `batchSize`: messages per produce request (default 1).
    pub batch_size: usize,
    /// Sluice extra `requestsInFlight`: produce requests each producer
    /// keeps in flight (default 1). Messages in flight per producer are
    /// `batchSize × requestsInFlight`.
    pub requests_in_flight: usize,
}

/// Why a workload file was refused.
#[derive(Debug, thiserror::Error)]
pub enum WorkloadError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The failure.
        source: std::io::Error,
    },
    /// A line or a value is wrong.
    #[error("line {line}: {reason}")]
    Line {
        /// 1-based line number (0: the file as a whole).
        line: usize,
        /// What is wrong.
        reason: String,
    },
}

fn at(line: usize, reason: impl Into<String>) -> WorkloadError {
    WorkloadError::Line {
        line,
        reason: reason.into(),
    }
}

/// Reads a workload file.
pub fn read(path: &Path) -> Result<Workload, WorkloadError> {
    let io = |source| WorkloadError::Io {
        path: path.display().to_string(),
        source,
    };
    let len = std::fs::metadata(path).map_err(io)?.len();
    if len > FILE_BYTES_MAX {
        return Err(at(0, format!("the file is over {FILE_BYTES_MAX} bytes")));
    }
    parse(&std::fs::read_to_string(path).map_err(io)?)
}

/// Parses a workload's text.
pub fn parse(text: &str) -> Result<Workload, WorkloadError> {
    let fields = scalars(text)?;
    let get = |key: &str| fields.get(key);
    let int = |key: &str, default: Option<u64>, max: u64| -> Result<u64, WorkloadError> {
        match get(key) {
            None => default.ok_or_else(|| at(0, format!("{key} is required"))),
            Some((line, v)) => v
                .parse::<u64>()
                .ok()
                .filter(|n| *n <= max)
                .ok_or_else(|| at(*line, format!("{key} must be an integer in 0..={max}"))),
        }
    };
    let boolean = |key: &str| -> Result<bool, WorkloadError> {
        match get(key) {
            None => Ok(false),
            Some((line, v)) => match v.as_str() {
                "true" | "True" | "TRUE" => Ok(true),
                "false" | "False" | "FALSE" => Ok(false),
                _ => Err(at(*line, format!("{key} must be true or false"))),
            },
        }
    };
    let ratio = match get("randomBytesRatio") {
        None => 0.0,
        Some((line, v)) => v
            .parse::<f64>()
            .ok()
            .filter(|r| (0.0..=1.0).contains(r))
            .ok_or_else(|| at(*line, "randomBytesRatio must be in 0..=1"))?,
    };
    let key_distributor = match get("keyDistributor") {
        None => KeyDistributor::NoKey,
        Some((line, v)) => match v.as_str() {
            "NO_KEY" => KeyDistributor::NoKey,
            "KEY_ROUND_ROBIN" => KeyDistributor::KeyRoundRobin,
            "RANDOM_NANO" => KeyDistributor::RandomNano,
            other => return Err(at(*line, format!("unknown keyDistributor {other:?}"))),
        },
    };
    let seconds = |secs_key: &str, mins_key: &str, default_s: Option<u64>| {
        if get(secs_key).is_some() {
            int(secs_key, None, 7 * 24 * 3600)
        } else {
            int(mins_key, default_s.map(|s| s / 60), 7 * 24 * 60).map(|m| m * 60)
        }
    };
    let name = get("name")
        .map(|(_, v)| v.clone())
        .ok_or_else(|| at(0, "name is required"))?;
    let workload = Workload {
        name,
        topics: int("topics", None, 100_000)? as u32,
        partitions_per_topic: int("partitionsPerTopic", None, 1_000)? as u32,
        message_size: int("messageSize", None, 16 * 1024 * 1024)? as usize,
        payload_file: get("payloadFile").map(|(_, v)| v.clone()),
        use_randomized_payloads: boolean("useRandomizedPayloads")?,
        random_bytes_ratio: ratio,
        randomized_payload_pool_size: int("randomizedPayloadPoolSize", Some(0), 1_000_000)?
            as usize,
        key_distributor,
        subscriptions_per_topic: int("subscriptionsPerTopic", None, 1_000)? as u32,
        consumer_per_subscription: int("consumerPerSubscription", None, 1_000)? as u32,
        producers_per_topic: int("producersPerTopic", None, 1_000)? as u32,
        producer_rate: int("producerRate", None, 100_000_000)?,
        consumer_backlog_size_gb: int("consumerBacklogSizeGB", Some(0), 1_024)?,
        test_duration_s: seconds("testDurationSeconds", "testDurationMinutes", None)?,
        warmup_duration_s: seconds("warmupDurationSeconds", "warmupDurationMinutes", Some(60))?,
        batch_size: int("batchSize", Some(1), 10_000)? as usize,
        requests_in_flight: int("requestsInFlight", Some(1), 4_096)? as usize,
    };
    if workload.topics == 0 || workload.partitions_per_topic == 0 || workload.message_size == 0 {
        return Err(at(
            0,
            "topics, partitionsPerTopic and messageSize must be positive",
        ));
    }
    if workload.batch_size == 0 || workload.requests_in_flight == 0 {
        return Err(at(0, "batchSize and requestsInFlight must be positive"));
    }
    Ok(workload)
}

/// The keys a workload may set: OMB's, then Sluice's extras.
const KEYS: &[&str] = &[
    "name",
    "topics",
    "partitionsPerTopic",
    "messageSize",
    "payloadFile",
    "useRandomizedPayloads",
    "randomBytesRatio",
    "randomizedPayloadPoolSize",
    "keyDistributor",
    "subscriptionsPerTopic",
    "consumerPerSubscription",
    "producersPerTopic",
    "producerRate",
    "consumerBacklogSizeGB",
    "testDurationMinutes",
    "warmupDurationMinutes",
    "batchSize",
    "requestsInFlight",
    "testDurationSeconds",
    "warmupDurationSeconds",
];

/// The `key: scalar` lines of a flat YAML mapping, with line numbers.
fn scalars(text: &str) -> Result<BTreeMap<String, (usize, String)>, WorkloadError> {
    let mut out = BTreeMap::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let content = strip_comment(raw).trim_end();
        if content.trim().is_empty() {
            continue;
        }
        if content.starts_with([' ', '\t']) {
            return Err(at(line, "nested values are not part of a workload"));
        }
        let (key, value) = content
            .split_once(':')
            .ok_or_else(|| at(line, "expected `key: value`"))?;
        let key = key.trim();
        if !KEYS.contains(&key) {
            return Err(at(line, format!("unknown key {key:?}")));
        }
        let value = unquote(value.trim()).ok_or_else(|| at(line, "an unterminated quote"))?;
        if value.is_empty() {
            return Err(at(line, format!("{key} has no value")));
        }
        if out.insert(key.to_string(), (line, value)).is_some() {
            return Err(at(line, format!("{key} is set twice")));
        }
    }
    Ok(out)
}

/// The line without a `#` comment (a `#` inside quotes is kept).
fn strip_comment(line: &str) -> &str {
    let mut quote = None;
    for (i, c) in line.char_indices() {
        match (quote, c) {
            (None, '"' | '\'') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (None, '#') if i == 0 || line[..i].ends_with([' ', '\t']) => return &line[..i],
            _ => {}
        }
    }
    line
}

/// A scalar without its quotes; `None` for an unterminated quote.
fn unquote(value: &str) -> Option<String> {
    for q in ['"', '\''] {
        if let Some(rest) = value.strip_prefix(q) {
            return rest.strip_suffix(q).map(str::to_string);
        }
    }
    Some(value.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The real OMB files in the team's shared folder parse, with the
    /// values they say. That folder is outside the repository, so this
    /// runs on request: `cargo test -p sluice-bench -- --ignored`.
    #[test]
    #[ignore = "needs ../shared/omb-workloads, outside the repository"]
    fn the_real_omb_workloads_parse() {
        let dir =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/omb-workloads/workloads");
        let entries = std::fs::read_dir(&dir).expect("the shared OMB workloads");
        let mut parsed = 0;
        for entry in entries {
            let path = entry.expect("entry").path();
            let w = read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert!(w.test_duration_s > 0, "{}", path.display());
            parsed += 1;
        }
        assert!(parsed >= 10, "{parsed} files");
        let backlog = read(&dir.join("1-topic-100-partitions-1kb-4p-4c-200k-backlog.yaml"))
            .expect("backlog file");
        assert_eq!(backlog.partitions_per_topic, 100);
        assert_eq!(backlog.consumer_backlog_size_gb, 512);
        assert!(backlog.use_randomized_payloads);
        assert_eq!(backlog.random_bytes_ratio, 0.5);
        assert_eq!(backlog.test_duration_s, 300);
        assert_eq!(backlog.warmup_duration_s, 60);
    }

    /// The shapes shipped in `bench/workloads/` parse.
    #[test]
    fn the_shipped_workloads_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("workloads");
        let mut names = Vec::new();
        for entry in std::fs::read_dir(&dir).expect("bench/workloads") {
            let path = entry.expect("entry").path();
            let w = read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            names.push(w.name);
        }
        assert_eq!(names.len(), 7, "{names:?}");
    }

    const OMB_SHAPE: &str = r#"
# A comment
name: 1 topic / 1 partition / 1Kb   # trailing comment

topics: 1
partitionsPerTopic: 1
keyDistributor: "NO_KEY"
messageSize: 1024
payloadFile: "payload/payload-1Kb.data"
subscriptionsPerTopic: 1
consumerPerSubscription: 1
producersPerTopic: 1
producerRate: 50000
consumerBacklogSizeGB: 0
testDurationMinutes: 15
"#;

    #[test]
    fn an_omb_file_and_sluice_extras() {
        let w = parse(OMB_SHAPE).expect("parses");
        assert_eq!(w.name, "1 topic / 1 partition / 1Kb");
        assert_eq!(w.payload_file.as_deref(), Some("payload/payload-1Kb.data"));
        assert_eq!(
            (w.test_duration_s, w.warmup_duration_s, w.batch_size),
            (900, 60, 1)
        );
        let short = format!(
            "{OMB_SHAPE}testDurationSeconds: 10\nwarmupDurationSeconds: 2\nbatchSize: 100\n"
        );
        let w = parse(&short).expect("parses");
        assert_eq!(
            (w.test_duration_s, w.warmup_duration_s, w.batch_size),
            (10, 2, 100)
        );
    }

    #[test]
    fn mistakes_name_their_line() {
        for (extra, line) in [
            ("producerRat: 5\n", 16),
            ("topics: 2\n", 16),
            ("  nested: 1\n", 16),
            ("messageSize: -1\n", 16),
            ("keyDistributor: SOMETIMES\n", 16),
            ("useRandomizedPayloads: maybe\n", 16),
            ("randomBytesRatio: 2\n", 16),
            ("name: \"open\n", 16),
            ("just words\n", 16),
        ] {
            let text = format!("{OMB_SHAPE}{extra}");
            match parse(&text) {
                Err(WorkloadError::Line { line: l, .. }) => assert_eq!(l, line, "{extra}"),
                other => panic!("{extra}: {other:?}"),
            }
        }
        assert!(parse("name: x\n").is_err(), "required fields");
    }
}
