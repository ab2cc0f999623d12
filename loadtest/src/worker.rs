//! One worker thread: its own mio Poll driving a share of the connections (connect, handshake,
//! subscribe, publish on schedule, receive and account). Threads share nothing on the hot path;
//! they publish plain counters to `Shared` once per loop turn and a histogram copy once a second.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crier::proto::frame::OpCode;
use hdrhistogram::Histogram;
use mio::net::TcpStream;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};

use crate::config::{http_publish_path, with_query, Plan, Target};
use crate::net;
use crate::payload::{self, Incoming, Stamp};
use crate::schedule::Schedule;
use crate::sys::{self, TimerFd};
use crate::tracker::Tracker;
use crate::ws::{self, Reader, WsEvent};

/// Socket reads of one connection per loop turn before others get a go (edge-triggered, so a
/// connection that hit the cap is revisited with a zero poll timeout).
const MAX_READS_PER_TURN: usize = 8;
/// Messages one publisher takes off its schedule per turn before others get a go.
const MAX_PUBLISHES_PER_TURN: u64 = 256;
/// Unwritten bytes per publisher after which it stops taking messages off its schedule: the
/// broker is not reading, so further messages wait (and are stamped late) instead of piling
/// up in memory.
const MAX_UNWRITTEN_BYTES: usize = 1 << 20;
/// Handshakes in progress per thread; more would overflow the broker's listen backlog and the
/// SYN retry (1 s) would be measured as connect time.
const MAX_HANDSHAKES_IN_FLIGHT: usize = 256;
/// A connection that has not finished its handshake by then fails.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(15);
/// Longest poll sleep, so the flags in `Shared` are noticed promptly.
const MAX_POLL_SLEEP: Duration = Duration::from_millis(50);
/// Socket read size (one buffer per thread).
const READ_BUFFER_BYTES: usize = 256 * 1024;
const TIMER: Token = Token(usize::MAX);
/// Subscribe command id for `load-all` (each subscriber sends one).
const ALL_TOPIC_SUBSCRIBE_ID: u64 = 1;

/// How publishers send.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum PublishMode {
    /// `--rate`: open loop.
    Rate(f64),
    /// `--max`: at most `window` awaiting their ack (over HTTP: one response at a time).
    Max { window: u32 },
}

/// Everything the workers read and never change.
#[derive(Debug)]
pub struct RunConfig {
    pub plan: Plan,
    pub ws: Target,
    pub http: Option<Target>,
    pub binary: bool,
    pub size: usize,
    pub mode: PublishMode,
    pub warmup: Duration,
    pub duration: Duration,
    pub connect_rate: f64,
    pub threads: usize,
    pub total_connections: u64,
}

/// Written by workers, read by the main thread (and the start/stop flags the other way).
#[derive(Debug)]
pub struct Shared {
    pub epoch: Instant,
    /// Publishing start in ns since `epoch`; 0 until the main thread sets it.
    pub start_ns: AtomicU64,
    pub stop: AtomicBool,
    pub connections_up: AtomicU64,
    pub connections_failed: AtomicU64,
    pub publishers_failed: AtomicU64,
    pub last_ready_ns: AtomicU64,
    pub published: AtomicU64,
    pub delivered: AtomicU64,
    /// Per topic index: messages published, and subscribers ready.
    pub topic_published: Vec<AtomicU64>,
    pub topic_subscribers: Vec<AtomicU64>,
    pub histograms: Vec<Mutex<Histogram<u64>>>,
    pub first_error: Mutex<Option<String>>,
}

impl Shared {
    pub fn new(threads: usize, topics: usize) -> Shared {
        Shared {
            epoch: Instant::now(),
            start_ns: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            connections_up: AtomicU64::new(0),
            connections_failed: AtomicU64::new(0),
            publishers_failed: AtomicU64::new(0),
            last_ready_ns: AtomicU64::new(0),
            published: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            topic_published: (0..topics).map(|_| AtomicU64::new(0)).collect(),
            topic_subscribers: (0..topics).map(|_| AtomicU64::new(0)).collect(),
            histograms: (0..threads).map(|_| Mutex::new(new_histogram())).collect(),
            first_error: Mutex::new(None),
        }
    }

    pub fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    pub fn note_error(&self, message: String) {
        let mut first = self.first_error.lock().expect("no panics while holding");
        if first.is_none() {
            *first = Some(message);
        }
    }
}

/// Latency histogram in nanoseconds, 1 µs to 1 hour, 3 significant digits.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1_000, 3_600_000_000_000, 3).expect("valid bounds")
}

