//! In-process fan-out of one publish to many subscribers through the real delivery path: the
//! broker core (`crier::broker::Broker` with the local engine, one shard) sequences the
//! publish, builds the frame once, and calls `Outputs::send` for each subscriber in its index;
//! the sink here implements `Outputs` over bare `WriteQueue`s (`WriteQueue::offer`, the budget
//! check included) and a dirty list, as the shard does over its slab. At the end of the "loop
//! turn" each dirty queue is flushed with one vectored write into an in-memory sink.
//!
//! Reports time per publish (sequence + frame build, once), per delivery (the core's loop:
//! budget check and push of a `Bytes` clone), per flush (one queue's vectored write), and heap
//! allocations, counted by a wrapper around the system allocator only inside the measured
//! regions: for the first delivery into fresh queues and in steady state (queues already have
//! capacity). A real shard also touches each subscriber's `Connection` (bigger than a bare
//! `WriteQueue`) and makes a real `writev` syscall per flush, so these are lower bounds.

use std::hint::black_box;
use std::io::{self, IoSlice, Write};
use std::time::Instant;

use bytes::Bytes;
use clap::Parser;
use crier::broker::{
    Broker, CloseReason, ConnId, HttpHistory, HttpPublished, Limits, Outputs, SendKind, SendStatus,
};
use crier::config::SlowConsumerPolicy;
use crier::engine::{InterestFilter, LocalEngine, PayloadRef};
use crier::mesh::{ConnRef, MeshMsg, ReplyTo};
use crier::metrics::Metric;
use crier::proto::envelope::message_frame;
use crier::shard::write_queue::{Flushed, WriteQueue};
use crier_bench::alloc_counter::{AllocSnapshot, CountingAlloc};
use crier_bench::{fmt_ns, median_sorted};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

const TOPIC: &str = "news.sports";

#[derive(Debug, Parser)]
#[command(about = "Fan-out of one prepared frame to N subscribers' write queues")]
struct Args {
    /// Fixed mode for callgrind: this many steady-state publishes, no clock reads.
    #[arg(long)]
    iterations: Option<u64>,
    /// Subscribers of the topic (one queue each).
    #[arg(long, default_value_t = 10_000)]
    subscribers: usize,
    /// Publishes queued per subscriber before each flush (a loop turn's batch).
    #[arg(long, default_value_t = 1)]
    per_turn: usize,
    /// Payload (`data`) bytes per publish.
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// Timed mode: measured runs; median and min are reported.
    #[arg(long, default_value_t = 7)]
    runs: usize,
    /// Timed mode: publishes per run.
    #[arg(long, default_value_t = 200)]
    publishes: u64,
}

/// Accepts everything, like a socket with room, counting bytes and vectored calls.
#[derive(Debug, Default)]
struct VectoredSink {
    bytes: u64,
    calls: u64,
}

impl Write for VectoredSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_vectored(&[IoSlice::new(buf)])
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.calls += 1;
        let n: usize = bufs.iter().map(|b| b.len()).sum();
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The parts of a shard's connection that fan-out touches.
#[derive(Debug, Default)]
struct Subscriber {
    out: WriteQueue,
    dirty: bool,
}

/// The shard's side of the broker core's effects: the connections' queues and the dirty list.
struct Queues {
    subs: Vec<Subscriber>,
    dirty: Vec<usize>,
    /// `--max-backlog-bytes` (the default; never reached here: every turn is flushed).
    max_backlog_bytes: usize,
    deliveries: u64,
}

impl Outputs for Queues {
    #[inline]
    fn send(&mut self, conn: ConnId, frame: Bytes, kind: SendKind) -> SendStatus {
        let sub = &mut self.subs[conn];
        let status = sub.out.offer(frame, kind, self.max_backlog_bytes);
        if matches!(status, SendStatus::Queued | SendStatus::QueuedOverBudget) && !sub.dirty {
            sub.dirty = true;
            self.dirty.push(conn);
        }
        status
    }

    fn to_peer(&mut self, _shard: usize, _msg: MeshMsg) {
        unreachable!("one shard has no peers");
    }

    fn close(&mut self, _conn: ConnId, _why: CloseReason) {
        unreachable!("the budget is never reached");
    }

    fn http_published(&mut self, _conn: ConnRef, _answer: HttpPublished) {}

