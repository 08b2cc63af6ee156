//! The token server's pure logic (`../shared/spec/token.md`): no I/O, no
//! clock (callers pass the time in).
//!
//! Built so far: tokens byte-compatible with tokenlib 2.0 (`token.rs`),
//! the key derivations around them (`kdf.rs`, `ids.rs`), Hawk request
//! verification with a bounded nonce cache (`hawk.rs`), and the
//! user-to-node assignment state machine (`assign.rs`). The identity
//! verifiers, and serving it all from the meta group, come next (issue
//! [4/5]).

pub mod assign;
pub mod encoding;
pub mod hawk;
pub mod ids;
pub mod kdf;
pub mod token;
