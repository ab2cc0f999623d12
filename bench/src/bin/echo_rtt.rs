//! Round trips per second against a running broker. Default: crier's `/echo` endpoint, binary
//! frames echoed back. `--pubsub`: each connection subscribes to its own topic
//! (`/ws?topic=rtt-<i>`) and publishes to it, so the round trip is publish → fan-out → delivery
//! (works against any broker speaking crier protocol v1, e.g. the peers in `bench/peers/`).
//!
//! With `--pipeline 1` (default) each connection is sequential: send, wait for the answer,
//! send the next. With `--pipeline K` each connection keeps K messages in flight, so the
//! aggregate messages/s shows throughput and the RTT includes queueing. One thread per
//! connection, blocking sockets; RTT is measured per message from its send to its answer.

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use clap::Parser;
use crier::proto::frame::OpCode;
use crier_bench::client::{connect, decode_all, Target};
use crier_bench::quantile_sorted;

#[derive(Debug, Parser)]
#[command(about = "Echo (or publish-to-self) round trips per second and RTT percentiles")]
struct Args {
    /// Broker endpoint: `/echo` for echo; with `--pubsub` the path is replaced by `/ws?topic=…`.
    #[arg(long, default_value = "ws://127.0.0.1:8080/echo")]
    url: String,
    /// Connections, one thread each.
    #[arg(long, default_value_t = 1)]
    connections: usize,
    /// Messages in total, split evenly over the connections.
    #[arg(long, default_value_t = 100_000)]
    messages: u64,
    /// Payload bytes per message (at least 24: a sequence number and a connection index in hex).
    #[arg(long, default_value_t = 32)]
    size: usize,
    /// Messages in flight per connection.
    #[arg(long, default_value_t = 1)]
    pipeline: usize,
    /// Round trip through pub/sub (subscribe to an own topic, publish to it) instead of /echo.
    #[arg(long)]
    pubsub: bool,
    /// Socket timeout in milliseconds (a stuck broker fails the run instead of hanging).
    #[arg(long, default_value_t = 10_000)]
    timeout_ms: u64,
    /// Print one JSON line instead of the text report.
    #[arg(long)]
    json: bool,
}

/// The frame a connection sends for message `n`, and the bytes its answer must contain.
struct Message {
    opcode: OpCode,
    payload: Vec<u8>,
    expect: Vec<u8>,
}

fn message(args: &Args, conn: usize, n: u64) -> Message {
    // Hex digits only, so the same bytes are valid inside a JSON string.
    let mut data = format!("{n:016x}{conn:08x}").into_bytes();
    data.resize(args.size.max(24), b'.');
    if args.pubsub {
        let payload = format!(
            "{{\"op\":\"publish\",\"topic\":\"rtt-{conn}\",\"data\":\"{}\"}}",
            String::from_utf8_lossy(&data)
        )
        .into_bytes();
        Message {
            opcode: OpCode::Text,
            payload,
            expect: data,
        }
    } else {
        Message {
            opcode: OpCode::Binary,
            payload: data.clone(),
            expect: data,
        }
    }
}

