//! Fuzzes the binary publish header (`parse_binary_publish`: `[1 byte N][N bytes topic]
//! [payload]`) with arbitrary bytes: no panic; on success the topic and payload are exactly the
//! bytes the header names, the topic is valid, and the delivery built from them carries the
//! same header back; on failure the error frame is valid JSON.
#![no_main]

use crier::proto::envelope::{self, parse_binary_publish};
use crier::topic::name::validate_topic;
use libfuzzer_sys::fuzz_target;
use serde::de::IgnoredAny;

/// The payload of one unmasked, unfragmented server frame (RFC 6455 §5.2).
fn payload(frame: &[u8]) -> &[u8] {
    let start = match frame[1] & 0x7F {
        126 => 4,
        127 => 10,
        _ => 2,
    };
    &frame[start..]
}

fuzz_target!(|data: &[u8]| {
    match parse_binary_publish(data) {
        Ok((topic, body)) => {
            let len = usize::from(data[0]);
            assert_eq!(topic.len(), len);
            assert_eq!(topic.as_bytes(), &data[1..1 + len]);
            assert_eq!(body, &data[1 + len..]);
            assert!(validate_topic(topic.as_bytes()).is_ok());
            let seq = u64::from(data[0]) << 40 | 3;
            let frame = envelope::binary_message_frame(topic, seq, body);
            let delivered = payload(&frame);
            assert_eq!(&delivered[..1 + len], &data[..1 + len]);
            assert_eq!(&delivered[1 + len..9 + len], &seq.to_be_bytes());
            assert_eq!(&delivered[9 + len..], body);
        }
        Err(error) => {
            let frame = envelope::command_error_frame(&error);
            assert!(serde_json::from_slice::<IgnoredAny>(payload(&frame)).is_ok());
        }
    }
});
