//! In-process fan-out of one publish to many subscribers, the way a shard does it: the frame is
//! built once (`envelope::message_frame`), `LocalIndex::subscribers(topic)` gives the local
//! subscribers, each gets a clone of the same `Bytes` pushed on its `WriteQueue` (a refcount
//! increment, never a copy) and is listed dirty once; at the end of the "loop turn" each dirty
//! queue is flushed with one vectored write into an in-memory sink.
//!
//! Reports time per delivery (push), time per flush (one queue's vectored write), and heap
//! allocations per delivery and per flush, counted by a wrapper around the system allocator
//! only inside the measured regions: for the first delivery into fresh queues and in steady
//! state (queues already have capacity). A real shard also touches each subscriber's
//! `Connection` (bigger than a bare `WriteQueue`) and makes a real `writev` syscall per flush,
//! so these are lower bounds on its cost.

use std::hint::black_box;
use std::io::{self, IoSlice, Write};
use std::time::Instant;

use bytes::Bytes;
use clap::Parser;
use crier::proto::envelope::message_frame;
use crier::shard::write_queue::{Flushed, WriteQueue};
use crier::topic::LocalIndex;
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

/// One shard's view: the subscriber index, the connections and the dirty list.
struct Shard {
    index: LocalIndex,
    subs: Vec<Subscriber>,
    dirty: Vec<usize>,
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
        let mut index = LocalIndex::default();
        for conn in 0..subscribers {
            let _ = index.subscribe(TOPIC, conn);
        }
        Shard {
            index,
            subs: (0..subscribers).map(|_| Subscriber::default()).collect(),
            dirty: Vec::new(),
            sink: VectoredSink::default(),
        }
    }

    /// `deliver_local`: one clone of the frame per subscriber, each listed dirty once.
    #[inline(never)]
    fn deliver(&mut self, frame: &Bytes) -> u64 {
        let mut delivered = 0;
        for &key in self.index.subscribers(TOPIC) {
            let sub = &mut self.subs[key];
            sub.out.push(frame.clone());
            if !sub.dirty {
                sub.dirty = true;
                self.dirty.push(key);
            }
            delivered += 1;
        }
        delivered
    }

    /// `flush_dirty`: one vectored write per dirty queue.
    #[inline(never)]
    fn flush(&mut self) -> u64 {
        let dirty = std::mem::take(&mut self.dirty);
        for &key in &dirty {
            let sub = &mut self.subs[key];
            sub.dirty = false;
            let (state, _) = sub.out.flush(&mut self.sink).expect("sink never fails");
            debug_assert_eq!(state, Flushed::All);
        }
        let flushed = dirty.len() as u64;
        let mut dirty = dirty;
        dirty.clear();
        self.dirty = dirty;
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

/// One loop turn: `per_turn` publishes (each frame built once and fanned out), then the flush.
#[inline(never)]
fn publish_round(
    shard: &mut Shard,
    data: &[u8],
    seq: &mut u64,
    per_turn: usize,
    timed: bool,
    phases: &mut [Phase; 3],
) {
    let [build, deliver, flush] = phases;
    for _ in 0..per_turn {
        *seq += 1;
        let mut frame = Bytes::new();
        measure(timed, build, || {
            frame = message_frame(TOPIC, *seq, black_box(data));
            1
        });
        measure(timed, deliver, || shard.deliver(&frame));
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
    let mut seq = 0u64;
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
    let mut first = [Phase::default(); 3];
    publish_round(&mut shard, &data, &mut seq, per_turn, timed, &mut first);
    println!("first round, fresh queues:");
    println!("  {}", describe("frame build", &first[0], "publish"));
    println!("  {}", describe("deliver    ", &first[1], "delivery"));
    println!("  {}", describe("flush      ", &first[2], "flush"));

    if let Some(n) = args.iterations {
        let mut phases = [Phase::default(); 3];
        for _ in 0..n {
            publish_round(&mut shard, &data, &mut seq, per_turn, false, &mut phases);
        }
        println!("steady state, {n} rounds:");
        println!("  {}", describe("frame build", &phases[0], "publish"));
        println!("  {}", describe("deliver    ", &phases[1], "delivery"));
        println!("  {}", describe("flush      ", &phases[2], "flush"));
        println!(
            "  sink: {} bytes in {} vectored writes",
            shard.sink.bytes, shard.sink.calls
        );
        return;
    }

    // Warm-up, then the measured runs.
    let mut scratch = [Phase::default(); 3];
    for _ in 0..args.publishes.div_ceil(4) {
        publish_round(&mut shard, &data, &mut seq, per_turn, true, &mut scratch);
    }
    let mut runs: Vec<[Phase; 3]> = Vec::new();
    for _ in 0..args.runs.max(1) {
        let mut phases = [Phase::default(); 3];
        for _ in 0..args.publishes {
            publish_round(&mut shard, &data, &mut seq, per_turn, true, &mut phases);
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
    let mut total = [Phase::default(); 3];
    for r in &runs {
        for i in 0..3 {
            total[i].ops += r[i].ops;
            total[i].allocs.allocs += r[i].allocs.allocs;
            total[i].allocs.reallocs += r[i].allocs.reallocs;
            total[i].allocs.frees += r[i].allocs.frees;
        }
    }
    println!("steady state (queues have capacity):");
    for (i, (label, unit)) in [
        ("frame build", "publish"),
        ("deliver    ", "delivery"),
        ("flush      ", "flush"),
    ]
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
    let deliveries = total[1].ops.max(1) as f64;
    let all_ns: Vec<f64> = {
        let mut v: Vec<f64> = runs
            .iter()
            .map(|r| (r[0].ns + r[1].ns + r[2].ns) as f64 / r[1].ops.max(1) as f64)
            .collect();
        v.sort_by(f64::total_cmp);
        v
    };
    println!(
        "  end to end  : {} ({}) per delivery incl. frame build and flush = {:.1} M deliveries/s; allocs {:.6} per delivery",
        fmt_ns(median_sorted(&all_ns)),
        fmt_ns(all_ns[0]),
        1e3 / median_sorted(&all_ns),
        (total[0].allocs.allocs + total[1].allocs.allocs + total[2].allocs.allocs) as f64
            / deliveries,
    );
}
