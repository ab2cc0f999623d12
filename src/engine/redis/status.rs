//! What the Redis engine's thread tells everyone else: whether Redis is reachable (read by the
//! shards before they hand over a publish, and by `/readyz`), and its counters, round-trip
//! histogram and queue depth, rendered into `/metrics`. Atomics written by the engine thread
//! only; no lock.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

macro_rules! engine_metrics {
    ($( $variant:ident => ($name:literal, $kind:literal, $help:literal), )*) => {
        /// One number the engine thread keeps.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        #[repr(usize)]
        pub enum EngineMetric { $( $variant, )* }

        const ENGINE_METRICS: &[(EngineMetric, &str, &str, &str)] = &[
            $( (EngineMetric::$variant, $name, $kind, $help), )*
        ];
    };
}

engine_metrics! {
    Up => ("crier_engine_up", "gauge", "1 while the engine's backend (Redis) is connected."),
    Connected => ("crier_engine_connected_total", "counter", "Times the engine connected to Redis (state change to up)."),
    Disconnected => ("crier_engine_disconnected_total", "counter", "Times the engine lost Redis (state change to down)."),
    ConnectFailures => ("crier_engine_connect_failures_total", "counter", "Failed attempts to connect to Redis."),
    Published => ("crier_engine_published_total", "counter", "Publishes Redis sequenced for this node."),
    Unheard => ("crier_engine_unheard_total", "counter", "Publishes to a topic no node listens to and that keeps nothing: seq 0, nothing stored."),
    PublishFailed => ("crier_engine_publish_failed_total", "counter", "Publishes answered engine_unavailable or overloaded by the engine."),
    MessagesIn => ("crier_engine_messages_in_total", "counter", "Messages received from Redis pub/sub."),
    Recovered => ("crier_engine_recovered_total", "counter", "Messages delivered from a stream read (gaps filled, catch-up after a reconnect)."),
    Lost => ("crier_engine_lost_total", "counter", "Messages announced as dropped: gone from the topic's stream."),
    EpochResets => ("crier_engine_epoch_resets_total", "counter", "Topics that came back with a new epoch (Redis lost them): subscribers told recovered:false."),
    Duplicates => ("crier_engine_duplicates_total", "counter", "Messages ignored as already delivered."),
    DeliverDropped => ("crier_engine_deliver_dropped_total", "counter", "Deliveries not handed to a shard because its inbox was full."),
    QueueDepth => ("crier_engine_queue_depth", "gauge", "Publishes handed to the engine thread and not yet answered by Redis."),
    Topics => ("crier_engine_topics", "gauge", "Topics this node is subscribed to in Redis."),
}

const COUNT: usize = ENGINE_METRICS.len();

/// Upper bounds (microseconds) of the round-trip histogram; the last bucket is +Inf.
const RTT_BUCKETS_US: [u64; 10] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 100_000, 1_000_000,
];

/// Shared between the engine thread (writer) and the shards and `/metrics` (readers).
#[derive(Debug)]
pub struct EngineStatus {
    up: AtomicBool,
    /// Milliseconds since `started` when Redis was lost (or never reached).
    down_since_ms: AtomicU64,
    started: Instant,
    unready_after: Duration,
    values: [AtomicU64; COUNT],
    rtt_buckets: [AtomicU64; RTT_BUCKETS_US.len() + 1],
    rtt_sum_us: AtomicU64,
}

impl EngineStatus {
    /// Down until the engine first connects; `/readyz` fails once down for `unready_after`.
    pub fn new(unready_after: Duration) -> EngineStatus {
        EngineStatus {
            up: AtomicBool::new(false),
            down_since_ms: AtomicU64::new(0),
            started: Instant::now(),
            unready_after,
            values: std::array::from_fn(|_| AtomicU64::new(0)),
            rtt_buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            rtt_sum_us: AtomicU64::new(0),
        }
    }

    /// Whether publishes can be handed to Redis now.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    /// Whether `/readyz` may say ready: up, or down for less than `--engine-unready-after`.
    pub fn is_ready(&self) -> bool {
        if self.is_up() {
            return true;
        }
        let down_ms = self.started.elapsed().as_millis() as u64
            - self.down_since_ms.load(Ordering::Relaxed).min(u64::MAX / 2);
        down_ms < self.unready_after.as_millis() as u64
    }

    pub(super) fn set_up(&self, up: bool) {
        if !up {
            let now = self.started.elapsed().as_millis() as u64;
            self.down_since_ms.store(now, Ordering::Relaxed);
        }
        self.up.store(up, Ordering::Release);
        self.set(EngineMetric::Up, u64::from(up));
    }

    pub(super) fn add(&self, metric: EngineMetric, n: u64) {
        self.values[metric as usize].fetch_add(n, Ordering::Relaxed);
    }

    pub(super) fn set(&self, metric: EngineMetric, value: u64) {
        self.values[metric as usize].store(value, Ordering::Relaxed);
    }

    /// A metric's current value (tests and diagnostics).
    pub fn get(&self, metric: EngineMetric) -> u64 {
        self.values[metric as usize].load(Ordering::Relaxed)
    }

    /// Records one Redis round trip.
    pub(super) fn record_rtt(&self, rtt: Duration) {
        let us = rtt.as_micros() as u64;
        let bucket = RTT_BUCKETS_US
            .iter()
            .position(|&bound| us <= bound)
            .unwrap_or(RTT_BUCKETS_US.len());
        self.rtt_buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.rtt_sum_us.fetch_add(us, Ordering::Relaxed);
    }

    /// The engine's part of `/metrics`.
    pub fn render(&self, out: &mut String) {
        for (metric, name, kind, help) in ENGINE_METRICS {
            let value = self.get(*metric);
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        }
        let name = "crier_engine_round_trip_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} Time from handing a batch of commands to Redis to its answer.\n# TYPE {name} histogram"
        );
        let mut cumulative = 0;
        for (i, bucket) in self.rtt_buckets.iter().enumerate() {
            cumulative += bucket.load(Ordering::Relaxed);
            let le = match RTT_BUCKETS_US.get(i) {
                Some(us) => format!("{}", *us as f64 / 1e6),
                None => "+Inf".to_string(),
            };
            let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {cumulative}");
        }
        let sum = self.rtt_sum_us.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {cumulative}");
    }
}
