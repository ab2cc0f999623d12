//! Per-shard counters and a loop-turn histogram. The hot path increments plain `u64`s owned by
//! its shard; once per loop turn the shard copies them into atomics that only it writes, and
//! `/metrics` reads those from any thread and merges them. No lock, and no atomic that two
//! threads write, is on the delivery path.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::proto::http_refusal::RefusalReason;

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
    MessagesUnheard => ("crier_messages_unheard_total", "counter", "Publishes to a topic that had no subscribers."),
    Deliveries => ("crier_deliveries_total", "counter", "Frames queued to subscribers."),
    BytesIn => ("crier_bytes_in_total", "counter", "Bytes read from sockets."),
    BytesOut => ("crier_bytes_out_total", "counter", "Bytes written to sockets."),
    Writes => ("crier_writes_total", "counter", "Vectored write calls."),
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
}

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
    turn_buckets: [u64; TURN_BUCKETS_US.len() + 1],
    turn_sum_us: u64,
}

impl Default for ShardCounters {
    fn default() -> Self {
        ShardCounters {
            values: [0; METRIC_COUNT],
            refusals: [0; RefusalReason::COUNT],
            turn_buckets: [0; TURN_BUCKETS_US.len() + 1],
            turn_sum_us: 0,
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

    /// Records how long one busy loop turn took.
    pub fn record_turn(&mut self, micros: u64) {
        let bucket = TURN_BUCKETS_US
            .iter()
            .position(|&upper| micros <= upper)
            .unwrap_or(TURN_BUCKETS_US.len());
        self.turn_buckets[bucket] += 1;
        self.turn_sum_us += micros;
    }
}

/// A shard's counters as other threads see them: written by that shard only.
#[derive(Debug)]
pub struct SharedCounters {
    values: [AtomicU64; METRIC_COUNT],
    refusals: [AtomicU64; RefusalReason::COUNT],
    turn_buckets: [AtomicU64; TURN_BUCKETS_US.len() + 1],
    turn_sum_us: AtomicU64,
}

impl Default for SharedCounters {
    fn default() -> Self {
        SharedCounters {
            values: std::array::from_fn(|_| AtomicU64::new(0)),
            refusals: std::array::from_fn(|_| AtomicU64::new(0)),
            turn_buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            turn_sum_us: AtomicU64::new(0),
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
        for (slot, value) in self.turn_buckets.iter().zip(counters.turn_buckets.iter()) {
            slot.store(*value, Ordering::Relaxed);
        }
        self.turn_sum_us
            .store(counters.turn_sum_us, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> ShardCounters {
        ShardCounters {
            values: std::array::from_fn(|i| self.values[i].load(Ordering::Relaxed)),
            refusals: std::array::from_fn(|i| self.refusals[i].load(Ordering::Relaxed)),
            turn_buckets: std::array::from_fn(|i| self.turn_buckets[i].load(Ordering::Relaxed)),
            turn_sum_us: self.turn_sum_us.load(Ordering::Relaxed),
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
    out
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
        assert!(text.contains("crier_loop_turn_seconds_bucket{le=\"0.00001\"} 1\n"));
        assert!(text.contains("crier_loop_turn_seconds_bucket{le=\"+Inf\"} 2\n"));
        assert!(text.contains("crier_loop_turn_seconds_count 2\n"));
    }
}
