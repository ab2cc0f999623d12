//! permessage-deflate over loopback: raw-socket clients that offer compression get one deflated
//! frame per publish, byte-identical on every shard, next to plain subscribers on the same
//! topic; /echo compresses both ways; a zip bomb closes with 1009; bad offers fall back to none.
mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};

use common::*;
use crier::metrics::Metric;
use flate2::{Decompress, FlushDecompress};
use serde_json::json;

const OFFER: &str = "permessage-deflate; client_max_window_bits";

/// A WebSocket client on a bare socket, so the test sees every frame as it is on the wire.
struct Raw {
    stream: TcpStream,
    /// The `Sec-WebSocket-Extensions` the server answered, if any.
    extensions: Option<String>,
}

/// One received frame: the first header byte (FIN, RSV, opcode) and the payload, plus the whole
/// frame as it was on the wire.
struct Frame {
    b0: u8,
    payload: Vec<u8>,
    wire: Vec<u8>,
}

impl Frame {
    fn compressed(&self) -> bool {
        self.b0 & 0x40 != 0
    }
    fn opcode(&self) -> u8 {
        self.b0 & 0x0F
    }
}

impl Raw {
    fn connect(addr: SocketAddr, path: &str, offer: Option<&str>) -> Raw {
        let mut stream = tcp(addr);
        let mut request = format!(
            "GET {path} HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        );
        if let Some(offer) = offer {
            request.push_str(&format!("Sec-WebSocket-Extensions: {offer}\r\n"));
        }
        request.push_str("\r\n");
        stream.write_all(request.as_bytes()).unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            assert_eq!(stream.read(&mut byte).unwrap(), 1, "response head");
            head.push(byte[0]);
        }
        let head = String::from_utf8(head).unwrap();
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        let extensions = header(&head, "sec-websocket-extensions").map(str::to_string);
        Raw { stream, extensions }
    }

    fn send(&mut self, b0: u8, payload: &[u8]) {
        let key = [1u8, 2, 3, 4];
        let mut out = vec![b0];
        match payload.len() {
            n if n < 126 => out.push(0x80 | n as u8),
            n if n <= 0xFFFF => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(0x80 | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(&key);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        self.stream.write_all(&out).unwrap();
    }

    fn send_json(&mut self, value: serde_json::Value) {
        self.send(0x81, value.to_string().as_bytes());
    }

    fn read_frame(&mut self) -> Frame {
        let mut head = [0u8; 2];
        self.stream.read_exact(&mut head).unwrap();
        let mut wire = head.to_vec();
        let len = match head[1] & 0x7F {
            126 => {
                let mut ext = [0u8; 2];
                self.stream.read_exact(&mut ext).unwrap();
                wire.extend_from_slice(&ext);
                u16::from_be_bytes(ext) as usize
            }
            127 => {
                let mut ext = [0u8; 8];
                self.stream.read_exact(&mut ext).unwrap();
                wire.extend_from_slice(&ext);
                u64::from_be_bytes(ext) as usize
            }
            n => n as usize,
        };
        let mut payload = vec![0u8; len];
        self.stream.read_exact(&mut payload).unwrap();
        wire.extend_from_slice(&payload);
        Frame {
            b0: head[0],
            payload,
            wire,
        }
    }

    /// Subscribes by command and waits for the ack.
    fn subscribe(&mut self, topic: &str) {
        self.send_json(json!({"op": "subscribe", "topic": topic, "id": 1}));
        let ack = self.read_frame();
        assert_eq!(ack.opcode(), 1);
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&ack.payload).unwrap(),
            json!({"op": "ack", "id": 1})
        );
    }
}

/// Inflates one permessage-deflate message (RFC 7692 §7.2.2), independently of crier's code.
fn inflate(payload: &[u8]) -> Vec<u8> {
    let mut input = payload.to_vec();
    input.extend_from_slice(&[0, 0, 0xFF, 0xFF]);
    let mut d = Decompress::new(false);
    let mut out = Vec::with_capacity(1 << 20);
    d.decompress_vec(&input, &mut out, FlushDecompress::Sync)
        .unwrap();
    out
}

