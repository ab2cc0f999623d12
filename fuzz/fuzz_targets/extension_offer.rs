//! Fuzzes the `Sec-WebSocket-Extensions` parser and permessage-deflate negotiation with
//! arbitrary field values: no panic, every accepted offer yields a response that our client-side
//! parser accepts with the same parameters, always with `server_no_context_takeover`, and
//! window 8 is never used for compressing.
#![no_main]

use crier::proto::extension::{parse_extensions, MAX_PARAMS};
use crier::proto::permessage_deflate::{negotiate, parse_server_response, DeflatePolicy};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // First byte: policy; the rest: one or two field values split at the first newline.
    let Some((&control, value)) = data.split_first() else {
        return;
    };
    for element in parse_extensions(value).flatten() {
        assert!(!element.name.is_empty());
        assert!(element.params.len() <= MAX_PARAMS);
    }
    let fields: Vec<&[u8]> = value.split(|&b| b == b'\n').take(2).collect();
    let policy = DeflatePolicy {
        client_no_context_takeover: control & 1 != 0,
        client_max_window_bits: 8 + (control >> 1) % 9,
    };
    if let Some(negotiated) = negotiate(fields.iter().copied(), &policy) {
        let p = negotiated.params;
        assert!((9..=15).contains(&p.server_max_window_bits));
        assert!((8..=15).contains(&p.client_max_window_bits));
        let seen = parse_server_response(negotiated.response.as_bytes())
            .expect("our own response parses");
        assert!(seen.server_no_context_takeover);
        assert_eq!(seen.server_max_window_bits, p.server_max_window_bits);
        assert_eq!(seen.client_no_context_takeover, p.client_no_context_takeover);
    }
    let _ = parse_server_response(value);
});
