//! Per-shard counters and a loop-turn histogram. The hot path increments plain `u64`s owned by
//! its shard; once per loop turn the shard copies them into atomics that only it writes, and
//! `/metrics` reads those from any thread and merges them. No lock, and no atomic that two
//! threads write, is on the delivery path. Fan-out latency and loop-phase histograms live
//! beside the counters (`histogram.rs`); the per-publish bookkeeping is in `fanout.rs`.

pub mod fanout;
pub mod histogram;

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::proto::http_refusal::RefusalReason;

pub use fanout::{FanoutTracker, SharedFanout, Tracked};
pub use histogram::{escape_label, Histogram, SharedHistogram, LATENCY_BUCKETS_US};

/// The timed phases of a loop turn (`crier_loop_phase_seconds{phase}`), each recorded only in
/// turns where it had work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
pub enum LoopPhase {
    /// Accepting and reading ready connections, feeding their input to the broker core.
    Read,
    /// Handling batches from other shards (publishes to sequence, deliveries).
    Inbox,
    /// The coarse timer walk over every connection.
    Sweep,
    /// The vectored writes to dirty connections.
    Flush,
}

impl LoopPhase {
    pub const COUNT: usize = 4;
    pub const ALL: [LoopPhase; LoopPhase::COUNT] = [
        LoopPhase::Read,
        LoopPhase::Inbox,
        LoopPhase::Sweep,
        LoopPhase::Flush,
    ];

    pub fn label(self) -> &'static str {
        match self {
            LoopPhase::Read => "read",
            LoopPhase::Inbox => "inbox",
            LoopPhase::Sweep => "sweep",
            LoopPhase::Flush => "flush",
        }
    }
}

macro_rules! metrics {
    ($( $variant:ident => ($name:literal, $kind:literal, $help:literal), )*) => {
        /// One metric a shard keeps.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        #[repr(usize)]
        pub enum Metric { $( $variant, )* }

        /// (Prometheus name, type, help) of every metric, in `Metric` order.
        pub const METRICS: &[(Metric, &str, &str, &str)] = &[
            $( (Metric::$variant, $name, $kind, $help), )*
        ];
    };
}