/// What a worker hands back when it stops.
#[derive(Debug)]
pub struct ThreadResult {
    pub histogram: Histogram<u64>,
    pub tracker: Tracker,
    /// (stream base, topic) per subscriber topic, to compute losses against what was published.
    pub subscriber_streams: Vec<(u32, u32)>,
    /// (publisher, topic, messages published).
    pub published: Vec<(u32, u32, u64)>,
    pub published_in_window: u64,
    pub delivered_in_window: u64,
    pub delivered_total: u64,
    /// Messages due by the end of the schedule but never sent (publisher fell behind).
    pub unsent: u64,
    pub broker_dropped: u64,
    pub foreign: u64,
    pub misrouted: u64,
    pub protocol_errors: u64,
    pub disconnects: u64,
    pub http_errors: u64,
    pub cpu_in_window: Duration,
    /// Sum and max of connect+handshake times of successful connections.
    pub handshake_ns_sum: u64,
    pub handshake_ns_max: u64,
    pub handshakes: u64,
}

/// A connection this thread is responsible for, before it is opened.
#[derive(Debug, Clone, Copy)]
pub enum Role {
    Subscriber(u32),
    Publisher(u32),
}

#[derive(Debug, PartialEq, Eq, Clone, Copy)]
enum Phase {
    Connecting,
    Handshaking,
    Subscribing,
    Ready,
    Closed,
}

struct PubState {
    id: u32,
    topics: Vec<u32>,
    topic_names: Vec<String>,
    /// Next sequence number per topic of `topics` (= messages published on it).
    seq: Vec<u64>,
    rotation: usize,
    schedule: Option<Schedule>,
    /// Publishes awaiting an ack (`--max`) or HTTP responses outstanding.
    in_flight: u32,
    next_id: u64,
}

struct Conn {
    stream: TcpStream,
    role: Role,
    phase: Phase,
    reader: Reader,
    /// Handshake / HTTP response bytes not yet complete.
    head: Vec<u8>,
    expected_accept: String,
    out: Vec<u8>,
    out_pos: usize,
    opened_ns: u64,
    /// Subscriber: (topic, stream base) for each topic.
    streams: Vec<(u32, u32)>,
    publisher: Option<PubState>,
    http: bool,
    /// Reads were cut short by the per-turn cap.
    more_to_read: bool,
}

#[derive(Default)]
struct Stats {
    tracker: Tracker,
    subscriber_streams: Vec<(u32, u32)>,
    published_in_window: u64,
    delivered_in_window: u64,
    delivered_total: u64,
    published_total: u64,
    broker_dropped: u64,
    foreign: u64,
    misrouted: u64,
    protocol_errors: u64,
    disconnects: u64,
    http_errors: u64,
    handshake_ns_sum: u64,
    handshake_ns_max: u64,
    handshakes: u64,
}

/// Timing of the run in ns since the epoch, once the main thread has started publishing.
#[derive(Debug, Clone, Copy)]
struct Window {
    start_ns: u64,
    measure_ns: u64,
    end_ns: u64,
}

/// A tiny xorshift for handshake keys and mask keys (RFC 6455 §5.3 wants them unpredictable
/// to intermediaries; a load generator talking to its own broker needs no crypto).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

pub struct Worker {
    index: usize,
    cfg: Arc<RunConfig>,
    shared: Arc<Shared>,
    poll: Poll,
    timer: TimerFd,
    conns: Vec<Conn>,
    pending: VecDeque<(u64, Role)>,
    handshakes_in_flight: usize,
    stats: Stats,
    histogram: Histogram<u64>,
    rng: Rng,
    scratch: Vec<u8>,
    command: Vec<u8>,
    window: Option<Window>,
    cpu_at_measure: Option<Duration>,
    cpu_in_window: Option<Duration>,
    unsent: u64,
    reported_published: u64,
    reported_delivered: u64,
    topic_published_reported: Vec<u64>,
    topic_published: Vec<u64>,
    /// Indices into `conns` of the publishers: the per-turn publishing pass visits only
    /// these (scanning all 10,000 connections every turn was the client's main cost).
    publisher_conns: Vec<usize>,
}

