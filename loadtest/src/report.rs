//! The final report: merges what the workers handed back, computes losses against what was
//! published, and renders text or one JSON line. Also decides whether the client, not the
//! broker, was the bottleneck.

use std::fmt::Write;
use std::time::Duration;

use hdrhistogram::Histogram;

use crate::config::{Args, Plan};
use crate::procstat::ProcSample;
use crate::worker::{new_histogram, ThreadResult};

/// Above this share of its usable cores (or of one core, for any one worker thread) the
/// client is the bottleneck and the numbers describe the client.
pub const CLIENT_SATURATED_FRACTION: f64 = 0.85;

/// Broker samples: before connecting, after connecting, and at the edges of the window.
#[derive(Debug, Clone, Copy)]
pub struct ServerSamples {
    pub before: ProcSample,
    pub connected: ProcSample,
    pub start: ProcSample,
    pub end: ProcSample,
}

/// What `main` knows that the workers don't.
#[derive(Debug)]
pub struct Inputs<'a> {
    pub args: &'a Args,
    pub plan: &'a Plan,
    pub threads: usize,
    pub cores: usize,
    /// CPUs online on the machine: the broker may run on ones the client may not.
    pub machine_cores: usize,
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

#[derive(Debug)]
pub struct Report {
    pub histogram: Histogram<u64>,
    json: serde_json::Value,
    text: String,
    failure: bool,
}

