//! crier: a WebSocket pub/sub push broker with one event loop per core.
//!
//! The crate is split so the architecture shows in the file tree:
//! - [`auth`]: who may subscribe and publish (JWT tokens, grants, API keys, rate limits);
//!   sans-IO like `proto`.
//! - [`proto`]: the sans-IO protocol core (HTTP heads, the RFC 6455 handshake and framing,
//!   JSON commands). Pure functions and state machines over bytes; no sockets, threads or clocks.
//! - [`topic`]: topic names, topic ownership, subscriber indexes and sequence numbers. Pure data
//!   structures that return decisions and send nothing.
//! - [`broker`]: the sans-IO pub/sub core: subscriber index, subscriptions, pending acks,
//!   slow-consumer policy. Inputs in, effects out through a trait; no I/O.
//! - [`engine`]: where a publish gets its seq and how it reaches interested shards (today the
//!   in-process mesh).
//! - [`mesh`]: the only cross-thread code: messages between shards, inboxes and wake-ups.
//! - [`shard`]: one event loop per core that drives sockets with the pieces above.
//! - [`server`]: starts the shards and hands out a [`server::ServerHandle`].
//! - [`metrics`]: per-shard counters merged when scraped.
//! - [`config`]: every option with its default.
//! - [`sys`]: the only `unsafe` code (rlimits, signals, CPU affinity).

pub mod assets;
pub mod auth;
pub mod broker;
pub mod config;
pub mod engine;
pub mod mesh;
pub mod metrics;
pub mod metrics_listener;
pub mod proto;
pub mod server;
pub mod shard;
pub(crate) mod shared;
pub mod sys;
pub mod topic;
