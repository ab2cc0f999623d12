//! Resume accounting for the reconnect scenarios (`--reconnect-every`, `--drop-all-at`): per
//! (subscriber, topic), the broker seq and epoch last seen, the `since` to resume from, and
//! what each reconnect brought: messages recovered from history, messages lost (the broker
//! said `recovered:false`, or a seq was skipped), duplicates (a seq seen again), and the time
//! from the reconnect to caught up (the last replayed message, or the ack when there was
//! nothing to replay). Pure data: the worker feeds it broker seqs, acks and clock readings.

use hdrhistogram::Histogram;

/// A `since` seq past any topic's top: nothing is replayed and the ack tells the top and the
/// epoch (docs/protocol.md, "Resume"). The first subscription starts live this way.
pub(crate) const LIVE_SEQ: u64 = 9_007_199_254_740_991;

/// Counts over all reconnects of a thread (merged over threads for the report).
#[derive(Debug)]
pub(crate) struct ResumeStats {
    /// Connections dropped and opened again with `since`.
    pub reconnects: u64,
    /// Resume acks with `recovered: true` / `false`.
    pub acks_recovered: u64,
    pub acks_lost: u64,
    /// Messages replayed from history after a resume ack (seq up to the ack's top).
    pub recovered: u64,
    /// Messages a subscriber never got across a reconnect: `top - since` of a
    /// `recovered:false` ack in the same epoch, plus seqs skipped after a resume.
    pub lost: u64,
    /// `recovered:false` acks in another epoch: how much was lost is unknown.
    pub epoch_changes: u64,
    /// Deliveries of a seq already seen.
    pub duplicates: u64,
    /// Reconnect (the new connection opened) to caught up, in nanoseconds.
    pub catch_up_ns: Histogram<u64>,
}

impl Default for ResumeStats {
    fn default() -> Self {
        ResumeStats {
            reconnects: 0,
            acks_recovered: 0,
            acks_lost: 0,
            recovered: 0,
            lost: 0,
            epoch_changes: 0,
            duplicates: 0,
            catch_up_ns: Histogram::new_with_bounds(1_000, 3_600_000_000_000, 3)
                .expect("valid bounds"),
        }
    }
}

impl ResumeStats {
    /// Adds another thread's counts.
    pub(crate) fn merge(&mut self, other: &ResumeStats) {
        self.reconnects += other.reconnects;
        self.acks_recovered += other.acks_recovered;
        self.acks_lost += other.acks_lost;
        self.recovered += other.recovered;
        self.lost += other.lost;
        self.epoch_changes += other.epoch_changes;
        self.duplicates += other.duplicates;
        let _ = self.catch_up_ns.add(&other.catch_up_ns);
    }

    /// Reconnects whose catch-up was measured (the rest were still catching up at the end).
    pub(crate) fn caught_up(&self) -> u64 {
        self.catch_up_ns.len()
    }
}

/// One reconnect under way: when it started and, once acked, the seq that completes it.
#[derive(Debug, Clone, Copy)]
struct Pending {
    started_ns: u64,
    /// The ack's top when a replay up to it is expected.
    until: Option<u64>,
}

/// What a subscriber knows of one topic.
#[derive(Debug, Default, Clone)]
pub(crate) struct TopicResume {
    last: Option<u64>,
    epoch: Option<String>,
    pending: Option<Pending>,
}

impl TopicResume {
    /// The URL form of where to resume `topic` from: `topic:seq:epoch`, or a live start.
    pub(crate) fn since(&self, topic: &str) -> String {
        match (&self.epoch, self.last) {
            (Some(epoch), Some(last)) => format!("{topic}:{last}:{epoch}"),
            (Some(epoch), None) => format!("{topic}:0:{epoch}"),
            _ => format!("{topic}:{LIVE_SEQ}"),
        }
    }

    /// A new connection is being opened to resume (at `now_ns`).
    pub(crate) fn reconnecting(&mut self, now_ns: u64, stats: &mut ResumeStats) {
        stats.reconnects += 1;
        self.pending = Some(Pending {
            started_ns: now_ns,
            until: None,
        });
    }

    /// The resume ack: the topic's `top` and `epoch`, and whether the gap was recovered.
    pub(crate) fn on_ack(
        &mut self,
        top: u64,
        epoch: &str,
        recovered: bool,
        now_ns: u64,
        stats: &mut ResumeStats,
    ) {
        let same_epoch = self.epoch.as_deref() == Some(epoch);
        let first = self.epoch.is_none();
        self.epoch = Some(epoch.to_string());
        if first {
            // The first (live) subscription: counting starts at the top.
            self.last = Some(top);
            self.pending = None;
            return;
        }
        if recovered {
            stats.acks_recovered += 1;
        } else {
            stats.acks_lost += 1;
            match (same_epoch, self.last) {
                (true, Some(last)) => stats.lost += top.saturating_sub(last),
                _ => stats.epoch_changes += 1,
            }
            self.last = Some(top);
        }
        let last = self.last.unwrap_or(0);
        match self.pending.as_mut() {
            Some(pending) if recovered && top > last => pending.until = Some(top),
            Some(pending) => {
                let _ = stats
                    .catch_up_ns
                    .record(now_ns.saturating_sub(pending.started_ns).max(1_000));
                self.pending = None;
            }
            None => {}
        }
    }

