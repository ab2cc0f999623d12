//! Parsing a client's JSON command: `proto::command::parse_command` on a typical publish with
//! 64 B of `data` (kept as the publisher's raw bytes), plus subscribe for comparison.

use std::hint::black_box;

use clap::Parser;
use crier::proto::command::{parse_command, Command};
use crier_bench::{Harness, MicroArgs, Per};

#[derive(Debug, Parser)]
#[command(about = "parse_command on a publish with 64 B data: ns per command")]
struct Args {
    #[command(flatten)]
    micro: MicroArgs,
}

/// A publish whose `data` is a 64-byte JSON object, with an `id` so it is acked.
const PUBLISH: &[u8] = br#"{"op":"publish","topic":"news.sports","id":42,"data":{"team":"crier","score":3,"minute":87,"event":"goal","half":"2"}}"#;
const SUBSCRIBE: &[u8] = br#"{"op":"subscribe","topic":"news.sports","id":7}"#;

fn main() {
    let args = Args::parse();
    let harness = Harness::new("command_parse", args.micro);
    match parse_command(PUBLISH).expect("valid publish") {
        Command::Publish { data, .. } => assert_eq!(data.get().len(), 64, "data must be 64 B"),
        other => panic!("parsed as {other:?}"),
    }
    for (name, text) in [("publish, 64 B data", PUBLISH), ("subscribe", SUBSCRIBE)] {
        harness.case(name, Per::op("command").bytes(text.len() as u64), |n| {
            let mut sum = 0u64;
            for _ in 0..n {
                let command = parse_command(black_box(text)).expect("valid command");
                sum += command.topic().map_or(0, str::len) as u64;
            }
            sum
        });
    }
}
