//! Starting crier: raise the open-file limit, bind one SO_REUSEPORT listener per shard, wire
//! the shards' inboxes together and start one thread per shard. The returned
//! [`ServerHandle`] is what the binary and the tests use alike. Also the process-wide caps'
//! defaults (derived from physical memory) and what happens when a shard thread dies.

use std::collections::VecDeque;
use std::io;
use std::net::{SocketAddr, TcpListener as StdTcpListener};
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mio::{Poll, Waker};
use socket2::{Domain, Protocol, Socket, Type};

use crate::broker::history::HistoryPolicy;
use crate::config::{CompressionMode, Config, EngineKind, IoUringMode};
use crate::engine::redis::{self, EngineLink, EngineStatus};
use crate::engine::InterestFilter;
use crate::mesh::{self, Mesh, PeerLink};
use crate::metrics::{render_prometheus, Metric, SharedCounters};
use crate::metrics_listener::MetricsListener;
use crate::proto::handshake::UpgradePolicy;
use crate::proto::http::HeadLimits;
use crate::proto::permessage_deflate::DeflatePolicy;
use crate::shard::{AddressLimit, HandshakeRate, Shard, MAX_TRACKED_ADDRESSES, WAKER};
use crate::shared::Shared;
use crate::sys;
use crate::sys::send_ring::{SendRing, SEND_RING_ENTRIES};

pub use crate::shared::Fault;

/// The subprotocol `/ws` selects when a client offers it.
pub const PUBSUB_SUBPROTOCOL: &str = "crier.v1";

/// Descriptors kept free for listeners, wakers, epoll and whatever the process opens besides
/// client sockets, so that over-limit clients can still be told 503.
const RESERVED_FILES: u64 = 64;

/// Turns' batches the channel from the shards to the Redis engine's thread holds; past it a
/// shard's publishes are refused `overloaded` (the thread is behind Redis by that much).
const ENGINE_QUEUE_BATCHES: usize = 1024;

/// Pause between attempts to reach Redis while it is unreachable.
const RECONNECT_INTERVAL: Duration = Duration::from_millis(250);

/// Listen backlog; the kernel caps it at `net.core.somaxconn`.
const LISTEN_BACKLOG: i32 = 65_535;

/// RSS one subscription costs with a 256-byte topic name, one subscriber per topic (measured
/// 1,790 B with `bench/abuse_rss.py subscriptions --name-bytes 256` once topics carry their
/// history log and fan-out bookkeeping, rounded up; 588 B with 10-byte names;
/// docs/configuration.md). The `--max-subscriptions` default divides a quarter of physical
/// memory by it.
pub const BYTES_PER_SUBSCRIPTION: u64 = 1_800;
/// RSS one topic costs with a 256-byte name on top of its first subscription (the owner's
/// entry and a second index entry); the `--max-topics` default divides an eighth of physical
/// memory by it.
pub const BYTES_PER_TOPIC: u64 = 1_800;
/// Used when /proc/meminfo cannot be read: 1 GiB.
const FALLBACK_MEMORY_BYTES: u64 = 1 << 30;
/// The process exit code when a shard thread dies (EX_SOFTWARE, sysexits.h).
pub const SHARD_FAILURE_EXIT_CODE: i32 = 70;

/// Physical memory, from `MemTotal` in /proc/meminfo.
pub fn physical_memory_bytes() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The `--max-subscriptions` and `--max-topics` defaults for a machine with `memory_bytes`.
pub fn default_caps(memory_bytes: u64) -> (usize, usize) {
    let subscriptions = (memory_bytes / 4 / BYTES_PER_SUBSCRIPTION).max(1);
    let topics = (memory_bytes / 8 / BYTES_PER_TOPIC).max(1);
    (
        usize::try_from(subscriptions).unwrap_or(usize::MAX),
        usize::try_from(topics).unwrap_or(usize::MAX),
    )
}

/// What the process does when a shard thread ends with an error or a panic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnShardFailure {
    /// The thread ends; `join` reports it (tests: one server among many in a process).
    #[default]
    Report,
    /// The process exits at once with [`SHARD_FAILURE_EXIT_CODE`], so a supervisor restarts
    /// it, rather than other shards serving without the topics the dead one owned (the
    /// binary).
    ExitProcess,
}

