//! Fuzzes the URL pieces crier reads (`query_values`, `percent_decode`) the way the upgrade
//! handler uses them (`/ws?topic=...`, `/publish/<topic>`): no panic; every value is a piece
//! of the query between `&`s; decoding never grows the text and inverts percent-encoding.
#![no_main]

use crier::proto::query::{percent_decode, query_values};
use crier::topic::name::validate_topic;
use libfuzzer_sys::fuzz_target;

/// Encodes every byte as `%XX`: the decoder must give the bytes back whatever they are.
fn encode_all(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("%{b:02X}")).collect()
}

fuzz_target!(|data: &[u8]| {
    // The request head is parsed as text before the query is read, so the query is a &str.
    let Ok(query) = std::str::from_utf8(data) else {
        return;
    };
    for plus_is_space in [true, false] {
        if let Ok(decoded) = percent_decode(query, plus_is_space) {
            assert!(decoded.len() <= query.len());
            if !query.contains('%') && !(plus_is_space && query.contains('+')) {
                assert_eq!(decoded, query.as_bytes());
            }
            assert_eq!(
                percent_decode(&encode_all(&decoded), false),
                Ok(decoded.clone())
            );
            let _ = validate_topic(&decoded);
        }
    }
    // As `/ws?topic=a&topic=b`, and with a name taken from the input itself.
    let name = query.split(['=', '&']).next().unwrap_or("");
    for name in ["topic", name] {
        let mut count = 0;
        for value in query_values(query, name) {
            count += 1;
            assert!(!value.contains('&'));
            // (An empty value may point anywhere, even for an empty query.)
            if !value.is_empty() {
                let range = query.as_bytes().as_ptr_range();
                let start = value.as_ptr();
                assert!(
                    range.start <= start && start < range.end,
                    "a slice of the query"
                );
                assert!(start.wrapping_add(value.len()) <= range.end);
            }
            if let Ok(topic) = percent_decode(value, true) {
                let _ = validate_topic(&topic);
            }
        }
        assert!(count <= query.matches('&').count() + 1);
    }
});
