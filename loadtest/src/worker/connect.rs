//! A connection's way to ready and out again: paced opening, connect completion, the upgrade
//! request, the ready bookkeeping (streams for loss accounting), handshake timeouts, closing.

use std::io;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use mio::{Interest, Token};

use crate::config::with_query;
use crate::net;
use crate::ws;

use crate::resume::TopicResume;

use super::conn::{Conn, Phase, PubState};
use super::error::ConnError;
use super::shared::Role;
use super::{Worker, HANDSHAKE_TIMEOUT, MAX_HANDSHAKES_IN_FLIGHT};

impl Worker {
    /// Opens pending connections, paced by `--connect-rate` and the handshake cap. Returns
    /// when the next one is due, if pacing holds one back.
    pub(super) fn open_pending(&mut self, now: u64) -> Option<u64> {
        while self.handshakes_in_flight < MAX_HANDSHAKES_IN_FLIGHT && !self.pending.is_empty() {
            if self.cfg.connect_rate > 0.0 {
                let per_thread = self.cfg.connect_rate / self.cfg.threads as f64;
                let at = self.thread_start_ns + (self.opened as f64 * 1e9 / per_thread) as u64;
                if at > now {
                    return Some(at);
                }
            }
            let (global, role) = self.pending.pop_front().expect("not empty");
            self.opened += 1;
            let _index = self.open(global, role, now, None);
        }
        None
    }

    /// Opens connection `global` with `role`, in a new slot of `conns` or in place of the
    /// closed connection at `slot` (a reconnect: the old socket is closed then, so a storm of
    /// reconnects never holds two descriptors per subscriber); returns its index if it started.
    pub(super) fn open(
        &mut self,
        global: u64,
        role: Role,
        now: u64,
        slot: Option<usize>,
    ) -> Option<usize> {
        let cfg = Arc::clone(&self.cfg);
        let http = matches!(role, Role::Publisher(_)) && cfg.http.is_some();
        let target = if http {
            cfg.http.as_ref().expect("http")
        } else {
            &cfg.ws
        };
        let source = net::source_addr(global, cfg.total_connections, target.addr);
        let mut stream = match net::start_connect(target.addr, source) {
            Ok(s) => s,
            Err(error) => {
                let target = target.addr;
                self.fail_role(
                    role,
                    ConnError::Connect {
                        target,
                        source,
                        error,
                    },
                );
                return None;
            }
        };
        let token = Token(slot.unwrap_or(self.conns.len()));
        let interest = Interest::READABLE | Interest::WRITABLE;
        if let Err(e) = self.poll.registry().register(&mut stream, token, interest) {
            self.fail_role(role, ConnError::Register(e));
            return None;
        }
        let publisher = match role {
            Role::Publisher(p) => {
                let topics = cfg.plan.publisher_topics(p);
                let names = topics.iter().map(|&k| cfg.plan.topic_name(k)).collect();
                self.publisher_conns.push(self.conns.len());
                Some(PubState::new(p, topics, names))
            }
            Role::Subscriber(_) => None,
        };
        self.handshakes_in_flight += 1;
        let mut conn = Conn::new(stream, role, publisher, http, now);
        conn.global = global;
        if cfg.reconnect.is_some() && matches!(role, Role::Subscriber(_)) {
            conn.resume = Some(TopicResume::default());
        }
        match slot {
            Some(i) => {
                self.conns[i] = conn;
                Some(i)
            }
            None => {
                self.conns.push(conn);
                Some(self.conns.len() - 1)
            }
        }
    }

    fn fail_role(&mut self, role: Role, error: ConnError) {
        self.shared.connections_failed.fetch_add(1, Relaxed);
        if matches!(role, Role::Publisher(_)) {
            self.shared.publishers_failed.fetch_add(1, Relaxed);
        }
        self.shared.note_error(error);
    }

    /// Fails a connection that never became ready, or closes a ready one (a disconnect).
    pub(super) fn close(&mut self, i: usize, error: ConnError) {
        let conn = &mut self.conns[i];
        let was = conn.phase;
        if was == Phase::Closed {
            return;
        }
        conn.phase = Phase::Closed;
        let _ = self.poll.registry().deregister(&mut conn.stream);
        let _ = conn.stream.shutdown(std::net::Shutdown::Both);
        let role = conn.role;
        if was == Phase::Ready {
            self.stats.disconnects += 1;
            self.shared.note_error(error);
        } else {
            self.handshakes_in_flight -= 1;
            self.fail_role(role, error);
        }
    }

