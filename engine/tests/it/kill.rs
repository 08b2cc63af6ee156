//! Goal: a real process killed with SIGKILL mid-stream loses nothing it
//! reported durable. Method: this test binary re-executes itself as a child
//! that appends and flushes in a loop, printing each durable offset; the
//! parent kills it after a while, reopens the log, checks every reported
//! offset, and does it again on the same directory.
//!
//! (A killed process keeps the page cache, so this proves the recovery
//! logic, not the fsync discipline: that is `crash_sim`'s job.)

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use sluice_engine::disk::WriteMode;
use sluice_engine::{Log, LogConfig, Offset};

use crate::common::{append_records, assert_records, read_all, small_config};

const CHILD_ENV: &str = "SLUICE_ENGINE_KILL_CHILD_DIR";
/// Set to `direct` for a child whose segments are written with `O_DIRECT`.
const CHILD_MODE_ENV: &str = "SLUICE_ENGINE_KILL_CHILD_MODE";
/// The child stops by itself after this many batches if never killed.
const CHILD_BATCHES_MAX: u64 = 1_000_000;
/// Durable reports the parent waits for before killing the child.
const REPORTS_BEFORE_KILL: usize = 300;

/// The child's body; a no-op unless run by the parent below.
#[test]
#[ignore = "run as a child process by kill_9_keeps_every_offset_reported_durable"]
fn child_appender() {
    let Some(dir) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let direct = std::env::var(CHILD_MODE_ENV).is_ok_and(|m| m == "direct");
    let mode = if direct {
        WriteMode::Direct
    } else {
        WriteMode::Buffered
    };
    let mut log = Log::open(&dir, config(mode)).expect("child open");
    for i in 0..CHILD_BATCHES_MAX {
        append_records(&mut log, 1 + i % 5, 3, 0, 64 + (i % 200) as usize);
        let durable = log.flush().expect("child flush");
        println!("durable {}", durable.0);
    }
}

fn config(write_mode: WriteMode) -> LogConfig {
    LogConfig {
        write_mode,
        ..small_config()
    }
}

#[test]
fn kill_9_keeps_every_offset_reported_durable() {
    kill_rounds(WriteMode::Buffered);
}

/// With direct writes, appends wait in the process's memory until a flush
/// writes them out: a kill loses them, and must lose nothing flushed.
#[test]
fn kill_9_keeps_every_offset_reported_durable_with_direct_writes() {
    kill_rounds(WriteMode::Direct);
}

fn kill_rounds(mode: WriteMode) {
    let mode_name = match mode {
        WriteMode::Direct => "direct",
        WriteMode::Buffered => "buffered",
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let exe = std::env::current_exe().expect("test binary");
    let mut last_reported = 0u64;
    for round in 0..3 {
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "kill::child_appender",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, dir.path())
            .env(CHILD_MODE_ENV, mode_name)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn child");
        let stdout = child.stdout.take().expect("child stdout");
        let mut reports = 0usize;
        for line in BufReader::new(stdout).lines() {
            let line = line.expect("child output");
            if let Some(n) = line.strip_prefix("durable ") {
                last_reported = n.parse().expect("offset");
                reports += 1;
                if reports == REPORTS_BEFORE_KILL {
                    break;
                }
            }
        }
        assert_eq!(
            reports, REPORTS_BEFORE_KILL,
            "round {round}: child ended early"
        );
        child.kill().expect("SIGKILL the child");
        child.wait().expect("reap the child");

        let log = Log::open(dir.path(), config(mode)).expect("reopen after kill");
        assert!(
            log.next_offset() >= Offset(last_reported),
            "round {round}: next {} below reported {last_reported}",
            log.next_offset()
        );
        assert_records(&read_all(&log), 0, 0);
    }
}