fn deflate(payload: &[u8]) -> Vec<u8> {
    let mut c = flate2::Compress::new(flate2::Compression::new(6), false);
    let mut out = Vec::with_capacity(payload.len() + 64);
    c.compress_vec(payload, &mut out, flate2::FlushCompress::Sync)
        .unwrap();
    assert!(out.ends_with(&[0, 0, 0xFF, 0xFF]));
    out.truncate(out.len() - 4);
    out
}

fn json_kib() -> serde_json::Value {
    let rows: Vec<_> = (0..12)
        .map(|i| json!({"symbol": format!("SYM{i}"), "bid": 100 + i, "ask": 101 + i, "venue": "XNAS"}))
        .collect();
    json!({ "rows": rows })
}

#[test]
fn one_publish_is_deflated_once_and_every_shard_gets_the_same_bytes() {
    let server = start(&["--threads", "2"]);
    let addr = server.local_addr();
    // Enough connections that both shards hold some (SO_REUSEPORT spreads them).
    let mut compressing = Vec::new();
    while compressing.len() < 8
        || (0..2).any(|s| server.shard_metric(s, Metric::WebSocketsOpen) == 0)
    {
        assert!(
            compressing.len() < 64,
            "connections never reached both shards"
        );
        let mut raw = Raw::connect(addr, "/ws", Some(OFFER));
        assert_eq!(
            raw.extensions.as_deref(),
            Some("permessage-deflate; server_no_context_takeover; client_no_context_takeover")
        );
        raw.subscribe("prices");
        compressing.push(raw);
    }
    // Plain subscribers on the same topic: one without an offer, one with compression off
    // in its own way (tungstenite offers nothing).
    let mut plain_raw = Raw::connect(addr, "/ws", None);
    assert_eq!(plain_raw.extensions, None);
    plain_raw.subscribe("prices");
    let mut plain = connect(addr, "/ws");
    subscribe(&mut plain, "prices");

    let data = json_kib();
    let body = data.to_string();
    assert!(body.len() > 600);
    let (status, _) = http_publish(addr, "prices", "application/json", body.as_bytes());
    assert_eq!(status, 200);

    let first = compressing[0].read_frame();
    assert!(first.compressed(), "RSV1 set");
    assert_eq!(first.opcode(), 1);
    for raw in &mut compressing[1..] {
        let frame = raw.read_frame();
        assert_eq!(
            frame.wire, first.wire,
            "byte-identical on every connection and shard"
        );
    }
    let message: serde_json::Value = serde_json::from_slice(&inflate(&first.payload)).unwrap();
    assert_eq!(message["data"], data);
    assert!(
        first.payload.len() * 2 < body.len(),
        "{} compressed bytes for {}",
        first.payload.len(),
        body.len()
    );
    let plain_frame = plain_raw.read_frame();
    assert!(!plain_frame.compressed());
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&plain_frame.payload).unwrap(),
        message
    );
    assert_eq!(next_json(&mut plain), message);
    // The proof of compress-once: one deflate for all of them.
    eventually(ANSWER_TIMEOUT, "the deflate is counted", || {
        server.metric(Metric::MessagesDeflated) == 1
    });
    assert!(
        server.metric(Metric::MeshMessagesSent) > 0,
        "it crossed shards"
    );

    // A small message goes out plain even to compressing subscribers.
    let (status, _) = http_publish(addr, "prices", "application/json", b"42");
    assert_eq!(status, 200);
    let small = compressing[0].read_frame();
    assert!(!small.compressed());
    assert_eq!(server.metric(Metric::MessagesDeflated), 1);
    stop(server, ANSWER_TIMEOUT);
}