    /// A delivery of broker seq `seq` at `now_ns`.
    pub(crate) fn on_message(&mut self, seq: u64, now_ns: u64, stats: &mut ResumeStats) {
        if let Some(last) = self.last {
            if seq <= last {
                stats.duplicates += 1;
                return;
            }
            if seq > last + 1 && self.epoch.is_some() {
                stats.lost += seq - last - 1;
            }
        }
        self.last = Some(seq);
        if let Some(pending) = self.pending {
            if let Some(until) = pending.until {
                stats.recovered += 1;
                if seq >= until {
                    let _ = stats
                        .catch_up_ns
                        .record(now_ns.saturating_sub(pending.started_ns).max(1_000));
                    self.pending = None;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acked(t: &mut TopicResume, top: u64, epoch: &str, recovered: bool, s: &mut ResumeStats) {
        t.on_ack(top, epoch, recovered, 0, s);
    }

    #[test]
    fn a_live_start_then_a_recovered_reconnect_counts_the_replay_and_the_catch_up() {
        let mut s = ResumeStats::default();
        let mut t = TopicResume::default();
        assert_eq!(t.since("news"), format!("news:{LIVE_SEQ}"));
        acked(&mut t, 40, "Ep", true, &mut s);
        for seq in 41..=45 {
            t.on_message(seq, 0, &mut s);
        }
        assert_eq!(t.since("news"), "news:45:Ep");
        t.reconnecting(1_000_000, &mut s);
        t.on_ack(50, "Ep", true, 2_000_000, &mut s);
        assert_eq!(s.caught_up(), 0, "still replaying");
        for seq in 46..=50 {
            t.on_message(seq, 5_000_000, &mut s);
        }
        t.on_message(51, 6_000_000, &mut s); // live
        assert_eq!((s.reconnects, s.acks_recovered, s.recovered), (1, 1, 5));
        assert_eq!((s.lost, s.duplicates, s.acks_lost), (0, 0, 0));
        assert_eq!(s.caught_up(), 1);
        let ms = s.catch_up_ns.max() as f64 / 1e6;
        assert!((3.99..=4.01).contains(&ms), "{ms}");
    }

    #[test]
    fn a_lost_resume_counts_what_was_missed_and_catches_up_at_the_ack() {
        let mut s = ResumeStats::default();
        let mut t = TopicResume::default();
        acked(&mut t, 0, "Ep", true, &mut s);
        for seq in 1..=10 {
            t.on_message(seq, 0, &mut s);
        }
        t.reconnecting(0, &mut s);
        t.on_ack(110, "Ep", false, 7_000_000, &mut s);
        assert_eq!((s.acks_lost, s.lost, s.caught_up()), (1, 100, 1));
        t.on_message(111, 0, &mut s);
        assert_eq!(s.lost, 100, "live again from the top");
        // Another incarnation: the loss is unknown.
        t.reconnecting(0, &mut s);
        t.on_ack(3, "New", false, 0, &mut s);
        assert_eq!((s.epoch_changes, s.lost), (1, 100));
        assert_eq!(t.since("news"), "news:3:New");
    }

    #[test]
    fn duplicates_and_skips_after_a_resume_are_counted() {
        let mut s = ResumeStats::default();
        let mut t = TopicResume::default();
        acked(&mut t, 5, "Ep", true, &mut s);
        t.reconnecting(0, &mut s);
        t.on_ack(8, "Ep", true, 0, &mut s);
        t.on_message(6, 0, &mut s);
        t.on_message(6, 0, &mut s); // a duplicate
        t.on_message(8, 0, &mut s); // 7 skipped
        assert_eq!(
            (s.duplicates, s.lost, s.recovered, s.caught_up()),
            (1, 1, 2, 1)
        );
        // Nothing missed: caught up at the ack.
        t.reconnecting(0, &mut s);
        t.on_ack(8, "Ep", true, 0, &mut s);
        assert_eq!((s.acks_recovered, s.caught_up()), (2, 2));
        let mut other = ResumeStats::default();
        other.merge(&s);
        assert_eq!(
            (other.reconnects, other.duplicates, other.caught_up()),
            (2, 1, 2)
        );
    }
}
