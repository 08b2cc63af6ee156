//! A short real run: `sluice-bench run --spawn 1` on a small fixed-rate
//! workload. Every message produced is consumed, and the result has every
//! field and a chart.

use std::path::PathBuf;
use std::process::Command;

/// The `sluice` binary, built beside `sluice-bench` when missing (a
/// `cargo test -p sluice-bench` alone does not build other packages'
/// binaries).
fn sluice_bin() -> PathBuf {
    let bench = PathBuf::from(env!("CARGO_BIN_EXE_sluice-bench"));
    let sluice = bench.with_file_name("sluice");
    if !sluice.is_file() {
        let status = Command::new(env!("CARGO"))
            .args(["build", "-p", "sluice-server", "--bin", "sluice"])
            .status()
            .expect("cargo runs");
        assert!(status.success(), "building sluice: {status}");
    }
    sluice
}

#[test]
fn a_spawned_run_consumes_everything_it_produced() {
    let dir = tempfile::tempdir().expect("tempdir");
    let workload = dir.path().join("small.yaml");
    std::fs::write(
        &workload,
        "name: small\ntopics: 2\npartitionsPerTopic: 2\nmessageSize: 256\n\
         subscriptionsPerTopic: 1\nconsumerPerSubscription: 2\nproducersPerTopic: 2\n\
         producerRate: 2000\nbatchSize: 10\nrequestsInFlight: 2\n\
         testDurationSeconds: 2\nwarmupDurationSeconds: 1\n",
    )
    .expect("workload");
    let out = dir.path().join("out");
    let output = Command::new(env!("CARGO_BIN_EXE_sluice-bench"))
        .arg("run")
        .arg(&workload)
        .args(["--spawn", "1", "--groups", "2", "--label", "small"])
        .arg("--sluice-bin")
        .arg(sluice_bin())
        .arg("--out")
        .arg(&out)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .output()
        .expect("sluice-bench runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("1/2 s"),
        "a progress line a second: {stderr}"
    );

    let text = std::fs::read_to_string(out.join("small.json")).expect("result");
    let doc: serde_json::Value = serde_json::from_str(&text).expect("JSON");
    for field in sluice_bench::run::result::field_names() {
        assert!(doc.get(&field).is_some(), "{field} missing");
    }
    let published = doc["messagesPublished"].as_u64().expect("count");
    assert!(published > 0, "{text}");
    assert_eq!(doc["messagesConsumed"].as_u64(), Some(published), "{text}");
    assert_eq!(doc["publishErrors"].as_u64(), Some(0));
    assert_eq!(published % 10, 0, "whole batches of 10");
    assert_eq!(doc["publishRate"].as_array().map(Vec::len), Some(2));
    assert!(doc["aggregatedEndToEndLatencyMax"].as_f64() > Some(0.0));
    assert_eq!(doc["environment"]["spawnedNodes"], 1);
    let svg = std::fs::read_to_string(out.join("small.svg")).expect("chart");
    assert!(svg.starts_with("<svg"));
}
