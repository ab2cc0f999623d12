//! What every shard reads and no shard owns: the configuration, connection counts, the
//! readiness flag, each shard's published counters. Its own module so that `server` (which
//! builds it) and `shard` (which reads it) do not import each other.

use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::Arc;

use crate::auth::Policy;
use std::time::Instant;

use crate::config::Config;
use crate::engine::redis::EngineStatus;
use crate::engine::InterestFilter;
use crate::metrics::SharedCounters;
use crate::proto::handshake::UpgradePolicy;
use crate::proto::http::HeadLimits;
use crate::shard::{AddressLimit, HandshakeRate};

/// What every shard reads and no shard owns.
#[derive(Debug)]
pub struct Shared {
    pub config: Config,
    pub max_connections: usize,
    pub open_connections: AtomicUsize,
    /// Connections per client address, when `--max-connections-per-ip` is on.
    pub per_address: Option<AddressLimit>,
    /// Handshakes per client address, when `--max-handshake-rate-per-ip` is on.
    pub handshake_rate: Option<HandshakeRate>,
    pub draining: AtomicBool,
    pub counters: Box<[SharedCounters]>,
    pub pubsub_policy: UpgradePolicy,
    pub echo_policy: UpgradePolicy,
    /// Open `/ws` connections on all shards that negotiated permessage-deflate: while it is
    /// 0, the owners of topics build no deflated twin (see `engine::DeflateOnce`).
    pub compressing_subscribers: Arc<AtomicUsize>,
    pub head_limits: HeadLimits,
    /// Who may subscribe and publish; read-only after start-up.
    pub policy: Arc<Policy>,
    pub started: Instant,
    /// The Redis engine's state (readiness, metrics), with `--engine redis`.
    pub engine_status: Option<Arc<EngineStatus>>,
    /// `--max-subscriptions` and `--max-topics`, defaults resolved.
    pub max_subscriptions: usize,
    pub max_topics: usize,
    /// Subscriptions across the process (every shard's broker core shares it).
    pub subscriptions: Arc<AtomicUsize>,
    /// The local engine's interest filter and distinct-topic count.
    pub interest: Arc<InterestFilter>,
    /// A fault to inject (tests of the supervision only).
    pub fault: Fault,
}

/// A failure injected on purpose, to test what the process does when a shard misbehaves.
/// Set only by tests and, in debug builds, by the `CRIER_FAULT` environment variable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fault {
    /// None: the normal case.
    #[default]
    None,
    /// Shard `n` panics in its first loop turn.
    PanicShard(usize),
    /// Shard `n` stops handling anything (its inbox fills) until the drain starts.
    StallShard(usize),
}

impl Fault {
    /// Parses `panic-shard=N` or `stall-shard=N`.
    pub fn parse(text: &str) -> Option<Fault> {
        let (what, shard) = text.split_once('=')?;
        let shard = shard.trim().parse().ok()?;
        match what.trim() {
            "panic-shard" => Some(Fault::PanicShard(shard)),
            "stall-shard" => Some(Fault::StallShard(shard)),
            _ => None,
        }
    }
}
