//! `--repeat N`: several runs' totals merged into one, and the spread of their latencies
//! (each run's p50, p99 and max; their min, median and max across runs), so that a benchmark
//! never hides a bad run behind a good one. Pure data.

use std::fmt::Write;

use serde_json::{json, Value};

use super::totals::{ClientCpu, Connections, Counts, ServerUse, Totals};
use crate::worker::new_histogram;

/// One run's latency and the counts that say whether it is comparable to the others.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct RunSummary {
    pub samples: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub deliveries_per_second: f64,
    pub lost: u64,
    pub timed_out: bool,
}

impl RunSummary {
    pub(super) fn of(t: &Totals) -> RunSummary {
        RunSummary {
            samples: t.histogram.len(),
            p50_ms: t.latency_ms(0.5),
            p99_ms: t.latency_ms(0.99),
            max_ms: t.max_ms(),
            deliveries_per_second: t.counts.delivered_in_window as f64 / t.secs(),
            lost: t.counts.lost,
            timed_out: t.timed_out,
        }
    }
}

/// The smallest, median and largest of some per-run values.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub(super) struct Spread {
    pub min: f64,
    /// The middle value; for an even count, the mean of the two middle values.
    pub median: f64,
    pub max: f64,
}

impl Spread {
    /// All zero for no values.
    pub(super) fn of(values: &[f64]) -> Spread {
        if values.is_empty() {
            return Spread::default();
        }
        let mut v = values.to_vec();
        v.sort_by(f64::total_cmp);
        let mid = v.len() / 2;
        let median = if v.len() % 2 == 1 {
            v[mid]
        } else {
            (v[mid - 1] + v[mid]) / 2.0
        };
        Spread {
            min: v[0],
            median,
            max: v[v.len() - 1],
        }
    }

    fn json(&self) -> Value {
        json!({ "min": self.min, "median": self.median, "max": self.max })
    }
}

/// Every run's summary, in order.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Repeat {
    pub runs: Vec<RunSummary>,
}

impl Repeat {
    pub(super) fn of(runs: &[Totals]) -> Repeat {
        Repeat {
            runs: runs.iter().map(RunSummary::of).collect(),
        }
    }

    /// The spread of `f` over the runs that recorded latencies (a run without samples has
    /// no percentiles to compare).
    pub(super) fn spread(&self, f: fn(&RunSummary) -> f64) -> Spread {
        let values: Vec<f64> = self.runs.iter().filter(|r| r.samples > 0).map(f).collect();
        Spread::of(&values)
    }

    /// The `repeat` and `runs` keys.
    pub(super) fn json(&self) -> (Value, Value) {
        let summary = json!({
            "count": self.runs.len(),
            "p50_ms": self.spread(|r| r.p50_ms).json(),
            "p99_ms": self.spread(|r| r.p99_ms).json(),
            "max_ms": self.spread(|r| r.max_ms).json(),
        });
        let runs = self
            .runs
            .iter()
            .enumerate()
            .map(|(i, r)| {
                json!({
                    "run": i + 1,
                    "latency_ms": { "count": r.samples, "p50": r.p50_ms, "p99": r.p99_ms, "max": r.max_ms },
                    "deliveries_per_second": r.deliveries_per_second,
                    "lost": r.lost,
                    "timed_out": r.timed_out,
                })
            })
            .collect();
        (summary, runs)
    }

