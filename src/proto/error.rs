//! Error enums of the protocol core, each variant named after the rule the peer broke and
//! mapped to a close code (RFC 6455 §7.4.1) or an HTTP status (RFC 9110 §15) in exactly one
//! place. This file decides nothing about what to do with an error; the event loop does.

use std::fmt;

use super::close;

/// A WebSocket framing or message rule the peer broke (RFC 6455 §5, §7, §8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProtocolError {
    /// Server role: a client frame arrived without a mask (RFC 6455 §5.1).
    UnmaskedFrame,
    /// Client role: a server frame arrived masked (RFC 6455 §5.1).
    MaskedFrame,
    /// An RSV bit that no negotiated extension defines for this frame (RFC 6455 §5.2): any RSV
    /// bit without permessage-deflate; with it, RSV2/RSV3, or RSV1 on a control frame or a
    /// continuation (RFC 7692 §6.1).
    ReservedBitsSet,
    /// A compressed message that is not a valid DEFLATE stream (RFC 7692 §8: fail the
    /// connection). Mapped to 1007: the payload is inconsistent with the message's type.
    InvalidCompressedData,
    /// Opcode 0x3-0x7 or 0xB-0xF (RFC 6455 §5.2).
    ReservedOpcode,
    /// A control frame with a payload over 125 bytes (RFC 6455 §5.5).
    ControlFrameTooLong,
    /// A control frame without FIN (RFC 6455 §5.5: control frames MUST NOT be fragmented).
    FragmentedControlFrame,
    /// A continuation frame with no fragmented message in progress (RFC 6455 §5.4).
    UnexpectedContinuation,
    /// A new Text or Binary frame while a fragmented message is unfinished (RFC 6455 §5.4).
    ExpectedContinuation,
    /// A 64-bit payload length with the most significant bit set (RFC 6455 §5.2).
    LengthTopBitSet,
    /// The declared length of a message exceeds our limit (ours, not an RFC rule; RFC 6455 §7.4.1 code 1009).
    MessageTooLarge,
    /// A Text message that is not valid UTF-8 (RFC 6455 §5.6, §8.1).
    InvalidUtf8,
    /// A Close frame carrying a code that must not be sent on the wire (RFC 6455 §7.4).
    InvalidCloseCode,
    /// A Close frame with a 1-byte body: a code is 2 bytes (RFC 6455 §5.5.1).
    InvalidClosePayload,
    /// A Close frame whose reason is not valid UTF-8 (RFC 6455 §5.5.1). Mapped to 1007 like any
    /// other invalid UTF-8 the peer sends (RFC 6455 §8.1), which Autobahn 7.5.1 accepts.
    InvalidCloseReason,
    /// A data message not complete within `--fragment-timeout` of its first frame (ours, not
    /// an RFC rule: policy violation, RFC 6455 §7.4.1 code 1008).
    MessageTimeout,
}

impl ProtocolError {
    /// The close code to send back before closing (RFC 6455 §7.4.1).
    pub fn close_code(&self) -> u16 {
        use ProtocolError::*;
        match self {
            InvalidUtf8 | InvalidCloseReason | InvalidCompressedData => close::INVALID_PAYLOAD,
            MessageTooLarge => close::MESSAGE_TOO_BIG,
            MessageTimeout => close::POLICY_VIOLATION,
            UnmaskedFrame
            | MaskedFrame
            | ReservedBitsSet
            | ReservedOpcode
            | ControlFrameTooLong
            | FragmentedControlFrame
            | UnexpectedContinuation
            | ExpectedContinuation
            | LengthTopBitSet
            | InvalidCloseCode
            | InvalidClosePayload => close::PROTOCOL_ERROR,
        }
    }
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use ProtocolError::*;
        f.write_str(match self {
            UnmaskedFrame => "client frame is not masked",
            MaskedFrame => "server frame is masked",
            ReservedBitsSet => "reserved bits set that no negotiated extension defines",
            InvalidCompressedData => "compressed message is not valid deflate data",
            ReservedOpcode => "reserved opcode",
            ControlFrameTooLong => "control frame payload over 125 bytes",
            FragmentedControlFrame => "fragmented control frame",
            UnexpectedContinuation => "continuation frame without a message in progress",
            ExpectedContinuation => "new data frame inside a fragmented message",
            LengthTopBitSet => "64-bit payload length with the top bit set",
            MessageTooLarge => "message too large",
            InvalidUtf8 => "text message is not valid UTF-8",
            InvalidCloseCode => "invalid close code",
            InvalidClosePayload => "close payload of 1 byte",
            InvalidCloseReason => "close reason is not valid UTF-8",
            MessageTimeout => "message not complete within the fragment timeout",
        })
    }
}