#[test]
fn no_deflate_while_nobody_compresses_and_none_when_off() {
    let server = start(&["--threads", "1"]);
    let addr = server.local_addr();
    let mut plain = Raw::connect(addr, "/ws", None);
    plain.subscribe("t");
    let body = json_kib().to_string();
    assert_eq!(
        http_publish(addr, "t", "application/json", body.as_bytes()).0,
        200
    );
    assert!(!plain.read_frame().compressed());
    assert_eq!(server.metric(Metric::MessagesDeflated), 0);
    stop(server, ANSWER_TIMEOUT);

    let server = start(&["--compression", "off"]);
    let raw = Raw::connect(server.local_addr(), "/ws", Some(OFFER));
    assert_eq!(raw.extensions, None, "offers are declined");
    stop(server, ANSWER_TIMEOUT);
}

#[test]
fn echo_inflates_what_it_receives_and_compresses_what_it_sends() {
    let server = start(&[]);
    let mut raw = Raw::connect(server.local_addr(), "/echo", Some(OFFER));
    assert!(raw.extensions.is_some());
    let text = json_kib().to_string();
    // One compressed message in three fragments with a ping between (RSV1 on the first only).
    let compressed = deflate(text.as_bytes());
    let third = compressed.len() / 3;
    raw.send(0x41, &compressed[..third]);
    raw.send(0x89, b"between");
    raw.send(0x00, &compressed[third..2 * third]);
    raw.send(0x80, &compressed[2 * third..]);
    let pong = raw.read_frame();
    assert_eq!((pong.opcode(), &pong.payload[..]), (0xA, &b"between"[..]));
    let echo = raw.read_frame();
    assert!(echo.compressed());
    assert_eq!(inflate(&echo.payload), text.as_bytes());
    // A plain message on the same connection is fine too; the echo is compressed even when
    // that does not make it smaller.
    raw.send(0x82, b"plain binary");
    let echo = raw.read_frame();
    assert_eq!((echo.opcode(), echo.compressed()), (2, true));
    assert_eq!(inflate(&echo.payload), b"plain binary");
    stop(server, ANSWER_TIMEOUT);
}

#[test]
fn a_zip_bomb_closes_with_1009() {
    let server = start(&["--max-message-bytes", "65536"]);
    let mut raw = Raw::connect(server.local_addr(), "/echo", Some(OFFER));
    // 8 MiB of zeros, about 8 KiB on the wire: far under the limit before inflating.
    let bomb = deflate(&vec![0u8; 8 << 20]);
    assert!(bomb.len() < 65536);
    raw.send(0xC2, &bomb);
    let close = raw.read_frame();
    assert_eq!(close.opcode(), 8);
    assert_eq!(
        u16::from_be_bytes([close.payload[0], close.payload[1]]),
        1009
    );
    eventually(ANSWER_TIMEOUT, "the error is counted", || {
        server.metric(Metric::ProtocolErrors) == 1
    });
    stop(server, ANSWER_TIMEOUT);
}

#[test]
fn bad_offers_fall_back_to_the_next_offer_or_to_no_compression() {
    let server = start(&[]);
    let addr = server.local_addr();
    for (offer, answer) in [
        ("permessage-deflate; server_max_window_bits=8", None),
        ("permessage-deflate; bogus", None),
        ("permessage-deflate; server_max_window_bits=16", None),
        ("permessage-deflate; client_max_window_bits; client_max_window_bits", None),
        ("permessage-deflate; server_max_window_bits=\"1", None),
        ("x-webkit-deflate-frame", None),
        (
            "permessage-deflate; server_max_window_bits=8, permessage-deflate; server_max_window_bits=10",
            Some("permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=10"),
        ),
        (
            "permessage-deflate; server_no_context_takeover=yes, permessage-deflate",
            Some("permessage-deflate; server_no_context_takeover; client_no_context_takeover"),
        ),
    ] {
        let mut raw = Raw::connect(addr, "/echo", Some(offer));
        assert_eq!(raw.extensions.as_deref(), answer, "{offer}");
        // The connection works either way.
        raw.send(0x81, b"still here");
        let echo = raw.read_frame();
        assert_eq!(echo.compressed(), answer.is_some(), "{offer}");
        let text = if echo.compressed() {
            inflate(&echo.payload)
        } else {
            echo.payload
        };
        assert_eq!(&text[..], b"still here", "{offer}");
        // Without the extension, RSV1 is a protocol error.
        if answer.is_none() {
            raw.send(0xC1, &deflate(b"hello hello hello"));
            let close = raw.read_frame();
            assert_eq!(u16::from_be_bytes([close.payload[0], close.payload[1]]), 1002);
        }
    }
    stop(server, ANSWER_TIMEOUT);
}

