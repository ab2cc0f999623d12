//! Where the broker core's effects meet this shard's connections: the one send path every
//! frame takes (deliveries, acks, errors, pongs, echoes, HTTP responses, close frames), with
//! its typed result, and the [`Effects`] value through which the core queues frames, messages
//! for peers and closes while it decides.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use slab::Slab;

use crate::broker::{
    CloseReason, ConnId, HttpHistory, HttpPublished, Outputs, SendKind, SendStatus,
};
use crate::mesh::{ConnRef, Mesh, MeshMsg};
use crate::metrics::{FanoutTracker, Metric, ShardCounters, SharedFanout, Tracked};
use crate::proto::deflate::DeliveryFrames;
use crate::proto::envelope;
use crate::proto::prepared;

use super::connection::{flags, Connection, Phase};

/// Queues `frame` on connection `key` under `kind`'s budget rule and lists it for a flush.
/// The only caller of `WriteQueue::offer` in the shard. A reply that takes the connection
/// over `max_backlog_bytes` stops reading it until its queue halves (see `flush_dirty`).
pub(super) fn send(
    conns: &mut Slab<Connection>,
    dirty: &mut VecDeque<usize>,
    key: usize,
    frame: Bytes,
    kind: SendKind,
    max_backlog_bytes: usize,
) -> SendStatus {
    let Some(conn) = conns.get_mut(key) else {
        return SendStatus::Closed;
    };
    let closing = conn.has(flags::DOOMED) || matches!(conn.phase, Phase::Closing { .. });
    if closing && kind != SendKind::Final {
        return SendStatus::Closed;
    }
    let status = conn.out.offer(frame, kind, max_backlog_bytes);
    match status {
        SendStatus::OverBudget | SendStatus::Closed => return status,
        SendStatus::QueuedOverBudget if matches!(kind, SendKind::Reply | SendKind::Pong) => {
            conn.set(flags::READ_PAUSED)
        }
        SendStatus::Queued | SendStatus::QueuedOverBudget => {}
    }
    if !conn.has(flags::DIRTY) {
        conn.set(flags::DIRTY);
        dirty.push_back(key);
    }
    status
}

/// Moves a connection to Closing: `last_words` (a close frame or an HTTP response) goes out,
/// then the write side is shut and input is discarded until the peer closes or `deadline_ms`.
/// Whatever the broker core held for it must already be released.
pub(super) fn begin_closing(
    conns: &mut Slab<Connection>,
    dirty: &mut VecDeque<usize>,
    counters: &mut ShardCounters,
    compressing_subscribers: &AtomicUsize,
    key: usize,
    deadline_ms: u32,
    last_words: Option<Bytes>,
) {
    let Some(conn) = conns.get_mut(key) else {
        return;
    };
    if let Phase::WebSocket(ws) = &conn.phase {
        counters.sub(Metric::WebSocketsOpen, 1);
        if ws.is_compressing_subscriber() {
            compressing_subscribers.fetch_sub(1, Ordering::Relaxed);
        }
    }
    conn.phase = Phase::Closing { deadline_ms };
    conn.clear(flags::READ_PAUSED);
    let listed = match last_words {
        // Final frames are always queued; the status says nothing the close does not.
        Some(bytes) => {
            send(conns, dirty, key, bytes, SendKind::Final, usize::MAX) != SendStatus::Closed
        }
        None => false,
    };
    if !listed {
        if let Some(conn) = conns.get_mut(key) {
            if !conn.has(flags::DIRTY) {
                conn.set(flags::DIRTY);
                dirty.push_back(key);
            }
        }
    }
}

/// The shard's side of [`Outputs`]: borrows of exactly what the core's effects touch, so the
/// core (borrowed separately) cannot be re-entered.
pub(super) struct Effects<'a> {
    pub(super) conns: &'a mut Slab<Connection>,
    pub(super) dirty: &'a mut VecDeque<usize>,
    pub(super) mesh: &'a mut Mesh,
    pub(super) counters: &'a mut ShardCounters,
    /// `Shared::compressing_subscribers`.
    pub(super) compressing_subscribers: &'a AtomicUsize,
    /// HTTP publish answers, finished by the shard once the core returns.
    pub(super) http_answers: &'a mut Vec<(ConnRef, HttpPublished)>,
    /// `GET /history` answers, finished by the shard once the core returns.
    pub(super) history_answers: &'a mut Vec<(ConnRef, HttpHistory)>,
    pub(super) max_backlog_bytes: usize,
    /// When a connection closed now must be gone at the latest.
    pub(super) close_deadline_ms: u32,
    /// The shard's clock at the start of the current loop phase (µs since the server started).
    pub(super) now_us: u64,
    /// Dirty-list entries the flush has popped so far (with `dirty.len()`: a fan-out's mark).
    pub(super) dirty_popped: u64,
    pub(super) fanout: &'a mut FanoutTracker,
    pub(super) shared_fanout: &'a SharedFanout,
}

impl Outputs for Effects<'_> {
    #[inline]
    fn send(&mut self, conn: ConnId, frame: Bytes, kind: SendKind) -> SendStatus {
        send(
            self.conns,
            self.dirty,
            conn,
            frame,
            kind,
            self.max_backlog_bytes,
        )
    }

    #[inline]
    fn send_delivery(
        &mut self,
        conn: ConnId,
        frames: &DeliveryFrames,
        kind: SendKind,
    ) -> SendStatus {
        let window_bits = match self.conns.get(conn).map(|c| &c.phase) {
            Some(Phase::WebSocket(ws)) => ws.deflate_bits,
            _ => 0,
        };
        send(
            self.conns,
            self.dirty,
            conn,
            frames.for_window(window_bits).clone(),
            kind,
            self.max_backlog_bytes,
        )
    }

    fn to_peer(&mut self, shard: usize, msg: MeshMsg) {
        self.mesh.send(shard, msg);
    }

    fn close(&mut self, conn: ConnId, why: CloseReason) {
        let Some(c) = self.conns.get_mut(conn) else {
            return;
        };
        // The hint's topic's first delivery thrown away from the queue: the client misses it.
        let first_discarded_seq = why.hint_topic().and_then(|topic| {
            c.out
                .unstarted()
                .find_map(|frame| envelope::delivery_seq(frame, topic))
        });
        if why.discards_queue() {
            let _discarded = c.out.discard_unstarted();
        }
        let frame = prepared::close_frame(why.code(), &why.reason_text(first_discarded_seq));
        begin_closing(
            self.conns,
            self.dirty,
            self.counters,
            self.compressing_subscribers,
            conn,
            self.close_deadline_ms,
            Some(frame),
        );
    }

    fn http_published(&mut self, conn: ConnRef, answer: HttpPublished) {
        self.http_answers.push((conn, answer));
    }

    fn http_history(&mut self, conn: ConnRef, answer: HttpHistory) {
        self.history_answers.push((conn, answer));
    }

    fn count(&mut self, metric: Metric, n: u64) {
        self.counters.add(metric, n);
    }

    fn now_us(&self) -> u64 {
        self.now_us
    }

    fn fanned_out(&mut self, topic: &str, queued: u64, sequenced_us: u64) {
        // Every connection that got the frame sits before this position of the FIFO dirty
        // list (appended now or waiting already): see `metrics::fanout`.
        let mark = self.dirty_popped + self.dirty.len() as u64;
        let tracked = self
            .fanout
            .fanned_out(topic, queued, sequenced_us, mark, self.shared_fanout);
        if tracked == Tracked::SeriesFull {
            self.counters.incr(Metric::FanoutTopicSeriesFull);
        }
    }
}