    /// Connect completion, or room in the socket buffer for the queue.
    pub(super) fn on_writable(&mut self, i: usize) {
        let conn = &mut self.conns[i];
        if conn.phase != Phase::Connecting {
            if let Err(e) = conn.flush() {
                self.close(i, ConnError::Write(e));
            }
            return;
        }
        let result = match conn.stream.take_error() {
            Ok(Some(e)) | Err(e) => Err(e),
            Ok(None) => conn.stream.peer_addr().map(|_| ()),
        };
        match result {
            Ok(()) => self.start_handshake(i),
            Err(e) if e.kind() == io::ErrorKind::NotConnected => {} // still connecting
            Err(error) => {
                let target = if conn.http {
                    self.cfg.http.as_ref().expect("http").addr
                } else {
                    self.cfg.ws.addr
                };
                let source = None;
                self.close(
                    i,
                    ConnError::Connect {
                        target,
                        source,
                        error,
                    },
                );
            }
        }
    }

    fn start_handshake(&mut self, i: usize) {
        let key = self.encoder.handshake_key();
        let cfg = Arc::clone(&self.cfg);
        let conn = &mut self.conns[i];
        conn.phase = Phase::Handshaking;
        if conn.http {
            // Nothing to negotiate: an HTTP keep-alive connection is ready once connected.
            self.ready(i);
            return;
        }
        let path = match (conn.role, &conn.resume) {
            // Reconnect scenarios: `since=` subscribes and resumes (a live start at first).
            (Role::Subscriber(s), Some(resume)) => with_query(
                &cfg.ws.path_and_query,
                "since",
                &resume.since(&cfg.plan.topic_name(cfg.plan.subscriber_topic(s))),
            ),
            (Role::Subscriber(s), None) => with_query(
                &cfg.ws.path_and_query,
                "topic",
                &cfg.plan.topic_name(cfg.plan.subscriber_topic(s)),
            ),
            (Role::Publisher(_), _) => cfg.ws.path_and_query.clone(),
        };
        let (request, accept) =
            ws::upgrade_request(&cfg.ws.host_header, &path, key, cfg.compression);
        conn.expected_accept = accept;
        conn.out.extend_from_slice(&request);
        if let Err(e) = conn.flush() {
            self.close(i, ConnError::HandshakeWrite(e));
        }
    }

    /// The handshake (and `load-all` subscription) is done.
    pub(super) fn ready(&mut self, i: usize) {
        let now = self.shared.now_ns();
        let cfg = Arc::clone(&self.cfg);
        let conn = &mut self.conns[i];
        conn.phase = Phase::Ready;
        self.handshakes_in_flight -= 1;
        let took = now - conn.opened_ns;
        self.stats.handshakes += 1;
        self.stats.handshake_ns_sum += took;
        self.stats.handshake_ns_max = self.stats.handshake_ns_max.max(took);
        if let Role::Subscriber(s) = conn.role {
            self.subscriber_conn.insert(s, i);
        }
        if conn.reconnected {
            // A reconnect carries its streams over: it is the same subscriber.
            return;
        }
        if let Role::Subscriber(s) = conn.role {
            for k in cfg.plan.subscriber_topics(s) {
                let base = self
                    .stats
                    .tracker
                    .add_streams(cfg.plan.publishers_of(k) as usize);
                conn.streams.push((k, base));
                self.stats.subscriber_streams.push((base, k));
                self.shared.topic_subscribers[k as usize].fetch_add(1, Relaxed);
            }
        }
        self.shared.connections_up.fetch_add(1, Relaxed);
        self.shared.last_ready_ns.fetch_max(now, Relaxed);
    }

    /// Fails connections still not ready after `HANDSHAKE_TIMEOUT`.
    pub(super) fn sweep_handshake_timeouts(&mut self, now: u64) {
        for i in 0..self.conns.len() {
            let c = &self.conns[i];
            if now - c.opened_ns <= HANDSHAKE_TIMEOUT.as_nanos() as u64 {
                continue;
            }
            match c.phase {
                Phase::Connecting => self.close(i, ConnError::ConnectTimeout(HANDSHAKE_TIMEOUT)),
                Phase::Handshaking | Phase::Subscribing => {
                    self.close(i, ConnError::HandshakeTimeout(HANDSHAKE_TIMEOUT));
                }
                Phase::Ready | Phase::Closed => {}
            }
        }
    }
}