#[test]
fn a_small_server_window_gets_the_shared_frame_only_when_the_message_fits_it() {
    let server = start(&["--threads", "1"]);
    let addr = server.local_addr();
    let mut wide = Raw::connect(addr, "/ws", Some(OFFER));
    wide.subscribe("w");
    let mut narrow = Raw::connect(
        addr,
        "/ws",
        Some("permessage-deflate; server_max_window_bits=9"),
    );
    assert!(narrow
        .extensions
        .as_deref()
        .unwrap()
        .contains("server_max_window_bits=9"));
    narrow.subscribe("w");
    let body = json_kib().to_string();
    assert!(body.len() > 512);
    assert_eq!(
        http_publish(addr, "w", "application/json", body.as_bytes()).0,
        200
    );
    assert!(wide.read_frame().compressed());
    assert!(
        !narrow.read_frame().compressed(),
        "over 512 bytes: plain for window 9"
    );
    let short = json!({"a": "b".repeat(300)}).to_string();
    assert_eq!(
        http_publish(addr, "w", "application/json", short.as_bytes()).0,
        200
    );
    let (a, b) = (wide.read_frame(), narrow.read_frame());
    assert!(b.compressed(), "the envelope fits 512 bytes");
    assert_eq!(a.wire, b.wire);
    stop(server, ANSWER_TIMEOUT);
}

#[test]
fn a_replay_reuses_the_deflated_frame_kept_in_history() {
    let server = start(&["--threads", "2"]);
    let addr = server.local_addr();
    let mut live = Raw::connect(addr, "/ws", Some(OFFER));
    live.subscribe("kept");
    let body = json_kib().to_string();
    assert_eq!(
        http_publish(addr, "kept", "application/json", body.as_bytes()).0,
        200
    );
    let delivered = live.read_frame();
    assert!(delivered.compressed());
    eventually(ANSWER_TIMEOUT, "one deflate", || {
        server.metric(Metric::MessagesDeflated) == 1
    });
    // A newcomer asks for what is kept: the ack, then the very frame delivered before.
    let mut late = Raw::connect(addr, "/ws", Some(OFFER));
    late.send_json(json!({"op": "subscribe", "topic": "kept", "since": {"seq": 0}, "id": 7}));
    let ack: serde_json::Value = serde_json::from_slice(&late.read_frame().payload).unwrap();
    assert_eq!(
        (ack["op"].as_str(), ack["recovered"].as_bool()),
        (Some("ack"), Some(true))
    );
    let replayed = late.read_frame();
    assert_eq!(
        replayed.wire, delivered.wire,
        "the kept deflated bytes, not a new deflate"
    );
    // A plain newcomer gets the plain frame from the same history entry.
    let mut plain = Raw::connect(addr, "/ws", None);
    plain.send_json(json!({"op": "subscribe", "topic": "kept", "since": {"seq": 0}, "id": 8}));
    let _ack = plain.read_frame();
    let replayed_plain = plain.read_frame();
    assert!(!replayed_plain.compressed());
    assert_eq!(replayed_plain.payload, inflate(&delivered.payload));
    assert_eq!(server.metric(Metric::MessagesDeflated), 1);
    stop(server, ANSWER_TIMEOUT);
}
