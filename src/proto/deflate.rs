//! Outbound permessage-deflate (RFC 7692 §7.2.1): one payload in, one complete server frame
//! with RSV1 set out, compressed from an empty window so the same `Bytes` is valid for every
//! peer that negotiated the extension. One `Deflater` per shard, reused for every message.
//! Does not decide who gets the frame: callers pick it or the plain frame per connection.

use bytes::Bytes;
use flate2::{Compress, Compression, FlushCompress, Status};

use super::frame::{encode_header, OpCode, MAX_HEADER_BYTES, MAX_SERVER_HEADER_BYTES};
use super::permessage_deflate::{MAX_WINDOW_BITS, MIN_SERVER_WINDOW_BITS};
use super::prepared::split_server_frame;

/// The RSV1 bit: "Per-Message Compressed" on the first frame of a message (RFC 7692 §6).
pub const RSV1: u8 = 0x40;

/// The empty stored block a sync flush ends with; removed before sending (RFC 7692 §7.2.1).
pub const SYNC_FLUSH_TAIL: [u8; 4] = [0x00, 0x00, 0xFF, 0xFF];

/// A reusable raw-deflate compressor (one per window size, created on first use) and a scratch
/// buffer. Holds no per-message state between calls: each message starts from an empty window
/// because we always negotiate `server_no_context_takeover`.
pub struct Deflater {
    level: u32,
    /// Index `bits - MIN_SERVER_WINDOW_BITS`; most shards only ever create the window-15 one.
    compressors: [Option<Box<Compress>>; (MAX_WINDOW_BITS - MIN_SERVER_WINDOW_BITS + 1) as usize],
    scratch: Vec<u8>,
}

impl std::fmt::Debug for Deflater {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deflater")
            .field("level", &self.level)
            .field("scratch_capacity", &self.scratch.capacity())
            .finish()
    }
}

impl Deflater {
    /// A deflater at `level` (0-9, clamped; 1 is fastest, 9 smallest).
    pub fn new(level: u32) -> Deflater {
        Deflater {
            level: level.min(9),
            compressors: Default::default(),
            scratch: Vec::new(),
        }
    }

    /// Deflates `payload` as one message with at most a `1 << window_bits` window (clamped to
    /// 9..=15) and returns the complete frame (FIN and RSV1 set, `opcode`, unmasked), or
    /// `None` when the compressed payload would not be smaller than `payload`: the caller then
    /// sends the plain frame, which RFC 7692 §6 allows on a compressing connection.
    pub fn frame(&mut self, opcode: OpCode, payload: &[u8], window_bits: u8) -> Option<Bytes> {
        let payload_len = self.deflate(payload, window_bits, true)?;
        Some(self.build(opcode, payload_len))
    }

    /// Like `frame`, but compressed even when that is not smaller (a few bytes per 16 KiB
    /// plus the block headers): for `/echo`, whose replies exercise the compressed path.
    /// `None` only if the compressor fails, which it does not on valid arguments.
    pub fn frame_always(
        &mut self,
        opcode: OpCode,
        payload: &[u8],
        window_bits: u8,
    ) -> Option<Bytes> {
        let payload_len = self.deflate(payload, window_bits, false)?;
        Some(self.build(opcode, payload_len))
    }

    fn build(&self, opcode: OpCode, payload_len: usize) -> Bytes {
        let mut header = [0u8; MAX_HEADER_BYTES];
        let header_len = encode_header(true, opcode, payload_len, None, &mut header);
        header[0] |= RSV1;
        let mut frame = Vec::with_capacity(header_len + payload_len);
        frame.extend_from_slice(&header[..header_len]);
        frame.extend_from_slice(&self.scratch[..payload_len]);
        Bytes::from(frame)
    }

    /// Like `frame`, but returns only the compressed payload (for client frames, which the
    /// caller masks, and for tests).
    pub fn payload(&mut self, payload: &[u8], window_bits: u8) -> Option<&[u8]> {
        let len = self.deflate(payload, window_bits, true)?;
        Some(&self.scratch[..len])
    }

