//! Cross-crate and multi-process tests (clusters on loopback, crash and
//! failover). Empty until the server exists; see `docs/architecture.md`.