impl std::error::Error for ProtocolError {}

/// An HTTP/1.1 request rule the peer broke, or one of our request limits (RFC 9110, RFC 9112).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpError {
    /// No complete request head within `max_head_bytes` (431, RFC 6585 §5).
    HeadTooLarge,
    /// More header fields than `max_headers` (431, RFC 6585 §5).
    TooManyHeaders,
    /// Syntax the parser refuses (400, RFC 9112 §2-5); the text names what was wrong.
    Malformed(&'static str),
    /// HTTP/1.1 request without a Host field (400, RFC 9112 §3.2).
    MissingHost,
    /// More than one Host field (400, RFC 9112 §3.2).
    DuplicateHost,
    /// A Content-Length that is not exactly one run of digits, or repeated (400, RFC 9112 §6.3).
    InvalidContentLength,
    /// Both Transfer-Encoding and Content-Length (400, RFC 9112 §6.1: a smuggling signal).
    ConflictingFraming,
    /// A Transfer-Encoding whose final coding is not `chunked`, or `chunked` applied twice,
    /// or any Transfer-Encoding in an HTTP/1.0 request (400, RFC 9112 §6.1, §6.3).
    InvalidTransferEncoding,
    /// A transfer coding other than `chunked` before the final `chunked` (501, RFC 9112 §6.1).
    UnsupportedTransferCoding,
    /// A chunked body that breaks the grammar of RFC 9112 §7.1 (400); the text names the rule.
    InvalidChunk(&'static str),
    /// The trailer section of a chunked body exceeds our bound (431, RFC 9112 §7.1.2).
    TrailerTooLarge,
    /// The body exceeds `max_body_bytes` (413, RFC 9110 §15.5.14).
    PayloadTooLarge,
    /// A body (any Content-Length but 0, or any Transfer-Encoding) on a route that takes none
    /// (400). Refused rather than skipped: a body we do not read would be parsed as the next
    /// request (RFC 9112 §6.3, request smuggling).
    BodyNotAllowed,
}

impl HttpError {
    /// The response status for this error.
    pub fn status(&self) -> u16 {
        use HttpError::*;
        match self {
            HeadTooLarge | TooManyHeaders | TrailerTooLarge => 431,
            Malformed(_)
            | MissingHost
            | DuplicateHost
            | InvalidContentLength
            | ConflictingFraming
            | InvalidTransferEncoding
            | InvalidChunk(_)
            | BodyNotAllowed => 400,
            UnsupportedTransferCoding => 501,
            PayloadTooLarge => 413,
        }
    }
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use HttpError::*;
        match self {
            HeadTooLarge => f.write_str("request head too large"),
            TooManyHeaders => f.write_str("too many header fields"),
            Malformed(what) => write!(f, "malformed request: {what}"),
            MissingHost => f.write_str("missing Host header"),
            DuplicateHost => f.write_str("more than one Host header"),
            InvalidContentLength => f.write_str("invalid Content-Length"),
            ConflictingFraming => f.write_str("both Transfer-Encoding and Content-Length"),
            InvalidTransferEncoding => f.write_str("invalid Transfer-Encoding"),
            UnsupportedTransferCoding => f.write_str("unsupported transfer coding"),
            InvalidChunk(what) => write!(f, "invalid chunked body: {what}"),
            TrailerTooLarge => f.write_str("trailer section too large"),
            PayloadTooLarge => f.write_str("request body too large"),
            BodyNotAllowed => f.write_str("this route takes no request body"),
        }
    }
}

impl std::error::Error for HttpError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_codes_follow_rfc6455_section_7_4_1() {
        assert_eq!(ProtocolError::UnmaskedFrame.close_code(), 1002);
        assert_eq!(ProtocolError::InvalidUtf8.close_code(), 1007);
        assert_eq!(ProtocolError::InvalidCloseReason.close_code(), 1007);
        assert_eq!(ProtocolError::MessageTooLarge.close_code(), 1009);
        assert_eq!(
            ProtocolError::InvalidCloseCode.to_string(),
            "invalid close code"
        );
    }

    #[test]
    fn http_statuses() {
        assert_eq!(HttpError::HeadTooLarge.status(), 431);
        assert_eq!(HttpError::TooManyHeaders.status(), 431);
        assert_eq!(HttpError::Malformed("x").status(), 400);
        assert_eq!(HttpError::MissingHost.status(), 400);
        assert_eq!(HttpError::PayloadTooLarge.status(), 413);
        assert_eq!(HttpError::UnsupportedTransferCoding.status(), 501);
        assert_eq!(
            HttpError::Malformed("bad version").to_string(),
            "malformed request: bad version"
        );
    }
}
