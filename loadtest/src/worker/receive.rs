//! Reading: socket reads within the per-turn cap, the upgrade response, frames and what they
//! mean (deliveries checked against the plan and tracked for loss, latency recorded, acks,
//! drop notices, broker errors), and the answers to HTTP publishes.

use std::io::{self, Read};

use hdrhistogram::Histogram;

use crate::config::Plan;
use crate::payload::{self, Incoming, Stamp};
use crate::resume::TopicResume;
use crate::ws::{self, WsEvent};

use super::conn::{Conn, Phase, PubState};
use super::encode::ALL_TOPIC_SUBSCRIBE_ID;
use super::error::ConnError;
use super::shared::{Role, Shared};
use super::{Stats, Window, Worker, MAX_READS_PER_TURN};

/// The loss-accounting stream of a delivery of `stamp` on topic `topic`, for a subscriber
/// with `streams` ((topic, base) pairs); `None` if it should not have reached this subscriber.
fn stream_of(plan: &Plan, streams: &[(u32, u32)], topic: &[u8], stamp: &Stamp) -> Option<u32> {
    match (
        plan.topic_index(topic),
        plan.publisher_slot(stamp.topic, stamp.publisher),
    ) {
        (Some(k), Some(slot)) if k == stamp.topic => streams
            .iter()
            .find(|(t, _)| *t == k)
            .map(|(_, base)| base + slot),
        _ => None,
    }
}

/// Accounts for the messages of one read on one connection.
struct Inbox<'a> {
    stats: &'a mut Stats,
    histogram: &'a mut Histogram<u64>,
    plan: &'a Plan,
    window: Option<Window>,
    shared: &'a Shared,
    now: u64,
    role: Role,
    phase: Phase,
    streams: &'a [(u32, u32)],
    publisher: Option<&'a mut PubState>,
    /// Reconnect scenarios: the subscriber's resume point.
    resume: Option<&'a mut TopicResume>,
    /// The `load-all` subscription was acked.
    became_ready: bool,
    /// The broker sent a Close frame.
    closed: Option<ConnError>,
}

impl Inbox<'_> {
    fn on_message(&mut self, incoming: Incoming<'_>) {
        match incoming {
            Incoming::Message {
                topic,
                stamp,
                broker_seq,
            } => {
                if let (Some(resume), Some(seq)) = (self.resume.as_mut(), broker_seq) {
                    resume.on_message(seq, self.now, &mut self.stats.resume);
                }
                self.on_delivery(topic, &stamp)
            }
            Incoming::Resumed {
                top,
                epoch,
                recovered,
                ..
            } => {
                if let Some(resume) = self.resume.as_mut() {
                    resume.on_ack(top, &epoch, recovered, self.now, &mut self.stats.resume);
                }
            }
            Incoming::Foreign => self.stats.foreign += 1,
            Incoming::Ack { id } => match (self.role, self.publisher.as_mut()) {
                (Role::Subscriber(_), _)
                    if self.phase == Phase::Subscribing && id == Some(ALL_TOPIC_SUBSCRIBE_ID) =>
                {
                    self.became_ready = true;
                }
                (Role::Publisher(_), Some(p)) => p.answered(),
                _ => {}
            },
            Incoming::Dropped { count } => self.stats.broker_dropped += count,
            Incoming::Error(text) => {
                self.stats.protocol_errors += 1;
                self.shared
                    .note_error(format_args!("broker error: {}", truncate(&text, 300)));
            }
            Incoming::Other => {}
        }
    }

    fn on_delivery(&mut self, topic: &[u8], stamp: &Stamp) {
        self.stats.delivered_total += 1;
        let Some(stream) = stream_of(self.plan, self.streams, topic, stamp) else {
            self.stats.misrouted += 1;
            return;
        };
        self.stats.tracker.observe(stream, stamp.seq);
        if let Some(w) = self.window {
            if stamp.intended_ns >= w.measure_ns && stamp.intended_ns < w.end_ns {
                self.stats.delivered_in_window += 1;
                let latency_ns = self.now.saturating_sub(stamp.intended_ns);
                self.histogram.saturating_record(latency_ns);
            }
        }
    }
}

