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

/// What one queued frame costs beyond its bytes, counted in `queued_bytes` so a flood of tiny
/// frames reaches `--max-backlog-bytes` too: its ring slot (a `Bytes`, 32 bytes) plus the
/// reference-count header every prepared frame carries (24 bytes in a 32-byte malloc chunk).
/// Measured: a queued empty pong (2 bytes) holds 97 bytes of RSS, so a cap of N counts at
/// least two thirds of what the queue really holds. A fan-out frame shares its header, so
/// there this overstates by 32 bytes per subscriber: a small price for a simple bound.
pub const FRAME_OVERHEAD_BYTES: usize = 64;
const _: () = assert!(std::mem::size_of::<Bytes>() <= FRAME_OVERHEAD_BYTES / 2);
// The history's replay byte cap counts frames the way this queue does.
const _: () =
    assert!(crate::broker::history::policy::REPLAY_FRAME_OVERHEAD_BYTES == FRAME_OVERHEAD_BYTES);

/// Pongs that may wait unwritten on one connection. A burst of pings read in one turn is
/// answered ping for ping (as Autobahn's case 2.10 expects, though RFC 6455 does not ask it),
/// and past this a newer pong replaces the newest waiting one (RFC 6455 §5.5.3 allows
/// answering only the most recent ping), so a ping flood holds at most this many.
const MAX_PENDING_PONGS: usize = 16;