    /// One line per run and one for the spread, after the merged latency line.
    pub(super) fn text(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "  runs         {} runs on fresh connections; the lines above merge them all",
            self.runs.len()
        );
        for (i, r) in self.runs.iter().enumerate() {
            let _ = writeln!(
                out,
                "  run {:<8} p50 {:.3}  p99 {:.3}  max {:.3}  ({} samples, {:.1} deliveries/s, lost {}{})",
                i + 1,
                r.p50_ms,
                r.p99_ms,
                r.max_ms,
                r.samples,
                r.deliveries_per_second,
                r.lost,
                if r.timed_out { ", timed out" } else { "" }
            );
        }
        let (p50, p99, max) = (
            self.spread(|r| r.p50_ms),
            self.spread(|r| r.p99_ms),
            self.spread(|r| r.max_ms),
        );
        let _ = writeln!(
            out,
            "  spread ms    p50 {:.3}..{:.3}  p99 {:.3}..{:.3} (median {:.3}, range {:.3})  max {:.3}..{:.3}",
            p50.min,
            p50.max,
            p99.min,
            p99.max,
            p99.median,
            p99.max - p99.min,
            max.min,
            max.max
        );
    }
}

/// Several runs as one: the merged histogram; counts, seconds and CPU summed (so rates are
/// totals over total time); maxima kept; flags set if any run's was; the first run's first
/// error. Broker CPU and its ksoftirqd CPU summed (the latter only if every run has it). Broker
/// RSS: the first run's before-connect, the largest connected and per-connection values, the
/// last run's end. Empty `runs` give empty totals.
pub(super) fn merge(runs: Vec<Totals>) -> Totals {
    let mut histogram = new_histogram();
    for t in &runs {
        let _ = histogram.add(&t.histogram);
    }
    let server = runs
        .iter()
        .map(|t| t.server)
        .collect::<Option<Vec<ServerUse>>>()
        .and_then(|s| merge_server(&s));
    Totals {
        histogram,
        measured: runs.iter().map(|t| t.measured).sum(),
        connections: runs.iter().fold(Connections::default(), |a, t| {
            add_connections(a, &t.connections)
        }),
        counts: runs
            .iter()
            .fold(Counts::default(), |a, t| add_counts(a, &t.counts)),
        client: ClientCpu {
            cpu: runs.iter().map(|t| t.client.cpu).sum(),
            busiest_thread_fraction: runs
                .iter()
                .map(|t| t.client.busiest_thread_fraction)
                .fold(0.0, f64::max),
            saturated: runs.iter().any(|t| t.client.saturated),
        },
        server,
        timed_out: runs.iter().any(|t| t.timed_out),
        resume: runs
            .iter()
            .filter_map(|t| t.resume.as_ref())
            .fold(None, |a, r| {
                let mut a = a.unwrap_or_default();
                a.merge(r);
                Some(a)
            }),
        first_error: runs.into_iter().find_map(|t| t.first_error),
    }
}

fn add_connections(a: Connections, b: &Connections) -> Connections {
    Connections {
        target: a.target + b.target,
        up: a.up + b.up,
        failed: a.failed + b.failed,
        connect_secs: a.connect_secs + b.connect_secs,
        handshakes: a.handshakes + b.handshakes,
        handshake_ns_sum: a.handshake_ns_sum + b.handshake_ns_sum,
        handshake_ns_max: a.handshake_ns_max.max(b.handshake_ns_max),
    }
}

fn add_counts(a: Counts, b: &Counts) -> Counts {
    Counts {
        published_in_window: a.published_in_window + b.published_in_window,
        delivered_in_window: a.delivered_in_window + b.delivered_in_window,
        published_total: a.published_total + b.published_total,
        delivered_total: a.delivered_total + b.delivered_total,
        expected: a.expected + b.expected,
        lost: a.lost + b.lost,
        duplicates: a.duplicates + b.duplicates,
        out_of_order: a.out_of_order + b.out_of_order,
        unsent: a.unsent + b.unsent,
        broker_dropped: a.broker_dropped + b.broker_dropped,
        foreign: a.foreign + b.foreign,
        misrouted: a.misrouted + b.misrouted,
        protocol_errors: a.protocol_errors + b.protocol_errors,
        disconnects: a.disconnects + b.disconnects,
        http_errors: a.http_errors + b.http_errors,
    }
}

