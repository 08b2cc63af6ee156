//! Pieces of the data groups' state machine that are pure and
//! deterministic (time and ids come from the applied entry, never from a
//! clock), so every replica computes the same state. The state machine
//! itself, which applies produce batches to per-partition engine logs, is
//! milestone C of issue [2/5].

pub mod command;
pub mod consumer;
pub mod fence;
pub mod machine;
pub mod message_id;
pub mod partition;
pub mod producers;
pub mod requests;
pub mod snapshot;
