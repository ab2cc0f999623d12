//! URL pieces crier reads: percent-decoding (RFC 3986 §2.1) and `name=value` query pairs.
//! Used for `/ws?topic=a&topic=b` and `/publish/<topic>`; and [`redact_target`], which hides
//! `token=` values wherever a request target is printed.

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

/// What a redacted query value reads as.
pub const REDACTED: &str = "REDACTED";

/// `target` (a request target, `path?query`) with the value of every query parameter whose
/// name ends in `token` (any case, after %-decoding: `token`, `Token`, `access_token`,
/// `tok%65n`) replaced by [`REDACTED`]: the form any log line, panic or debug output must use,
/// since `?token=` carries a bearer credential (issue 11). Borrowed when nothing is redacted.
pub fn redact_target(target: &str) -> std::borrow::Cow<'_, str> {
    let Some((path, query)) = target.split_once('?') else {
        return std::borrow::Cow::Borrowed(target);
    };
    let is_token = |name: &str| {
        let name = percent_decode(name, true).unwrap_or_else(|_| name.as_bytes().to_vec());
        name.to_ascii_lowercase().ends_with(b"token")
    };
    if !query
        .split('&')
        .any(|pair| pair.split_once('=').is_some_and(|(name, _)| is_token(name)))
    {
        return std::borrow::Cow::Borrowed(target);
    }
    let mut out = String::with_capacity(target.len());
    out.push_str(path);
    out.push('?');
    for (i, pair) in query.split('&').enumerate() {
        if i > 0 {
            out.push('&');
        }
        match pair.split_once('=') {
            Some((name, _)) if is_token(name) => {
                out.push_str(name);
                out.push('=');
                out.push_str(REDACTED);
            }
            _ => out.push_str(pair),
        }
    }
    std::borrow::Cow::Owned(out)
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

    #[test]
    fn token_values_are_redacted_and_nothing_else_changes() {
        let cases = [
            ("/ws?token=eyJ.secret.sig", "/ws?token=REDACTED"),
            (
                "/ws?topic=a&token=s3cret&topic=b",
                "/ws?topic=a&token=REDACTED&topic=b",
            ),
            (
                "/ws?Token=x&access_token=y",
                "/ws?Token=REDACTED&access_token=REDACTED",
            ),
            ("/ws?tok%65n=x", "/ws?tok%65n=REDACTED"),
            ("/ws?token=a&token=b", "/ws?token=REDACTED&token=REDACTED"),
            ("/ws?token=", "/ws?token=REDACTED"),
        ];
        for (target, redacted) in cases {
            assert_eq!(redact_target(target), redacted, "{target}");
        }
        for unchanged in [
            "/ws",
            "/ws?topic=token",
            "/ws?tokens=1",
            "/publish/token",
            "/ws?token",
        ] {
            assert!(
                matches!(redact_target(unchanged), std::borrow::Cow::Borrowed(t) if t == unchanged),
                "{unchanged}"
            );
        }
    }
}
