//! Property tests of the protocol core: encode → decode round trips with the input split at
//! arbitrary points, and arbitrary bytes never panic nor grow buffers past their limits.

use proptest::collection::vec;
use proptest::prelude::*;

use super::frame::OpCode;
use super::http::{parse_request_head, HeadLimits};
use super::http_body::{BodyFraming, BodyReader};
use super::prepared::encode_client_frame;
use super::session::test_support::{decode_reads, OwnedEvent};
use super::session::{Role, Session, SessionLimits};
use super::utf8::Utf8Validator;

/// Splits `wire` into reads at the given points (taken modulo the length, sorted).
fn split(wire: &[u8], points: &[usize]) -> Vec<Vec<u8>> {
    let mut cuts: Vec<usize> = points.iter().map(|p| p % (wire.len() + 1)).collect();
    cuts.push(0);
    cuts.push(wire.len());
    cuts.sort_unstable();
    cuts.windows(2).map(|w| wire[w[0]..w[1]].to_vec()).collect()
}

#[derive(Debug, Clone)]
struct Message {
    text: bool,
    payload: Vec<u8>,
    /// Fragment boundaries (modulo the payload length).
    cuts: Vec<usize>,
    /// A ping to interleave before each fragment after the first, if any.
    pings: Vec<Option<Vec<u8>>>,
}

fn message() -> impl Strategy<Value = Message> {
    (
        prop_oneof![
            ".{0,80}".prop_map(|s: String| (true, s.into_bytes())),
            vec(any::<u8>(), 0..300).prop_map(|b| (false, b)),
        ],
        vec(any::<usize>(), 0..4),
        vec(proptest::option::of(vec(any::<u8>(), 0..=125)), 0..4),
    )
        .prop_map(|((text, payload), cuts, pings)| Message {
            text,
            payload,
            cuts,
            pings,
        })
}

/// Encodes `messages` as masked client frames; returns the wire and the events a server must see.
fn encode(messages: &[Message], key: [u8; 4]) -> (Vec<u8>, Vec<OwnedEvent>) {
    let mut wire = Vec::new();
    let mut expected = Vec::new();
    for m in messages {
        let fragments = split(&m.payload, &m.cuts);
        for (i, fragment) in fragments.iter().enumerate() {
            if i > 0 {
                if let Some(Some(ping)) = m.pings.get(i - 1) {
                    encode_client_frame(true, OpCode::Ping, ping, key, &mut wire);
                    expected.push(OwnedEvent::Ping(ping.clone()));
                }
            }
            let opcode = match (i, m.text) {
                (0, true) => OpCode::Text,
                (0, false) => OpCode::Binary,
                _ => OpCode::Continuation,
            };
            encode_client_frame(i + 1 == fragments.len(), opcode, fragment, key, &mut wire);
        }
        expected.push(if m.text {
            OwnedEvent::Text(m.payload.clone())
        } else {
            OwnedEvent::Binary(m.payload.clone())
        });
    }
    (wire, expected)
}

const MAX_MESSAGE: usize = 1000;