metrics! {
    ConnectionsOpen => ("crier_connections_open", "gauge", "Open TCP connections."),
    ConnectionsAccepted => ("crier_connections_accepted_total", "counter", "TCP connections accepted."),
    ConnectionsRefused => ("crier_connections_refused_total", "counter", "Connections refused with 503 at accept time because --max-connections was reached."),
    AcceptErrors => ("crier_accept_errors_total", "counter", "accept() failures, e.g. out of file descriptors."),
    WebSocketsOpen => ("crier_websockets_open", "gauge", "Connections upgraded to WebSocket and still open."),
    HandshakeBadRequest => ("crier_handshake_failures_bad_request_total", "counter", "Requests other than HTTP publishes refused with 400: malformed, bad framing, a body where none is taken, or missing/invalid WebSocket headers."),
    HandshakeNotFound => ("crier_handshake_failures_not_found_total", "counter", "Requests for an unknown path (404)."),
    HandshakeMethod => ("crier_handshake_failures_method_total", "counter", "Requests with a method the path does not allow (405)."),
    HandshakeOrigin => ("crier_handshake_failures_origin_total", "counter", "Upgrade refused by the Origin allowlist (403)."),
    HandshakeVersion => ("crier_handshake_failures_version_total", "counter", "Upgrade refused: WebSocket version other than 13 (426)."),
    HandshakeTooLarge => ("crier_handshake_failures_too_large_total", "counter", "Requests other than HTTP publishes over the head or body limits (431/413)."),
    HandshakeTimeout => ("crier_handshake_failures_timeout_total", "counter", "Connections closed because the request did not complete within --handshake-timeout."),
    ProtocolErrors => ("crier_protocol_errors_total", "counter", "WebSocket connections closed for breaking RFC 6455 or a limit (1002/1007/1009)."),
    HttpIdleClosed => ("crier_http_idle_closed_total", "counter", "Keep-alive HTTP connections closed after --handshake-timeout without a new request."),
    IdleTimeouts => ("crier_idle_timeouts_total", "counter", "WebSockets closed because they did not answer a ping within --ping-interval."),
    MessagesReceived => ("crier_messages_received_total", "counter", "WebSocket data messages received."),
    CommandErrors => ("crier_command_errors_total", "counter", "Commands answered with an error."),
    AuthUnauthorized => ("crier_auth_unauthorized_total", "counter", "Subscribes and publishes refused in-band with `unauthorized` (no valid token, not allowed anonymously)."),
    AuthForbidden => ("crier_auth_forbidden_total", "counter", "Subscribes and publishes refused in-band with `forbidden` (the token does not grant the topic)."),
    AuthTokensRefused => ("crier_auth_tokens_refused_total", "counter", "Tokens refused (at the upgrade, in-band `auth`, or on POST /publish): expired, bad signature, wrong audience..."),
    AuthTokensAccepted => ("crier_auth_tokens_accepted_total", "counter", "Tokens verified and their grants compiled."),
    AuthTokenExpiredClosed => ("crier_auth_token_expired_closed_total", "counter", "Connections closed with 4001 because their token expired without a refresh."),
    PublishRateLimited => ("crier_publish_rate_limited_total", "counter", "Publishes refused with rate_limited (WebSocket) or 429 (POST /publish): over --max-publish-rate on their connection."),
    HandshakeRateLimited => ("crier_handshake_rate_limited_total", "counter", "WebSocket upgrades refused with 429: over --max-handshake-rate-per-ip for their address."),
    HandshakeRateUntracked => ("crier_handshake_rate_untracked_total", "counter", "Upgrades allowed without a rate check because the per-address table was full of addresses mid-burst."),
    MessagesPublished => ("crier_messages_published_total", "counter", "Publishes sequenced by their topic's owner on this shard."),
    MessagesDeflated => ("crier_messages_deflated_total", "counter", "Publishes deflated once, on their topic's owner, for subscribers that negotiated permessage-deflate."),
    MessagesUnheard => ("crier_messages_unheard_total", "counter", "Publishes to a topic with no state (no subscriber anywhere and no kept history): not sequenced, acked with seq 0."),
    Deliveries => ("crier_deliveries_total", "counter", "Frames queued to subscribers."),
    BytesIn => ("crier_bytes_in_total", "counter", "Bytes read from sockets."),
    BytesOut => ("crier_bytes_out_total", "counter", "Bytes written to sockets."),
    Writes => ("crier_writes_total", "counter", "Vectored write calls."),
    WritesBlocked => ("crier_writes_blocked_total", "counter", "Flushes that filled a socket's send buffer; the rest of that queue waits for writability."),
    FanoutTopicSeriesFull => ("crier_fanout_topic_series_full_total", "counter", "Fan-outs of a topic matching --metrics-topic left out of the per-topic histograms because the shard tracks 256 topics already."),
    SlowConsumerDrops => ("crier_slow_consumer_drops_total", "counter", "Messages skipped for a subscriber over --max-backlog-bytes (policy drop)."),
    SlowConsumerDisconnects => ("crier_slow_consumer_disconnects_total", "counter", "Subscribers closed with 1008 for being over --max-backlog-bytes (policy disconnect)."),
    ResumesRecovered => ("crier_resumes_recovered_total", "counter", "Subscribes with since answered recovered:true."),
    ResumesLost => ("crier_resumes_lost_total", "counter", "Subscribes with since answered recovered:false (epoch changed, too old, or over --max-replay-messages)."),
    Replayed => ("crier_replayed_total", "counter", "Kept frames queued to resuming subscribers."),
    TopicsLocal => ("crier_topics_local", "gauge", "Topics with at least one subscriber on this shard."),
    TopicsOwned => ("crier_topics_owned", "gauge", "Topics owned by this shard that have subscribers somewhere."),
    Subscriptions => ("crier_subscriptions", "gauge", "Subscriptions held by connections on this shard."),
    MeshBatchesSent => ("crier_mesh_batches_sent_total", "counter", "Batches of cross-shard messages sent."),
    MeshMessagesSent => ("crier_mesh_messages_sent_total", "counter", "Cross-shard messages sent."),
    MeshInboxFull => ("crier_mesh_inbox_full_total", "counter", "Times a peer shard's inbox was over its byte budget when sending."),
    MeshDropped => ("crier_mesh_dropped_total", "counter", "Publishes and deliveries not sent because a peer's inbox was over --inbox-budget-bytes (publishers hear overloaded, subscribers a dropped notice)."),
    MeshInboxBytes => ("crier_mesh_inbox_bytes", "gauge", "Bytes of cross-shard messages waiting in this shard's inbox."),
    SubscribeLimitReached => ("crier_subscribe_limit_reached_total", "counter", "Subscriptions refused with limit_reached: over --max-subscriptions or --max-topics."),
    LoopTurns => ("crier_loop_turns_total", "counter", "Event-loop turns."),
    HistoryStored => ("crier_history_stored_total", "counter", "Messages kept in history by the topics' owner shards."),
    HistoryTooLarge => ("crier_history_too_large_total", "counter", "Messages too large to keep within a shard's share of --max-history-bytes (their topic's kept history was emptied)."),
    HistoryIncarnations => ("crier_history_incarnations_total", "counter", "Topic incarnations started, each with a new epoch."),
    HistoryMessages => ("crier_history_messages", "gauge", "Messages kept in history now."),
    HistoryBytes => ("crier_history_bytes", "gauge", "Bytes charged against --max-history-bytes now (frames and bookkeeping)."),
}

