//! Scenario: clients pipeline thousands of requests on keep-alive connections without reading
//! the answers. crier answers within the `--max-backlog-bytes` budget per connection, then
//! stops parsing and reading that connection until the client reads, so 20 such clients add
//! only a few megabytes to the broker; once the client reads, every answer arrives, in order.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::*;

/// A crier binary running as its own process, so its RSS is its own; killed on drop.
struct Broker {
    child: Child,
    addr: SocketAddr,
}

impl Broker {
    fn spawn(args: &[&str]) -> Broker {
        let mut child = Command::new(env!("CARGO_BIN_EXE_crier"))
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("crier starts");
        let stderr = child.stderr.take().expect("piped stderr");
        let mut lines = BufReader::new(stderr).lines();
        let addr = loop {
            let line = lines
                .next()
                .expect("crier says where it listens")
                .expect("readable stderr");
            if let Some(rest) = line.split(" listening on ").nth(1) {
                let addr = rest.split_whitespace().next().unwrap_or_default();
                break addr.parse().expect("an address");
            }
        };
        // Keep draining stderr so the broker never blocks on a full pipe.
        thread::spawn(move || lines.for_each(drop));
        Broker { child, addr }
    }

    /// Resident set size in bytes, from /proc.
    fn rss_bytes(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("/proc/<pid>/status");
        let kib: u64 = status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .expect("a VmRSS line");
        kib * 1024
    }

    /// `crier_bytes_in_total`, scraped over HTTP (the scrape's own request included).
    fn bytes_in(&self) -> u64 {
        let (status, _, body) = http_get(self.addr, "/metrics");
        assert_eq!(status, 200);
        body.lines()
            .find_map(|line| line.strip_prefix("crier_bytes_in_total "))
            .and_then(|n| n.parse().ok())
            .expect("crier_bytes_in_total")
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const ASSET_REQUEST: &[u8] = b"GET /crier.js HTTP/1.1\r\nHost: x\r\n\r\n";

/// What `http_get(addr, "/metrics")` sends, counted in `crier_bytes_in_total` by the scrape.
const SCRAPE_REQUEST_BYTES: u64 =
    "GET /metrics HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n".len() as u64;

#[test]
fn twenty_connections_pipelining_asset_requests_without_reading_add_little_memory() {
    const CONNECTIONS: usize = 20;
    const REQUESTS: usize = 1_900;
    let broker = Broker::spawn(&["--threads", "2"]);
    let before = broker.rss_bytes();
    let pipeline = ASSET_REQUEST.repeat(REQUESTS);
    let streams: Vec<TcpStream> = (0..CONNECTIONS)
        .map(|_| {
            let mut stream = tcp(broker.addr);
            // The broker may stop reading; a write that cannot finish must not hang the test.
            stream
                .set_write_timeout(Some(Duration::from_secs(2)))
                .unwrap();
            let _ = stream.write_all(&pipeline);
            stream
        })
        .collect();
    // Sample RSS until the broker has read all it is going to read.
    let mut peak = broker.rss_bytes();
    let mut last_in = u64::MAX;
    let mut steady_since = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut scrapes = 0;
    while Instant::now() < deadline {
        peak = peak.max(broker.rss_bytes());
        scrapes += 1;
        let bytes_in = broker.bytes_in() - scrapes * SCRAPE_REQUEST_BYTES;
        if bytes_in != last_in {
            last_in = bytes_in;
            steady_since = Instant::now();
        } else if steady_since.elapsed() > Duration::from_millis(600) {
            break;
        }
        thread::sleep(Duration::from_millis(50));
    }
    peak = peak.max(broker.rss_bytes());
    let added_mb = peak.saturating_sub(before) as f64 / (1 << 20) as f64;
    eprintln!(
        "RSS {:.1} MB before, {:.1} MB at peak: {added_mb:.1} MB added by {CONNECTIONS} x \
         {REQUESTS} pipelined requests; broker read {last_in} bytes",
        before as f64 / (1 << 20) as f64,
        peak as f64 / (1 << 20) as f64,
    );
    assert!(added_mb < 64.0, "{added_mb:.1} MB added");
    drop(streams);
}

/// Each request of the pipeline with the status and body its answer must have.
fn mixed_pipeline(requests: usize) -> (Vec<u8>, Vec<(u16, Vec<u8>)>) {
    let script = crier::assets::find("/crier.js").unwrap().body;
    let page = crier::assets::find("/").unwrap().body;
    let cases: [(&[u8], u16, &[u8]); 4] = [
        (b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", 200, b"ok\n"),
        (ASSET_REQUEST, 200, script),
        (b"GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n", 200, b"ready\n"),
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", 200, page),
    ];
    let mut wire = Vec::new();
    let mut expected = Vec::new();
    for i in 0..requests {
        let (request, status, body) = cases[i % cases.len()];
        wire.extend_from_slice(request);
        expected.push((status, body.to_vec()));
    }
    (wire, expected)
}

/// Reads one response with a Content-Length body, as bytes.
fn read_answer(stream: &mut TcpStream) -> (u16, Vec<u8>) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        stream.read_exact(&mut byte).expect("a response head");
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    let status = head[9..12].parse().unwrap();
    let length: usize = header(&head, "content-length").unwrap().parse().unwrap();
    let mut body = vec![0; length];
    stream.read_exact(&mut body).unwrap();
    (status, body)
}

#[test]
fn a_paused_pipeline_resumes_when_the_client_reads_and_answers_stay_in_order() {
    const REQUESTS: usize = 4_000;
    const BUDGET: usize = 64 * 1024;
    let server = start(&["--threads", "1", "--max-backlog-bytes", "65536"]);
    let addr = server.local_addr();
    let (wire, expected) = mixed_pipeline(REQUESTS);
    let mut stream = tcp(addr);
    let mut writer = stream.try_clone().unwrap();
    let sent = wire.len() as u64;
    let writing = thread::spawn(move || writer.write_all(&wire));
    // Not reading yet: crier answers up to its budget and then reads no further.
    thread::sleep(Duration::from_millis(500));
    let read_while_paused = server.metric(crier::metrics::Metric::BytesIn);
    assert!(
        read_while_paused < sent,
        "crier read all {sent} bytes of the pipeline although nobody read its answers"
    );
    let written_while_paused = server.metric(crier::metrics::Metric::BytesOut);
    for (i, (status, body)) in expected.iter().enumerate() {
        let (got_status, got_body) = read_answer(&mut stream);
        assert_eq!(got_status, *status, "answer {i}");
        assert!(got_body == *body, "answer {i} has the wrong body");
    }
    writing
        .join()
        .unwrap()
        .expect("the whole pipeline was sent");
    assert_eq!(server.metric(crier::metrics::Metric::BytesIn), sent);
    eprintln!(
        "paused at {read_while_paused} of {sent} bytes read, {written_while_paused} bytes \
         written (budget {BUDGET})"
    );
    stop(server, ANSWER_TIMEOUT);
}
