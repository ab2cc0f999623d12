//! Scenario: crier with `--max-publish-rate` and `--max-handshake-rate-per-ip`, clients on
//! loopback going over them: WebSocket publishes past the burst get `rate_limited` and the
//! connection stays open, `POST /publish` gets 429 on a keep-alive connection that stays
//! usable, upgrades past the per-address rate get 429 across two shards, and every refusal
//! is counted in /metrics.

mod common;

use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use serde_json::json;

/// The merged value of a counter series in /metrics (`name` or `name{labels}`, no shard).
fn counter(addr: SocketAddr, series: &str) -> u64 {
    let (status, _, body) = http_get(addr, "/metrics");
    assert_eq!(status, 200);
    body.lines()
        .filter(|l| {
            l.strip_prefix(series)
                .is_some_and(|rest| rest.starts_with(' '))
        })
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap() as u64)
        .sum()
}

#[test]
fn websocket_publishes_over_the_rate_are_refused_and_the_connection_stays() {
    let server = start(&["--max-publish-rate", "5"]);
    let addr = server.local_addr();
    let mut client = connect(addr, "/ws");
    for id in 0..12 {
        send_json(
            &mut client,
            json!({"op": "publish", "topic": "t", "data": id, "id": id}),
        );
    }
    let mut acked = 0;
    let mut limited = 0;
    for _ in 0..12 {
        let reply = next_json(&mut client);
        match reply["op"].as_str() {
            Some("ack") => acked += 1,
            Some("error") => {
                assert_eq!(reply["code"], "rate_limited", "{reply}");
                limited += 1;
            }
            _ => panic!("unexpected {reply}"),
        }
    }
    // A burst of one second's worth (5), plus at most one refilled while sending.
    assert!((5..=6).contains(&acked), "acked {acked}");
    assert_eq!(acked + limited, 12);
    // After a pause the bucket has refilled: the same connection publishes again.
    std::thread::sleep(Duration::from_millis(450));
    send_json(
        &mut client,
        json!({"op": "publish", "topic": "t", "data": 1, "id": 99}),
    );
    assert_eq!(next_json(&mut client)["op"], "ack");
    assert_eq!(
        counter(addr, "crier_publish_rate_limited_total"),
        limited as u64
    );
    stop(server, Duration::from_secs(5));
}

#[test]
fn http_publishes_over_the_rate_get_429_and_keep_the_connection() {
    let server = start(&["--max-publish-rate", "3"]);
    let addr = server.local_addr();
    let mut stream = tcp(addr);
    let mut statuses = Vec::new();
    for _ in 0..6 {
        let body = b"{\"n\":1}";
        let head = format!(
            "POST /publish/t HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes()).unwrap();
        stream.write_all(body).unwrap();
        let (status, head, body) = read_response_with_head(&mut stream);
        if status == 429 {
            assert_eq!(header(&head, "retry-after"), Some("1"), "{head}");
            assert_eq!(header(&head, "connection"), None, "kept open: {head}");
            let json: serde_json::Value = serde_json::from_str(&body).unwrap();
            assert_eq!(json["code"], "rate_limited", "{body}");
        }
        statuses.push(status);
    }
    let ok = statuses.iter().filter(|s| **s == 200).count();
    assert!((3..=4).contains(&ok), "{statuses:?}");
    assert!(statuses[4..].contains(&429), "{statuses:?}");
    // The same connection still serves requests.
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n")
        .unwrap();
    assert_eq!(read_response(&mut stream).0, 200);
    let limited = statuses.iter().filter(|s| **s == 429).count() as u64;
    assert_eq!(counter(addr, "crier_publish_rate_limited_total"), limited);
    assert_eq!(
        counter(addr, "crier_refusals_total{reason=\"rate_limited\"}"),
        limited
    );
    stop(server, Duration::from_secs(5));
}

/// Upgrade status of a raw handshake on a fresh connection.
fn upgrade_status(addr: SocketAddr) -> (u16, String) {
    let mut stream = tcp(addr);
    stream
        .write_all(
            b"GET /ws HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
              Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        )
        .unwrap();
    let (status, head, _) = read_response_with_head(&mut stream);
    (status, head)
}

#[test]
fn handshakes_over_the_per_address_rate_get_429_on_every_shard() {
    // Two shards: the kernel spreads the connections, and the limit holds across both.
    let server = start(&["--threads", "2", "--max-handshake-rate-per-ip", "4"]);
    let addr = server.local_addr();
    let statuses: Vec<(u16, String)> = (0..10).map(|_| upgrade_status(addr)).collect();
    let upgraded = statuses.iter().filter(|(s, _)| *s == 101).count();
    assert!((4..=5).contains(&upgraded), "{statuses:?}");
    let refused: Vec<_> = statuses.iter().filter(|(s, _)| *s == 429).collect();
    assert_eq!(upgraded + refused.len(), 10);
    assert_eq!(header(&refused[0].1, "retry-after"), Some("1"));
    // Plain HTTP is not a handshake: health checks from the same address still pass.
    assert_eq!(http_get(addr, "/healthz").0, 200);
    assert_eq!(
        counter(addr, "crier_handshake_rate_limited_total"),
        refused.len() as u64
    );
    // A second later the bucket has refilled.
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(upgrade_status(addr).0, 101);
    stop(server, Duration::from_secs(5));
}
