//! Building the one prepared frame a publish becomes: `proto::envelope::message_frame(topic,
//! seq, data)`, header and JSON envelope in one `Bytes` (one allocation for the buffer; the
//! count is printed). The frame is dropped right after, so the time includes its free.

use std::hint::black_box;

use clap::Parser;
use crier::proto::envelope::{binary_message_frame, message_frame};
use crier_bench::alloc_counter::{AllocSnapshot, CountingAlloc};
use crier_bench::{Harness, MicroArgs, Per};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

#[derive(Debug, Parser)]
#[command(about = "envelope::message_frame for 64 B and 4 KiB data: ns per frame")]
struct Args {
    #[command(flatten)]
    micro: MicroArgs,
}

/// A JSON string value of exactly `len` bytes (quotes included), as a publisher sends `data`.
fn json_data(len: usize) -> Vec<u8> {
    let mut data = Vec::with_capacity(len);
    data.push(b'"');
    data.extend((0..len.saturating_sub(2)).map(|i| b'a' + (i % 26) as u8));
    data.push(b'"');
    data
}

fn main() {
    let args = Args::parse();
    let harness = Harness::new("prepared_frame", args.micro);
    let topic = "news.sports";
    for (label, len) in [("64B", 64usize), ("4KiB", 4096)] {
        let data = json_data(len);
        let name = format!("message_frame {label}");
        if harness.selected(&name) {
            let before = AllocSnapshot::now();
            black_box(message_frame(topic, 1, &data));
            let used = AllocSnapshot::now().since(before);
            println!(
                "  {name:<34} one frame = {} allocs, {} reallocs, {} bytes requested",
                used.allocs, used.reallocs, used.bytes
            );
        }
        harness.case(&name, Per::op("frame").bytes(len as u64), |n| {
            let mut sum = 0u64;
            for seq in 0..n {
                let frame = message_frame(black_box(topic), seq, black_box(&data));
                sum += frame.len() as u64;
            }
            sum
        });
        let payload = &data[1..data.len() - 1];
        harness.case(
            &format!("binary_message_frame {label}"),
            Per::op("frame").bytes(payload.len() as u64),
            |n| {
                let mut sum = 0u64;
                for seq in 0..n {
                    let frame = binary_message_frame(black_box(topic), seq, black_box(payload));
                    sum += frame.len() as u64;
                }
                sum
            },
        );
    }
}
