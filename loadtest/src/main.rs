//! `crier-load`: connects subscribers and publishers from worker threads (one mio Poll each),
//! publishes on an open-loop schedule, and reports throughput, corrected latency, losses and
//! whether the client itself was the bottleneck. This file: checks, phases, the final report.
#![deny(unsafe_code)]

mod config;
mod net;
mod payload;
mod plot;
mod procstat;
mod report;
mod schedule;
mod sys;
mod tracker;
mod worker;
mod ws;

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;

use config::{parse_url, Args, Plan};
use worker::{PublishMode, Role, RunConfig, Shared, Worker};

/// File descriptors kept free beyond one per connection (stdio, epoll and timer fds, output
/// files, /proc reads).
const FD_HEADROOM: u64 = 64;
/// Extra time allowed after warmup + duration before the run is cut short (connecting many
/// thousands of connections and the grace period fit in it).
const HARD_TIMEOUT_EXTRA: Duration = Duration::from_secs(60);

/// Exit codes.
const EXIT_FINDINGS: u8 = 1; // protocol errors, disconnects, misrouted messages
const EXIT_SETUP: u8 = 2; // bad flags, fd limit, connections failed
const EXIT_TIMEOUT: u8 = 3; // hard timeout hit

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(code) => code,
        Err(message) => {
            eprintln!("crier-load: error: {message}");
            ExitCode::from(EXIT_SETUP)
        }
    }
}

