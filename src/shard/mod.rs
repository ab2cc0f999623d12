//! One event loop per core: a mio `Poll`, this shard's SO_REUSEPORT listener, a slab of
//! connections, this shard's part of the topic index and its mesh endpoint.
//!
//! A loop turn: poll (sleeping only when no work is pending) → accept → read and handle every
//! ready connection (within a per-connection budget) → handle the inbox from other shards →
//! one vectored write per dirty connection → hand outboxes to other shards → remove closed
//! connections. A coarse sweep (not a timer per socket) enforces the handshake deadline,
//! pings idle WebSockets and ends drains.

mod address_limit;
mod connection;
mod handshake_rate;
mod http;
mod output;
mod websocket;
pub mod write_queue;

use std::collections::{HashMap, VecDeque};
use std::io::{self, IoSlice, Read};
use std::net::Shutdown;
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token};
use slab::Slab;

use crate::broker::history::{self, EpochGen, HistoryPolicy};
use crate::broker::{
    Broker, HttpHistory, HttpPublished, Limits, SendKind, SendStatus, OVERLOADED_MESSAGE,
};
use crate::config::CompressionMode;
use crate::engine::redis::{EngineLink, RedisEngine};
use crate::engine::{AnyEngine, DeflateOnce, LocalEngine, PayloadRef};
use crate::mesh::{ConnRef, Mesh, ReplyTo};
use crate::metrics::{EvictionReason, FanoutTracker, LoopPhase, Metric, ShardCounters};
use crate::proto::close;
use crate::proto::deflate::Deflater;
use crate::proto::http_refusal::Refusal;
use crate::proto::prepared;
use crate::shared::{Fault, Shared};
use crate::sys::send_ring::{SendRing, MAX_SLICES_PER_SEND, SEND_RING_ENTRIES};

use connection::{elapsed_ms, flags, ping_after_ms, Connection, Phase};
use output::Effects;
use write_queue::Flushed;

pub use address_limit::{AddressKey, AddressLimit};
pub use connection::Route;
pub use handshake_rate::{HandshakeRate, MAX_TRACKED_ADDRESSES};

/// Token of this shard's listener.
const LISTENER: Token = Token(usize::MAX - 1);
/// Token of this shard's mesh waker.
pub const WAKER: Token = Token(usize::MAX - 2);

/// One read buffer per shard, reused by every connection: an idle connection holds none.
const READ_BUFFER_BYTES: usize = 64 * 1024;
/// Reads one connection may do in one turn before others get their turn (edge-triggered
/// readiness means we must come back to it: it goes on the `again` list).
const READS_PER_TURN: usize = 8;
/// Connections accepted per turn before the loop attends to established ones.
const ACCEPTS_PER_TURN: usize = 512;
/// Connections flushed per turn. A fan-out to many subscribers is written in chunks with a
/// non-blocking poll in between, so a publish that arrives mid-sweep is queued on the
/// connections not yet written and leaves with them, instead of waiting a whole sweep.
const FLUSHES_PER_TURN: usize = 256;
// A flush chunk fits one io_uring batch, and a batched send carries what a syscall would.
const _: () = assert!(FLUSHES_PER_TURN <= SEND_RING_ENTRIES);
const _: () = assert!(MAX_SLICES_PER_SEND == write_queue::MAX_FRAMES_PER_WRITE);
/// Events taken from one `poll` call.
const EVENTS_PER_POLL: usize = 1024;
/// Longest sleep when nothing is due: the sweep cadence bounds it anyway.
const MAX_SWEEP_INTERVAL: Duration = Duration::from_secs(1);
/// How long a connection may linger in Closing when not draining.
const CLOSE_LINGER_MS: u32 = 2_000;
/// How soon to retry control messages a peer's full inbox did not take, when nothing else is
/// pending: soon enough that a subscribe ack is barely delayed, late enough that a stalled
/// peer costs this shard almost no CPU (a zero timeout would spin).
const MESH_RETRY_INTERVAL: Duration = Duration::from_millis(1);

/// What handling some input decided about the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
    Continue,
    /// Stop processing this connection's input (it is closing, gone, or must wait).
    Stop,
}

