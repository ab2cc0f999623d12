//! One run of the scenario, on fresh connections: start the workers, connect everyone, publish
//! through the warmup and the measured window (sampling CPU at its edges), wait for the last
//! deliveries, stop the workers and total what they hand back.

use std::io::IsTerminal;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::config::Args;
use crate::error::SetupError;
use crate::procstat::{self, ProcSample};
use crate::progress::Progress;
use crate::report::{Context, RunInputs, ServerSamples, Totals};
use crate::setup::Setup;
use crate::sys;
use crate::worker::{Shared, ThreadResult, Worker};

/// Extra time allowed after warmup + duration + grace before the run is cut short
/// (connecting many thousands of connections fits in it).
const HARD_TIMEOUT_EXTRA: Duration = Duration::from_secs(60);
/// Publishing starts this long after everyone is connected, so every worker sees the start
/// before it is due.
const START_DELAY_NS: u64 = 20_000_000;
/// After the window, workers get this long to report their last counters before the main
/// thread trusts "everything expected has arrived".
const SETTLE_NS: u64 = 100_000_000;

/// The measured window's edges (ns since the run's epoch) and what was sampled at them.
#[derive(Debug, Default)]
struct Edges {
    measure_ns: u64,
    end_ns: u64,
    client_cpu_start: Option<Duration>,
    client_cpu_end: Option<Duration>,
    server_start: Option<ProcSample>,
    server_end: Option<ProcSample>,
}

impl Edges {
    /// Samples the client's and the broker's CPU (and its ksoftirqd threads') once each edge
    /// has passed.
    fn sample(&mut self, now: u64, args: &Args, setup: &Setup) -> Result<(), SetupError> {
        if self.client_cpu_start.is_none() && now >= self.measure_ns {
            self.client_cpu_start = Some(sys::process_cpu());
            self.server_start = sample_server(args, setup)?;
        }
        if self.client_cpu_end.is_none() && now >= self.end_ns {
            self.client_cpu_end = Some(sys::process_cpu());
            self.server_end = sample_server(args, setup)?;
        }
        Ok(())
    }

    /// Process CPU between the edges (up to now if the end was never reached).
    fn client_cpu(&self) -> Duration {
        self.client_cpu_end
            .unwrap_or_else(sys::process_cpu)
            .saturating_sub(self.client_cpu_start.unwrap_or_default())
    }
}

fn sample_server(args: &Args, setup: &Setup) -> Result<Option<ProcSample>, SetupError> {
    let softirq = setup.softirq.as_ref();
    let sample = args
        .server_pid
        .map(|pid| procstat::sample(pid, softirq, setup.ticks));
    Ok(sample.transpose()?)
}

/// Runs the scenario once and totals it; `label` (e.g. "run 2/5") prefixes the status line.
pub(crate) fn run_once(
    args: &Args,
    setup: &Setup,
    ctx: &Context<'_>,
    label: Option<String>,
) -> Result<Totals, SetupError> {
    let server_before = sample_server(args, setup)?;
    let shared = Arc::new(Shared::new(
        setup.threads,
        setup.plan().topic_count() as usize,
    ));
    let hard_deadline_ns =
        (args.warmup + args.duration + args.grace + HARD_TIMEOUT_EXTRA).as_nanos() as u64;
    let handles = spawn_workers(args, setup, &shared)?;
    let mut progress = Progress::new(std::io::stderr().is_terminal(), setup.total, label);
    let connect_started_ns = shared.now_ns();
    if let Err(e) = connect(args, setup, &shared, &mut progress, hard_deadline_ns) {
        shared.stop.store(true, Relaxed);
        for h in handles {
            let _ = h.join();
        }
        progress.clear();
        return Err(e);
    }
    let connected_ns = shared.last_ready_ns.load(Relaxed).max(connect_started_ns);
    let server_connected = sample_server(args, setup)?;
    let (edges, timed_out) = publish(args, setup, &shared, &mut progress, hard_deadline_ns)?;
    shared.stop.store(true, Relaxed);
    let results: Vec<ThreadResult> = handles
        .into_iter()
        .map(|h| h.join().expect("worker thread panicked"))
        .collect();
    progress.clear();
    let server = match (
        server_before,
        server_connected,
        edges.server_start,
        edges.server_end,
    ) {
        (Some(before), Some(connected), Some(start), Some(end)) => Some(ServerSamples {
            before,
            connected,
            start,
            end,
        }),
        _ => None,
    };
    let inputs = RunInputs {
        total_connections: setup.total,
        connections_up: shared.connections_up.load(Relaxed),
        connections_failed: shared.connections_failed.load(Relaxed),
        connect_secs: (connected_ns - connect_started_ns) as f64 / 1e9,
        measured: Duration::from_nanos(edges.end_ns - edges.measure_ns),
        client_cpu: edges.client_cpu(),
        server,
        timed_out,
        first_error: shared.first_error(),
    };
    Ok(Totals::from_run(ctx, inputs, results))
}

