//! HTTP/1.1 response heads and small bodies (RFC 9112 §4, §6): byte strings for the event loop
//! to write. Knows status lines and framing headers; knows nothing about sockets or routing.

use std::io::Write;

/// The statuses of answers that are not refusals (refusals take theirs from
/// `http_refusal::Refusal::status`).
pub mod status {
    /// 200: the request succeeded (RFC 9110 §15.3.1).
    pub const OK: u16 = 200;
    /// 400: a request the `--metrics-listen` listener cannot parse (RFC 9110 §15.5.1).
    pub const BAD_REQUEST: u16 = 400;
    /// 404: any other path on the `--metrics-listen` listener (RFC 9110 §15.5.5).
    pub const NOT_FOUND: u16 = 404;
    /// 503: `/readyz` while draining (RFC 9110 §15.6.4).
    pub const SERVICE_UNAVAILABLE: u16 = 503;
}

/// The reason phrase for the statuses crier sends (RFC 9110 §15); clients ignore it (RFC 9112 §4).
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        301 => "Moved Permanently",
        304 => "Not Modified",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        411 => "Length Required",
        413 => "Content Too Large",
        414 => "URI Too Long",
        415 => "Unsupported Media Type",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "Unknown",
    }
}

/// A complete HTTP/1.1 response: status line, `extra_headers`, `Content-Type` (omitted when
/// both it and the body are empty), `Content-Length` (always, so the peer knows where the body
/// ends, RFC 9112 §6.3) and `Connection: close` unless `keep_alive` (RFC 9112 §9.6).
/// Header names and values are ours, never the peer's, so no escaping is needed.
pub fn response(
    status: u16,
    extra_headers: &[(&str, &str)],
    content_type: &str,
    body: &[u8],
    keep_alive: bool,
) -> Vec<u8> {
    let mut out = start(status, extra_headers, body.len());
    write_framing(&mut out, content_type, body.len(), keep_alive);
    out.extend_from_slice(body);
    out
}

/// The head [`response`] would write for a body of `body_len` bytes, without the body: for a
/// body sent from a shared buffer (an embedded asset) instead of copied into every response.
pub fn response_head(
    status: u16,
    extra_headers: &[(&str, &str)],
    content_type: &str,
    body_len: usize,
    keep_alive: bool,
) -> Vec<u8> {
    let mut out = start(status, extra_headers, 0);
    write_framing(&mut out, content_type, body_len, keep_alive);
    out
}

/// `Content-Type` (unless both it and the body are empty), `Content-Length` and the end of the
/// head.
fn write_framing(out: &mut Vec<u8>, content_type: &str, body_len: usize, keep_alive: bool) {
    if !(content_type.is_empty() && body_len == 0) {
        let _ = write!(out, "Content-Type: {content_type}\r\n");
    }
    let _ = write!(out, "Content-Length: {body_len}\r\n");
    finish(out, keep_alive);
}

/// The status line and `headers`, with `room` more bytes reserved for framing and body.
fn start(status: u16, headers: &[(&str, &str)], room: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(128 + room);
    // Writing into a Vec cannot fail.
    let _ = write!(out, "HTTP/1.1 {} {}\r\n", status, reason_phrase(status));
    for (name, value) in headers {
        let _ = write!(out, "{name}: {value}\r\n");
    }
    out
}

/// `Connection: close` unless `keep_alive`, then the blank line that ends the head.
fn finish(out: &mut Vec<u8>, keep_alive: bool) {
    if !keep_alive {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// `304 Not Modified` (RFC 9110 §15.4.5): `headers` (the validator and caching fields a `200`
/// would carry) and no body, so no `Content-Length` or `Content-Type` either.
pub fn not_modified(headers: &[(&str, &str)], keep_alive: bool) -> Vec<u8> {
    let mut out = start(304, headers, 0);
    finish(&mut out, keep_alive);
    out
}

/// An error response with a `text/plain` body of `message` and a newline, closing the connection.
pub fn plain_error(status: u16, message: &str) -> Vec<u8> {
    let body = format!("{message}\n");
    response(
        status,
        &[],
        "text/plain; charset=utf-8",
        body.as_bytes(),
        false,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keep_alive_response_with_body() {
        let out = response(200, &[("X-A", "1")], "application/json", b"{}", true);
        assert_eq!(
            out,
            b"HTTP/1.1 200 OK\r\nX-A: 1\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
        );
    }

    #[test]
    fn a_head_alone_is_the_response_without_its_body() {
        let whole = response(200, &[("ETag", "\"x\"")], "text/plain", b"hello", false);
        let head = response_head(200, &[("ETag", "\"x\"")], "text/plain", 5, false);
        assert_eq!([&head[..], b"hello"].concat(), whole);
    }

    #[test]
    fn empty_body_omits_content_type_and_closes() {
        let out = response(204, &[], "", b"", false);
        assert_eq!(
            out,
            b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
    }

    #[test]
    fn not_modified_has_no_body_framing() {
        let out = not_modified(&[("ETag", "\"ab\"")], true);
        assert_eq!(out, b"HTTP/1.1 304 Not Modified\r\nETag: \"ab\"\r\n\r\n");
        let closing = not_modified(&[], false);
        assert_eq!(
            closing,
            b"HTTP/1.1 304 Not Modified\r\nConnection: close\r\n\r\n"
        );
    }

    #[test]
    fn plain_error_parses_as_a_response() {
        let out = plain_error(431, "head too large");
        let mut headers = [httparse::EMPTY_HEADER; 8];
        let mut parsed = httparse::Response::new(&mut headers);
        let len = match parsed.parse(&out).unwrap() {
            httparse::Status::Complete(len) => len,
            httparse::Status::Partial => panic!("incomplete"),
        };
        assert_eq!(parsed.code, Some(431));
        assert_eq!(parsed.reason, Some("Request Header Fields Too Large"));
        assert_eq!(&out[len..], b"head too large\n");
        assert_eq!(reason_phrase(799), "Unknown");
    }
}
