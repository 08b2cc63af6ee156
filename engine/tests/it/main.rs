//! Integration tests of `sluice-engine`, in one binary (see each module's
//! header for its goal and method).

mod common;
mod corruption;
mod crash_sim;
mod kill;
mod limits;
mod lookups;
mod maintenance;
mod recycling;
mod repair;
mod roundtrip;