/// Why kept messages left a topic's history: the `reason` label of
/// `crier_history_evicted_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
pub enum EvictionReason {
    /// The topic kept more than its `history_size`.
    Size,
    /// Past the topic's `history_ttl`.
    Ttl,
    /// Oldest first, to stay within `--max-history-bytes`.
    Budget,
}

impl EvictionReason {
    /// Every reason, in declaration order (the index is `reason as usize`).
    pub const ALL: [EvictionReason; 3] = [
        EvictionReason::Size,
        EvictionReason::Ttl,
        EvictionReason::Budget,
    ];

    /// The metric label value.
    pub fn label(self) -> &'static str {
        match self {
            EvictionReason::Size => "size",
            EvictionReason::Ttl => "ttl",
            EvictionReason::Budget => "budget",
        }
    }
}

const EVICTION_REASONS: usize = EvictionReason::ALL.len();

const METRIC_COUNT: usize = METRICS.len();

/// Upper bounds (microseconds) of the loop-turn time histogram buckets; the last is +Inf.
pub const TURN_BUCKETS_US: [u64; 12] = [
    10, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000,
];

/// The counters one shard owns and increments without synchronisation.
#[derive(Debug, Clone)]
pub struct ShardCounters {
    values: [u64; METRIC_COUNT],
    /// `crier_refusals_total`, indexed by `RefusalReason as usize`.
    refusals: [u64; RefusalReason::COUNT],
    /// `crier_history_evicted_total`, indexed by `EvictionReason as usize`.
    evicted: [u64; EVICTION_REASONS],
    turn_buckets: [u64; TURN_BUCKETS_US.len() + 1],
    turn_sum_us: u64,
    /// Per loop phase, indexed by `LoopPhase as usize`.
    phases: [Histogram; LoopPhase::COUNT],
    /// Sequenced on the owner → the flush pass that reached this shard's last subscriber.
    pub fanout: Histogram,
    /// Snapshots only: per-topic fan-out histograms (`--metrics-topic`).
    topic_fanout: Vec<(Box<str>, Histogram)>,
    /// Snapshots only: the largest fan-outs.
    top_fanout: Vec<(Box<str>, u64)>,
}

