//! Publishing: the schedules once the main thread says go, and each turn sending what every
//! publisher owes (open loop with `--rate`, an ack window with `--max`), within the per-turn
//! and unwritten-bytes caps.

use crate::schedule::Schedule;

use super::conn::{Phase, PubState};
use super::encode::Wire;
use super::error::ConnError;
use super::shared::PublishMode;
use super::{Window, Worker, MAX_PUBLISHES_PER_TURN, MAX_UNWRITTEN_BYTES};

/// The intended send time of `p`'s next message at `now`, or `None` if it owes nothing now:
/// the next due entry of its schedule (`--rate`), or now while its ack window has room and the
/// measured window has not ended (`--max`).
pub(super) fn next_intended(
    p: &mut PubState,
    mode: PublishMode,
    now: u64,
    w: Window,
) -> Option<u64> {
    match (&mut p.schedule, mode) {
        (Some(s), _) => s.take_due(now).map(|(_, t)| t),
        (None, PublishMode::Max { window }) => {
            (now < w.end_ns && p.in_flight < window).then_some(now)
        }
        (None, PublishMode::Rate(_)) => None,
    }
}

impl Worker {
    /// The main thread set the start: fixes the window and gives `--rate` publishers their
    /// schedules.
    pub(super) fn begin_publishing(&mut self, start_ns: u64) {
        let measure_ns = start_ns + self.cfg.warmup.as_nanos() as u64;
        let end_ns = measure_ns + self.cfg.duration.as_nanos() as u64;
        self.window = Some(Window {
            start_ns,
            measure_ns,
            end_ns,
        });
        self.schedule_drops(start_ns, end_ns);
        let PublishMode::Rate(rate) = self.cfg.mode else {
            return;
        };
        for conn in &mut self.conns {
            if let Some(p) = conn.publisher.as_mut() {
                let publishers = self.cfg.plan.publishers;
                p.schedule = Some(Schedule::new(start_ns, end_ns, rate, p.id, publishers));
            }
        }
    }

    /// Sends what every publisher owes at `now`. Returns when the next is due, and whether
    /// one stopped at the per-turn cap with more to send.
    pub(super) fn publish_all_due(&mut self, now: u64, w: Window) -> (Option<u64>, bool) {
        let mut next_due_ns: Option<u64> = None;
        let mut more = false;
        for p in 0..self.publisher_conns.len() {
            let i = self.publisher_conns[p];
            let (due, again) = self.publish_due(i, now, w);
            more |= again;
            next_due_ns = super::earliest(next_due_ns, due);
        }
        (next_due_ns, more)
    }

    /// Sends what publisher `i` owes at `now`. Returns when it is next due, and whether it
    /// stopped at the per-turn cap with more to send.
    fn publish_due(&mut self, i: usize, now: u64, w: Window) -> (Option<u64>, bool) {
        let conn = &self.conns[i];
        if conn.phase != Phase::Ready || conn.publisher.is_none() || now < w.start_ns {
            let start = conn.publisher.as_ref().map(|_| w.start_ns);
            return (start.filter(|&s| s > now), false);
        }
        let (sent, capped) = self.send_owed(i, now, w);
        if sent > 0 {
            if let Err(e) = self.conns[i].flush() {
                self.close(i, ConnError::Write(e));
                return (None, false);
            }
        }
        let p = self.conns[i].publisher.as_ref().expect("publisher");
        let next = p.schedule.as_ref().and_then(|s| s.peek()).map(|(_, t)| t);
        (next, capped)
    }

    /// Queues publisher `i`'s owed messages until it owes nothing, its queue or HTTP request
    /// is full, or the per-turn cap. Returns how many, and whether the cap stopped it.
    fn send_owed(&mut self, i: usize, now: u64, w: Window) -> (u64, bool) {
        let cfg = &self.cfg;
        let conn = &mut self.conns[i];
        let mut sent = 0;
        loop {
            let queue_full = conn.unwritten() > MAX_UNWRITTEN_BYTES;
            let p = conn.publisher.as_mut().expect("publisher");
            if queue_full || (conn.http && p.in_flight > 0) {
                return (sent, false);
            }
            if sent == MAX_PUBLISHES_PER_TURN {
                return (sent, true);
            }
            let Some(intended_ns) = next_intended(p, cfg.mode, now, w) else {
                return (sent, false);
            };
            let (stamp, slot) = p.next_stamp(intended_ns);
            let wire = if conn.http {
                p.in_flight += 1;
                Wire::Http(cfg.http.as_ref().expect("http"))
            } else {
                let acked = matches!(cfg.mode, PublishMode::Max { .. });
                Wire::WebSocket {
                    id: acked.then(|| p.take_ack_id()),
                }
            };
            let topic = &p.topic_names[slot];
            self.encoder
                .publish(wire, cfg.binary, cfg.size, topic, &stamp, &mut conn.out);
            sent += 1;
            self.stats.published_total += 1;
            self.topic_published[stamp.topic as usize] += 1;
            if intended_ns >= w.measure_ns && intended_ns < w.end_ns {
                self.stats.published_in_window += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    fn window() -> Window {
        Window {
            start_ns: 0,
            measure_ns: 100 * MS,
            end_ns: 200 * MS,
        }
    }

    #[test]
    fn max_mode_fills_the_ack_window_until_the_end() {
        let mut p = PubState::new(0, vec![0], vec!["load-0".into()]);
        let mode = PublishMode::Max { window: 2 };
        assert_eq!(next_intended(&mut p, mode, 5 * MS, window()), Some(5 * MS));
        p.take_ack_id();
        p.take_ack_id();
        assert_eq!(
            next_intended(&mut p, mode, 6 * MS, window()),
            None,
            "window full"
        );
        p.answered();
        assert_eq!(next_intended(&mut p, mode, 7 * MS, window()), Some(7 * MS));
        p.answered();
        assert_eq!(
            next_intended(&mut p, mode, 200 * MS, window()),
            None,
            "past the end"
        );
    }

    #[test]
    fn rate_mode_follows_the_schedule_only() {
        let mut p = PubState::new(0, vec![0], vec!["load-0".into()]);
        let mode = PublishMode::Rate(100.0);
        assert_eq!(
            next_intended(&mut p, mode, 5 * MS, window()),
            None,
            "no schedule yet"
        );
        p.schedule = Some(Schedule::new(0, 200 * MS, 100.0, 0, 1));
        // 35 ms late: messages 0..3 are owed, each at its own intended time.
        let owed: Vec<_> =
            std::iter::from_fn(|| next_intended(&mut p, mode, 35 * MS, window())).collect();
        assert_eq!(owed, [0, 10 * MS, 20 * MS, 30 * MS]);
    }
}
