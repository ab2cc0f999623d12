//! Inbound permessage-deflate (RFC 7692 §7.2.2): compressed payload chunks in, the inflated
//! message appended to a buffer out, never past a byte limit on the **inflated** size, so a
//! zip bomb is refused before it costs memory. Owns one raw-inflate stream; the session
//! decides when it exists (see `session.rs`).

use flate2::{Decompress, FlushDecompress, Status};

use super::deflate::SYNC_FLUSH_TAIL;
use super::permessage_deflate::{MAX_WINDOW_BITS, MIN_SERVER_WINDOW_BITS};

/// Why inflating stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InflateError {
    /// The inflated message would exceed the limit (our limit, close code 1009).
    TooLarge,
    /// The payload is not a valid raw deflate stream (RFC 7692 §8: fail the connection).
    Corrupt,
}

/// Output grows in steps of at most this many bytes, so a small compressed chunk cannot make
/// us reserve more than it produces by much.
const GROW_STEP_BYTES: usize = 16 * 1024;

/// An estimate of the heap one inflater holds: the stream state of the zlib-rs backend (about
/// 7 KiB) plus its window, allocated on first use. For `Session::heap_bytes` reporting only.
pub fn inflater_heap_estimate(window_bits: u8) -> usize {
    7 * 1024 + (1usize << window_bits.clamp(MIN_SERVER_WINDOW_BITS, MAX_WINDOW_BITS))
}

/// One raw-inflate stream (RFC 1951 without header, RFC 7692 §7.2.2).
pub struct Inflater {
    stream: Decompress,
    window_bits: u8,
}

impl std::fmt::Debug for Inflater {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inflater")
            .field("window_bits", &self.window_bits)
            .finish()
    }
}

impl Inflater {
    /// An inflater for a peer that compresses with at most `1 << window_bits` (a larger window
    /// decodes any smaller one, so 8 is raised to 9: window 8 is never used).
    pub fn new(window_bits: u8) -> Inflater {
        let bits = window_bits.clamp(MIN_SERVER_WINDOW_BITS, MAX_WINDOW_BITS);
        Inflater {
            stream: Decompress::new_with_window_bits(false, bits),
            window_bits: bits,
        }
    }

    /// The window this inflater decodes with.
    pub fn window_bits(&self) -> u8 {
        self.window_bits
    }

    /// Inflates one chunk of a compressed message into `out`. `out` never grows past
    /// `limit + 1` bytes: one byte over the limit is enough to know the message is too large.
    pub fn feed(
        &mut self,
        input: &[u8],
        out: &mut Vec<u8>,
        limit: usize,
    ) -> Result<(), InflateError> {
        let capacity_limit = limit.saturating_add(1);
        let mut consumed = 0;
        loop {
            if out.len() == out.capacity() {
                let grow = out
                    .capacity()
                    .clamp(256, GROW_STEP_BYTES)
                    .min(capacity_limit - out.len());
                out.reserve_exact(grow);
            }
            let (in_before, out_before) = (self.stream.total_in(), out.len());
            let status = self
                .stream
                .decompress_vec(&input[consumed..], out, FlushDecompress::Sync)
                .map_err(|_| InflateError::Corrupt)?;
            let used = (self.stream.total_in() - in_before) as usize;
            consumed += used;
            if out.len() > limit {
                return Err(InflateError::TooLarge);
            }
            if status == Status::StreamEnd {
                // A final block (BFINAL, RFC 1951 §3.2.3) may end a message (RFC 7692
                // §7.2.3.5), typically followed by the start of an empty stored block that the
                // removed tail completes. Whatever follows is decoded as a fresh stream.
                self.stream.reset(false);
                if consumed == input.len() {
                    return Ok(());
                }
                continue;
            }
            let room_left = out.len() < out.capacity();
            // Done when all input is used and output space is left (nothing is pending).
            if consumed == input.len() && room_left {
                return Ok(());
            }
            // With input and room left, a healthy stream always makes progress.
            if used == 0 && out.len() == out_before && room_left {
                return Err(InflateError::Corrupt);
            }
        }
    }

    /// Ends a message: feeds the `00 00 FF FF` tail the sender removed (RFC 7692 §7.2.2).
    pub fn finish(&mut self, out: &mut Vec<u8>, limit: usize) -> Result<(), InflateError> {
        self.feed(&SYNC_FLUSH_TAIL, out, limit)
    }

