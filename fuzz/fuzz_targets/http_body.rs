//! Fuzzes the request body reader (chunked and Content-Length) with arbitrary bytes split into
//! reads: no panic, consumption never exceeds the input and the body never exceeds its limit.
#![no_main]

use crier::proto::http_body::{BodyFraming, BodyReader};
use libfuzzer_sys::fuzz_target;

const MAX_BODY: usize = 1024;

fuzz_target!(|data: &[u8]| {
    let Some((&control, wire)) = data.split_first() else {
        return;
    };
    let framing = if control & 1 == 0 {
        BodyFraming::Chunked
    } else {
        BodyFraming::Length(usize::from(control))
    };
    let read_size = usize::from(control >> 1) + 1;
    let mut reader = BodyReader::new(framing, MAX_BODY);
    for read in wire.chunks(read_size) {
        match reader.feed(read) {
            Ok((used, complete)) => {
                assert!(used <= read.len());
                assert!(complete || used == read.len());
                if complete {
                    break;
                }
            }
            Err(_) => return,
        }
        assert!(reader.body().len() <= MAX_BODY);
    }
});
