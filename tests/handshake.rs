//! Scenario: clients open connections with good and bad HTTP upgrade requests, and crier answers
//! each with the status RFC 6455 / RFC 9110 call for, as a well-formed response, then closes.

mod common;

use common::*;

fn upgrade_request(path: &str, extra: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    )
}

#[test]
fn rfc6455_sample_key_gets_the_sample_accept() {
    let server = start(&[]);
    let mut stream = tcp(server.local_addr());
    use std::io::Write;
    stream
        .write_all(upgrade_request("/echo", "").as_bytes())
        .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    use std::io::Read;
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(stream.read(&mut byte).unwrap(), 1);
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    assert!(
        head.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"),
        "{head}"
    );
    stop(server, ANSWER_TIMEOUT);
}

#[test]
fn connection_header_is_a_token_list() {
    let server = start(&[]);
    let request = upgrade_request("/echo", "")
        .replace("Connection: Upgrade", "Connection: keep-alive, Upgrade");
    let reply = raw_exchange_first_line(server.local_addr(), &request);
    assert!(reply.starts_with("HTTP/1.1 101"), "{reply}");
    stop(server, ANSWER_TIMEOUT);
}

fn raw_exchange_first_line(addr: std::net::SocketAddr, request: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = tcp(addr);
    stream.write_all(request.as_bytes()).unwrap();
    let mut buf = [0u8; 256];
    let n = stream.read(&mut buf).unwrap();
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[test]
fn bad_upgrades_get_the_right_status_and_a_closed_connection() {
    let server = start(&["--allowed-origin", "https://good.example"]);
    let addr = server.local_addr();
    let cases = [
        (
            "wrong version",
            upgrade_request("/echo", "").replace("Version: 13", "Version: 8"),
            "426",
        ),
        ("unknown path", upgrade_request("/nope", ""), "404"),
        (
            "not GET",
            upgrade_request("/echo", "").replacen("GET", "POST", 1),
            "405",
        ),
        (
            "no Upgrade header",
            upgrade_request("/echo", "").replace("Upgrade: websocket\r\n", ""),
            "400",
        ),
        (
            "no Connection: upgrade",
            upgrade_request("/echo", "").replace("Connection: Upgrade", "Connection: keep-alive"),
            "400",
        ),
        (
            "short key",
            upgrade_request("/echo", "").replace("dGhlIHNhbXBsZSBub25jZQ==", "c2hvcnQ="),
            "400",
        ),
        (
            "foreign origin",
            upgrade_request("/echo", "Origin: https://evil.example\r\n"),
            "403",
        ),
        (
            "huge head",
            upgrade_request("/echo", &format!("X-Pad: {}\r\n", "a".repeat(9000))),
            "431",
        ),
        (
            "too many headers",
            upgrade_request("/echo", &"X-A: b\r\n".repeat(70)),
            "431",
        ),
        ("garbage", "\x16\x03\x01 hello\r\n\r\n".to_string(), "400"),
    ];
    for (what, request, status) in cases {
        let reply = raw_exchange(addr, request.as_bytes());
        assert!(
            reply.starts_with(&format!("HTTP/1.1 {status} ")),
            "{what}: {reply:?}"
        );
        assert!(
            reply.contains("Content-Length: "),
            "{what}: well-formed: {reply:?}"
        );
        if status == "426" {
            assert!(reply.contains("Sec-WebSocket-Version: 13\r\n"), "{reply}");
        }
    }
    let allowed = raw_exchange_first_line(
        addr,
        &upgrade_request("/echo", "Origin: https://good.example\r\n"),
    );
    assert!(allowed.starts_with("HTTP/1.1 101"), "{allowed}");
    stop(server, ANSWER_TIMEOUT);
}

#[test]
fn only_an_offered_subprotocol_is_selected() {
    let server = start(&[]);
    let addr = server.local_addr();
    let offered = raw_exchange_first_line(
        addr,
        &upgrade_request("/ws", "Sec-WebSocket-Protocol: chat, crier.v1\r\n"),
    );
    assert!(
        offered.contains("Sec-WebSocket-Protocol: crier.v1\r\n"),
        "{offered}"
    );
    let not_offered = raw_exchange_first_line(
        addr,
        &upgrade_request("/ws", "Sec-WebSocket-Protocol: chat\r\n"),
    );
    assert!(not_offered.starts_with("HTTP/1.1 101"), "{not_offered}");
    assert!(
        !not_offered.contains("Sec-WebSocket-Protocol"),
        "{not_offered}"
    );
    let plain = raw_exchange_first_line(addr, &upgrade_request("/ws", ""));
    assert!(!plain.contains("Sec-WebSocket-Protocol"), "{plain}");
    stop(server, ANSWER_TIMEOUT);
}

#[test]
fn health_and_readiness_answer_plain_http() {
    let server = start(&[]);
    let reply = raw_exchange(
        server.local_addr(),
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(reply.starts_with("HTTP/1.1 200 "), "{reply}");
    assert!(reply.ends_with("\r\n\r\nok\n"), "{reply}");
    let reply = raw_exchange(
        server.local_addr(),
        b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(reply.starts_with("HTTP/1.1 200 "), "{reply}");
    stop(server, ANSWER_TIMEOUT);
}

#[test]
fn keep_alive_serves_several_requests_on_one_connection() {
    let server = start(&[]);
    let mut stream = tcp(server.local_addr());
    use std::io::Write;
    for _ in 0..3 {
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        assert_eq!(read_response(&mut stream), (200, "ok\n".to_string()));
    }
    stop(server, ANSWER_TIMEOUT);
}
