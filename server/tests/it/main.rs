//! Multi-process tests of the `sluice` binary (`CARGO_BIN_EXE_sluice`),
//! over HTTP on 127.0.0.1.

mod damage;
mod failover;
mod membership;
mod metrics;
mod python_compat;
mod queuey_client;
mod serve;
mod support;
mod tokens;
mod v1_messages;
mod v1_queues;
mod v2_groups;
mod v2_messages;