/// What a session may hold: one message, one control frame, the spill bookkeeping.
fn heap_bound() -> usize {
    MAX_MESSAGE + 125 + 128
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn client_frames_round_trip_through_any_split(
        messages in vec(message(), 0..6),
        key in any::<[u8; 4]>(),
        points in vec(any::<usize>(), 0..12),
    ) {
        let (wire, expected) = encode(&messages, key);
        let mut session = Session::new(Role::Server, SessionLimits { max_message_bytes: MAX_MESSAGE });
        let events = decode_reads(&mut session, &split(&wire, &points), |s| {
            assert!(s.heap_bytes() <= heap_bound());
        });
        prop_assert_eq!(events, Ok(expected));
        prop_assert_eq!(session.heap_bytes(), 0);
    }

    #[test]
    fn arbitrary_bytes_never_panic_and_stay_bounded(
        bytes in vec(any::<u8>(), 0..400),
        points in vec(any::<usize>(), 0..8),
        client in any::<bool>(),
    ) {
        let role = if client { Role::Client } else { Role::Server };
        let mut session = Session::new(role, SessionLimits { max_message_bytes: MAX_MESSAGE });
        let _ = decode_reads(&mut session, &split(&bytes, &points), |s| {
            assert!(s.heap_bytes() <= heap_bound());
        });
    }

    #[test]
    fn corrupted_valid_streams_never_panic_and_stay_bounded(
        messages in vec(message(), 1..4),
        flips in vec((any::<usize>(), any::<u8>()), 1..4),
        points in vec(any::<usize>(), 0..8),
    ) {
        let (mut wire, _) = encode(&messages, [1, 2, 3, 4]);
        for (at, value) in flips {
            let len = wire.len();
            wire[at % len] = value;
        }
        let mut session = Session::new(Role::Server, SessionLimits { max_message_bytes: MAX_MESSAGE });
        let _ = decode_reads(&mut session, &split(&wire, &points), |s| {
            assert!(s.heap_bytes() <= heap_bound());
        });
    }

    #[test]
    fn head_parser_never_panics(bytes in vec(any::<u8>(), 0..600), prefixed in any::<bool>()) {
        let mut buf = if prefixed { b"GET /x HTTP/1.1\r\nHost: a\r\n".to_vec() } else { Vec::new() };
        buf.extend(bytes);
        let limits = HeadLimits { max_head_bytes: 256, max_headers: 8 };
        if let Ok(Some((_, len))) = parse_request_head(&buf, &limits) {
            prop_assert!(len <= buf.len().min(256));
        }
    }

    #[test]
    fn chunked_bodies_round_trip_through_any_split(
        body in vec(any::<u8>(), 0..500),
        cuts in vec(any::<usize>(), 0..6),
        upper_hex in any::<bool>(),
        trailer in any::<bool>(),
        points in vec(any::<usize>(), 0..8),
    ) {
        let mut wire = Vec::new();
        for chunk in split(&body, &cuts).iter().filter(|c| !c.is_empty()) {
            let size = if upper_hex { format!("{:X}", chunk.len()) } else { format!("{:x}", chunk.len()) };
            wire.extend(size.as_bytes());
            wire.extend(b"\r\n");
            wire.extend(chunk);
            wire.extend(b"\r\n");
        }
        wire.extend(b"0\r\n");
        if trailer {
            wire.extend(b"X-Checksum: abc\r\n");
        }
        wire.extend(b"\r\n");
        let wire_len = wire.len();
        wire.extend(b"GET /next");
        let mut reader = BodyReader::new(BodyFraming::Chunked, 500);
        let mut total = 0;
        let mut complete = false;
        for read in split(&wire, &points) {
            let (used, done) = reader.feed(&read).unwrap();
            total += used;
            complete = done;
            if done {
                break;
            }
            prop_assert_eq!(used, read.len());
        }
        prop_assert!(complete);
        prop_assert_eq!(total, wire_len);
        prop_assert_eq!(reader.body(), &body[..]);
    }

    #[test]
    fn body_reader_never_panics_and_stays_bounded(
        bytes in vec(any::<u8>(), 0..300),
        points in vec(any::<usize>(), 0..6),
        chunked in any::<bool>(),
    ) {
        let framing = if chunked { BodyFraming::Chunked } else { BodyFraming::Length(100) };
        let mut reader = BodyReader::new(framing, 100);
        for read in split(&bytes, &points) {
            match reader.feed(&read) {
                Ok((used, _)) => prop_assert!(used <= read.len()),
                Err(_) => break,
            }
            prop_assert!(reader.body().len() <= 100);
        }
    }

    #[test]
    fn utf8_validator_agrees_with_std_at_any_split(
        bytes in prop_oneof![vec(any::<u8>(), 0..40), ".{0,20}".prop_map(String::into_bytes)],
        points in vec(any::<usize>(), 0..6),
    ) {
        let mut validator = Utf8Validator::new();
        let fed = split(&bytes, &points).iter().try_for_each(|c| validator.feed(c));
        let ours = fed.and_then(|()| validator.finish()).is_ok();
        prop_assert_eq!(ours, std::str::from_utf8(&bytes).is_ok());
    }
}