impl Worker {
    /// `roles` are (global connection index, role) for this thread's connections.
    pub fn new(
        index: usize,
        cfg: Arc<RunConfig>,
        shared: Arc<Shared>,
        roles: Vec<(u64, Role)>,
    ) -> io::Result<Worker> {
        let poll = Poll::new()?;
        let timer = TimerFd::new()?;
        poll.registry()
            .register(&mut SourceFd(&timer.raw_fd()), TIMER, Interest::READABLE)?;
        let topics = cfg.plan.topic_count() as usize;
        let seed = 0x9E37_79B9_7F4A_7C15
            ^ (index as u64 + 1).wrapping_mul(0xBF58_476D_1CE4_E5B9)
            ^ shared.now_ns();
        Ok(Worker {
            index,
            cfg,
            shared,
            poll,
            timer,
            conns: Vec::with_capacity(roles.len()),
            pending: roles.into(),
            handshakes_in_flight: 0,
            stats: Stats::default(),
            histogram: new_histogram(),
            rng: Rng(seed | 1),
            scratch: Vec::new(),
            command: Vec::new(),
            window: None,
            cpu_at_measure: None,
            cpu_in_window: None,
            unsent: 0,
            reported_published: 0,
            reported_delivered: 0,
            topic_published_reported: vec![0; topics],
            topic_published: vec![0; topics],
            publisher_conns: Vec::new(),
        })
    }

