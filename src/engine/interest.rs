//! The local engine's process-wide interest filter: a counting filter of `AtomicU32` slots
//! indexed by the keyed topic hash, and the count of distinct topics the owners hold state
//! for. An owner adds one to a topic's slot when it starts keeping state for the topic (its
//! first interested shard) and takes it away when it forgets the topic, so a slot at zero
//! proves that no owner holds the topic: a publish to it can be answered `seq 0` by the
//! publisher's own shard, without copying the payload or crossing the mesh.
//!
//! Ordering: the owner counts the topic *before* it confirms the interest (the confirmation
//! travels through the mesh, which orders it after the increment), and a subscribe ack waits
//! for that confirmation; so a publish made after a subscribe ack always sees the slot
//! non-zero. Collisions only make the filter say "maybe heard" (the publish then crosses the
//! mesh as before and the owner answers `seq 0`): never "unheard" for a held topic.
//!
//! A subscribing shard also holds the slot while it has local subscribers (`hold`/`release`),
//! so that its own publishes, which follow its interest to the owner in one FIFO outbox, are
//! not answered `seq 0` before the owner has seen that interest (a `/ws?topic=` subscriber
//! gets no ack to wait for).
//!
//! What counts as "state" is the owner's business (`LocalEngine::topic_gained` /
//! `topic_forgotten`): today interest; with history rings (issue 12) also "has history".

use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};

/// Fewest and most slots: 16 KiB to 4 MiB of counters.
const MIN_SLOTS: usize = 1 << 12;
const MAX_SLOTS: usize = 1 << 20;

/// Shared by every shard of a process (behind an `Arc`).
#[derive(Debug)]
pub struct InterestFilter {
    slots: Box<[AtomicU32]>,
    mask: usize,
    /// Distinct topics some owner holds state for (what `--max-topics` bounds).
    topics: AtomicUsize,
}

impl InterestFilter {
    /// A filter sized for about `expected_topics` live topics (two slots per topic, within
    /// 4 Ki..1 Mi slots).
    pub fn new(expected_topics: usize) -> InterestFilter {
        let slots = expected_topics
            .saturating_mul(2)
            .clamp(MIN_SLOTS, MAX_SLOTS)
            .next_power_of_two();
        InterestFilter {
            slots: (0..slots).map(|_| AtomicU32::new(0)).collect(),
            mask: slots - 1,
            topics: AtomicUsize::new(0),
        }
    }

    fn slot(&self, hash: u64) -> &AtomicU32 {
        // The low bits: ownership uses the high ones (multiply-shift), so the two stay
        // independent.
        &self.slots[hash as usize & self.mask]
    }

    /// An owner now holds state for the topic with this hash. Call before confirming it.
    pub fn gained(&self, hash: u64) {
        self.slot(hash).fetch_add(1, Ordering::SeqCst);
        self.topics.fetch_add(1, Ordering::Relaxed);
    }

    /// An owner forgot the topic with this hash (once per earlier `gained`).
    pub fn forgotten(&self, hash: u64) {
        let previous = self.slot(hash).fetch_sub(1, Ordering::SeqCst);
        debug_assert!(previous > 0, "forgotten more often than gained");
        self.topics.fetch_sub(1, Ordering::Relaxed);
    }

    /// A shard now has local subscribers of the topic with this hash (before it tells the
    /// owner): a publish from this very shard, which reaches the owner after that interest
    /// (one FIFO outbox), must not be answered `seq 0` on the way. Not a topic for the count.
    pub fn hold(&self, hash: u64) {
        self.slot(hash).fetch_add(1, Ordering::SeqCst);
    }

    /// The shard's last local subscriber of the topic left (once per earlier `hold`).
    pub fn release(&self, hash: u64) {
        let previous = self.slot(hash).fetch_sub(1, Ordering::SeqCst);
        debug_assert!(previous > 0, "released more often than held");
    }

    /// False only when no owner holds state for the topic with this hash and no shard has
    /// local subscribers of it.
    pub fn may_be_heard(&self, hash: u64) -> bool {
        self.slot(hash).load(Ordering::SeqCst) != 0
    }

    /// Distinct topics the owners hold state for right now.
    pub fn topic_count(&self) -> usize {
        self.topics.load(Ordering::Relaxed)
    }
}

impl Default for InterestFilter {
    fn default() -> Self {
        InterestFilter::new(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_per_slot_and_in_total() {
        let filter = InterestFilter::new(0);
        let (a, b) = (7u64, 7u64 + (1 << 40)); // same slot, different topics
        assert!(!filter.may_be_heard(a));
        filter.gained(a);
        filter.gained(b);
        assert_eq!(filter.topic_count(), 2);
        filter.forgotten(a);
        assert!(filter.may_be_heard(b), "a collision keeps the slot heard");
        filter.forgotten(b);
        assert!(!filter.may_be_heard(a) && !filter.may_be_heard(b));
        assert_eq!(filter.topic_count(), 0);
    }
}
