//! Scenario: an independent client (tungstenite) talks to `/echo` and gets every text and binary
//! message back unchanged, at every frame-length boundary, fragmented or not, with pings answered,
//! the close handshake honoured, and limits enforced with the RFC's close codes.

mod common;

use common::*;
use tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
use tungstenite::protocol::frame::{Frame, FrameHeader};
use tungstenite::Message;

#[test]
fn text_and_binary_echo_at_every_length_boundary() {
    let server = start(&[]);
    let mut client = connect(server.local_addr(), "/echo");
    for len in [0usize, 125, 126, 65535, 65536, 1 << 20] {
        let text: String = (0..len).map(|i| (b'a' + (i % 26) as u8) as char).collect();
        client.send(Message::text(text.clone())).unwrap();
        assert_eq!(
            next_data(&mut client),
            Message::text(text),
            "text of {len} bytes"
        );
        let binary: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
        client.send(Message::binary(binary.clone())).unwrap();
        assert_eq!(
            next_data(&mut client),
            Message::binary(binary),
            "binary of {len} bytes"
        );
    }
    stop(server, ANSWER_TIMEOUT);
}

fn frame(opcode: OpCode, fin: bool, payload: &[u8]) -> Message {
    let header = FrameHeader {
        is_final: fin,
        opcode,
        ..FrameHeader::default()
    };
    Message::Frame(Frame::from_payload(header, payload.to_vec().into()))
}

#[test]
fn fragmented_messages_with_interleaved_pings_come_back_whole() {
    let server = start(&[]);
    let mut client = connect(server.local_addr(), "/echo");
    client
        .send(frame(OpCode::Data(Data::Text), false, "Hel".as_bytes()))
        .unwrap();
    client
        .send(frame(
            OpCode::Control(tungstenite::protocol::frame::coding::Control::Ping),
            true,
            b"mid",
        ))
        .unwrap();
    client
        .send(frame(
            OpCode::Data(Data::Continue),
            false,
            "lo, ".as_bytes(),
        ))
        .unwrap();
    client
        .send(frame(
            OpCode::Data(Data::Continue),
            true,
            "wörld".as_bytes(),
        ))
        .unwrap();
    let mut saw_pong = false;
    loop {
        match client.read().unwrap() {
            Message::Pong(payload) => {
                assert_eq!(&payload[..], b"mid");
                saw_pong = true;
            }
            Message::Text(text) => {
                assert_eq!(text.as_str(), "Hello, wörld");
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(
        saw_pong,
        "the ping inside the fragmented message was answered first"
    );
    stop(server, ANSWER_TIMEOUT);
}

#[test]
fn ping_gets_a_pong_with_the_same_payload() {
    let server = start(&[]);
    let mut client = connect(server.local_addr(), "/echo");
    client
        .send(Message::Ping(b"are you there".to_vec().into()))
        .unwrap();
    match client.read().unwrap() {
        Message::Pong(payload) => assert_eq!(&payload[..], b"are you there"),
        other => panic!("unexpected {other:?}"),
    }
    stop(server, ANSWER_TIMEOUT);
}

#[test]
fn close_handshake_echoes_the_code_and_ends_the_connection() {
    let server = start(&[]);
    let mut client = connect(server.local_addr(), "/echo");
    client
        .close(Some(tungstenite::protocol::CloseFrame {
            code: CloseCode::Normal,
            reason: "bye".into(),
        }))
        .unwrap();
    loop {
        match client.read() {
            Ok(Message::Close(Some(frame))) => assert_eq!(frame.code, CloseCode::Normal),
            Ok(other) => panic!("unexpected {other:?}"),
            Err(tungstenite::Error::ConnectionClosed) => break,
            Err(e) => panic!("unclean close: {e}"),
        }
    }
    eventually(ANSWER_TIMEOUT, "the server forgets the connection", || {
        server.open_connections() == 0
    });
    stop(server, ANSWER_TIMEOUT);
}

fn expect_close_code(client: &mut Client, expected: CloseCode) {
    loop {
        match client.read() {
            Ok(Message::Close(Some(frame))) => {
                assert_eq!(frame.code, expected);
                return;
            }
            Ok(Message::Ping(_)) | Ok(Message::Pong(_)) => {}
            Ok(other) => panic!("unexpected {other:?}"),
            Err(e) => panic!("expected close {expected:?}, got error {e}"),
        }
    }
}

#[test]
fn a_message_over_the_limit_is_refused_with_1009() {
    let server = start(&["--max-message-bytes", "1000"]);
    let mut client = connect(server.local_addr(), "/echo");
    client.send(Message::binary(vec![1u8; 1000])).unwrap();
    assert_eq!(next_data(&mut client), Message::binary(vec![1u8; 1000]));
    client.send(Message::binary(vec![1u8; 1001])).unwrap();
    expect_close_code(&mut client, CloseCode::Size);
    stop(server, ANSWER_TIMEOUT);
}

#[test]
fn invalid_utf8_text_is_refused_with_1007() {
    let server = start(&[]);
    let mut client = connect(server.local_addr(), "/echo");
    client
        .send(frame(
            OpCode::Data(Data::Text),
            true,
            &[0xce, 0xba, 0xe1, 0xbd, 0xb9, 0xcf, 0x83, 0xff],
        ))
        .unwrap();
    expect_close_code(&mut client, CloseCode::Invalid);
    stop(server, ANSWER_TIMEOUT);
}

#[test]
fn an_unmasked_client_frame_is_refused_with_1002() {
    use std::io::{Read, Write};
    let server = start(&[]);
    let mut stream = tcp(server.local_addr());
    stream
        .write_all(
            b"GET /echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
              Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n\x81\x05Hello",
        )
        .unwrap();
    let mut reply = Vec::new();
    let _ = stream.read_to_end(&mut reply);
    let head_end = reply.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let frame = &reply[head_end..];
    assert_eq!(frame[0], 0x88, "a close frame");
    assert_eq!(u16::from_be_bytes([frame[2], frame[3]]), 1002);
    stop(server, ANSWER_TIMEOUT);
}