impl Worker {
    /// Reads connection `i` until a read comes back short of the buffer (the socket is empty)
    /// or would block, the connection closes, or the per-turn cap is hit (then `more_to_read`
    /// is set and the loop comes back to it).
    pub(super) fn on_readable(&mut self, i: usize, rbuf: &mut [u8]) {
        self.conns[i].more_to_read = false;
        for _ in 0..MAX_READS_PER_TURN {
            let n = match self.conns[i].stream.read(rbuf) {
                Ok(0) if self.conns[i].phase == Phase::Handshaking => {
                    return self.close(i, ConnError::ClosedDuringHandshake);
                }
                Ok(0) => return self.close(i, ConnError::ClosedByBroker),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) if self.conns[i].phase == Phase::Connecting => {
                    let (target, source) = (self.cfg.ws.addr, None);
                    let connect = ConnError::Connect {
                        target,
                        source,
                        error,
                    };
                    return self.close(i, connect);
                }
                Err(e) => return self.close(i, ConnError::Read(e)),
            };
            let now = self.shared.now_ns();
            if let Err(error) = self.on_bytes(i, &mut rbuf[..n], now) {
                self.stats.protocol_errors += 1;
                return self.close(i, error);
            }
            if self.conns[i].phase == Phase::Closed {
                return;
            }
            if n < rbuf.len() {
                // A short read emptied the socket's receive queue: bytes arriving after it
                // raise a new edge, so the read that would only say `WouldBlock` is skipped.
                // One syscall less per readable event keeps this thread's own queueing out of
                // the latencies it records.
                return;
            }
        }
        self.conns[i].more_to_read = true;
    }

    fn on_bytes(&mut self, i: usize, bytes: &mut [u8], now: u64) -> Result<(), ConnError> {
        if self.conns[i].http {
            return self.on_http_bytes(i, bytes);
        }
        let mut frames_from = 0;
        if self.conns[i].phase == Phase::Handshaking {
            match self.on_handshake_bytes(i, bytes)? {
                Some(from) => frames_from = from,
                None => return Ok(()),
            }
        }
        self.on_frames(i, &mut bytes[frames_from..], now)
    }

    /// Collects the upgrade response. Once complete: subscribes to `load-all` or is ready, and
    /// returns where frames start in `bytes`.
    fn on_handshake_bytes(&mut self, i: usize, bytes: &[u8]) -> Result<Option<usize>, ConnError> {
        let target = self.cfg.ws.addr;
        let conn = &mut self.conns[i];
        conn.head.extend_from_slice(bytes);
        let checked = ws::check_response(
            &conn.head,
            &conn.expected_accept,
            self.cfg.compression,
            &mut conn.reader,
        );
        let head_len = match checked {
            Ok(Some(n)) => n,
            Ok(None) => return Ok(None),
            Err(error) => return Err(ConnError::HandshakeRefused { target, error }),
        };
        let extra = conn.head.len() - head_len;
        conn.head.clear();
        if self.cfg.plan.all_topic && matches!(conn.role, Role::Subscriber(_)) {
            conn.phase = Phase::Subscribing;
            let plan = &self.cfg.plan;
            let topic = plan.topic_name(plan.all_index());
            self.encoder.subscribe(&topic, &mut conn.out);
            conn.flush().map_err(ConnError::Write)?;
        } else {
            self.ready(i);
        }
        Ok(Some(bytes.len() - extra))
    }

    /// Decodes frames and accounts for every message in them; answers pings.
    fn on_frames(&mut self, i: usize, bytes: &mut [u8], now: u64) -> Result<(), ConnError> {
        let conn = &mut self.conns[i];
        let Conn {
            reader,
            out,
            role,
            phase,
            streams,
            publisher,
            resume,
            ..
        } = conn;
        let mut inbox = Inbox {
            stats: &mut self.stats,
            histogram: &mut self.histogram,
            plan: &self.cfg.plan,
            window: self.window,
            shared: &self.shared,
            now,
            role: *role,
            phase: *phase,
            streams,
            publisher: publisher.as_mut(),
            resume: resume.as_mut(),
            became_ready: false,
            closed: None,
        };
        let encoder = &mut self.encoder;
        reader
            .feed(bytes, |event| match event {
                WsEvent::Text(m) => inbox.on_message(payload::parse_text(m)),
                WsEvent::Binary(m) => inbox.on_message(payload::parse_binary(m)),
                WsEvent::Ping(p) => encoder.pong(p, out),
                WsEvent::Close { code, reason } => {
                    inbox.closed = Some(ConnError::BrokerSentClose { code, reason });
                }
            })
            .map_err(ConnError::Protocol)?;
        let (became_ready, closed) = (inbox.became_ready, inbox.closed);
        if !out.is_empty() {
            conn.flush().map_err(ConnError::Write)?;
        }
        if became_ready {
            self.ready(i);
        }
        if let Some(error) = closed {
            self.close(i, error);
        }
        Ok(())
    }

    /// Responses to `POST /publish/<topic>`, one request in flight per connection.
    fn on_http_bytes(&mut self, i: usize, bytes: &[u8]) -> Result<(), ConnError> {
        let conn = &mut self.conns[i];
        conn.head.extend_from_slice(bytes);
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut response = httparse::Response::new(&mut headers);
            let head_len = match response.parse(&conn.head) {
                Ok(httparse::Status::Complete(n)) => n,
                Ok(httparse::Status::Partial) => return Ok(()),
                Err(e) => return Err(ConnError::MalformedHttp(e)),
            };
            let length = content_length(response.headers).ok_or(ConnError::HttpNoContentLength)?;
            if conn.head.len() < head_len + length {
                return Ok(());
            }
            let status = response.code.unwrap_or(0);
            if status != 200 {
                self.stats.http_errors += 1;
                let body = String::from_utf8_lossy(&conn.head[head_len..head_len + length]);
                self.shared.note_error(format_args!(
                    "HTTP publish answered {status}: {}",
                    truncate(&body, 200)
                ));
            }
            conn.head.drain(..head_len + length);
            if let Some(p) = conn.publisher.as_mut() {
                p.answered();
            }
        }
    }
}

