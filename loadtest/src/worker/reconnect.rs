//! The reconnect scenarios (`--reconnect-every`, `--drop-all-at`): dropping subscriber
//! connections on schedule while publishing goes on, and opening their replacements, which
//! resume with `since` (the URL form) from the last seq and epoch the subscriber saw. The
//! replacement carries the subscriber's loss-accounting streams over, so losses and
//! duplicates across the reconnect are counted by the same tracker as any other.

use super::conn::Phase;
use super::shared::{Reconnect, Role};
use super::Worker;

impl Worker {
    /// Publishing starts at `start_ns` and ends at `end_ns`: plans every subscriber's first
    /// drop.
    pub(super) fn schedule_drops(&mut self, start_ns: u64, end_ns: u64) {
        let Some(reconnect) = self.cfg.reconnect else {
            return;
        };
        let subscribers = (self.cfg.total_connections - u64::from(self.cfg.plan.publishers)).max(1);
        for conn in &self.conns {
            let Role::Subscriber(s) = conn.role else {
                continue;
            };
            let at = match reconnect {
                Reconnect::Every { period } => {
                    // Staggered: subscriber s first drops s/S of a period in.
                    let period = period.as_nanos() as u64;
                    start_ns + period / subscribers * u64::from(s) + period / subscribers / 2
                }
                Reconnect::AllAt { at, .. } => start_ns + at.as_nanos() as u64,
            };
            if at < end_ns {
                self.drops.push(std::cmp::Reverse((at, s)));
            }
        }
    }

    /// Drops the subscribers due by `now` and reopens those whose time away is over. Returns
    /// when the next drop or reopen is due.
    pub(super) fn drive_reconnects(&mut self, now: u64) -> Option<u64> {
        let reconnect = self.cfg.reconnect?;
        let end_ns = self.window.map_or(u64::MAX, |w| w.end_ns);
        while let Some(&std::cmp::Reverse((at, s))) = self.drops.peek() {
            if at > now {
                break;
            }
            let _ = self.drops.pop();
            let away_ns = match reconnect {
                Reconnect::Every { period } => {
                    let next = at + period.as_nanos() as u64;
                    if next < end_ns {
                        self.drops.push(std::cmp::Reverse((next, s)));
                    }
                    0
                }
                Reconnect::AllAt { after, .. } => after.as_nanos() as u64,
            };
            if let Some(&i) = self.subscriber_conn.get(&s) {
                if self.conns[i].phase == Phase::Ready {
                    self.drop_subscriber(i);
                    self.rejoins.push_back((now + away_ns, i));
                }
            }
        }
        while let Some(&(at, old)) = self.rejoins.front() {
            if at > now {
                break;
            }
            let _ = self.rejoins.pop_front();
            self.rejoin(old, now);
        }
        let next_drop = self.drops.peek().map(|r| r.0 .0);
        let next_rejoin = self.rejoins.front().map(|r| r.0);
        super::earliest(next_drop, next_rejoin)
    }

    /// Closes subscriber connection `i` from our side, as a dropped network would (no close
    /// handshake), keeping what it knows for its replacement.
    fn drop_subscriber(&mut self, i: usize) {
        let conn = &mut self.conns[i];
        conn.phase = Phase::Closed;
        let _ = self.poll.registry().deregister(&mut conn.stream);
        let _ = conn.stream.shutdown(std::net::Shutdown::Both);
    }

    /// Opens the replacement of dropped connection `old` in its slot, resuming where it
    /// stopped.
    fn rejoin(&mut self, old: usize, now: u64) {
        let (global, role) = (self.conns[old].global, self.conns[old].role);
        let streams = std::mem::take(&mut self.conns[old].streams);
        let resume = self.conns[old].resume.take();
        let Some(i) = self.open(global, role, now, Some(old)) else {
            // Counted as a failed connection; the subscriber stays away.
            self.conns[old].streams = streams;
            self.conns[old].resume = resume;
            return;
        };
        let conn = &mut self.conns[i];
        conn.reconnected = true;
        conn.streams = streams;
        conn.resume = resume;
        if let Some(resume) = conn.resume.as_mut() {
            resume.reconnecting(now, &mut self.stats.resume);
        }
    }
}