impl Default for ShardCounters {
    fn default() -> Self {
        ShardCounters {
            values: [0; METRIC_COUNT],
            refusals: [0; RefusalReason::COUNT],
            evicted: [0; EVICTION_REASONS],
            turn_buckets: [0; TURN_BUCKETS_US.len() + 1],
            turn_sum_us: 0,
            phases: [Histogram::default(); LoopPhase::COUNT],
            fanout: Histogram::default(),
            topic_fanout: Vec::new(),
            top_fanout: Vec::new(),
        }
    }
}

impl ShardCounters {
    #[inline]
    pub fn add(&mut self, metric: Metric, n: u64) {
        self.values[metric as usize] += n;
    }

    #[inline]
    pub fn incr(&mut self, metric: Metric) {
        self.values[metric as usize] += 1;
    }

    #[inline]
    pub fn set(&mut self, metric: Metric, value: u64) {
        self.values[metric as usize] = value;
    }

    #[inline]
    pub fn sub(&mut self, metric: Metric, n: u64) {
        let v = &mut self.values[metric as usize];
        *v = v.saturating_sub(n);
    }

    pub fn get(&self, metric: Metric) -> u64 {
        self.values[metric as usize]
    }

    /// Counts one refusal under its reason.
    #[inline]
    pub fn refuse(&mut self, reason: RefusalReason) {
        self.refusals[reason as usize] += 1;
    }

    /// Refusals counted under `reason`.
    pub fn refusals(&self, reason: RefusalReason) -> u64 {
        self.refusals[reason as usize]
    }

    /// Sets the history evictions counted under `reason` (the history log keeps the count;
    /// the shard copies it here once per turn).
    #[inline]
    pub fn set_evicted(&mut self, reason: EvictionReason, value: u64) {
        self.evicted[reason as usize] = value;
    }

    /// History evictions counted under `reason`.
    pub fn evicted(&self, reason: EvictionReason) -> u64 {
        self.evicted[reason as usize]
    }

    /// Records how long one busy loop turn took.
    pub fn record_turn(&mut self, micros: u64) {
        let bucket = TURN_BUCKETS_US
            .iter()
            .position(|&upper| micros <= upper)
            .unwrap_or(TURN_BUCKETS_US.len());
        self.turn_buckets[bucket] += 1;
        self.turn_sum_us += micros;
    }

    /// Records how long one loop phase took.
    #[inline]
    pub fn record_phase(&mut self, phase: LoopPhase, micros: u64) {
        self.phases[phase as usize].record(micros);
    }

    /// The histogram of one loop phase.
    pub fn phase(&self, phase: LoopPhase) -> &Histogram {
        &self.phases[phase as usize]
    }
}

/// A shard's counters as other threads see them: written by that shard only.
#[derive(Debug)]
pub struct SharedCounters {
    values: [AtomicU64; METRIC_COUNT],
    refusals: [AtomicU64; RefusalReason::COUNT],
    evicted: [AtomicU64; EVICTION_REASONS],
    turn_buckets: [AtomicU64; TURN_BUCKETS_US.len() + 1],
    turn_sum_us: AtomicU64,
    phases: [SharedHistogram; LoopPhase::COUNT],
    fanout_histogram: SharedHistogram,
    /// Per-topic histograms and the largest fan-outs, written by the shard under a lock.
    pub fanout: SharedFanout,
}

impl Default for SharedCounters {
    fn default() -> Self {
        SharedCounters {
            values: std::array::from_fn(|_| AtomicU64::new(0)),
            refusals: std::array::from_fn(|_| AtomicU64::new(0)),
            evicted: std::array::from_fn(|_| AtomicU64::new(0)),
            turn_buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            turn_sum_us: AtomicU64::new(0),
            phases: std::array::from_fn(|_| SharedHistogram::default()),
            fanout_histogram: SharedHistogram::default(),
            fanout: SharedFanout::default(),
        }
    }
}

