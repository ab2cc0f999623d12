//! Topic name rules (protocol v1): 1–256 bytes of UTF-8, no control characters, no whitespace,
//! and no `*` or `>` (reserved for wildcards). Validation only: this file allocates nothing.

use std::fmt;

/// The longest topic name, in bytes of UTF-8 (not characters).
pub const MAX_TOPIC_BYTES: usize = 256;

/// Characters reserved for future wildcard subscriptions, refused anywhere in a name.
pub const RESERVED_CHARS: [char; 2] = ['*', '>'];

/// Why a topic name was refused, named after the broken rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopicError {
    /// The name has no bytes.
    Empty,
    /// The name is longer than [`MAX_TOPIC_BYTES`] bytes.
    TooLong,
    /// The name is not valid UTF-8.
    InvalidUtf8,
    /// The name contains a control character (C0, DEL or C1; `char::is_control`).
    /// Checked before whitespace, so `\t`, `\n` and U+0085 report this variant.
    ControlCharacter,
    /// The name contains a Unicode `White_Space` character (`char::is_whitespace`).
    Whitespace,
    /// The name contains a character reserved for wildcards (`*` or `>`).
    ReservedCharacter(char),
}

impl fmt::Display for TopicError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TopicError::Empty => f.write_str("topic name is empty"),
            TopicError::TooLong => {
                write!(f, "topic name is longer than {MAX_TOPIC_BYTES} bytes")
            }
            TopicError::InvalidUtf8 => f.write_str("topic name is not valid UTF-8"),
            TopicError::ControlCharacter => f.write_str("topic name contains a control character"),
            TopicError::Whitespace => f.write_str("topic name contains whitespace"),
            TopicError::ReservedCharacter(c) => {
                write!(f, "topic name contains the reserved character '{c}'")
            }
        }
    }
}

impl std::error::Error for TopicError {}

/// Checks a topic name received as bytes (e.g. from a binary publish frame) and returns it as
/// `&str` when it follows the rules.
pub fn validate_topic(name: &[u8]) -> Result<&str, TopicError> {
    check_len(name.len())?;
    let name = std::str::from_utf8(name).map_err(|_| TopicError::InvalidUtf8)?;
    check_chars(name)?;
    Ok(name)
}

/// Checks a topic name that is already UTF-8 (e.g. a JSON string).
pub fn validate_topic_str(name: &str) -> Result<&str, TopicError> {
    check_len(name.len())?;
    check_chars(name)?;
    Ok(name)
}

fn check_len(len: usize) -> Result<(), TopicError> {
    match len {
        0 => Err(TopicError::Empty),
        n if n > MAX_TOPIC_BYTES => Err(TopicError::TooLong),
        _ => Ok(()),
    }
}

fn check_chars(name: &str) -> Result<(), TopicError> {
    // Fast path for the common all-ASCII name: one byte test per byte, no char decoding.
    if name.is_ascii() {
        for &b in name.as_bytes() {
            check_char(char::from(b))?;
        }
        return Ok(());
    }
    name.chars().try_for_each(check_char)
}

fn check_char(c: char) -> Result<(), TopicError> {
    if c.is_control() {
        Err(TopicError::ControlCharacter)
    } else if c.is_whitespace() {
        Err(TopicError::Whitespace)
    } else if RESERVED_CHARS.contains(&c) {
        Err(TopicError::ReservedCharacter(c))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_names() {
        for name in [
            "news",
            "a",
            "sport/football.results",
            "quote\"back\\slash",
            "ünïcødé-日本語-🎉",
            "#+?!$%&'()[]{}<=~|^`@,;:",
        ] {
            assert_eq!(validate_topic(name.as_bytes()), Ok(name), "{name:?}");
            assert_eq!(validate_topic_str(name), Ok(name), "{name:?}");
        }
    }

    #[test]
    fn length_limits_are_in_bytes() {
        assert_eq!(validate_topic(b""), Err(TopicError::Empty));
        assert_eq!(validate_topic_str(""), Err(TopicError::Empty));
        let max = "x".repeat(MAX_TOPIC_BYTES);
        assert_eq!(validate_topic_str(&max), Ok(max.as_str()));
        let over = "x".repeat(MAX_TOPIC_BYTES + 1);
        assert_eq!(validate_topic_str(&over), Err(TopicError::TooLong));
        // 128 two-byte characters are exactly 256 bytes; one more character is too long.
        let wide = "é".repeat(MAX_TOPIC_BYTES / 2);
        assert_eq!(validate_topic_str(&wide), Ok(wide.as_str()));
        let wider = "é".repeat(MAX_TOPIC_BYTES / 2 + 1);
        assert_eq!(validate_topic_str(&wider), Err(TopicError::TooLong));
    }

    #[test]
    fn refuses_invalid_utf8() {
        for bad in [&b"\xff"[..], b"ab\xc3", b"\xed\xa0\x80", b"\xc0\xaf"] {
            assert_eq!(validate_topic(bad), Err(TopicError::InvalidUtf8), "{bad:?}");
        }
    }

    #[test]
    fn refuses_every_control_character() {
        let controls = (0u32..0x20).chain([0x7f]).chain(0x80..0xa0);
        let mut count = 0;
        for cp in controls {
            let c = char::from_u32(cp).unwrap();
            let name = format!("a{c}b");
            assert_eq!(
                validate_topic(name.as_bytes()),
                Err(TopicError::ControlCharacter),
                "U+{cp:04X}"
            );
            count += 1;
        }
        assert_eq!(count, 65);
    }

    #[test]
    fn refuses_unicode_whitespace() {
        for c in [
            ' ', '\u{a0}', '\u{1680}', '\u{2000}', '\u{200a}', '\u{2028}', '\u{2029}', '\u{202f}',
            '\u{205f}', '\u{3000}',
        ] {
            let name = format!("x{c}");
            assert_eq!(
                validate_topic_str(&name),
                Err(TopicError::Whitespace),
                "{c:?}"
            );
        }
        // Zero-width space is not White_Space in Unicode: allowed.
        assert!(validate_topic_str("a\u{200b}b").is_ok());
    }

    #[test]
    fn refuses_reserved_characters_anywhere() {
        for name in ["*", ">", "news.*", "a>b", "*news"] {
            let c = if name.contains('*') { '*' } else { '>' };
            assert_eq!(
                validate_topic_str(name),
                Err(TopicError::ReservedCharacter(c)),
                "{name:?}"
            );
        }
    }

    #[test]
    fn every_error_has_a_message() {
        for e in [
            TopicError::Empty,
            TopicError::TooLong,
            TopicError::InvalidUtf8,
            TopicError::ControlCharacter,
            TopicError::Whitespace,
            TopicError::ReservedCharacter('*'),
        ] {
            assert!(e.to_string().starts_with("topic name "), "{e:?}");
        }
        assert!(TopicError::ReservedCharacter('>')
            .to_string()
            .contains("'>'"));
    }
}
