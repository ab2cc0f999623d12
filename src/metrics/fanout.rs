//! One shard's fan-out latency bookkeeping: publishes whose frames wait in this shard's write
//! queues, when they were sequenced, and when the flush pass reached the last connection that
//! got them; per-topic histograms for `--metrics-topic` patterns; and the topics with the
//! largest fan-outs. Nothing here runs per delivery: one entry per (publish, shard), no clock
//! reads (the driver passes its per-phase clock in), no allocation in steady state.
//!
//! "Completed" is defined through the shard's dirty list, which is FIFO: every connection a
//! fan-out queued a frame on is in the list at a position before `popped + len` as the fan-out
//! ends (appended by it, or already waiting). Once the flush has popped that many entries in
//! total, every such connection has had its write, and the end of that flush pass is the
//! completion time. A connection whose socket buffer was full then (`crier_writes_blocked_total`)
//! is not waited for: its remainder goes out when the socket is writable again.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, PoisonError};

use super::histogram::Histogram;
use crate::topic::TopicPattern;

/// Topics one shard keeps a per-topic histogram for, at most: patterns that match more topics
/// than this stop adding series (`crier_fanout_topic_series_full_total` counts the misses).
pub const MAX_TOPIC_SERIES: usize = 256;
/// Topics in the largest-fan-out list each shard exports.
pub const TOP_FANOUT_TOPICS: usize = 10;
/// The largest-fan-out list covers the current and the previous window of this length.
pub const TOP_WINDOW_MS: u32 = 10_000;

/// What a shard publishes for `/metrics` beyond its fixed counters, behind locks that only
/// the shard (once per flush pass with a tracked topic, once per sweep) and a scrape take.
#[derive(Debug, Default)]
pub struct SharedFanout {
    /// Per-topic fan-out histograms, in slot order.
    pub topics: Mutex<Vec<(Box<str>, Histogram)>>,
    /// The largest fan-outs (deliveries of one publish on this shard), largest first.
    pub top: Mutex<Vec<(Box<str>, u64)>>,
}

