//! The meta group (group 0): data groups, node addresses, applications and
//! their keys, queue metadata and placement. Token-server state joins it
//! with issue [4/5].

pub mod command;
pub mod machine;
