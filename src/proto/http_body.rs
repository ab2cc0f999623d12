//! Request bodies (RFC 9112 §6-7): deciding the framing from the head and a strict, bounded,
//! sans-IO reader for `Content-Length` and `chunked` bodies. This is an attack surface
//! (request smuggling, memory exhaustion), so anything ambiguous is refused, not guessed.
//!
//! Decisions:
//! - A transfer coding other than `chunked` is refused with 501 (RFC 9112 §6.1 "SHOULD respond
//!   with 501"); a Transfer-Encoding whose final coding is not `chunked` is 400 (RFC 9112 §6.3).
//! - Chunk extensions (`;name=value`) are refused with 400: nothing we serve uses them and
//!   their quoted-string grammar has been a smuggling vector.
//! - Line endings are exactly CRLF; a bare LF is refused (RFC 9112 §7.1 grammar).
//! - Repeated Content-Length fields are refused even when identical (RFC 9112 §6.3 allows it).
//! - Every request's framing is decided here, whatever its route ([`request_body`]). A body on
//!   a route that takes none is refused (400, then the connection closes) rather than read and
//!   discarded: no client of ours sends one, discarding would cost up to `max_body_bytes` of
//!   reading for nothing, and closing leaves no doubt where the next request starts.

use super::error::HttpError;
use super::http::{list_elements, trim_ows, RequestHead};

/// How the body of a request is delimited (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    /// No body: neither Content-Length nor Transfer-Encoding, or `Content-Length: 0`.
    Empty,
    /// Exactly this many bytes follow the head.
    Length(usize),
    /// A chunked body (RFC 9112 §7.1).
    Chunked,
}

/// The most hex digits in a chunk size: 16 fit any u64; more (even leading zeros) is refused.
pub const MAX_CHUNK_SIZE_DIGITS: u8 = 16;

/// The most bytes of trailer section (fields and their CRLFs) we read and discard.
pub const MAX_TRAILER_BYTES: usize = 4096;

/// Decides the body framing of any request the same way (RFC 9112 §6.3): ambiguous framing is
/// refused on every route, and a body on a route that takes none (`accepts_body` false) is
/// [`HttpError::BodyNotAllowed`]. `Content-Length: 0` is no body and is accepted everywhere.
pub fn request_body(
    head: &RequestHead,
    accepts_body: bool,
    max_body_bytes: usize,
) -> Result<BodyFraming, HttpError> {
    match body_framing(head, max_body_bytes)? {
        BodyFraming::Empty => Ok(BodyFraming::Empty),
        _ if !accepts_body => Err(HttpError::BodyNotAllowed),
        framing => Ok(framing),
    }
}

