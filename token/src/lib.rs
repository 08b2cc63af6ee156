//! The token server's pure logic (`../shared/spec/token.md`): no I/O, no
//! clock (callers pass the time in).
//!
//! Built so far: tokens byte-compatible with tokenlib 2.0 (`token.rs`),
//! the key derivations around them (`kdf.rs`, `ids.rs`), and Hawk request
//! verification with a bounded nonce cache (`hawk.rs`). The identity
//! verifiers and the user-to-group assignment state machine come next
//! (issue [4/5]).

pub mod encoding;
pub mod hawk;
pub mod ids;
pub mod kdf;
pub mod token;
