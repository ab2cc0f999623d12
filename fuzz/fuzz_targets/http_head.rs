//! Fuzzes the HTTP request-head parser and everything that reads a parsed head (handshake
//! checks, body framing): no panic, and a reported head length never exceeds the input or cap.
#![no_main]

use crier::proto::handshake::{check_server_response, check_upgrade, UpgradePolicy};
use crier::proto::http::{parse_request_head, HeadLimits};
use crier::proto::http_body::{body_framing, request_body, BodyFraming};
use crier::proto::permessage_deflate::DeflatePolicy;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = HeadLimits {
        max_head_bytes: 4096,
        max_headers: 32,
    };
    if let Ok(Some((head, len))) = parse_request_head(data, &limits) {
        assert!(len <= data.len().min(limits.max_head_bytes));
        let policy = UpgradePolicy {
            allowed_origins: Some(vec!["https://crier.example".into()]),
            subprotocols: vec!["crier.v1".into()],
            deflate: Some(DeflatePolicy::default()),
        };
        if let Ok(accepted) = check_upgrade(&head, &policy) {
            if let Some(protocol) = &accepted.subprotocol {
                assert_eq!(protocol, "crier.v1");
            }
        }
        let framing = body_framing(&head, 1 << 20);
        // A route that takes no body never accepts one, whatever the framing fields say.
        match request_body(&head, false, 1 << 20) {
            Ok(accepted) => assert_eq!(accepted, BodyFraming::Empty),
            Err(_) => assert_ne!(framing, Ok(BodyFraming::Empty)),
        }
        let _ = head.has_token("connection", "upgrade");
        let _ = (head.path(), head.query());
    }
    // The client side parses server bytes with the same care.
    let _ = check_server_response(data, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
});