/// Decides the body framing of `head`, refusing anything ambiguous, and checks a declared
/// length against `max_body_bytes` before any body byte is read.
pub fn body_framing(head: &RequestHead, max_body_bytes: usize) -> Result<BodyFraming, HttpError> {
    let has_content_length = head.header("content-length").is_some();
    if head.header("transfer-encoding").is_some() {
        // RFC 9112 §6.1: a request with both "ought to be handled as an error"; §6.3 item 3.
        if has_content_length {
            return Err(HttpError::ConflictingFraming);
        }
        // RFC 9112 §6.1: HTTP/1.0 with Transfer-Encoding has faulty framing.
        if head.minor_version() == 0 {
            return Err(HttpError::InvalidTransferEncoding);
        }
        let codings: Vec<&[u8]> = head
            .headers("transfer-encoding")
            .flat_map(list_elements)
            .collect();
        let is_chunked = |coding: &[u8]| coding.eq_ignore_ascii_case(b"chunked");
        match codings.last() {
            Some(last) if is_chunked(last) => {}
            // RFC 9112 §6.3 item 4: chunked not final means the length cannot be determined.
            _ => return Err(HttpError::InvalidTransferEncoding),
        }
        // RFC 9112 §7: chunked MUST NOT be applied more than once.
        if codings.iter().filter(|c| is_chunked(c)).count() > 1 {
            return Err(HttpError::InvalidTransferEncoding);
        }
        if codings.len() > 1 {
            return Err(HttpError::UnsupportedTransferCoding);
        }
        return Ok(BodyFraming::Chunked);
    }
    if !has_content_length {
        return Ok(BodyFraming::Empty);
    }
    let mut values = head.headers("content-length");
    let (Some(value), None) = (values.next(), values.next()) else {
        return Err(HttpError::InvalidContentLength);
    };
    // RFC 9112 §6.3: Content-Length = 1*DIGIT; no sign, no list, no spaces inside.
    let digits = trim_ows(value);
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return Err(HttpError::InvalidContentLength);
    }
    let mut length: usize = 0;
    for digit in digits {
        length = length
            .checked_mul(10)
            .and_then(|l| l.checked_add(usize::from(digit - b'0')))
            .ok_or(HttpError::PayloadTooLarge)?;
    }
    if length > max_body_bytes {
        return Err(HttpError::PayloadTooLarge);
    }
    Ok(if length == 0 {
        BodyFraming::Empty
    } else {
        BodyFraming::Length(length)
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Length { remaining: usize },
    ChunkSize { size: usize, digits: u8 },
    ChunkSizeLf { size: usize },
    ChunkData { remaining: usize },
    ChunkDataCr,
    ChunkDataLf,
    TrailerLineStart,
    TrailerName { len: usize },
    TrailerValue,
    TrailerLf,
    FinalLf,
    Done,
}

/// A sans-IO body reader: feed it bytes as they arrive, it says how many it consumed and
/// whether the body is complete. Bytes after the body (a pipelined request) are not consumed.
#[derive(Debug)]
pub struct BodyReader {
    state: State,
    max_body_bytes: usize,
    trailer_bytes: usize,
    body: Vec<u8>,
}

impl BodyReader {
    /// A reader for a body framed as `framing`, refusing more than `max_body_bytes` of payload.
    pub fn new(framing: BodyFraming, max_body_bytes: usize) -> BodyReader {
        let state = match framing {
            BodyFraming::Empty | BodyFraming::Length(0) => State::Done,
            BodyFraming::Length(length) => State::Length { remaining: length },
            BodyFraming::Chunked => State::ChunkSize { size: 0, digits: 0 },
        };
        BodyReader {
            state,
            max_body_bytes,
            trailer_bytes: 0,
            body: Vec::new(),
        }
    }

    /// Consumes body bytes from the start of `input`. Returns how many were consumed and
    /// whether the body is complete; once complete, consumes nothing more.
    pub fn feed(&mut self, input: &[u8]) -> Result<(usize, bool), HttpError> {
        let mut pos = 0;
        while pos < input.len() {
            let byte = input[pos];
            self.state = match self.state {
                State::Done => break,
                State::Length { remaining } | State::ChunkData { remaining } => {
                    if self.body.len().saturating_add(remaining) > self.max_body_bytes {
                        return Err(HttpError::PayloadTooLarge);
                    }
                    let take = remaining.min(input.len() - pos);
                    self.body.extend_from_slice(&input[pos..pos + take]);
                    pos += take;
                    let remaining = remaining - take;
                    match self.state {
                        State::Length { .. } if remaining == 0 => State::Done,
                        State::Length { .. } => State::Length { remaining },
                        _ if remaining == 0 => State::ChunkDataCr,
                        _ => State::ChunkData { remaining },
                    }
                    .into_continue(&mut pos, 0)
                }
                State::ChunkSize { size, digits } => match hex_value(byte) {
                    Some(value) => {
                        if digits == MAX_CHUNK_SIZE_DIGITS {
                            return Err(HttpError::InvalidChunk("chunk size has too many digits"));
                        }
                        // 16 digits fit in u64; usize may be narrower, so check.
                        let size = size
                            .checked_mul(16)
                            .and_then(|s| s.checked_add(value))
                            .ok_or(HttpError::PayloadTooLarge)?;
                        // Refuse as soon as the declared size cannot fit, before reading it.
                        if self.body.len().saturating_add(size) > self.max_body_bytes {
                            return Err(HttpError::PayloadTooLarge);
                        }
                        State::ChunkSize {
                            size,
                            digits: digits + 1,
                        }
                    }
                    None if digits == 0 => {
                        return Err(HttpError::InvalidChunk("chunk size is not hex digits"))
                    }
                    None if byte == b'\r' => State::ChunkSizeLf { size },
                    None if byte == b';' => {
                        return Err(HttpError::InvalidChunk("chunk extensions are refused"))
                    }
                    None => return Err(HttpError::InvalidChunk("chunk size line")),
                }
                .into_continue(&mut pos, 1),
                State::ChunkSizeLf { size } => {
                    expect_lf(byte)?;
                    if size == 0 {
                        State::TrailerLineStart
                    } else {
                        State::ChunkData { remaining: size }
                    }
                    .into_continue(&mut pos, 1)
                }
                State::ChunkDataCr => {
                    if byte != b'\r' {
                        return Err(HttpError::InvalidChunk("chunk data not followed by CRLF"));
                    }
                    State::ChunkDataLf.into_continue(&mut pos, 1)
                }
                State::ChunkDataLf => {
                    expect_lf(byte)?;
                    State::ChunkSize { size: 0, digits: 0 }.into_continue(&mut pos, 1)
                }
                // RFC 9112 §7.1.2: trailer fields are read (bounded) and discarded.
                trailer_state => {
                    self.trailer_bytes += 1;
                    if self.trailer_bytes > MAX_TRAILER_BYTES {
                        return Err(HttpError::TrailerTooLarge);
                    }
                    trailer_step(trailer_state, byte)?.into_continue(&mut pos, 1)
                }
            };
        }
        Ok((pos, self.state == State::Done))
    }

    /// Whether the whole body has been read.
    pub fn is_complete(&self) -> bool {
        self.state == State::Done
    }

    /// The body bytes read so far (decoded, without chunk framing).
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// The body, taking it out of the reader.
    pub fn into_body(self) -> Vec<u8> {
        self.body
    }
}

impl State {
    /// Advances `pos` by `step` and yields the state: keeps the big match in `feed` flat.
    fn into_continue(self, pos: &mut usize, step: usize) -> State {
        *pos += step;
        self
    }
}

fn trailer_step(state: State, byte: u8) -> Result<State, HttpError> {
    Ok(match state {
        State::TrailerLineStart if byte == b'\r' => State::FinalLf,
        State::TrailerLineStart if is_tchar(byte) => State::TrailerName { len: 1 },
        State::TrailerLineStart => return Err(HttpError::InvalidChunk("trailer field name")),
        State::TrailerName { len } if is_tchar(byte) => State::TrailerName { len: len + 1 },
        State::TrailerName { .. } if byte == b':' => State::TrailerValue,
        State::TrailerName { .. } => return Err(HttpError::InvalidChunk("trailer field name")),
        // field-value = *( field-vchar / SP / HTAB ), obs-text allowed (RFC 9110 §5.5).
        State::TrailerValue if byte == b'\r' => State::TrailerLf,
        State::TrailerValue if byte == b'\t' || byte >= 0x20 && byte != 0x7F => State::TrailerValue,
        State::TrailerValue => return Err(HttpError::InvalidChunk("trailer field value")),
        State::TrailerLf => {
            expect_lf(byte)?;
            State::TrailerLineStart
        }
        State::FinalLf => {
            expect_lf(byte)?;
            State::Done
        }
        other => other,
    })
}

fn expect_lf(byte: u8) -> Result<(), HttpError> {
    if byte == b'\n' {
        Ok(())
    } else {
        Err(HttpError::InvalidChunk("CR not followed by LF"))
    }
}

fn hex_value(byte: u8) -> Option<usize> {
    match byte {
        b'0'..=b'9' => Some(usize::from(byte - b'0')),
        b'a'..=b'f' => Some(usize::from(byte - b'a' + 10)),
        b'A'..=b'F' => Some(usize::from(byte - b'A' + 10)),
        _ => None,
    }
}

/// tchar (RFC 9110 §5.6.2).
fn is_tchar(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte)
}

