//! Decoding and unmasking masked client frames with `proto::session::Session` (the server's
//! receive path), and `proto::mask::apply_mask` alone against its byte-wise reference.
//!
//! Each iteration decodes one 64 KiB "read buffer" (the shard's `READ_BUFFER_BYTES`) full of
//! frames of one size, calling `decode` until it asks for more input, as the shard does.
//! Unmasking happens in place, so the same buffer decoded again is XORed back: the payload
//! toggles between masked and clear, never needs restoring, and stays ASCII (key and payload
//! bytes are < 0x80) so Text frames pass UTF-8 validation either way.

use std::hint::black_box;

use clap::Parser;
use crier::proto::frame::OpCode;
use crier::proto::mask::{apply_mask, apply_mask_bytewise};
use crier::proto::prepared::encode_client_frame;
use crier::proto::session::{Event, Role, Session, SessionLimits};
use crier_bench::{Harness, MicroArgs, Per};

/// Bytes per decode batch: one shard read buffer.
const READ_BUFFER_BYTES: usize = 64 * 1024;
/// All bytes < 0x80, so masked ASCII stays ASCII.
const MASK_KEY: [u8; 4] = [0x37, 0x7a, 0x21, 0x3d];

#[derive(Debug, Parser)]
#[command(about = "Decode + unmask masked client frames; apply_mask vs byte-wise")]
struct Args {
    #[command(flatten)]
    micro: MicroArgs,
}

/// A buffer of back-to-back masked frames filling up to `READ_BUFFER_BYTES` (at least one).
fn frames(payload_len: usize, opcode: OpCode) -> (Vec<u8>, u64) {
    let payload: Vec<u8> = (0..payload_len).map(|i| b'a' + (i % 26) as u8).collect();
    let mut one = Vec::new();
    encode_client_frame(true, opcode, &payload, MASK_KEY, &mut one);
    let count = (READ_BUFFER_BYTES / one.len()).max(1);
    (one.repeat(count), count as u64)
}

/// Decodes every frame in `buf`, returning the frames seen plus a payload byte (checksum).
fn decode_all(session: &mut Session, buf: &mut [u8]) -> u64 {
    let mut pos = 0;
    let mut seen = 0u64;
    loop {
        let decoded = session
            .decode(&mut buf[pos..], 0)
            .expect("benchmark frames are valid");
        pos += decoded.consumed;
        match decoded.event {
            None => return seen,
            Some(Event::Text(p) | Event::Binary(p)) => {
                seen += 1 + u64::from(p.first().copied().unwrap_or(0) & 1);
            }
            Some(other) => panic!("unexpected event {other:?}"),
        }
    }
}

fn main() {
    let args = Args::parse();
    let harness = Harness::new("frame_decode", args.micro);
    let limits = SessionLimits {
        max_message_bytes: 1 << 20,
    };

    for (label, opcode) in [("text", OpCode::Text), ("binary", OpCode::Binary)] {
        for (size_label, payload_len) in [("16B", 16), ("1KiB", 1024), ("64KiB", 64 * 1024)] {
            let (mut buf, per_buffer) = frames(payload_len, opcode);
            let mut session = Session::new(Role::Server, limits);
            let name = format!("decode {label} {size_label} x{per_buffer}/buf");
            // One operation = one frame; the closure's iterations are whole buffers.
            harness.case(
                &name,
                Per::op("frame").bytes(payload_len as u64).batch(per_buffer),
                |buffers| {
                    let mut sum = 0;
                    for _ in 0..buffers {
                        sum += decode_all(&mut session, black_box(&mut buf));
                    }
                    sum
                },
            );
        }
    }

    for (size_label, len) in [("16B", 16usize), ("1KiB", 1024), ("64KiB", 64 * 1024)] {
        let mut buf: Vec<u8> = (0..len).map(|i| i as u8).collect();
        for (kind, f) in [
            ("apply_mask", apply_mask as fn(&mut [u8], [u8; 4], usize)),
            ("apply_mask_bytewise", apply_mask_bytewise),
        ] {
            harness.case(
                &format!("{kind} {size_label}"),
                Per::op("call").bytes(len as u64),
                |n| {
                    for _ in 0..n {
                        f(black_box(&mut buf), black_box(MASK_KEY), 0);
                    }
                    u64::from(buf[0])
                },
            );
        }
    }
}
