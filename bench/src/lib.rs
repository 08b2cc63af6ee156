//! `sluice-bench`: how Sluice is measured and compared.
//!
//! - `run WORKLOAD.yaml`: an OpenMessaging Benchmark workload against
//!   Sluice (`--spawn N` or `--target URL`) or a peer (NATS JetStream,
//!   Redis Streams, RabbitMQ quorum queues), with a JSON result in OMB's
//!   field names and an SVG chart (`run/`, `driver/`, `chart.rs`).
//! - `compare A.json B.json ...`: results side by side (`compare.rs`);
//!   `suite-table` and `half-rate` serve `bench/run-suite.sh` (`suite.rs`).
//! - `load`: quick max-rate loads against one node (`load.rs`).
//! - `hello`: a minimal HTTP server, the ceiling Sluice's HTTP figures are
//!   compared with (`hello.rs`).

pub mod chart;
pub mod cli;
pub mod compare;
pub mod conn;
pub mod driver;
pub mod hello;
pub mod load;
pub mod report;
pub mod run;
pub mod spawn;
pub mod suite;
pub mod workload;