#[cfg(test)]
mod tests {
    use super::super::http::{parse_request_head, HeadLimits};
    use super::*;

    fn head(fields: &str) -> RequestHead {
        let text = format!("POST /publish HTTP/1.1\r\nHost: a\r\n{fields}\r\n");
        parse_request_head(text.as_bytes(), &HeadLimits::default())
            .unwrap()
            .unwrap()
            .0
    }

    fn framing(fields: &str) -> Result<BodyFraming, HttpError> {
        body_framing(&head(fields), 100)
    }

    #[test]
    fn framing_from_headers() {
        assert_eq!(framing(""), Ok(BodyFraming::Empty));
        assert_eq!(framing("Content-Length: 0\r\n"), Ok(BodyFraming::Empty));
        assert_eq!(
            framing("Content-Length: 100\r\n"),
            Ok(BodyFraming::Length(100))
        );
        assert_eq!(
            framing("Transfer-Encoding: Chunked\r\n"),
            Ok(BodyFraming::Chunked)
        );
        assert_eq!(
            framing("Transfer-Encoding: ,chunked\r\n"),
            Ok(BodyFraming::Chunked)
        );
    }

    #[test]
    fn content_length_is_strict() {
        for bad in ["+5", "-1", "5,5", "0x10", "5 5", "", "1e3"] {
            let error = framing(&format!("Content-Length: {bad}\r\n")).unwrap_err();
            assert_eq!(error, HttpError::InvalidContentLength, "{bad:?}");
            assert_eq!(error.status(), 400);
        }
        assert_eq!(
            framing("Content-Length: 5\r\nContent-Length: 5\r\n"),
            Err(HttpError::InvalidContentLength)
        );
    }

