//! One run's numbers: merges what the workers handed back with what the main thread measured,
//! and counts losses against what was published on every stream. Pure data; no rendering.

use std::time::Duration;

use hdrhistogram::Histogram;

use crate::resume::ResumeStats;

use crate::config::Plan;
use crate::procstat::ProcSample;
use crate::worker::{new_histogram, ThreadResult};

use super::{Context, CLIENT_SATURATED_FRACTION};

/// Broker samples: before connecting, after connecting, and at the edges of the window.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ServerSamples {
    pub before: ProcSample,
    pub connected: ProcSample,
    pub start: ProcSample,
    pub end: ProcSample,
}

/// What the main thread measured in one run (the workers know the rest).
#[derive(Debug)]
pub(crate) struct RunInputs {
    pub total_connections: u64,
    pub connections_up: u64,
    pub connections_failed: u64,
    pub connect_secs: f64,
    pub measured: Duration,
    pub client_cpu: Duration,
    pub server: Option<ServerSamples>,
    pub timed_out: bool,
    pub first_error: Option<String>,
}

/// The connect phase.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Connections {
    pub target: u64,
    pub up: u64,
    pub failed: u64,
    pub connect_secs: f64,
    pub handshakes: u64,
    pub handshake_ns_sum: u64,
    pub handshake_ns_max: u64,
}

impl Connections {
    pub(crate) fn handshakes_per_second(&self) -> f64 {
        if self.connect_secs > 0.0 {
            self.handshakes as f64 / self.connect_secs
        } else {
            0.0
        }
    }

    pub(crate) fn handshake_mean_ms(&self) -> f64 {
        self.handshake_ns_sum
            .checked_div(self.handshakes)
            .map_or(0.0, |ns| ns as f64 / 1e6)
    }
}

/// Messages counted over all threads.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Counts {
    pub published_in_window: u64,
    pub delivered_in_window: u64,
    pub published_total: u64,
    pub delivered_total: u64,
    /// Deliveries owed: each subscriber stream times what was published on it.
    pub expected: u64,
    pub lost: u64,
    pub duplicates: u64,
    pub out_of_order: u64,
    pub unsent: u64,
    pub broker_dropped: u64,
    pub foreign: u64,
    pub misrouted: u64,
    pub protocol_errors: u64,
    pub disconnects: u64,
    pub http_errors: u64,
}

impl Counts {
    /// Protocol errors, disconnects, misrouted messages or HTTP errors: the broker misbehaved.
    pub(crate) fn is_failure(&self) -> bool {
        self.protocol_errors > 0
            || self.disconnects > 0
            || self.misrouted > 0
            || self.http_errors > 0
    }
}

/// The client's own CPU use in the window.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct ClientCpu {
    pub cpu: Duration,
    /// The busiest worker thread's CPU as a share of one core.
    pub busiest_thread_fraction: f64,
    /// Above `CLIENT_SATURATED_FRACTION` of its usable cores or of one core for a thread.
    pub saturated: bool,
}

/// The broker's CPU in the window and its RSS around connecting.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct ServerUse {
    pub cpu: Duration,
    /// The CPU of the ksoftirqd threads of the broker's CPUs in the window: network softirq
    /// work (mostly its sends' loopback receive side) deferred out of the broker's own time.
    /// `None` when they were not found or a sample could not read them.
    pub softirq_cpu: Option<Duration>,
    pub rss_before: u64,
    pub rss_connected: u64,
    pub rss_end: u64,
    pub rss_per_connection: f64,
    pub rss_delta_per_connection: f64,
}

impl ServerUse {
    /// The broker's CPU plus its ksoftirqd threads', if those were sampled.
    pub(crate) fn cpu_with_softirq(&self) -> Option<Duration> {
        self.softirq_cpu.map(|s| self.cpu + s)
    }