fn run(args: &Args) -> Result<ExitCode, String> {
    if args.topics == 0 || args.publishers == 0 {
        return Err("--topics and --publishers must be at least 1".into());
    }
    if !args.max && (args.rate.is_nan() || args.rate <= 0.0 || args.rate.is_infinite()) {
        return Err("--rate must be a positive number of messages per second".into());
    }
    if args.max && args.binary && args.http_publish.is_none() {
        return Err("--max opens its window with acks, and binary publishes carry no id: use --max without --binary, or with --http-publish".into());
    }
    if args.max && args.window == 0 {
        return Err("--window must be at least 1".into());
    }
    let plan = Plan {
        topics: args.topics,
        publishers: args.publishers,
        all_topic: args.all_topic,
    };
    let ws = parse_url(&args.url, "ws", 80)?;
    let http = args
        .http_publish
        .as_deref()
        .map(|u| parse_url(u, "http", 80))
        .transpose()?;
    let longest_topic = plan.topic_name(plan.topic_count() - 1).len();
    if args.binary && args.size < payload::BINARY_STAMP_BYTES {
        eprintln!(
            "crier-load: note: --size {} is below the {}-byte binary stamp; sending {} bytes",
            args.size,
            payload::BINARY_STAMP_BYTES,
            payload::BINARY_STAMP_BYTES
        );
    }
    debug_assert!(longest_topic < 256);
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let machine_cores = online_cpus().unwrap_or(cores);
    let total = u64::from(args.subscribers) + u64::from(args.publishers);

    // File descriptors: one per connection plus headroom, or a clear refusal.
    let (soft, hard) =
        sys::raise_nofile_limit().map_err(|e| format!("cannot read RLIMIT_NOFILE: {e}"))?;
    let needed = total + FD_HEADROOM + 4 * threads as u64;
    eprintln!("crier-load: fd limit {soft} (hard {hard}); need {needed} for {total} connections");
    if soft < needed {
        return Err(format!(
            "{total} connections need about {needed} file descriptors but the limit is {soft} (hard {hard}): raise it with `ulimit -n {needed}` or LimitNOFILE={needed} in the systemd unit"
        ));
    }
    // Ephemeral ports: one per connection per source address.
    if let Some(ports) = net::ephemeral_ports() {
        let sources = if net::source_addr(0, total, ws.addr).is_some() {
            u64::from(net::LOOPBACK_SOURCES)
        } else {
            1
        };
        if total > ports * sources {
            return Err(format!(
                "{total} connections to {} need more than the {ports} ephemeral ports x {sources} source address(es) available (net.ipv4.ip_local_port_range)",
                ws.addr
            ));
        }
    }

    let ticks = sys::clock_ticks_per_second();
    let server_before = match args.server_pid {
        Some(pid) => Some(procstat::sample(pid, ticks)?),
        None => None,
    };

    let mode = if args.max {
        PublishMode::Max {
            window: args.window,
        }
    } else {
        PublishMode::Rate(args.rate)
    };
    let cfg = Arc::new(RunConfig {
        plan: plan.clone(),
        ws,
        http,
        binary: args.binary,
        size: args.size,
        mode,
        warmup: args.warmup,
        duration: args.duration,
        connect_rate: args.connect_rate,
        threads,
        total_connections: total,
    });
    let shared = Arc::new(Shared::new(threads, plan.topic_count() as usize));
    let hard_deadline_ns =
        (args.warmup + args.duration + args.grace + HARD_TIMEOUT_EXTRA).as_nanos() as u64;

    // Connection g goes to thread g % threads: subscribers first, then publishers.
    let mut roles: Vec<Vec<(u64, Role)>> = vec![Vec::new(); threads];
    for s in 0..args.subscribers {
        roles[s as usize % threads].push((u64::from(s), Role::Subscriber(s)));
    }
    for p in 0..args.publishers {
        let g = u64::from(args.subscribers) + u64::from(p);
        roles[g as usize % threads].push((g, Role::Publisher(p)));
    }
    let mut handles = Vec::new();
    for (index, roles) in roles.into_iter().enumerate() {
        let worker = Worker::new(index, Arc::clone(&cfg), Arc::clone(&shared), roles)
            .map_err(|e| format!("cannot start worker: {e}"))?;
        let handle = std::thread::Builder::new()
            .name(format!("crier-load-{index}"))
            .spawn(move || worker.run())
            .map_err(|e| format!("cannot spawn worker thread: {e}"))?;
        handles.push(handle);
    }

    let mut progress = progress::Progress::new(std::io::stderr().is_terminal(), total);
    let connect_started_ns = shared.now_ns();
    let max_failed = (f64::from(args.subscribers) * args.max_failed_pct / 100.0).floor() as u64;
    let mut setup_error = None;
    let mut timed_out = false;
    // Phase 1: connect everyone.
    loop {
        std::thread::sleep(Duration::from_millis(20));
        let up = shared.connections_up.load(Relaxed);
        let failed = shared.connections_failed.load(Relaxed);
        progress.tick(&shared, None);
        if shared.publishers_failed.load(Relaxed) > 0
            || failed > max_failed
            || (failed > 0 && up == 0 && failed == total)
        {
            let first = shared
                .first_error
                .lock()
                .expect("lock")
                .clone()
                .unwrap_or_default();
            setup_error = Some(format!(
                "{failed} of {total} connections failed ({} publishers; at most {max_failed} subscriber failures allowed by --max-failed-pct): {first}",
                shared.publishers_failed.load(Relaxed)
            ));
            break;
        }
        if up + failed == total {
            break;
        }
        if shared.now_ns() > hard_deadline_ns {
            timed_out = true;
            setup_error = Some(format!(
                "hard timeout while connecting: {up} of {total} connections up"
            ));
            break;
        }
    }
    if let Some(message) = setup_error {
        shared.stop.store(true, Relaxed);
        for h in handles {
            let _ = h.join();
        }
        progress.clear();
        eprintln!("crier-load: error: {message}");
        return Ok(ExitCode::from(if timed_out {
            EXIT_TIMEOUT
        } else {
            EXIT_SETUP
        }));
    }
    let connected_ns = shared.last_ready_ns.load(Relaxed).max(connect_started_ns);
    let connect_secs = (connected_ns - connect_started_ns) as f64 / 1e9;
    let server_connected = match args.server_pid {
        Some(pid) => Some(procstat::sample(pid, ticks)?),
        None => None,
    };

    // Phase 2: publish on schedule; sample CPU at the edges of the measured window.
    let start_ns = shared.now_ns() + 20_000_000;
    let measure_ns = start_ns + args.warmup.as_nanos() as u64;
    let end_ns = measure_ns + args.duration.as_nanos() as u64;
    shared.start_ns.store(start_ns, Relaxed);
    let mut client_cpu_start = None;
    let mut client_cpu_end = None;
    let mut server_start = None;
    let mut server_end = None;
    let grace_end_ns = end_ns + args.grace.as_nanos() as u64;
    loop {
        std::thread::sleep(Duration::from_millis(10));
        let now = shared.now_ns();
        if client_cpu_start.is_none() && now >= measure_ns {
            client_cpu_start = Some(sys::process_cpu());
            server_start = args
                .server_pid
                .map(|pid| procstat::sample(pid, ticks))
                .transpose()?;
        }
        if client_cpu_end.is_none() && now >= end_ns {
            client_cpu_end = Some(sys::process_cpu());
            server_end = args
                .server_pid
                .map(|pid| procstat::sample(pid, ticks))
                .transpose()?;
        }
        progress.tick(&shared, Some((start_ns, measure_ns, end_ns)));
        if now >= end_ns {
            // Everything published has been delivered to every subscriber of its topic?
            let expected: u64 = shared
                .topic_published
                .iter()
                .zip(&shared.topic_subscribers)
                .map(|(p, s)| p.load(Relaxed) * s.load(Relaxed))
                .sum();
            // Give workers a moment to report their last counters before trusting them.
            let settled = now >= end_ns + 100_000_000;
            if (settled && shared.delivered.load(Relaxed) >= expected) || now >= grace_end_ns {
                break;
            }
        }
        if now > hard_deadline_ns {
            timed_out = true;
            break;
        }
    }
    shared.stop.store(true, Relaxed);
    let results: Vec<_> = handles
        .into_iter()
        .map(|h| h.join().expect("worker thread panicked"))
        .collect();
    progress.clear();
    let measured = Duration::from_nanos(end_ns - measure_ns);
    let client_cpu = client_cpu_end
        .unwrap_or_else(sys::process_cpu)
        .saturating_sub(client_cpu_start.unwrap_or_default());
    let server = match (server_before, server_connected, server_start, server_end) {
        (Some(before), Some(connected), Some(start), Some(end)) => Some(report::ServerSamples {
            before,
            connected,
            start,
            end,
        }),
        _ => None,
    };
    let inputs = report::Inputs {
        args,
        plan: &plan,
        threads,
        cores,
        machine_cores,
        total_connections: total,
        connections_up: shared.connections_up.load(Relaxed),
        connections_failed: shared.connections_failed.load(Relaxed),
        connect_secs,
        measured,
        client_cpu,
        server,
        timed_out,
        first_error: shared.first_error.lock().expect("lock").clone(),
    };
    let report = report::Report::build(&inputs, results);
    if let Some(path) = &args.hdr {
        std::fs::write(path, plot::hdr_percentile_text(&report.histogram))
            .map_err(|e| format!("cannot write {path}: {e}"))?;
    }
    if let Some(path) = &args.plot {
        let title = format!(
            "crier-load: {} subscribers, {} topics, {} publishers, {}, {} B",
            args.subscribers,
            args.topics,
            args.publishers,
            if args.max {
                "max rate".to_string()
            } else {
                format!("{} msg/s", args.rate)
            },
            args.size
        );
        std::fs::write(path, plot::latency_svg(&report.histogram, &title))
            .map_err(|e| format!("cannot write {path}: {e}"))?;
    }
    if args.json {
        println!("{}", report.json());
    } else {
        print!("{}", report.text());
    }
    Ok(ExitCode::from(if timed_out {
        EXIT_TIMEOUT
    } else if report.is_failure() {
        EXIT_FINDINGS
    } else {
        0
    }))
}

