//! WebSocket frame header layout (RFC 6455 §5.2): opcodes and header encoding.
//! Decoding lives in `session.rs`; this file only knows the wire format of one header.

/// A frame opcode (RFC 6455 §5.2, §11.8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpCode {
    Continuation = 0x0,
    Text = 0x1,
    Binary = 0x2,
    Close = 0x8,
    Ping = 0x9,
    Pong = 0xA,
}

impl OpCode {
    /// The opcode for a 4-bit value, or `None` for the reserved values 0x3-0x7 and 0xB-0xF.
    pub fn from_u8(value: u8) -> Option<OpCode> {
        match value {
            0x0 => Some(OpCode::Continuation),
            0x1 => Some(OpCode::Text),
            0x2 => Some(OpCode::Binary),
            0x8 => Some(OpCode::Close),
            0x9 => Some(OpCode::Ping),
            0xA => Some(OpCode::Pong),
            _ => None,
        }
    }

    /// Control frames are Close, Ping and Pong (RFC 6455 §5.5).
    pub fn is_control(self) -> bool {
        (self as u8) & 0x8 != 0
    }
}

/// The longest possible header: 2 bytes, 8 bytes of extended length, 4 bytes of mask key.
pub const MAX_HEADER_BYTES: usize = 14;

/// The longest header a server sends (servers never mask, RFC 6455 §5.1).
pub const MAX_SERVER_HEADER_BYTES: usize = 10;

/// How many header bytes a frame with this payload length takes.
pub fn header_len(payload_len: usize, masked: bool) -> usize {
    let length_bytes = if payload_len < 126 {
        0
    } else if payload_len <= u16::MAX as usize {
        2
    } else {
        8
    };
    2 + length_bytes + if masked { 4 } else { 0 }
}

/// Writes a frame header into `out` and returns how many bytes it used. The length uses the
/// minimal encoding (RFC 6455 §5.2: "the minimal number of bytes MUST be used").
pub fn encode_header(
    fin: bool,
    opcode: OpCode,
    payload_len: usize,
    mask_key: Option<[u8; 4]>,
    out: &mut [u8; MAX_HEADER_BYTES],
) -> usize {
    out[0] = (if fin { 0x80 } else { 0 }) | opcode as u8;
    let mask_bit = if mask_key.is_some() { 0x80 } else { 0 };
    let mut used = if payload_len < 126 {
        out[1] = mask_bit | payload_len as u8;
        2
    } else if payload_len <= u16::MAX as usize {
        out[1] = mask_bit | 126;
        out[2..4].copy_from_slice(&(payload_len as u16).to_be_bytes());
        4
    } else {
        out[1] = mask_bit | 127;
        out[2..10].copy_from_slice(&(payload_len as u64).to_be_bytes());
        10
    };
    if let Some(key) = mask_key {
        out[used..used + 4].copy_from_slice(&key);
        used += 4;
    }
    used
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_lengths_switch_at_126_and_65536() {
        let mut out = [0u8; MAX_HEADER_BYTES];
        for (len, expected) in [(0, 2), (125, 2), (126, 4), (65535, 4), (65536, 10)] {
            assert_eq!(
                encode_header(true, OpCode::Text, len, None, &mut out),
                expected
            );
            assert_eq!(header_len(len, false), expected);
            assert_eq!(header_len(len, true), expected + 4);
        }
    }

    #[test]
    fn rfc6455_section_5_7_unmasked_hello_header() {
        let mut out = [0u8; MAX_HEADER_BYTES];
        let used = encode_header(true, OpCode::Text, 5, None, &mut out);
        assert_eq!(&out[..used], &[0x81, 0x05]);
    }

    #[test]
    fn rfc6455_section_5_7_256_byte_binary_header() {
        let mut out = [0u8; MAX_HEADER_BYTES];
        let used = encode_header(true, OpCode::Binary, 256, None, &mut out);
        assert_eq!(&out[..used], &[0x82, 0x7E, 0x01, 0x00]);
    }

    #[test]
    fn reserved_opcodes_are_refused() {
        for value in (0x3..=0x7).chain(0xB..=0xF) {
            assert_eq!(OpCode::from_u8(value), None);
        }
        assert!(OpCode::Ping.is_control());
        assert!(!OpCode::Binary.is_control());
    }
}
