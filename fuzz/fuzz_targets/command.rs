//! Fuzzes the JSON command parser (`parse_command`) with arbitrary bytes: no panic; a parsed
//! command has a valid topic, an `id` that is a JSON string or number and `data` that is valid
//! JSON; and every answer built from the result (the delivery, the ack, the error frame that
//! echoes parts of the input) is valid JSON.
#![no_main]

use crier::proto::command::{parse_command, Command};
use crier::proto::envelope;
use crier::topic::name::validate_topic_str;
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

fn assert_json(frame: &[u8]) {
    let body = payload(frame);
    assert!(
        serde_json::from_slice::<IgnoredAny>(body).is_ok(),
        "not JSON: {:?}",
        String::from_utf8_lossy(body)
    );
}

fuzz_target!(|data: &[u8]| {
    match parse_command(data) {
        Ok(command) => {
            if let Some(topic) = command.topic() {
                assert!(validate_topic_str(topic).is_ok());
            }
            if let Some(id) = command.id() {
                assert!(matches!(id.get().as_bytes()[0], b'"' | b'-' | b'0'..=b'9'));
                assert_json(&envelope::ack_frame(id, Some((7, None))));
                let epoch = crier::proto::epoch::Epoch::parse("e4XqT0aB").ok();
                assert_json(&envelope::ack_frame(id, Some((7, epoch))));
            }
            if let Command::Publish { topic, data, .. } = &command {
                assert!(serde_json::from_str::<IgnoredAny>(data.get()).is_ok());
                assert_json(&envelope::message_frame(topic, 1, data.get().as_bytes()));
            }
        }
        Err(error) => assert_json(&envelope::command_error_frame(&error)),
    }
});
