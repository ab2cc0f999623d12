//! What the broker sends: protocol v1 answers and deliveries as complete WebSocket frames (one
//! allocation each, built by `prepared::build_frame`), the binary publish/delivery layout, and
//! the HTTP publish endpoint's bodies. Encoding only: no decisions about who gets what.

use bytes::Bytes;
use serde_json::value::RawValue;

use super::command::{CommandError, ErrorCode};
use super::epoch::Epoch;
use super::frame::OpCode;
use super::prepared::{build_frame, split_server_frame};
use crate::topic::name::{validate_topic, TopicError};

/// The longest topic the binary layout can carry: its length is one byte. Longer names (only
/// 256 bytes exactly, see [`crate::topic::MAX_TOPIC_BYTES`]) can be used from JSON only.
pub const MAX_BINARY_TOPIC_BYTES: usize = u8::MAX as usize;

/// Room for a JSON-escaped string of `s` in the common case (no escapes) plus its quotes.
fn str_hint(s: &str) -> usize {
    s.len() + 2
}

/// Room for a decimal `u64`.
const U64_DIGITS: usize = 20;

/// `{"op":"message","topic":T,"seq":N,"data":D}` as one text frame. `data` is written
/// verbatim: it must be one valid JSON value (the publisher's raw `data` slice).
pub fn message_frame(topic: &str, seq: u64, data: &[u8]) -> Bytes {
    let hint = 40 + str_hint(topic) + U64_DIGITS + data.len();
    build_frame(OpCode::Text, hint, |buf| {
        buf.extend_from_slice(br#"{"op":"message","topic":"#);
        write_json_str(buf, topic);
        buf.extend_from_slice(br#","seq":"#);
        write_u64(buf, seq);
        buf.extend_from_slice(br#","data":"#);
        buf.extend_from_slice(data);
        buf.push(b'}');
    })
}

/// `{"op":"ack","id":ID}`, or `{"op":"ack","id":ID,"seq":N,"epoch":E}` for a publish (no
/// `epoch` when `seq` is 0: the message went to no one and belongs to no incarnation).
pub fn ack_frame(id: &RawValue, seq: Option<(u64, Option<Epoch>)>) -> Bytes {
    let id = id.get().as_bytes();
    build_frame(OpCode::Text, 50 + id.len() + U64_DIGITS, |buf| {
        buf.extend_from_slice(br#"{"op":"ack","id":"#);
        buf.extend_from_slice(id);
        if let Some((seq, epoch)) = seq {
            write_seq_epoch(buf, seq, epoch);
        }
        buf.push(b'}');
    })
}

/// `{"op":"epoch","topic":T,"epoch":E,"seq":N,"recovered":false}`: the topic came back as a
/// new incarnation (its engine lost it); what was published before is gone, and delivery
/// goes on with the message after `seq` of epoch `E`.
pub fn epoch_frame(topic: &str, epoch: Epoch, seq: u64) -> Bytes {
    let hint = 60 + str_hint(topic) + U64_DIGITS;
    build_frame(OpCode::Text, hint, |buf| {
        buf.extend_from_slice(br#"{"op":"epoch","topic":"#);
        write_json_str(buf, topic);
        write_seq_epoch(buf, seq, Some(epoch));
        buf.extend_from_slice(br#","recovered":false}"#);
    })
}

fn write_seq_epoch(buf: &mut Vec<u8>, seq: u64, epoch: Option<Epoch>) {
    buf.extend_from_slice(br#","seq":"#);
    write_u64(buf, seq);
    if let Some(epoch) = epoch {
        // An epoch is [A-Za-z0-9_-] only: no escaping needed.
        buf.extend_from_slice(br#","epoch":""#);
        buf.extend_from_slice(epoch.as_str().as_bytes());
        buf.push(b'"');
    }
}

/// The answer to a subscribe with `since`:
/// `{"op":"ack","id":ID,"topic":T,"seq":TOP,"epoch":E,"recovered":B}`; without `id` (a `since`
/// given in the URL) the same without it.
pub fn resume_ack_frame(
    id: Option<&RawValue>,
    topic: &str,
    top: u64,
    epoch: Epoch,
    recovered: bool,
) -> Bytes {
    let id = id.map(|id| id.get().as_bytes());
    let hint = 80 + id.map_or(0, <[u8]>::len) + str_hint(topic) + U64_DIGITS;
    build_frame(OpCode::Text, hint, |buf| {
        buf.extend_from_slice(br#"{"op":"ack","#);
        if let Some(id) = id {
            buf.extend_from_slice(br#""id":"#);
            buf.extend_from_slice(id);
            buf.push(b',');
        }
        buf.extend_from_slice(br#""topic":"#);
        write_json_str(buf, topic);
        write_seq_epoch(buf, top, Some(epoch));
        buf.extend_from_slice(if recovered {
            br#","recovered":true}"#
        } else {
            br#","recovered":false}"#
        });
    })
}

/// `{"op":"error","id":ID,"code":C,"message":M}`; `id` is left out when `None`.
pub fn error_frame(id: Option<&RawValue>, code: ErrorCode, message: &str) -> Bytes {
    let id = id.map(|id| id.get().as_bytes());
    let hint = 50 + id.map_or(0, <[u8]>::len) + code.as_str().len() + str_hint(message);
    build_frame(OpCode::Text, hint, |buf| {
        buf.extend_from_slice(br#"{"op":"error","#);
        if let Some(id) = id {
            buf.extend_from_slice(br#""id":"#);
            buf.extend_from_slice(id);
            buf.push(b',');
        }
        write_code_and_message(buf, code, message);
        buf.push(b'}');
    })
}

/// [`error_frame`] for a [`CommandError`].
pub fn command_error_frame(error: &CommandError) -> Bytes {
    error_frame(error.id.as_deref(), error.code, &error.message)
}

/// `{"op":"dropped","topic":T,"count":N}`: a slow consumer skipped `count` messages.
pub fn dropped_frame(topic: &str, count: u64) -> Bytes {
    build_frame(OpCode::Text, 40 + str_hint(topic) + U64_DIGITS, |buf| {
        buf.extend_from_slice(br#"{"op":"dropped","topic":"#);
        write_json_str(buf, topic);
        buf.extend_from_slice(br#","count":"#);
        write_u64(buf, count);
        buf.push(b'}');
    })
}

/// A binary delivery: `[1 byte N][N bytes topic][8 bytes seq, big-endian][payload]`.
///
/// Precondition: `topic.len()` is 1..=[`MAX_BINARY_TOPIC_BYTES`], which every topic returned
/// by [`parse_binary_publish`] satisfies. A longer topic is a caller bug: debug builds panic,
/// release builds write only the first 255 bytes of the name.
pub fn binary_message_frame(topic: &str, seq: u64, payload: &[u8]) -> Bytes {
    debug_assert!(
        (1..=MAX_BINARY_TOPIC_BYTES).contains(&topic.len()),
        "binary topic length {}",
        topic.len()
    );
    let topic = &topic.as_bytes()[..topic.len().min(MAX_BINARY_TOPIC_BYTES)];
    let hint = 1 + topic.len() + 8 + payload.len();
    build_frame(OpCode::Binary, hint, |buf| {
        // Cannot truncate: the slice above is at most 255 bytes.
        buf.push(topic.len() as u8);
        buf.extend_from_slice(topic);
        buf.extend_from_slice(&seq.to_be_bytes());
        buf.extend_from_slice(payload);
    })
}

/// Splits a binary publish frame's payload `[1 byte N][N bytes topic][payload]` (N >= 1) into
/// the validated topic and the payload (which may be empty).
pub fn parse_binary_publish(payload: &[u8]) -> Result<(&str, &[u8]), CommandError> {
    let Some((&len, rest)) = payload.split_first() else {
        return Err(CommandError::new(
            ErrorCode::InvalidCommand,
            None,
            "binary publish frame is empty",
        ));
    };
    let len = usize::from(len);
    if len == 0 {
        return Err(CommandError::new(
            ErrorCode::InvalidTopic,
            None,
            TopicError::Empty.to_string(),
        ));
    }
    if rest.len() < len {
        return Err(CommandError::new(
            ErrorCode::InvalidCommand,
            None,
            format!(
                "binary publish topic length {len} exceeds the {} bytes that follow",
                rest.len()
            ),
        ));
    }
    let (topic, data) = rest.split_at(len);
    let topic = validate_topic(topic)
        .map_err(|e| CommandError::new(ErrorCode::InvalidTopic, None, e.to_string()))?;
    Ok((topic, data))
}

/// The HTTP publish endpoint's success body: `{"seq":N,"epoch":E}` (`{"seq":0}` when nobody
/// listened and the topic keeps no history).
pub fn publish_reply_body(seq: u64, epoch: Option<Epoch>) -> Vec<u8> {
    let mut buf = Vec::with_capacity(48);
    buf.push(b'{');
    write_seq_epoch(&mut buf, seq, epoch);
    buf.remove(1); // the leading comma
    buf.push(b'}');
    buf
}

/// What a delivery frame made by [`message_frame`] or [`binary_message_frame`] carries, read
/// back from the frame (`GET /history` answers from the kept frames themselves).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivered<'a> {
    /// The raw JSON text of `data`.
    Json(&'a [u8]),
    /// The binary payload.
    Binary(&'a [u8]),
}

/// Reads the data back out of a delivery frame built by [`message_frame`] or
/// [`binary_message_frame`]; `None` for any other frame. In a text delivery the topic is a
/// JSON string (a `"` inside it is escaped) and the seq is digits, so the first `,"data":`
/// is the one this module wrote.
pub fn delivered_data(frame: &[u8]) -> Option<Delivered<'_>> {
    const DATA_KEY: &[u8] = br#","data":"#;
    let (opcode, payload) = split_server_frame(frame)?;
    match opcode {
        OpCode::Text => {
            let at = payload
                .windows(DATA_KEY.len())
                .position(|w| w == DATA_KEY)?;
            let data = payload.get(at + DATA_KEY.len()..payload.len().checked_sub(1)?)?;
            (payload.last() == Some(&b'}')).then_some(Delivered::Json(data))
        }
        OpCode::Binary => {
            let topic_len = usize::from(*payload.first()?);
            payload.get(1 + topic_len + 8..).map(Delivered::Binary)
        }
        _ => None,
    }
}

/// The seq of a delivery frame of `topic` built by [`message_frame`] or
/// [`binary_message_frame`]; `None` for any other frame (another topic's, an ack, a notice).
pub fn delivery_seq(frame: &[u8], topic: &str) -> Option<u64> {
    const MESSAGE_PREFIX: &[u8] = br#"{"op":"message","topic":"#;
    let (opcode, payload) = split_server_frame(frame)?;
    match opcode {
        OpCode::Text => {
            let mut expected = Vec::with_capacity(MESSAGE_PREFIX.len() + topic.len() + 8);
            expected.extend_from_slice(MESSAGE_PREFIX);
            write_json_str(&mut expected, topic);
            expected.extend_from_slice(br#","seq":"#);
            let digits = payload.strip_prefix(&expected[..])?;
            let end = digits.iter().position(|b| !b.is_ascii_digit())?;
            std::str::from_utf8(&digits[..end]).ok()?.parse().ok()
        }
        OpCode::Binary => {
            let name = topic.as_bytes();
            let (&len, rest) = payload.split_first()?;
            if usize::from(len) != name.len() || !rest.starts_with(name) {
                return None;
            }
            let seq = rest.get(name.len()..name.len() + 8)?;
            Some(u64::from_be_bytes(seq.try_into().ok()?))
        }
        _ => None,
    }
}

/// The body of `GET /history/<topic>`:
/// `{"epoch":E,"top":N,"messages":[{"seq":S,"data":D},...]}`, oldest first. JSON data is
/// written verbatim; binary data as a standard base64 string with `"binary":true`. `epoch` is
/// `null` (and `top` 0) for a topic with no state. `messages` are `(seq, kept frame)`.
pub fn history_body<'a>(
    epoch: Option<Epoch>,
    top: u64,
    messages: impl IntoIterator<Item = (u64, &'a [u8])>,
) -> Vec<u8> {
    use base64::Engine as _;
    let mut buf = Vec::with_capacity(64);
    buf.extend_from_slice(br#"{"epoch":"#);
    match epoch {
        // An epoch is [A-Za-z0-9_-] only: no escaping needed.
        Some(epoch) => {
            buf.push(b'"');
            buf.extend_from_slice(epoch.as_str().as_bytes());
            buf.push(b'"');
        }
        None => buf.extend_from_slice(b"null"),
    }
    buf.extend_from_slice(br#","top":"#);
    write_u64(&mut buf, top);
    buf.extend_from_slice(br#","messages":["#);
    let mut first = true;
    for (seq, frame) in messages {
        let Some(data) = delivered_data(frame) else {
            debug_assert!(false, "a kept frame that is not a delivery");
            continue;
        };
        if !first {
            buf.push(b',');
        }
        first = false;
        buf.extend_from_slice(br#"{"seq":"#);
        write_u64(&mut buf, seq);
        buf.extend_from_slice(br#","data":"#);
        match data {
            Delivered::Json(data) => {
                buf.extend_from_slice(data);
                buf.push(b'}');
            }
            Delivered::Binary(data) => {
                buf.push(b'"');
                let text = base64::engine::general_purpose::STANDARD.encode(data);
                buf.extend_from_slice(text.as_bytes());
                buf.extend_from_slice(br#"","binary":true}"#);
            }
        }
    }
    buf.extend_from_slice(b"]}");
    buf
}

/// The HTTP publish endpoint's error body: `{"code":C,"message":M}` (the status line comes
/// from the refusal, `http_refusal::Refusal::status`).
pub fn http_error_body(code: ErrorCode, message: &str) -> Vec<u8> {
    let mut buf = Vec::with_capacity(30 + code.as_str().len() + str_hint(message));
    buf.push(b'{');
    write_code_and_message(&mut buf, code, message);
    buf.push(b'}');
    buf
}

fn write_code_and_message(buf: &mut Vec<u8>, code: ErrorCode, message: &str) {
    buf.extend_from_slice(br#""code":""#);
    // Codes are plain snake_case ASCII: nothing to escape.
    buf.extend_from_slice(code.as_str().as_bytes());
    buf.extend_from_slice(br#"","message":"#);
    write_json_str(buf, message);
}

/// Appends `s` as a JSON string (RFC 8259 §7): quotes, `"` and `\` escaped, control characters
/// below U+0020 escaped (short forms where they exist), everything else as UTF-8.
pub fn write_json_str(buf: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    buf.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let short = match b {
            b'"' => b'"',
            b'\\' => b'\\',
            b'\n' => b'n',
            b'\r' => b'r',
            b'\t' => b't',
            0x08 => b'b',
            0x0c => b'f',
            0x00..=0x1f => 0,
            _ => continue,
        };
        // Copy the run of plain bytes before this one in one go. Escaped bytes are ASCII, so
        // runs never split a multi-byte character.
        buf.extend_from_slice(&bytes[start..i]);
        start = i + 1;
        if short != 0 {
            buf.extend_from_slice(&[b'\\', short]);
        } else {
            buf.extend_from_slice(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(b >> 4)],
                HEX[usize::from(b & 0xf)],
            ]);
        }
    }
    buf.extend_from_slice(&bytes[start..]);
    buf.push(b'"');
}

/// Appends `n` in decimal.
fn write_u64(buf: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; U64_DIGITS];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    buf.extend_from_slice(&digits[at..]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::frame::header_len;
    use serde_json::{json, Value};

    /// The payload of an unfragmented, unmasked server frame, after checking its header.
    fn payload(frame: &[u8], opcode: OpCode) -> &[u8] {
        assert_eq!(frame[0], 0x80 | opcode as u8, "FIN + opcode");
        assert_eq!(frame[1] & 0x80, 0, "server frames are unmasked");
        let (len, header) = match frame[1] {
            126 => (usize::from(u16::from_be_bytes([frame[2], frame[3]])), 4),
            127 => (
                u64::from_be_bytes(frame[2..10].try_into().unwrap()) as usize,
                10,
            ),
            n => (usize::from(n), 2),
        };
        assert_eq!(header, header_len(len, false));
        assert_eq!(frame.len(), header + len, "length field matches");
        &frame[header..]
    }

    fn text_json(frame: &[u8]) -> Value {
        serde_json::from_slice(payload(frame, OpCode::Text)).unwrap()
    }

    fn raw(s: &str) -> Box<RawValue> {
        RawValue::from_string(s.to_owned()).unwrap()
    }

    const ODD_TOPICS: [&str; 5] = [
        "news",
        "quo\"te",
        "back\\slash",
        "日本語/🎉",
        "\u{7f}\u{200b}",
    ];

    #[test]
    fn message_frame_fields_and_verbatim_data() {
        let data = br#"{ "b":1,  "a":[1, 2] }"#;
        for topic in ODD_TOPICS {
            let frame = message_frame(topic, 42, data);
            let v = text_json(&frame);
            assert_eq!(
                v,
                json!({"op":"message","topic":topic,"seq":42,"data":{"a":[1,2],"b":1}})
            );
            // The data bytes appear unchanged just before the closing brace.
            let p = payload(&frame, OpCode::Text);
            assert!(p.ends_with(&[&data[..], b"}"].concat()), "{p:?}");
            // The envelope is parsed by RawValue the way a client would read it.
            #[derive(serde::Deserialize)]
            struct Msg<'a> {
                #[serde(borrow)]
                data: &'a RawValue,
            }
            let m: Msg<'_> = serde_json::from_slice(p).unwrap();
            assert_eq!(m.data.get().as_bytes(), data);
        }
        let v = text_json(&message_frame("t", u64::MAX, b"null"));
        assert_eq!(v["seq"].as_u64(), Some(u64::MAX));
    }

    #[test]
    fn large_message_uses_extended_length() {
        let data = format!("\"{}\"", "x".repeat(70_000));
        let frame = message_frame("big", 1, data.as_bytes());
        let v = text_json(&frame);
        assert_eq!(v["data"].as_str().map(str::len), Some(70_000));
    }

    #[test]
    fn ack_frames_echo_the_id_verbatim() {
        for id in [r#""abc""#, "17", "-0.5e3", r#""\u00e9\"""#] {
            let v = text_json(&ack_frame(&raw(id), None));
            let expected: Value = serde_json::from_str(id).unwrap();
            assert_eq!(v, json!({"op":"ack","id":expected}));
            let frame = ack_frame(&raw(id), Some((9, None)));
            let v = text_json(&frame);
            assert_eq!(v, json!({"op":"ack","id":expected,"seq":9}));
            let text = std::str::from_utf8(payload(&frame, OpCode::Text)).unwrap();
            assert!(text.contains(&format!(r#""id":{id}"#)), "{text}");
        }
    }

    #[test]
    fn error_frames() {
        for code in ErrorCode::ALL {
            let message = "bad \"thing\"\n\\ \u{1} é";
            let v = text_json(&error_frame(Some(&raw("\"r1\"")), code, message));
            assert_eq!(
                v,
                json!({"op":"error","id":"r1","code":code.as_str(),"message":message})
            );
            let v = text_json(&error_frame(None, code, message));
            assert_eq!(
                v,
                json!({"op":"error","code":code.as_str(),"message":message})
            );
        }
        let e = CommandError::new(ErrorCode::NotSubscribed, Some(&raw("5")), "not subscribed");
        let v = text_json(&command_error_frame(&e));
        assert_eq!(
            v,
            json!({"op":"error","id":5,"code":"not_subscribed","message":"not subscribed"})
        );
    }

    #[test]
    fn dropped_frames() {
        for topic in ODD_TOPICS {
            let v = text_json(&dropped_frame(topic, 1234));
            assert_eq!(v, json!({"op":"dropped","topic":topic,"count":1234}));
        }
    }

    #[test]
    fn binary_message_layout() {
        let frame = binary_message_frame("news", 0x0102_0304_0506_0708, b"\x00\xffpay");
        let p = payload(&frame, OpCode::Binary);
        assert_eq!(p, b"\x04news\x01\x02\x03\x04\x05\x06\x07\x08\x00\xffpay");
        let topic = "é".repeat(127) + "x"; // 255 bytes
        let frame = binary_message_frame(&topic, 1, b"");
        let p = payload(&frame, OpCode::Binary);
        assert_eq!(p[0], 255);
        assert_eq!(&p[1..256], topic.as_bytes());
        assert_eq!(&p[256..], &1u64.to_be_bytes());
    }

    #[test]
    fn binary_publish_round_trip() {
        assert_eq!(
            parse_binary_publish(b"\x04news\x00\x01").unwrap(),
            ("news", &b"\x00\x01"[..])
        );
        assert_eq!(parse_binary_publish(b"\x01a").unwrap(), ("a", &b""[..]));
        let (topic, data) = parse_binary_publish(b"\x03a\"b{}").unwrap();
        let frame = binary_message_frame(topic, 3, data);
        let p = payload(&frame, OpCode::Binary);
        assert_eq!(p, b"\x03a\"b\x00\x00\x00\x00\x00\x00\x00\x03{}");
    }

    #[test]
    fn binary_publish_errors() {
        for (input, code) in [
            (&b""[..], ErrorCode::InvalidCommand),
            (b"\x00payload", ErrorCode::InvalidTopic),
            (b"\x05abc", ErrorCode::InvalidCommand),
            (b"\x03a b", ErrorCode::InvalidTopic),
            (b"\x01*", ErrorCode::InvalidTopic),
            (b"\x02\xc3\x28", ErrorCode::InvalidTopic),
        ] {
            let e = parse_binary_publish(input).unwrap_err();
            assert_eq!(e.code, code, "{input:?}");
            assert!(e.id.is_none());
            assert!(!e.message.is_empty());
        }
    }

    #[test]
    fn http_bodies() {
        let v: Value = serde_json::from_slice(&publish_reply_body(77, None)).unwrap();
        assert_eq!(v, json!({"seq":77}));
        assert_eq!(publish_reply_body(0, None), br#"{"seq":0}"#);
        let epoch = Epoch::parse("e4Xq").unwrap();
        assert_eq!(
            publish_reply_body(17, Some(epoch)),
            br#"{"seq":17,"epoch":"e4Xq"}"#
        );
        let v = text_json(&ack_frame(&raw("2"), Some((17, Some(epoch)))));
        assert_eq!(v, json!({"op":"ack","id":2,"seq":17,"epoch":"e4Xq"}));
        let v = text_json(&resume_ack_frame(Some(&raw("3")), "news", 50, epoch, true));
        assert_eq!(
            v,
            json!({"op":"ack","id":3,"topic":"news","seq":50,"epoch":"e4Xq","recovered":true})
        );
        let v = text_json(&resume_ack_frame(None, "a\"b", 0, epoch, false));
        assert_eq!(
            v,
            json!({"op":"ack","topic":"a\"b","seq":0,"epoch":"e4Xq","recovered":false})
        );
        let v: Value =
            serde_json::from_slice(&http_error_body(ErrorCode::InvalidTopic, "a\"b")).unwrap();
        assert_eq!(v, json!({"code":"invalid_topic","message":"a\"b"}));
    }

    #[test]
    fn json_strings_match_serde_json_for_every_ascii_byte() {
        let all: String = (0u8..0x80).map(char::from).collect();
        for s in [all.as_str(), "", "é日本🎉\u{2028}", "\u{1f}x\u{7f}"] {
            let mut ours = Vec::new();
            write_json_str(&mut ours, s);
            assert_eq!(serde_json::from_slice::<String>(&ours).unwrap(), s);
            assert_eq!(ours, serde_json::to_vec(s).unwrap(), "{s:?}");
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(1000))]

        /// Any topic string and seq survive the text envelopes, and data stays verbatim.
        #[test]
        fn text_envelopes_round_trip(
            topic in "\\PC{0,20}|[\\x00-\\x7f]{0,20}",
            seq in proptest::num::u64::ANY,
            data in proptest::sample::select(vec!["0", "[ 1 ,2 ]", "{ \"a\" : \"\\u00e9\" }", "\"\"", "null"]),
        ) {
            let frame = message_frame(&topic, seq, data.as_bytes());
            let v = text_json(&frame);
            let expected_data: Value = serde_json::from_str(data).unwrap();
            proptest::prop_assert_eq!(v, json!({"op":"message","topic":topic,"seq":seq,"data":expected_data}));
            let p = payload(&frame, OpCode::Text);
            let tail = format!(",\"data\":{data}}}");
            proptest::prop_assert!(p.ends_with(tail.as_bytes()));
            let v = text_json(&dropped_frame(&topic, seq));
            proptest::prop_assert_eq!(v, json!({"op":"dropped","topic":topic,"count":seq}));
            let mut ours = Vec::new();
            write_json_str(&mut ours, &topic);
            proptest::prop_assert_eq!(ours, serde_json::to_vec(&topic).unwrap());
        }

        /// Arbitrary bytes never panic the binary parser; what it accepts re-encodes to the
        /// same topic and payload.
        #[test]
        fn binary_publish_never_panics_and_round_trips(
            input in proptest::collection::vec(proptest::num::u8::ANY, 0..40),
            seq in proptest::num::u64::ANY,
        ) {
            if let Ok((topic, data)) = parse_binary_publish(&input) {
                proptest::prop_assert_eq!(&input[1..], [topic.as_bytes(), data].concat());
                let frame = binary_message_frame(topic, seq, data);
                let p = payload(&frame, OpCode::Binary);
                let n = usize::from(p[0]);
                proptest::prop_assert_eq!(&p[1..1 + n], topic.as_bytes());
                proptest::prop_assert_eq!(&p[1 + n..9 + n], &seq.to_be_bytes());
                proptest::prop_assert_eq!(&p[9 + n..], data);
            }
        }
    }

    #[test]
    fn u64_decimal() {
        for n in [0, 1, 9, 10, 99, 100, 12345, u64::MAX - 1, u64::MAX] {
            let mut buf = Vec::new();
            write_u64(&mut buf, n);
            assert_eq!(buf, n.to_string().as_bytes());
        }
    }
}

#[cfg(test)]
mod history_tests {
    use super::*;
    use serde_json::{json, Value};

    const TOPICS: [&str; 4] = [r#"a","data":1,"x"#, "news", "日本語", "sp ace"];

    #[test]
    fn delivered_data_reads_back_what_the_frames_carry() {
        for topic in TOPICS {
            for data in [
                &br#"{"k":",\"data\":"}"#[..],
                b"7",
                b"\"s\"",
                &[b'1'; 70_000],
            ] {
                let frame = message_frame(topic, 9, data);
                assert_eq!(
                    delivered_data(&frame),
                    Some(Delivered::Json(data)),
                    "{topic}"
                );
            }
            for payload in [&b""[..], b"\x00\xff", &[7u8; 300]] {
                let frame = binary_message_frame(topic, 9, payload);
                assert_eq!(delivered_data(&frame), Some(Delivered::Binary(payload)));
            }
        }
        assert_eq!(delivered_data(&dropped_frame("news", 3)), None);
        for topic in TOPICS {
            let text = message_frame(topic, 12_345, b"1");
            let binary = binary_message_frame(topic, u64::MAX, b"");
            assert_eq!(delivery_seq(&text, topic), Some(12_345));
            assert_eq!(delivery_seq(&binary, topic), Some(u64::MAX));
            assert_eq!(delivery_seq(&text, "other"), None);
            assert_eq!(delivery_seq(&binary, "other"), None);
        }
        assert_eq!(delivery_seq(&message_frame("newsy", 1, b"1"), "news"), None);
        assert_eq!(delivery_seq(&dropped_frame("news", 3), "news"), None);
        assert_eq!(delivered_data(b""), None);
        assert_eq!(delivered_data(b"\x81"), None);
    }

    #[test]
    fn history_body_is_json_with_verbatim_and_base64_data() {
        let epoch = Epoch::parse("e4Xq").unwrap();
        let text = message_frame("news", 41, br#"{"a":[1, 2]}"#);
        let binary = binary_message_frame("news", 42, b"\x00\x01\xfe");
        let body = history_body(Some(epoch), 50, [(41, &text[..]), (42, &binary[..])]);
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            v,
            json!({"epoch":"e4Xq","top":50,"messages":[
                {"seq":41,"data":{"a":[1,2]}},
                {"seq":42,"data":"AAH+","binary":true}
            ]})
        );
        // JSON data goes out byte for byte as it was published.
        assert!(body
            .windows(br#"{"a":[1, 2]}"#.len())
            .any(|w| w == br#"{"a":[1, 2]}"#));
        let empty: Value = serde_json::from_slice(&history_body(None, 0, [])).unwrap();
        assert_eq!(empty, json!({"epoch":null,"top":0,"messages":[]}));
    }
}
