//! `sluice-bench compare A.json B.json ...`: results side by side, each
//! column's ratio to the first, and the latency curves on one chart.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use clap::Args;
use serde_json::Value;

/// `sluice-bench compare`.
#[derive(Debug, Clone, Args)]
pub struct CompareArgs {
    /// Result files; ratios are to the first.
    #[arg(required = true, num_args = 2..)]
    pub results: Vec<PathBuf>,
    /// Where the comparison chart goes.
    #[arg(long, default_value = "compare.svg")]
    pub chart: PathBuf,
}

/// The rows: label, field, and whether more is better.
const ROWS: [(&str, &str, bool); 9] = [
    ("publish msg/s", "aggregatedPublishRate", true),
    ("consume msg/s", "aggregatedConsumeRate", true),
    ("publish p50 ms", "aggregatedPublishLatency50pct", false),
    ("publish p99 ms", "aggregatedPublishLatency99pct", false),
    ("publish p99.9 ms", "aggregatedPublishLatency999pct", false),
    ("publish max ms", "aggregatedPublishLatencyMax", false),
    ("end-to-end p50 ms", "aggregatedEndToEndLatency50pct", false),
    ("end-to-end p99 ms", "aggregatedEndToEndLatency99pct", false),
    ("flushes per message", "deviceFlushesPerMessage", false),
];

/// Prints the table and writes the chart.
pub fn run(args: &CompareArgs) -> anyhow::Result<()> {
    let docs = args
        .results
        .iter()
        .map(|p| Ok((label(p), read(p)?)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    print!("{}", table(&docs));
    crate::chart::compare_chart(&docs, &args.chart)?;
    println!("chart: {}", args.chart.display());
    Ok(())
}

fn read(path: &Path) -> anyhow::Result<Value> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let doc: Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))?;
    if !doc.is_object() || doc.get("aggregatedPublishRate").is_none() {
        bail!("{} is not a sluice-bench result", path.display());
    }
    Ok(doc)
}

fn label(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}

/// The comparison as a Markdown table: a column per result, with the
/// ratio to the first result after each value.
pub fn table(docs: &[(String, Value)]) -> String {
    let mut out = String::new();
    let _ = write!(out, "| |");
    for (name, _) in docs {
        let _ = write!(out, " {name} |");
    }
    out.push('\n');
    out.push_str("|---|");
    out.push_str(&"---|".repeat(docs.len()));
    out.push('\n');
    for (row, field, _) in ROWS {
        let _ = write!(out, "| {row} |");
        let first = docs.first().and_then(|(_, d)| d[field].as_f64());
        for (i, (_, d)) in docs.iter().enumerate() {
            match (d[field].as_f64(), first) {
                (None, _) => out.push_str(" – |"),
                (Some(v), Some(f)) if i > 0 && f != 0.0 => {
                    let _ = write!(out, " {} ({:.2}×) |", number(v), v / f);
                }
                (Some(v), _) => {
                    let _ = write!(out, " {} |", number(v));
                }
            }
        }
        out.push('\n');
    }
    out
}

fn number(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ratios_are_to_the_first_result() {
        let a = json!({"aggregatedPublishRate": 1000.0, "aggregatedPublishLatency99pct": 2.0});
        let b = json!({"aggregatedPublishRate": 1500.0, "aggregatedPublishLatency99pct": 1.0});
        let t = table(&[("sluice".into(), a), ("nats".into(), b)]);
        assert!(t.starts_with("| | sluice | nats |\n|---|---|---|\n"), "{t}");
        assert!(t.contains("| publish msg/s | 1000 | 1500 (1.50×) |"), "{t}");
        assert!(
            t.contains("| publish p99 ms | 2.00 | 1.00 (0.50×) |"),
            "{t}"
        );
        assert!(t.contains("| consume msg/s | – | – |"), "{t}");
    }

    #[test]
    fn a_file_that_is_not_a_result_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("x.json");
        std::fs::write(&p, "{\"a\": 1}").expect("write");
        assert!(read(&p).is_err());
        std::fs::write(&p, "not json").expect("write");
        assert!(read(&p).is_err());
    }
}
