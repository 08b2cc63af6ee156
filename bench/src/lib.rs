//! `sluice-bench`: load generation against Sluice over HTTP.
//!
//! Today: `load` (max-rate produce, fetch, and produce-to-consume latency
//! through long-polls), `hello` (a minimal HTTP server answering 200, the
//! HTTP ceiling the server's figures are compared with), and the OMB
//! workload reader (`workload.rs`). Issue [5/5] grows this into the
//! OMB-workload harness with peer drivers.

pub mod cli;
pub mod conn;
pub mod hello;
pub mod load;
pub mod report;
pub mod workload;
