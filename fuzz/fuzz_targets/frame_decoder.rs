//! Fuzzes the WebSocket `Session` decoder with arbitrary bytes split into reads at arbitrary
//! points, in both roles: no panic, the `None`-consumes-all contract holds, and the session
//! never holds more heap than one message plus one control frame.
#![no_main]

use crier::proto::session::{Event, Role, Session, SessionLimits};
use libfuzzer_sys::fuzz_target;

const MAX_MESSAGE: usize = 4096;

fuzz_target!(|data: &[u8]| {
    // First byte: role and split pattern; the rest is the wire.
    let Some((&control, wire)) = data.split_first() else {
        return;
    };
    let role = if control & 1 == 0 {
        Role::Server
    } else {
        Role::Client
    };
    let read_size = usize::from(control >> 1) + 1;
    let mut session = Session::new(
        role,
        SessionLimits {
            max_message_bytes: MAX_MESSAGE,
        },
    );
    for read in wire.chunks(read_size) {
        let mut buf = read.to_vec();
        let n = buf.len();
        let mut pos = 0;
        loop {
            let decoded = match session.decode(&mut buf[pos..n], 0) {
                Ok(decoded) => decoded,
                Err(error) => {
                    assert!(matches!(error.close_code(), 1002 | 1007 | 1009));
                    return;
                }
            };
            assert!(decoded.consumed <= n - pos);
            pos += decoded.consumed;
            match decoded.event {
                None => {
                    assert_eq!(pos, n);
                    break;
                }
                Some(Event::Text(text)) => assert!(std::str::from_utf8(text).is_ok()),
                Some(Event::Binary(payload)) => assert!(payload.len() <= MAX_MESSAGE),
                Some(Event::Ping(p) | Event::Pong(p)) => assert!(p.len() <= 125),
                Some(Event::Close { reason, .. }) => assert!(std::str::from_utf8(reason).is_ok()),
            }
        }
        assert!(session.heap_bytes() <= MAX_MESSAGE + 125 + 128);
    }
});
