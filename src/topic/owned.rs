//! Owner-side state for the topics this shard owns: which shards have at least one subscriber
//! (the interest set) and the topic's sequence counter. Pure bookkeeping: `sequence` says which
//! shards a publish must go to; the event loop sends it.
//!
//! A topic lives here only while some shard is interested. Publishing to a topic nobody
//! subscribes to stores nothing, so random topic names cannot grow memory. The flip side:
//! a topic's sequence restarts at 1 after a period with no subscriber anywhere (no subscriber
//! could have seen the gap, so nothing observable breaks).

use std::collections::HashMap;

/// The most shards an interest set can name: shard ids are stored as `u16`.
pub const MAX_SHARDS: usize = u16::MAX as usize + 1;

/// Tables at least this big shrink when a quarter full (see `local.rs`).
const SHRINK_MIN_CAPACITY: usize = 64;

/// One owned topic: the shards to deliver to, and the sequence number of the next message.
#[derive(Debug)]
struct OwnedTopic {
    /// Sorted, no duplicates, never empty while stored. A sorted `Vec<u16>` costs 2 bytes per
    /// interested shard (a topic is usually wanted by a few shards, not all), stays valid for
    /// any shard count up to [`MAX_SHARDS`], and iterates in shard order for fan-out.
    shards: Vec<u16>,
    /// The sequence number the next publish gets; starts at 1.
    next_seq: u64,
}

/// What one [`OwnedTopics::set_interest`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum InterestChange {
    /// Nothing: the shard was already (or already not) in the interest set.
    Unchanged,
    /// The interest set changed; the topic was held before and still is.
    Changed,
    /// The topic was not held and now is (its first interested shard).
    Created,
    /// The topic's last interested shard left: it and its seq are forgotten.
    Forgotten,
}

impl InterestChange {
    /// Whether the interest set changed.
    pub fn changed(self) -> bool {
        self != InterestChange::Unchanged
    }
}

/// The topics this shard owns that at least one shard is interested in.
#[derive(Debug, Default)]
pub struct OwnedTopics {
    topics: HashMap<Box<str>, OwnedTopic>,
}

impl OwnedTopics {
    /// Empty, no heap until the first interest.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records that `shard` now has (`interested`) or no longer has a local subscriber to
    /// `topic`. Idempotent. Says whether the interest set changed, and whether the topic was
    /// created or forgotten by it. When the set becomes empty the topic and its sequence
    /// counter are freed.
    ///
    /// `shard` must be below [`MAX_SHARDS`]; larger ids are a caller bug (debug assertion) and
    /// are ignored in release builds.
    pub fn set_interest(&mut self, topic: &str, shard: usize, interested: bool) -> InterestChange {
        debug_assert!(shard < MAX_SHARDS, "shard id {shard} does not fit in u16");
        let Ok(shard) = u16::try_from(shard) else {
            return InterestChange::Unchanged;
        };
        if interested {
            let mut change = InterestChange::Changed;
            let entry = match self.topics.get_mut(topic) {
                Some(entry) => entry,
                None => {
                    change = InterestChange::Created;
                    self.topics
                        .entry(topic.into())
                        .or_insert_with(|| OwnedTopic {
                            shards: Vec::with_capacity(1),
                            next_seq: 1,
                        })
                }
            };
            match entry.shards.binary_search(&shard) {
                Ok(_) => InterestChange::Unchanged,
                Err(at) => {
                    entry.shards.insert(at, shard);
                    change
                }
            }
        } else {
            let Some(entry) = self.topics.get_mut(topic) else {
                return InterestChange::Unchanged;
            };
            let Ok(at) = entry.shards.binary_search(&shard) else {
                return InterestChange::Unchanged;
            };
            entry.shards.remove(at);
            if entry.shards.is_empty() {
                self.topics.remove(topic);
                if self.topics.capacity() >= SHRINK_MIN_CAPACITY
                    && self.topics.len() * 4 < self.topics.capacity()
                {
                    self.topics.shrink_to(self.topics.len() * 2);
                }
                return InterestChange::Forgotten;
            }
            InterestChange::Changed
        }
    }

    /// Assigns the next sequence number to a publish on `topic` and returns it with the
    /// shards to deliver to (sorted). `None` when no shard is interested: drop the message,
    /// nothing is stored. Sequences start at 1 and grow by exactly 1 per call while the topic
    /// has interest; they restart at 1 once the interest set has been empty.
    pub fn sequence(&mut self, topic: &str) -> Option<(u64, &[u16])> {
        let entry = self.topics.get_mut(topic)?;
        let seq = entry.next_seq;
        entry.next_seq += 1;
        Some((seq, &entry.shards))
    }

    /// The shards interested in `topic` (empty if none), without assigning a sequence number.
    pub fn interested_shards(&self, topic: &str) -> &[u16] {
        self.topics.get(topic).map_or(&[], |entry| &entry.shards)
    }

    /// How many owned topics have at least one interested shard.
    pub fn topic_count(&self) -> usize {
        self.topics.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_without_interest_stores_nothing() {
        let mut owned = OwnedTopics::new();
        for i in 0..1000 {
            assert_eq!(owned.sequence(&format!("random-{i}")), None);
        }
        assert_eq!(owned.topic_count(), 0);
        assert_eq!(owned.topics.capacity(), 0);
    }

    #[test]
    fn sequence_counts_from_one_and_restarts_after_no_interest() {
        let mut owned = OwnedTopics::new();
        assert!(owned.set_interest("news", 3, true).changed());
        assert!(!owned.set_interest("news", 3, true).changed());
        assert!(owned.set_interest("news", 0, true).changed());
        assert_eq!(owned.sequence("news"), Some((1, &[0u16, 3][..])));
        assert_eq!(owned.sequence("news"), Some((2, &[0u16, 3][..])));
        assert!(owned.set_interest("news", 3, false).changed());
        assert!(!owned.set_interest("news", 3, false).changed());
        assert!(!owned.set_interest("other", 3, false).changed());
        assert_eq!(owned.sequence("news"), Some((3, &[0u16][..])));
        assert!(owned.set_interest("news", 0, false).changed());
        assert_eq!(owned.topic_count(), 0);
        assert_eq!(owned.sequence("news"), None);
        assert!(owned.set_interest("news", 1, true).changed());
        assert_eq!(owned.sequence("news"), Some((1, &[1u16][..])));
    }

    #[test]
    fn interest_sets_work_for_1024_shards() {
        let mut owned = OwnedTopics::new();
        // Insert in a scrambled order; the set stays sorted and duplicate-free.
        for i in 0..1024usize {
            assert!(owned.set_interest("wide", (i * 389) % 1024, true).changed());
        }
        let expected: Vec<u16> = (0..1024).collect();
        assert_eq!(owned.interested_shards("wide"), &expected[..]);
        for shard in (0..1024).rev() {
            assert!(owned.set_interest("wide", shard, false).changed());
        }
        assert_eq!(owned.topic_count(), 0);
        assert!(owned.interested_shards("wide").is_empty());
    }
}