/// How a server is supervised.
#[derive(Debug, Clone, Copy, Default)]
pub struct Supervision {
    pub on_shard_failure: OnShardFailure,
    /// A failure to inject on purpose (tests of this very supervision).
    pub fault: Fault,
}

/// A running server.
#[derive(Debug)]
pub struct ServerHandle {
    local_addr: SocketAddr,
    threads: Vec<JoinHandle<io::Result<()>>>,
    links: Arc<[PeerLink]>,
    shared: Arc<Shared>,
    file_limit: sys::FileLimit,
    /// `--metrics-listen`: its own thread serving only /metrics and /healthz.
    metrics: Option<MetricsListener>,
    /// The Redis engine's thread (`--engine redis`); it ends once every shard has.
    engine_thread: Option<JoinHandle<()>>,
    /// How the shards send: io_uring batches, or why not (`--io-uring`).
    sends: String,
}

impl ServerHandle {
    /// The address the listeners are bound to (with the real port when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn threads(&self) -> usize {
        self.threads.len()
    }

    /// The `--metrics-listen` address (with the real port when 0 was asked for), if set.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().map(MetricsListener::local_addr)
    }

    pub fn max_connections(&self) -> usize {
        self.shared.max_connections
    }

    /// How the shards send (`--io-uring`): "io_uring batches" or the syscalls and why.
    pub fn sends(&self) -> &str {
        &self.sends
    }

    pub fn file_limit(&self) -> sys::FileLimit {
        self.file_limit
    }

    /// Connections open right now, across shards.
    pub fn open_connections(&self) -> usize {
        self.shared.open_connections.load(Ordering::Relaxed)
    }

    /// The current value of one metric, summed over shards (tests and diagnostics).
    pub fn metric(&self, metric: Metric) -> u64 {
        self.shared
            .counters
            .iter()
            .map(|c| c.snapshot().get(metric))
            .sum()
    }

    /// The value of one metric on one shard.
    pub fn shard_metric(&self, shard: usize, metric: Metric) -> u64 {
        self.shared.counters[shard].snapshot().get(metric)
    }

    /// What `GET /metrics` would answer.
    pub fn metrics_text(&self) -> String {
        let snapshots: Vec<_> = self.shared.counters.iter().map(|c| c.snapshot()).collect();
        let mut text = render_prometheus(&snapshots);
        if let Some(status) = &self.shared.engine_status {
            status.render(&mut text);
        }
        text
    }

    /// The Redis engine's state, with `--engine redis`.
    pub fn engine_status(&self) -> Option<&EngineStatus> {
        self.shared.engine_status.as_deref()
    }

    /// Makes `GET /readyz` answer 503 from now on, while everything else goes on as before:
    /// the start of `--drain-delay`, so load balancers take this instance out of rotation.
    pub fn stop_being_ready(&self) {
        self.shared.draining.store(true, Ordering::Relaxed);
    }

    /// Stops accepting, sends close 1001 to every WebSocket and lets shards finish within
    /// `--drain-timeout`. Returns at once; `join` waits.
    pub fn shutdown(&self) {
        self.stop_being_ready();
        for link in self.links.iter() {
            link.request_shutdown();
        }
        if let Some(metrics) = &self.metrics {
            metrics.shutdown();
        }
    }

    /// The resolved `--max-subscriptions` and `--max-topics`.
    pub fn global_caps(&self) -> (usize, usize) {
        (self.shared.max_subscriptions, self.shared.max_topics)
    }

    /// Waits for every shard thread to end.
    pub fn join(self) -> io::Result<()> {
        let mut result = Ok(());
        for thread in self.threads {
            match thread.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => result = Err(e),
                Err(_) => result = Err(io::Error::other("a shard thread panicked")),
            }
        }
        if let Some(thread) = self.engine_thread {
            if thread.join().is_err() {
                result = Err(io::Error::other("the engine thread panicked"));
            }
        }
        // Metrics stay scrapable until the shards are done draining.
        if let Some(metrics) = self.metrics {
            metrics.join();
        }
        result
    }
}

/// Binds a non-blocking listener with SO_REUSEPORT, so every shard can bind the same address
/// and the kernel spreads new connections across them.
fn bind_reuseport(addr: SocketAddr) -> io::Result<StdTcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    Ok(socket.into())
}

