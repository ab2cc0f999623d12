//! Scenario: a client sends a body (Content-Length, chunked, or both framings at once) on every
//! route that takes none, the WebSocket upgrades included, hoping the body is read as a second
//! request (request smuggling): crier answers 400 once and closes, the body is never parsed as
//! a request, and a `POST /publish/admin` hidden in such a body publishes nothing.

mod common;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use crier::metrics::Metric;
use serde_json::json;
use tungstenite::Message;

const UPGRADE_FIELDS: &str = "Upgrade: websocket\r\nConnection: Upgrade\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n";

/// Every route that takes no body, as (method and path, extra header fields).
const BODYLESS: &[(&str, &str)] = &[
    ("GET /healthz", ""),
    ("GET /readyz", ""),
    ("GET /metrics", ""),
    ("GET /", ""),
    ("GET /index.html", ""),
    ("GET /crier.js", ""),
    ("GET /nowhere", ""),
    ("GET /ws", UPGRADE_FIELDS),
    ("GET /ws?topic=a", UPGRADE_FIELDS),
    ("GET /echo", UPGRADE_FIELDS),
];

/// A complete request that must never be acted on: it is only ever sent as a body.
fn smuggled(topic: &str) -> String {
    let body = r#"{"pwned":true}"#;
    format!(
        "POST /publish/{topic} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// The three framings of `body`: (name, header fields, bytes after the head).
fn framings(body: &str) -> [(&'static str, String, String); 3] {
    let chunked = format!("{:x}\r\n{body}\r\n0\r\n\r\n", body.len());
    [
        (
            "content-length",
            format!("Content-Length: {}\r\n", body.len()),
            body.to_string(),
        ),
        (
            "chunked",
            "Transfer-Encoding: chunked\r\n".to_string(),
            chunked.clone(),
        ),
        (
            "both",
            format!(
                "Content-Length: {}\r\nTransfer-Encoding: chunked\r\n",
                chunked.len()
            ),
            chunked,
        ),
    ]
}

/// Sends `request` and reads until the server closes; returns every byte it answered.
fn exchange(addr: SocketAddr, request: &str) -> String {
    raw_exchange(addr, request.as_bytes())
}

fn assert_one_400(what: &str, answer: &str) {
    assert!(
        answer.starts_with("HTTP/1.1 400 "),
        "{what}: expected 400, got {answer:?}"
    );
    assert_eq!(
        answer.matches("HTTP/1.1 ").count(),
        1,
        "{what}: the body was answered as a request: {answer:?}"
    );
    assert!(
        answer.contains("Connection: close\r\n"),
        "{what}: {answer:?}"
    );
}

#[test]
fn a_body_on_a_route_that_takes_none_is_400_and_never_a_second_request() {
    let server = start(&["--threads", "2"]);
    let addr = server.local_addr();
    let hidden = "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
    for (request_line, fields) in BODYLESS {
        for (framing, framing_fields, body) in framings(hidden) {
            let request =
                format!("{request_line} HTTP/1.1\r\nHost: x\r\n{fields}{framing_fields}\r\n{body}");
            assert_one_400(
                &format!("{request_line} with {framing}"),
                &exchange(addr, &request),
            );
        }
    }
    stop(server, ANSWER_TIMEOUT);
}

#[test]
fn both_framings_on_the_publish_route_are_400() {
    let server = start(&[]);
    let addr = server.local_addr();
    let [.., (_, fields, body)] = framings(r#"{"a":1}"#);
    let request = format!(
        "POST /publish/t HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n{fields}\r\n{body}"
    );
    assert_one_400("publish with both framings", &exchange(addr, &request));
    stop(server, ANSWER_TIMEOUT);
}

#[test]
fn a_publish_smuggled_in_a_healthz_body_publishes_nothing() {
    let server = start(&["--threads", "2"]);
    let addr = server.local_addr();
    let mut admin = connect(addr, "/ws");
    subscribe(&mut admin, "admin");
    for (framing, fields, body) in framings(&smuggled("admin")) {
        let request = format!("GET /healthz HTTP/1.1\r\nHost: x\r\n{fields}\r\n{body}");
        assert_one_400(
            &format!("smuggling with {framing}"),
            &exchange(addr, &request),
        );
    }
    // The first thing `admin` hears is this legitimate publish, with seq 1: nothing came
    // before it.
    let (status, _) = http_publish(addr, "admin", "application/json", br#"{"legit":1}"#);
    assert_eq!(status, 200);
    match next_data(&mut admin) {
        Message::Text(text) => {
            let message: serde_json::Value = serde_json::from_str(&text).unwrap();
            assert_eq!(message["data"], json!({"legit": 1}), "{text}");
            assert_eq!(message["seq"], 1, "{text}");
        }
        other => panic!("unexpected {other:?}"),
    }
    // Shards publish their counters at the end of a loop turn, maybe after the delivery.
    eventually(ANSWER_TIMEOUT, "one publish counted", || {
        server.metric(Metric::MessagesPublished) == 1
    });
    assert_eq!(server.metric(Metric::MessagesPublished), 1);
    stop(server, ANSWER_TIMEOUT);
}

#[test]
fn content_length_zero_on_a_bodyless_route_keeps_the_connection() {
    let server = start(&[]);
    let mut stream = tcp(server.local_addr());
    for _ in 0..3 {
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
            .unwrap();
        assert_eq!(read_response(&mut stream), (200, "ok\n".to_string()));
    }
    stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut byte = [0u8; 1];
    assert!(
        stream.read(&mut byte).is_err(),
        "still open, nothing more to say"
    );
    stop(server, ANSWER_TIMEOUT);
}
