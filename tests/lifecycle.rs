//! Scenario: the runtime's deadlines and life cycle on real sockets: a slowloris client is cut
//! off at the handshake deadline, idle WebSockets are pinged, a graceful shutdown sends 1001 to
//! every client and ends, connections land on every shard, and the connection cap answers 503.

mod common;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use common::*;
use crier::metrics::Metric;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::Message;

#[test]
fn a_slowloris_client_is_cut_off_at_the_handshake_deadline() {
    let server = start(&["--handshake-timeout", "300ms"]);
    let mut stream = tcp(server.local_addr());
    let started = Instant::now();
    stream
        .write_all(b"GET /echo HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    let mut buf = [0u8; 64];
    // Keep trickling header bytes; the server must close us anyway.
    loop {
        std::thread::sleep(Duration::from_millis(50));
        if stream.write_all(b"X-Slow: y\r\n").is_err() {
            break;
        }
        stream
            .set_read_timeout(Some(Duration::from_millis(1)))
            .unwrap();
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(_) => panic!("no response is owed to a request that never finished"),
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => break,
        }
        assert!(started.elapsed() < ANSWER_TIMEOUT, "never cut off");
    }
    assert!(started.elapsed() >= Duration::from_millis(300));
    eventually(ANSWER_TIMEOUT, "the timeout is counted", || {
        server.metric(Metric::HandshakeTimeout) == 1
    });
    stop(server, ANSWER_TIMEOUT);
}

#[test]
fn an_idle_websocket_is_pinged_and_a_silent_one_closed() {
    let server = start(&["--ping-interval", "200ms"]);
    let mut client = connect(server.local_addr(), "/echo");
    // tungstenite answers pings by itself when we read; prove one arrives.
    match client.read().unwrap() {
        Message::Ping(_) => {}
        other => panic!("expected a ping, got {other:?}"),
    }
    client.flush().unwrap(); // sends the queued pong
                             // A client that stops answering entirely is closed with 1001 after another interval.
    let mut silent = tcp(server.local_addr());
    silent
        .write_all(
            b"GET /echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
              Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        )
        .unwrap();
    let mut everything = Vec::new();
    let _ = silent.read_to_end(&mut everything);
    let text = String::from_utf8_lossy(&everything);
    assert!(text.starts_with("HTTP/1.1 101"));
    assert!(
        everything.windows(2).any(|w| w == [0x89, 0x00]),
        "pinged first"
    );
    assert!(
        everything.windows(4).any(|w| w == [0x88, 0x0e, 0x03, 0xe9]),
        "then closed with 1001"
    );
    eventually(ANSWER_TIMEOUT, "the idle close is counted", || {
        server.metric(Metric::IdleTimeouts) >= 1
    });
    stop(server, ANSWER_TIMEOUT);
}

#[test]
fn graceful_shutdown_says_going_away_to_every_client() {
    let server = start(&["--threads", "2", "--drain-timeout", "2s"]);
    let addr = server.local_addr();
    let mut clients: Vec<_> = (0..20).map(|_| connect(addr, "/echo")).collect();
    eventually(ANSWER_TIMEOUT, "all connected", || {
        server.open_connections() == 20
    });
    let reader = std::thread::spawn(move || {
        for client in &mut clients {
            loop {
                match client.read() {
                    Ok(Message::Close(Some(frame))) => {
                        assert_eq!(frame.code, CloseCode::Away);
                        break;
                    }
                    Ok(_) => {}
                    Err(e) => panic!("expected close 1001, got {e}"),
                }
            }
        }
        clients
    });
    let started = Instant::now();
    stop(server, Duration::from_secs(5));
    let clients = reader.join().unwrap();
    assert_eq!(clients.len(), 20);
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(tcp_refused(addr), "no longer accepting");
}

fn tcp_refused(addr: std::net::SocketAddr) -> bool {
    std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err()
}

#[test]
fn connections_land_on_every_shard() {
    let server = start(&["--threads", "2"]);
    let addr = server.local_addr();
    let clients: Vec<_> = (0..200).map(|_| connect(addr, "/echo")).collect();
    eventually(ANSWER_TIMEOUT, "all counted", || {
        server.metric(Metric::WebSocketsOpen) == 200
    });
    for shard in 0..2 {
        let here = server.shard_metric(shard, Metric::WebSocketsOpen);
        assert!(here > 0, "shard {shard} got no connections");
    }
    drop(clients);
    stop(server, ANSWER_TIMEOUT);
}

#[test]
fn over_the_connection_cap_requests_get_503() {
    let server = start(&["--max-connections", "3"]);
    let addr = server.local_addr();
    let _held: Vec<_> = (0..3).map(|_| connect(addr, "/echo")).collect();
    let reply = raw_exchange(
        addr,
        b"GET /echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    );
    assert!(reply.starts_with("HTTP/1.1 503 "), "{reply}");
    eventually(ANSWER_TIMEOUT, "the refusal is counted", || {
        server.metric(Metric::ConnectionsRefused) == 1
    });
    stop(server, ANSWER_TIMEOUT);
}

#[test]
fn a_second_server_on_a_busy_address_refuses_to_start() {
    let first = start(&[]);
    let addr = first.local_addr().to_string();
    let second = config(&[]).with_listen(addr.parse().unwrap());
    let error = crier::server::start(second).expect_err("address in use");
    assert_eq!(error.kind(), std::io::ErrorKind::AddrInUse);
    assert!(error.to_string().contains("already in use"), "{error}");
    // The first server was not disturbed.
    let mut client = connect(first.local_addr(), "/echo");
    client.send(Message::text("still here")).unwrap();
    assert_eq!(next_data(&mut client), Message::text("still here"));
    stop(first, ANSWER_TIMEOUT);
}

#[test]
fn an_idle_keep_alive_connection_is_closed_but_not_counted_as_a_handshake_failure() {
    let server = start(&["--handshake-timeout", "300ms"]);
    let mut stream = tcp(server.local_addr());
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    assert_eq!(read_response(&mut stream), (200, "ok\n".to_string()));
    let mut rest = Vec::new();
    let _ = stream.read_to_end(&mut rest);
    assert!(rest.is_empty(), "closed without another response");
    eventually(ANSWER_TIMEOUT, "the idle close is counted", || {
        server.metric(Metric::HttpIdleClosed) == 1
    });
    assert_eq!(server.metric(Metric::HandshakeTimeout), 0);
    stop(server, ANSWER_TIMEOUT);
}
