//! The report as aligned text lines for people, with a WARNING line for each reason not to
//! trust the numbers (saturated client, machine-bound, unsent backlog, rate not reached,
//! timeout). The README's "Reading the report" explains each line.

use std::fmt::Write;

use super::repeat::Repeat;
use super::totals::{ServerUse, Totals};
use super::{Context, CLIENT_SATURATED_FRACTION};

/// The whole report for `t` (one run, or several merged, then with each run's latency and
/// their spread after the merged latency line).
pub(super) fn render(ctx: &Context<'_>, t: &Totals, repeat: Option<&Repeat>) -> String {
    let mut out = String::new();
    setup(&mut out, ctx, t);
    traffic(&mut out, t, repeat);
    resources(&mut out, ctx, t);
    warnings(&mut out, ctx, t);
    if let Some(e) = &t.first_error {
        let _ = writeln!(out, "  first error  {e}");
    }
    out
}

fn setup(out: &mut String, ctx: &Context<'_>, t: &Totals) {
    let args = ctx.args;
    let c = &t.connections;
    let encoding = if args.binary { "binary" } else { "JSON text" };
    let _ = writeln!(out, "crier-load report: {} ({encoding})", args.url);
    let _ = writeln!(
        out,
        "  setup        {} subscribers, {} topics{}, {} publishers{}, {} B payload, {} threads on {} cores",
        args.subscribers,
        args.topics,
        if args.all_topic { " + load-all" } else { "" },
        args.publishers,
        if args.http_publish.is_some() { " (HTTP POST)" } else { "" },
        args.size,
        ctx.threads,
        ctx.cores
    );
    let _ = writeln!(
        out,
        "  connections  {}/{} up, {} failed, in {:.3} s ({:.0} handshakes/s; handshake mean {:.3} ms, max {:.3} ms)",
        c.up,
        c.target,
        c.failed,
        c.connect_secs,
        c.handshakes_per_second(),
        c.handshake_mean_ms(),
        c.handshake_ns_max as f64 / 1e6,
    );
    let rate = match ctx.target_rate() {
        Some(r) => format!("target {r} msg/s (open loop)"),
        None => format!("--max, window {} per publisher (closed loop)", args.window),
    };
    let _ = writeln!(
        out,
        "  window       {:.3} s measured after {:.3} s warmup; {rate}",
        t.secs(),
        args.warmup.as_secs_f64()
    );
}

fn traffic(out: &mut String, t: &Totals, repeat: Option<&Repeat>) {
    let c = &t.counts;
    let secs = t.secs();
    let _ = writeln!(
        out,
        "  published    {:.1} msg/s ({} in total)",
        c.published_in_window as f64 / secs,
        c.published_total
    );
    let _ = writeln!(
        out,
        "  deliveries   {:.1} /s ({} of {} expected in total)",
        c.delivered_in_window as f64 / secs,
        c.delivered_total,
        c.expected
    );
    let q = |quantile| t.latency_ms(quantile);
    let _ = writeln!(
        out,
        "  latency ms   p50 {:.3}  p90 {:.3}  p99 {:.3}  p99.9 {:.3}  p99.99 {:.3}  max {:.3}  ({} samples, from intended send time)",
        q(0.5),
        q(0.9),
        q(0.99),
        q(0.999),
        q(0.9999),
        t.max_ms(),
        t.histogram.len()
    );
    if let Some(r) = repeat {
        r.text(out);
    }
    let _ = writeln!(
        out,
        "  integrity    lost {}, duplicate {}, out-of-order {}, broker drop notices {}, misrouted {}, foreign {}",
        c.lost, c.duplicates, c.out_of_order, c.broker_dropped, c.misrouted, c.foreign
    );
    let _ = writeln!(
        out,
        "  errors       protocol {}, disconnects {}, HTTP {}, unsent backlog {}",
        c.protocol_errors, c.disconnects, c.http_errors, c.unsent
    );
    if let Some(r) = &t.resume {
        let ms = |q: f64| r.catch_up_ns.value_at_quantile(q) as f64 / 1e6;
        let _ = writeln!(
            out,
            "  resume       {} reconnects: {} recovered / {} lost acks; messages recovered {}, lost {}, duplicate {}; epoch changes {}",
            r.reconnects, r.acks_recovered, r.acks_lost, r.recovered, r.lost, r.duplicates, r.epoch_changes
        );
        let _ = writeln!(
            out,
            "  catch-up ms  p50 {:.3}  p99 {:.3}  max {:.3}  ({} of {} reconnects caught up)",
            ms(0.5),
            ms(0.99),
            r.catch_up_ns.max() as f64 / 1e6,
            r.caught_up(),
            r.reconnects
        );
    }
}

