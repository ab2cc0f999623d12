//! Scenario: the flush's two ways of sending, io_uring batches (`--io-uring on`) and a syscall
//! per connection (`--io-uring off`), deliver the same bytes in the same order. Subscribers
//! that do not read while a publisher sends more than their sockets take (partial sends, full
//! sockets answering EAGAIN, writable readiness) and more frames than one write carries (64),
//! then read everything.

mod common;

use std::time::Duration;

use common::*;
use crier::metrics::Metric;
use serde_json::json;
use tungstenite::Message;

const SUBSCRIBERS: usize = 12;
const MESSAGES: usize = 150;

/// Message `i`'s payload: every tenth is 300 KB (more than a loopback socket takes at once),
/// the rest 100 bytes, so a subscriber's queue holds both long runs of small frames and big
/// frames that go out in pieces.
fn payload(i: usize) -> Vec<u8> {
    let len = if i.is_multiple_of(10) { 300_000 } else { 100 };
    (0..len).map(|j| (i * 31 + j) as u8).collect()
}

fn deliveries_arrive_whole_and_in_order(mode: &str, sends: &str) {
    let server = start(&[
        "--io-uring",
        mode,
        "--threads",
        "1",
        "--max-backlog-bytes",
        "67108864",
    ]);
    assert!(
        server.sends().contains(sends),
        "--io-uring {mode}: {}",
        server.sends()
    );
    let addr = server.local_addr();
    let mut subscribers: Vec<Client> = (0..SUBSCRIBERS)
        .map(|_| connect(addr, "/ws?topic=big"))
        .collect();
    for subscriber in &mut subscribers {
        // Acked: the URL subscription before it is in place.
        send_json(
            subscriber,
            json!({"op": "subscribe", "topic": "sync", "id": 0}),
        );
        assert_eq!(next_json(subscriber), json!({"op": "ack", "id": 0}));
    }
    let mut publisher = connect(addr, "/ws");
    for i in 0..MESSAGES {
        let mut frame = vec![3u8];
        frame.extend_from_slice(b"big");
        frame.extend_from_slice(&payload(i));
        publisher.send(Message::binary(frame)).expect("publish");
    }
    // Sequenced and queued for everyone once the publisher's own ack for a later command comes.
    send_json(
        &mut publisher,
        json!({"op": "subscribe", "topic": "done", "id": 1}),
    );
    assert_eq!(next_json(&mut publisher), json!({"op": "ack", "id": 1}));
    std::thread::sleep(Duration::from_millis(200));
    for subscriber in &mut subscribers {
        for i in 0..MESSAGES {
            let mut expected = vec![3u8];
            expected.extend_from_slice(b"big");
            expected.extend_from_slice(&(i as u64 + 1).to_be_bytes());
            expected.extend_from_slice(&payload(i));
            let got = next_data(subscriber);
            assert!(
                got == Message::binary(expected),
                "--io-uring {mode}: message {i} differs"
            );
        }
    }
    assert!(
        server.metric(Metric::WritesBlocked) > 0,
        "--io-uring {mode}: no socket was ever full, so the EAGAIN path went untested"
    );
    stop(server, ANSWER_TIMEOUT);
}

#[test]
fn io_uring_batches_deliver_every_byte_in_order_through_full_sockets() {
    deliveries_arrive_whole_and_in_order("on", "io_uring batches");
}

#[test]
fn syscall_sends_deliver_every_byte_in_order_through_full_sockets() {
    deliveries_arrive_whole_and_in_order("off", "--io-uring off");
}
