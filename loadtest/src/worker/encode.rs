//! The bytes a worker sends: publishes (WebSocket text or binary, or HTTP POST), the
//! `load-all` subscribe command, pongs, and the keys and masks they need. Appends to a
//! connection's queue; never writes to a socket.

use std::io::Write;

use crier::proto::frame::OpCode;

use crate::config::{http_publish_path, Target};
use crate::payload::{self, Stamp};
use crate::ws;

/// Subscribe command id for `load-all` (each subscriber sends one).
pub(super) const ALL_TOPIC_SUBSCRIBE_ID: u64 = 1;

/// A tiny xorshift for handshake keys and mask keys (RFC 6455 §5.3 wants them unpredictable
/// to intermediaries; a load generator talking to its own broker needs no crypto).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// How a publish goes out.
#[derive(Debug, Clone, Copy)]
pub(super) enum Wire<'a> {
    /// `POST <base>/publish/<topic>` on a keep-alive connection.
    Http(&'a Target),
    /// A masked WebSocket frame; text commands carry `id` when an ack is wanted.
    WebSocket { id: Option<u64> },
}

/// One per worker thread: the random source and two scratch buffers reused for every message.
pub(super) struct Encoder {
    rng: Rng,
    scratch: Vec<u8>,
    command: Vec<u8>,
}

impl Encoder {
    pub(super) fn new(seed: u64) -> Encoder {
        Encoder {
            rng: Rng(seed | 1),
            scratch: Vec::new(),
            command: Vec::new(),
        }
    }

    /// A fresh `Sec-WebSocket-Key` (16 random bytes).
    pub(super) fn handshake_key(&mut self) -> [u8; 16] {
        let mut key = [0u8; 16];
        key[..8].copy_from_slice(&self.rng.next().to_le_bytes());
        key[8..].copy_from_slice(&self.rng.next().to_le_bytes());
        key
    }

    fn mask(&mut self) -> [u8; 4] {
        (self.rng.next() as u32).to_le_bytes()
    }

    /// Answers a ping (RFC 6455 §5.5.3: same payload).
    pub(super) fn pong(&mut self, payload: &[u8], out: &mut Vec<u8>) {
        let mask = self.mask();
        ws::client_frame(OpCode::Pong, payload, mask, out);
    }

    /// The `load-all` subscribe command, with an id so its ack can be recognized.
    pub(super) fn subscribe(&mut self, topic: &str, out: &mut Vec<u8>) {
        self.command.clear();
        let _ = write!(
            self.command,
            "{{\"op\":\"subscribe\",\"topic\":\"{topic}\",\"id\":{ALL_TOPIC_SUBSCRIBE_ID}}}"
        );
        let mask = self.mask();
        ws::client_frame(OpCode::Text, &self.command, mask, out);
    }

    /// Appends one publish of `stamp` on `topic`, `size` payload bytes, to `out`.
    pub(super) fn publish(
        &mut self,
        wire: Wire<'_>,
        binary: bool,
        size: usize,
        topic: &str,
        stamp: &Stamp,
        out: &mut Vec<u8>,
    ) {
        self.scratch.clear();
        self.command.clear();
        if binary {
            payload::encode_binary_payload(stamp, size, &mut self.scratch);
        } else {
            payload::encode_json_data(stamp, size, &mut self.scratch);
        }
        match wire {
            Wire::Http(target) => {
                let content_type = if binary {
                    "application/octet-stream"
                } else {
                    "application/json"
                };
                let path = http_publish_path(&target.path_and_query, topic);
                let _ = write!(
                    out,
                    "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n",
                    target.host_header,
                    self.scratch.len()
                );
                out.extend_from_slice(&self.scratch);
            }
            Wire::WebSocket { .. } if binary => {
                payload::encode_binary_publish(topic, &self.scratch, &mut self.command);
                let mask = self.mask();
                ws::client_frame(OpCode::Binary, &self.command, mask, out);
            }
            Wire::WebSocket { id } => {
                payload::encode_text_publish(topic, &self.scratch, id, &mut self.command);
                let mask = self.mask();
                ws::client_frame(OpCode::Text, &self.command, mask, out);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_publish_is_a_complete_request() {
        let target = crate::config::parse_url("http://127.0.0.1:9/api", "http", 80).unwrap();
        let stamp = Stamp {
            publisher: 1,
            topic: 2,
            seq: 3,
            intended_ns: 4,
        };
        let mut out = Vec::new();
        Encoder::new(7).publish(Wire::Http(&target), true, 30, "load-2", &stamp, &mut out);
        let text = String::from_utf8_lossy(&out);
        assert!(text.starts_with("POST /api/publish/load-2 HTTP/1.1\r\nHost: 127.0.0.1:9\r\n"));
        assert!(
            text.contains("Content-Type: application/octet-stream\r\nContent-Length: 30\r\n\r\n")
        );
        assert!(
            out.ends_with(&[0; 6]),
            "binary payload zero-padded to 30 bytes"
        );
    }

    #[test]
    fn websocket_frames_are_masked_client_frames() {
        let stamp = Stamp {
            publisher: 0,
            topic: 0,
            seq: 0,
            intended_ns: 0,
        };
        let mut enc = Encoder::new(1);
        let mut out = Vec::new();
        enc.publish(
            Wire::WebSocket { id: Some(9) },
            false,
            64,
            "load-0",
            &stamp,
            &mut out,
        );
        assert_eq!(out[0], 0x81, "FIN + text");
        assert_eq!(out[1] & 0x80, 0x80, "masked (RFC 6455 §5.3)");
        out.clear();
        enc.subscribe("load-all", &mut out);
        assert_eq!(out[0], 0x81);
        out.clear();
        enc.pong(b"hi", &mut out);
        assert_eq!(
            (out[0], out[1]),
            (0x8A, 0x82),
            "FIN + pong, masked, 2 bytes"
        );
    }
}
