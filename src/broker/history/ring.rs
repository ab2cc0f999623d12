//! One topic's ring of kept messages: the prepared frames exactly as they were delivered
//! (text or binary, and later their deflated twin), each with its seq and publish time, oldest
//! first. Keeping a frame is a reference-count increment; a replay hands out clones of the same
//! buffers, so nothing is encoded or copied again. The ring decides nothing about sizes, TTLs or
//! budgets: its owner (`log.rs`) pops from the front.

use std::collections::VecDeque;

use bytes::Bytes;

use crate::proto::deflate::DeliveryFrames;

/// What a ring can keep: a cheaply clonable frame (or set of frames) that knows its size.
pub trait StoredFrame: Clone {
    /// Bytes this frame holds on the heap, counted against `--max-history-bytes`.
    fn stored_bytes(&self) -> usize;
}

impl StoredFrame for Bytes {
    fn stored_bytes(&self) -> usize {
        self.len()
    }
}

/// A delivery with its deflated twin (permessage-deflate): both are kept, so a replay hands
/// each subscriber the frame it negotiated without deflating again.
impl StoredFrame for DeliveryFrames {
    fn stored_bytes(&self) -> usize {
        self.plain.len() + self.deflated.as_ref().map_or(0, Bytes::len)
    }
}

/// One kept message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry<F> {
    /// The message's seq in its topic's current epoch.
    pub seq: u64,
    /// When it was sequenced, in the caller's milliseconds (monotonic).
    pub at_ms: u64,
    /// The frame every subscriber got.
    pub frame: F,
}

/// A topic's kept messages, oldest first, seqs strictly increasing.
#[derive(Debug)]
pub struct Ring<F> {
    entries: VecDeque<Entry<F>>,
}

impl<F> Default for Ring<F> {
    fn default() -> Self {
        Ring {
            entries: VecDeque::new(),
        }
    }
}

impl<F: StoredFrame> Ring<F> {
    /// Appends the newest message. `seq` must be above every kept one (debug assertion): the
    /// topic's sequencer is the only writer.
    pub fn push(&mut self, seq: u64, at_ms: u64, frame: F) {
        debug_assert!(self.entries.back().is_none_or(|last| last.seq < seq));
        self.entries.push_back(Entry { seq, at_ms, frame });
    }

    /// Removes and returns the oldest message.
    pub fn pop_front(&mut self) -> Option<Entry<F>> {
        let entry = self.entries.pop_front();
        // A ring emptied by a burst gives its memory back; a busy one keeps its capacity.
        if self.entries.is_empty() && self.entries.capacity() > 64 {
            self.entries = VecDeque::new();
        }
        entry
    }

    /// The oldest kept message.
    pub fn front(&self) -> Option<&Entry<F>> {
        self.entries.front()
    }

    /// The seq of the oldest kept message.
    pub fn oldest_seq(&self) -> Option<u64> {
        self.entries.front().map(|e| e.seq)
    }

    /// How many messages are kept.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is kept.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether message `seq` is still kept.
    pub fn holds(&self, seq: u64) -> bool {
        self.oldest_seq().is_some_and(|oldest| seq >= oldest)
            && self.entries.back().is_some_and(|last| seq <= last.seq)
    }

    /// The kept messages with a seq above `after`, oldest first.
    pub fn after(
        &self,
        after: u64,
    ) -> impl DoubleEndedIterator<Item = &Entry<F>> + ExactSizeIterator {
        let start = self.entries.partition_point(|e| e.seq <= after);
        self.entries.range(start..)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(seqs: &[u64]) -> Ring<Bytes> {
        let mut ring = Ring::default();
        for &seq in seqs {
            ring.push(seq, seq * 10, Bytes::from(format!("m{seq}")));
        }
        ring
    }

    #[test]
    fn after_returns_the_suffix_oldest_first() {
        let ring = ring(&[3, 4, 5, 6]);
        let seqs = |after| ring.after(after).map(|e| e.seq).collect::<Vec<_>>();
        assert_eq!(seqs(0), [3, 4, 5, 6]);
        assert_eq!(seqs(4), [5, 6]);
        assert_eq!(seqs(6), [] as [u64; 0]);
        assert_eq!(seqs(100), [] as [u64; 0]);
        assert_eq!(ring.after(2).len(), 4);
    }

    #[test]
    fn replayed_frames_are_the_stored_buffers_not_copies() {
        let frame = Bytes::from_static(b"\x81\x02hi");
        let mut ring = Ring::default();
        ring.push(1, 0, frame.clone());
        let replayed = ring.after(0).next().unwrap().frame.clone();
        assert_eq!(replayed.as_ptr(), frame.as_ptr());
    }

    #[test]
    fn holds_and_pop_front() {
        let mut ring = ring(&[3, 4, 5]);
        assert!(ring.holds(3) && ring.holds(5) && !ring.holds(2) && !ring.holds(6));
        assert_eq!(ring.pop_front().map(|e| e.seq), Some(3));
        assert!(!ring.holds(3));
        assert_eq!(ring.oldest_seq(), Some(4));
        assert_eq!(ring.len(), 2);
        ring.pop_front();
        ring.pop_front();
        assert!(ring.is_empty() && ring.pop_front().is_none());
    }
}
