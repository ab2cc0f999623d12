//! Scenario: one client sends one request of each kind crier refuses (bad syntax, bad framing,
//! a body where none is taken, bad upgrades, wrong methods and paths, bad topics, bad HTTP
//! publishes) and `crier_refusals_total{reason}` counts exactly those, each under its own
//! reason; failed HTTP publishes are not counted as handshake failures.

mod common;

use std::time::Instant;

use common::*;
use crier::metrics::Metric;
use crier::proto::http_refusal::RefusalReason;
use crier::server::ServerHandle;

const UPGRADE: &str = "Upgrade: websocket\r\nConnection: Upgrade\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";

/// `crier_refusals_total{reason="<label>"}` as exported (merged over shards).
fn refusals(server: &ServerHandle, label: &str) -> u64 {
    let prefix = format!("crier_refusals_total{{reason=\"{label}\"}} ");
    let text = server.metrics_text();
    text.lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .and_then(|value| value.parse().ok())
        .unwrap_or_else(|| panic!("no series {prefix:?}"))
}

fn publish_request(target: &str, content_type: &str, body: &str) -> String {
    format!(
        "POST {target} HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

#[test]
fn every_refusal_is_counted_once_under_its_reason() {
    let server = start(&[
        "--threads",
        "2",
        "--max-message-bytes",
        "100",
        "--max-subscriptions-per-connection",
        "1",
        "--allowed-origin",
        "https://good.example",
    ]);
    let addr = server.local_addr();
    let cases: Vec<(String, &str, &str)> = vec![
        (
            "GET / HTTP/1.1\r\nHo st: a\r\n\r\n".into(),
            "400",
            "malformed",
        ),
        (
            format!(
                "GET / HTTP/1.1\r\nHost: x\r\nX: {}\r\n\r\n",
                "b".repeat(9000)
            ),
            "431",
            "head_too_large",
        ),
        (
            "GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\
             Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
                .into(),
            "400",
            "framing",
        ),
        (
            "GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello".into(),
            "400",
            "body_not_allowed",
        ),
        (
            publish_request("/publish/t", "application/json", &"1".repeat(101)),
            "413",
            "body_too_large",
        ),
        (
            "GET /ws HTTP/1.1\r\nHost: x\r\n\r\n".into(),
            "400",
            "bad_handshake",
        ),
        (
            format!(
                "GET /ws HTTP/1.1\r\nHost: x\r\n{UPGRADE}Sec-WebSocket-Version: 13\r\n\
                 Origin: https://evil.example\r\n\r\n"
            ),
            "403",
            "origin",
        ),
        (
            format!("GET /ws HTTP/1.1\r\nHost: x\r\n{UPGRADE}Sec-WebSocket-Version: 8\r\n\r\n"),
            "426",
            "websocket_version",
        ),
        (
            "DELETE /healthz HTTP/1.1\r\nHost: x\r\n\r\n".into(),
            "405",
            "method_not_allowed",
        ),
        (
            "GET /publish/t HTTP/1.1\r\nHost: x\r\n\r\n".into(),
            "405",
            "method_not_allowed",
        ),
        (
            "GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n".into(),
            "404",
            "not_found",
        ),
        (
            format!(
                "GET /ws?topic=%zz HTTP/1.1\r\nHost: x\r\n{UPGRADE}\
                 Sec-WebSocket-Version: 13\r\n\r\n"
            ),
            "400",
            "invalid_topic",
        ),
        (
            publish_request("/publish/a%20b", "application/json", "1"),
            "400",
            "invalid_topic",
        ),
        (
            format!(
                "GET /ws?topic=a&topic=b HTTP/1.1\r\nHost: x\r\n{UPGRADE}\
                 Sec-WebSocket-Version: 13\r\n\r\n"
            ),
            "400",
            "too_many_topics",
        ),
        (
            publish_request("/publish/t", "text/plain", "1"),
            "415",
            "unsupported_media_type",
        ),
        (
            publish_request("/publish/t", "application/json", "{not json"),
            "400",
            "invalid_json",
        ),
    ];
    for (request, status, reason) in &cases {
        let answer = raw_exchange(addr, request.as_bytes());
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {status} ")),
            "{reason}: {status} expected, got {answer:?}"
        );
    }
    // Shards publish their counters once per loop turn: wait until every count is right.
    let deadline = Instant::now() + ANSWER_TIMEOUT;
    loop {
        let wrong: Vec<String> = RefusalReason::ALL
            .iter()
            .filter_map(|reason| {
                let label = reason.label();
                let expected = cases.iter().filter(|(_, _, r)| *r == label).count() as u64;
                let actual = refusals(&server, label);
                (actual != expected).then(|| format!("{label}: {actual}, expected {expected}"))
            })
            .collect();
        if wrong.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "wrong counts:\n{}",
            wrong.join("\n")
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // The older handshake counters see the refusals that were not HTTP publishes, only.
    for (metric, expected) in [
        // malformed, framing, body_not_allowed, bad_handshake, ?topic=%zz, too_many_topics
        (Metric::HandshakeBadRequest, 6),
        (Metric::HandshakeTooLarge, 1),
        (Metric::HandshakeMethod, 1),
        (Metric::HandshakeNotFound, 1),
        (Metric::HandshakeOrigin, 1),
        (Metric::HandshakeVersion, 1),
    ] {
        assert_eq!(server.metric(metric), expected, "{metric:?}");
    }
    stop(server, ANSWER_TIMEOUT);
}
