//! The `sluice` server (not yet built; see issue [3/5]).
//!
//! This crate will own the HTTP APIs (Queuey v1, native v2, tokens, admin),
//! request routing to group leaders, configuration and the command line.