/// SO_REUSEPORT lets any process of the same user join an address's listener group, so a
/// second crier started by mistake would silently take a share of new connections. A plain
/// bind (without SO_REUSEPORT) fails on an address anything listens on: crier refuses to start
/// there. (Port 0 asks for a fresh port and is not checked.)
fn refuse_if_in_use(addr: SocketAddr) -> io::Result<()> {
    if addr.port() == 0 {
        return Ok(());
    }
    let probe = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    probe.set_reuse_address(true)?;
    match probe.bind(&addr.into()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AddrInUse => Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!("{addr} is already in use (is another crier running?)"),
        )),
        Err(e) => Err(e),
    }
}

/// Starts a server with `config`; a shard that dies is reported by `join`.
pub fn start(config: Config) -> io::Result<ServerHandle> {
    start_supervised(config, Supervision::default())
}

/// Starts a server with `config` under `supervision`.
pub fn start_supervised(config: Config, supervision: Supervision) -> io::Result<ServerHandle> {
    let file_limit = sys::raise_open_file_limit()?;
    let threads = config
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1);
    if threads > u16::MAX as usize {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "--threads is too large",
        ));
    }
    let reserve = RESERVED_FILES + 4 * threads as u64;
    let fd_budget = file_limit.soft.saturating_sub(reserve).max(1) as usize;
    let max_connections = config.max_connections.unwrap_or(fd_budget);

    let memory = physical_memory_bytes().unwrap_or(FALLBACK_MEMORY_BYTES);
    let (default_subscriptions, default_topics) = default_caps(memory);
    let max_subscriptions = config.max_subscriptions.unwrap_or(default_subscriptions);
    let max_topics = config.max_topics.unwrap_or(default_topics);

    refuse_if_in_use(config.listen)?;
    let first = bind_reuseport(config.listen)?;
    let local_addr = first.local_addr()?;
    let mut listeners = vec![first];
    for _ in 1..threads {
        listeners.push(bind_reuseport(local_addr)?);
    }

    let subprotocols = vec![PUBSUB_SUBPROTOCOL.to_string()];
    let allowed_origins = if config.allowed_origins.is_empty() {
        None
    } else {
        Some(config.allowed_origins.clone())
    };
    let deflate = (config.compression == CompressionMode::On).then(DeflatePolicy::default);
    // Key files are read here, once, before any shard starts.
    let policy = crate::auth::load_policy(&config)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
    let handshake_rate = policy
        .handshake_rate_per_ip()
        .map(|limit| HandshakeRate::new(limit, MAX_TRACKED_ADDRESSES));
    let shared = Arc::new(Shared {
        policy: Arc::new(policy),
        handshake_rate,
        max_connections,
        open_connections: AtomicUsize::new(0),
        per_address: (config.max_connections_per_ip > 0)
            .then(|| AddressLimit::new(config.max_connections_per_ip)),
        draining: AtomicBool::new(false),
        counters: (0..threads).map(|_| SharedCounters::default()).collect(),
        pubsub_policy: UpgradePolicy {
            allowed_origins: allowed_origins.clone(),
            subprotocols,
            deflate,
        },
        echo_policy: UpgradePolicy {
            allowed_origins,
            subprotocols: Vec::new(),
            deflate,
        },
        compressing_subscribers: Arc::new(AtomicUsize::new(0)),
        head_limits: HeadLimits {
            max_head_bytes: config.max_head_bytes,
            max_headers: config.max_headers,
        },
        started: Instant::now(),
        max_subscriptions,
        max_topics,
        subscriptions: Arc::default(),
        interest: Arc::new(InterestFilter::new(max_topics)),
        fault: supervision.fault,
        engine_status: None,
        config,
    });

    // Bound before any shard starts, so a bad address stops start-up like a bad option.
    let metrics = match shared.config.metrics_listen {
        Some(addr) => Some(MetricsListener::start(addr, Arc::clone(&shared))?),
        None => None,
    };

    let mut polls = Vec::with_capacity(threads);
    let mut links = Vec::with_capacity(threads);
    let mut inboxes = Vec::with_capacity(threads);
    for _ in 0..threads {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let (link, inbox) = mesh::inbox(shared.config.inbox_budget_bytes, waker);
        polls.push(poll);
        links.push(link);
        inboxes.push(inbox);
    }
    let links: Arc<[PeerLink]> = links.into();

    let mut engine_thread = None;
    let mut engine_link: Option<EngineLink> = None;
    let mut shared = shared;
    if shared.config.engine == EngineKind::Redis {
        let config = &shared.config;
        let settings = redis::Settings {
            urls: if config.redis_url.is_empty() {
                vec!["redis://127.0.0.1:6379".to_string()]
            } else {
                config.redis_url.clone()
            },
            cluster: config.redis_cluster,
            prefix: config.redis_prefix.clone(),
            history: HistoryPolicy::from_config(config),
            timeout: config.redis_timeout,
            reconnect_interval: RECONNECT_INTERVAL,
            queue_batches: ENGINE_QUEUE_BATCHES,
            inbox_budget_bytes: config.inbox_budget_bytes,
        };
        let handle = redis::start(settings, links.clone(), config.engine_unready_after)?;
        engine_thread = Some(handle.thread);
        engine_link = Some(handle.link);
        let status: Arc<EngineStatus> = handle.status;
        match Arc::get_mut(&mut shared) {
            Some(shared) => shared.engine_status = Some(status),
            None => return Err(io::Error::other("shared state is already in use")),
        }
    }

    let (mut send_rings, sends) = send_rings(shared.config.io_uring, threads)?;
    let cpus = sys::allowed_cpus();
    let mut handles = Vec::with_capacity(threads);
    for (id, ((poll, inbox), listener)) in polls.into_iter().zip(inboxes).zip(listeners).enumerate()
    {
        let mesh = Mesh::new(id, links.clone(), inbox);
        let shared = shared.clone();
        let pin_to = if shared.config.pin_threads && !cpus.is_empty() {
            Some(cpus[id % cpus.len()])
        } else {
            None
        };
        let listener = mio::net::TcpListener::from_std(listener);
        let send_ring = send_rings.pop_front().flatten();
        let shard = Shard::new(
            id,
            shared,
            poll,
            listener,
            mesh,
            engine_link.clone(),
            send_ring,
        )?;
        let handle = std::thread::Builder::new()
            .name(format!("crier-shard-{id}"))
            .spawn(move || {
                let result = std::panic::catch_unwind(AssertUnwindSafe(|| {
                    if let Some(cpu) = pin_to {
                        sys::pin_current_thread(cpu)?;
                    }
                    shard.run()
                }));
                let result = match result {
                    Ok(result) => result,
                    Err(_panic) => Err(io::Error::other(format!("shard {id} panicked"))),
                };
                if let Err(e) = &result {
                    if supervision.on_shard_failure == OnShardFailure::ExitProcess {
                        // The other shards would go on without this one's topics and retry
                        // what they owe it for ever: better a clean restart.
                        eprintln!("crier: shard {id} failed: {e}; exiting");
                        std::process::exit(SHARD_FAILURE_EXIT_CODE);
                    }
                }
                result
            })?;
        handles.push(handle);
    }

    Ok(ServerHandle {
        local_addr,
        threads: handles,
        links,
        shared,
        file_limit,
        metrics,
        engine_thread,
        sends,
    })
}

/// One io_uring per shard under `--io-uring auto|on`, and a description of how the shards
/// will send. `auto` falls back to syscalls for every shard if any ring cannot be set up;
/// `on` refuses to start instead.
fn send_rings(
    mode: IoUringMode,
    threads: usize,
) -> io::Result<(VecDeque<Option<SendRing>>, String)> {
    if mode == IoUringMode::Off {
        let none = (0..threads).map(|_| None).collect();
        return Ok((
            none,
            "write/writev per connection (--io-uring off)".to_string(),
        ));
    }
    match (0..threads).map(|_| SendRing::new().map(Some)).collect() {
        Ok(rings) => Ok((
            rings,
            format!("io_uring batches of up to {SEND_RING_ENTRIES} sends"),
        )),
        Err(e) if mode == IoUringMode::On => Err(io::Error::new(
            e.kind(),
            format!("--io-uring on, but io_uring cannot be set up here: {e}"),
        )),
        Err(e) => {
            let none = (0..threads).map(|_| None).collect();
            Ok((
                none,
                format!("write/writev per connection (io_uring cannot be set up here: {e})"),
            ))
        }
    }
}