    /// Runs until the main thread sets `stop`.
    pub fn run(mut self) -> ThreadResult {
        let mut events = Events::with_capacity(1024);
        let mut rbuf = vec![0u8; READ_BUFFER_BYTES];
        let thread_start_ns = self.shared.now_ns();
        let mut opened: u64 = 0;
        let mut last_snapshot_ns = 0;
        let mut last_sweep_ns = 0;
        let mut revisit: Vec<usize> = Vec::new();
        while !self.shared.stop.load(Relaxed) {
            let now = self.shared.now_ns();
            // Open new connections, paced by --connect-rate and the handshake cap.
            let mut next_connect_ns = None;
            while self.handshakes_in_flight < MAX_HANDSHAKES_IN_FLIGHT && !self.pending.is_empty() {
                if self.cfg.connect_rate > 0.0 {
                    let per_thread = self.cfg.connect_rate / self.cfg.threads as f64;
                    let at = thread_start_ns + (opened as f64 * 1e9 / per_thread) as u64;
                    if at > now {
                        next_connect_ns = Some(at);
                        break;
                    }
                }
                let (global, role) = self.pending.pop_front().expect("not empty");
                opened += 1;
                self.open(global, role, now);
            }
            if self.window.is_none() {
                let start_ns = self.shared.start_ns.load(Relaxed);
                if start_ns != 0 {
                    self.begin_publishing(start_ns);
                }
            }
            let mut next_due_ns = next_connect_ns;
            if let Some(w) = self.window {
                if self.cpu_at_measure.is_none() && now >= w.measure_ns {
                    self.cpu_at_measure = Some(sys::thread_cpu());
                }
                if self.cpu_in_window.is_none() && now >= w.end_ns {
                    let at_start = self.cpu_at_measure.unwrap_or_default();
                    self.cpu_in_window = Some(sys::thread_cpu().saturating_sub(at_start));
                }
                for t in [w.measure_ns, w.end_ns] {
                    if t > now {
                        next_due_ns = Some(next_due_ns.map_or(t, |d: u64| d.min(t)));
                    }
                }
                let mut more = false;
                for p in 0..self.publisher_conns.len() {
                    let i = self.publisher_conns[p];
                    let (due, again) = self.publish_due(i, now, w);
                    more |= again;
                    if let Some(d) = due {
                        next_due_ns = Some(next_due_ns.map_or(d, |x: u64| x.min(d)));
                    }
                }
                if more {
                    next_due_ns = Some(now);
                }
            }
            if now - last_sweep_ns > 1_000_000_000 {
                last_sweep_ns = now;
                self.sweep_handshake_timeouts(now);
            }
            self.report(now, &mut last_snapshot_ns);

            let mut timeout = MAX_POLL_SLEEP;
            if !revisit.is_empty() {
                timeout = Duration::ZERO;
            } else if let Some(due) = next_due_ns {
                let wait = Duration::from_nanos(due.saturating_sub(now));
                if wait < timeout {
                    if wait.is_zero() {
                        timeout = Duration::ZERO;
                    } else if self.timer.arm(wait).is_ok() {
                        // The timerfd wakes us with ns precision; mio's own timeout would be
                        // rounded up to a millisecond.
                    } else {
                        timeout = wait;
                    }
                }
            }
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() != io::ErrorKind::Interrupted {
                    self.shared.note_error(format!("poll failed: {e}"));
                    break;
                }
            }
            let mut work: Vec<usize> = std::mem::take(&mut revisit);
            for event in events.iter() {
                if event.token() == TIMER {
                    self.timer.clear();
                    continue;
                }
                let i = event.token().0;
                if event.is_writable() || event.is_write_closed() || event.is_error() {
                    self.on_writable(i);
                }
                if event.is_readable() || event.is_read_closed() || event.is_error() {
                    work.push(i);
                }
            }
            work.sort_unstable();
            work.dedup();
            for i in work {
                if self.conns[i].phase == Phase::Closed {
                    continue;
                }
                self.on_readable(i, &mut rbuf);
                if self.conns[i].more_to_read {
                    revisit.push(i);
                }
            }
        }
        self.finish()
    }

    fn open(&mut self, global: u64, role: Role, now: u64) {
        let cfg = Arc::clone(&self.cfg);
        let http = matches!(role, Role::Publisher(_)) && cfg.http.is_some();
        let target = if http {
            cfg.http.as_ref().expect("http")
        } else {
            &cfg.ws
        };
        let source = net::source_addr(global, cfg.total_connections, target.addr);
        let mut stream = match net::start_connect(target.addr, source) {
            Ok(s) => s,
            Err(e) => {
                self.fail_role(role, connect_error(target.addr, source, &e));
                return;
            }
        };
        let token = Token(self.conns.len());
        if let Err(e) = self.poll.registry().register(
            &mut stream,
            token,
            Interest::READABLE | Interest::WRITABLE,
        ) {
            self.fail_role(role, format!("cannot register socket: {e}"));
            return;
        }
        let publisher = match role {
            Role::Publisher(p) => {
                let topics = cfg.plan.publisher_topics(p);
                Some(PubState {
                    id: p,
                    topic_names: topics.iter().map(|&k| cfg.plan.topic_name(k)).collect(),
                    seq: vec![0; topics.len()],
                    topics,
                    rotation: 0,
                    schedule: None,
                    in_flight: 0,
                    next_id: 1,
                })
            }
            Role::Subscriber(_) => None,
        };
        self.handshakes_in_flight += 1;
        if publisher.is_some() {
            self.publisher_conns.push(self.conns.len());
        }
        self.conns.push(Conn {
            stream,
            role,
            phase: Phase::Connecting,
            reader: Reader::new(),
            head: Vec::new(),
            expected_accept: String::new(),
            out: Vec::new(),
            out_pos: 0,
            opened_ns: now,
            streams: Vec::new(),
            publisher,
            http,
            more_to_read: false,
        });
    }

    fn fail_role(&mut self, role: Role, message: String) {
        self.shared.connections_failed.fetch_add(1, Relaxed);
        if matches!(role, Role::Publisher(_)) {
            self.shared.publishers_failed.fetch_add(1, Relaxed);
        }
        self.shared.note_error(message);
    }

    /// Fails a connection that never became ready, or closes a ready one (a disconnect).
    fn close(&mut self, i: usize, message: String) {
        let conn = &mut self.conns[i];
        let was = conn.phase;
        if was == Phase::Closed {
            return;
        }
        conn.phase = Phase::Closed;
        let _ = self.poll.registry().deregister(&mut conn.stream);
        let _ = conn.stream.shutdown(std::net::Shutdown::Both);
        let role = conn.role;
        if was == Phase::Ready {
            self.stats.disconnects += 1;
            self.shared.note_error(message);
        } else {
            self.handshakes_in_flight -= 1;
            self.fail_role(role, message);
        }
    }

    fn on_writable(&mut self, i: usize) {
        let conn = &mut self.conns[i];
        if conn.phase == Phase::Connecting {
            let result = match conn.stream.take_error() {
                Ok(Some(e)) | Err(e) => Err(e),
                Ok(None) => conn.stream.peer_addr().map(|_| ()),
            };
            match result {
                Ok(()) => self.start_handshake(i),
                Err(e) if e.kind() == io::ErrorKind::NotConnected => {} // still connecting
                Err(e) => {
                    let target = if conn.http {
                        self.cfg.http.as_ref().expect("http").addr
                    } else {
                        self.cfg.ws.addr
                    };
                    self.close(i, connect_error(target, None, &e));
                }
            }
            return;
        }
        if let Err(e) = flush(conn) {
            self.close(i, format!("write failed: {e}"));
        }
    }

    fn start_handshake(&mut self, i: usize) {
        let key = {
            let a = self.rng.next().to_le_bytes();
            let b = self.rng.next().to_le_bytes();
            let mut k = [0u8; 16];
            k[..8].copy_from_slice(&a);
            k[8..].copy_from_slice(&b);
            k
        };
        let cfg = Arc::clone(&self.cfg);
        let conn = &mut self.conns[i];
        conn.phase = Phase::Handshaking;
        if conn.http {
            // Nothing to negotiate: an HTTP keep-alive connection is ready once connected.
            self.ready(i);
            return;
        }
        let path = match conn.role {
            Role::Subscriber(s) => with_query(
                &cfg.ws.path_and_query,
                "topic",
                &cfg.plan.topic_name(cfg.plan.subscriber_topic(s)),
            ),
            Role::Publisher(_) => cfg.ws.path_and_query.clone(),
        };
        let (request, accept) = ws::upgrade_request(&cfg.ws.host_header, &path, key);
        conn.expected_accept = accept;
        conn.out.extend_from_slice(&request);
        if let Err(e) = flush(conn) {
            self.close(i, format!("write failed during handshake: {e}"));
        }
    }

    /// The handshake (and `load-all` subscription) is done.
    fn ready(&mut self, i: usize) {
        let now = self.shared.now_ns();
        let cfg = Arc::clone(&self.cfg);
        let conn = &mut self.conns[i];
        conn.phase = Phase::Ready;
        self.handshakes_in_flight -= 1;
        let took = now - conn.opened_ns;
        self.stats.handshakes += 1;
        self.stats.handshake_ns_sum += took;
        self.stats.handshake_ns_max = self.stats.handshake_ns_max.max(took);
        if let Role::Subscriber(s) = conn.role {
            for k in cfg.plan.subscriber_topics(s) {
                let base = self
                    .stats
                    .tracker
                    .add_streams(cfg.plan.publishers_of(k) as usize);
                conn.streams.push((k, base));
                self.stats.subscriber_streams.push((base, k));
                self.shared.topic_subscribers[k as usize].fetch_add(1, Relaxed);
            }
        }
        self.shared.connections_up.fetch_add(1, Relaxed);
        self.shared.last_ready_ns.fetch_max(now, Relaxed);
    }

    fn sweep_handshake_timeouts(&mut self, now: u64) {
        for i in 0..self.conns.len() {
            let c = &self.conns[i];
            if matches!(
                c.phase,
                Phase::Connecting | Phase::Handshaking | Phase::Subscribing
            ) && now - c.opened_ns > HANDSHAKE_TIMEOUT.as_nanos() as u64
            {
                let what = if c.phase == Phase::Connecting {
                    "TCP connect"
                } else {
                    "WebSocket handshake"
                };
                self.close(i, format!("{what} timed out after {HANDSHAKE_TIMEOUT:?} (broker overloaded or listen backlog full?)"));
            }
        }
    }

    fn begin_publishing(&mut self, start_ns: u64) {
        let measure_ns = start_ns + self.cfg.warmup.as_nanos() as u64;
        let end_ns = measure_ns + self.cfg.duration.as_nanos() as u64;
        self.window = Some(Window {
            start_ns,
            measure_ns,
            end_ns,
        });
        for conn in &mut self.conns {
            if let Some(p) = conn.publisher.as_mut() {
                if let PublishMode::Rate(rate) = self.cfg.mode {
                    p.schedule = Some(Schedule::new(
                        start_ns,
                        end_ns,
                        rate,
                        p.id,
                        self.cfg.plan.publishers,
                    ));
                }
            }
        }
    }

    /// Sends what publisher `i` owes at `now`. Returns when it is next due, and whether it
    /// stopped at the per-turn cap with more to send.
    fn publish_due(&mut self, i: usize, now: u64, w: Window) -> (Option<u64>, bool) {
        let conn = &mut self.conns[i];
        if conn.phase != Phase::Ready || conn.publisher.is_none() || now < w.start_ns {
            return (
                conn.publisher
                    .as_ref()
                    .map(|_| w.start_ns)
                    .filter(|&s| s > now),
                false,
            );
        }
        let mut sent = 0;
        let mut capped = false;
        loop {
            let p = conn.publisher.as_mut().expect("publisher");
            if conn.out.len() - conn.out_pos > MAX_UNWRITTEN_BYTES {
                break;
            }
            if conn.http && p.in_flight > 0 {
                break;
            }
            if sent == MAX_PUBLISHES_PER_TURN {
                capped = true;
                break;
            }
            let intended_ns = match (&mut p.schedule, self.cfg.mode) {
                (Some(s), _) => match s.take_due(now) {
                    Some((_, t)) => t,
                    None => break,
                },
                (None, PublishMode::Max { window }) => {
                    if now >= w.end_ns || p.in_flight >= window {
                        break;
                    }
                    now
                }
                (None, PublishMode::Rate(_)) => break,
            };
            let slot = p.rotation;
            p.rotation = (p.rotation + 1) % p.topics.len();
            let stamp = Stamp {
                publisher: p.id,
                topic: p.topics[slot],
                seq: p.seq[slot],
                intended_ns,
            };
            p.seq[slot] += 1;
            let id = match self.cfg.mode {
                PublishMode::Max { .. } if !conn.http => {
                    p.next_id += 1;
                    p.in_flight += 1;
                    Some(p.next_id - 1)
                }
                _ => None,
            };
            self.scratch.clear();
            self.command.clear();
            let topic = &p.topic_names[slot];
            if conn.http {
                p.in_flight += 1;
                let target = self.cfg.http.as_ref().expect("http");
                if self.cfg.binary {
                    payload::encode_binary_payload(&stamp, self.cfg.size, &mut self.scratch);
                } else {
                    payload::encode_json_data(&stamp, self.cfg.size, &mut self.scratch);
                }
                let content_type = if self.cfg.binary {
                    "application/octet-stream"
                } else {
                    "application/json"
                };
                let path = http_publish_path(&target.path_and_query, topic);
                let _ = write!(
                    conn.out,
                    "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n",
                    target.host_header,
                    self.scratch.len()
                );
                conn.out.extend_from_slice(&self.scratch);
            } else if self.cfg.binary {
                payload::encode_binary_payload(&stamp, self.cfg.size, &mut self.scratch);
                payload::encode_binary_publish(topic, &self.scratch, &mut self.command);
                let mask = (self.rng.next() as u32).to_le_bytes();
                ws::client_frame(OpCode::Binary, &self.command, mask, &mut conn.out);
            } else {
                payload::encode_json_data(&stamp, self.cfg.size, &mut self.scratch);
                payload::encode_text_publish(topic, &self.scratch, id, &mut self.command);
                let mask = (self.rng.next() as u32).to_le_bytes();
                ws::client_frame(OpCode::Text, &self.command, mask, &mut conn.out);
            }
            sent += 1;
            self.stats.published_total += 1;
            self.topic_published[stamp.topic as usize] += 1;
            if intended_ns >= w.measure_ns && intended_ns < w.end_ns {
                self.stats.published_in_window += 1;
            }
        }
        if sent > 0 {
            if let Err(e) = flush(conn) {
                self.close(i, format!("write failed: {e}"));
                return (None, false);
            }
        }
        let conn = &self.conns[i];
        let p = conn.publisher.as_ref().expect("publisher");
        let next = p.schedule.as_ref().and_then(|s| s.peek()).map(|(_, t)| t);
        (next, capped)
    }

    fn on_readable(&mut self, i: usize, rbuf: &mut [u8]) {
        let mut reads = 0;
        self.conns[i].more_to_read = false;
        loop {
            if reads == MAX_READS_PER_TURN {
                self.conns[i].more_to_read = true;
                return;
            }
            reads += 1;
            let n = match self.conns[i].stream.read(rbuf) {
                Ok(0) => {
                    let what = match self.conns[i].phase {
                        Phase::Handshaking => "broker closed the connection during the handshake",
                        _ => "broker closed the connection",
                    };
                    self.close(i, what.to_string());
                    return;
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if self.conns[i].phase == Phase::Connecting => {
                    let target = self.cfg.ws.addr;
                    self.close(i, connect_error(target, None, &e));
                    return;
                }
                Err(e) => {
                    self.close(i, format!("read failed: {e}"));
                    return;
                }
            };
            let now = self.shared.now_ns();
            if let Err(message) = self.on_bytes(i, &mut rbuf[..n], now) {
                self.stats.protocol_errors += 1;
                self.close(i, message);
                return;
            }
            if self.conns[i].phase == Phase::Closed {
                return;
            }
        }
    }

    fn on_bytes(&mut self, i: usize, bytes: &mut [u8], now: u64) -> Result<(), String> {
        let conn = &mut self.conns[i];
        if conn.http {
            return self.on_http_bytes(i, bytes);
        }
        let mut frames_from = 0;
        if conn.phase == Phase::Handshaking {
            conn.head.extend_from_slice(bytes);
            let Some(head_len) = ws::check_response(&conn.head, &conn.expected_accept)
                .map_err(|e| format!("WebSocket handshake refused by {}: {e}", self.cfg.ws.addr))?
            else {
                return Ok(());
            };
            let extra = conn.head.len() - head_len;
            conn.head.clear();
            frames_from = bytes.len() - extra;
            if self.cfg.plan.all_topic && matches!(conn.role, Role::Subscriber(_)) {
                conn.phase = Phase::Subscribing;
                self.command.clear();
                let _ = write!(
                    self.command,
                    "{{\"op\":\"subscribe\",\"topic\":\"{}\",\"id\":{ALL_TOPIC_SUBSCRIBE_ID}}}",
                    self.cfg.plan.topic_name(self.cfg.plan.all_index())
                );
                let mask = (self.rng.next() as u32).to_le_bytes();
                ws::client_frame(OpCode::Text, &self.command, mask, &mut conn.out);
                flush(conn).map_err(|e| format!("write failed: {e}"))?;
            } else {
                self.ready(i);
            }
        }
        let conn = &mut self.conns[i];
        let Conn {
            reader,
            out,
            role,
            phase,
            streams,
            publisher,
            ..
        } = conn;
        let mut closed: Option<String> = None;
        let mut became_ready = false;
        let stats = &mut self.stats;
        let histogram = &mut self.histogram;
        let plan = &self.cfg.plan;
        let window = self.window;
        let rng = &mut self.rng;
        let shared = &self.shared;
        reader.feed(&mut bytes[frames_from..], |event| {
            let incoming = match event {
                WsEvent::Text(m) => payload::parse_text(m),
                WsEvent::Binary(m) => payload::parse_binary(m),
                WsEvent::Ping(p) => {
                    let mask = (rng.next() as u32).to_le_bytes();
                    ws::client_frame(OpCode::Pong, p, mask, out);
                    return;
                }
                WsEvent::Close { code, reason } => {
                    closed = Some(format!(
                        "broker sent Close (code {code:?}, reason {reason:?})"
                    ));
                    return;
                }
            };
            match incoming {
                Incoming::Message { topic, stamp } => {
                    stats.delivered_total += 1;
                    let stream = match (
                        plan.topic_index(topic),
                        plan.publisher_slot(stamp.topic, stamp.publisher),
                    ) {
                        (Some(k), Some(slot)) if k == stamp.topic => streams
                            .iter()
                            .find(|(t, _)| *t == k)
                            .map(|(_, base)| base + slot),
                        _ => None,
                    };
                    let Some(stream) = stream else {
                        stats.misrouted += 1;
                        return;
                    };
                    stats.tracker.observe(stream, stamp.seq);
                    if let Some(w) = window {
                        if stamp.intended_ns >= w.measure_ns && stamp.intended_ns < w.end_ns {
                            stats.delivered_in_window += 1;
                            histogram.saturating_record(now.saturating_sub(stamp.intended_ns));
                        }
                    }
                }
                Incoming::Foreign => stats.foreign += 1,
                Incoming::Ack { id } => match (*role, publisher.as_mut()) {
                    (Role::Subscriber(_), _)
                        if *phase == Phase::Subscribing && id == Some(ALL_TOPIC_SUBSCRIBE_ID) =>
                    {
                        became_ready = true;
                    }
                    (Role::Publisher(_), Some(p)) => p.in_flight = p.in_flight.saturating_sub(1),
                    _ => {}
                },
                Incoming::Dropped { count } => stats.broker_dropped += count,
                Incoming::Error(text) => {
                    stats.protocol_errors += 1;
                    shared.note_error(format!("broker error: {}", truncate(&text, 300)));
                }
                Incoming::Other => {}
            }
        })?;
        if !out.is_empty() {
            flush(conn).map_err(|e| format!("write failed: {e}"))?;
        }
        if became_ready {
            self.ready(i);
        }
        if let Some(message) = closed {
            self.close(i, message);
        }
        Ok(())
    }

    /// Responses to `POST /publish/<topic>`, one request in flight per connection.
    fn on_http_bytes(&mut self, i: usize, bytes: &[u8]) -> Result<(), String> {
        let conn = &mut self.conns[i];
        conn.head.extend_from_slice(bytes);
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut response = httparse::Response::new(&mut headers);
            let head_len = match response.parse(&conn.head) {
                Ok(httparse::Status::Complete(n)) => n,
                Ok(httparse::Status::Partial) => return Ok(()),
                Err(e) => return Err(format!("malformed HTTP response to publish: {e}")),
            };
            let length = response
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                .and_then(|h| {
                    std::str::from_utf8(h.value)
                        .ok()?
                        .trim()
                        .parse::<usize>()
                        .ok()
                })
                .ok_or("HTTP publish response without Content-Length")?;
            if conn.head.len() < head_len + length {
                return Ok(());
            }
            let status = response.code.unwrap_or(0);
            if status != 200 {
                self.stats.http_errors += 1;
                let body =
                    String::from_utf8_lossy(&conn.head[head_len..head_len + length]).into_owned();
                self.shared.note_error(format!(
                    "HTTP publish answered {status}: {}",
                    truncate(&body, 200)
                ));
            }
            conn.head.drain(..head_len + length);
            if let Some(p) = conn.publisher.as_mut() {
                p.in_flight = p.in_flight.saturating_sub(1);
            }
        }
    }

    fn report(&mut self, now: u64, last_snapshot_ns: &mut u64) {
        let s = &self.stats;
        self.shared
            .published
            .fetch_add(s.published_total - self.reported_published, Relaxed);
        self.reported_published = s.published_total;
        self.shared
            .delivered
            .fetch_add(s.delivered_total - self.reported_delivered, Relaxed);
        self.reported_delivered = s.delivered_total;
        for (k, (&now_count, reported)) in self
            .topic_published
            .iter()
            .zip(self.topic_published_reported.iter_mut())
            .enumerate()
        {
            if now_count != *reported {
                self.shared.topic_published[k].fetch_add(now_count - *reported, Relaxed);
                *reported = now_count;
            }
        }
        if now - *last_snapshot_ns >= 500_000_000 {
            *last_snapshot_ns = now;
            let mut h = self.shared.histograms[self.index]
                .lock()
                .expect("no panics while holding");
            let _ = h.set_to(&self.histogram);
        }
    }

    fn finish(mut self) -> ThreadResult {
        let now = self.shared.now_ns();
        let mut published = Vec::new();
        for conn in &self.conns {
            if let Some(p) = &conn.publisher {
                for (slot, &k) in p.topics.iter().enumerate() {
                    published.push((p.id, k, p.seq[slot]));
                }
                if let Some(s) = &p.schedule {
                    self.unsent += s.backlog(now);
                }
            }
        }
        let cpu_in_window = self.cpu_in_window.unwrap_or_else(|| {
            sys::thread_cpu().saturating_sub(self.cpu_at_measure.unwrap_or_default())
        });
        let mut last = 0;
        self.report(now, &mut last);
        ThreadResult {
            histogram: self.histogram,
            tracker: self.stats.tracker,
            subscriber_streams: self.stats.subscriber_streams,
            published,
            published_in_window: self.stats.published_in_window,
            delivered_in_window: self.stats.delivered_in_window,
            delivered_total: self.stats.delivered_total,
            unsent: self.unsent,
            broker_dropped: self.stats.broker_dropped,
            foreign: self.stats.foreign,
            misrouted: self.stats.misrouted,
            protocol_errors: self.stats.protocol_errors,
            disconnects: self.stats.disconnects,
            http_errors: self.stats.http_errors,
            cpu_in_window,
            handshake_ns_sum: self.stats.handshake_ns_sum,
            handshake_ns_max: self.stats.handshake_ns_max,
            handshakes: self.stats.handshakes,
        }
    }
}

