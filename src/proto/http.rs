//! HTTP/1.1 request heads (RFC 9112 §2-5): a bounded, incremental parser over bytes and an owned
//! `RequestHead` with case-insensitive field lookup. Bodies live in `http_body.rs`; no I/O here.

use super::error::HttpError;

/// Bounds on a request head, so a peer cannot make us buffer or scan without limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeadLimits {
    /// The longest head (request line + fields + blank line) we buffer, in bytes.
    pub max_head_bytes: usize,
    /// The most header fields we accept.
    pub max_headers: usize,
}

impl Default for HeadLimits {
    /// 8 KiB and 64 fields: what common servers allow, and far above what a WebSocket client sends.
    fn default() -> Self {
        HeadLimits {
            max_head_bytes: 8192,
            max_headers: 64,
        }
    }
}

/// A parsed request head, owned so it outlives the receive buffer. Its `Debug` output hides
/// credentials (`token=` query values, `Authorization` and `Cookie` fields), so a head can
/// never put a token in a log line or a panic message.
#[derive(Clone, PartialEq, Eq)]
pub struct RequestHead {
    method: String,
    target: String,
    minor_version: u8,
    headers: Vec<(String, Vec<u8>)>,
}

impl std::fmt::Debug for RequestHead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let headers: Vec<(&str, std::borrow::Cow<'_, str>)> = self
            .headers
            .iter()
            .map(|(name, value)| {
                let secret = name.eq_ignore_ascii_case("authorization")
                    || name.eq_ignore_ascii_case("proxy-authorization")
                    || name.eq_ignore_ascii_case("cookie");
                let shown = if secret {
                    std::borrow::Cow::Borrowed(super::query::REDACTED)
                } else {
                    String::from_utf8_lossy(value)
                };
                (name.as_str(), shown)
            })
            .collect();
        f.debug_struct("RequestHead")
            .field("method", &self.method)
            .field("target", &super::query::redact_target(&self.target))
            .field("minor_version", &self.minor_version)
            .field("headers", &headers)
            .finish()
    }
}

impl RequestHead {
    /// The request method, case-sensitive (RFC 9110 §9.1).
    pub fn method(&self) -> &str {
        &self.method
    }

    /// The request target as sent (RFC 9112 §3.2).
    pub fn target(&self) -> &str {
        &self.target
    }

    /// The request target before any `?`.
    pub fn path(&self) -> &str {
        self.target
            .split_once('?')
            .map_or(&self.target[..], |(path, _)| path)
    }

    /// The query after the first `?`, if there is one.
    pub fn query(&self) -> Option<&str> {
        self.target.split_once('?').map(|(_, query)| query)
    }

    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub fn minor_version(&self) -> u8 {
        self.minor_version
    }

    /// The value of the first field named `name` (ASCII case-insensitive, RFC 9110 §5.1).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| &v[..])
    }

    /// The values of every field named `name`, in order.
    pub fn headers<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| &v[..])
    }

    /// All fields in order, names as sent.
    pub fn all_headers(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.headers.iter().map(|(n, v)| (&n[..], &v[..]))
    }

    /// Whether the comma-separated lists of every `name` field contain `token`, compared
    /// ASCII case-insensitively after trimming whitespace (RFC 9110 §5.6.1), e.g.
    /// `Connection: keep-alive, Upgrade` has the token `upgrade`.
    pub fn has_token(&self, name: &str, token: &str) -> bool {
        self.headers(name)
            .flat_map(list_elements)
            .any(|element| element.eq_ignore_ascii_case(token.as_bytes()))
    }
}

/// The non-empty elements of a comma-separated field value, each trimmed of OWS (RFC 9110 §5.6.1).
pub fn list_elements(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(trim_ows)
        .filter(|element| !element.is_empty())
}

