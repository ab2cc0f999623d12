//! Scenario: a client starts a fragmented message and never finishes it; with
//! `--fragment-timeout`, the broker closes it with 1008 about that long after the first
//! fragment, while a client whose fragments all arrive in time is served as usual.

mod common;

use std::time::{Duration, Instant};

use common::*;
use tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
use tungstenite::protocol::frame::{Frame, FrameHeader};
use tungstenite::Message;

const TIMEOUT: Duration = Duration::from_millis(600);

fn fragment(opcode: OpCode, fin: bool, payload: &[u8]) -> Message {
    let header = FrameHeader {
        is_final: fin,
        opcode,
        ..FrameHeader::default()
    };
    Message::Frame(Frame::from_payload(header, payload.to_vec().into()))
}

#[test]
fn an_unfinished_fragmented_message_is_closed_with_1008_after_the_fragment_timeout() {
    let server = start(&["--fragment-timeout", "600ms"]);
    let addr = server.local_addr();
    for path in ["/echo", "/ws"] {
        let mut client = connect(addr, path);
        let started = Instant::now();
        client
            .send(fragment(OpCode::Data(Data::Text), false, &[b'a'; 10_000]))
            .unwrap();
        // Fragments keep coming, but the deadline runs from the first one.
        std::thread::sleep(TIMEOUT / 3);
        client
            .send(fragment(OpCode::Data(Data::Continue), false, b"more"))
            .unwrap();
        let close = loop {
            match client.read() {
                Ok(Message::Close(frame)) => break frame,
                Ok(Message::Ping(_) | Message::Pong(_)) => continue,
                other => panic!("{path}: expected a close, got {other:?}"),
            }
        };
        let waited = started.elapsed();
        let close = close.expect("a close code");
        assert_eq!(close.code, CloseCode::Policy, "{path}: {close:?}");
        assert!(close.reason.contains("fragment timeout"), "{close:?}");
        // The sweep runs every quarter of the timeout: closed within about the timeout.
        assert!(waited >= TIMEOUT, "{path}: closed after {waited:?}");
        assert!(waited < TIMEOUT * 3, "{path}: closed after {waited:?}");
    }
    eventually(ANSWER_TIMEOUT, "the connections are gone", || {
        server.open_connections() == 0
    });
    stop(server, ANSWER_TIMEOUT);
}

#[test]
fn fragments_that_arrive_in_time_make_a_message_and_each_message_has_its_own_clock() {
    let server = start(&["--fragment-timeout", "600ms"]);
    let mut client = connect(server.local_addr(), "/echo");
    // Three messages back to back, each taking about half the timeout: 1.5 timeouts in all.
    for round in 0..3u8 {
        client
            .send(fragment(OpCode::Data(Data::Binary), false, &[round]))
            .unwrap();
        std::thread::sleep(TIMEOUT / 2);
        client
            .send(fragment(
                OpCode::Data(Data::Continue),
                true,
                &[round, round],
            ))
            .unwrap();
        assert_eq!(
            next_data(&mut client),
            Message::binary(vec![round, round, round])
        );
    }
    stop(server, ANSWER_TIMEOUT);
}
