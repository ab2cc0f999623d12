//! Shared plumbing for crier's benchmark programs: the timed/fixed-iteration harness, the
//! allocation counter and small statistics helpers. No benchmark logic lives here.
//!
//! Every micro-benchmark runs in one of two modes:
//! - **timed** (default): each case is calibrated to about `--run-ms` per run, run `--runs`
//!   times, and the median and the minimum time per operation are printed with their units;
//! - **fixed** (`--iterations N`): each case runs its operation exactly `N` times with no clock
//!   reads and no calibration, and prints only a checksum. This is the mode to run under
//!   `valgrind --tool=callgrind`, whose instruction counts do not depend on machine load.

pub mod alloc_counter;
pub mod client;

use std::hint::black_box;
use std::time::{Duration, Instant};

/// Command-line flags shared by the micro-benchmarks.
#[derive(Debug, Clone, clap::Args)]
pub struct MicroArgs {
    /// Fixed-iteration mode: run each case exactly N times, no timing (for callgrind).
    #[arg(long)]
    pub iterations: Option<u64>,
    /// Timed mode: measured runs per case; the median and the minimum are reported.
    #[arg(long, default_value_t = 7)]
    pub runs: usize,
    /// Timed mode: target wall time of one run, in milliseconds.
    #[arg(long, default_value_t = 200)]
    pub run_ms: u64,
    /// Run only the cases whose name contains this text.
    #[arg(long)]
    pub case: Option<String>,
}

/// Runs and reports the cases of one benchmark program.
#[derive(Debug)]
pub struct Harness {
    args: MicroArgs,
}

/// What one operation of a case processes, for the throughput column.
#[derive(Debug, Clone, Copy)]
pub struct Per {
    /// The unit of one operation, e.g. "frame", "handshake".
    pub op: &'static str,
    /// Payload bytes one operation processes; `Some` adds an MB/s column (MB = 10^6 bytes).
    pub bytes: Option<u64>,
    /// Operations per closure iteration: the closure's `n` counts batches of this many
    /// operations (e.g. one 64 KiB buffer of frames), and times are divided accordingly.
    pub batch: u64,
}

impl Per {
    /// One operation per closure iteration.
    pub fn op(op: &'static str) -> Per {
        Per {
            op,
            bytes: None,
            batch: 1,
        }
    }

    /// Adds an MB/s column for `bytes` per operation.
    pub fn bytes(self, bytes: u64) -> Per {
        Per {
            bytes: Some(bytes),
            ..self
        }
    }

    /// The closure's iterations are batches of `batch` operations.
    pub fn batch(self, batch: u64) -> Per {
        Per {
            batch: batch.max(1),
            ..self
        }
    }
}

impl Harness {
    /// Prints the mode header. `program` is the binary's name.
    pub fn new(program: &'static str, args: MicroArgs) -> Harness {
        match args.iterations {
            Some(n) => println!("{program}: fixed mode, {n} iterations per case (no timing)"),
            None => println!(
                "{program}: timed mode, {} runs of ~{} ms per case; median (min) per operation",
                args.runs, args.run_ms
            ),
        }
        Harness { args }
    }

    /// Whether the case `name` was selected with `--case`.
    pub fn selected(&self, name: &str) -> bool {
        self.args.case.as_deref().map_or(true, |c| name.contains(c))
    }

    /// Fixed-iteration count, if in that mode.
    pub fn iterations(&self) -> Option<u64> {
        self.args.iterations
    }

    /// Runs one case. `op(n)` performs the operation `n` times and returns a value derived
    /// from the results (kept alive with `black_box` so the work is not optimised away).
    /// Returns the median nanoseconds per operation (timed mode), `None` in fixed mode or when
    /// the case is not selected.
    pub fn case(&self, name: &str, per: Per, mut op: impl FnMut(u64) -> u64) -> Option<f64> {
        if !self.selected(name) {
            return None;
        }
        if let Some(n) = self.args.iterations {
            let checksum = black_box(op(black_box(n)));
            if per.batch > 1 {
                println!(
                    "  {name:<34} {n} x {} {} = {} x {} done (checksum {checksum})",
                    per.batch,
                    per.op,
                    n * per.batch,
                    per.op
                );
            } else {
                println!("  {name:<34} {n} x {} done (checksum {checksum})", per.op);
            }
            return None;
        }
        let n = calibrate(&mut op, Duration::from_millis(self.args.run_ms.max(1)));
        let mut ns_per_op: Vec<f64> = (0..self.args.runs.max(1))
            .map(|_| {
                let start = Instant::now();
                black_box(op(black_box(n)));
                start.elapsed().as_nanos() as f64 / (n * per.batch) as f64
            })
            .collect();
        ns_per_op.sort_by(f64::total_cmp);
        let median = median_sorted(&ns_per_op);
        let min = ns_per_op[0];
        let mut line = format!(
            "  {name:<34} {} ({}) per {}",
            fmt_ns(median),
            fmt_ns(min),
            per.op
        );
        if let Some(bytes) = per.bytes {
            // Best throughput comes from the minimum time.
            let mbps = |ns: f64| bytes as f64 / ns * 1e3;
            line.push_str(&format!("   {:.0} ({:.0}) MB/s", mbps(median), mbps(min)));
        }
        line.push_str(&format!(
            "   [{} runs x {} {}]",
            self.args.runs.max(1),
            n * per.batch,
            per.op
        ));
        println!("{line}");
        Some(median)
    }
}

/// Finds an operation count whose run takes about `target`, after one warm-up call.
fn calibrate(op: &mut impl FnMut(u64) -> u64, target: Duration) -> u64 {
    black_box(op(1));
    let mut n = 1u64;
    loop {
        let start = Instant::now();
        black_box(op(black_box(n)));
        let elapsed = start.elapsed();
        if elapsed >= target / 8 || n >= 1 << 40 {
            let scaled = n as f64 * target.as_secs_f64() / elapsed.as_secs_f64().max(1e-9);
            return (scaled as u64).max(1);
        }
        n *= 2;
    }
}

/// The median of a sorted, non-empty slice.
pub fn median_sorted(sorted: &[f64]) -> f64 {
    let mid = sorted.len() / 2;
    if sorted.len() % 2 == 1 {
        sorted[mid]
    } else {
        (sorted[mid - 1] + sorted[mid]) / 2.0
    }
}

/// `value` nanoseconds with a unit that keeps 3-4 significant digits.
pub fn fmt_ns(ns: f64) -> String {
    if ns < 1_000.0 {
        format!("{ns:.1} ns")
    } else if ns < 1_000_000.0 {
        format!("{:.2} µs", ns / 1e3)
    } else {
        format!("{:.2} ms", ns / 1e6)
    }
}

/// The `q` quantile (0..=1) of sorted samples, nearest-rank.
pub fn quantile_sorted<T: Copy>(sorted: &[T], q: f64) -> Option<T> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Some(sorted[rank - 1])
}
