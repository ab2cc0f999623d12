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
