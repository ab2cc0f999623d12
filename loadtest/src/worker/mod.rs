//! One worker thread: its own mio Poll driving a share of the connections. This file owns the
//! loop (open, publish, poll, read) and what the thread reports; `connect`, `publish` and
//! `receive` own those steps. Threads share nothing on the hot path: they publish plain
//! counters to `Shared` once per loop turn and a histogram copy twice a second.

mod conn;
mod connect;
mod encode;
mod error;
mod publish;
mod receive;
mod reconnect;
mod shared;

use std::collections::VecDeque;
use std::io;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use hdrhistogram::Histogram;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};

use crate::sys::{self, TimerFd};
use crate::tracker::Tracker;

use conn::{Conn, Phase};
use encode::Encoder;
pub(crate) use shared::{
    new_histogram, PublishMode, Reconnect, Role, RunConfig, Shared, ThreadResult,
};

/// Socket reads of one connection per loop turn before others get a go (edge-triggered, so a
/// connection that hit the cap is revisited with a zero poll timeout).
const MAX_READS_PER_TURN: usize = 8;
/// Messages one publisher takes off its schedule per turn before others get a go.
const MAX_PUBLISHES_PER_TURN: u64 = 256;
/// Unwritten bytes per publisher after which it stops taking messages off its schedule: the
/// broker is not reading, so further messages wait (and are stamped late) instead of piling
/// up in memory.
const MAX_UNWRITTEN_BYTES: usize = 1 << 20;
/// Handshakes in progress per thread; more would overflow the broker's listen backlog and the
/// SYN retry (1 s) would be measured as connect time.
const MAX_HANDSHAKES_IN_FLIGHT: usize = 256;
/// A connection that has not finished its handshake by then fails.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(15);
/// Longest poll sleep, so the flags in `Shared` are noticed promptly.
const MAX_POLL_SLEEP: Duration = Duration::from_millis(50);
/// Socket read size (one buffer per thread).
const READ_BUFFER_BYTES: usize = 256 * 1024;
/// How often the thread's histogram is copied to `Shared` for the progress line.
const SNAPSHOT_INTERVAL_NS: u64 = 500_000_000;
/// How often connections stuck before ready are checked against `HANDSHAKE_TIMEOUT`.
const SWEEP_INTERVAL_NS: u64 = 1_000_000_000;
const TIMER: Token = Token(usize::MAX);

/// This thread's counts, handed back in [`ThreadResult`].
#[derive(Default)]
struct Stats {
    tracker: Tracker,
    subscriber_streams: Vec<(u32, u32)>,
    published_in_window: u64,
    delivered_in_window: u64,
    delivered_total: u64,
    published_total: u64,
    broker_dropped: u64,
    foreign: u64,
    misrouted: u64,
    protocol_errors: u64,
    disconnects: u64,
    http_errors: u64,
    handshake_ns_sum: u64,
    handshake_ns_max: u64,
    handshakes: u64,
    resume: crate::resume::ResumeStats,
}

/// Timing of the run in ns since the epoch, once the main thread has started publishing.
#[derive(Debug, Clone, Copy)]
struct Window {
    start_ns: u64,
    measure_ns: u64,
    end_ns: u64,
}

