//! The server side of an RFC 6455 opening handshake on a realistic browser request:
//! `parse_request_head` + `check_upgrade` (which computes the SHA-1 accept key) +
//! `switching_protocols` (the 101 response bytes).

use std::hint::black_box;

use clap::Parser;
use crier::proto::handshake::{check_upgrade, switching_protocols, UpgradePolicy};
use crier::proto::http::{parse_request_head, HeadLimits};
use crier_bench::{Harness, MicroArgs, Per};

#[derive(Debug, Parser)]
#[command(about = "parse_request_head + check_upgrade + switching_protocols: ns per handshake")]
struct Args {
    #[command(flatten)]
    micro: MicroArgs,
}

/// What Chrome sends to open `new WebSocket("wss://…/ws?topic=…", "crier.v1")` (cookie shortened).
const BROWSER_REQUEST: &[u8] = b"GET /ws?topic=news.sports HTTP/1.1\r\n\
Host: push.example.com\r\n\
Connection: Upgrade\r\n\
Pragma: no-cache\r\n\
Cache-Control: no-cache\r\n\
User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36\r\n\
Upgrade: websocket\r\n\
Origin: https://www.example.com\r\n\
Sec-WebSocket-Version: 13\r\n\
Accept-Encoding: gzip, deflate, br, zstd\r\n\
Accept-Language: en-US,en;q=0.9,de;q=0.8\r\n\
Cookie: session=3f9a1c0e2b7d4e8f9a0b1c2d3e4f5a6b; theme=dark\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\
Sec-WebSocket-Protocol: crier.v1\r\n\
\r\n";

fn main() {
    let args = Args::parse();
    let harness = Harness::new("handshake", args.micro);
    let limits = HeadLimits::default();
    let policy = UpgradePolicy {
        allowed_origins: Some(vec!["https://www.example.com".to_string()]),
        subprotocols: vec!["crier.v1".to_string()],
        deflate: None,
    };
    // Checked once outside the timing: the benchmark must measure a successful handshake.
    let (head, _) = parse_request_head(BROWSER_REQUEST, &limits)
        .expect("valid head")
        .expect("complete head");
    let accepted = check_upgrade(&head, &policy).expect("valid upgrade");
    let response = switching_protocols(&accepted);
    assert!(response
        .windows(28)
        .any(|w| w == b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="));

    harness.case(
        "full handshake (browser request)",
        Per::op("handshake"),
        |n| {
            let mut sum = 0u64;
            for _ in 0..n {
                let (head, used) = parse_request_head(black_box(BROWSER_REQUEST), &limits)
                    .expect("valid head")
                    .expect("complete head");
                let accepted = check_upgrade(&head, &policy).expect("valid upgrade");
                let response = switching_protocols(&accepted);
                sum += (used + response.len()) as u64;
            }
            sum
        },
    );
    harness.case("parse_request_head only", Per::op("head"), |n| {
        let mut sum = 0u64;
        for _ in 0..n {
            let (_, used) = parse_request_head(black_box(BROWSER_REQUEST), &limits)
                .expect("valid head")
                .expect("complete head");
            sum += used as u64;
        }
        sum
    });
    harness.case("check_upgrade only (incl. SHA-1)", Per::op("check"), |n| {
        let mut sum = 0u64;
        for _ in 0..n {
            let accepted = check_upgrade(black_box(&head), &policy).expect("valid upgrade");
            sum += accepted.accept_key.len() as u64;
        }
        sum
    });
}