impl Report {
    pub fn build(inputs: &Inputs<'_>, results: Vec<ThreadResult>) -> Report {
        let plan = inputs.plan;
        let args = inputs.args;
        // What each (topic, publisher slot) stream published, to measure losses against.
        let mut published: Vec<Vec<u64>> = (0..plan.topic_count())
            .map(|k| vec![0; plan.publishers_of(k) as usize])
            .collect();
        let mut histogram = new_histogram();
        let sum = |f: &dyn Fn(&ThreadResult) -> u64| results.iter().map(f).sum::<u64>();
        let published_in_window = sum(&|r| r.published_in_window);
        let delivered_in_window = sum(&|r| r.delivered_in_window);
        let delivered_total = sum(&|r| r.delivered_total);
        let unsent = sum(&|r| r.unsent);
        let broker_dropped = sum(&|r| r.broker_dropped);
        let foreign = sum(&|r| r.foreign);
        let misrouted = sum(&|r| r.misrouted);
        let protocol_errors = sum(&|r| r.protocol_errors);
        let disconnects = sum(&|r| r.disconnects);
        let http_errors = sum(&|r| r.http_errors);
        let handshakes = sum(&|r| r.handshakes);
        let handshake_ns_sum = sum(&|r| r.handshake_ns_sum);
        let handshake_ns_max = results
            .iter()
            .map(|r| r.handshake_ns_max)
            .max()
            .unwrap_or(0);
        let max_thread_busy = results
            .iter()
            .map(|r| r.cpu_in_window.as_secs_f64() / inputs.measured.as_secs_f64().max(1e-9))
            .fold(0.0, f64::max);
        let mut published_total = 0;
        for r in &results {
            for &(p, k, count) in &r.published {
                if let Some(slot) = plan.publisher_slot(k, p) {
                    published[k as usize][slot as usize] += count;
                }
                published_total += count;
            }
        }
        let (mut lost, mut duplicates, mut out_of_order, mut expected) = (0, 0, 0, 0);
        for r in &results {
            let _ = histogram.add(&r.histogram);
            lost += r.tracker.written_off();
            duplicates += r.tracker.duplicates;
            out_of_order += r.tracker.out_of_order;
            for &(base, k) in &r.subscriber_streams {
                for (slot, &count) in published[k as usize].iter().enumerate() {
                    lost += r.tracker.lost(base + slot as u32, count);
                    expected += count;
                }
            }
        }

        let secs = inputs.measured.as_secs_f64().max(1e-9);
        let ms = |ns: u64| ns as f64 / 1e6;
        let q = |quantile: f64| {
            if histogram.is_empty() {
                0.0
            } else {
                ms(histogram.value_at_quantile(quantile))
            }
        };
        let usable_cores = inputs.threads.min(inputs.cores).max(1) as f64;
        let client_cpu_secs = inputs.client_cpu.as_secs_f64();
        let client_cpu_fraction = client_cpu_secs / secs / usable_cores;
        let client_saturated = client_cpu_fraction > CLIENT_SATURATED_FRACTION
            || max_thread_busy > CLIENT_SATURATED_FRACTION;
        let target_rate = if args.max { None } else { Some(args.rate) };

        let server = inputs.server.map(|s| {
            let cpu = s.end.cpu.saturating_sub(s.start.cpu).as_secs_f64();
            let conns = inputs.connections_up.max(1) as f64;
            serde_json::json!({
                "cpu_seconds": cpu,
                "cpu_cores_used": cpu / secs,
                "cpu_us_per_delivery": if delivered_in_window > 0 { Some(cpu * 1e6 / delivered_in_window as f64) } else { None },
                "rss_before_connect_bytes": s.before.rss_bytes,
                "rss_connected_bytes": s.connected.rss_bytes,
                "rss_end_bytes": s.end.rss_bytes,
                "rss_per_connection_bytes": s.connected.rss_bytes as f64 / conns,
                "rss_delta_per_connection_bytes": s.connected.rss_bytes.saturating_sub(s.before.rss_bytes) as f64 / conns,
                "machine_cpu_busy_fraction": (cpu + client_cpu_secs) / secs / inputs.machine_cores as f64,
            })
        });
        let json = serde_json::json!({
            "url": args.url,
            "subscribers": args.subscribers,
            "topics": args.topics,
            "all_topic": args.all_topic,
            "publishers": args.publishers,
            "mode": if args.max { "max" } else { "rate" },
            "target_rate": target_rate,
            "size_bytes": args.size,
            "binary": args.binary,
            "http_publish": args.http_publish,
            "threads": inputs.threads,
            "cores": inputs.cores,
            "warmup_seconds": args.warmup.as_secs_f64(),
            "measured_seconds": secs,
            "connections": {
                "target": inputs.total_connections,
                "up": inputs.connections_up,
                "failed": inputs.connections_failed,
                "connect_seconds": inputs.connect_secs,
                "handshakes_per_second": if inputs.connect_secs > 0.0 { handshakes as f64 / inputs.connect_secs } else { 0.0 },
                "handshake_mean_ms": handshake_ns_sum.checked_div(handshakes).map_or(0.0, ms),
                "handshake_max_ms": ms(handshake_ns_max),
            },
            "published_per_second": published_in_window as f64 / secs,
            "deliveries_per_second": delivered_in_window as f64 / secs,
            "published_total": published_total,
            "deliveries_expected": expected,
            "deliveries_total": delivered_total,
            "latency_ms": {
                "count": histogram.len(),
                "mean": if histogram.is_empty() { 0.0 } else { histogram.mean() / 1e6 },
                "p50": q(0.5), "p90": q(0.9), "p99": q(0.99), "p99_9": q(0.999), "p99_99": q(0.9999),
                "max": if histogram.is_empty() { 0.0 } else { ms(histogram.max()) },
            },
            "lost": lost,
            "duplicates": duplicates,
            "out_of_order": out_of_order,
            "unsent_backlog": unsent,
            "broker_dropped_notices": broker_dropped,
            "misrouted": misrouted,
            "foreign": foreign,
            "protocol_errors": protocol_errors,
            "disconnects": disconnects,
            "http_errors": http_errors,
            "client": {
                "cpu_seconds": client_cpu_secs,
                "cpu_fraction_of_usable_cores": client_cpu_fraction,
                "usable_cores": usable_cores,
                "busiest_thread_fraction": max_thread_busy,
                "saturated": client_saturated,
            },
            "server": server,
            "timed_out": inputs.timed_out,
            "first_error": inputs.first_error,
        });

        let mut t = String::new();
        let _ = writeln!(
            t,
            "crier-load report: {} ({})",
            args.url,
            if args.binary { "binary" } else { "JSON text" }
        );
        let _ = writeln!(
            t,
            "  setup        {} subscribers, {} topics{}, {} publishers{}, {} B payload, {} threads on {} cores",
            args.subscribers,
            args.topics,
            if args.all_topic { " + load-all" } else { "" },
            args.publishers,
            if args.http_publish.is_some() { " (HTTP POST)" } else { "" },
            args.size,
            inputs.threads,
            inputs.cores
        );
        let _ = writeln!(
            t,
            "  connections  {}/{} up, {} failed, in {:.3} s ({:.0} handshakes/s; handshake mean {:.3} ms, max {:.3} ms)",
            inputs.connections_up,
            inputs.total_connections,
            inputs.connections_failed,
            inputs.connect_secs,
            json["connections"]["handshakes_per_second"].as_f64().unwrap_or(0.0),
            json["connections"]["handshake_mean_ms"].as_f64().unwrap_or(0.0),
            ms(handshake_ns_max),
        );
        let rate = match target_rate {
            Some(r) => format!("target {r} msg/s (open loop)"),
            None => format!("--max, window {} per publisher (closed loop)", args.window),
        };
        let _ = writeln!(
            t,
            "  window       {:.3} s measured after {:.3} s warmup; {rate}",
            secs,
            args.warmup.as_secs_f64()
        );
        let _ = writeln!(
            t,
            "  published    {:.1} msg/s ({} in total)",
            published_in_window as f64 / secs,
            published_total
        );
        let _ = writeln!(
            t,
            "  deliveries   {:.1} /s ({} of {} expected in total)",
            delivered_in_window as f64 / secs,
            delivered_total,
            expected
        );
        let _ = writeln!(
            t,
            "  latency ms   p50 {:.3}  p90 {:.3}  p99 {:.3}  p99.9 {:.3}  p99.99 {:.3}  max {:.3}  ({} samples, from intended send time)",
            q(0.5),
            q(0.9),
            q(0.99),
            q(0.999),
            q(0.9999),
            json["latency_ms"]["max"].as_f64().unwrap_or(0.0),
            histogram.len()
        );
        let _ = writeln!(
            t,
            "  integrity    lost {lost}, duplicate {duplicates}, out-of-order {out_of_order}, broker drop notices {broker_dropped}, misrouted {misrouted}, foreign {foreign}"
        );
        let _ = writeln!(
            t,
            "  errors       protocol {protocol_errors}, disconnects {disconnects}, HTTP {http_errors}, unsent backlog {unsent}"
        );
        let _ = writeln!(
            t,
            "  client CPU   {:.3} s in window = {:.1}% of {} usable cores (busiest thread {:.1}% of a core)",
            client_cpu_secs,
            client_cpu_fraction * 100.0,
            usable_cores,
            max_thread_busy * 100.0
        );
        if let Some(s) = &json["server"].as_object() {
            let f = |k: &str| s.get(k).and_then(serde_json::Value::as_f64).unwrap_or(0.0);
            let _ = writeln!(
                t,
                "  broker       CPU {:.3} s = {:.2} cores; {} µs per delivery; RSS {:.1} MiB connected = {:.0} B/connection ({:.0} B/connection over the pre-connect {:.1} MiB)",
                f("cpu_seconds"),
                f("cpu_cores_used"),
                s.get("cpu_us_per_delivery").and_then(serde_json::Value::as_f64).map_or("n/a".to_string(), |v| format!("{v:.3}")),
                f("rss_connected_bytes") / 1048576.0,
                f("rss_per_connection_bytes"),
                f("rss_delta_per_connection_bytes"),
                f("rss_before_connect_bytes") / 1048576.0,
            );
            if f("machine_cpu_busy_fraction") > CLIENT_SATURATED_FRACTION {
                let _ = writeln!(t, "  WARNING: broker + client used {:.0}% of this machine's {} cores: they compete, results are machine-bound", f("machine_cpu_busy_fraction") * 100.0, inputs.machine_cores);
            }
        }
        if client_saturated {
            let _ = writeln!(
                t,
                "  WARNING: the client used {:.0}% of its {} usable cores (busiest thread {:.0}%): it is saturated, so these numbers measure crier-load, not the broker. Use more --threads, another machine, or a lower load.",
                client_cpu_fraction * 100.0,
                usable_cores,
                max_thread_busy * 100.0
            );
        }
        if unsent > 0 {
            let _ = writeln!(t, "  WARNING: {unsent} scheduled messages were never sent: publishers fell behind (broker not reading fast enough, or client saturated)");
        }
        if let (Some(r), true) = (target_rate, published_in_window > 0) {
            let achieved = published_in_window as f64 / secs;
            if achieved < 0.95 * r {
                let _ = writeln!(
                    t,
                    "  WARNING: published {achieved:.0} msg/s, below the target {r} msg/s"
                );
            }
        }
        if inputs.timed_out {
            let _ = writeln!(
                t,
                "  WARNING: hard timeout hit; the report covers what was done by then"
            );
        }
        if let Some(e) = &inputs.first_error {
            let _ = writeln!(t, "  first error  {e}");
        }
        let failure = protocol_errors > 0 || disconnects > 0 || misrouted > 0 || http_errors > 0;
        Report {
            histogram,
            json,
            text: t,
            failure,
        }
    }

