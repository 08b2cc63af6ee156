//! The `sluice` command line.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::admin_client::{AdminArgs, TokenArgs};
use crate::config::{ServeArgs, ServeConfig};
use crate::dev_cluster::DevClusterArgs;

/// Sluice: a replicated message queue with a built-in token server.
#[derive(Debug, Parser)]
#[command(name = "sluice", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a node (with no flags: a single-node cluster on 127.0.0.1:8080).
    Serve(Box<ServeArgs>),
    /// Run a local cluster on loopback (child processes; Ctrl-C stops it).
    DevCluster(DevClusterArgs),
    /// Operators' commands over HTTP (cluster status, nodes, queues).
    Admin(AdminArgs),
    /// Operators' token commands over HTTP (nodes, users, new users).
    Token(TokenArgs),
}

/// Parses the command line and runs it.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::DevCluster(args) => match runtime() {
            Ok(rt) => rt.block_on(crate::dev_cluster::run(args)),
            Err(code) => code,
        },
        Command::Admin(args) => match runtime() {
            Ok(rt) => rt.block_on(crate::admin_client::run(args)),
            Err(code) => code,
        },
        Command::Token(args) => match runtime() {
            Ok(rt) => rt.block_on(crate::admin_client::run_token(args)),
            Err(code) => code,
        },
        Command::Serve(args) => {
            let config = match ServeConfig::resolve(*args) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("sluice: {e}");
                    return ExitCode::from(2);
                }
            };
            crate::logging::init(config.log_json);
            let runtime = match runtime() {
                Ok(r) => r,
                Err(code) => return code,
            };
            match runtime.block_on(crate::startup::serve(config)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("sluice: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            eprintln!("sluice: starting the runtime: {e}");
            ExitCode::FAILURE
        })
}
