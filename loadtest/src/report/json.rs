//! The report as one JSON object. bench/compare, bench/compare_report.py and .ci/run read
//! these keys: add keys freely, never rename one.

use serde_json::{json, Value};

use super::totals::{ServerUse, Totals};
use super::Context;

/// The whole report for `t` (one run, or several merged).
pub(super) fn render(ctx: &Context<'_>, t: &Totals) -> Value {
    let args = ctx.args;
    let c = &t.counts;
    let secs = t.secs();
    json!({
        "url": args.url,
        "subscribers": args.subscribers,
        "topics": args.topics,
        "all_topic": args.all_topic,
        "publishers": args.publishers,
        "mode": if args.max { "max" } else { "rate" },
        "target_rate": ctx.target_rate(),
        "size_bytes": args.size,
        "binary": args.binary,
        "http_publish": args.http_publish,
        "threads": ctx.threads,
        "cores": ctx.cores,
        "warmup_seconds": args.warmup.as_secs_f64(),
        "measured_seconds": secs,
        "connections": connections(t),
        "published_per_second": c.published_in_window as f64 / secs,
        "deliveries_per_second": c.delivered_in_window as f64 / secs,
        "published_total": c.published_total,
        "deliveries_expected": c.expected,
        "deliveries_total": c.delivered_total,
        "latency_ms": latency(t),
        "lost": c.lost,
        "duplicates": c.duplicates,
        "out_of_order": c.out_of_order,
        "unsent_backlog": c.unsent,
        "broker_dropped_notices": c.broker_dropped,
        "misrouted": c.misrouted,
        "foreign": c.foreign,
        "protocol_errors": c.protocol_errors,
        "disconnects": c.disconnects,
        "http_errors": c.http_errors,
        "client": client(ctx, t),
        "server": t.server.map(|s| server(ctx, t, &s)),
        "timed_out": t.timed_out,
        "first_error": t.first_error,
        "resume": t.resume.as_ref().map(resume),
    })
}

/// The reconnect scenarios: what came back across reconnects.
fn resume(r: &crate::resume::ResumeStats) -> Value {
    let ms = |q: f64| r.catch_up_ns.value_at_quantile(q) as f64 / 1e6;
    json!({
        "reconnects": r.reconnects,
        "acks_recovered": r.acks_recovered,
        "acks_lost": r.acks_lost,
        "messages_recovered": r.recovered,
        "messages_lost": r.lost,
        "epoch_changes": r.epoch_changes,
        "duplicates": r.duplicates,
        "caught_up": r.caught_up(),
        "catch_up_ms": {
            "p50": ms(0.5),
            "p99": ms(0.99),
            "max": r.catch_up_ns.max() as f64 / 1e6,
        },
    })
}

fn connections(t: &Totals) -> Value {
    let c = &t.connections;
    json!({
        "target": c.target,
        "up": c.up,
        "failed": c.failed,
        "connect_seconds": c.connect_secs,
        "handshakes_per_second": c.handshakes_per_second(),
        "handshake_mean_ms": c.handshake_mean_ms(),
        "handshake_max_ms": c.handshake_ns_max as f64 / 1e6,
    })
}

fn latency(t: &Totals) -> Value {
    let h = &t.histogram;
    let q = |quantile| t.latency_ms(quantile);
    json!({
        "count": h.len(),
        "mean": if h.is_empty() { 0.0 } else { h.mean() / 1e6 },
        "p50": q(0.5), "p90": q(0.9), "p99": q(0.99), "p99_9": q(0.999), "p99_99": q(0.9999),
        "max": t.max_ms(),
    })
}

fn client(ctx: &Context<'_>, t: &Totals) -> Value {
    let cpu = t.client.cpu.as_secs_f64();
    json!({
        "cpu_seconds": cpu,
        "cpu_fraction_of_usable_cores": cpu / t.secs() / ctx.usable_cores(),
        "usable_cores": ctx.usable_cores(),
        "busiest_thread_fraction": t.client.busiest_thread_fraction,
        "saturated": t.client.saturated,
    })
}

fn server(ctx: &Context<'_>, t: &Totals, s: &ServerUse) -> Value {
    let cpu = s.cpu.as_secs_f64();
    let secs = t.secs();
    let delivered = t.counts.delivered_in_window;
    let us_per_delivery = |cpu: f64| (delivered > 0).then(|| cpu * 1e6 / delivered as f64);
    let with_softirq = s.cpu_with_softirq().map(|c| c.as_secs_f64());
    let machine_busy = (cpu + t.client.cpu.as_secs_f64()) / secs / ctx.machine_cores as f64;
    json!({
        "cpu_seconds": cpu,
        "cpu_cores_used": cpu / secs,
        "cpu_us_per_delivery": us_per_delivery(cpu),
        "softirq_thread_cpu_seconds": s.softirq_cpu.map(|c| c.as_secs_f64()),
        "cpu_us_per_delivery_with_softirq": with_softirq.and_then(us_per_delivery),
        "rss_before_connect_bytes": s.rss_before,
        "rss_connected_bytes": s.rss_connected,
        "rss_end_bytes": s.rss_end,
        "rss_per_connection_bytes": s.rss_per_connection,
        "rss_delta_per_connection_bytes": s.rss_delta_per_connection,
        "machine_cpu_busy_fraction": machine_busy,
    })
}
