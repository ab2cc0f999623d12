//! Prepared frames: a complete server frame (header + payload) in one contiguous `Bytes`,
//! built once and then written unchanged to any number of connections on any core.

use bytes::Bytes;

use super::frame::{encode_header, header_len, OpCode, MAX_HEADER_BYTES, MAX_SERVER_HEADER_BYTES};
use super::mask::apply_mask;

/// The most payload a control frame may carry (RFC 6455 §5.5).
pub const MAX_CONTROL_PAYLOAD: usize = 125;

/// The opcode and payload of an unmasked single server frame, as built here.
pub fn split_server_frame(frame: &[u8]) -> Option<(OpCode, &[u8])> {
    let opcode = OpCode::from_u8(*frame.first()? & 0x0F)?;
    let header = match *frame.get(1)? & 0x7F {
        126 => 4,
        127 => 10,
        _ => 2,
    };
    Some((opcode, frame.get(header..)?))
}

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

/// A Close frame with `code` and `reason` (RFC 6455 §5.5.1). The reason is cut at a character
/// boundary to fit the 125-byte control payload limit (2 bytes of code + at most 123 of reason).
pub fn close_frame(code: u16, reason: &str) -> Bytes {
    let mut end = reason.len().min(MAX_CONTROL_PAYLOAD - 2);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let reason = &reason.as_bytes()[..end];
    build_frame(OpCode::Close, 2 + reason.len(), |buf| {
        buf.extend_from_slice(&code.to_be_bytes());
        buf.extend_from_slice(reason);
    })
}

/// A Pong echoing `payload` (RFC 6455 §5.5.3); cut to 125 bytes, which a received Ping never exceeds.
pub fn pong_frame(payload: &[u8]) -> Bytes {
    prepared_frame(
        OpCode::Pong,
        &payload[..payload.len().min(MAX_CONTROL_PAYLOAD)],
    )
}

/// A Ping carrying `payload` (RFC 6455 §5.5.2), cut to 125 bytes.
pub fn ping_frame(payload: &[u8]) -> Bytes {
    prepared_frame(
        OpCode::Ping,
        &payload[..payload.len().min(MAX_CONTROL_PAYLOAD)],
    )
}

/// Appends one client frame (header with `mask_key`, then the masked payload, RFC 6455 §5.3)
/// to `out`. For the load generator and tests: the caller chooses the key, so no randomness here.
pub fn encode_client_frame(
    fin: bool,
    opcode: OpCode,
    payload: &[u8],
    mask_key: [u8; 4],
    out: &mut Vec<u8>,
) {
    out.reserve(header_len(payload.len(), true) + payload.len());
    let mut header = [0u8; MAX_HEADER_BYTES];
    let used = encode_header(fin, opcode, payload.len(), Some(mask_key), &mut header);
    out.extend_from_slice(&header[..used]);
    let start = out.len();
    out.extend_from_slice(payload);
    apply_mask(&mut out[start..], mask_key, 0);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc6455_section_5_7_masked_hello_from_a_client() {
        let mut out = Vec::new();
        encode_client_frame(
            true,
            OpCode::Text,
            b"Hello",
            [0x37, 0xfa, 0x21, 0x3d],
            &mut out,
        );
        assert_eq!(
            out,
            [0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58]
        );
    }

    #[test]
    fn rfc6455_section_5_7_ping_and_pong() {
        assert_eq!(&ping_frame(b"Hello")[..], b"\x89\x05Hello");
        assert_eq!(&pong_frame(b"Hello")[..], b"\x8a\x05Hello");
        assert_eq!(pong_frame(&[0; 200]).len(), 2 + 125);
    }

    #[test]
    fn close_frame_cuts_its_reason_at_a_char_boundary() {
        assert_eq!(&close_frame(1000, "")[..], b"\x88\x02\x03\xe8");
        assert_eq!(&close_frame(1001, "bye")[..], b"\x88\x05\x03\xe9bye");
        let long = "é".repeat(100);
        let frame = close_frame(1000, &long);
        assert_eq!(frame.len(), 2 + 2 + 122);
        assert!(std::str::from_utf8(&frame[4..]).is_ok());
    }

    #[test]
    fn rfc6455_section_5_7_64k_binary_header() {
        let frame = prepared_frame(OpCode::Binary, &vec![0u8; 65536]);
        assert_eq!(&frame[..10], &[0x82, 0x7F, 0, 0, 0, 0, 0, 1, 0, 0]);
    }

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
