//! The `Sec-WebSocket-Extensions` grammar (RFC 6455 §9.1): a field value in, one parsed
//! element (extension name and parameters) or one syntax error per list element out.
//! Knows no extension; what an element means is decided by its extension (`permessage_deflate.rs`).
//!
//! ```text
//! extension-list  = 1#extension
//! extension       = extension-token *( ";" extension-param )
//! extension-param = token [ "=" (token | quoted-string) ]
//! ```
//! A quoted value must unescape to a token (RFC 6455 §9.1). Elements are separated by commas
//! outside quoted strings; a broken element does not hide the ones after it.

use std::borrow::Cow;
use std::fmt;

/// At most this many parameters per element; more is malformed (bounds the work on a hostile offer).
pub const MAX_PARAMS: usize = 16;

/// One parameter of an extension element.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Param<'a> {
    /// The parameter name, a token as sent.
    pub name: &'a str,
    /// The value, unescaped when it was a quoted-string; `None` when the parameter had no `=`.
    pub value: Option<Cow<'a, str>>,
}

/// One element of the extension list: an extension name and its parameters in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extension<'a> {
    /// The extension token as sent.
    pub name: &'a str,
    /// Its parameters in the order sent (duplicates kept: their meaning is the extension's call).
    pub params: Vec<Param<'a>>,
}

/// Why a list element is not valid RFC 6455 §9.1 syntax.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExtensionSyntaxError {
    /// An empty extension name or parameter name, or a byte outside `tchar` where a token was due.
    ExpectedToken,
    /// A quoted-string without its closing quote (the rest of the field is swallowed).
    UnterminatedQuote,
    /// A quoted value that does not unescape to a token.
    QuotedValueNotToken,
    /// Bytes after a parameter that are neither `;` nor the end of the element.
    TrailingBytes,
    /// More than `MAX_PARAMS` parameters.
    TooManyParams,
}

impl fmt::Display for ExtensionSyntaxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ExtensionSyntaxError::ExpectedToken => "expected a token",
            ExtensionSyntaxError::UnterminatedQuote => "unterminated quoted-string",
            ExtensionSyntaxError::QuotedValueNotToken => "quoted value is not a token",
            ExtensionSyntaxError::TrailingBytes => "unexpected bytes after a parameter",
            ExtensionSyntaxError::TooManyParams => "too many parameters",
        })
    }
}

impl std::error::Error for ExtensionSyntaxError {}

/// `tchar` (RFC 9110 §5.6.2).
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn is_ows(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// The elements of one `Sec-WebSocket-Extensions` field value, in order. Empty elements
/// (`a,,b`, RFC 9110 §5.6.1) are skipped; each non-empty one is parsed or reported broken.
pub fn parse_extensions(value: &[u8]) -> Extensions<'_> {
    Extensions { rest: value }
}

/// Iterator returned by `parse_extensions`.
#[derive(Debug, Clone)]
pub struct Extensions<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Extensions<'a> {
    type Item = Result<Extension<'a>, ExtensionSyntaxError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let start = skip_ows(self.rest, 0);
            if start == self.rest.len() {
                return None;
            }
            if self.rest[start] == b',' {
                self.rest = &self.rest[start + 1..];
                continue;
            }
            let (result, end) = parse_element(self.rest, start);
            self.rest = match result {
                // A broken element: resume after the next comma outside quotes.
                Err(_) => &self.rest[skip_to_comma(self.rest, end)..],
                Ok(_) => &self.rest[end..],
            };
            if let Some(b',') = self.rest.first() {
                self.rest = &self.rest[1..];
            }
            return Some(result);
        }
    }
}

fn skip_ows(bytes: &[u8], mut pos: usize) -> usize {
    while pos < bytes.len() && is_ows(bytes[pos]) {
        pos += 1;
    }
    pos
}

fn token(bytes: &[u8], start: usize) -> Result<(&str, usize), ExtensionSyntaxError> {
    let mut end = start;
    while end < bytes.len() && is_tchar(bytes[end]) {
        end += 1;
    }
    if end == start {
        return Err(ExtensionSyntaxError::ExpectedToken);
    }
    // tchar is ASCII, so this cannot fail; the error path keeps it panic-free regardless.
    let text =
        std::str::from_utf8(&bytes[start..end]).map_err(|_| ExtensionSyntaxError::ExpectedToken)?;
    Ok((text, end))
}

