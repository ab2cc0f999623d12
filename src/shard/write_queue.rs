//! A connection's output queue: shared frames (`Bytes`) waiting to be written, flushed with
//! one vectored write per loop turn. Frames are never copied or merged: every subscriber's
//! queue holds a reference to the same prepared frame.

use std::collections::VecDeque;
use std::io::{self, IoSlice, Write};

use bytes::Bytes;

use crate::broker::{SendKind, SendStatus};

/// How many frames one vectored write carries at most. Linux accepts up to 1024 (IOV_MAX);
/// 64 keeps the `IoSlice` array on the stack and already makes the per-frame syscall cost
/// negligible (one small loopback send costs about as much as a 32-frame one).
pub const MAX_FRAMES_PER_WRITE: usize = 64;

/// Frames up to which a smaller iovec array is used.
const SMALL_BATCH_FRAMES: usize = 16;

/// Ring slots an idle queue may keep (32 bytes each): enough for the frames a subscriber of a
/// busy topic receives per loop turn, so steady fan-out never reallocates.
const KEPT_RING_SLOTS: usize = 64;

/// A ring this large after a flush is shrunk at once.
const HUGE_RING_SLOTS: usize = 4096;

/// What a flush achieved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum Flushed {
    /// Everything queued is written.
    All,
    /// The socket is full; the rest waits for the next writable event.
    Blocked,
}

/// Frames waiting for one socket. The first frame may be partly written already.
#[derive(Debug, Default)]
pub struct WriteQueue {
    frames: VecDeque<Bytes>,
    /// Bytes of `frames[0]` already written.
    head_written: usize,
    /// Unwritten bytes across all frames.
    queued_bytes: usize,
}

impl WriteQueue {
    /// Appends a frame under `kind`'s budget rule: a delivery (or notice with its reserve) that
    /// would take a non-empty queue past `max_bytes` is refused (`OverBudget`); anything else is queued, and the answer says
    /// whether the queue is now past `max_bytes`. The only way in: nothing is queued without
    /// the budget being looked at. (A frame bigger than the budget still goes to an empty
    /// queue, or it could never be sent.) Never returns `Closed`: the queue does not know.
    pub fn offer(&mut self, frame: Bytes, kind: SendKind, max_bytes: usize) -> SendStatus {
        let budgeted = match kind {
            SendKind::Delivery => Some(frame.len()),
            SendKind::Notice { reserve_bytes } => Some(frame.len() + reserve_bytes),
            SendKind::Reply | SendKind::Final => None,
        };
        if let Some(needed) = budgeted {
            if self.queued_bytes > 0 && self.queued_bytes + needed > max_bytes {
                return SendStatus::OverBudget;
            }
        }
        self.push(frame);
        if self.queued_bytes > max_bytes {
            SendStatus::QueuedOverBudget
        } else {
            SendStatus::Queued
        }
    }

    /// Appends a frame, unchecked: reached only through `offer`.
    fn push(&mut self, frame: Bytes) {
        self.queued_bytes += frame.len();
        self.frames.push_back(frame);
    }

    /// Unwritten bytes.
    pub fn queued_bytes(&self) -> usize {
        self.queued_bytes
    }

    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// Drops every frame that has not started going out, keeping a partly written head frame
    /// so the stream stays well-formed. Returns how many frames were dropped.
    pub fn discard_unstarted(&mut self) -> usize {
        let keep = usize::from(self.head_written > 0).min(self.frames.len());
        let dropped = self.frames.len() - keep;
        self.frames.truncate(keep);
        self.queued_bytes = self
            .frames
            .front()
            .map_or(0, |head| head.len() - self.head_written);
        dropped
    }