    #[test]
    fn declared_length_over_the_limit_is_413_before_reading() {
        let error = framing("Content-Length: 101\r\n").unwrap_err();
        assert_eq!(error, HttpError::PayloadTooLarge);
        assert_eq!(error.status(), 413);
        assert_eq!(
            framing("Content-Length: 99999999999999999999999999\r\n"),
            Err(HttpError::PayloadTooLarge)
        );
    }

    #[test]
    fn transfer_encoding_rules() {
        assert_eq!(
            framing("Transfer-Encoding: chunked\r\nContent-Length: 3\r\n"),
            Err(HttpError::ConflictingFraming)
        );
        assert_eq!(
            framing("Transfer-Encoding: chunked, gzip\r\n"),
            Err(HttpError::InvalidTransferEncoding)
        );
        assert_eq!(
            framing("Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n"),
            Err(HttpError::InvalidTransferEncoding)
        );
        assert_eq!(
            framing("Transfer-Encoding: \r\n"),
            Err(HttpError::InvalidTransferEncoding)
        );
        let error = framing("Transfer-Encoding: gzip, chunked\r\n").unwrap_err();
        assert_eq!(error, HttpError::UnsupportedTransferCoding);
        assert_eq!(error.status(), 501);
        let old = parse_request_head(
            b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
            &HeadLimits::default(),
        )
        .unwrap()
        .unwrap()
        .0;
        assert_eq!(
            body_framing(&old, 100),
            Err(HttpError::InvalidTransferEncoding)
        );
    }

    #[test]
    fn a_body_on_a_bodyless_route_is_refused_whatever_its_framing() {
        let bodyless = |fields: &str| request_body(&head(fields), false, 100);
        assert_eq!(bodyless(""), Ok(BodyFraming::Empty));
        assert_eq!(bodyless("Content-Length: 0\r\n"), Ok(BodyFraming::Empty));
        for fields in ["Content-Length: 1\r\n", "Transfer-Encoding: chunked\r\n"] {
            let error = bodyless(fields).unwrap_err();
            assert_eq!(error, HttpError::BodyNotAllowed, "{fields:?}");
            assert_eq!(error.status(), 400);
        }
        // Broken framing is refused as such on every route, before the route is asked.
        assert_eq!(
            bodyless("Transfer-Encoding: chunked\r\nContent-Length: 0\r\n"),
            Err(HttpError::ConflictingFraming)
        );
        assert_eq!(
            bodyless("Content-Length: 101\r\n"),
            Err(HttpError::PayloadTooLarge)
        );
        assert_eq!(
            request_body(&head("Transfer-Encoding: chunked\r\n"), true, 100),
            Ok(BodyFraming::Chunked)
        );
    }