    /// Compresses `payload` into `scratch`; returns the length without the sync-flush tail,
    /// or (with `smaller_only`) `None` when that is not smaller than the input. The
    /// compressor is reset either way.
    fn deflate(&mut self, payload: &[u8], window_bits: u8, smaller_only: bool) -> Option<usize> {
        let bits = window_bits.clamp(MIN_SERVER_WINDOW_BITS, MAX_WINDOW_BITS);
        let level = self.level;
        let compress = self.compressors[usize::from(bits - MIN_SERVER_WINDOW_BITS)]
            .get_or_insert_with(|| {
                Box::new(Compress::new_with_window_bits(
                    Compression::new(level),
                    false,
                    bits,
                ))
            });
        // Room for "smaller than the input" plus the 4-byte tail: if the compressor needs more,
        // the answer is the plain frame and the work stops there.
        let limit = payload.len() + SYNC_FLUSH_TAIL.len();
        self.scratch.clear();
        self.scratch.reserve(limit + MAX_SERVER_HEADER_BYTES);
        let before_in = compress.total_in();
        let result = loop {
            let consumed = (compress.total_in() - before_in) as usize;
            let status =
                compress.compress_vec(&payload[consumed..], &mut self.scratch, FlushCompress::Sync);
            let consumed = (compress.total_in() - before_in) as usize;
            match status {
                Ok(Status::Ok) | Ok(Status::BufError) => {}
                // A raw stream never ends with Sync; treat anything else as "do not compress".
                Ok(Status::StreamEnd) | Err(_) => break None,
            }
            // zlib contract: the flush is complete when input is used up and output space remains.
            if consumed == payload.len() && self.scratch.len() < self.scratch.capacity() {
                break Some(self.scratch.len());
            }
            if self.scratch.len() >= limit {
                if smaller_only {
                    break None;
                }
                // Stored blocks cost 5 bytes per 64 KiB: this much more always suffices soon.
                self.scratch.reserve(payload.len() / 8 + 64);
            }
        };
        compress.reset();
        let total = result?;
        if total < SYNC_FLUSH_TAIL.len() || self.scratch[total - 4..total] != SYNC_FLUSH_TAIL {
            return None;
        }
        let len = total - SYNC_FLUSH_TAIL.len();
        (len < payload.len() || !smaller_only).then_some(len)
    }
}

/// One delivery as it leaves the topic's owner: the plain frame, and the deflated twin when
/// it was worth building. Both are shared `Bytes`: cloning this is two reference-count
/// increments, and every compressing subscriber on every shard gets the same deflated bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryFrames {
    /// The frame every subscriber can take.
    pub plain: Bytes,
    /// The RSV1 frame deflated from an empty window, if built and smaller.
    pub deflated: Option<Bytes>,
}

impl DeliveryFrames {
    /// Only a plain frame (compression off, nobody compressing, or a small payload).
    pub fn plain(plain: Bytes) -> DeliveryFrames {
        DeliveryFrames {
            plain,
            deflated: None,
        }
    }

    /// The plain frame and, when `deflater` is given and the frame's payload is at least
    /// `min_bytes`, its deflated twin (window 15; `None` when deflate does not make it smaller).
    pub fn build(
        plain: Bytes,
        deflater: Option<&mut Deflater>,
        min_bytes: usize,
    ) -> DeliveryFrames {
        let deflated = deflater.and_then(|deflater| {
            let (opcode, payload) = split_server_frame(&plain)?;
            if payload.len() < min_bytes {
                return None;
            }
            deflater.frame(opcode, payload, MAX_WINDOW_BITS)
        });
        DeliveryFrames { plain, deflated }
    }

    /// The frame for a connection that negotiated a server window of `window_bits` (0: it did
    /// not negotiate compression). The deflated frame is valid for it when its window is 15 or
    /// the message fits its window (each message starts from an empty window, so no reference
    /// reaches further back than the message is long).
    #[inline]
    pub fn for_window(&self, window_bits: u8) -> &Bytes {
        match &self.deflated {
            Some(deflated) if window_bits >= MAX_WINDOW_BITS => deflated,
            Some(deflated)
                if window_bits >= MIN_SERVER_WINDOW_BITS
                    && split_server_frame(&self.plain)
                        .is_some_and(|(_, p)| p.len() <= 1usize << window_bits) =>
            {
                deflated
            }
            _ => &self.plain,
        }
    }
}