fn content_length(headers: &[httparse::Header<'_>]) -> Option<usize> {
    let header = headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("content-length"))?;
    std::str::from_utf8(header.value).ok()?.trim().parse().ok()
}

fn truncate(text: &str, max: usize) -> &str {
    match text.char_indices().nth(max) {
        Some((i, _)) => &text[..i],
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamp(topic: u32, publisher: u32) -> Stamp {
        Stamp {
            publisher,
            topic,
            seq: 0,
            intended_ns: 0,
        }
    }

    /// A delivery maps to (its topic's stream base + the publisher's slot), and anything the
    /// plan says cannot reach this subscriber is misrouted.
    #[test]
    fn deliveries_map_to_streams_or_are_misrouted() {
        let plan = Plan {
            topics: 2,
            publishers: 4,
            all_topic: true,
        };
        // Subscriber of load-1 (publishers 1 and 3: slots 0 and 1) and load-all (slots 0..4).
        let streams = [(1, 10), (2, 20)];
        assert_eq!(
            stream_of(&plan, &streams, b"load-1", &stamp(1, 1)),
            Some(10)
        );
        assert_eq!(
            stream_of(&plan, &streams, b"load-1", &stamp(1, 3)),
            Some(11)
        );
        assert_eq!(
            stream_of(&plan, &streams, b"load-all", &stamp(2, 3)),
            Some(23)
        );
        assert_eq!(
            stream_of(&plan, &streams, b"load-1", &stamp(1, 0)),
            None,
            "0 publishes to load-0"
        );
        assert_eq!(
            stream_of(&plan, &streams, b"load-0", &stamp(0, 0)),
            None,
            "not subscribed"
        );
        assert_eq!(
            stream_of(&plan, &streams, b"load-1", &stamp(2, 1)),
            None,
            "stamp says load-all"
        );
        assert_eq!(
            stream_of(&plan, &streams, b"load-9", &stamp(1, 1)),
            None,
            "no such topic"
        );
    }

    #[test]
    fn content_length_and_truncation() {
        let headers = [httparse::Header {
            name: "Content-LENGTH",
            value: b" 12 ",
        }];
        assert_eq!(content_length(&headers), Some(12));
        assert_eq!(content_length(&[]), None);
        assert_eq!(truncate("héllo", 2), "hé");
        assert_eq!(truncate("hi", 5), "hi");
    }
}