    fn read_all(
        framing: BodyFraming,
        input: &[u8],
        max: usize,
    ) -> Result<(usize, Vec<u8>), HttpError> {
        let mut reader = BodyReader::new(framing, max);
        let (used, complete) = reader.feed(input)?;
        assert!(complete, "incomplete after {used}");
        Ok((used, reader.into_body()))
    }

    #[test]
    fn length_body_stops_at_its_end() {
        let (used, body) = read_all(BodyFraming::Length(5), b"helloGET", 100).unwrap();
        assert_eq!((used, &body[..]), (5, &b"hello"[..]));
        let mut reader = BodyReader::new(BodyFraming::Empty, 0);
        assert_eq!(reader.feed(b"GET"), Ok((0, true)));
        assert!(reader.is_complete());
        assert_eq!(reader.body(), b"");
    }

    #[test]
    fn chunked_body_with_trailer_byte_by_byte() {
        let wire = b"5\r\nhello\r\nA\r\n, world!!!\r\n0\r\nX-Sum: 1 2\r\n\r\nnext";
        let (used, body) = read_all(BodyFraming::Chunked, wire, 100).unwrap();
        assert_eq!(&wire[used..], b"next");
        assert_eq!(body, b"hello, world!!!");
        let mut reader = BodyReader::new(BodyFraming::Chunked, 100);
        for (i, byte) in wire[..used].iter().enumerate() {
            let (n, complete) = reader.feed(std::slice::from_ref(byte)).unwrap();
            assert_eq!(n, 1);
            assert_eq!(complete, i == used - 1);
        }
        assert_eq!(reader.body(), b"hello, world!!!");
    }

    #[test]
    fn chunked_grammar_is_strict() {
        for bad in [
            &b"5;ext=1\r\nhello\r\n0\r\n\r\n"[..],
            b"5\nhello\r\n0\r\n\r\n",
            b"5\r\nhelloX\r\n0\r\n\r\n",
            b"+5\r\nhello\r\n0\r\n\r\n",
            b"0x5\r\nhello\r\n0\r\n\r\n",
            b"\r\n",
            b" 5\r\nhello\r\n0\r\n\r\n",
            b"00000000000000001\r\n",
            b"0\r\nBad Name: x\r\n\r\n",
            b"0\r\n folded\r\n\r\n",
            b"0\r\nX: a\x00b\r\n\r\n",
            b"0\r\n\rX",
        ] {
            let error = BodyReader::new(BodyFraming::Chunked, 100)
                .feed(bad)
                .unwrap_err();
            assert!(
                matches!(error, HttpError::InvalidChunk(_)),
                "{bad:?}: {error:?}"
            );
            assert_eq!(error.status(), 400);
        }
    }

    #[test]
    fn chunk_size_over_the_limit_is_413_before_the_data() {
        let mut reader = BodyReader::new(BodyFraming::Chunked, 10);
        assert_eq!(reader.feed(b"5\r\nhello\r\n"), Ok((10, false)));
        assert_eq!(reader.feed(b"6"), Err(HttpError::PayloadTooLarge));
        let mut reader = BodyReader::new(BodyFraming::Chunked, usize::MAX);
        assert_eq!(reader.feed(b"ffffffffffffffff"), Ok((16, false)));
        let mut reader = BodyReader::new(BodyFraming::Length(11), 10);
        assert_eq!(reader.feed(b"x"), Err(HttpError::PayloadTooLarge));
    }

    #[test]
    fn trailer_section_is_bounded() {
        let mut wire = b"0\r\nX: ".to_vec();
        wire.resize(MAX_TRAILER_BYTES + 10, b'a');
        let error = BodyReader::new(BodyFraming::Chunked, 100)
            .feed(&wire)
            .unwrap_err();
        assert_eq!(error, HttpError::TrailerTooLarge);
        assert_eq!(error.status(), 431);
    }
}
