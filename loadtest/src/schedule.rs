//! The open-loop send schedule: message `i` of a publisher is INTENDED at a fixed time decided
//! by `--rate` alone, whatever happened to earlier messages. A publisher that falls behind
//! sends late but stamps the intended time, so the backlog shows up as latency instead of
//! silently lowering the rate (coordinated omission, as Gil Tene describes it). No clocks here:
//! times are nanoseconds since the process epoch, passed in.

/// One publisher's schedule.
#[derive(Debug, Clone)]
pub(crate) struct Schedule {
    start_ns: u64,
    end_ns: u64,
    period_ns: f64,
    offset_ns: f64,
    next: u64,
}

impl Schedule {
    /// Publisher `index` of `publishers`, sharing `total_rate` messages/s between them, from
    /// `start_ns` up to (excluding) `end_ns`. Publishers are staggered by `period / publishers`
    /// so the combined stream is evenly spaced rather than in bursts of `publishers`.
    pub(crate) fn new(
        start_ns: u64,
        end_ns: u64,
        total_rate: f64,
        index: u32,
        publishers: u32,
    ) -> Schedule {
        assert!(total_rate > 0.0 && publishers > 0);
        let period_ns = 1e9 * f64::from(publishers) / total_rate;
        let offset_ns = period_ns * f64::from(index) / f64::from(publishers);
        Schedule {
            start_ns,
            end_ns,
            period_ns,
            offset_ns,
            next: 0,
        }
    }

    /// Intended send time of message `i` (computed from `i`, not accumulated, so no drift).
    pub(crate) fn intended_ns(&self, i: u64) -> u64 {
        self.start_ns + (self.offset_ns + i as f64 * self.period_ns) as u64
    }

    /// The next message not yet taken: its index and intended time, or `None` once the
    /// schedule is past its end.
    pub(crate) fn peek(&self) -> Option<(u64, u64)> {
        let t = self.intended_ns(self.next);
        (t < self.end_ns).then_some((self.next, t))
    }

    /// Takes the next message if it is due at `now_ns`.
    pub(crate) fn take_due(&mut self, now_ns: u64) -> Option<(u64, u64)> {
        let (i, t) = self.peek()?;
        if t <= now_ns {
            self.next += 1;
            Some((i, t))
        } else {
            None
        }
    }

    /// Messages that were due by `now_ns` but not taken (the publisher's backlog).
    pub(crate) fn backlog(&self, now_ns: u64) -> u64 {
        let now = now_ns.min(self.end_ns.saturating_sub(1));
        if now < self.start_ns {
            return 0;
        }
        let due = ((now - self.start_ns) as f64 - self.offset_ns) / self.period_ns;
        if due < 0.0 {
            return 0;
        }
        (due.floor() as u64 + 1).saturating_sub(self.next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: u64 = 1_000_000_000;

    #[test]
    fn intended_times_are_fixed_by_the_rate_not_by_when_we_send() {
        let mut s = Schedule::new(SECOND, 3 * SECOND, 100.0, 0, 1);
        // Nothing due before the start.
        assert_eq!(s.take_due(SECOND - 1), None);
        // Stalled for 50 ms: five messages are due and each keeps its own intended time.
        let now = SECOND + 45 * 1_000_000;
        let mut got = Vec::new();
        while let Some((i, t)) = s.take_due(now) {
            got.push((i, t));
        }
        let expected: Vec<(u64, u64)> = (0..5).map(|i| (i, SECOND + i * 10_000_000)).collect();
        assert_eq!(got, expected);
        assert_eq!(s.backlog(now), 0);
        assert_eq!(s.backlog(now + 20_000_000), 2);
    }

    #[test]
    fn whole_run_sends_rate_times_duration_without_drift() {
        let mut s = Schedule::new(0, 10 * SECOND, 1000.0, 0, 1);
        let mut n = 0;
        while s.take_due(u64::MAX).is_some() {
            n += 1;
        }
        assert_eq!(n, 10_000);
        assert_eq!(s.intended_ns(9_999), 9_999_000_000);
        assert_eq!(s.peek(), None);
    }

    #[test]
    fn publishers_are_staggered_into_one_even_stream() {
        // 4 publishers sharing 1000/s: together one message every 1 ms.
        let mut all: Vec<u64> = (0..4)
            .flat_map(|p| {
                let s = Schedule::new(0, SECOND, 1000.0, p, 4);
                (0..250).map(move |i| s.intended_ns(i))
            })
            .collect();
        all.sort_unstable();
        for (i, t) in all.iter().enumerate() {
            assert_eq!(*t, i as u64 * 1_000_000);
        }
    }
}