fn resources(out: &mut String, ctx: &Context<'_>, t: &Totals) {
    let cpu = t.client.cpu.as_secs_f64();
    let _ = writeln!(
        out,
        "  client CPU   {:.3} s in window = {:.1}% of {} usable cores (busiest thread {:.1}% of a core)",
        cpu,
        cpu / t.secs() / ctx.usable_cores() * 100.0,
        ctx.usable_cores(),
        t.client.busiest_thread_fraction * 100.0
    );
    if let Some(s) = &t.server {
        server(out, ctx, t, s);
    }
}

fn server(out: &mut String, ctx: &Context<'_>, t: &Totals, s: &ServerUse) {
    const MIB: f64 = 1048576.0;
    let cpu = s.cpu.as_secs_f64();
    let delivered = t.counts.delivered_in_window;
    let us_per_delivery = |cpu: f64| {
        if delivered > 0 {
            format!("{:.3}", cpu * 1e6 / delivered as f64)
        } else {
            "n/a".to_string()
        }
    };
    let per_delivery = us_per_delivery(cpu);
    // Left out when the ksoftirqd threads were not sampled.
    let softirq = match (s.softirq_cpu, s.cpu_with_softirq()) {
        (Some(threads), Some(with)) => format!(
            " ({} adding ksoftirqd's {:.3} s)",
            us_per_delivery(with.as_secs_f64()),
            threads.as_secs_f64()
        ),
        _ => String::new(),
    };
    let _ = writeln!(
        out,
        "  broker       CPU {:.3} s = {:.2} cores; {per_delivery} µs per delivery{softirq}; RSS {:.1} MiB connected = {:.0} B/connection ({:.0} B/connection over the pre-connect {:.1} MiB)",
        cpu,
        cpu / t.secs(),
        s.rss_connected as f64 / MIB,
        s.rss_per_connection,
        s.rss_delta_per_connection,
        s.rss_before as f64 / MIB,
    );
    let machine_busy = (cpu + t.client.cpu.as_secs_f64()) / t.secs() / ctx.machine_cores as f64;
    if machine_busy > CLIENT_SATURATED_FRACTION {
        let _ = writeln!(
            out,
            "  WARNING: broker + client used {:.0}% of this machine's {} cores: they compete, results are machine-bound",
            machine_busy * 100.0,
            ctx.machine_cores
        );
    }
}

fn warnings(out: &mut String, ctx: &Context<'_>, t: &Totals) {
    if t.client.saturated {
        let _ = writeln!(
            out,
            "  WARNING: the client used {:.0}% of its {} usable cores (busiest thread {:.0}%): it is saturated, so these numbers measure crier-load, not the broker. Use more --threads, another machine, or a lower load.",
            t.client.cpu.as_secs_f64() / t.secs() / ctx.usable_cores() * 100.0,
            ctx.usable_cores(),
            t.client.busiest_thread_fraction * 100.0
        );
    }
    let unsent = t.counts.unsent;
    if unsent > 0 {
        let _ = writeln!(out, "  WARNING: {unsent} scheduled messages were never sent: publishers fell behind (broker not reading fast enough, or client saturated)");
    }
    let published = t.counts.published_in_window;
    if let (Some(r), true) = (ctx.target_rate(), published > 0) {
        let achieved = published as f64 / t.secs();
        if achieved < 0.95 * r {
            let _ = writeln!(
                out,
                "  WARNING: published {achieved:.0} msg/s, below the target {r} msg/s"
            );
        }
    }
    if t.timed_out {
        let _ = writeln!(
            out,
            "  WARNING: hard timeout hit; the report covers what was done by then"
        );
    }
}