pub struct Shard {
    id: usize,
    shared: Arc<Shared>,
    poll: Poll,
    listener: Option<TcpListener>,
    conns: Slab<Connection>,
    next_generation: u32,
    read_buf: Vec<u8>,
    /// Every pub/sub decision: subscriber index, subscriptions, pending acks, slow consumers.
    broker: Broker<AnyEngine>,
    /// Deflates `/echo` replies for connections that negotiated permessage-deflate.
    echo_deflater: Deflater,
    mesh: Mesh,
    /// HTTP publish answers the broker produced, finished once it returns.
    http_answers: Vec<(ConnRef, HttpPublished)>,
    /// `GET /history` answers the broker produced, finished once it returns.
    history_answers: Vec<(ConnRef, HttpHistory)>,
    /// Connections with output waiting for their write, in the order they got it.
    dirty: VecDeque<usize>,
    /// Connections that used their read budget and have more to read.
    again: Vec<usize>,
    /// Connections to remove at the end of the turn.
    doomed: Vec<usize>,
    counters: ShardCounters,
    started: Instant,
    now_ms: u32,
    /// The clock at the start of the current loop phase, µs since the server started: the
    /// time the engine stamps on publishes it sequences.
    now_us: u64,
    /// Entries `flush_dirty` has taken off `dirty`, ever: fan-outs wait for a count of these.
    dirty_popped: u64,
    /// Fan-outs whose writes are not all done yet, per-topic series, largest fan-outs.
    fanout: FanoutTracker,
    next_sweep_ms: u32,
    sweep_interval_ms: u32,
    /// `accept` failed (out of descriptors, say): retried at the next sweep, not in a spin.
    accept_paused: bool,
    /// `accept` stopped at its per-turn budget: more may wait, retried next turn.
    accept_more: bool,
    drain_deadline_ms: Option<u32>,
    /// The address each connection is counted under by `--max-connections-per-ip` (only
    /// while it is on), released when the connection is removed.
    addresses: HashMap<usize, AddressKey>,
    /// `--io-uring`: the batch that carries each flush chunk's sends, if set up.
    send_ring: Option<SendRing>,
    /// The connections of the flush chunk being written, and (with a send ring) which of them
    /// got a batched send and its result: kept to reuse their capacity.
    flush_keys: Vec<usize>,
    batch_positions: Vec<usize>,
    batch_results: Vec<i32>,
}

impl Shard {
    pub(crate) fn new(
        id: usize,
        shared: Arc<Shared>,
        poll: Poll,
        listener: TcpListener,
        mesh: Mesh,
        engine: Option<EngineLink>,
        send_ring: Option<SendRing>,
    ) -> io::Result<Shard> {
        let mut listener = listener;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        let config = &shared.config;
        let shortest = config
            .handshake_timeout
            .min(config.ping_interval)
            .min(config.drain_timeout)
            .min(config.fragment_deadline());
        let sweep_interval = (shortest / 4).clamp(Duration::from_millis(20), MAX_SWEEP_INTERVAL);
        let limits = Limits {
            max_subscriptions_per_connection: config.max_subscriptions_per_connection,
            slow_consumer: config.slow_consumer,
            max_subscriptions: shared.max_subscriptions,
            max_topics: shared.max_topics,
        };
        let shards = mesh.shard_count();
        let engine = match engine {
            Some(link) => AnyEngine::Redis(RedisEngine::new(id, link, shared.interest.clone())),
            None => {
                let mut local = LocalEngine::with_history(
                    id,
                    shards,
                    shared.interest.clone(),
                    HistoryPolicy::from_config(config),
                    history::shard_budget_bytes(config.max_history_bytes, shards),
                    EpochGen::os_seed() ^ (id as u64),
                );
                if config.compression == CompressionMode::On {
                    local = local.with_deflate(DeflateOnce::new(
                        config.compression_level,
                        config.compression_min_bytes,
                        shared.compressing_subscribers.clone(),
                    ));
                }
                AnyEngine::Local(local)
            }
        };
        let broker = Broker::new(id, limits, engine)
            .share_subscription_count(shared.subscriptions.clone())
            .with_policy(Arc::clone(&shared.policy));
        Ok(Shard {
            id,
            poll,
            listener: Some(listener),
            conns: Slab::with_capacity(1024),
            next_generation: 0,
            read_buf: vec![0; READ_BUFFER_BYTES],
            broker,
            echo_deflater: Deflater::new(config.compression_level),
            mesh,
            http_answers: Vec::new(),
            history_answers: Vec::new(),
            dirty: VecDeque::new(),
            again: Vec::new(),
            doomed: Vec::new(),
            counters: ShardCounters::default(),
            started: shared.started,
            now_ms: 0,
            now_us: 0,
            dirty_popped: 0,
            fanout: FanoutTracker::new(config.metrics_topics.clone()),
            next_sweep_ms: 0,
            sweep_interval_ms: sweep_interval.as_millis() as u32,
            accept_paused: false,
            accept_more: false,
            drain_deadline_ms: None,
            addresses: HashMap::new(),
            send_ring,
            flush_keys: Vec::with_capacity(FLUSHES_PER_TURN),
            batch_positions: Vec::with_capacity(FLUSHES_PER_TURN),
            batch_results: Vec::with_capacity(FLUSHES_PER_TURN),
            shared,
        })
    }

