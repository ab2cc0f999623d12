//! A recording [`Outputs`] for the broker core's tests: the shard's real write queue per
//! connection (so the budget rule is the real one) plus every frame it was given, and every
//! peer message, close, HTTP answer and counter, kept for inspection. Test-only.

use std::collections::BTreeMap;

use bytes::Bytes;

use crate::mesh::{ConnRef, MeshMsg};
use crate::metrics::Metric;
use crate::proto::prepared::split_server_frame;
use crate::shard::write_queue::WriteQueue;

use super::{CloseReason, ConnId, HttpHistory, HttpPublished, Outputs, SendKind, SendStatus};

/// One simulated connection's output.
#[derive(Debug, Default)]
pub(super) struct FakeConn {
    /// Frames queued and not yet "written" by the test.
    pub(super) queue: WriteQueue,
    /// Everything ever queued, in order.
    pub(super) all: Vec<Bytes>,
    pub(super) closed: Option<CloseReason>,
    /// The close frame's reason text.
    pub(super) close_text: Option<String>,
}

/// The recording fake.
#[derive(Debug)]
pub(super) struct Recorder {
    pub(super) budget: usize,
    pub(super) conns: BTreeMap<ConnId, FakeConn>,
    pub(super) peers: Vec<(usize, MeshMsg)>,
    pub(super) http: Vec<(ConnRef, HttpPublished)>,
    pub(super) history: Vec<(ConnRef, HttpHistory)>,
    pub(super) counts: BTreeMap<&'static str, u64>,
    /// What `now_us` answers (the driver's clock).
    pub(super) now_us: u64,
    /// Every `fanned_out` call: (topic, queued, sequenced_us).
    pub(super) fanouts: Vec<(String, u64, u64)>,
}

impl Recorder {
    pub(super) fn new(budget: usize) -> Recorder {
        Recorder {
            budget,
            conns: BTreeMap::new(),
            peers: Vec::new(),
            http: Vec::new(),
            history: Vec::new(),
            counts: BTreeMap::new(),
            now_us: 0,
            fanouts: Vec::new(),
        }
    }

    /// The frames connection `conn` has been sent, as text (binary frames lossily).
    pub(super) fn texts(&self, conn: ConnId) -> Vec<String> {
        self.conns
            .get(&conn)
            .map_or_else(Vec::new, |c| c.all.iter().map(|f| frame_text(f)).collect())
    }

    /// The client read everything queued on `conn`.
    pub(super) fn drain(&mut self, conn: ConnId) {
        if let Some(c) = self.conns.get_mut(&conn) {
            let mut sink = Vec::new();
            let _written = c.queue.flush(&mut sink).expect("a Vec takes everything");
        }
    }

    pub(super) fn count(&self, metric: Metric) -> u64 {
        self.counts.get(metric_name(metric)).copied().unwrap_or(0)
    }
}

fn metric_name(metric: Metric) -> &'static str {
    crate::metrics::METRICS
        .iter()
        .find(|(m, ..)| *m == metric)
        .map_or("?", |(_, name, ..)| *name)
}

/// The payload of an unmasked server frame (the header skipped), as text.
pub(super) fn frame_text(frame: &[u8]) -> String {
    let (_, payload) = split_server_frame(frame).expect("a server frame");
    String::from_utf8_lossy(payload).into_owned()
}

impl Outputs for Recorder {
    fn send(&mut self, conn: ConnId, frame: Bytes, kind: SendKind) -> SendStatus {
        let budget = self.budget;
        let c = self.conns.entry(conn).or_default();
        if c.closed.is_some() && kind != SendKind::Final {
            return SendStatus::Closed;
        }
        // The real queue's budget rule, so the fake cannot drift from it.
        let status = c.queue.offer(frame.clone(), kind, budget);
        if status != SendStatus::OverBudget {
            c.all.push(frame);
        }
        status
    }

    fn to_peer(&mut self, shard: usize, msg: MeshMsg) {
        self.peers.push((shard, msg));
    }

    fn close(&mut self, conn: ConnId, why: CloseReason) {
        let c = self.conns.entry(conn).or_default();
        assert!(c.closed.is_none(), "closed twice: {conn}");
        // What the shard writes in the close frame (see `shard/output.rs`).
        let first_discarded_seq = why.hint_topic().and_then(|topic| {
            c.queue
                .unstarted()
                .find_map(|frame| crate::proto::envelope::delivery_seq(frame, topic))
        });
        c.close_text = Some(why.reason_text(first_discarded_seq));
        if why.discards_queue() {
            let _discarded = c.queue.discard_unstarted();
        }
        c.closed = Some(why);
    }

    fn http_published(&mut self, conn: ConnRef, answer: HttpPublished) {
        self.http.push((conn, answer));
    }

    fn http_history(&mut self, conn: ConnRef, answer: HttpHistory) {
        self.history.push((conn, answer));
    }

    fn count(&mut self, metric: Metric, n: u64) {
        *self.counts.entry(metric_name(metric)).or_default() += n;
    }

    fn now_us(&self) -> u64 {
        self.now_us
    }

    fn fanned_out(&mut self, topic: &str, queued: u64, sequenced_us: u64) {
        self.fanouts.push((topic.to_string(), queued, sequenced_us));
    }
}
