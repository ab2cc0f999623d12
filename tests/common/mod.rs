//! Shared helpers for the loopback integration tests: start a server on port 0, connect an
//! independent WebSocket client (tungstenite), speak raw HTTP, and never hang (every socket has
//! a read timeout, so a missing answer fails the test instead of stalling it).
#![allow(dead_code)]

pub(crate) mod redis;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crier::config::Config;
use crier::server::{self, ServerHandle};
use tungstenite::client::IntoClientRequest;
use tungstenite::protocol::WebSocket;
use tungstenite::Message;

/// How long any single expected answer may take before the test fails.
pub(crate) const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

pub(crate) type Client = WebSocket<TcpStream>;

/// A configuration for tests: loopback, an ephemeral port, and the given tweaks.
pub(crate) fn config(args: &[&str]) -> Config {
    use clap::Parser;
    let mut all = vec!["crier", "--listen", "127.0.0.1:0"];
    // Clients left open at the end of a test never answer the drain's close frame; a short
    // drain keeps `stop` from waiting the 5 s default. Tests about draining set their own.
    if !args.contains(&"--drain-timeout") {
        all.extend_from_slice(&["--drain-timeout", "500ms"]);
    }
    all.extend_from_slice(args);
    Config::parse_from(all)
}

pub(crate) fn start(args: &[&str]) -> ServerHandle {
    server::start(config(args)).expect("server starts")
}

/// Stops a server and waits for it, failing the test if that takes longer than `within`.
pub(crate) fn stop(handle: ServerHandle, within: Duration) {
    handle.shutdown();
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let result = handle.join();
        let _ = done_tx.send(result);
    });
    match done_rx.recv_timeout(within) {
        Ok(result) => result.expect("shards exit cleanly"),
        Err(_) => panic!("server did not stop within {within:?}"),
    }
}

pub(crate) fn tcp(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(ANSWER_TIMEOUT)).unwrap();
    stream.set_nodelay(true).unwrap();
    stream
}

/// Opens a WebSocket to `path` (with query) on `addr`.
pub(crate) fn connect(addr: SocketAddr, path: &str) -> Client {
    try_connect(addr, path).expect("WebSocket handshake succeeds")
}

pub(crate) fn try_connect(addr: SocketAddr, path: &str) -> Result<Client, tungstenite::Error> {
    let url = format!("ws://{addr}{path}");
    let request = url.into_client_request().unwrap();
    let (client, _response) = tungstenite::client(request, tcp(addr)).map_err(|e| match e {
        tungstenite::HandshakeError::Failure(e) => e,
        tungstenite::HandshakeError::Interrupted(_) => unreachable!("blocking socket"),
    })?;
    Ok(client)
}

/// Reads the next data message, answering pings on the way; panics on anything else.
pub(crate) fn next_data(client: &mut Client) -> Message {
    loop {
        match client.read().expect("a message arrives") {
            Message::Ping(_) | Message::Pong(_) => continue,
            other => return other,
        }
    }
}

/// Reads the next text message as JSON.
pub(crate) fn next_json(client: &mut Client) -> serde_json::Value {
    match next_data(client) {
        Message::Text(text) => serde_json::from_str(&text).expect("valid JSON"),
        other => panic!("expected a text message, got {other:?}"),
    }
}

pub(crate) fn send_json(client: &mut Client, value: serde_json::Value) {
    client.send(Message::text(value.to_string())).expect("send");
}

/// Sends raw bytes and reads until the peer closes or `ANSWER_TIMEOUT` passes.
pub(crate) fn raw_exchange(addr: SocketAddr, request: &[u8]) -> String {
    let mut stream = tcp(addr);
    stream.write_all(request).unwrap();
    let mut out = Vec::new();
    let _ = stream.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// One `GET` on a fresh connection that the server closes after answering.
/// Returns (status, head, body).
pub(crate) fn http_get(addr: SocketAddr, path: &str) -> (u16, String, String) {
    let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    let response = raw_exchange(addr, request.as_bytes());
    let (head, body) = response
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("a complete response to {path}: {response:?}"));
    let status = head
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("a status line: {head:?}"));
    (status, head.to_string(), body.to_string())
}

/// Subscribes by command and waits for the ack, which comes once the topic's owner knows.
pub(crate) fn subscribe(client: &mut Client, topic: &str) {
    send_json(
        client,
        serde_json::json!({"op": "subscribe", "topic": topic, "id": 1}),
    );
    assert_eq!(next_json(client), serde_json::json!({"op": "ack", "id": 1}));
}

/// Reads one HTTP response (head + Content-Length body) from a keep-alive connection.
pub(crate) fn read_response(stream: &mut TcpStream) -> (u16, String) {
    let (status, _head, body) = read_response_with_head(stream);
    (status, body)
}

/// Like [`read_response`], also returning the head (status line and header fields). A response
/// without `Content-Length` (a 304, say) has an empty body.
pub(crate) fn read_response_with_head(stream: &mut TcpStream) -> (u16, String, String) {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        let n = match stream.read(&mut byte) {
            // A signal to the test process interrupts a blocking read (seen once, EINTR in
            // tests/auth.rs); that is not an answer: read again.
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            other => other.expect("response head"),
        };
        assert!(
            n > 0,
            "connection closed before a response head: {:?}",
            String::from_utf8_lossy(&buf)
        );
        buf.push(byte[0]);
    }
    let head = String::from_utf8(buf).unwrap();
    let status: u16 = head[9..12].parse().unwrap();
    let length: usize = header(&head, "content-length").map_or(0, |v| v.parse().unwrap());
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).unwrap();
    (status, head, String::from_utf8(body).unwrap())
}

/// The value of header field `name` (case-insensitive) in a response head.
pub(crate) fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().skip(1).find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.eq_ignore_ascii_case(name).then(|| value.trim())
    })
}

/// Waits until `condition` holds, failing after `within`.
pub(crate) fn eventually(within: Duration, what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A POST /publish/<topic> on a fresh connection; returns (status, body).
pub(crate) fn http_publish(
    addr: SocketAddr,
    topic: &str,
    content_type: &str,
    body: &[u8],
) -> (u16, String) {
    let mut stream = tcp(addr);
    let head = format!(
        "POST /publish/{topic} HTTP/1.1\r\nHost: test\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(body).unwrap();
    read_response(&mut stream)
}

/// Reads text frames until `done(frames)` or `within`; pings are answered by tungstenite.
pub(crate) fn read_until(
    client: &mut Client,
    within: Duration,
    done: impl Fn(&[serde_json::Value]) -> bool,
) -> Vec<serde_json::Value> {
    client
        .get_mut()
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let deadline = Instant::now() + within;
    let mut frames = Vec::new();
    while !done(&frames) && Instant::now() < deadline {
        match client.read() {
            Ok(Message::Text(text)) => frames.push(serde_json::from_str(&text).unwrap()),
            Ok(_) => {}
            Err(tungstenite::Error::Io(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => panic!("the subscriber's connection failed: {e}"),
        }
    }
    frames
}

/// Subscribes to `topic` with `since` and returns the ack.
pub(crate) fn resume(
    client: &mut Client,
    topic: &str,
    since: serde_json::Value,
) -> serde_json::Value {
    send_json(
        client,
        serde_json::json!({"op": "subscribe", "topic": topic, "since": since, "id": 3}),
    );
    let ack = next_json(client);
    assert_eq!(
        (&ack["op"], &ack["id"]),
        (&serde_json::json!("ack"), &serde_json::json!(3)),
        "{ack}"
    );
    ack
}