    fn new(s: &ServerSamples, connections_up: u64) -> ServerUse {
        let conns = connections_up.max(1) as f64;
        ServerUse {
            cpu: s.end.cpu.saturating_sub(s.start.cpu),
            softirq_cpu: s
                .end
                .softirq_cpu
                .zip(s.start.softirq_cpu)
                .map(|(end, start)| end.saturating_sub(start)),
            rss_before: s.before.rss_bytes,
            rss_connected: s.connected.rss_bytes,
            rss_end: s.end.rss_bytes,
            rss_per_connection: s.connected.rss_bytes as f64 / conns,
            rss_delta_per_connection: s.connected.rss_bytes.saturating_sub(s.before.rss_bytes)
                as f64
                / conns,
        }
    }
}

/// Everything the report renders about one run (or, merged, about several).
#[derive(Debug)]
pub(crate) struct Totals {
    /// Latency from the intended send time, of messages intended in the window.
    pub histogram: Histogram<u64>,
    pub measured: Duration,
    pub connections: Connections,
    pub counts: Counts,
    pub client: ClientCpu,
    pub server: Option<ServerUse>,
    pub timed_out: bool,
    pub first_error: Option<String>,
    /// The reconnect scenarios' accounting (None when they are off).
    pub resume: Option<ResumeStats>,
}

impl Totals {
    pub(crate) fn from_run(
        ctx: &Context<'_>,
        run: RunInputs,
        results: Vec<ThreadResult>,
    ) -> Totals {
        let mut histogram = new_histogram();
        for r in &results {
            let _ = histogram.add(&r.histogram);
        }
        let secs = run.measured.as_secs_f64().max(1e-9);
        let busiest_thread_fraction = results
            .iter()
            .map(|r| r.cpu_in_window.as_secs_f64() / secs)
            .fold(0.0, f64::max);
        let client_fraction = run.client_cpu.as_secs_f64() / secs / ctx.usable_cores();
        Totals {
            histogram,
            measured: run.measured,
            connections: connections(&run, &results),
            counts: counts(ctx.plan, &results),
            client: ClientCpu {
                cpu: run.client_cpu,
                busiest_thread_fraction,
                saturated: client_fraction > CLIENT_SATURATED_FRACTION
                    || busiest_thread_fraction > CLIENT_SATURATED_FRACTION,
            },
            server: run.server.map(|s| ServerUse::new(&s, run.connections_up)),
            timed_out: run.timed_out,
            first_error: run.first_error,
            resume: ctx.args.reconnect_scenario().then(|| {
                let mut merged = ResumeStats::default();
                for r in &results {
                    merged.merge(&r.resume);
                }
                merged
            }),
        }
    }

    /// Measured seconds, never zero (it divides).
    pub(crate) fn secs(&self) -> f64 {
        self.measured.as_secs_f64().max(1e-9)
    }

    /// The latency at `quantile` in ms, 0 with no samples.
    pub(crate) fn latency_ms(&self, quantile: f64) -> f64 {
        if self.histogram.is_empty() {
            0.0
        } else {
            self.histogram.value_at_quantile(quantile) as f64 / 1e6
        }
    }

    /// The largest latency in ms, 0 with no samples.
    pub(crate) fn max_ms(&self) -> f64 {
        if self.histogram.is_empty() {
            0.0
        } else {
            self.histogram.max() as f64 / 1e6
        }
    }
}

fn connections(run: &RunInputs, results: &[ThreadResult]) -> Connections {
    Connections {
        target: run.total_connections,
        up: run.connections_up,
        failed: run.connections_failed,
        connect_secs: run.connect_secs,
        handshakes: results.iter().map(|r| r.handshakes).sum(),
        handshake_ns_sum: results.iter().map(|r| r.handshake_ns_sum).sum(),
        handshake_ns_max: results
            .iter()
            .map(|r| r.handshake_ns_max)
            .max()
            .unwrap_or(0),
    }
}