    /// Forgets the window, for a peer that does not take over context between messages.
    pub fn reset(&mut self) {
        self.stream.reset(false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::deflate::Deflater;

    fn compressed(payload: &[u8]) -> Vec<u8> {
        Deflater::new(6).payload(payload, 15).unwrap().to_vec()
    }

    #[test]
    fn rfc7692_section_7_2_3_examples() {
        // §7.2.3.1: "Hello", one compressed message.
        let mut inflater = Inflater::new(15);
        let mut out = Vec::new();
        inflater
            .feed(&[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00], &mut out, 100)
            .unwrap();
        inflater.finish(&mut out, 100).unwrap();
        assert_eq!(out, b"Hello");
        // §7.2.3.2: the second "Hello" with context takeover uses a back-reference.
        let mut out = Vec::new();
        inflater
            .feed(&[0xf2, 0x00, 0x11, 0x00, 0x00], &mut out, 100)
            .unwrap();
        inflater.finish(&mut out, 100).unwrap();
        assert_eq!(out, b"Hello");
        // §7.2.3.3: "Hello" in a stored (uncompressed) block.
        let mut inflater = Inflater::new(15);
        let mut out = Vec::new();
        inflater
            .feed(
                &[
                    0x00, 0x05, 0x00, 0xfa, 0xff, 0x48, 0x65, 0x6c, 0x6c, 0x6f, 0x00,
                ],
                &mut out,
                100,
            )
            .unwrap();
        inflater.finish(&mut out, 100).unwrap();
        assert_eq!(out, b"Hello");
        // §7.2.3.4: two deflate blocks in one message.
        let mut inflater = Inflater::new(15);
        let mut out = Vec::new();
        inflater
            .feed(
                &[
                    0xf2, 0x48, 0x05, 0x00, 0x00, 0x00, 0xff, 0xff, 0xca, 0xc9, 0xc9, 0x07, 0x00,
                ],
                &mut out,
                100,
            )
            .unwrap();
        inflater.finish(&mut out, 100).unwrap();
        assert_eq!(out, b"Hello");
        // §7.2.3.5: a message ending with BFINAL set, then the first byte of an empty stored
        // block whose rest is the removed tail.
        let mut inflater = Inflater::new(15);
        let mut out = Vec::new();
        inflater
            .feed(
                &[0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00, 0x00],
                &mut out,
                100,
            )
            .unwrap();
        inflater.finish(&mut out, 100).unwrap();
        assert_eq!(out, b"Hello");
        // ...and the next message on the same inflater starts a new stream.
        let mut out = Vec::new();
        inflater
            .feed(&[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00], &mut out, 100)
            .unwrap();
        inflater.finish(&mut out, 100).unwrap();
        assert_eq!(out, b"Hello");
    }

    #[test]
    fn the_limit_applies_to_the_inflated_size() {
        let payload = vec![b'a'; 1 << 20];
        let bomb = compressed(&payload);
        assert!(bomb.len() < 2000, "1 MiB of 'a' is {} bytes", bomb.len());
        let mut out = Vec::new();
        assert_eq!(
            Inflater::new(15).feed(&bomb, &mut out, 64 * 1024),
            Err(InflateError::TooLarge)
        );
        assert!(
            out.capacity() <= 64 * 1024 + 1,
            "capacity {}",
            out.capacity()
        );
        // Exactly at the limit passes.
        let mut inflater = Inflater::new(15);
        let mut out = Vec::new();
        inflater.feed(&bomb, &mut out, 1 << 20).unwrap();
        inflater.finish(&mut out, 1 << 20).unwrap();
        assert_eq!(out.len(), 1 << 20);
        assert!(out.capacity() <= (1 << 20) + 1);
    }

    #[test]
    fn chunks_of_any_size_give_the_same_message() {
        let payload: Vec<u8> = (0..50_000u32)
            .flat_map(|i| (i % 1000).to_le_bytes())
            .collect();
        let data = compressed(&payload);
        for chunk in [1usize, 3, 100, 4096, data.len()] {
            let mut inflater = Inflater::new(15);
            let mut out = Vec::new();
            for piece in data.chunks(chunk) {
                inflater.feed(piece, &mut out, 1 << 20).unwrap();
            }
            inflater.finish(&mut out, 1 << 20).unwrap();
            assert_eq!(out, payload, "chunk {chunk}");
        }
    }

    #[test]
    fn corrupt_streams_are_refused() {
        let mut out = Vec::new();
        // Block type 3 is reserved (RFC 1951 §3.2.3).
        assert_eq!(
            Inflater::new(15).feed(&[0xff, 0xff], &mut out, 100),
            Err(InflateError::Corrupt)
        );
        // A stored block whose LEN and NLEN disagree.
        assert_eq!(
            Inflater::new(15).feed(&[0x00, 0x05, 0x00, 0x00, 0x00], &mut out, 100),
            Err(InflateError::Corrupt)
        );
        // A broken block after a final block.
        let mut inflater = Inflater::new(15);
        assert_eq!(
            inflater.feed(
                &[0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00, 0x07],
                &mut out,
                100
            ),
            Err(InflateError::Corrupt)
        );
    }
}
