//! Prepared frames: a complete server frame (header + payload) in one contiguous `Bytes`,
//! built once and then written unchanged to any number of connections on any core.

use bytes::Bytes;

use super::frame::{encode_header, OpCode, MAX_HEADER_BYTES, MAX_SERVER_HEADER_BYTES};

/// Builds one unfragmented, unmasked server frame whose payload `write_payload` appends to
/// the buffer it is given. The header is written in front of the payload afterwards, into
/// space reserved up front, so the payload is never copied and the frame costs one allocation.
pub fn build_frame(
    opcode: OpCode,
    payload_capacity_hint: usize,
    write_payload: impl FnOnce(&mut Vec<u8>),
) -> Bytes {
    let mut buf = Vec::with_capacity(MAX_SERVER_HEADER_BYTES + payload_capacity_hint);
    buf.resize(MAX_SERVER_HEADER_BYTES, 0);
    write_payload(&mut buf);
    let payload_len = buf.len() - MAX_SERVER_HEADER_BYTES;
    let mut header = [0u8; MAX_HEADER_BYTES];
    let header_len = encode_header(true, opcode, payload_len, None, &mut header);
    let start = MAX_SERVER_HEADER_BYTES - header_len;
    buf[start..MAX_SERVER_HEADER_BYTES].copy_from_slice(&header[..header_len]);
    Bytes::from(buf).slice(start..)
}

/// A server frame carrying a copy of `payload`.
pub fn prepared_frame(opcode: OpCode, payload: &[u8]) -> Bytes {
    build_frame(opcode, payload.len(), |buf| buf.extend_from_slice(payload))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc6455_section_5_7_unmasked_hello() {
        assert_eq!(
            &prepared_frame(OpCode::Text, b"Hello")[..],
            b"\x81\x05Hello"
        );
    }

    #[test]
    fn frame_is_one_contiguous_buffer_at_every_length_class() {
        for len in [0usize, 125, 126, 65535, 65536] {
            let payload = vec![7u8; len];
            let frame = prepared_frame(OpCode::Binary, &payload);
            let header = frame.len() - len;
            assert_eq!(header, super::super::frame::header_len(len, false));
            assert_eq!(&frame[header..], &payload[..]);
        }
    }
}
