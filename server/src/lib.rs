//! The `sluice` server: the HTTP APIs (Queuey v1 and the native v2), authentication,
//! routing to group leaders (through `sluice-raft`'s node), configuration
//! and the command line. `main.rs` only calls [`cli::main`].
// The future of a hot post (`hot_route.rs`) nests the whole propose path
// (batcher, routing, retries) and needs more than the default 128 to lay out.
#![recursion_limit = "256"]

pub mod admin;
pub mod admin_client;
pub mod batcher;
pub mod body;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod dev_cluster;
pub mod disk_space;
pub mod hawk_auth;
pub mod hot_route;
pub mod http;
pub mod logging;
pub mod maintenance;
pub mod metrics;
pub mod secrets;
pub mod startup;
pub mod token;
pub mod v1;
pub mod v2;
