//! The final report: one run's [`Totals`] (or several runs' merged, with their spread),
//! rendered as text or one JSON line, and whether the run found a broker bug. `totals` and
//! `repeat` compute, `json` and `text` render.

mod json;
mod repeat;
mod text;
mod totals;

use hdrhistogram::Histogram;

use crate::config::{Args, Plan};

pub(crate) use totals::{RunInputs, ServerSamples, Totals};

/// Above this share of its usable cores (or of one core, for any one worker thread) the
/// client is the bottleneck and the numbers describe the client.
pub(crate) const CLIENT_SATURATED_FRACTION: f64 = 0.85;

/// What is the same for every run: the flags, the plan and the machine.
#[derive(Debug)]
pub(crate) struct Context<'a> {
    pub args: &'a Args,
    pub plan: &'a Plan,
    pub threads: usize,
    pub cores: usize,
    /// CPUs online on the machine: the broker may run on ones the client may not.
    pub machine_cores: usize,
}

impl Context<'_> {
    /// The cores the client can use: `min(threads, cores)`.
    pub(crate) fn usable_cores(&self) -> f64 {
        self.threads.min(self.cores).max(1) as f64
    }

    /// `--rate`, or `None` with `--max`.
    pub(crate) fn target_rate(&self) -> Option<f64> {
        (!self.args.max).then_some(self.args.rate)
    }
}

#[derive(Debug)]
pub(crate) struct Report {
    pub histogram: Histogram<u64>,
    json: serde_json::Value,
    text: String,
    failure: bool,
}

impl Report {
    /// The report on `runs` (at least one; with `--repeat`, in order): the top-level numbers
    /// describe them merged, and `repeat`/`runs` keep each run's latency.
    pub(crate) fn build(ctx: &Context<'_>, runs: Vec<Totals>) -> Report {
        let spread = repeat::Repeat::of(&runs);
        let merged = repeat::merge(runs);
        let mut json = json::render(ctx, &merged);
        let (summary, per_run) = spread.json();
        json["repeat"] = summary;
        json["runs"] = per_run;
        let shown = (spread.runs.len() > 1).then_some(&spread);
        Report {
            json,
            text: text::render(ctx, &merged, shown),
            failure: merged.counts.is_failure(),
            histogram: merged.histogram,
        }
    }

    pub(crate) fn json(&self) -> String {
        self.json.to_string()
    }

    pub(crate) fn text(&self) -> &str {
        &self.text
    }

