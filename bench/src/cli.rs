//! The command line.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::compare::CompareArgs;
use crate::load::LoadArgs;
use crate::run::RunArgs;

/// Benchmarks of Sluice and its peers.
#[derive(Debug, Parser)]
#[command(name = "sluice-bench", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run an OpenMessaging Benchmark workload against Sluice or a peer.
    Run(Box<RunArgs>),
    /// Results side by side, with ratios and one chart.
    Compare(CompareArgs),
    /// The Markdown tables of a `bench/run-suite.sh` results folder.
    SuiteTable {
        /// The folder.
        dir: std::path::PathBuf,
    },
    /// Half the lower max publish rate of two results (the suite's
    /// latency-comparison rate).
    HalfRate {
        /// One result.
        a: std::path::PathBuf,
        /// The other.
        b: std::path::PathBuf,
    },
    /// Drive a running node: produce, fetch or end-to-end latency.
    Load(LoadArgs),
    /// Serve 200 to every request (the HTTP ceiling to compare with), at
    /// once or after an fdatasync of its body.
    Hello {
        /// Where to listen.
        #[arg(long, default_value = "127.0.0.1:8099")]
        listen: String,
        /// Answer each request only once its body is appended to a file
        /// in this folder and fdatasync'd (group commit): the ceiling for
        /// POSTs acknowledged after fsync.
        #[arg(long)]
        fsync_dir: Option<std::path::PathBuf>,
    },
}

/// Parses the command line and runs it.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("sluice-bench: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Run(args) => crate::run::run(*args).await,
            Command::Compare(args) => crate::compare::run(&args),
            Command::SuiteTable { dir } => {
                print!("{}", crate::suite::tables(&dir));
                Ok(())
            }
            Command::HalfRate { a, b } => crate::suite::print_half_rate(&a, &b),
            Command::Load(args) => crate::load::run(args).await,
            Command::Hello { listen, fsync_dir } => crate::hello::serve(&listen, fsync_dir).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sluice-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}
