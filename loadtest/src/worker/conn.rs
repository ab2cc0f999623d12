//! One client connection's state: its phase, buffers and (for a publisher) what it has sent;
//! and writing its queue to the socket. No event loop here.

use std::io::{self, Write};

use mio::net::TcpStream;

use crate::payload::Stamp;
use crate::resume::TopicResume;
use crate::schedule::Schedule;
use crate::ws::Reader;

use super::shared::Role;

/// Where a connection is in its life.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub(super) enum Phase {
    Connecting,
    Handshaking,
    /// `--all-topic` subscriber waiting for the ack of its `load-all` subscription.
    Subscribing,
    Ready,
    Closed,
}

/// What one publisher sends and has sent.
pub(super) struct PubState {
    pub(super) id: u32,
    pub(super) topics: Vec<u32>,
    pub(super) topic_names: Vec<String>,
    /// Next sequence number per topic of `topics` (= messages published on it).
    pub(super) seq: Vec<u64>,
    pub(super) rotation: usize,
    pub(super) schedule: Option<Schedule>,
    /// Publishes awaiting an ack (`--max`) or HTTP responses outstanding.
    pub(super) in_flight: u32,
    pub(super) next_id: u64,
}

impl PubState {
    pub(super) fn new(id: u32, topics: Vec<u32>, topic_names: Vec<String>) -> PubState {
        PubState {
            id,
            seq: vec![0; topics.len()],
            topics,
            topic_names,
            rotation: 0,
            schedule: None,
            in_flight: 0,
            next_id: 1,
        }
    }

    /// Stamps the next message (the next topic in rotation, its next sequence number) and
    /// returns it with the index of its topic in `topics`.
    pub(super) fn next_stamp(&mut self, intended_ns: u64) -> (Stamp, usize) {
        let slot = self.rotation;
        self.rotation = (self.rotation + 1) % self.topics.len();
        let stamp = Stamp {
            publisher: self.id,
            topic: self.topics[slot],
            seq: self.seq[slot],
            intended_ns,
        };
        self.seq[slot] += 1;
        (stamp, slot)
    }

    /// An id for a publish that must be acked (counted in flight until the ack).
    pub(super) fn take_ack_id(&mut self) -> u64 {
        self.next_id += 1;
        self.in_flight += 1;
        self.next_id - 1
    }

    /// An ack or HTTP response arrived.
    pub(super) fn answered(&mut self) {
        self.in_flight = self.in_flight.saturating_sub(1);
    }
}

pub(super) struct Conn {
    pub(super) stream: TcpStream,
    pub(super) role: Role,
    pub(super) phase: Phase,
    pub(super) reader: Reader,
    /// Handshake / HTTP response bytes not yet complete.
    pub(super) head: Vec<u8>,
    pub(super) expected_accept: String,
    pub(super) out: Vec<u8>,
    pub(super) out_pos: usize,
    pub(super) opened_ns: u64,
    /// Subscriber: (topic, stream base) for each topic.
    pub(super) streams: Vec<(u32, u32)>,
    pub(super) publisher: Option<PubState>,
    /// Publishes over HTTP keep-alive instead of WebSocket.
    pub(super) http: bool,
    /// Reads were cut short by the per-turn cap.
    pub(super) more_to_read: bool,
    /// Reconnect scenarios: where this subscriber resumes its topic from.
    pub(super) resume: Option<TopicResume>,
    /// This connection replaces a dropped one: its streams were carried over.
    pub(super) reconnected: bool,
    /// The global connection index (for the source address of a reconnect).
    pub(super) global: u64,
}

impl Conn {
    pub(super) fn new(
        stream: TcpStream,
        role: Role,
        publisher: Option<PubState>,
        http: bool,
        now: u64,
    ) -> Conn {
        Conn {
            stream,
            role,
            phase: Phase::Connecting,
            reader: Reader::new(),
            head: Vec::new(),
            expected_accept: String::new(),
            out: Vec::new(),
            out_pos: 0,
            opened_ns: now,
            streams: Vec::new(),
            publisher,
            http,
            more_to_read: false,
            resume: None,
            reconnected: false,
            global: 0,
        }
    }

    /// Bytes queued but not yet taken by the socket.
    pub(super) fn unwritten(&self) -> usize {
        self.out.len() - self.out_pos
    }

    /// Writes as much of the queue as the socket takes.
    pub(super) fn flush(&mut self) -> io::Result<()> {
        while self.out_pos < self.out.len() {
            match self.stream.write(&self.out[self.out_pos..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.out_pos += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::NotConnected => break,
                Err(e) => return Err(e),
            }
        }
        if self.out_pos == self.out.len() {
            self.out.clear();
            self.out_pos = 0;
        } else if self.out_pos > 64 * 1024 && self.out_pos > self.out.len() / 2 {
            self.out.drain(..self.out_pos);
            self.out_pos = 0;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_rotate_over_topics_with_a_sequence_per_topic() {
        let mut p = PubState::new(3, vec![0, 5, 9], vec!["a".into(), "b".into(), "c".into()]);
        let got: Vec<(u32, u64, usize)> = (0..7)
            .map(|i| {
                let (s, slot) = p.next_stamp(100 + i);
                assert_eq!((s.publisher, s.intended_ns), (3, 100 + i));
                (s.topic, s.seq, slot)
            })
            .collect();
        assert_eq!(
            got,
            [
                (0, 0, 0),
                (5, 0, 1),
                (9, 0, 2),
                (0, 1, 0),
                (5, 1, 1),
                (9, 1, 2),
                (0, 2, 0)
            ]
        );
        assert_eq!(p.seq, [3, 2, 2]);
    }

    #[test]
    fn ack_ids_count_in_flight_until_answered() {
        let mut p = PubState::new(0, vec![0], vec!["a".into()]);
        assert_eq!((p.take_ack_id(), p.take_ack_id()), (1, 2));
        assert_eq!(p.in_flight, 2);
        p.answered();
        p.answered();
        p.answered();
        assert_eq!(p.in_flight, 0, "an unexpected ack does not underflow");
    }
}
