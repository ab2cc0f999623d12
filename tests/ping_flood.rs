//! Scenario: a client opens a WebSocket on the real `crier` binary, writes 400,000 pings and
//! never reads. The broker answers only the most recent ping it has not answered yet (RFC 6455
//! §5.5.3), so its memory stays flat, and it keeps serving everyone else meanwhile.

mod common;

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use tungstenite::Message;

/// How much the flood may add to the broker's peak RSS. The bound is 64 MB; tighter
/// here because a broker that coalesces pongs adds about nothing (measured +0 kB), while one
/// that queues a pong per ping added 23-30 MB on this machine (~97 bytes per queued pong).
const MAX_RSS_GROWTH_KB: u64 = 12 * 1024;
const PINGS: usize = 400_000;

/// The real binary (its RSS is the broker's alone, not the test harness's).
struct Broker {
    child: Child,
    addr: SocketAddr,
}

impl Broker {
    fn start() -> Broker {
        let mut child = Command::new(env!("CARGO_BIN_EXE_crier"))
            .args(["--listen", "127.0.0.1:0", "--threads", "1"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run the crier binary");
        let stderr = BufReader::new(child.stderr.take().unwrap());
        let mut lines = stderr.lines();
        let addr = loop {
            let line = lines.next().expect("a log line").expect("stderr");
            if let Some(rest) = line.split(" listening on ").nth(1) {
                break rest.split(' ').next().unwrap().parse().unwrap();
            }
        };
        // Keep draining stderr so the broker never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines.map_while(Result::ok) {});
        Broker { child, addr }
    }

    /// A field of /proc/<pid>/status in kB (`VmRSS`, `VmHWM`).
    fn status_kb(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("read /proc/<pid>/status");
        status
            .lines()
            .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("no {field} in /proc status"))
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A WebSocket handshake by hand on a raw socket; returns the socket positioned after the 101.
fn raw_websocket(addr: SocketAddr, path: &str) -> TcpStream {
    let mut stream = tcp(addr);
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(
            stream.read(&mut byte).unwrap(),
            1,
            "closed during handshake"
        );
        head.push(byte[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101"), "{head:?}");
    stream
}

/// A masked client Ping (RFC 6455 §5.2, §5.3) with a short payload.
fn masked_ping(payload: &[u8]) -> Vec<u8> {
    let key = [0x11, 0x22, 0x33, 0x44];
    let mut frame = vec![0x89, 0x80 | payload.len() as u8];
    frame.extend_from_slice(&key);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    frame
}

/// Reads server frames until a Pong carrying `payload`; returns how many Pongs came.
fn pongs_until(stream: &mut TcpStream, payload: &[u8]) -> usize {
    let mut reader = BufReader::with_capacity(1 << 16, stream);
    let mut pongs = 0;
    loop {
        let mut head = [0u8; 2];
        reader
            .read_exact(&mut head)
            .expect("a frame from the broker");
        assert_eq!(head[1] & 0x80, 0, "server frames are unmasked");
        let len = usize::from(head[1] & 0x7F);
        assert!(len <= 125, "control frames only here");
        let mut body = vec![0u8; len];
        reader.read_exact(&mut body).unwrap();
        if head[0] == 0x8A {
            pongs += 1;
            if body == payload {
                return pongs;
            }
        }
    }
}

#[test]
fn a_ping_flood_from_a_client_that_never_reads_adds_little_memory() {
    let broker = Broker::start();
    let addr = broker.addr;
    let mut flooder = raw_websocket(addr, "/echo");
    // Warm up the shard's own buffers, then take the baseline.
    let mut other = connect(addr, "/echo");
    other.send(Message::text("warm")).unwrap();
    assert_eq!(next_data(&mut other), Message::text("warm"));
    let before_kb = broker.status_kb("VmRSS");

    // Empty pings are the worst case: 6 bytes in, 2 bytes of pong payload counted, ~100 held.
    let flood: Vec<u8> = (0..PINGS).flat_map(|_| masked_ping(b"")).collect();
    flooder
        .set_write_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let started = Instant::now();
    let written = match flooder.write_all(&flood) {
        Ok(()) => true,
        // The broker stopped reading us (paused for backlog): also a bounded outcome.
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => false,
        Err(e) => panic!("writing the flood: {e}"),
    };
    println!("flood written: {written} after {:?}", started.elapsed());

    // The broker still serves another client promptly while the flooder hangs on.
    for round in 0..3 {
        let text = format!("still here {round}");
        other.send(Message::text(text.clone())).unwrap();
        assert_eq!(next_data(&mut other), Message::text(text));
    }
    // Every ping read has been handled once the newest one is answered; a paused flooder
    // gets a moment for whatever the broker still had in hand.
    let pongs = if written {
        flooder.write_all(&masked_ping(b"last")).unwrap();
        Some(pongs_until(&mut flooder, b"last"))
    } else {
        std::thread::sleep(Duration::from_millis(500));
        None
    };
    let peak_kb = broker.status_kb("VmHWM");
    let growth_kb = peak_kb.saturating_sub(before_kb);
    println!("broker RSS {before_kb} kB before, peak {peak_kb} kB: +{growth_kb} kB");
    assert!(
        growth_kb < MAX_RSS_GROWTH_KB,
        "{PINGS} pings grew the broker by {growth_kb} kB"
    );
    if let Some(pongs) = pongs {
        // Every ping was read, so the answers were coalesced, and the newest one answered.
        println!("{pongs} pongs answered {} pings", PINGS + 1);
        assert!(pongs < PINGS / 2, "{pongs} pongs for {PINGS} pings");
    }
}