/// Writes as much of the connection's queue as the socket takes.
fn flush(conn: &mut Conn) -> io::Result<()> {
    while conn.out_pos < conn.out.len() {
        match conn.stream.write(&conn.out[conn.out_pos..]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => conn.out_pos += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::NotConnected => break,
            Err(e) => return Err(e),
        }
    }
    if conn.out_pos == conn.out.len() {
        conn.out.clear();
        conn.out_pos = 0;
    } else if conn.out_pos > 64 * 1024 && conn.out_pos > conn.out.len() / 2 {
        conn.out.drain(..conn.out_pos);
        conn.out_pos = 0;
    }
    Ok(())
}

fn connect_error(target: SocketAddr, source: Option<std::net::IpAddr>, e: &io::Error) -> String {
    let from = source.map(|s| format!(" from {s}")).unwrap_or_default();
    match e.kind() {
        io::ErrorKind::ConnectionRefused => {
            format!("connection refused at {target}{from} — is crier running?")
        }
        io::ErrorKind::AddrNotAvailable => format!(
            "cannot connect to {target}{from}: {e} — out of ephemeral ports? (see README: limits)"
        ),
        _ if e.raw_os_error() == Some(libc::EMFILE) || e.raw_os_error() == Some(libc::ENFILE) => {
            format!("out of file descriptors connecting to {target}: {e} — raise `ulimit -n` / LimitNOFILE")
        }
        _ => format!("cannot connect to {target}{from}: {e}"),
    }
}

fn truncate(text: &str, max: usize) -> &str {
    match text.char_indices().nth(max) {
        Some((i, _)) => &text[..i],
        None => text,
    }
}