mod progress {
    //! The once-a-second status line: rewritten in place on a terminal, appended otherwise.

    use std::io::Write;
    use std::sync::atomic::Ordering::Relaxed;

    use crate::worker::{new_histogram, Shared};

    pub struct Progress {
        tty: bool,
        total: u64,
        last_ns: u64,
        last_published: u64,
        last_delivered: u64,
        drawn: bool,
    }

    impl Progress {
        pub fn new(tty: bool, total: u64) -> Progress {
            Progress {
                tty,
                total,
                last_ns: 0,
                last_published: 0,
                last_delivered: 0,
                drawn: false,
            }
        }

        pub fn tick(&mut self, shared: &Shared, window: Option<(u64, u64, u64)>) {
            let now = shared.now_ns();
            if self.last_ns == 0 {
                self.last_ns = now;
                return;
            }
            if now - self.last_ns < 1_000_000_000 {
                return;
            }
            let secs = (now - self.last_ns) as f64 / 1e9;
            let published = shared.published.load(Relaxed);
            let delivered = shared.delivered.load(Relaxed);
            let mut merged = new_histogram();
            for h in &shared.histograms {
                let _ = merged.add(&*h.lock().expect("lock"));
            }
            let phase = match window {
                None => "connecting",
                Some((_, measure, _)) if now < measure => "warmup",
                Some((_, _, end)) if now < end => "measuring",
                Some(_) => "draining",
            };
            let p99 = if merged.is_empty() {
                "-".to_string()
            } else {
                format!("{:.3} ms", merged.value_at_quantile(0.99) as f64 / 1e6)
            };
            let line = format!(
                "[{phase:>10}] conns {}/{} up ({} failed) | published {:.0}/s | deliveries {:.0}/s | p99 {p99}",
                shared.connections_up.load(Relaxed),
                self.total,
                shared.connections_failed.load(Relaxed),
                (published - self.last_published) as f64 / secs,
                (delivered - self.last_delivered) as f64 / secs,
            );
            let mut err = std::io::stderr().lock();
            if self.tty {
                let _ = write!(err, "\r\x1b[2K{line}");
            } else {
                let _ = writeln!(err, "{line}");
            }
            let _ = err.flush();
            self.drawn = true;
            self.last_ns = now;
            self.last_published = published;
            self.last_delivered = delivered;
        }

        pub fn clear(&mut self) {
            if self.tty && self.drawn {
                eprintln!();
            }
        }
    }
}

/// CPUs online on this machine (not only those this process may use, which `taskset` limits),
/// from `/sys/devices/system/cpu/online` ("0-1", "0,2-3").
fn online_cpus() -> Option<usize> {
    let text = std::fs::read_to_string("/sys/devices/system/cpu/online").ok()?;
    let mut count = 0;
    for range in text.trim().split(',') {
        count += match range.split_once('-') {
            Some((low, high)) => high.parse::<usize>().ok()? - low.parse::<usize>().ok()? + 1,
            None => {
                range.parse::<usize>().ok()?;
                1
            }
        };
    }
    Some(count)
}
