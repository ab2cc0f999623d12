//! What the worker threads and the main thread share: the run configuration (read-only), the
//! counters and histogram copies the workers publish (atomics and one mutex per thread, never
//! touched per message), and what a worker hands back when it stops.

use std::fmt::Display;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::config::{Plan, Target};
use crate::tracker::Tracker;

/// How publishers send.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum PublishMode {
    /// `--rate`: open loop.
    Rate(f64),
    /// `--max`: at most `window` awaiting their ack (over HTTP: one response at a time).
    Max { window: u32 },
}

/// Everything the workers read and never change.
#[derive(Debug)]
pub(crate) struct RunConfig {
    pub plan: Plan,
    pub ws: Target,
    pub http: Option<Target>,
    pub binary: bool,
    /// Offer permessage-deflate and inflate compressed deliveries (`--compression`).
    pub compression: bool,
    pub size: usize,
    pub mode: PublishMode,
    pub warmup: Duration,
    pub duration: Duration,
    pub connect_rate: f64,
    pub threads: usize,
    pub total_connections: u64,
    /// Subscribers resume with `since` and are dropped by this schedule (None: never).
    pub reconnect: Option<Reconnect>,
}

/// When subscribers drop and come back (the reconnect scenarios).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reconnect {
    /// Each subscriber drops every `period` (subscriber `s` first at `period * s / S`), and
    /// reconnects at once.
    Every { period: Duration },
    /// Every subscriber drops `at` after publishing starts and reconnects `after` later.
    AllAt { at: Duration, after: Duration },
}

/// Written by workers, read by the main thread (and the start/stop flags the other way).
#[derive(Debug)]
pub(crate) struct Shared {
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
    pub(crate) fn new(threads: usize, topics: usize) -> Shared {
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

    pub(crate) fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    /// Keeps the first problem of the run for the report (later ones only count).
    pub(crate) fn note_error(&self, problem: impl Display) {
        let mut first = self.first_error.lock().expect("no panics while holding");
        if first.is_none() {
            *first = Some(problem.to_string());
        }
    }

    /// The first problem noted, if any.
    pub(crate) fn first_error(&self) -> Option<String> {
        self.first_error
            .lock()
            .expect("no panics while holding")
            .clone()
    }
}

/// Latency histogram in nanoseconds, 1 µs to 1 hour, 3 significant digits.
pub(crate) fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1_000, 3_600_000_000_000, 3).expect("valid bounds")
}

/// What a worker hands back when it stops.
#[derive(Debug)]
pub(crate) struct ThreadResult {
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
    /// The reconnect scenarios' accounting.
    pub resume: crate::resume::ResumeStats,
}

/// A connection a thread is responsible for, before it is opened.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Role {
    Subscriber(u32),
    Publisher(u32),
}