impl SharedCounters {
    /// Copies the owner's counters in. Only the owning shard calls this, so relaxed stores
    /// suffice: a scrape may see one turn's values mixed with the previous turn's.
    pub fn publish(&self, counters: &ShardCounters) {
        for (slot, value) in self.values.iter().zip(counters.values.iter()) {
            slot.store(*value, Ordering::Relaxed);
        }
        for (slot, value) in self.refusals.iter().zip(counters.refusals.iter()) {
            slot.store(*value, Ordering::Relaxed);
        }
        for (slot, value) in self.evicted.iter().zip(counters.evicted.iter()) {
            slot.store(*value, Ordering::Relaxed);
        }
        for (slot, value) in self.turn_buckets.iter().zip(counters.turn_buckets.iter()) {
            slot.store(*value, Ordering::Relaxed);
        }
        self.turn_sum_us
            .store(counters.turn_sum_us, Ordering::Relaxed);
        for (slot, histogram) in self.phases.iter().zip(counters.phases.iter()) {
            slot.publish(histogram);
        }
        self.fanout_histogram.publish(&counters.fanout);
    }

    pub fn snapshot(&self) -> ShardCounters {
        ShardCounters {
            values: std::array::from_fn(|i| self.values[i].load(Ordering::Relaxed)),
            refusals: std::array::from_fn(|i| self.refusals[i].load(Ordering::Relaxed)),
            evicted: std::array::from_fn(|i| self.evicted[i].load(Ordering::Relaxed)),
            turn_buckets: std::array::from_fn(|i| self.turn_buckets[i].load(Ordering::Relaxed)),
            turn_sum_us: self.turn_sum_us.load(Ordering::Relaxed),
            phases: std::array::from_fn(|i| self.phases[i].snapshot()),
            fanout: self.fanout_histogram.snapshot(),
            topic_fanout: self.fanout.topics(),
            top_fanout: self.fanout.top(),
        }
    }
}

/// Renders every shard's counters in the Prometheus text format (version 0.0.4): one series
/// per shard (label `shard`) and one merged series without the label.
pub fn render_prometheus(shards: &[ShardCounters]) -> String {
    let mut out = String::with_capacity(8 * 1024);
    for (metric, name, kind, help) in METRICS {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        let mut total = 0u64;
        for (shard, counters) in shards.iter().enumerate() {
            let value = counters.get(*metric);
            total += value;
            let _ = writeln!(out, "{name}{{shard=\"{shard}\"}} {value}");
        }
        let _ = writeln!(out, "{name} {total}");
    }
    write_refusals(&mut out, shards);
    write_evictions(&mut out, shards);
    let name = "crier_loop_turn_seconds";
    let _ = writeln!(
        out,
        "# HELP {name} Time spent in busy event-loop turns.\n# TYPE {name} histogram"
    );
    let mut merged_buckets = [0u64; TURN_BUCKETS_US.len() + 1];
    let mut merged_sum = 0u64;
    for (shard, counters) in shards.iter().enumerate() {
        write_histogram(
            &mut out,
            name,
            Some(shard),
            &counters.turn_buckets,
            counters.turn_sum_us,
        );
        for (m, v) in merged_buckets.iter_mut().zip(counters.turn_buckets.iter()) {
            *m += v;
        }
        merged_sum += counters.turn_sum_us;
    }
    write_histogram(&mut out, name, None, &merged_buckets, merged_sum);
    write_latency(&mut out, shards);
    out
}