/// The index of the comma that ends the element containing `pos` (or the end), honouring quotes.
fn skip_to_comma(bytes: &[u8], mut pos: usize) -> usize {
    let mut quoted = false;
    while pos < bytes.len() {
        match bytes[pos] {
            b'\\' if quoted => pos += 1,
            b'"' => quoted = !quoted,
            b',' if !quoted => return pos,
            _ => {}
        }
        pos += 1;
    }
    bytes.len()
}

/// Parses a quoted-string starting at the opening quote (RFC 9110 §5.6.4); returns the
/// unescaped content and the index after the closing quote.
fn quoted_string(bytes: &[u8], open: usize) -> Result<(Cow<'_, str>, usize), ExtensionSyntaxError> {
    let mut pos = open + 1;
    let mut escaped: Option<Vec<u8>> = None;
    while pos < bytes.len() {
        match bytes[pos] {
            b'"' => {
                let content = match escaped {
                    None => Cow::Borrowed(&bytes[open + 1..pos]),
                    Some(v) => Cow::Owned(v),
                };
                // RFC 6455 §9.1: the unescaped value MUST be a token; so it is ASCII.
                if content.is_empty() || !content.iter().all(|&b| is_tchar(b)) {
                    return Err(ExtensionSyntaxError::QuotedValueNotToken);
                }
                let text = match content {
                    Cow::Borrowed(b) => Cow::Borrowed(
                        std::str::from_utf8(b)
                            .map_err(|_| ExtensionSyntaxError::QuotedValueNotToken)?,
                    ),
                    Cow::Owned(v) => Cow::Owned(
                        String::from_utf8(v)
                            .map_err(|_| ExtensionSyntaxError::QuotedValueNotToken)?,
                    ),
                };
                return Ok((text, pos + 1));
            }
            b'\\' => {
                let Some(&next) = bytes.get(pos + 1) else {
                    break;
                };
                escaped
                    .get_or_insert_with(|| bytes[open + 1..pos].to_vec())
                    .push(next);
                pos += 2;
            }
            b => {
                if let Some(v) = escaped.as_mut() {
                    v.push(b);
                }
                pos += 1;
            }
        }
    }
    Err(ExtensionSyntaxError::UnterminatedQuote)
}