    /// Protocol errors, disconnects or misrouted messages: the run found a broker bug.
    pub(crate) fn is_failure(&self) -> bool {
        self.failure
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::procstat::ProcSample;
    use crate::tracker::Tracker;
    use crate::worker::{new_histogram, ThreadResult};
    use clap::Parser;
    use std::time::Duration;

    fn thread_result(latencies_ms: &[u64], seqs: &[u64], published: u64) -> ThreadResult {
        let mut histogram = new_histogram();
        for &l in latencies_ms {
            histogram.record(l * 1_000_000).unwrap();
        }
        let mut tracker = Tracker::default();
        let base = tracker.add_streams(1);
        for &s in seqs {
            tracker.observe(base, s);
        }
        ThreadResult {
            histogram,
            tracker,
            subscriber_streams: vec![(base, 0)],
            published: vec![(0, 0, published)],
            published_in_window: published / 2,
            delivered_in_window: seqs.len() as u64 / 2,
            delivered_total: seqs.len() as u64,
            unsent: 1,
            broker_dropped: 2,
            foreign: 3,
            misrouted: 0,
            protocol_errors: 0,
            disconnects: 0,
            http_errors: 0,
            cpu_in_window: Duration::from_millis(300),
            handshake_ns_sum: 4_000_000,
            handshake_ns_max: 3_000_000,
            handshakes: 2,
            resume: Default::default(),
        }
    }

    /// Takes out the keys `--repeat` added, leaving those the report always had.
    fn without_repeat_keys(json: &mut serde_json::Value) -> (serde_json::Value, serde_json::Value) {
        let object = json.as_object_mut().unwrap();
        let repeat = object.remove("repeat").expect("repeat key");
        let runs = object.remove("runs").expect("runs key");
        (repeat, runs)
    }

    fn sample(cpu_ms: u64, rss: u64, softirq_ms: Option<u64>) -> ProcSample {
        ProcSample {
            cpu: Duration::from_millis(cpu_ms),
            rss_bytes: rss,
            softirq_cpu: softirq_ms.map(Duration::from_millis),
        }
    }

    /// The pinned run's inputs; `softirq` says whether the ksoftirqd threads were sampled
    /// (30 ms at the window's start, 130 ms at its end).
    fn pinned_inputs(softirq: bool) -> RunInputs {
        let k = |ms: u64| softirq.then_some(ms);
        RunInputs {
            total_connections: 3,
            connections_up: 3,
            connections_failed: 0,
            connect_secs: 0.5,
            measured: Duration::from_secs(1),
            client_cpu: Duration::from_millis(700),
            server: Some(ServerSamples {
                before: sample(0, 1 << 20, k(0)),
                connected: sample(100, 2 << 20, k(10)),
                start: sample(200, 2 << 20, k(30)),
                end: sample(700, 3 << 20, k(130)),
            }),
            timed_out: false,
            first_error: Some("broker error: x".into()),
        }
    }

    fn pinned_results() -> Vec<ThreadResult> {
        vec![
            thread_result(&[1, 2, 3, 4], &[0, 1, 3, 2, 2, 5], 8),
            thread_result(&[5, 50], &[0, 1, 2, 3], 0),
        ]
    }

    fn pinned_args() -> Args {
        Args::parse_from([
            "crier-load",
            "--subscribers",
            "2",
            "--rate",
            "10",
            "--duration",
            "1s",
            "--warmup",
            "1s",
        ])
    }

    /// The report's text and JSON for fixed inputs, pinned: bench/compare, .ci/run and the
    /// README read these keys and lines.
    /// The report of the pinned inputs, with or without ksoftirqd samples.
    fn pinned_report(with_softirq: bool) -> Report {
        let args = pinned_args();
        let plan = Plan {
            topics: 1,
            publishers: 1,
            all_topic: false,
        };
        let ctx = Context {
            args: &args,
            plan: &plan,
            threads: 2,
            cores: 2,
            machine_cores: 4,
        };
        let totals = Totals::from_run(&ctx, pinned_inputs(with_softirq), pinned_results());
        Report::build(&ctx, vec![totals])
    }

    #[test]
    fn report_is_pinned() {
        let report = pinned_report(true);
        assert_eq!(report.text(), PINNED_TEXT);
        let mut json: serde_json::Value = serde_json::from_str(&report.json()).unwrap();
        let pinned: serde_json::Value = serde_json::from_str(PINNED_JSON).unwrap();
        let (repeat, runs) = without_repeat_keys(&mut json);
        assert_eq!(json, pinned, "keys before --repeat unchanged");
        assert_eq!(repeat["count"], 1);
        assert_eq!(repeat["p99_ms"]["median"], pinned["latency_ms"]["p99"]);
        assert_eq!(runs[0]["latency_ms"]["p50"], pinned["latency_ms"]["p50"]);
        assert_eq!(runs[0]["lost"], 7);
        assert!(!report.is_failure());
        assert_eq!(report.histogram.len(), 6);
    }

    /// Without ksoftirqd samples (threads not found or unreadable) the two softirq keys are
    /// null and the broker line says nothing about them; everything else is as pinned.
    #[test]
    fn report_without_softirq_threads() {
        let report = pinned_report(false);
        let broker_line = "  broker       CPU 0.500 s = 0.50 cores; 100000.000 µs per delivery; RSS 2.0 MiB connected = 699051 B/connection (349525 B/connection over the pre-connect 1.0 MiB)\n";
        assert!(report.text().contains(broker_line), "{}", report.text());
        let mut json: serde_json::Value = serde_json::from_str(&report.json()).unwrap();
        let mut pinned: serde_json::Value = serde_json::from_str(PINNED_JSON).unwrap();
        without_repeat_keys(&mut json);
        pinned["server"]["softirq_thread_cpu_seconds"] = serde_json::Value::Null;
        pinned["server"]["cpu_us_per_delivery_with_softirq"] = serde_json::Value::Null;
        assert_eq!(json, pinned);
    }

    /// The other branches: --max, load-all, HTTP publishing, an empty histogram, no broker
    /// samples, a saturated client, a timeout and a protocol error (a failure).
    #[test]
    fn failing_saturated_report_is_pinned() {
        let args = Args::parse_from([
            "crier-load",
            "--max",
            "--all-topic",
            "--http-publish",
            "http://127.0.0.1:8080",
            "--subscribers",
            "1",
        ]);
        let plan = Plan {
            topics: 1,
            publishers: 1,
            all_topic: true,
        };
        let ctx = Context {
            args: &args,
            plan: &plan,
            threads: 1,
            cores: 1,
            machine_cores: 1,
        };
        let inputs = RunInputs {
            total_connections: 2,
            connections_up: 1,
            connections_failed: 1,
            connect_secs: 0.0,
            measured: Duration::from_secs(2),
            client_cpu: Duration::from_millis(1900),
            server: None,
            timed_out: true,
            first_error: None,
        };
        let mut result = thread_result(&[], &[], 0);
        result.protocol_errors = 1;
        let report = Report::build(&ctx, vec![Totals::from_run(&ctx, inputs, vec![result])]);
        assert_eq!(report.text(), PINNED_FAILING_TEXT);
        let mut json: serde_json::Value = serde_json::from_str(&report.json()).unwrap();
        let pinned: serde_json::Value = serde_json::from_str(PINNED_FAILING_JSON).unwrap();
        let (_, runs) = without_repeat_keys(&mut json);
        assert_eq!(json, pinned, "keys before --repeat unchanged");
        assert_eq!(runs[0]["timed_out"], true);
        assert!(report.is_failure());
    }

    /// With `--repeat 2`: the top-level latency is both runs merged, each run keeps its own
    /// p50/p99/max in `runs`, and the text lists the runs right after the merged latency.
    #[test]
    fn repeated_runs_are_merged_and_listed() {
        let args = Args::parse_from(["crier-load", "--subscribers", "2", "--repeat", "2"]);
        let plan = Plan {
            topics: 1,
            publishers: 1,
            all_topic: false,
        };
        let ctx = Context {
            args: &args,
            plan: &plan,
            threads: 1,
            cores: 1,
            machine_cores: 1,
        };
        let inputs = || RunInputs {
            total_connections: 3,
            connections_up: 3,
            connections_failed: 0,
            connect_secs: 0.5,
            measured: Duration::from_secs(1),
            client_cpu: Duration::from_millis(100),
            server: None,
            timed_out: false,
            first_error: None,
        };
        let fast = Totals::from_run(
            &ctx,
            inputs(),
            vec![thread_result(&[1, 1, 1, 2], &[0, 1], 2)],
        );
        let slow = Totals::from_run(
            &ctx,
            inputs(),
            vec![thread_result(&[90, 95, 99, 100], &[0, 1], 2)],
        );
        let report = Report::build(&ctx, vec![fast, slow]);
        let json: serde_json::Value = serde_json::from_str(&report.json()).unwrap();
        assert_eq!(json["latency_ms"]["count"], 8);
        assert_eq!(json["measured_seconds"], 2.0);
        assert_eq!(json["connections"]["up"], 6);
        assert_eq!(json["repeat"]["count"], 2);
        let p99s: Vec<f64> = (0..2)
            .map(|i| {
                json["runs"][i]["latency_ms"]["p99"]
                    .as_f64()
                    .unwrap()
                    .round()
            })
            .collect();
        assert_eq!(p99s, [2.0, 100.0]);
        assert_eq!(
            json["repeat"]["p99_ms"]["median"].as_f64().unwrap().round(),
            51.0
        );
        assert_eq!(report.histogram.len(), 8);
        let text = report.text();
        let latency = text.find("  latency ms").unwrap();
        let runs = text.find("  runs         2 runs").unwrap();
        assert!(
            latency < runs && runs < text.find("  integrity").unwrap(),
            "{text}"
        );
        assert!(text.contains("  run 2        p50 95.027"), "{text}");
        assert!(text.contains("  spread ms    p50 1.000..95.027"), "{text}");
    }

    const PINNED_TEXT: &str = "\
crier-load report: ws://127.0.0.1:8080/ws (JSON text)
  setup        2 subscribers, 1 topics, 1 publishers, 64 B payload, 2 threads on 2 cores
  connections  3/3 up, 0 failed, in 0.500 s (8 handshakes/s; handshake mean 2.000 ms, max 3.000 ms)
  window       1.000 s measured after 1.000 s warmup; target 10 msg/s (open loop)
  published    4.0 msg/s (8 in total)
  deliveries   5.0 /s (10 of 16 expected in total)
  latency ms   p50 3.000  p90 50.004  p99 50.004  p99.9 50.004  p99.99 50.004  max 50.004  (6 samples, from intended send time)
  integrity    lost 7, duplicate 1, out-of-order 1, broker drop notices 4, misrouted 0, foreign 6
  errors       protocol 0, disconnects 0, HTTP 0, unsent backlog 2
  client CPU   0.700 s in window = 35.0% of 2 usable cores (busiest thread 30.0% of a core)
  broker       CPU 0.500 s = 0.50 cores; 100000.000 µs per delivery (120000.000 adding ksoftirqd's 0.100 s); RSS 2.0 MiB connected = 699051 B/connection (349525 B/connection over the pre-connect 1.0 MiB)
  WARNING: 2 scheduled messages were never sent: publishers fell behind (broker not reading fast enough, or client saturated)
  WARNING: published 4 msg/s, below the target 10 msg/s
  first error  broker error: x
";

    const PINNED_JSON: &str = r#"{"all_topic":false,"binary":false,"broker_dropped_notices":4,"client":{"busiest_thread_fraction":0.3,"cpu_fraction_of_usable_cores":0.35,"cpu_seconds":0.7,"saturated":false,"usable_cores":2.0},"connections":{"connect_seconds":0.5,"failed":0,"handshake_max_ms":3.0,"handshake_mean_ms":2.0,"handshakes_per_second":8.0,"target":3,"up":3},"cores":2,"deliveries_expected":16,"deliveries_per_second":5.0,"deliveries_total":10,"disconnects":0,"duplicates":1,"first_error":"broker error: x","foreign":6,"http_errors":0,"http_publish":null,"latency_ms":{"count":6,"max":50.003967,"mean":10.831232,"p50":3.000319,"p90":50.003967,"p99":50.003967,"p99_9":50.003967,"p99_99":50.003967},"lost":7,"measured_seconds":1.0,"misrouted":0,"mode":"rate","out_of_order":1,"protocol_errors":0,"published_per_second":4.0,"published_total":8,"publishers":1,"resume":null,"server":{"cpu_cores_used":0.5,"cpu_seconds":0.5,"cpu_us_per_delivery":100000.0,"cpu_us_per_delivery_with_softirq":120000.0,"machine_cpu_busy_fraction":0.3,"rss_before_connect_bytes":1048576,"rss_connected_bytes":2097152,"rss_delta_per_connection_bytes":349525.3333333333,"rss_end_bytes":3145728,"rss_per_connection_bytes":699050.6666666666,"softirq_thread_cpu_seconds":0.1},"size_bytes":64,"subscribers":2,"target_rate":10.0,"threads":2,"timed_out":false,"topics":1,"unsent_backlog":2,"url":"ws://127.0.0.1:8080/ws","warmup_seconds":1.0}"#;

    const PINNED_FAILING_TEXT: &str = "\
crier-load report: ws://127.0.0.1:8080/ws (JSON text)
  setup        1 subscribers, 1 topics + load-all, 1 publishers (HTTP POST), 64 B payload, 1 threads on 1 cores
  connections  1/2 up, 1 failed, in 0.000 s (0 handshakes/s; handshake mean 2.000 ms, max 3.000 ms)
  window       2.000 s measured after 2.000 s warmup; --max, window 64 per publisher (closed loop)
  published    0.0 msg/s (0 in total)
  deliveries   0.0 /s (0 of 0 expected in total)
  latency ms   p50 0.000  p90 0.000  p99 0.000  p99.9 0.000  p99.99 0.000  max 0.000  (0 samples, from intended send time)
  integrity    lost 0, duplicate 0, out-of-order 0, broker drop notices 2, misrouted 0, foreign 3
  errors       protocol 1, disconnects 0, HTTP 0, unsent backlog 1
  client CPU   1.900 s in window = 95.0% of 1 usable cores (busiest thread 15.0% of a core)
  WARNING: the client used 95% of its 1 usable cores (busiest thread 15%): it is saturated, so these numbers measure crier-load, not the broker. Use more --threads, another machine, or a lower load.
  WARNING: 1 scheduled messages were never sent: publishers fell behind (broker not reading fast enough, or client saturated)
  WARNING: hard timeout hit; the report covers what was done by then
";

    const PINNED_FAILING_JSON: &str = r#"{"all_topic":true,"binary":false,"broker_dropped_notices":2,"client":{"busiest_thread_fraction":0.15,"cpu_fraction_of_usable_cores":0.95,"cpu_seconds":1.9,"saturated":true,"usable_cores":1.0},"connections":{"connect_seconds":0.0,"failed":1,"handshake_max_ms":3.0,"handshake_mean_ms":2.0,"handshakes_per_second":0.0,"target":2,"up":1},"cores":1,"deliveries_expected":0,"deliveries_per_second":0.0,"deliveries_total":0,"disconnects":0,"duplicates":0,"first_error":null,"foreign":3,"http_errors":0,"http_publish":"http://127.0.0.1:8080","latency_ms":{"count":0,"max":0.0,"mean":0.0,"p50":0.0,"p90":0.0,"p99":0.0,"p99_9":0.0,"p99_99":0.0},"lost":0,"measured_seconds":2.0,"misrouted":0,"mode":"max","out_of_order":0,"protocol_errors":1,"published_per_second":0.0,"published_total":0,"publishers":1,"resume":null,"server":null,"size_bytes":64,"subscribers":1,"target_rate":null,"threads":1,"timed_out":true,"topics":1,"unsent_backlog":1,"url":"ws://127.0.0.1:8080/ws","warmup_seconds":2.0}"#;
}