/// The fan-out and loop-phase histograms, per-topic histograms and the largest fan-outs.
fn write_latency(out: &mut String, shards: &[ShardCounters]) {
    let name = "crier_fanout_seconds";
    let _ = writeln!(
        out,
        "# HELP {name} From a publish's sequencing on its owner shard to the end of the flush pass that wrote it to this shard's last subscriber (docs/operations.md).\n# TYPE {name} histogram"
    );
    let mut merged = Histogram::default();
    for (shard, counters) in shards.iter().enumerate() {
        counters
            .fanout
            .render(out, name, &format!("shard=\"{shard}\""));
        merged.merge(&counters.fanout);
    }
    merged.render(out, name, "");

    let name = "crier_loop_phase_seconds";
    let _ = writeln!(
        out,
        "# HELP {name} Time spent in each phase of busy event-loop turns (read, inbox, sweep, flush).\n# TYPE {name} histogram"
    );
    for phase in LoopPhase::ALL {
        let label = phase.label();
        let mut merged = Histogram::default();
        for (shard, counters) in shards.iter().enumerate() {
            let histogram = counters.phase(phase);
            histogram.render(out, name, &format!("shard=\"{shard}\",phase=\"{label}\""));
            merged.merge(histogram);
        }
        merged.render(out, name, &format!("phase=\"{label}\""));
    }

    // Per-topic series: every shard renders every topic any shard tracks (zeros included),
    // so each merged series has its per-shard parts.
    let mut topics: Vec<&str> = shards
        .iter()
        .flat_map(|c| c.topic_fanout.iter().map(|(t, _)| &**t))
        .collect();
    topics.sort_unstable();
    topics.dedup();
    if !topics.is_empty() {
        let name = "crier_fanout_topic_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} crier_fanout_seconds for each topic matching --metrics-topic.\n# TYPE {name} histogram"
        );
        for topic in &topics {
            let label = escape_label(topic);
            let mut merged = Histogram::default();
            for (shard, counters) in shards.iter().enumerate() {
                let histogram = counters
                    .topic_fanout
                    .iter()
                    .find(|(t, _)| &**t == *topic)
                    .map(|(_, h)| *h)
                    .unwrap_or_default();
                histogram.render(out, name, &format!("shard=\"{shard}\",topic=\"{label}\""));
                merged.merge(&histogram);
            }
            merged.render(out, name, &format!("topic=\"{label}\""));
        }
    }

    let mut topics: Vec<&str> = shards
        .iter()
        .flat_map(|c| c.top_fanout.iter().map(|(t, _)| &**t))
        .collect();
    topics.sort_unstable();
    topics.dedup();
    if !topics.is_empty() {
        let name = "crier_fanout_top_deliveries";
        let _ = writeln!(
            out,
            "# HELP {name} The topics with the largest fan-outs (deliveries of one publish) over the last 10-20 s; each shard lists its 10 largest.\n# TYPE {name} gauge"
        );
        for topic in &topics {
            let label = escape_label(topic);
            let mut total = 0;
            for (shard, counters) in shards.iter().enumerate() {
                let value = counters
                    .top_fanout
                    .iter()
                    .find(|(t, _)| &**t == *topic)
                    .map_or(0, |(_, n)| *n);
                total += value;
                let _ = writeln!(out, "{name}{{shard=\"{shard}\",topic=\"{label}\"}} {value}");
            }
            let _ = writeln!(out, "{name}{{topic=\"{label}\"}} {total}");
        }
    }
}

/// `crier_refusals_total{reason}`: every reason, per shard and merged, zeros included, so a
/// dashboard sees the series before the first refusal.
fn write_refusals(out: &mut String, shards: &[ShardCounters]) {
    let name = "crier_refusals_total";
    let _ = writeln!(
        out,
        "# HELP {name} Requests and connections refused, by reason (docs/operations.md, \"Limits and abuse\").\n# TYPE {name} counter"
    );
    for reason in RefusalReason::ALL {
        let label = reason.label();
        let mut total = 0u64;
        for (shard, counters) in shards.iter().enumerate() {
            let value = counters.refusals(reason);
            total += value;
            let _ = writeln!(
                out,
                "{name}{{shard=\"{shard}\",reason=\"{label}\"}} {value}"
            );
        }
        let _ = writeln!(out, "{name}{{reason=\"{label}\"}} {total}");
    }
}