/// `value` without leading and trailing spaces and tabs (OWS, RFC 9110 §5.6.3).
pub fn trim_ows(value: &[u8]) -> &[u8] {
    let is_ows = |b: &u8| *b == b' ' || *b == b'\t';
    let start = value.iter().position(|b| !is_ows(b)).unwrap_or(value.len());
    let end = value
        .iter()
        .rposition(|b| !is_ows(b))
        .map_or(start, |i| i + 1);
    &value[start..end]
}

/// Parses a request head from the start of `buf`. Returns the head and its length in bytes
/// (the body, if any, starts there), `Ok(None)` while the head is incomplete and shorter than
/// `max_head_bytes`, and `HeadTooLarge` once `buf` holds `max_head_bytes` without a complete head.
pub fn parse_request_head(
    buf: &[u8],
    limits: &HeadLimits,
) -> Result<Option<(RequestHead, usize)>, HttpError> {
    // Never scan past the cap: a peer cannot make us re-parse an ever-growing buffer.
    let window = &buf[..buf.len().min(limits.max_head_bytes)];
    let mut fields = vec![httparse::EMPTY_HEADER; limits.max_headers];
    let mut request = httparse::Request::new(&mut fields);
    let head_len = match request.parse(window) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() >= limits.max_head_bytes => {
            return Err(HttpError::HeadTooLarge)
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(HttpError::TooManyHeaders),
        Err(error) => return Err(HttpError::Malformed(malformed_reason(error))),
    };
    // Complete implies all three are set; refuse rather than panic if httparse ever disagrees.
    let (Some(method), Some(target), Some(minor_version)) =
        (request.method, request.path, request.version)
    else {
        return Err(HttpError::Malformed("incomplete request line"));
    };
    let headers: Vec<(String, Vec<u8>)> = request
        .headers
        .iter()
        .map(|h| (h.name.to_owned(), h.value.to_vec()))
        .collect();
    let head = RequestHead {
        method: method.to_owned(),
        target: target.to_owned(),
        minor_version,
        headers,
    };
    // RFC 9112 §3.2: a server MUST respond 400 to an HTTP/1.1 request without a Host field
    // and to any request with more than one.
    match head.headers("host").count() {
        0 if minor_version >= 1 => return Err(HttpError::MissingHost),
        0 | 1 => {}
        _ => return Err(HttpError::DuplicateHost),
    }
    Ok(Some((head, head_len)))
}

