//! `sluice-bench` (not yet built; see issue [5/5]).
//!
//! This crate will own the workload-driven load generator: OMB workload
//! parsing, drivers for Sluice and its peers, HdrHistogram latencies, reports.