    /// Writes as much as the socket takes, `MAX_FRAMES_PER_WRITE` frames per vectored write,
    /// until the queue is empty or the socket would block. Returns the bytes written too.
    pub fn flush(&mut self, sink: &mut impl Write) -> io::Result<(Flushed, usize)> {
        let mut written_total = 0;
        while !self.frames.is_empty() {
            // One frame (nothing coalesced) is a plain write: the kernel cost is the same and
            // no iovec array is set up. Small batches use a small array.
            let result = match self.frames.len() {
                1 => sink.write(&self.frames[0][self.head_written..]),
                2..=SMALL_BATCH_FRAMES => self.write_batch::<SMALL_BATCH_FRAMES>(sink),
                _ => self.write_batch::<MAX_FRAMES_PER_WRITE>(sink),
            };
            let written = match result {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.shrink_if_idle();
                    return Ok((Flushed::Blocked, written_total));
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            written_total += written;
            self.advance(written);
        }
        self.shrink_if_idle();
        Ok((Flushed::All, written_total))
    }

    /// One vectored write of the first (at most) `N` frames. `N` is a constant so the iovec
    /// array lives on the stack; a small batch does not pay to set up 64 entries.
    fn write_batch<const N: usize>(&self, sink: &mut impl Write) -> io::Result<usize> {
        let mut slices = [IoSlice::new(&[]); N];
        let mut count = 0;
        for (index, frame) in self.frames.iter().take(N).enumerate() {
            let start = if index == 0 { self.head_written } else { 0 };
            slices[count] = IoSlice::new(&frame[start..]);
            count += 1;
        }
        sink.write_vectored(&slices[..count])
    }

    fn advance(&mut self, mut written: usize) {
        self.queued_bytes -= written;
        while written > 0 {
            let head_left = self.frames[0].len() - self.head_written;
            if written >= head_left {
                written -= head_left;
                self.frames.pop_front();
                self.head_written = 0;
            } else {
                self.head_written += written;
                written = 0;
            }
        }
    }

    /// On the flush path only a pathological burst is given back: shrinking after every
    /// flush made the ring regrow on the next fan-out, an allocation per subscriber per turn.
    fn shrink_if_idle(&mut self) {
        if self.frames.capacity() > HUGE_RING_SLOTS && self.frames.len() <= KEPT_RING_SLOTS {
            self.frames.shrink_to(KEPT_RING_SLOTS);
        }
    }

    /// Called from the once-a-second sweep: an empty queue keeps at most a small ring, so a
    /// connection that once saw a burst does not hold its memory while idle.
    pub fn trim(&mut self) {
        if self.frames.is_empty() && self.frames.capacity() > KEPT_RING_SLOTS {
            self.frames.shrink_to(KEPT_RING_SLOTS);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sink that accepts at most `budget` bytes per call, then `WouldBlock` when empty.
    struct Trickle {
        out: Vec<u8>,
        per_call: usize,
        total_left: usize,
        calls: usize,
    }

    impl Write for Trickle {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.write_vectored(&[IoSlice::new(buf)])
        }
        fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
            self.calls += 1;
            if self.total_left == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let mut take = self.per_call.min(self.total_left);
            let mut written = 0;
            for buf in bufs {
                let n = take.min(buf.len());
                self.out.extend_from_slice(&buf[..n]);
                written += n;
                take -= n;
                if take == 0 {
                    break;
                }
            }
            self.total_left -= written;
            Ok(written)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn frames(count: usize) -> (WriteQueue, Vec<u8>) {
        let mut queue = WriteQueue::default();
        let mut expected = Vec::new();
        for i in 0..count {
            let frame = Bytes::from(vec![i as u8; 1 + i % 7]);
            expected.extend_from_slice(&frame);
            queue.push(frame);
        }
        (queue, expected)
    }

    #[test]
    fn many_frames_go_out_in_few_vectored_writes() {
        let (mut queue, expected) = frames(100);
        let mut sink = Trickle {
            out: Vec::new(),
            per_call: usize::MAX,
            total_left: usize::MAX,
            calls: 0,
        };
        let (state, written) = queue.flush(&mut sink).unwrap();
        assert_eq!(state, Flushed::All);
        assert_eq!(written, expected.len());
        assert_eq!(sink.out, expected);
        assert_eq!(sink.calls, 100usize.div_ceil(MAX_FRAMES_PER_WRITE));
    }

    #[test]
    fn partial_writes_resume_exactly_where_they_stopped() {
        let (mut queue, expected) = frames(50);
        let mut sink = Trickle {
            out: Vec::new(),
            per_call: 3,
            total_left: 40,
            calls: 0,
        };
        assert_eq!(queue.flush(&mut sink).unwrap().0, Flushed::Blocked);
        assert_eq!(queue.queued_bytes(), expected.len() - 40);
        sink.total_left = usize::MAX;
        assert_eq!(queue.flush(&mut sink).unwrap().0, Flushed::All);
        assert_eq!(sink.out, expected);
        assert!(queue.is_empty());
        assert_eq!(queue.queued_bytes(), 0);
    }

    #[test]
    fn offers_obey_the_budget_by_kind() {
        let mut queue = WriteQueue::default();
        let frame = |n: usize| Bytes::from(vec![0u8; n]);
        // A frame bigger than the budget still goes to an empty queue.
        assert_eq!(
            queue.offer(frame(30), SendKind::Delivery, 20),
            SendStatus::QueuedOverBudget
        );
        queue.discard_unstarted();
        assert_eq!(
            queue.offer(frame(10), SendKind::Delivery, 20),
            SendStatus::Queued
        );
        assert_eq!(
            queue.offer(frame(10), SendKind::Delivery, 20),
            SendStatus::Queued
        );
        assert_eq!(
            queue.offer(frame(1), SendKind::Delivery, 20),
            SendStatus::OverBudget
        );
        assert_eq!(queue.queued_bytes(), 20, "a refused delivery is not queued");
        queue.discard_unstarted();
        assert_eq!(
            queue.offer(frame(5), SendKind::Delivery, 20),
            SendStatus::Queued
        );
        let notice = SendKind::Notice { reserve_bytes: 11 };
        assert_eq!(queue.offer(frame(5), notice, 20), SendStatus::OverBudget);
        let notice = SendKind::Notice { reserve_bytes: 10 };
        assert_eq!(queue.offer(frame(5), notice, 20), SendStatus::Queued);
        assert_eq!(
            queue.offer(frame(10), SendKind::Delivery, 20),
            SendStatus::Queued
        );
        assert_eq!(
            queue.offer(frame(5), SendKind::Reply, 20),
            SendStatus::QueuedOverBudget
        );
        assert_eq!(
            queue.offer(frame(5), SendKind::Final, 20),
            SendStatus::QueuedOverBudget
        );
        assert_eq!(queue.queued_bytes(), 30);
    }

    #[test]
    fn discarding_keeps_a_partly_written_head_frame() {
        let (mut queue, expected) = frames(10);
        let mut sink = Trickle {
            out: Vec::new(),
            per_call: usize::MAX,
            total_left: 2,
            calls: 0,
        };
        let _ = queue.flush(&mut sink).unwrap();
        // frames are 1, 2, 3.. bytes: 2 bytes = frame 0 whole + 1 byte of frame 1.
        assert_eq!(queue.discard_unstarted(), 8);
        assert_eq!(queue.queued_bytes(), 1);
        sink.total_left = usize::MAX;
        let _ = queue.flush(&mut sink).unwrap();
        assert_eq!(sink.out, &expected[..3]);
    }
}
