//! Scenario: more clients connect than `--max-connections` allows. Each one over the cap is
//! answered 503 and closed as soon as it is accepted, before it sends anything, so it holds
//! no descriptor; once a held connection leaves, a new one is served again. Refusals are
//! counted in `crier_connections_refused_total` and `crier_refusals_total{reason}`.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Instant;

use common::*;
use crier::metrics::Metric;
use crier::server::ServerHandle;

/// `crier_refusals_total{reason="<label>"}` (merged over shards).
fn refusals(server: &ServerHandle, label: &str) -> u64 {
    let prefix = format!("crier_refusals_total{{reason=\"{label}\"}} ");
    server
        .metrics_text()
        .lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .and_then(|value| value.parse().ok())
        .unwrap_or_else(|| panic!("no series {prefix:?}"))
}

/// Connects and, without sending a byte, reads what the server says until it closes.
fn silent_client_hears(addr: SocketAddr) -> String {
    let mut stream = tcp(addr);
    let mut answer = Vec::new();
    let started = Instant::now();
    match stream.read_to_end(&mut answer) {
        Ok(_) => {}
        // A reset after the answer still counts as an answer; no answer is a failure below.
        Err(e) if !answer.is_empty() => eprintln!("after the answer: {e}"),
        Err(e) => panic!("no answer within {:?}: {e}", started.elapsed()),
    }
    String::from_utf8_lossy(&answer).into_owned()
}

#[test]
fn over_max_connections_a_silent_client_gets_503_at_once_and_holds_no_descriptor() {
    // A handshake deadline far beyond the test's read timeout: a refusal that waited for the
    // request (or the deadline) would not arrive in time.
    let server = start(&[
        "--threads",
        "2",
        "--max-connections",
        "3",
        "--handshake-timeout",
        "60s",
    ]);
    let addr = server.local_addr();
    let mut held: Vec<Client> = (0..3).map(|_| connect(addr, "/echo")).collect();
    const OVER: u64 = 20;
    for _ in 0..OVER {
        let answer = silent_client_hears(addr);
        assert!(answer.starts_with("HTTP/1.1 503 "), "{answer:?}");
        assert!(answer.contains("Retry-After: 1\r\n"), "{answer:?}");
        assert!(answer.contains("Connection: close\r\n"), "{answer:?}");
    }
    // The refused sockets were closed by the server: only the three held ones are open.
    assert_eq!(server.open_connections(), 3);
    eventually(ANSWER_TIMEOUT, "every refusal is counted", || {
        server.metric(Metric::ConnectionsRefused) == OVER
            && refusals(&server, "max_connections") == OVER
    });
    // A held connection leaves: the next client is served.
    drop(held.pop());
    eventually(
        ANSWER_TIMEOUT,
        "the departed connection is released",
        || server.open_connections() == 2,
    );
    let (status, _, body) = http_get(addr, "/healthz");
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    drop(held);
    stop(server, ANSWER_TIMEOUT);
}

#[test]
fn over_max_connections_a_client_that_already_sent_its_request_still_reads_503() {
    let server = start(&["--max-connections", "1"]);
    let addr = server.local_addr();
    let _held = connect(addr, "/echo");
    for _ in 0..10 {
        let mut stream = tcp(addr);
        let _ = stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer);
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 503 "), "{answer:?}");
    }
    drop(TcpStream::connect(addr));
    stop(server, ANSWER_TIMEOUT);
}

#[test]
fn refused_connections_do_not_pile_up_while_clients_keep_them_open() {
    // 200 clients over the cap that never close their end: each is closed by the server, so
    // the broker's descriptors stay at the cap however long the clients linger.
    let server = start(&["--max-connections", "2", "--handshake-timeout", "60s"]);
    let addr = server.local_addr();
    let _held: Vec<Client> = (0..2).map(|_| connect(addr, "/echo")).collect();
    let lingering: Vec<TcpStream> = (0..200).map(|_| tcp(addr)).collect();
    eventually(ANSWER_TIMEOUT, "all 200 refused", || {
        server.metric(Metric::ConnectionsRefused) == 200
    });
    assert_eq!(server.open_connections(), 2);
    let fds = std::fs::read_dir("/proc/self/fd").unwrap().count();
    // Ours: 200 lingering + 2 held client ends; the server's: 2 held + listeners and pollers.
    // Were the refused sockets kept, the server's 200 ends would be here too.
    assert!(fds < 200 + 2 + 2 + 100, "{fds} descriptors open");
    drop(lingering);
    stop(server, ANSWER_TIMEOUT);
}

/// A plain TCP connection from `source` (any 127.0.0.0/8 address is loopback on Linux).
fn tcp_from(source: &str, addr: SocketAddr) -> TcpStream {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    let source: SocketAddr = format!("{source}:0").parse().unwrap();
    socket.bind(&source.into()).unwrap();
    socket.connect(&addr.into()).unwrap();
    let stream: TcpStream = socket.into();
    stream.set_read_timeout(Some(ANSWER_TIMEOUT)).unwrap();
    stream
}

fn healthz_from(source: &str, addr: SocketAddr) -> String {
    let mut stream = tcp_from(source, addr);
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer).into_owned()
}

#[test]
fn over_max_connections_per_ip_that_address_gets_503_at_accept_and_others_do_not() {
    let server = start(&[
        "--threads",
        "2",
        "--max-connections-per-ip",
        "2",
        "--handshake-timeout",
        "60s",
    ]);
    let addr = server.local_addr();
    // Two connections from 127.0.0.1, on whichever shards the kernel picks.
    let mut held: Vec<Client> = (0..2).map(|_| connect(addr, "/echo")).collect();
    for _ in 0..5 {
        let answer = silent_client_hears(addr);
        assert!(answer.starts_with("HTTP/1.1 503 "), "{answer:?}");
        assert!(answer.contains("from your address"), "{answer:?}");
    }
    // Another address is not limited by 127.0.0.1's connections.
    let answer = healthz_from("127.0.0.2", addr);
    assert!(answer.starts_with("HTTP/1.1 200 "), "{answer:?}");
    eventually(ANSWER_TIMEOUT, "the refusals are counted by reason", || {
        refusals(&server, "max_connections_per_ip") == 5
    });
    assert_eq!(refusals(&server, "max_connections"), 0);
    assert_eq!(server.metric(Metric::ConnectionsRefused), 0);
    // One leaves; 127.0.0.1 may connect again, and the count was released exactly once.
    drop(held.pop());
    eventually(
        ANSWER_TIMEOUT,
        "the departed connection is released",
        || server.open_connections() == 1,
    );
    let answer = healthz_from("127.0.0.1", addr);
    assert!(answer.starts_with("HTTP/1.1 200 "), "{answer:?}");
    eventually(ANSWER_TIMEOUT, "the healthz connection is released", || {
        server.open_connections() == 1
    });
    let mut again = connect(addr, "/echo");
    let answer = silent_client_hears(addr);
    assert!(answer.starts_with("HTTP/1.1 503 "), "{answer:?}");
    again.close(None).unwrap();
    drop(held);
    stop(server, ANSWER_TIMEOUT);
}

#[test]
fn without_max_connections_per_ip_one_address_may_open_many() {
    let server = start(&["--threads", "2"]);
    let addr = server.local_addr();
    let clients: Vec<Client> = (0..50).map(|_| connect(addr, "/echo")).collect();
    assert_eq!(refusals(&server, "max_connections_per_ip"), 0);
    drop(clients);
    stop(server, ANSWER_TIMEOUT);
}