fn spawn_workers(
    args: &Args,
    setup: &Setup,
    shared: &Arc<Shared>,
) -> Result<Vec<JoinHandle<ThreadResult>>, SetupError> {
    let mut handles = Vec::new();
    for (index, roles) in setup.roles(args).into_iter().enumerate() {
        let worker = Worker::new(index, Arc::clone(&setup.cfg), Arc::clone(shared), roles)
            .map_err(SetupError::StartWorker)?;
        let handle = std::thread::Builder::new()
            .name(format!("crier-load-{index}"))
            .spawn(move || worker.run())
            .map_err(SetupError::SpawnWorker)?;
        handles.push(handle);
    }
    Ok(handles)
}

/// Phase 1: waits until every connection is up or failed; fails the run when more failed
/// than --max-failed-pct allows, a publisher failed, or the hard timeout hit.
fn connect(
    args: &Args,
    setup: &Setup,
    shared: &Shared,
    progress: &mut Progress,
    hard_deadline_ns: u64,
) -> Result<(), SetupError> {
    let total = setup.total;
    let max_failed = (f64::from(args.subscribers) * args.max_failed_pct / 100.0).floor() as u64;
    loop {
        std::thread::sleep(Duration::from_millis(20));
        let up = shared.connections_up.load(Relaxed);
        let failed = shared.connections_failed.load(Relaxed);
        progress.tick(shared, None);
        let publishers_failed = shared.publishers_failed.load(Relaxed);
        if publishers_failed > 0
            || failed > max_failed
            || (failed > 0 && up == 0 && failed == total)
        {
            return Err(SetupError::ConnectionsFailed {
                failed,
                total,
                publishers_failed,
                max_failed,
                first_error: shared.first_error().unwrap_or_default(),
            });
        }
        if up + failed == total {
            return Ok(());
        }
        if shared.now_ns() > hard_deadline_ns {
            return Err(SetupError::ConnectTimeout { up, total });
        }
    }
}

/// Phase 2: starts publishing, samples CPU at the window's edges, and waits until everything
/// published has been delivered or the grace period is over. Returns the edges, and whether
/// the hard timeout cut it short.
fn publish(
    args: &Args,
    setup: &Setup,
    shared: &Shared,
    progress: &mut Progress,
    hard_deadline_ns: u64,
) -> Result<(Edges, bool), SetupError> {
    let start_ns = shared.now_ns() + START_DELAY_NS;
    let measure_ns = start_ns + args.warmup.as_nanos() as u64;
    let end_ns = measure_ns + args.duration.as_nanos() as u64;
    let grace_end_ns = end_ns + args.grace.as_nanos() as u64;
    shared.start_ns.store(start_ns, Relaxed);
    let mut edges = Edges {
        measure_ns,
        end_ns,
        ..Edges::default()
    };
    loop {
        std::thread::sleep(Duration::from_millis(10));
        let now = shared.now_ns();
        edges.sample(now, args, setup)?;
        progress.tick(shared, Some((start_ns, measure_ns, end_ns)));
        if now >= end_ns && (all_delivered(shared, now, end_ns) || now >= grace_end_ns) {
            return Ok((edges, false));
        }
        if now > hard_deadline_ns {
            return Ok((edges, true));
        }
    }
}

/// Everything published has been delivered to every subscriber of its topic (once the
/// workers have had a moment to report their last counters).
fn all_delivered(shared: &Shared, now: u64, end_ns: u64) -> bool {
    let expected: u64 = shared
        .topic_published
        .iter()
        .zip(&shared.topic_subscribers)
        .map(|(p, s)| p.load(Relaxed) * s.load(Relaxed))
        .sum();
    now >= end_ns + SETTLE_NS && shared.delivered.load(Relaxed) >= expected
}
