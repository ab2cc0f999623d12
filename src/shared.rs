//! What every shard reads and no shard owns: the configuration, connection counts, the
//! readiness flag, each shard's published counters. Its own module so that `server` (which
//! builds it) and `shard` (which reads it) do not import each other.

use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::Arc;
use std::time::Instant;

use crate::config::Config;
use crate::engine::redis::EngineStatus;
use crate::metrics::SharedCounters;
use crate::proto::handshake::UpgradePolicy;
use crate::proto::http::HeadLimits;
use crate::shard::AddressLimit;

/// What every shard reads and no shard owns.
#[derive(Debug)]
pub struct Shared {
    pub config: Config,
    pub max_connections: usize,
    pub open_connections: AtomicUsize,
    /// Connections per client address, when `--max-connections-per-ip` is on.
    pub per_address: Option<AddressLimit>,
    pub draining: AtomicBool,
    pub counters: Box<[SharedCounters]>,
    pub pubsub_policy: UpgradePolicy,
    pub echo_policy: UpgradePolicy,
    pub head_limits: HeadLimits,
    pub started: Instant,
    /// The Redis engine's state (readiness, metrics), with `--engine redis`.
    pub engine_status: Option<Arc<EngineStatus>>,
}