fn merge_server(runs: &[ServerUse]) -> Option<ServerUse> {
    let (first, last) = (runs.first()?, runs.last()?);
    let max = |f: fn(&ServerUse) -> f64| runs.iter().map(f).fold(0.0, f64::max);
    Some(ServerUse {
        cpu: runs.iter().map(|s| s.cpu).sum(),
        softirq_cpu: runs.iter().map(|s| s.softirq_cpu).sum(),
        rss_before: first.rss_before,
        rss_connected: runs.iter().map(|s| s.rss_connected).max().unwrap_or(0),
        rss_end: last.rss_end,
        rss_per_connection: max(|s| s.rss_per_connection),
        rss_delta_per_connection: max(|s| s.rss_delta_per_connection),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const MS: u64 = 1_000_000;

    /// A run with `latencies_ms` recorded, `lost` losses and 100 deliveries in 1 s.
    fn run(latencies_ms: &[u64], lost: u64) -> Totals {
        let mut histogram = new_histogram();
        for &l in latencies_ms {
            histogram.record(l * MS).unwrap();
        }
        Totals {
            histogram,
            measured: Duration::from_secs(1),
            connections: Connections {
                target: 11,
                up: 11,
                handshakes: 11,
                handshake_ns_sum: 11 * MS,
                handshake_ns_max: 2 * MS + lost,
                connect_secs: 0.5,
                ..Connections::default()
            },
            counts: Counts {
                delivered_in_window: 100,
                expected: 100 + lost,
                lost,
                ..Counts::default()
            },
            client: ClientCpu {
                cpu: Duration::from_millis(100),
                busiest_thread_fraction: 0.1 + lost as f64 / 10.0,
                saturated: false,
            },
            server: Some(ServerUse {
                cpu: Duration::from_millis(200),
                softirq_cpu: Some(Duration::from_millis(10 + lost)),
                rss_before: 1000 + lost,
                rss_connected: 2000 + lost,
                rss_end: 3000 + lost,
                rss_per_connection: 100.0 + lost as f64,
                rss_delta_per_connection: 50.0 - lost as f64,
            }),
            timed_out: false,
            first_error: (lost > 0).then(|| format!("run with {lost} lost")),
            resume: None,
        }
    }

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(Spread::of(&[]), Spread::default());
        let odd = Spread::of(&[9.0, 1.0, 5.0]);
        assert_eq!((odd.min, odd.median, odd.max), (1.0, 5.0, 9.0));
        let even = Spread::of(&[4.0, 1.0, 3.0, 10.0]);
        assert_eq!((even.min, even.median, even.max), (1.0, 3.5, 10.0));
    }

    /// Three runs, the middle one bad: each run's percentiles are its own, the spread shows
    /// the bad run, and the median p99 is the middle run's of the sorted p99s.
    #[test]
    fn each_run_keeps_its_percentiles_and_the_spread_shows_the_bad_one() {
        let runs = vec![
            run(&[1, 2, 10], 0),
            run(&[1, 50, 90], 1),
            run(&[2, 3, 20], 0),
        ];
        let repeat = Repeat::of(&runs);
        let p99s: Vec<u64> = repeat
            .runs
            .iter()
            .map(|r| r.p99_ms.round() as u64)
            .collect();
        assert_eq!(p99s, [10, 90, 20]);
        let p99 = repeat.spread(|r| r.p99_ms);
        assert_eq!(
            (p99.min.round(), p99.median.round(), p99.max.round()),
            (10.0, 20.0, 90.0)
        );
        let p50 = repeat.spread(|r| r.p50_ms);
        assert_eq!((p50.min.round(), p50.max.round()), (2.0, 50.0));
        let (summary, per_run) = repeat.json();
        assert_eq!(summary["count"], 3);
        assert_eq!(summary["p99_ms"]["median"].as_f64().unwrap().round(), 20.0);
        assert_eq!(per_run[1]["run"], 2);
        assert_eq!(per_run[1]["lost"], 1);
        assert_eq!(per_run[1]["latency_ms"]["count"], 3);
        let mut text = String::new();
        repeat.text(&mut text);
        assert!(text.contains("  run 2        p50 50.004  p99 90.046  max 90.046  (3 samples, 100.0 deliveries/s, lost 1)"), "{text}");
        assert!(
            text.contains("p99 10.002..90.046 (median 20.005, range 80.044)"),
            "{text}"
        );
    }

    #[test]
    fn a_run_without_samples_is_left_out_of_the_spread() {
        let repeat = Repeat::of(&[run(&[5], 0), run(&[], 0)]);
        assert_eq!(repeat.spread(|r| r.p99_ms).min.round(), 5.0);
        assert_eq!(
            Repeat::of(&[run(&[], 0)]).spread(|r| r.max_ms),
            Spread::default()
        );
    }

    /// Merged totals read as one long run: counts and seconds add up, latency comes from all
    /// samples, maxima stay maxima, RSS is the peak, the first error is the first run's.
    #[test]
    fn merged_totals_add_up() {
        let merged = merge(vec![run(&[1, 2], 0), run(&[3, 400], 2), run(&[5], 0)]);
        assert_eq!(merged.histogram.len(), 5);
        assert_eq!(merged.max_ms().round(), 400.0);
        assert_eq!(merged.measured, Duration::from_secs(3));
        assert_eq!(merged.counts.delivered_in_window, 300);
        assert_eq!((merged.counts.lost, merged.counts.expected), (2, 302));
        let c = merged.connections;
        assert_eq!((c.target, c.up, c.handshakes), (33, 33, 33));
        assert_eq!(c.handshake_ns_max, 2 * MS + 2);
        assert_eq!(c.handshake_mean_ms(), 1.0);
        assert_eq!(c.handshakes_per_second(), 22.0);
        assert_eq!(merged.client.cpu, Duration::from_millis(300));
        assert_eq!(merged.client.busiest_thread_fraction, 0.30000000000000004);
        let s = merged.server.unwrap();
        assert_eq!(s.cpu, Duration::from_millis(600));
        assert_eq!(s.softirq_cpu, Some(Duration::from_millis(32)));
        assert_eq!(s.cpu_with_softirq(), Some(Duration::from_millis(632)));
        assert_eq!(
            (s.rss_before, s.rss_connected, s.rss_end),
            (1000, 2002, 3000)
        );
        assert_eq!(
            (s.rss_per_connection, s.rss_delta_per_connection),
            (102.0, 50.0)
        );
        assert_eq!(merged.first_error.as_deref(), Some("run with 2 lost"));
        assert!(!merged.timed_out && !merged.client.saturated);
    }

    /// One run without ksoftirqd figures (a thread unreadable at an edge) leaves the merged
    /// softirq CPU out rather than under-counting it; the broker's own CPU still adds up.
    #[test]
    fn merged_softirq_cpu_needs_every_run() {
        let mut partial = run(&[1], 0);
        if let Some(s) = partial.server.as_mut() {
            s.softirq_cpu = None;
        }
        let merged = merge(vec![run(&[1], 0), partial, run(&[1], 0)]);
        let s = merged.server.unwrap();
        assert_eq!(s.cpu, Duration::from_millis(600));
        assert_eq!((s.softirq_cpu, s.cpu_with_softirq()), (None, None));
        let one = merge(vec![run(&[1], 3)]).server.unwrap();
        assert_eq!(one.softirq_cpu, Some(Duration::from_millis(13)));
    }

    #[test]
    fn any_saturated_or_timed_out_run_marks_the_merge() {
        let mut bad = run(&[1], 0);
        bad.client.saturated = true;
        bad.timed_out = true;
        bad.server = None;
        let merged = merge(vec![run(&[1], 0), bad]);
        assert!(merged.client.saturated && merged.timed_out);
        assert!(
            merged.server.is_none(),
            "broker figures only when every run has them"
        );
    }
}