/// `crier_history_evicted_total{reason}`: every reason, per shard and merged, zeros included.
fn write_evictions(out: &mut String, shards: &[ShardCounters]) {
    let name = "crier_history_evicted_total";
    let _ = writeln!(
        out,
        "# HELP {name} Messages that left history, by reason: size (over the topic's history_size), ttl (past its history_ttl), budget (oldest first, over --max-history-bytes).\n# TYPE {name} counter"
    );
    for reason in EvictionReason::ALL {
        let label = reason.label();
        let mut total = 0u64;
        for (shard, counters) in shards.iter().enumerate() {
            let value = counters.evicted(reason);
            total += value;
            let _ = writeln!(
                out,
                "{name}{{shard=\"{shard}\",reason=\"{label}\"}} {value}"
            );
        }
        let _ = writeln!(out, "{name}{{reason=\"{label}\"}} {total}");
    }
}

fn write_histogram(
    out: &mut String,
    name: &str,
    shard: Option<usize>,
    buckets: &[u64],
    sum_us: u64,
) {
    let shard_label = shard.map(|s| format!("shard=\"{s}\",")).unwrap_or_default();
    let mut cumulative = 0;
    for (i, count) in buckets.iter().enumerate() {
        cumulative += count;
        let le = TURN_BUCKETS_US
            .get(i)
            .map(|us| format!("{}", *us as f64 / 1e6))
            .unwrap_or_else(|| "+Inf".to_string());
        let _ = writeln!(
            out,
            "{name}_bucket{{{shard_label}le=\"{le}\"}} {cumulative}"
        );
    }
    let plain_label = shard
        .map(|s| format!("{{shard=\"{s}\"}}"))
        .unwrap_or_default();
    let _ = writeln!(out, "{name}_sum{plain_label} {}", sum_us as f64 / 1e6);
    let _ = writeln!(out, "{name}_count{plain_label} {cumulative}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_table_is_in_enum_order() {
        for (index, (metric, ..)) in METRICS.iter().enumerate() {
            assert_eq!(*metric as usize, index);
        }
    }

    #[test]
    fn shards_are_labelled_and_merged() {
        let mut a = ShardCounters::default();
        let mut b = ShardCounters::default();
        a.add(Metric::Deliveries, 5);
        b.add(Metric::Deliveries, 7);
        a.refuse(RefusalReason::Framing);
        b.refuse(RefusalReason::Framing);
        b.refuse(RefusalReason::NotFound);
        a.set_evicted(EvictionReason::Ttl, 4);
        b.set_evicted(EvictionReason::Ttl, 1);
        a.record_turn(3);
        b.record_turn(200_000);
        let shared = SharedCounters::default();
        shared.publish(&b);
        let text = render_prometheus(&[a, shared.snapshot()]);
        assert!(text.contains("crier_deliveries_total{shard=\"0\"} 5\n"));
        assert!(text.contains("crier_deliveries_total{shard=\"1\"} 7\n"));
        assert!(text.contains("crier_deliveries_total 12\n"));
        assert!(text.contains("crier_refusals_total{shard=\"1\",reason=\"framing\"} 1\n"));
        assert!(text.contains("crier_refusals_total{reason=\"framing\"} 2\n"));
        assert!(text.contains("crier_refusals_total{reason=\"not_found\"} 1\n"));
        assert!(text.contains("crier_refusals_total{reason=\"max_connections\"} 0\n"));
        assert!(text.contains("crier_history_evicted_total{shard=\"0\",reason=\"ttl\"} 4\n"));
        assert!(text.contains("crier_history_evicted_total{reason=\"ttl\"} 5\n"));
        assert!(text.contains("crier_history_evicted_total{reason=\"budget\"} 0\n"));
        assert!(text.contains("crier_loop_turn_seconds_bucket{le=\"0.00001\"} 1\n"));
        assert!(text.contains("crier_loop_turn_seconds_bucket{le=\"+Inf\"} 2\n"));
        assert!(text.contains("crier_loop_turn_seconds_count 2\n"));
    }
}
