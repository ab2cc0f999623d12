//! The sans-IO protocol core: bytes (and a timestamp, where time matters) in, bytes and events
//! out. Nothing in here touches a socket, a thread or a clock, so every rule is unit-tested
//! over byte strings and fuzzed.
#![forbid(unsafe_code)]

pub mod command;
pub mod envelope;
pub mod frame;
pub mod prepared;
pub mod query;