/// Sums the threads' counters, and counts losses: every subscriber stream against what its
/// publisher published on that topic (whichever thread the publisher ran on).
fn counts(plan: &Plan, results: &[ThreadResult]) -> Counts {
    let sum = |f: fn(&ThreadResult) -> u64| results.iter().map(f).sum::<u64>();
    let published = published_per_stream(plan, results);
    let mut c = Counts {
        published_in_window: sum(|r| r.published_in_window),
        delivered_in_window: sum(|r| r.delivered_in_window),
        published_total: results
            .iter()
            .flat_map(|r| &r.published)
            .map(|&(_, _, count)| count)
            .sum(),
        delivered_total: sum(|r| r.delivered_total),
        unsent: sum(|r| r.unsent),
        broker_dropped: sum(|r| r.broker_dropped),
        foreign: sum(|r| r.foreign),
        misrouted: sum(|r| r.misrouted),
        protocol_errors: sum(|r| r.protocol_errors),
        disconnects: sum(|r| r.disconnects),
        http_errors: sum(|r| r.http_errors),
        ..Counts::default()
    };
    for r in results {
        c.lost += r.tracker.written_off();
        c.duplicates += r.tracker.duplicates;
        c.out_of_order += r.tracker.out_of_order;
        for &(base, k) in &r.subscriber_streams {
            for (slot, &count) in published[k as usize].iter().enumerate() {
                c.lost += r.tracker.lost(base + slot as u32, count);
                c.expected += count;
            }
        }
    }
    c
}

/// What each (topic, publisher slot) stream published, to measure losses against.
fn published_per_stream(plan: &Plan, results: &[ThreadResult]) -> Vec<Vec<u64>> {
    let mut published: Vec<Vec<u64>> = (0..plan.topic_count())
        .map(|k| vec![0; plan.publishers_of(k) as usize])
        .collect();
    for &(p, k, count) in results.iter().flat_map(|r| &r.published) {
        if let Some(slot) = plan.publisher_slot(k, p) {
            published[k as usize][slot as usize] += count;
        }
    }
    published
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tracker::Tracker;

    fn result(published: Vec<(u32, u32, u64)>) -> ThreadResult {
        ThreadResult {
            histogram: new_histogram(),
            tracker: Tracker::default(),
            subscriber_streams: Vec::new(),
            published,
            published_in_window: 0,
            delivered_in_window: 0,
            delivered_total: 0,
            unsent: 0,
            broker_dropped: 0,
            foreign: 0,
            misrouted: 0,
            protocol_errors: 0,
            disconnects: 0,
            http_errors: 0,
            cpu_in_window: Duration::ZERO,
            handshake_ns_sum: 0,
            handshake_ns_max: 0,
            handshakes: 0,
            resume: Default::default(),
        }
    }

    /// Two publishers on one topic (slots 0 and 1), publishing from different threads; a
    /// subscriber on a third thread receives part of each stream, one message twice and one
    /// late: losses are counted per stream against that stream's publisher only.
    #[test]
    fn losses_are_per_stream_across_threads() {
        let plan = Plan {
            topics: 1,
            publishers: 2,
            all_topic: false,
        };
        let mut sub = result(Vec::new());
        let base = sub.tracker.add_streams(2);
        sub.subscriber_streams.push((base, 0));
        for seq in [0, 1, 2, 4, 3, 3] {
            sub.tracker.observe(base, seq); // publisher 0: 0..5 all arrive, 3 late then twice
        }
        sub.tracker.observe(base + 1, 1); // publisher 1: only 1 of 0..3
        let results = vec![result(vec![(0, 0, 5)]), result(vec![(1, 0, 3)]), sub];
        let c = counts(&plan, &results);
        assert_eq!(c.published_total, 8);
        assert_eq!(c.expected, 8);
        assert_eq!(c.lost, 2, "publisher 1's seq 0 and 2");
        assert_eq!((c.duplicates, c.out_of_order), (1, 1));
        assert!(!c.is_failure());
    }

    #[test]
    fn a_publish_on_a_topic_outside_the_plan_counts_as_published_not_expected() {
        let plan = Plan {
            topics: 1,
            publishers: 1,
            all_topic: false,
        };
        let published = published_per_stream(&plan, &[result(vec![(0, 0, 4), (5, 0, 9)])]);
        assert_eq!(published, [[4]]);
        assert_eq!(counts(&plan, &[result(vec![(5, 0, 9)])]).published_total, 9);
    }
}