/// Differential checks against tungstenite, an independent implementation, so a bug shared
/// by our encoder and decoder cannot cancel out.
mod against_tungstenite {
    use super::*;
    use crate::proto::prepared::prepared_frame;
    use std::io::Cursor;
    use tungstenite::protocol::frame::coding::{Control, Data, OpCode as TOpCode};
    use tungstenite::protocol::frame::{Frame, FrameHeader};

    fn theirs(opcode: OpCode) -> TOpCode {
        match opcode {
            OpCode::Continuation => TOpCode::Data(Data::Continue),
            OpCode::Text => TOpCode::Data(Data::Text),
            OpCode::Binary => TOpCode::Data(Data::Binary),
            OpCode::Close => TOpCode::Control(Control::Close),
            OpCode::Ping => TOpCode::Control(Control::Ping),
            OpCode::Pong => TOpCode::Control(Control::Pong),
        }
    }

    fn opcode() -> impl Strategy<Value = OpCode> {
        prop_oneof![
            Just(OpCode::Continuation),
            Just(OpCode::Text),
            Just(OpCode::Binary),
            Just(OpCode::Close),
            Just(OpCode::Ping),
            Just(OpCode::Pong),
        ]
    }

    proptest! {
        // Fewer cases: some payloads are 64 KiB, slow to generate in debug builds.
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn client_frames_are_byte_identical(
            fin in any::<bool>(),
            opcode in opcode(),
            payload in prop_oneof![vec(any::<u8>(), 0..200), vec(any::<u8>(), 65530..65540)],
            key in any::<[u8; 4]>(),
        ) {
            let mut ours = Vec::new();
            encode_client_frame(fin, opcode, &payload, key, &mut ours);
            let header = FrameHeader {
                is_final: fin,
                opcode: theirs(opcode),
                mask: Some(key),
                ..FrameHeader::default()
            };
            let mut expected = Vec::new();
            Frame::from_payload(header, payload.into()).format(&mut expected).unwrap();
            prop_assert_eq!(ours, expected);
        }

        #[test]
        fn tungstenite_messages_decode(
            text in ".{0,100}",
            cut in any::<usize>(),
            key in any::<[u8; 4]>(),
            points in vec(any::<usize>(), 0..6),
        ) {
            let bytes = text.as_bytes();
            let cut = cut % (bytes.len() + 1);
            let mut wire = Vec::new();
            for (fin, opcode, part) in [
                (false, TOpCode::Data(Data::Text), &bytes[..cut]),
                (true, TOpCode::Control(Control::Ping), &b"p"[..]),
                (true, TOpCode::Data(Data::Continue), &bytes[cut..]),
            ] {
                let header = FrameHeader { is_final: fin, opcode, mask: Some(key), ..FrameHeader::default() };
                Frame::from_payload(header, part.to_vec().into()).format(&mut wire).unwrap();
            }
            let mut session = Session::new(Role::Server, SessionLimits { max_message_bytes: MAX_MESSAGE });
            let events = decode_reads(&mut session, &split(&wire, &points), |_| {});
            prop_assert_eq!(
                events,
                Ok(vec![OwnedEvent::Ping(b"p".to_vec()), OwnedEvent::Text(bytes.to_vec())])
            );
        }

        #[test]
        fn prepared_frames_parse_in_tungstenite(
            opcode in opcode(),
            payload in prop_oneof![vec(any::<u8>(), 0..300), vec(any::<u8>(), 65535..65537)],
        ) {
            let frame = prepared_frame(opcode, &payload);
            let mut cursor = Cursor::new(&frame[..]);
            let (header, len) = FrameHeader::parse(&mut cursor).unwrap().unwrap();
            prop_assert!(header.is_final);
            prop_assert_eq!(header.opcode, theirs(opcode));
            prop_assert_eq!(header.mask, None);
            prop_assert_eq!(len as usize, payload.len());
            prop_assert_eq!(&frame[cursor.position() as usize..], &payload[..]);
        }
    }
}
