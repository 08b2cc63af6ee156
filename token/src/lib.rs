//! The token server's pure logic (not yet built; see issue [4/5]).
//!
//! This crate will own tokenlib-compatible tokens, Hawk request signing, the
//! identity verifiers and the user-to-group assignment state machine.