    /// Runs the loop until a drain finishes.
    pub fn run(mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(EVENTS_PER_POLL);
        loop {
            if self.shared.fault != Fault::None {
                self.inject_fault();
            }
            let timeout = self.poll_timeout();
            let will_sleep = timeout != Some(Duration::ZERO);
            if will_sleep && !self.mesh.prepare_to_sleep() {
                // Mail arrived while we were deciding: don't sleep.
                self.poll.poll(&mut events, Some(Duration::ZERO))?;
            } else {
                match self.poll.poll(&mut events, timeout) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            self.mesh.awake();
            let turn_start = Instant::now();
            self.now_ms = self.clock_ms(turn_start);
            self.now_us = turn_start.duration_since(self.started).as_micros() as u64;
            let read_work = !events.is_empty() || !self.again.is_empty() || self.accept_more;
            // History keeps its own 64-bit clock: its TTLs are compared without wrapping.
            let history_ms = turn_start.duration_since(self.started).as_millis() as u64;
            self.broker.tick(history_ms);
            if self.shared.policy.tokens_required() {
                // Token expiry is in wall-clock seconds (`exp`); one clock read per turn.
                self.broker.set_clock(unix_now_secs());
            }

            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept(),
                    WAKER => {}
                    Token(key) => {
                        if event.is_readable() || event.is_read_closed() || event.is_error() {
                            self.on_readable(key);
                        }
                        if event.is_writable() {
                            self.on_writable(key);
                        }
                    }
                }
            }
            self.revisit_budgeted();
            if read_work {
                self.end_phase(LoopPhase::Read);
            }
            if self.drain_inbox() {
                self.end_phase(LoopPhase::Inbox);
            }
            if elapsed_ms(self.now_ms, self.next_sweep_ms) < u32::MAX / 2 {
                self.sweep();
                self.next_sweep_ms = self.now_ms.wrapping_add(self.sweep_interval_ms);
                self.end_phase(LoopPhase::Sweep);
            }
            if !self.dirty.is_empty() {
                self.flush_dirty();
                self.end_phase(LoopPhase::Flush);
                self.fanout.flushed(
                    self.dirty_popped,
                    self.now_us,
                    &mut self.counters.fanout,
                    &self.shared.counters[self.id].fanout,
                );
            }
            self.flush_mesh();
            self.remove_doomed();

            if !events.is_empty() {
                self.counters.incr(Metric::LoopTurns);
                self.counters
                    .record_turn(turn_start.elapsed().as_micros() as u64);
            }
            self.counters
                .set(Metric::ConnectionsOpen, self.conns.len() as u64);
            self.counters
                .set(Metric::TopicsLocal, self.broker.topic_count() as u64);
            self.counters.set(
                Metric::Subscriptions,
                self.broker.subscription_count() as u64,
            );
            self.counters
                .set(Metric::TopicsOwned, self.broker.engine_topic_count() as u64);
            self.copy_history_stats();
            self.counters
                .set(Metric::MeshInboxBytes, self.mesh.inbox_bytes() as u64);
            self.shared.counters[self.id].publish(&self.counters);

            if let Some(deadline) = self.drain_deadline_ms {
                let past_deadline = elapsed_ms(self.now_ms, deadline) < u32::MAX / 2;
                if self.conns.is_empty() || past_deadline {
                    return Ok(());
                }
            }
        }
    }

    /// Copies the history log's counters (kept by the topics' owner, this shard's engine) into
    /// the shard's metrics.
    pub(super) fn copy_history_stats(&mut self) {
        let Some(history) = self.broker.engine().history() else {
            return;
        };
        let stats = history.stats();
        let c = &mut self.counters;
        c.set(Metric::HistoryStored, stats.stored);
        c.set(Metric::HistoryTooLarge, stats.too_large);
        c.set(Metric::HistoryIncarnations, stats.incarnations);
        c.set(Metric::HistoryMessages, history.kept_count() as u64);
        c.set(Metric::HistoryBytes, history.used_bytes() as u64);
        c.set_evicted(EvictionReason::Size, stats.evicted_size);
        c.set_evicted(EvictionReason::Ttl, stats.expired);
        c.set_evicted(EvictionReason::Budget, stats.evicted_budget);
    }

    fn clock_ms(&self, now: Instant) -> u32 {
        now.duration_since(self.started).as_millis() as u32
    }

    /// Reads the clock once at the end of a loop phase that had work: records the phase's
    /// time and starts the next phase's clock (what the engine stamps on publishes).
    fn end_phase(&mut self, phase: LoopPhase) {
        let now_us = self.started.elapsed().as_micros() as u64;
        self.counters
            .record_phase(phase, now_us.saturating_sub(self.now_us));
        self.now_us = now_us;
    }

    fn poll_timeout(&self) -> Option<Duration> {
        if !self.again.is_empty()
            || self.mesh.has_fresh()
            || self.broker.engine_has_pending()
            || !self.dirty.is_empty()
            || self.accept_more
        {
            return Some(Duration::ZERO);
        }
        let until_sweep = self.next_sweep_ms.wrapping_sub(self.now_ms);
        let until_sweep = if until_sweep > u32::MAX / 2 {
            0
        } else {
            until_sweep
        };
        let timeout = Duration::from_millis(until_sweep as u64);
        if self.mesh.has_pending() {
            // Only retries wait (a peer's inbox is full): back off instead of spinning.
            return Some(timeout.min(MESH_RETRY_INTERVAL));
        }
        Some(timeout)
    }

    /// Misbehaves on purpose (`Fault`), to test the process's supervision.
    #[cold]
    fn inject_fault(&mut self) {
        match self.shared.fault {
            Fault::PanicShard(shard) if shard == self.id => {
                panic!("injected fault: shard {shard} panics")
            }
            Fault::StallShard(shard) if shard == self.id => {
                while !self.shared.draining.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
            Fault::None | Fault::PanicShard(_) | Fault::StallShard(_) => {}
        }
    }

    fn connection_ref(&self, key: usize) -> ConnRef {
        ConnRef {
            shard: self.id as u16,
            key: key as u32,
            generation: self.conns[key].generation,
        }
    }

    /// The connection `conn` refers to, if it is still the same one.
    fn resolve(&self, conn: ConnRef) -> Option<usize> {
        let key = conn.key as usize;
        match self.conns.get(key) {
            Some(c) if c.generation == conn.generation && !c.has(flags::DOOMED) => Some(key),
            _ => None,
        }
    }

    fn accept(&mut self) {
        self.accept_more = false;
        for _ in 0..ACCEPTS_PER_TURN {
            let Some(listener) = self.listener.as_ref() else {
                return;
            };
            match listener.accept() {
                Ok((stream, peer)) => {
                    self.counters.incr(Metric::ConnectionsAccepted);
                    let open = self.shared.open_connections.fetch_add(1, Ordering::Relaxed) + 1;
                    if open > self.shared.max_connections {
                        // Over the cap: 503 and close now, so the descriptor is not held.
                        self.shared.open_connections.fetch_sub(1, Ordering::Relaxed);
                        self.counters.incr(Metric::ConnectionsRefused);
                        self.refuse_at_accept(stream, Refusal::TooManyConnections);
                        continue;
                    }
                    let address = AddressKey::of(peer.ip());
                    let per_address = self.shared.per_address.as_ref();
                    if per_address.is_some_and(|limit| !limit.try_acquire(address)) {
                        self.shared.open_connections.fetch_sub(1, Ordering::Relaxed);
                        self.refuse_at_accept(stream, Refusal::TooManyConnectionsFromAddress);
                        continue;
                    }
                    let _ = stream.set_nodelay(true);
                    self.next_generation = self.next_generation.wrapping_add(1);
                    let entry = self.conns.vacant_entry();
                    let key = entry.key();
                    let mut conn = Connection {
                        stream,
                        phase: Phase::Http(Box::new(connection::HttpPhase {
                            buf: Vec::new(),
                            started_ms: self.now_ms,
                            body: None,
                            awaiting_publish: false,
                            keep_alive: false,
                            served: false,
                            publish_bucket: None,
                        })),
                        out: Default::default(),
                        generation: self.next_generation,
                        last_heard_ms: self.now_ms,
                        flags: 0,
                    };
                    if let Err(_e) = self.poll.registry().register(
                        &mut conn.stream,
                        Token(key),
                        Interest::READABLE,
                    ) {
                        self.shared.open_connections.fetch_sub(1, Ordering::Relaxed);
                        if let Some(limit) = &self.shared.per_address {
                            limit.release(address);
                        }
                        continue;
                    }
                    entry.insert(conn);
                    if self.shared.per_address.is_some() {
                        self.addresses.insert(key, address);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.accept_paused = false;
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // Out of descriptors (EMFILE/ENFILE) or a transient network error: the
                    // listener stays readable but we cannot take the connection now. Try
                    // again at the next sweep rather than spinning.
                    let _ = e;
                    self.counters.incr(Metric::AcceptErrors);
                    self.accept_paused = true;
                    return;
                }
            }
        }
        // Budget used up: more may be waiting, and edge-triggered readiness will not say so.
        self.accept_more = true;
    }

    /// Reads what a connection has (within the read budget) and handles it.
    fn on_readable(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if conn.has(flags::DOOMED) {
            return;
        }
        if conn.has(flags::READ_PAUSED) {
            return;
        }
        // Requests left buffered while a publish was in flight go first.
        if let Phase::Http(http) = &conn.phase {
            if !http.buf.is_empty()
                && !http.awaiting_publish
                && self.process_http(key) == Flow::Stop
            {
                return;
            }
        }
        for _ in 0..READS_PER_TURN {
            let conn = &mut self.conns[key];
            let n = match conn.stream.read(&mut self.read_buf) {
                Ok(0) => {
                    self.doom(key);
                    return;
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    self.doom(key);
                    return;
                }
            };
            conn.last_heard_ms = self.now_ms;
            conn.clear(flags::PING_SENT);
            self.counters.add(Metric::BytesIn, n as u64);
            let flow = match conn.phase {
                Phase::Http(_) => self.on_http_bytes(key, n),
                Phase::WebSocket(_) => {
                    let mut buf = std::mem::take(&mut self.read_buf);
                    let flow = self.on_websocket_bytes(key, &mut buf[..n]);
                    self.read_buf = buf;
                    flow
                }
                Phase::Closing { .. } => Flow::Continue, // discard
            };
            if flow == Flow::Stop {
                return;
            }
            if self.pause_reading_if_backlogged(key) {
                return;
            }
        }
        self.again.push(key);
    }

    /// Stops reading from a connection whose own output is over the backlog cap (a client that
    /// sends but does not read), so it cannot grow the broker's memory.
    fn pause_reading_if_backlogged(&mut self, key: usize) -> bool {
        let conn = &mut self.conns[key];
        if conn.out.queued_bytes() > self.shared.config.max_backlog_bytes {
            conn.set(flags::READ_PAUSED);
            true
        } else {
            false
        }
    }

    fn revisit_budgeted(&mut self) {
        if self.accept_more {
            self.accept();
        }
        let again = std::mem::take(&mut self.again);
        for key in again {
            self.on_readable(key);
        }
    }

    /// Lists a connection for a flush.
    fn mark_dirty(&mut self, key: usize) {
        if let Some(conn) = self.conns.get_mut(key) {
            if !conn.has(flags::DIRTY) {
                conn.set(flags::DIRTY);
                self.dirty.push_back(key);
            }
        }
    }

    /// The socket has room again: worth a write only if something waits.
    fn on_writable(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if !conn.out.is_empty() || matches!(conn.phase, Phase::Closing { .. }) {
            self.mark_dirty(key);
        } else if conn.has(flags::WANT_WRITABLE) {
            // Caught up: stop hearing about every ACK that frees send buffer space.
            conn.clear(flags::WANT_WRITABLE);
            let token = Token(key);
            if self
                .poll
                .registry()
                .reregister(&mut conn.stream, token, Interest::READABLE)
                .is_err()
            {
                self.doom(key);
            }
        }
    }

    /// The socket's send buffer is full: ask to hear when it has room. Connections are
    /// registered for readability only, so that in the common case (writes that fit) the
    /// ACKs freeing buffer space do not each wake this shard's epoll.
    fn want_writable(&mut self, key: usize) {
        let conn = &mut self.conns[key];
        if conn.has(flags::WANT_WRITABLE) {
            return;
        }
        conn.set(flags::WANT_WRITABLE);
        let token = Token(key);
        if self
            .poll
            .registry()
            .reregister(
                &mut conn.stream,
                token,
                Interest::READABLE | Interest::WRITABLE,
            )
            .is_err()
        {
            self.doom(key);
        }
    }

    /// Queues a frame or response on a connection under `kind`'s budget rule and lists it for
    /// a flush: the one send path of the shard (see `output::send`).
    fn send(&mut self, key: usize, bytes: Bytes, kind: SendKind) -> SendStatus {
        let max_backlog_bytes = self.shared.config.max_backlog_bytes;
        output::send(
            &mut self.conns,
            &mut self.dirty,
            key,
            bytes,
            kind,
            max_backlog_bytes,
        )
    }

    /// When a connection closed now must be gone at the latest.
    fn close_deadline_ms(&self) -> u32 {
        self.drain_deadline_ms
            .unwrap_or(self.now_ms.wrapping_add(CLOSE_LINGER_MS))
    }

    /// Runs `f` with the broker core and this shard's effects on it, then finishes the HTTP
    /// publishes and history reads it answered.
    fn with_broker<R>(
        &mut self,
        f: impl FnOnce(&mut Broker<AnyEngine>, &mut Effects<'_>) -> R,
    ) -> R {
        let close_deadline_ms = self.close_deadline_ms();
        let mut effects = Effects {
            conns: &mut self.conns,
            dirty: &mut self.dirty,
            mesh: &mut self.mesh,
            counters: &mut self.counters,
            compressing_subscribers: &self.shared.compressing_subscribers,
            http_answers: &mut self.http_answers,
            history_answers: &mut self.history_answers,
            max_backlog_bytes: self.shared.config.max_backlog_bytes,
            close_deadline_ms,
            now_us: self.now_us,
            dirty_popped: self.dirty_popped,
            fanout: &mut self.fanout,
            shared_fanout: &self.shared.counters[self.id].fanout,
        };
        let result = f(&mut self.broker, &mut effects);
        if !self.http_answers.is_empty() {
            let mut answers = std::mem::take(&mut self.http_answers);
            for (conn, answer) in answers.drain(..) {
                let Some(key) = self.resolve(conn) else {
                    continue;
                };
                match answer {
                    HttpPublished::Sequenced(seq, epoch) => {
                        self.finish_http_publish(key, Ok((seq, epoch)))
                    }
                    HttpPublished::Refused => self.finish_http_publish(
                        key,
                        Err(Refusal::PublishOverloaded(OVERLOADED_MESSAGE.to_string())),
                    ),
                    HttpPublished::Unavailable => {
                        self.finish_http_publish(key, Err(Refusal::PublishEngineUnavailable))
                    }
                }
            }
            self.http_answers = answers;
        }
        if !self.history_answers.is_empty() {
            let mut answers = std::mem::take(&mut self.history_answers);
            for (conn, answer) in answers.drain(..) {
                if let Some(key) = self.resolve(conn) {
                    self.finish_history_read(key, answer);
                }
            }
            self.history_answers = answers;
        }
        result
    }

    /// Publishes from a connection on this shard (a binary frame or `POST /publish`).
    fn route_publish(&mut self, topic: &str, payload: PayloadRef<'_>, reply: ReplyTo) {
        self.with_broker(|broker, out| broker.publish(topic, payload, reply, out));
    }

    /// One write for each of the next `FLUSHES_PER_TURN` dirty connections, oldest first; the
    /// rest go in the next turns, which do not sleep while any are left. With a send ring the
    /// chunk's writes go to the kernel in one io_uring batch, else a syscall each.
    fn flush_dirty(&mut self) {
        let chunk = self.dirty.len().min(FLUSHES_PER_TURN);
        let mut keys = std::mem::take(&mut self.flush_keys);
        keys.clear();
        for _ in 0..chunk {
            let Some(key) = self.dirty.pop_front() else {
                break;
            };
            self.dirty_popped += 1;
            let Some(conn) = self.conns.get_mut(key) else {
                continue;
            };
            conn.clear(flags::DIRTY);
            if !conn.has(flags::DOOMED) {
                keys.push(key);
            }
        }
        let mut positions = std::mem::take(&mut self.batch_positions);
        let mut results = std::mem::take(&mut self.batch_results);
        positions.clear();
        if let Some(ring) = &mut self.send_ring {
            if let Err(e) = send_batch(ring, &self.conns, &keys, &mut positions, &mut results) {
                // The kernel took none of the sends: they go out as syscalls below.
                eprintln!(
                    "crier: shard {}: io_uring send failed ({e}); sending with syscalls from now on",
                    self.id
                );
                self.send_ring = None;
            }
        }
        let mut batched = positions
            .iter()
            .copied()
            .zip(results.iter().copied())
            .peekable();
        for (position, &key) in keys.iter().enumerate() {
            let batch_result = batched
                .next_if(|&(at, _)| at == position)
                .map(|(_, result)| result);
            self.finish_flush(key, batch_result);
        }
        self.batch_positions = positions;
        self.batch_results = results;
        self.flush_keys = keys;
    }

    /// Completes one connection's flush: takes in what its batched send wrote (`batch_result`:
    /// bytes or `-errno`), writes whatever is still queued with syscalls until the socket is
    /// full, then shuts a closing connection's write side or resumes reading a paused one.
    fn finish_flush(&mut self, key: usize, batch_result: Option<i32>) {
        let conn = &mut self.conns[key];
        let mut blocked = false;
        match batch_result {
            None => {}
            Some(written) if written >= 0 => {
                conn.out.sent(written as usize);
                self.counters.add(Metric::BytesOut, written as u64);
                self.counters.incr(Metric::Writes);
            }
            Some(error) if error == -libc::EAGAIN => {
                self.counters.incr(Metric::Writes);
                blocked = true;
            }
            // Interrupted: try again below as a syscall.
            Some(error) if error == -libc::EINTR => {}
            Some(_) => {
                self.doom(key);
                return;
            }
        }
        if !blocked && !conn.out.is_empty() {
            match conn.out.flush(&mut conn.stream) {
                Ok((state, written)) => {
                    self.counters.add(Metric::BytesOut, written as u64);
                    self.counters.incr(Metric::Writes);
                    blocked = state == Flushed::Blocked;
                }
                Err(_) => {
                    self.doom(key);
                    return;
                }
            }
        }
        if blocked {
            self.counters.incr(Metric::WritesBlocked);
            self.want_writable(key);
            return;
        }
        let conn = &mut self.conns[key];
        if matches!(conn.phase, Phase::Closing { .. }) && !conn.has(flags::WRITE_SHUT) {
            conn.set(flags::WRITE_SHUT);
            if conn.stream.shutdown(Shutdown::Write).is_err() {
                self.doom(key);
            }
        } else if conn.has(flags::READ_PAUSED)
            && conn.out.queued_bytes() <= self.shared.config.max_backlog_bytes / 2
        {
            conn.clear(flags::READ_PAUSED);
            self.again.push(key);
        }
    }

    fn flush_mesh(&mut self) {
        if self.broker.engine_has_pending() {
            self.with_broker(|broker, out| broker.flush_engine(out));
        }
        if !self.mesh.has_pending() {
            return;
        }
        let outcome = self.mesh.flush();
        self.counters
            .add(Metric::MeshBatchesSent, outcome.batches_sent);
        self.counters
            .add(Metric::MeshMessagesSent, outcome.messages_sent);
        self.counters.add(Metric::MeshInboxFull, outcome.inbox_full);
        for (_to, refused) in outcome.refused {
            self.counters.incr(Metric::MeshDropped);
            self.with_broker(|broker, out| broker.on_refused(refused, out));
        }
    }

    /// Starts closing a connection: `last_words` (a close frame or an HTTP response) goes out,
    /// then the write side is shut and input is discarded until the peer closes.
    fn close_with(&mut self, key: usize, last_words: Option<Bytes>) {
        let deadline = self.close_deadline_ms();
        self.leave_websocket(key);
        output::begin_closing(
            &mut self.conns,
            &mut self.dirty,
            &mut self.counters,
            &self.shared.compressing_subscribers,
            key,
            deadline,
            last_words,
        );
    }

    /// Lists a connection for removal at the end of the turn.
    fn doom(&mut self, key: usize) {
        if let Some(conn) = self.conns.get_mut(key) {
            if !conn.has(flags::DOOMED) {
                conn.set(flags::DOOMED);
                self.doomed.push(key);
            }
        }
    }

    fn remove_doomed(&mut self) {
        let doomed = std::mem::take(&mut self.doomed);
        for key in doomed {
            self.leave_websocket(key);
            // Dropping the stream closes the socket, which also removes it from epoll.
            self.conns.remove(key);
            self.shared.open_connections.fetch_sub(1, Ordering::Relaxed);
            if let (Some(limit), Some(address)) =
                (&self.shared.per_address, self.addresses.remove(&key))
            {
                limit.release(address);
            }
        }
    }

    /// Whatever a WebSocket held (subscriptions, the open count) is released, once.
    fn leave_websocket(&mut self, key: usize) {
        let conn = &mut self.conns[key];
        let Phase::WebSocket(ws) = &conn.phase else {
            return;
        };
        let pubsub = ws.route == Route::PubSub;
        if ws.is_compressing_subscriber() {
            self.shared
                .compressing_subscribers
                .fetch_sub(1, Ordering::Relaxed);
        }
        conn.phase = Phase::Closing {
            deadline_ms: self.now_ms,
        };
        self.counters.sub(Metric::WebSocketsOpen, 1);
        if pubsub {
            self.with_broker(|broker, out| broker.on_closed(key, out));
        }
    }

    /// The coarse timer: handshake deadlines, pings, idle and close deadlines, drains.
    fn sweep(&mut self) {
        let config = &self.shared.config;
        let handshake_ms = config.handshake_timeout.as_millis() as u32;
        let ping_ms = config.ping_interval.as_millis().max(1) as u32;
        let fragment_ms = config.fragment_deadline().as_millis() as u32;
        let now = self.now_ms;
        let mut overdue = Vec::new();
        let mut expired_http = Vec::new();
        let mut to_ping = Vec::new();
        let mut idle = Vec::new();
        let mut done_closing = Vec::new();
        for (key, conn) in self.conns.iter_mut() {
            conn.out.trim();
            match &conn.phase {
                Phase::Http(http) => {
                    if elapsed_ms(now, http.started_ms) >= handshake_ms && !http.awaiting_publish {
                        expired_http.push(key);
                    }
                }
                Phase::WebSocket(ws) => {
                    let session = ws.session.as_ref();
                    if let Some(Err(e)) =
                        session.map(|s| s.check_message_deadline(now, fragment_ms))
                    {
                        overdue.push((key, e));
                        continue;
                    }
                    let silent = elapsed_ms(now, conn.last_heard_ms);
                    if conn.has(flags::PING_SENT) {
                        if silent >= 2 * ping_ms {
                            idle.push(key);
                        }
                    } else if silent >= ping_after_ms(ping_ms, key) {
                        to_ping.push(key);
                    }
                }
                Phase::Closing { deadline_ms } => {
                    if elapsed_ms(now, *deadline_ms) < u32::MAX / 2 {
                        done_closing.push(key);
                    }
                }
            }
        }
        for key in expired_http {
            let idle = matches!(&self.conns[key].phase, Phase::Http(http) if http.served && http.buf.is_empty());
            self.counters.incr(if idle {
                Metric::HttpIdleClosed
            } else {
                Metric::HandshakeTimeout
            });
            self.doom(key);
        }
        for key in to_ping {
            self.conns[key].set(flags::PING_SENT);
            // A ping is queued like a reply; past the budget, reading pauses (in `send`).
            let _ = self.send(key, prepared::ping_frame(b""), SendKind::Reply);
        }
        for (key, error) in overdue {
            self.counters.incr(Metric::ProtocolErrors);
            self.close_websocket(key, error.close_code(), &error.to_string());
        }
        for key in idle {
            self.counters.incr(Metric::IdleTimeouts);
            self.close_websocket(key, close::GOING_AWAY, "idle timeout");
        }
        for key in done_closing {
            self.doom(key);
        }
        if let Some(rate) = &self.shared.handshake_rate {
            rate.sweep(self.id, self.shared.counters.len(), now);
        }
        // Tokens that expired without a refresh: `token_expired`, then close 4001.
        self.with_broker(|broker, out| broker.expire_tokens(out));
        if self.accept_paused {
            self.accept();
        }
        self.fanout
            .publish_top(self.now_ms, &self.shared.counters[self.id].fanout);
    }

    /// Stops accepting and says goodbye (close 1001) to every WebSocket; the loop ends once
    /// every connection is gone or `--drain-timeout` has passed.
    fn begin_drain(&mut self) {
        if self.drain_deadline_ms.is_some() {
            return;
        }
        let drain_ms = self.shared.config.drain_timeout.as_millis() as u32;
        self.drain_deadline_ms = Some(self.now_ms.wrapping_add(drain_ms));
        if let Some(mut listener) = self.listener.take() {
            let _ = self.poll.registry().deregister(&mut listener);
        }
        self.accept_paused = false;
        self.accept_more = false;
        let keys: Vec<usize> = self.conns.iter().map(|(key, _)| key).collect();
        for key in keys {
            match &self.conns[key].phase {
                Phase::WebSocket(_) => {
                    self.close_websocket(key, close::GOING_AWAY, "server shutting down")
                }
                // Idle between requests: close gracefully, so a response queued this very
                // turn still goes out.
                Phase::Http(http) if http.buf.is_empty() && !http.awaiting_publish => {
                    self.close_with(key, None)
                }
                Phase::Http(_) => {}
                Phase::Closing { .. } => {
                    let deadline = self.drain_deadline_ms;
                    if let Phase::Closing { deadline_ms } = &mut self.conns[key].phase {
                        *deadline_ms = deadline.unwrap_or(*deadline_ms);
                    }
                }
            }
        }
    }

    /// Handles every batch waiting in the inbox; says whether there was any.
    fn drain_inbox(&mut self) -> bool {
        if self.mesh.shutdown_requested() {
            self.begin_drain();
        }
        let mut any = false;
        while let Some(batch) = self.mesh.try_recv() {
            any = true;
            for msg in batch.msgs {
                self.with_broker(|broker, out| broker.on_peer(msg, out));
            }
            self.mesh.release(batch.weight);
        }
        any
    }
}

/// Hands the queued frames of each connection in `keys` that has any to `ring` as one batch
/// of sends: `positions` gets the index in `keys` of each send, `results` its outcome (bytes
/// or `-errno`), in the same order. An error means nothing was sent.
fn send_batch(
    ring: &mut SendRing,
    conns: &Slab<Connection>,
    keys: &[usize],
    positions: &mut Vec<usize>,
    results: &mut Vec<i32>,
) -> io::Result<()> {
    positions.clear();
    let mut batch = ring.batch();
    let mut slices = [IoSlice::new(&[]); MAX_SLICES_PER_SEND];
    for (position, &key) in keys.iter().enumerate() {
        let conn = &conns[key];
        let count = conn.out.unwritten(&mut slices);
        if count > 0 && batch.push(conn.stream.as_raw_fd(), &slices[..count]) {
            positions.push(position);
        }
    }
    let submitted = batch.submit(results);
    if submitted.is_err() {
        positions.clear();
    }
    submitted
}

/// Seconds since the Unix epoch (0 if the clock is before it), the unit of JWT `exp`.
pub(crate) fn unix_now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
