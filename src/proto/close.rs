//! Close codes (RFC 6455 §7.4): which received codes are valid and the codes crier sends.
//! Only numbers live here; close frames are built in `prepared.rs`, parsed in `session.rs`.

/// Normal closure (RFC 6455 §7.4.1).
pub const NORMAL: u16 = 1000;
/// The server is shutting down or the client navigated away.
pub const GOING_AWAY: u16 = 1001;
/// The peer broke a protocol rule.
pub const PROTOCOL_ERROR: u16 = 1002;
/// A message's data was inconsistent with its type (invalid UTF-8 in text).
pub const INVALID_PAYLOAD: u16 = 1007;
/// A message broke our policy.
pub const POLICY_VIOLATION: u16 = 1008;
/// A message was too big to process.
pub const MESSAGE_TOO_BIG: u16 = 1009;

/// Whether `code` may appear in a received Close frame (RFC 6455 §7.4.1-§7.4.2): 1000-1003,
/// 1007-1011, 1012-1014 (registered with IANA since; Autobahn accepts either) and 3000-4999.
/// 1004 (reserved), 1005, 1006 and 1015 (never sent on the wire), other codes under 3000
/// (reserved for the protocol) and anything from 5000 up are invalid.
pub fn is_valid_received_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc6455_section_7_4_ranges() {
        for valid in [
            1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 3999,
            4000, 4999,
        ] {
            assert!(is_valid_received_code(valid), "{valid}");
        }
        for invalid in [
            0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535,
        ] {
            assert!(!is_valid_received_code(invalid), "{invalid}");
        }
        for sent in [
            NORMAL,
            GOING_AWAY,
            PROTOCOL_ERROR,
            INVALID_PAYLOAD,
            POLICY_VIOLATION,
            MESSAGE_TOO_BIG,
        ] {
            assert!(is_valid_received_code(sent));
        }
    }
}
