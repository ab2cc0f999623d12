//! Complete WebSocket handshakes per second against a running broker: `--concurrency` threads
//! each open a connection, finish the opening handshake, close it cleanly (Close frame, then
//! wait for the server to end the TCP connection) and start the next, until `--connections`
//! handshakes were attempted. Latency is TCP connect start to a valid 101 response.
//!
//! Networked: results depend on the machine and its load as much as on the broker; run the
//! broker and this program on separate cores (`taskset`) and compare within one run.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use clap::Parser;
use crier_bench::client::{connect, Target};
use crier_bench::quantile_sorted;

#[derive(Debug, Parser)]
#[command(about = "WebSocket handshakes per second against a running broker")]
struct Args {
    /// Broker endpoint (any path the broker upgrades; crier and the peers use /ws).
    #[arg(long, default_value = "ws://127.0.0.1:8080/ws")]
    url: String,
    /// Handshakes to attempt in total.
    #[arg(long, default_value_t = 5000)]
    connections: u64,
    /// Connections in progress at once (one thread each).
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Per-connection timeout for connect, handshake and close, in milliseconds.
    #[arg(long, default_value_t = 5000)]
    timeout_ms: u64,
    /// Print one JSON line instead of the text report.
    #[arg(long)]
    json: bool,
}

fn main() {
    let args = Args::parse();
    let target = match Target::parse(&args.url) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("handshake_rate: {e}");
            std::process::exit(2);
        }
    };
    let timeout = Duration::from_millis(args.timeout_ms);
    let next = AtomicU64::new(0);
    let failed = AtomicU64::new(0);
    let first_error: Mutex<Option<String>> = Mutex::new(None);
    let latencies_ns: Mutex<Vec<u64>> = Mutex::new(Vec::with_capacity(args.connections as usize));
    let start = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..args.concurrency.max(1) {
            scope.spawn(|| {
                let mut mine = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= args.connections {
                        break;
                    }
                    let began = Instant::now();
                    let result = connect(&target, i, timeout).and_then(|client| {
                        mine.push(began.elapsed().as_nanos() as u64);
                        client.close()
                    });
                    if let Err(e) = result {
                        failed.fetch_add(1, Ordering::Relaxed);
                        first_error
                            .lock()
                            .expect("no panics while held")
                            .get_or_insert_with(|| e.to_string());
                    }
                }
                latencies_ns
                    .lock()
                    .expect("no panics while held")
                    .extend(mine);
            });
        }
    });
    let wall = start.elapsed().as_secs_f64();
    let mut lat = latencies_ns.into_inner().expect("threads joined");
    lat.sort_unstable();
    let ok = lat.len() as u64;
    let failed = failed.into_inner();
    let q = |p: f64| quantile_sorted(&lat, p).map_or(0.0, |ns| ns as f64 / 1e3);
    let rate = ok as f64 / wall;
    if args.json {
        println!(
            "{{\"url\":\"{}\",\"connections\":{},\"concurrency\":{},\"ok\":{ok},\"failed\":{failed},\"seconds\":{wall:.6},\"handshakes_per_second\":{rate:.1},\"latency_us\":{{\"p50\":{:.1},\"p90\":{:.1},\"p99\":{:.1},\"max\":{:.1}}}}}",
            args.url, args.connections, args.concurrency, q(0.5), q(0.9), q(0.99), q(1.0)
        );
    } else {
        println!(
            "handshake_rate: {} connections, {} at a time, to {}",
            args.connections, args.concurrency, args.url
        );
        println!(
            "  {ok} handshakes (+ clean close) in {wall:.3} s = {rate:.0} handshakes/s; {failed} failed"
        );
        println!(
            "  connect+handshake µs: p50 {:.1}  p90 {:.1}  p99 {:.1}  max {:.1}",
            q(0.5),
            q(0.9),
            q(0.99),
            q(1.0)
        );
    }
    if let Some(e) = first_error.into_inner().expect("threads joined") {
        eprintln!("handshake_rate: first error: {e}");
    }
    if ok == 0 || failed * 100 > args.connections {
        std::process::exit(1);
    }
}
