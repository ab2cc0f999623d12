//! URL pieces crier reads: percent-decoding (RFC 3986 §2.1) and `name=value` query pairs.
//! Used for `/ws?topic=a&topic=b` and `/publish/<topic>`.

/// Why a percent-encoded string could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PercentError {
    /// `%` not followed by two hex digits.
    BadEscape,
}

/// Decodes `%XX` escapes. In query strings `+` also means a space (HTML form encoding);
/// in paths it is a literal `+`.
pub fn percent_decode(text: &str, plus_is_space: bool) -> Result<Vec<u8>, PercentError> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes.get(i + 1..i + 3).ok_or(PercentError::BadEscape)?;
                let high = hex_value(hex[0]).ok_or(PercentError::BadEscape)?;
                let low = hex_value(hex[1]).ok_or(PercentError::BadEscape)?;
                out.push(high << 4 | low);
                i += 3;
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            byte => {
                out.push(byte);
                i += 1;
            }
        }
    }
    Ok(out)
}

fn hex_value(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        b'A'..=b'F' => Some(digit - b'A' + 10),
        _ => None,
    }
}

/// The raw (still encoded) values of every `name=value` pair named `name`, in order.
pub fn query_values<'q>(query: &'q str, name: &'q str) -> impl Iterator<Item = &'q str> + 'q {
    query
        .split('&')
        .filter_map(move |pair| match pair.split_once('=') {
            Some((key, value)) if key == name => Some(value),
            None if pair == name => Some(""),
            _ => None,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_and_plus_decode() {
        assert_eq!(percent_decode("a%2Fb%20c", false).unwrap(), b"a/b c");
        assert_eq!(percent_decode("a+b", true).unwrap(), b"a b");
        assert_eq!(percent_decode("a+b", false).unwrap(), b"a+b");
        assert_eq!(percent_decode("%e2%82%AC", false).unwrap(), "€".as_bytes());
    }

    #[test]
    fn broken_escapes_are_errors_not_panics() {
        for bad in ["%", "%4", "%zz", "abc%g1", "%\u{e9}"] {
            assert_eq!(
                percent_decode(bad, true),
                Err(PercentError::BadEscape),
                "{bad}"
            );
        }
    }

    #[test]
    fn repeated_parameters_come_in_order() {
        let values: Vec<_> = query_values("topic=a&x=1&topic=b%20c&topic", "topic").collect();
        assert_eq!(values, ["a", "b%20c", ""]);
        assert_eq!(query_values("", "topic").count(), 0);
    }
}
