//! Loss, duplicate and order accounting per stream, where a stream is one (subscriber, topic,
//! publisher) triple whose messages carry consecutive sequence numbers from 0. Pure data.
//!
//! Memory: 8 bytes per stream, plus a list of missing ranges only for streams that have gaps
//! (bounded by `MAX_GAPS_PER_STREAM`), so 10,000 subscribers x 100 publishers cost 8 MB.

use std::collections::HashMap;

/// Missing ranges remembered per stream; past this, the oldest range is written off as lost
/// and a late arrival from it is counted as a duplicate.
pub(crate) const MAX_GAPS_PER_STREAM: usize = 1024;

/// What one arrival was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Arrival {
    /// The next expected message.
    InOrder,
    /// Ahead of the next expected: `skipped` messages are now missing (maybe late, maybe lost).
    Ahead { skipped: u64 },
    /// One of the missing messages, arriving after a later one.
    Late,
    /// Already received (or written off long ago).
    Duplicate,
}

#[derive(Debug, Default)]
pub(crate) struct Tracker {
    next: Vec<u64>,
    gaps: HashMap<u32, Vec<(u64, u64)>>,
    written_off: u64,
    pub duplicates: u64,
    pub out_of_order: u64,
    pub received: u64,
}

impl Tracker {
    /// Adds `count` streams and returns the index of the first.
    pub(crate) fn add_streams(&mut self, count: usize) -> u32 {
        let base = self.next.len();
        self.next.resize(base + count, 0);
        u32::try_from(base).expect("fewer than 4 billion streams")
    }

    /// Records the arrival of `seq` on `stream`.
    pub(crate) fn observe(&mut self, stream: u32, seq: u64) -> Arrival {
        let next = &mut self.next[stream as usize];
        if seq == *next {
            *next += 1;
            self.received += 1;
            return Arrival::InOrder;
        }
        if seq > *next {
            let skipped = seq - *next;
            let gaps = self.gaps.entry(stream).or_default();
            gaps.push((*next, seq));
            if gaps.len() > MAX_GAPS_PER_STREAM {
                let (a, b) = gaps.remove(0);
                self.written_off += b - a;
            }
            *next = seq + 1;
            self.received += 1;
            return Arrival::Ahead { skipped };
        }
        if let Some(gaps) = self.gaps.get_mut(&stream) {
            if let Some(i) = gaps.iter().position(|&(a, b)| a <= seq && seq < b) {
                let (a, b) = gaps[i];
                match (seq == a, seq + 1 == b) {
                    (true, true) => {
                        gaps.remove(i);
                    }
                    (true, false) => gaps[i].0 = seq + 1,
                    (false, true) => gaps[i].1 = seq,
                    (false, false) => {
                        gaps[i].1 = seq;
                        gaps.insert(i + 1, (seq + 1, b));
                    }
                }
                if gaps.is_empty() {
                    self.gaps.remove(&stream);
                }
                self.out_of_order += 1;
                self.received += 1;
                return Arrival::Late;
            }
        }
        self.duplicates += 1;
        Arrival::Duplicate
    }

    /// Messages of `stream` never received, given that `published` were sent on it.
    pub(crate) fn lost(&self, stream: u32, published: u64) -> u64 {
        let next = self.next[stream as usize];
        let in_gaps: u64 = self
            .gaps
            .get(&stream)
            .map_or(0, |g| g.iter().map(|&(a, b)| b - a).sum());
        in_gaps + published.saturating_sub(next)
    }

    /// Messages written off because a stream had too many gaps; not included in
    /// [`Tracker::lost`], so add them to the sum over streams.
    pub(crate) fn written_off(&self) -> u64 {
        self.written_off
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order_stream_loses_only_the_unsent_tail() {
        let mut t = Tracker::default();
        let s = t.add_streams(2);
        for n in 0..10 {
            assert_eq!(t.observe(s, n), Arrival::InOrder);
        }
        assert_eq!(t.lost(s, 10), 0);
        assert_eq!(t.lost(s, 12), 2, "published but never received");
        assert_eq!(
            t.lost(s + 1, 5),
            5,
            "a stream that received nothing lost everything"
        );
        assert_eq!(t.lost(s, 10) + t.lost(s + 1, 10) + t.written_off(), 10);
    }

    #[test]
    fn gaps_late_arrivals_and_duplicates() {
        let mut t = Tracker::default();
        let s = t.add_streams(1);
        assert_eq!(t.observe(s, 0), Arrival::InOrder);
        assert_eq!(t.observe(s, 5), Arrival::Ahead { skipped: 4 });
        assert_eq!(t.lost(s, 6), 4);
        assert_eq!(t.observe(s, 3), Arrival::Late);
        assert_eq!(t.observe(s, 3), Arrival::Duplicate);
        assert_eq!(t.observe(s, 1), Arrival::Late);
        assert_eq!(t.observe(s, 4), Arrival::Late);
        assert_eq!(t.observe(s, 5), Arrival::Duplicate);
        assert_eq!(t.observe(s, 0), Arrival::Duplicate);
        assert_eq!(t.lost(s, 6), 1, "only 2 is still missing");
        assert_eq!(t.observe(s, 2), Arrival::Late);
        assert_eq!(t.lost(s, 6), 0);
        assert_eq!((t.duplicates, t.out_of_order, t.received), (3, 4, 6));
    }

    #[test]
    fn too_many_gaps_are_written_off_not_forgotten() {
        let mut t = Tracker::default();
        let s = t.add_streams(1);
        for i in 0..(MAX_GAPS_PER_STREAM as u64 + 10) {
            t.observe(s, 2 * i + 1); // every even number missing
        }
        let published = 2 * (MAX_GAPS_PER_STREAM as u64 + 10);
        assert_eq!(t.written_off(), 10);
        assert_eq!(t.lost(s, published) + t.written_off(), published / 2);
        assert_eq!(
            t.observe(s, 0),
            Arrival::Duplicate,
            "written-off arrivals are duplicates"
        );
    }
}