    fn http_history(&mut self, _conn: ConnRef, _answer: HttpHistory) {}

    fn count(&mut self, metric: Metric, n: u64) {
        if metric == Metric::Deliveries {
            self.deliveries += n;
        }
    }
}

/// One shard's view: the broker core, the connections and the write sink.
struct Shard {
    broker: Broker<LocalEngine>,
    queues: Queues,
    sink: VectoredSink,
}

/// What one phase cost.
#[derive(Debug, Clone, Copy, Default)]
struct Phase {
    ns: u128,
    ops: u64,
    allocs: AllocSnapshot,
}

impl Shard {
    fn new(subscribers: usize) -> Shard {
        let limits = Limits::per_connection(1, SlowConsumerPolicy::Disconnect);
        let filter = std::sync::Arc::new(InterestFilter::new(1));
        let mut broker = Broker::new(0, limits, LocalEngine::new(0, 1, filter));
        let mut queues = Queues {
            subs: (0..subscribers).map(|_| Subscriber::default()).collect(),
            dirty: Vec::new(),
            max_backlog_bytes: 1 << 20,
            deliveries: 0,
        };
        for conn in 0..subscribers {
            broker.open(conn, 1, &[TOPIC.to_string()], &[], &mut queues);
        }
        Shard {
            broker,
            queues,
            sink: VectoredSink::default(),
        }
    }

    /// A publish through the broker core: seq, frame built once, one `send` per subscriber.
    #[inline(never)]
    fn publish(&mut self, data: &[u8]) -> u64 {
        let before = self.queues.deliveries;
        self.broker.publish(
            TOPIC,
            PayloadRef::Json(data),
            ReplyTo::Nobody,
            &mut self.queues,
        );
        self.queues.deliveries - before
    }

    /// `flush_dirty`: one vectored write per dirty queue.
    #[inline(never)]
    fn flush(&mut self) -> u64 {
        let dirty = std::mem::take(&mut self.queues.dirty);
        for &key in &dirty {
            let sub = &mut self.queues.subs[key];
            sub.dirty = false;
            let (state, _) = sub.out.flush(&mut self.sink).expect("sink never fails");
            debug_assert_eq!(state, Flushed::All);
        }
        let flushed = dirty.len() as u64;
        let mut dirty = dirty;
        dirty.clear();
        self.queues.dirty = dirty;
        flushed
    }
}

/// Runs `f` and records its time (if `timed`) and allocations.
fn measure(timed: bool, phase: &mut Phase, f: impl FnOnce() -> u64) {
    let before = AllocSnapshot::now();
    let start = timed.then(Instant::now);
    let ops = f();
    let ns = start.map_or(0, |s| s.elapsed().as_nanos());
    let used = AllocSnapshot::now().since(before);
    phase.ns += ns;
    phase.ops += ops;
    phase.allocs.allocs += used.allocs;
    phase.allocs.reallocs += used.reallocs;
    phase.allocs.frees += used.frees;
    phase.allocs.bytes += used.bytes;
}

/// One loop turn: `per_turn` publishes (each sequenced, its frame built once and fanned out by
/// the broker core), then the flush.
#[inline(never)]
fn publish_round(
    shard: &mut Shard,
    data: &[u8],
    per_turn: usize,
    timed: bool,
    phases: &mut [Phase; 2],
) {
    let [publish, flush] = phases;
    for _ in 0..per_turn {
        measure(timed, publish, || shard.publish(black_box(data)));
    }
    measure(timed, flush, || shard.flush());
}

fn per(ops: u64, count: u64) -> f64 {
    count as f64 / ops.max(1) as f64
}

fn describe(label: &str, phase: &Phase, unit: &str) -> String {
    format!(
        "{label}: {} per {unit}; allocs {:.4}, reallocs {:.4}, frees {:.4} per {unit} ({} ops)",
        if phase.ns > 0 {
            fmt_ns(phase.ns as f64 / phase.ops.max(1) as f64)
        } else {
            "-".to_string()
        },
        per(phase.ops, phase.allocs.allocs),
        per(phase.ops, phase.allocs.reallocs),
        per(phase.ops, phase.allocs.frees),
        phase.ops,
    )
}

