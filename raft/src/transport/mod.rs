//! Node-to-node RPC (issue [2/5], milestone B). Built so far: what every
//! RPC passes before openraft sees it (`rpc.rs`): the cluster secret,
//! checked in constant time, the group id, and a bounded, typed decode of
//! the bincode body. The HTTP server and client come next.

pub mod rpc;