/// First byte of an unfragmented Pong (FIN, opcode 0xA; RFC 6455 §5.2): how the queue tells
/// its pending pong from the other frames without keeping an index.
const PONG_FIRST_BYTE: u8 = 0x8A;

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
    /// Unwritten bytes across all frames, plus `FRAME_OVERHEAD_BYTES` per queued frame.
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
            SendKind::Delivery => Some(frame.len() + FRAME_OVERHEAD_BYTES),
            // The notice and the delivery it reserves room for: two frames' overhead.
            SendKind::Notice { reserve_bytes } => {
                Some(frame.len() + reserve_bytes + 2 * FRAME_OVERHEAD_BYTES)
            }
            SendKind::Reply | SendKind::Pong | SendKind::Final => None,
        };
        if let Some(needed) = budgeted {
            if self.queued_bytes > 0 && self.queued_bytes + needed > max_bytes {
                return SendStatus::OverBudget;
            }
        }
        if kind == SendKind::Pong {
            self.push_pong(frame);
        } else {
            self.push(frame);
        }
        if self.queued_bytes > max_bytes {
            SendStatus::QueuedOverBudget
        } else {
            SendStatus::Queued
        }
    }

    /// Appends a frame, unchecked: reached only through `offer`.
    fn push(&mut self, frame: Bytes) {
        self.queued_bytes += frame.len() + FRAME_OVERHEAD_BYTES;
        self.frames.push_back(frame);
    }

    /// Queues a Pong so that at most [`MAX_PENDING_PONGS`] ever wait unwritten: past that a
    /// newer pong replaces the newest waiting one (RFC 6455 §5.5.3 lets us answer only the
    /// most recent Ping). Waiting pongs sit together, in order, at the front of the frames
    /// not yet started (a control frame may go between whole frames, RFC 6455 §5.4, and every
    /// queued frame is whole), behind anything that is not a WebSocket frame of ours (the 101
    /// response). Finding them needs no extra field.
    fn push_pong(&mut self, pong: Bytes) {
        debug_assert_eq!(pong.first(), Some(&PONG_FIRST_BYTE));
        let mut at = usize::from(self.head_written > 0);
        // RSV bits set: not a plain frame of ours (HTTP bytes, or a compressed message); a
        // pong never jumps them.
        while self
            .frames
            .get(at)
            .is_some_and(|f| f.first().is_some_and(|b| b & 0x70 != 0))
        {
            at += 1;
        }
        let waiting = self
            .frames
            .range(at..)
            .take_while(|f| f.first() == Some(&PONG_FIRST_BYTE))
            .take(MAX_PENDING_PONGS)
            .count();
        self.queued_bytes += pong.len();
        if waiting == MAX_PENDING_PONGS {
            let newest = &mut self.frames[at + waiting - 1];
            self.queued_bytes -= newest.len();
            *newest = pong;
        } else {
            self.queued_bytes += FRAME_OVERHEAD_BYTES;
            self.frames.insert(at + waiting, pong);
        }
    }

    /// Unwritten bytes plus `FRAME_OVERHEAD_BYTES` per queued frame: what the backlog cap
    /// (`--max-backlog-bytes`) is compared with.
    pub fn queued_bytes(&self) -> usize {
        self.queued_bytes
    }

    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// The frames that have not started going out, oldest first.
    pub fn unstarted(&self) -> impl Iterator<Item = &Bytes> {
        self.frames.iter().skip(usize::from(self.head_written > 0))
    }

    /// Drops every frame that has not started going out, keeping a partly written head frame
    /// so the stream stays well-formed, and an HTTP response at the front (the `101` of an
    /// upgrade whose first frames, a resume's replay say, already closed it as slow): without
    /// it the client could not read the close. Every WebSocket frame crier queues is whole, so
    /// it starts with the FIN bit; an HTTP response starts with `H`. Returns how many frames
    /// were dropped.
    pub fn discard_unstarted(&mut self) -> usize {
        let started = usize::from(self.head_written > 0);
        let http = self
            .frames
            .iter()
            .skip(started)
            .take_while(|f| f.first().is_some_and(|b| b & 0x80 == 0))
            .count();
        let keep = (started + http).min(self.frames.len());
        let dropped = self.frames.len() - keep;
        self.frames.truncate(keep);
        self.queued_bytes = self
            .frames
            .iter()
            .map(|f| f.len() + FRAME_OVERHEAD_BYTES)
            .sum::<usize>()
            - self.head_written;
        dropped
    }

    /// Writes as much as the socket takes, `MAX_FRAMES_PER_WRITE` frames per vectored write,
    /// until the queue is empty or the socket would block. Returns the bytes written too.
    pub fn flush(&mut self, sink: &mut impl Write) -> io::Result<(Flushed, usize)> {
        let mut written_total = 0;
        // The usual case of a fan-out at low rates: one frame, written whole by one plain
        // write. Straight to an empty queue, without the general bookkeeping below.
        if self.frames.len() == 1 {
            let unwritten = &self.frames[0][self.head_written..];
            let len = unwritten.len();
            match sink.write(unwritten) {
                Ok(n) if n == len && n > 0 => {
                    self.frames.pop_front();
                    self.head_written = 0;
                    self.queued_bytes = 0;
                    self.shrink_if_idle();
                    return Ok((Flushed::All, n));
                }
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    written_total = n;
                    self.advance(n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.shrink_if_idle();
                    return Ok((Flushed::Blocked, 0));
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
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

    /// The unwritten bytes of the first frames, at most `slices.len()` of them, for a write
    /// made elsewhere (an io_uring batch); returns how many slices were filled. Report what
    /// the write took with [`WriteQueue::sent`].
    pub fn unwritten<'a>(&'a self, slices: &mut [IoSlice<'a>]) -> usize {
        let mut count = 0;
        for (slot, (index, frame)) in slices.iter_mut().zip(self.frames.iter().enumerate()) {
            let start = if index == 0 { self.head_written } else { 0 };
            *slot = IoSlice::new(&frame[start..]);
            count += 1;
        }
        count
    }

    /// `written` bytes of what [`WriteQueue::unwritten`] showed went out.
    pub fn sent(&mut self, written: usize) {
        self.advance(written);
        self.shrink_if_idle();
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
                self.queued_bytes -= FRAME_OVERHEAD_BYTES;
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
            // WebSocket frames start with the FIN bit (see `discard_unstarted`).
            let frame = Bytes::from(vec![0x80 | i as u8; 1 + i % 7]);
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
        // 40 bytes = frames 0..=10 whole (1+2+..+7+1+2+3+4 = 38) and 2 bytes of frame 11.
        assert_eq!(
            queue.queued_bytes(),
            expected.len() - 40 + 39 * FRAME_OVERHEAD_BYTES
        );
        sink.total_left = usize::MAX;
        assert_eq!(queue.flush(&mut sink).unwrap().0, Flushed::All);
        assert_eq!(sink.out, expected);
        assert!(queue.is_empty());
        assert_eq!(queue.queued_bytes(), 0);
    }

    #[test]
    fn a_single_frame_goes_whole_in_one_write_or_resumes_after_a_partial_one() {
        let frame = Bytes::from((0..100u8).collect::<Vec<u8>>());
        let mut queue = WriteQueue::default();
        assert_eq!(
            queue.offer(frame.clone(), SendKind::Delivery, 1 << 20),
            SendStatus::Queued
        );
        let mut sink = Trickle {
            out: Vec::new(),
            per_call: 30,
            total_left: 70,
            calls: 0,
        };
        // 30 + 30 + 10 bytes, then the socket is full.
        assert_eq!(queue.flush(&mut sink).unwrap(), (Flushed::Blocked, 70));
        assert_eq!(queue.queued_bytes(), 30 + FRAME_OVERHEAD_BYTES);
        assert_eq!(sink.calls, 4);
        sink.total_left = usize::MAX;
        sink.per_call = usize::MAX;
        assert_eq!(queue.flush(&mut sink).unwrap(), (Flushed::All, 30));
        assert_eq!(sink.out, frame);
        assert!(queue.is_empty());
        assert_eq!(queue.queued_bytes(), 0);
        // A whole frame in one write: one call, nothing left.
        let _ = queue.offer(frame.clone(), SendKind::Delivery, 1 << 20);
        assert_eq!(queue.flush(&mut sink).unwrap(), (Flushed::All, 100));
        assert_eq!(sink.calls, 6);
        assert_eq!(queue.queued_bytes(), 0);
        assert!(queue.is_empty());
        // A socket already full: nothing written, the frame stays.
        let _ = queue.offer(frame.clone(), SendKind::Delivery, 1 << 20);
        sink.total_left = 0;
        assert_eq!(queue.flush(&mut sink).unwrap(), (Flushed::Blocked, 0));
        assert_eq!(queue.queued_bytes(), 100 + FRAME_OVERHEAD_BYTES);
    }

    #[test]
    fn offers_obey_the_budget_by_kind() {
        const O: usize = FRAME_OVERHEAD_BYTES;
        // Room for 20 payload bytes in three frames.
        const BUDGET: usize = 20 + 3 * O;
        let mut queue = WriteQueue::default();
        let frame = |n: usize| Bytes::from(vec![0x81u8; n]);
        // A frame bigger than the budget still goes to an empty queue.
        assert_eq!(
            queue.offer(frame(BUDGET), SendKind::Delivery, BUDGET),
            SendStatus::QueuedOverBudget
        );
        queue.discard_unstarted();
        for _ in 0..2 {
            assert_eq!(
                queue.offer(frame(10), SendKind::Delivery, BUDGET),
                SendStatus::Queued
            );
        }
        // 20 + 2 O queued; 1 + O more is one byte over.
        assert_eq!(
            queue.offer(frame(1), SendKind::Delivery, BUDGET),
            SendStatus::OverBudget
        );
        assert_eq!(
            queue.queued_bytes(),
            20 + 2 * O,
            "a refused delivery is not queued"
        );
        queue.discard_unstarted();
        assert_eq!(
            queue.offer(frame(5), SendKind::Delivery, BUDGET),
            SendStatus::Queued
        );
        // A notice reserves room for itself and for the delivery after it, overheads included.
        let notice = SendKind::Notice { reserve_bytes: 11 };
        assert_eq!(
            queue.offer(frame(5), notice, BUDGET),
            SendStatus::OverBudget
        );
        let notice = SendKind::Notice { reserve_bytes: 10 };
        assert_eq!(queue.offer(frame(5), notice, BUDGET), SendStatus::Queued);
        assert_eq!(
            queue.offer(frame(10), SendKind::Delivery, BUDGET),
            SendStatus::Queued
        );
        assert_eq!(
            queue.offer(frame(5), SendKind::Reply, BUDGET),
            SendStatus::QueuedOverBudget
        );
        assert_eq!(
            queue.offer(frame(5), SendKind::Final, BUDGET),
            SendStatus::QueuedOverBudget
        );
        assert_eq!(queue.queued_bytes(), 30 + 5 * O);
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
        assert_eq!(queue.queued_bytes(), 1 + FRAME_OVERHEAD_BYTES);
        sink.total_left = usize::MAX;
        let _ = queue.flush(&mut sink).unwrap();
        assert_eq!(sink.out, &expected[..3]);
    }

    #[test]
    fn discarding_keeps_an_unwritten_handshake_response_at_the_front() {
        let mut queue = WriteQueue::default();
        let response = Bytes::from_static(b"HTTP/1.1 101 Switching Protocols\r\n\r\n");
        queue.push(response.clone());
        queue.push(Bytes::from_static(b"\x81\x01a"));
        queue.push(Bytes::from_static(b"\x81\x01b"));
        assert_eq!(queue.discard_unstarted(), 2);
        assert_eq!(queue.queued_bytes(), response.len() + FRAME_OVERHEAD_BYTES);
        assert_eq!(queue.unstarted().collect::<Vec<_>>(), [&response]);
    }

    #[test]
    fn tiny_frames_count_their_overhead_against_the_backlog() {
        let mut queue = WriteQueue::default();
        for _ in 0..1000 {
            queue.push(Bytes::from_static(b"\x81\x00"));
        }
        // 2,000 bytes of frames hold ~97,000 bytes of memory; the budget sees 66,000.
        assert_eq!(queue.queued_bytes(), 1000 * (2 + FRAME_OVERHEAD_BYTES));
        let mut sink = Trickle {
            out: Vec::new(),
            per_call: usize::MAX,
            total_left: usize::MAX,
            calls: 0,
        };
        assert_eq!(queue.flush(&mut sink).unwrap(), (Flushed::All, 2000));
        assert_eq!(queue.queued_bytes(), 0);
    }

    fn pong(payload: &[u8]) -> Bytes {
        crate::proto::prepared::pong_frame(payload)
    }

    fn drain(queue: &mut WriteQueue) -> Vec<u8> {
        let mut sink = Trickle {
            out: Vec::new(),
            per_call: usize::MAX,
            total_left: usize::MAX,
            calls: 0,
        };
        assert_eq!(queue.flush(&mut sink).unwrap().0, Flushed::All);
        assert_eq!(queue.queued_bytes(), 0);
        sink.out
    }

    #[test]
    fn a_ping_flood_leaves_at_most_the_cap_of_pongs_the_last_with_the_newest_payload() {
        let mut queue = WriteQueue::default();
        let upgrade = b"HTTP/1.1 101 Switching Protocols\r\n\r\n";
        queue.push(Bytes::from_static(upgrade));
        for i in 0..100_000u32 {
            queue.push_pong(pong(&i.to_be_bytes()));
        }
        queue.push(Bytes::from_static(b"\x81\x02hi"));
        queue.push_pong(pong(b"newest"));
        assert_eq!(queue.frames.len(), 2 + MAX_PENDING_PONGS);
        let pongs_len = (MAX_PENDING_PONGS - 1) * 6 + 8;
        assert_eq!(
            queue.queued_bytes(),
            upgrade.len() + pongs_len + 4 + (2 + MAX_PENDING_PONGS) * FRAME_OVERHEAD_BYTES
        );
        // The 101 stays first; the pongs go in order before the data frame: the first pings'
        // answers, then the newest payload in the last place.
        let mut expected = upgrade.to_vec();
        for i in 0..MAX_PENDING_PONGS as u32 - 1 {
            expected.extend_from_slice(b"\x8a\x04");
            expected.extend_from_slice(&i.to_be_bytes());
        }
        expected.extend_from_slice(b"\x8a\x06newest\x81\x02hi");
        assert_eq!(drain(&mut queue), expected);
    }

    #[test]
    fn a_burst_of_pings_under_the_cap_is_answered_ping_for_ping() {
        let mut queue = WriteQueue::default();
        for i in 0..10u8 {
            queue.push_pong(pong(&[i]));
        }
        let expected: Vec<u8> = (0..10u8).flat_map(|i| [0x8a, 1, i]).collect();
        assert_eq!(drain(&mut queue), expected);
    }

    #[test]
    fn a_pong_that_started_going_out_is_not_replaced() {
        let mut queue = WriteQueue::default();
        queue.push_pong(pong(b"first"));
        queue.push(Bytes::from_static(b"\x81\x01x"));
        let mut sink = Trickle {
            out: Vec::new(),
            per_call: usize::MAX,
            total_left: 3,
            calls: 0,
        };
        assert_eq!(queue.flush(&mut sink).unwrap().0, Flushed::Blocked);
        // "first" is half written: new pongs go behind it, ahead of the text frame; past the
        // cap the newest waiting one is replaced.
        for _ in 0..MAX_PENDING_PONGS {
            queue.push_pong(pong(b"second"));
        }
        queue.push_pong(pong(b"third"));
        assert_eq!(queue.frames.len(), 2 + MAX_PENDING_PONGS);
        sink.total_left = usize::MAX;
        assert_eq!(queue.flush(&mut sink).unwrap().0, Flushed::All);
        assert_eq!(queue.queued_bytes(), 0);
        let mut expected = b"\x8a\x05first".to_vec();
        for _ in 0..MAX_PENDING_PONGS - 1 {
            expected.extend_from_slice(b"\x8a\x06second");
        }
        expected.extend_from_slice(b"\x8a\x05third\x81\x01x");
        assert_eq!(sink.out, expected);
        // Once written, the next pong is queued afresh.
        queue.push_pong(pong(b"again"));
        assert_eq!(drain(&mut queue), b"\x8a\x05again");
    }
}