impl SharedFanout {
    pub fn topics(&self) -> Vec<(Box<str>, Histogram)> {
        self.topics
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub fn top(&self) -> Vec<(Box<str>, u64)> {
        self.top
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// A fan-out whose frames are queued and not all flushed yet.
#[derive(Debug, Clone, Copy)]
struct InFlight {
    /// Done once the shard's flush has popped this many dirty-list entries in total.
    mark: u64,
    /// When the owner sequenced the publish (µs since the server started).
    sequenced_us: u64,
    /// The per-topic histogram slot, for a topic matching `--metrics-topic`.
    slot: Option<u32>,
}

/// One shard's fan-outs in flight, tracked topics and largest fan-outs.
#[derive(Debug)]
pub struct FanoutTracker {
    inflight: VecDeque<InFlight>,
    patterns: Vec<TopicPattern>,
    slots: HashMap<Box<str>, u32>,
    current: Vec<(Box<str>, u64)>,
    previous: Vec<(Box<str>, u64)>,
    window_started_ms: u32,
}

/// What [`FanoutTracker::fanned_out`] could not track.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tracked {
    Yes,
    /// The topic matches a pattern but the shard has [`MAX_TOPIC_SERIES`] topics already.
    SeriesFull,
}

impl FanoutTracker {
    pub fn new(patterns: Vec<TopicPattern>) -> FanoutTracker {
        FanoutTracker {
            inflight: VecDeque::with_capacity(64),
            patterns,
            slots: HashMap::new(),
            current: Vec::with_capacity(TOP_FANOUT_TOPICS),
            previous: Vec::with_capacity(TOP_FANOUT_TOPICS),
            window_started_ms: 0,
        }
    }

    /// A fan-out of `topic` queued its frame on `queued` local connections; the shard's dirty
    /// list will have been popped `mark` times when all of them had their write.
    pub fn fanned_out(
        &mut self,
        topic: &str,
        queued: u64,
        sequenced_us: u64,
        mark: u64,
        shared: &SharedFanout,
    ) -> Tracked {
        if queued == 0 {
            return Tracked::Yes;
        }
        self.note_size(topic, queued);
        if sequenced_us == crate::mesh::UNSTAMPED_US {
            return Tracked::Yes;
        }
        let mut tracked = Tracked::Yes;
        let slot = if self.patterns.is_empty() {
            None
        } else {
            match self.slots.get(topic) {
                Some(&slot) => Some(slot),
                None if self.patterns.iter().any(|p| p.matches(topic)) => {
                    if self.slots.len() < MAX_TOPIC_SERIES {
                        let mut topics =
                            shared.topics.lock().unwrap_or_else(PoisonError::into_inner);
                        let slot = topics.len() as u32;
                        topics.push((topic.into(), Histogram::default()));
                        self.slots.insert(topic.into(), slot);
                        Some(slot)
                    } else {
                        tracked = Tracked::SeriesFull;
                        None
                    }
                }
                None => None,
            }
        };
        self.inflight.push_back(InFlight {
            mark,
            sequenced_us,
            slot,
        });
        tracked
    }

    /// The flush pass ended at `now_us` with `popped` dirty-list entries popped in total:
    /// records every fan-out that is now complete.
    pub fn flushed(
        &mut self,
        popped: u64,
        now_us: u64,
        histogram: &mut Histogram,
        shared: &SharedFanout,
    ) {
        let mut topics = None;
        while let Some(front) = self.inflight.front() {
            if front.mark > popped {
                break;
            }
            let us = now_us.saturating_sub(front.sequenced_us);
            histogram.record(us);
            if let Some(slot) = front.slot {
                let topics = topics.get_or_insert_with(|| {
                    shared.topics.lock().unwrap_or_else(PoisonError::into_inner)
                });
                if let Some((_, h)) = topics.get_mut(slot as usize) {
                    h.record(us);
                }
            }
            self.inflight.pop_front();
        }
    }

    /// Fan-outs not yet complete.
    pub fn in_flight(&self) -> usize {
        self.inflight.len()
    }

    /// Keeps the largest fan-out per topic among the [`TOP_FANOUT_TOPICS`] largest of the
    /// window. Only a topic entering the list allocates (its name).
    fn note_size(&mut self, topic: &str, queued: u64) {
        if let Some(entry) = self.current.iter_mut().find(|(t, _)| **t == *topic) {
            entry.1 = entry.1.max(queued);
            return;
        }
        if self.current.len() < TOP_FANOUT_TOPICS {
            self.current.push((topic.into(), queued));
            return;
        }
        let smallest = self
            .current
            .iter_mut()
            .min_by_key(|(_, n)| *n)
            .expect("the list is full");
        if queued > smallest.1 {
            *smallest = (topic.into(), queued);
        }
    }

    /// Called at each sweep: starts a new window every [`TOP_WINDOW_MS`] and publishes the
    /// largest fan-outs of this window and the previous one.
    pub fn publish_top(&mut self, now_ms: u32, shared: &SharedFanout) {
        if now_ms.wrapping_sub(self.window_started_ms) >= TOP_WINDOW_MS {
            std::mem::swap(&mut self.previous, &mut self.current);
            self.current.clear();
            self.window_started_ms = now_ms;
        }
        let mut merged: Vec<(Box<str>, u64)> = self.current.clone();
        for (topic, n) in &self.previous {
            match merged.iter_mut().find(|(t, _)| t == topic) {
                Some(entry) => entry.1 = entry.1.max(*n),
                None => merged.push((topic.clone(), *n)),
            }
        }
        merged.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        merged.truncate(TOP_FANOUT_TOPICS);
        *shared.top.lock().unwrap_or_else(PoisonError::into_inner) = merged;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tracker(patterns: &[&str]) -> FanoutTracker {
        FanoutTracker::new(
            patterns
                .iter()
                .map(|p| TopicPattern::parse(p).unwrap())
                .collect(),
        )
    }

    #[test]
    fn a_fan_out_completes_when_the_flush_passes_its_mark() {
        let shared = SharedFanout::default();
        let mut t = tracker(&["news.>"]);
        let mut h = Histogram::default();
        // Two publishes in one turn: marks 300 and 301 (the second reached one more connection).
        t.fanned_out("news.eu", 300, 1_000, 300, &shared);
        t.fanned_out("sport", 301, 1_100, 301, &shared);
        t.fanned_out("sport", 0, 1_200, 301, &shared);
        assert_eq!(t.in_flight(), 2, "nothing queued: nothing to wait for");
        t.flushed(256, 2_000, &mut h, &shared);
        assert_eq!(h.count(), 0, "256 of 300 connections written");
        t.flushed(300, 3_000, &mut h, &shared);
        assert_eq!(h.count(), 1);
        t.flushed(512, 4_000, &mut h, &shared);
        assert_eq!(h.count(), 2);
        let mut expected = Histogram::default();
        expected.record(2_000);
        expected.record(2_900);
        assert_eq!(h, expected);
        let topics = shared.topics();
        assert_eq!(topics.len(), 1, "only the matching topic has a series");
        assert_eq!(&*topics[0].0, "news.eu");
        assert_eq!(topics[0].1.count(), 1);
    }

    #[test]
    fn topic_series_are_capped() {
        let shared = SharedFanout::default();
        let mut t = tracker(&["*"]);
        for i in 0..MAX_TOPIC_SERIES {
            assert_eq!(
                t.fanned_out(&format!("t{i}"), 1, 0, 1, &shared),
                Tracked::Yes
            );
        }
        assert_eq!(
            t.fanned_out("one-more", 1, 0, 1, &shared),
            Tracked::SeriesFull
        );
        assert_eq!(t.fanned_out("t0", 1, 0, 1, &shared), Tracked::Yes);
    }

    #[test]
    fn the_top_list_keeps_the_largest_fan_outs_of_two_windows() {
        let shared = SharedFanout::default();
        let mut t = tracker(&[]);
        for i in 0..20u64 {
            t.fanned_out(&format!("t{i:02}"), i + 1, 0, 0, &shared);
        }
        t.fanned_out("t05", 100, 0, 0, &shared);
        t.publish_top(1, &shared);
        let top = shared.top();
        assert_eq!(top.len(), TOP_FANOUT_TOPICS);
        assert_eq!(top[0], ("t05".into(), 100));
        assert_eq!(top[1], ("t19".into(), 20));
        assert_eq!(top[9], ("t11".into(), 12));
        // A new window: the previous one still counts, then ages out.
        t.publish_top(TOP_WINDOW_MS + 1, &shared);
        t.fanned_out("fresh", 1, 0, 0, &shared);
        t.publish_top(TOP_WINDOW_MS + 2, &shared);
        assert_eq!(shared.top()[0], ("t05".into(), 100));
        t.publish_top(2 * TOP_WINDOW_MS + 2, &shared);
        t.publish_top(3 * TOP_WINDOW_MS + 3, &shared);
        assert!(shared.top().is_empty());
    }
}