    pub fn json(&self) -> String {
        self.json.to_string()
    }

    pub fn text(&self) -> &str {
        &self.text
    }

    /// Protocol errors, disconnects or misrouted messages: the run found a broker bug.
    pub fn is_failure(&self) -> bool {
        self.failure
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tracker::Tracker;
    use clap::Parser;

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
        }
    }

    fn sample(cpu_ms: u64, rss: u64) -> ProcSample {
        ProcSample {
            cpu: Duration::from_millis(cpu_ms),
            rss_bytes: rss,
        }
    }

    /// The report's text and JSON for fixed inputs, pinned: bench/compare, .ci/run and the
    /// README read these keys and lines.
    #[test]
    fn report_is_pinned() {
        let args = Args::parse_from([
            "crier-load",
            "--subscribers",
            "2",
            "--rate",
            "10",
            "--duration",
            "1s",
            "--warmup",
            "1s",
        ]);
        let plan = Plan {
            topics: 1,
            publishers: 1,
            all_topic: false,
        };
        let inputs = Inputs {
            args: &args,
            plan: &plan,
            threads: 2,
            cores: 2,
            machine_cores: 4,
            total_connections: 3,
            connections_up: 3,
            connections_failed: 0,
            connect_secs: 0.5,
            measured: Duration::from_secs(1),
            client_cpu: Duration::from_millis(700),
            server: Some(ServerSamples {
                before: sample(0, 1 << 20),
                connected: sample(100, 2 << 20),
                start: sample(200, 2 << 20),
                end: sample(700, 3 << 20),
            }),
            timed_out: false,
            first_error: Some("broker error: x".into()),
        };
        let results = vec![
            thread_result(&[1, 2, 3, 4], &[0, 1, 3, 2, 2, 5], 8),
            thread_result(&[5, 50], &[0, 1, 2, 3], 0),
        ];
        let report = Report::build(&inputs, results);
        assert_eq!(report.text(), PINNED_TEXT);
        let json: serde_json::Value = serde_json::from_str(&report.json()).unwrap();
        let pinned: serde_json::Value = serde_json::from_str(PINNED_JSON).unwrap();
        assert_eq!(json, pinned);
        assert!(!report.is_failure());
        assert_eq!(report.histogram.len(), 6);
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
        let inputs = Inputs {
            args: &args,
            plan: &plan,
            threads: 1,
            cores: 1,
            machine_cores: 1,
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
        let report = Report::build(&inputs, vec![result]);
        assert_eq!(report.text(), PINNED_FAILING_TEXT);
        let json: serde_json::Value = serde_json::from_str(&report.json()).unwrap();
        let pinned: serde_json::Value = serde_json::from_str(PINNED_FAILING_JSON).unwrap();
        assert_eq!(json, pinned);
        assert!(report.is_failure());
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
  broker       CPU 0.500 s = 0.50 cores; 100000.000 µs per delivery; RSS 2.0 MiB connected = 699051 B/connection (349525 B/connection over the pre-connect 1.0 MiB)
  WARNING: 2 scheduled messages were never sent: publishers fell behind (broker not reading fast enough, or client saturated)
  WARNING: published 4 msg/s, below the target 10 msg/s
  first error  broker error: x
";

    const PINNED_JSON: &str = r#"{"all_topic":false,"binary":false,"broker_dropped_notices":4,"client":{"busiest_thread_fraction":0.3,"cpu_fraction_of_usable_cores":0.35,"cpu_seconds":0.7,"saturated":false,"usable_cores":2.0},"connections":{"connect_seconds":0.5,"failed":0,"handshake_max_ms":3.0,"handshake_mean_ms":2.0,"handshakes_per_second":8.0,"target":3,"up":3},"cores":2,"deliveries_expected":16,"deliveries_per_second":5.0,"deliveries_total":10,"disconnects":0,"duplicates":1,"first_error":"broker error: x","foreign":6,"http_errors":0,"http_publish":null,"latency_ms":{"count":6,"max":50.003967,"mean":10.831232,"p50":3.000319,"p90":50.003967,"p99":50.003967,"p99_9":50.003967,"p99_99":50.003967},"lost":7,"measured_seconds":1.0,"misrouted":0,"mode":"rate","out_of_order":1,"protocol_errors":0,"published_per_second":4.0,"published_total":8,"publishers":1,"server":{"cpu_cores_used":0.5,"cpu_seconds":0.5,"cpu_us_per_delivery":100000.0,"machine_cpu_busy_fraction":0.3,"rss_before_connect_bytes":1048576,"rss_connected_bytes":2097152,"rss_delta_per_connection_bytes":349525.3333333333,"rss_end_bytes":3145728,"rss_per_connection_bytes":699050.6666666666},"size_bytes":64,"subscribers":2,"target_rate":10.0,"threads":2,"timed_out":false,"topics":1,"unsent_backlog":2,"url":"ws://127.0.0.1:8080/ws","warmup_seconds":1.0}"#;

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

    const PINNED_FAILING_JSON: &str = r#"{"all_topic":true,"binary":false,"broker_dropped_notices":2,"client":{"busiest_thread_fraction":0.15,"cpu_fraction_of_usable_cores":0.95,"cpu_seconds":1.9,"saturated":true,"usable_cores":1.0},"connections":{"connect_seconds":0.0,"failed":1,"handshake_max_ms":3.0,"handshake_mean_ms":2.0,"handshakes_per_second":0.0,"target":2,"up":1},"cores":1,"deliveries_expected":0,"deliveries_per_second":0.0,"deliveries_total":0,"disconnects":0,"duplicates":0,"first_error":null,"foreign":3,"http_errors":0,"http_publish":"http://127.0.0.1:8080","latency_ms":{"count":0,"max":0.0,"mean":0.0,"p50":0.0,"p90":0.0,"p99":0.0,"p99_9":0.0,"p99_99":0.0},"lost":0,"measured_seconds":2.0,"misrouted":0,"mode":"max","out_of_order":0,"protocol_errors":1,"published_per_second":0.0,"published_total":0,"publishers":1,"server":null,"size_bytes":64,"subscribers":1,"target_rate":null,"threads":1,"timed_out":true,"topics":1,"unsent_backlog":1,"url":"ws://127.0.0.1:8080/ws","warmup_seconds":2.0}"#;
}