fn main() {
    let args = Args::parse();
    let per_turn = args.per_turn.max(1);
    let data = {
        let mut d = vec![b'x'; args.size.max(2)];
        d[0] = b'"';
        *d.last_mut().expect("non-empty") = b'"';
        d
    };
    let mut shard = Shard::new(args.subscribers);
    let timed = args.iterations.is_none();
    println!(
        "fanout: {} subscribers on one topic, {} B data ({} B frame), {} publish(es) per flush; {}",
        args.subscribers,
        data.len(),
        message_frame(TOPIC, 1, &data).len(),
        per_turn,
        match args.iterations {
            Some(n) => format!("fixed mode, {n} steady-state rounds (no timing)"),
            None => format!(
                "timed mode, {} runs of {} rounds; median (min)",
                args.runs, args.publishes
            ),
        }
    );

    // The first round goes into fresh queues (no capacity yet): reported on its own.
    let mut first = [Phase::default(); 2];
    publish_round(&mut shard, &data, per_turn, timed, &mut first);
    println!("first round, fresh queues:");
    println!("  {}", describe("publish", &first[0], "delivery"));
    println!("  {}", describe("flush  ", &first[1], "flush"));

    if let Some(n) = args.iterations {
        let mut phases = [Phase::default(); 2];
        for _ in 0..n {
            publish_round(&mut shard, &data, per_turn, false, &mut phases);
        }
        println!("steady state, {n} rounds:");
        println!("  {}", describe("publish", &phases[0], "delivery"));
        println!("  {}", describe("flush  ", &phases[1], "flush"));
        println!(
            "  sink: {} bytes in {} vectored writes",
            shard.sink.bytes, shard.sink.calls
        );
        return;
    }

    // Warm-up, then the measured runs.
    let mut scratch = [Phase::default(); 2];
    for _ in 0..args.publishes.div_ceil(4) {
        publish_round(&mut shard, &data, per_turn, true, &mut scratch);
    }
    let mut runs: Vec<[Phase; 2]> = Vec::new();
    for _ in 0..args.runs.max(1) {
        let mut phases = [Phase::default(); 2];
        for _ in 0..args.publishes {
            publish_round(&mut shard, &data, per_turn, true, &mut phases);
        }
        runs.push(phases);
    }
    let stat = |i: usize| {
        let mut ns: Vec<f64> = runs
            .iter()
            .map(|r| r[i].ns as f64 / r[i].ops.max(1) as f64)
            .collect();
        ns.sort_by(f64::total_cmp);
        (median_sorted(&ns), ns[0])
    };
    let mut total = [Phase::default(); 2];
    for r in &runs {
        for i in 0..2 {
            total[i].ops += r[i].ops;
            total[i].allocs.allocs += r[i].allocs.allocs;
            total[i].allocs.reallocs += r[i].allocs.reallocs;
            total[i].allocs.frees += r[i].allocs.frees;
        }
    }
    println!("steady state (queues have capacity):");
    for (i, (label, unit)) in [("publish", "delivery"), ("flush  ", "flush")]
        .into_iter()
        .enumerate()
    {
        let (median, min) = stat(i);
        println!(
            "  {label}: {} ({}) per {unit}; allocs {:.4}, reallocs {:.4}, frees {:.4} per {unit} ({} ops)",
            fmt_ns(median),
            fmt_ns(min),
            per(total[i].ops, total[i].allocs.allocs),
            per(total[i].ops, total[i].allocs.reallocs),
            per(total[i].ops, total[i].allocs.frees),
            total[i].ops,
        );
    }
    let deliveries = total[0].ops.max(1) as f64;
    let all_ns: Vec<f64> = {
        let mut v: Vec<f64> = runs
            .iter()
            .map(|r| (r[0].ns + r[1].ns) as f64 / r[0].ops.max(1) as f64)
            .collect();
        v.sort_by(f64::total_cmp);
        v
    };
    println!(
        "  end to end  : {} ({}) per delivery incl. frame build and flush = {:.1} M deliveries/s; allocs {:.6} per delivery",
        fmt_ns(median_sorted(&all_ns)),
        fmt_ns(all_ns[0]),
        1e3 / median_sorted(&all_ns),
        (total[0].allocs.allocs + total[1].allocs.allocs) as f64
            / deliveries,
    );
}