/// Runs one connection's share; returns its RTTs in nanoseconds.
fn run_connection(
    args: &Args,
    target: &Target,
    conn: usize,
    count: u64,
) -> Result<Vec<u64>, String> {
    let timeout = Duration::from_millis(args.timeout_ms);
    let target = if args.pubsub {
        target.with_path(&format!("/ws?topic=rtt-{conn}"))
    } else {
        target.clone()
    };
    let mut client = connect(&target, conn as u64, timeout).map_err(|e| e.to_string())?;
    let mut rtts = Vec::with_capacity(count as usize);
    let mut in_flight: VecDeque<(Instant, Vec<u8>)> = VecDeque::new();
    let mut out = Vec::new();
    let mut sent = 0u64;
    let mut received = 0u64;
    let mut error: Option<String> = None;
    let mut buf = vec![0u8; 64 * 1024];
    let mut input = std::mem::take(&mut client.leftover);

    let send_more = |client: &mut crier_bench::client::Client,
                     in_flight: &mut VecDeque<(Instant, Vec<u8>)>,
                     sent: &mut u64,
                     out: &mut Vec<u8>|
     -> Result<(), String> {
        while *sent < count && in_flight.len() < args.pipeline.max(1) {
            let m = message(args, conn, *sent);
            client.encode(m.opcode, &m.payload, out);
            in_flight.push_back((Instant::now(), m.expect));
            *sent += 1;
        }
        if !out.is_empty() {
            client.stream.write_all(out).map_err(|e| e.to_string())?;
            out.clear();
        }
        Ok(())
    };
    send_more(&mut client, &mut in_flight, &mut sent, &mut out)?;
    while received < count {
        if input.is_empty() {
            let n = client.stream.read(&mut buf).map_err(|e| e.to_string())?;
            if n == 0 {
                return Err("broker closed the connection".into());
            }
            input.extend_from_slice(&buf[..n]);
        }
        let now_answers = {
            let mut answers = 0u64;
            decode_all(&mut client.session, &mut input, |is_text, payload| {
                if args.pubsub && !(is_text && contains(payload, b"\"op\":\"message\"")) {
                    return; // acks and other notices are not answers
                }
                let Some((sent_at, expect)) = in_flight.pop_front() else {
                    error.get_or_insert_with(|| "an answer nobody asked for".into());
                    return;
                };
                let ok = if args.pubsub {
                    contains(payload, &expect)
                } else {
                    payload == expect.as_slice()
                };
                if !ok {
                    error.get_or_insert_with(|| "answer does not match the message sent".into());
                }
                rtts.push(sent_at.elapsed().as_nanos() as u64);
                answers += 1;
            })
            .map_err(|e| e.to_string())?;
            answers
        };
        input.clear();
        if let Some(e) = error.take() {
            return Err(e);
        }
        received += now_answers;
        send_more(&mut client, &mut in_flight, &mut sent, &mut out)?;
    }
    let _ = client.close();
    Ok(rtts)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn main() {
    let args = Args::parse();
    let target = match Target::parse(&args.url) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("echo_rtt: {e}");
            std::process::exit(2);
        }
    };
    let connections = args.connections.max(1);
    let per_conn = args.messages / connections as u64;
    let all: Mutex<Vec<u64>> = Mutex::new(Vec::with_capacity(args.messages as usize));
    let errors: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let start = Instant::now();
    std::thread::scope(|scope| {
        for conn in 0..connections {
            let (args, target, all, errors) = (&args, &target, &all, &errors);
            scope.spawn(move || match run_connection(args, target, conn, per_conn) {
                Ok(rtts) => all.lock().expect("no panics while held").extend(rtts),
                Err(e) => errors
                    .lock()
                    .expect("no panics while held")
                    .push(format!("connection {conn}: {e}")),
            });
        }
    });
    let wall = start.elapsed().as_secs_f64();
    let mut rtts = all.into_inner().expect("threads joined");
    rtts.sort_unstable();
    let errors = errors.into_inner().expect("threads joined");
    let q = |p: f64| quantile_sorted(&rtts, p).map_or(0.0, |ns| ns as f64 / 1e3);
    let rate = rtts.len() as f64 / wall;
    let mode = if args.pubsub { "pubsub" } else { "echo" };
    if args.json {
        println!(
            "{{\"url\":\"{}\",\"mode\":\"{mode}\",\"connections\":{connections},\"pipeline\":{},\"size\":{},\"round_trips\":{},\"failed_connections\":{},\"seconds\":{wall:.6},\"round_trips_per_second\":{rate:.1},\"rtt_us\":{{\"p50\":{:.1},\"p90\":{:.1},\"p99\":{:.1},\"p99_9\":{:.1},\"max\":{:.1}}}}}",
            args.url, args.pipeline, args.size, rtts.len(), errors.len(), q(0.5), q(0.9), q(0.99), q(0.999), q(1.0)
        );
    } else {
        println!(
            "echo_rtt ({mode}): {connections} connection(s) x {per_conn} messages of {} B, pipeline {} per connection, to {}",
            args.size.max(24), args.pipeline.max(1), args.url
        );
        println!(
            "  {} round trips in {wall:.3} s = {rate:.0} round trips/s (all connections)",
            rtts.len()
        );
        println!(
            "  RTT µs: p50 {:.1}  p90 {:.1}  p99 {:.1}  p99.9 {:.1}  max {:.1}",
            q(0.5),
            q(0.9),
            q(0.99),
            q(0.999),
            q(1.0)
        );
    }
    for e in &errors {
        eprintln!("echo_rtt: {e}");
    }
    if !errors.is_empty() || rtts.is_empty() {
        std::process::exit(1);
    }
}