/// Parses one element starting at `start` (a non-OWS, non-comma byte). Returns the result and
/// the index where parsing stopped (at the separating comma or the end on success).
fn parse_element(
    bytes: &[u8],
    start: usize,
) -> (Result<Extension<'_>, ExtensionSyntaxError>, usize) {
    let (name, mut pos) = match token(bytes, start) {
        Ok(found) => found,
        Err(e) => return (Err(e), start),
    };
    let mut params = Vec::new();
    loop {
        pos = skip_ows(bytes, pos);
        match bytes.get(pos) {
            None | Some(b',') => return (Ok(Extension { name, params }), pos),
            Some(b';') => pos = skip_ows(bytes, pos + 1),
            Some(_) => return (Err(ExtensionSyntaxError::TrailingBytes), pos),
        }
        if params.len() == MAX_PARAMS {
            return (Err(ExtensionSyntaxError::TooManyParams), pos);
        }
        let (param_name, after) = match token(bytes, pos) {
            Ok(found) => found,
            Err(e) => return (Err(e), pos),
        };
        pos = skip_ows(bytes, after);
        let value = if bytes.get(pos) == Some(&b'=') {
            pos = skip_ows(bytes, pos + 1);
            let parsed = if bytes.get(pos) == Some(&b'"') {
                quoted_string(bytes, pos)
            } else {
                token(bytes, pos).map(|(t, end)| (Cow::Borrowed(t), end))
            };
            match parsed {
                Ok((value, end)) => {
                    pos = end;
                    Some(value)
                }
                Err(ExtensionSyntaxError::UnterminatedQuote) => {
                    return (Err(ExtensionSyntaxError::UnterminatedQuote), bytes.len())
                }
                Err(e) => return (Err(e), pos),
            }
        } else {
            None
        };
        params.push(Param {
            name: param_name,
            value,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An element as owned strings: name and (param, value) pairs.
    type Owned = Result<(String, Vec<(String, Option<String>)>), ExtensionSyntaxError>;

    fn names(value: &str) -> Vec<Owned> {
        parse_extensions(value.as_bytes())
            .map(|r| {
                r.map(|e| {
                    (
                        e.name.to_string(),
                        e.params
                            .into_iter()
                            .map(|p| (p.name.to_string(), p.value.map(|v| v.into_owned())))
                            .collect(),
                    )
                })
            })
            .collect()
    }

    fn ok(name: &str, params: &[(&str, Option<&str>)]) -> Owned {
        Ok((
            name.to_string(),
            params
                .iter()
                .map(|(n, v)| (n.to_string(), v.map(str::to_string)))
                .collect(),
        ))
    }

    #[test]
    fn rfc7692_section_5_and_7_examples() {
        // RFC 7692 §5.2 and §7.1.3 offers.
        assert_eq!(
            names("permessage-deflate; client_max_window_bits"),
            vec![ok(
                "permessage-deflate",
                &[("client_max_window_bits", None)]
            )]
        );
        assert_eq!(
            names("permessage-deflate; client_max_window_bits; server_max_window_bits=10, permessage-deflate; client_max_window_bits"),
            vec![
                ok(
                    "permessage-deflate",
                    &[("client_max_window_bits", None), ("server_max_window_bits", Some("10"))]
                ),
                ok("permessage-deflate", &[("client_max_window_bits", None)]),
            ]
        );
        assert_eq!(
            names("permessage-deflate;server_max_window_bits=\"10\""),
            vec![ok(
                "permessage-deflate",
                &[("server_max_window_bits", Some("10"))]
            )]
        );
    }

    #[test]
    fn rfc6455_section_9_1_example_and_whitespace() {
        assert_eq!(
            names("mux; max-channels=4; flow-control, deflate-stream"),
            vec![
                ok(
                    "mux",
                    &[("max-channels", Some("4")), ("flow-control", None)]
                ),
                ok("deflate-stream", &[]),
            ]
        );
        assert_eq!(
            names(" ,\t a ;b = 1 ;\tc ,, d "),
            vec![ok("a", &[("b", Some("1")), ("c", None)]), ok("d", &[])]
        );
        assert_eq!(names(""), vec![]);
        assert_eq!(names(" , ,"), vec![]);
    }

    #[test]
    fn quoted_values_are_unescaped_and_must_be_tokens() {
        assert_eq!(
            names(r#"x; a="1\0", y"#),
            vec![ok("x", &[("a", Some("10"))]), ok("y", &[])]
        );
        assert_eq!(
            names(r#"x; a="1 0", y"#),
            vec![Err(ExtensionSyntaxError::QuotedValueNotToken), ok("y", &[])]
        );
        assert_eq!(
            names(r#"x; a="", y"#),
            vec![Err(ExtensionSyntaxError::QuotedValueNotToken), ok("y", &[])]
        );
        // A comma inside quotes does not split the list.
        assert_eq!(
            names(r#"x; a="1,0", y"#),
            vec![Err(ExtensionSyntaxError::QuotedValueNotToken), ok("y", &[])]
        );
        assert_eq!(
            names(r#"x; a="10, y"#),
            vec![Err(ExtensionSyntaxError::UnterminatedQuote)]
        );
        assert_eq!(
            names(r#"x; a="10\"#),
            vec![Err(ExtensionSyntaxError::UnterminatedQuote)]
        );
    }

    #[test]
    fn broken_elements_do_not_hide_the_next_one() {
        for bad in [
            "; a",
            "=x",
            "x;",
            "x; =1",
            "x; a=",
            "x; a=1 2",
            "x y",
            "x; a==1",
            "x; a=\u{e9}",
            "\u{e9}",
        ] {
            let value = format!("{bad}, ok");
            let parsed = names(&value);
            assert_eq!(parsed.len(), 2, "{value:?}: {parsed:?}");
            assert!(parsed[0].is_err(), "{value:?}: {parsed:?}");
            assert_eq!(parsed[1], ok("ok", &[]), "{value:?}");
        }
    }

    #[test]
    fn parameters_are_bounded() {
        let many = format!("x{}", "; a".repeat(MAX_PARAMS + 1));
        assert_eq!(names(&many), vec![Err(ExtensionSyntaxError::TooManyParams)]);
        let enough = format!("x{}", "; a".repeat(MAX_PARAMS));
        assert!(names(&enough)[0].is_ok());
    }
}