/// Appends one client frame whose payload is already deflated (RSV1 set when `first` is true:
/// only the first frame of a message carries it, RFC 7692 §6.1). For the load generator and tests.
pub fn encode_compressed_client_frame(
    first: bool,
    fin: bool,
    compressed_payload: &[u8],
    opcode: OpCode,
    mask_key: [u8; 4],
    out: &mut Vec<u8>,
) {
    let start = out.len();
    super::prepared::encode_client_frame(fin, opcode, compressed_payload, mask_key, out);
    if first {
        out[start] |= RSV1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::{Decompress, FlushDecompress};

    /// Inflates a permessage-deflate payload the way a peer does (RFC 7692 §7.2.2), with an
    /// inflater of exactly `window_bits` and 64 bytes of output per call.
    fn try_inflate(compressed: &[u8], window_bits: u8) -> Result<Vec<u8>, flate2::DecompressError> {
        let mut d = Decompress::new_with_window_bits(false, window_bits);
        let mut input = compressed.to_vec();
        input.extend_from_slice(&SYNC_FLUSH_TAIL);
        let mut out = Vec::new();
        while (d.total_in() as usize) < input.len() || out.len() == out.capacity() {
            out.reserve_exact(64);
            let before = (d.total_in(), out.len());
            d.decompress_vec(
                &input[d.total_in() as usize..],
                &mut out,
                FlushDecompress::Sync,
            )?;
            if (d.total_in(), out.len()) == before {
                break;
            }
        }
        Ok(out)
    }

    fn inflate(compressed: &[u8], window_bits: u8) -> Vec<u8> {
        try_inflate(compressed, window_bits).unwrap_or_else(|e| panic!("window {window_bits}: {e}"))
    }

    fn json(n: usize) -> Vec<u8> {
        let mut s = String::from("[");
        let mut i = 0;
        while s.len() < n {
            s.push_str(&format!(
                "{{\"id\":{i},\"price\":{}.25,\"symbol\":\"ABC{}\"}},",
                i * 7,
                i % 13
            ));
            i += 1;
        }
        s.truncate(n);
        s.into_bytes()
    }

    #[test]
    fn rfc7692_section_7_2_3_1_hello() {
        // RFC 7692 §7.2.3.1: "Hello" compressed is f2 48 cd c9 c9 07 00 (one message,
        // no context takeover). It is longer than the input, so we send it plain...
        let mut deflater = Deflater::new(6);
        assert_eq!(deflater.frame(OpCode::Text, b"Hello", 15), None);
        // ...but the compressed bytes match the RFC's.
        let mut d = Deflater::new(6);
        assert!(d.deflate(b"Hello", 15, true).is_none());
        assert_eq!(&d.scratch[..7], &[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00]);
        assert_eq!(&d.scratch[7..11], &SYNC_FLUSH_TAIL);
    }

    #[test]
    fn frame_has_rsv1_and_round_trips_at_every_length_class() {
        let mut deflater = Deflater::new(6);
        for len in [200usize, 1024, 70_000, 300_000] {
            let payload = json(len);
            let frame = deflater.frame(OpCode::Text, &payload, 15).unwrap();
            assert_eq!(frame[0], 0x80 | RSV1 | OpCode::Text as u8);
            let (header, plen) = match frame[1] {
                126 => (4, u16::from_be_bytes([frame[2], frame[3]]) as usize),
                127 => (
                    10,
                    u64::from_be_bytes(frame[2..10].try_into().unwrap()) as usize,
                ),
                n => (2, n as usize),
            };
            assert_eq!(frame.len(), header + plen);
            assert!(plen * 2 < len, "json compresses: {plen} of {len}");
            assert_eq!(inflate(&frame[header..], 15), payload, "{len}");
        }
    }

    #[test]
    fn each_message_starts_from_an_empty_window() {
        // Compressing the same payload twice gives the same bytes (no context carried over),
        // and each inflates on its own with a fresh inflater.
        let mut deflater = Deflater::new(6);
        let payload = json(1000);
        let a = deflater.frame(OpCode::Text, &payload, 15).unwrap();
        let b = deflater.frame(OpCode::Text, &payload, 15).unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn incompressible_payloads_are_not_compressed() {
        let mut deflater = Deflater::new(6);
        let mut x: u32 = 12345;
        let random: Vec<u8> = (0..4096)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect();
        assert_eq!(deflater.frame(OpCode::Binary, &random, 15), None);
        assert_eq!(deflater.frame(OpCode::Binary, b"", 15), None);
        assert_eq!(deflater.frame(OpCode::Binary, b"a", 15), None);
        // ...unless asked for anyway (echo): still a valid message.
        for payload in [&random[..], b"", b"a"] {
            let frame = deflater.frame_always(OpCode::Binary, payload, 15).unwrap();
            assert_eq!(frame[0], 0x80 | RSV1 | OpCode::Binary as u8);
            let header = if frame.len() - 2 < 126 { 2 } else { 4 };
            assert_eq!(inflate(&frame[header..], 15), payload);
        }
        // The compressor is usable afterwards.
        let payload = json(2000);
        let frame = deflater.frame(OpCode::Text, &payload, 15).unwrap();
        assert_eq!(inflate(&frame[4..], 15), payload);
    }

    #[test]
    fn delivery_frames_pick_by_window() {
        let plain = crate::proto::prepared::prepared_frame(OpCode::Text, &json(2000));
        let mut deflater = Deflater::new(6);
        let frames = DeliveryFrames::build(plain.clone(), Some(&mut deflater), 100);
        let deflated = frames.deflated.clone().unwrap();
        assert_eq!(inflate(&deflated[4..], 15), json(2000));
        assert_eq!(frames.for_window(0), &plain);
        assert_eq!(frames.for_window(15), &deflated);
        assert_eq!(frames.for_window(11), &deflated, "2000 bytes fit 2 KiB");
        assert_eq!(frames.for_window(10), &plain, "but not 1 KiB");
        // Below the threshold, or without a deflater, there is no twin.
        assert_eq!(
            DeliveryFrames::build(plain.clone(), Some(&mut deflater), 2001).deflated,
            None
        );
        assert_eq!(DeliveryFrames::build(plain.clone(), None, 0).deflated, None);
        assert_eq!(DeliveryFrames::plain(plain.clone()).for_window(15), &plain);
    }

    #[test]
    fn small_windows_stay_within_their_window() {
        // 1000 noisy bytes twice: the second copy is one back-reference 1000 bytes away with
        // window 15, and cannot be one with window 9 (512 bytes).
        let mut x: u32 = 99;
        let block: Vec<u8> = (0..1000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                b'a' + (x % 16) as u8
            })
            .collect();
        let payload = [&block[..], &block[..]].concat();
        let mut deflater = Deflater::new(9);
        let wide = deflater.payload(&payload, 15).unwrap().len();
        let alone = deflater.payload(&block, 15).unwrap().len();
        assert!(
            wide < alone + 20,
            "window 15 reuses the block: {wide} vs {alone}"
        );
        for bits in [9u8, 10] {
            let frame = deflater.frame(OpCode::Text, &payload, bits).unwrap();
            // The inflater does not police the window (it decodes from its output buffer), so
            // the size shows it: the second copy had to be encoded again.
            assert!(
                frame.len() - 4 > alone * 3 / 2,
                "window {bits}: {}",
                frame.len()
            );
            assert_eq!(inflate(&frame[4..], bits), payload, "{bits}");
        }
        let frame = deflater.frame(OpCode::Text, &payload, 11).unwrap();
        assert!(frame.len() - 4 < alone + 20);
        // Window 8 is never used: it is clamped to 9.
        let frame = deflater.frame(OpCode::Text, &payload, 8).unwrap();
        assert_eq!(inflate(&frame[4..], 9), payload);
    }
}
