//! The one deflate a publish costs with permessage-deflate (`proto::deflate::Deflater::frame`,
//! window 15, compressor reset per message) at levels 1, 6 and 9 for market-data-like JSON of
//! 128 B to 16 KiB: ns per deflate and the compressed size, which set `--compression-level`
//! and `--compression-min-bytes` (docs/decisions.md).

use std::hint::black_box;

use clap::Parser;
use crier::proto::deflate::Deflater;
use crier::proto::frame::OpCode;
use crier_bench::{Harness, MicroArgs, Per};

#[derive(Debug, Parser)]
#[command(about = "Deflater::frame for JSON of 128 B..16 KiB at levels 1/6/9: ns per deflate")]
struct Args {
    #[command(flatten)]
    micro: MicroArgs,
}

/// `len` bytes of a JSON delivery like a quote feed's: repeated keys, varying numbers.
fn json(len: usize) -> Vec<u8> {
    let mut s =
        String::from(r#"{"op":"message","topic":"quotes.us","seq":123456,"data":{"rows":["#);
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    while s.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        s.push_str(&format!(
            r#"{{"sym":"SYM{}","bid":{}.{:02},"ask":{}.{:02},"qty":{},"venue":"XNAS"}},"#,
            x % 40,
            100 + (x >> 8) % 50,
            (x >> 16) % 100,
            100 + (x >> 24) % 50,
            (x >> 32) % 100,
            (x >> 40) % 1000
        ));
    }
    s.truncate(len);
    s.into_bytes()
}

fn main() {
    let args = Args::parse();
    let harness = Harness::new("deflate", args.micro);
    for len in [128usize, 256, 1024, 4096, 16384] {
        let payload = json(len);
        for level in [1u32, 6, 9] {
            let mut deflater = Deflater::new(level);
            let name = format!("deflate L{level} {len}B");
            if harness.selected(&name) {
                let size = deflater
                    .frame(OpCode::Text, &payload, 15)
                    .map_or(0, |f| f.len());
                println!("  {name:<34} frame {size} B for {len} B of JSON (0: not smaller)");
            }
            harness.case(&name, Per::op("deflate").bytes(len as u64), |n| {
                let mut sum = 0u64;
                for _ in 0..n {
                    let frame = deflater.frame(OpCode::Text, black_box(&payload), 15);
                    sum += frame.map_or(0, |f| f.len() as u64);
                }
                sum
            });
        }
    }
}