/// The earlier of two optional deadlines.
fn earliest(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

pub(crate) struct Worker {
    index: usize,
    cfg: Arc<RunConfig>,
    shared: Arc<Shared>,
    poll: Poll,
    timer: TimerFd,
    conns: Vec<Conn>,
    pending: VecDeque<(u64, Role)>,
    /// Connections opened so far, for `--connect-rate` pacing from `thread_start_ns`.
    opened: u64,
    thread_start_ns: u64,
    handshakes_in_flight: usize,
    stats: Stats,
    histogram: Histogram<u64>,
    encoder: Encoder,
    window: Option<Window>,
    cpu_at_measure: Option<Duration>,
    cpu_in_window: Option<Duration>,
    reported_published: u64,
    reported_delivered: u64,
    topic_published_reported: Vec<u64>,
    topic_published: Vec<u64>,
    last_snapshot_ns: u64,
    last_sweep_ns: u64,
    /// Connections cut short by the read cap, read again next turn.
    revisit: Vec<usize>,
    /// Indices into `conns` of the publishers: the per-turn publishing pass visits only
    /// these (scanning all 10,000 connections every turn was the client's main cost).
    publisher_conns: Vec<usize>,
    /// Reconnect scenarios: (when, subscriber) drops to make, soonest first.
    drops: std::collections::BinaryHeap<std::cmp::Reverse<(u64, u32)>>,
    /// Subscriber -> index of its current connection.
    subscriber_conn: std::collections::HashMap<u32, usize>,
    /// Dropped subscribers waiting to reconnect, in due order: (when, the old connection).
    rejoins: VecDeque<(u64, usize)>,
}

impl Worker {
    /// `roles` are (global connection index, role) for this thread's connections.
    pub(crate) fn new(
        index: usize,
        cfg: Arc<RunConfig>,
        shared: Arc<Shared>,
        roles: Vec<(u64, Role)>,
    ) -> io::Result<Worker> {
        let poll = Poll::new()?;
        let timer = TimerFd::new()?;
        poll.registry()
            .register(&mut SourceFd(&timer.raw_fd()), TIMER, Interest::READABLE)?;
        let topics = cfg.plan.topic_count() as usize;
        let seed = 0x9E37_79B9_7F4A_7C15
            ^ (index as u64 + 1).wrapping_mul(0xBF58_476D_1CE4_E5B9)
            ^ shared.now_ns();
        Ok(Worker {
            index,
            cfg,
            shared,
            poll,
            timer,
            conns: Vec::with_capacity(roles.len()),
            pending: roles.into(),
            opened: 0,
            thread_start_ns: 0,
            handshakes_in_flight: 0,
            stats: Stats::default(),
            histogram: new_histogram(),
            encoder: Encoder::new(seed),
            window: None,
            cpu_at_measure: None,
            cpu_in_window: None,
            reported_published: 0,
            reported_delivered: 0,
            topic_published_reported: vec![0; topics],
            topic_published: vec![0; topics],
            last_snapshot_ns: 0,
            last_sweep_ns: 0,
            revisit: Vec::new(),
            publisher_conns: Vec::new(),
            drops: std::collections::BinaryHeap::new(),
            subscriber_conn: std::collections::HashMap::new(),
            rejoins: VecDeque::new(),
        })
    }

    /// Runs until the main thread sets `stop`.
    pub(crate) fn run(mut self) -> ThreadResult {
        let mut events = Events::with_capacity(1024);
        let mut rbuf = vec![0u8; READ_BUFFER_BYTES];
        self.thread_start_ns = self.shared.now_ns();
        while !self.shared.stop.load(Relaxed) {
            let now = self.shared.now_ns();
            let next_connect_ns = self.open_pending(now);
            let next_due_ns = earliest(next_connect_ns, self.drive_window(now));
            let next_due_ns = earliest(next_due_ns, self.drive_reconnects(now));
            if now - self.last_sweep_ns > SWEEP_INTERVAL_NS {
                self.last_sweep_ns = now;
                self.sweep_handshake_timeouts(now);
            }
            self.report(now);
            let timeout = self.poll_timeout(now, next_due_ns);
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() != io::ErrorKind::Interrupted {
                    self.shared.note_error(format_args!("poll failed: {e}"));
                    break;
                }
            }
            self.on_events(&events, &mut rbuf);
        }
        self.finish()
    }

    /// Starts publishing once the main thread says so, samples this thread's CPU at the
    /// window's edges, and sends what publishers owe. Returns when something is next due.
    fn drive_window(&mut self, now: u64) -> Option<u64> {
        if self.window.is_none() {
            let start_ns = self.shared.start_ns.load(Relaxed);
            if start_ns != 0 {
                self.begin_publishing(start_ns);
            }
        }
        let w = self.window?;
        if self.cpu_at_measure.is_none() && now >= w.measure_ns {
            self.cpu_at_measure = Some(sys::thread_cpu());
        }
        if self.cpu_in_window.is_none() && now >= w.end_ns {
            let at_start = self.cpu_at_measure.unwrap_or_default();
            self.cpu_in_window = Some(sys::thread_cpu().saturating_sub(at_start));
        }
        let edges = [w.measure_ns, w.end_ns]
            .into_iter()
            .filter(|&t| t > now)
            .min();
        let (due, more) = self.publish_all_due(now, w);
        if more {
            Some(now)
        } else {
            earliest(edges, due)
        }
    }

    /// How long to poll: not at all with reads left over, until `next_due_ns` if that is
    /// sooner than `MAX_POLL_SLEEP` (by the timerfd: mio's own timeout is rounded up to a
    /// millisecond), else `MAX_POLL_SLEEP`.
    fn poll_timeout(&mut self, now: u64, next_due_ns: Option<u64>) -> Duration {
        if !self.revisit.is_empty() {
            return Duration::ZERO;
        }
        let Some(due) = next_due_ns else {
            return MAX_POLL_SLEEP;
        };
        let wait = Duration::from_nanos(due.saturating_sub(now));
        if wait >= MAX_POLL_SLEEP || wait.is_zero() {
            return wait.min(MAX_POLL_SLEEP);
        }
        if self.timer.arm(wait).is_ok() {
            MAX_POLL_SLEEP
        } else {
            wait
        }
    }

    /// Flushes or completes connects on writable sockets, then reads the readable ones (and
    /// those left over from last turn) in index order.
    fn on_events(&mut self, events: &Events, rbuf: &mut [u8]) {
        let mut work: Vec<usize> = std::mem::take(&mut self.revisit);
        for event in events.iter() {
            if event.token() == TIMER {
                self.timer.clear();
                continue;
            }
            let i = event.token().0;
            if event.is_writable() || event.is_write_closed() || event.is_error() {
                self.on_writable(i);
            }
            if event.is_readable() || event.is_read_closed() || event.is_error() {
                work.push(i);
            }
        }
        work.sort_unstable();
        work.dedup();
        for i in work {
            if self.conns[i].phase == Phase::Closed {
                continue;
            }
            self.on_readable(i, rbuf);
            if self.conns[i].more_to_read {
                self.revisit.push(i);
            }
        }
    }

    /// Adds this turn's counts to `Shared`, and copies the histogram there now and then.
    fn report(&mut self, now: u64) {
        let s = &self.stats;
        let shared = &self.shared;
        shared
            .published
            .fetch_add(s.published_total - self.reported_published, Relaxed);
        self.reported_published = s.published_total;
        shared
            .delivered
            .fetch_add(s.delivered_total - self.reported_delivered, Relaxed);
        self.reported_delivered = s.delivered_total;
        let counts = self.topic_published.iter();
        for (k, (&count, reported)) in counts.zip(&mut self.topic_published_reported).enumerate() {
            if count != *reported {
                shared.topic_published[k].fetch_add(count - *reported, Relaxed);
                *reported = count;
            }
        }
        if now - self.last_snapshot_ns >= SNAPSHOT_INTERVAL_NS {
            self.last_snapshot_ns = now;
            let mut h = shared.histograms[self.index]
                .lock()
                .expect("no panics while holding");
            let _ = h.set_to(&self.histogram);
        }
    }

    fn finish(mut self) -> ThreadResult {
        let now = self.shared.now_ns();
        let mut published = Vec::new();
        let mut unsent = 0;
        for p in self.conns.iter().filter_map(|c| c.publisher.as_ref()) {
            for (slot, &k) in p.topics.iter().enumerate() {
                published.push((p.id, k, p.seq[slot]));
            }
            if let Some(s) = &p.schedule {
                unsent += s.backlog(now);
            }
        }
        let cpu_in_window = self.cpu_in_window.unwrap_or_else(|| {
            sys::thread_cpu().saturating_sub(self.cpu_at_measure.unwrap_or_default())
        });
        self.last_snapshot_ns = 0;
        self.report(now);
        let s = self.stats;
        ThreadResult {
            histogram: self.histogram,
            tracker: s.tracker,
            subscriber_streams: s.subscriber_streams,
            published,
            published_in_window: s.published_in_window,
            delivered_in_window: s.delivered_in_window,
            delivered_total: s.delivered_total,
            unsent,
            broker_dropped: s.broker_dropped,
            foreign: s.foreign,
            misrouted: s.misrouted,
            protocol_errors: s.protocol_errors,
            disconnects: s.disconnects,
            http_errors: s.http_errors,
            cpu_in_window,
            handshake_ns_sum: s.handshake_ns_sum,
            handshake_ns_max: s.handshake_ns_max,
            handshakes: s.handshakes,
            resume: s.resume,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn earliest_deadline() {
        assert_eq!(earliest(None, None), None);
        assert_eq!(earliest(Some(3), None), Some(3));
        assert_eq!(earliest(None, Some(4)), Some(4));
        assert_eq!(earliest(Some(5), Some(4)), Some(4));
    }
}