fn malformed_reason(error: httparse::Error) -> &'static str {
    match error {
        httparse::Error::HeaderName => "invalid header name",
        httparse::Error::HeaderValue => "invalid header value",
        httparse::Error::NewLine => "invalid line ending",
        httparse::Error::Status => "invalid status",
        httparse::Error::Token => "invalid token in request line",
        httparse::Error::Version => "invalid HTTP version",
        httparse::Error::TooManyHeaders => "too many headers",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UPGRADE: &[u8] = b"GET /chat?room=1 HTTP/1.1\r\nHost: server.example.com\r\n\
Upgrade: websocket\r\nConnection: keep-alive, Upgrade\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\nextra";

    fn parse(buf: &[u8]) -> Result<Option<(RequestHead, usize)>, HttpError> {
        parse_request_head(buf, &HeadLimits::default())
    }

    #[test]
    fn parses_an_upgrade_request_and_reports_the_head_length() {
        let (head, len) = parse(UPGRADE).unwrap().unwrap();
        assert_eq!(&UPGRADE[len..], b"extra");
        assert_eq!(head.method(), "GET");
        assert_eq!(head.target(), "/chat?room=1");
        assert_eq!(head.path(), "/chat");
        assert_eq!(head.query(), Some("room=1"));
        assert_eq!(head.minor_version(), 1);
        assert_eq!(head.header("HOST"), Some(&b"server.example.com"[..]));
        assert_eq!(head.header("missing"), None);
        assert!(head.has_token("connection", "upgrade"));
        assert!(head.has_token("Connection", "Keep-Alive"));
        assert!(!head.has_token("connection", "close"));
        assert_eq!(head.all_headers().count(), 5);
    }

    #[test]
    fn debug_output_hides_credentials() {
        let req = b"GET /ws?topic=a&token=eyJhbGciOi.secretclaims.sig HTTP/1.1\r\nHost: a\r\n\
Authorization: Bearer another-secret\r\nCookie: session=cookie-secret\r\n\r\n";
        let (head, _) = parse(req).unwrap().unwrap();
        let shown = format!("{head:?}");
        for secret in ["secretclaims", "another-secret", "cookie-secret"] {
            assert!(!shown.contains(secret), "{shown}");
        }
        assert!(shown.contains("/ws?topic=a&token=REDACTED"), "{shown}");
        assert!(shown.contains("(\"Host\", \"a\")"), "{shown}");
        // The head itself is untouched: the server still reads the token.
        assert!(head.target().contains("secretclaims"));
    }

    #[test]
    fn tokens_span_repeated_fields() {
        let req = b"GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive\r\nConnection: ,Upgrade\t\r\n\r\n";
        let (head, _) = parse(req).unwrap().unwrap();
        assert_eq!(head.headers("connection").count(), 2);
        assert!(head.has_token("connection", "upgrade"));
        assert!(!head.has_token("connection", "upgrad"));
        assert_eq!(head.query(), None);
    }

    #[test]
    fn incomplete_until_every_byte_arrives() {
        let full = UPGRADE.len() - b"extra".len();
        for cut in 0..full {
            assert_eq!(parse(&UPGRADE[..cut]), Ok(None), "cut at {cut}");
        }
        assert!(parse(&UPGRADE[..full]).unwrap().is_some());
    }

    #[test]
    fn head_too_large_is_431_once_the_cap_is_reached() {
        let limits = HeadLimits {
            max_head_bytes: 32,
            max_headers: 4,
        };
        let mut buf = b"GET / HTTP/1.1\r\nHost: a\r\nX: ".to_vec();
        assert_eq!(parse_request_head(&buf, &limits), Ok(None));
        buf.resize(32, b'a');
        let error = parse_request_head(&buf, &limits).unwrap_err();
        assert_eq!(error, HttpError::HeadTooLarge);
        assert_eq!(error.status(), 431);
    }

    #[test]
    fn too_many_headers_is_431() {
        let limits = HeadLimits {
            max_head_bytes: 8192,
            max_headers: 2,
        };
        let req = b"GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 2\r\n\r\n";
        let error = parse_request_head(req, &limits).unwrap_err();
        assert_eq!(error, HttpError::TooManyHeaders);
        assert_eq!(error.status(), 431);
    }

    #[test]
    fn host_is_required_once_in_http_1_1() {
        assert_eq!(
            parse(b"GET / HTTP/1.1\r\n\r\n"),
            Err(HttpError::MissingHost)
        );
        assert_eq!(
            parse(b"GET / HTTP/1.1\r\nHost: a\r\nhost: b\r\n\r\n"),
            Err(HttpError::DuplicateHost)
        );
        let (head, _) = parse(b"GET / HTTP/1.0\r\n\r\n").unwrap().unwrap();
        assert_eq!(head.minor_version(), 0);
    }

    #[test]
    fn malformed_requests_are_400() {
        for bad in [
            &b"GET / HTTP/2.0\r\nHost: a\r\n\r\n"[..],
            b"GET / HTTP/1.1\r\nHost a\r\n\r\n",
            b"GET / HTTP/1.1\r\nHo st: a\r\n\r\n",
            b"G\x01T / HTTP/1.1\r\nHost: a\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n",
        ] {
            let error = parse(bad).unwrap_err();
            assert!(
                matches!(error, HttpError::Malformed(_)),
                "{bad:?}: {error:?}"
            );
            assert_eq!(error.status(), 400);
        }
    }

    #[test]
    fn trims_only_ows() {
        assert_eq!(trim_ows(b" \t a b \t"), b"a b");
        assert_eq!(trim_ows(b"   "), b"");
        assert_eq!(list_elements(b" a,, b ,").collect::<Vec<_>>(), [b"a", b"b"]);
    }
}
