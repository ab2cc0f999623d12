//! The WebSocket opening handshake (RFC 6455 §4): checking a client's upgrade request against
//! our policy and building the 101 response, plus the client side for the load generator.
//! Works on parsed heads and byte strings only; the event loop does the reading and writing.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use sha1::{Digest, Sha1};
use std::fmt;

use super::http::{list_elements, trim_ows, RequestHead};
use super::permessage_deflate::{
    negotiate, parse_server_response, DeflatePolicy, Negotiated, ServerAccepted,
};
use super::response::response;

/// The GUID appended to the client key (RFC 6455 §1.3).
pub const WEBSOCKET_GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// The head of a server response we accept in the client role before giving up.
pub const MAX_RESPONSE_HEAD_BYTES: usize = 8192;

/// `Sec-WebSocket-Accept` for a client key: base64(SHA-1(key + GUID)) (RFC 6455 §4.2.2 item 5.4).
pub fn accept_key(client_key: &[u8]) -> String {
    let mut sha1 = Sha1::new();
    sha1.update(client_key);
    sha1.update(WEBSOCKET_GUID);
    BASE64.encode(sha1.finalize())
}

/// What the server allows in an upgrade.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UpgradePolicy {
    /// Allowed `Origin` values (ASCII case-insensitive); `None` allows every origin. A request
    /// without `Origin` is allowed: only browsers send it, and only browsers are what an origin
    /// check protects against (RFC 6455 §10.2); any other client could forge it anyway.
    pub allowed_origins: Option<Vec<String>>,
    /// Subprotocols we speak, case-sensitive (RFC 6455 §4.1 lists them as tokens compared exactly).
    pub subprotocols: Vec<String>,
    /// permessage-deflate (RFC 7692) on these terms; `None` declines every offer.
    pub deflate: Option<DeflatePolicy>,
}

/// The outcome of a valid upgrade request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    /// The `Sec-WebSocket-Accept` value.
    pub accept_key: String,
    /// The subprotocol we chose, always one the client offered.
    pub subprotocol: Option<String>,
    /// The permessage-deflate offer we accepted, if any (RFC 7692 §5).
    pub deflate: Option<Negotiated>,
}

/// A rule of RFC 6455 §4.2.1 the upgrade request broke, or our origin policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeError {
    /// Method is not GET (405 with `Allow: GET`, RFC 6455 §4.2.1 item 1).
    MethodNotAllowed,
    /// HTTP/1.0: the handshake needs HTTP/1.1 or higher (400, RFC 6455 §4.2.1 item 1).
    HttpVersionTooOld,
    /// No `Upgrade: websocket` (400, RFC 6455 §4.2.1 item 3).
    MissingUpgrade,
    /// No `upgrade` token in `Connection` (400, RFC 6455 §4.2.1 item 4).
    MissingConnectionUpgrade,
    /// No `Sec-WebSocket-Key` (400, RFC 6455 §4.2.1 item 5).
    MissingKey,
    /// A key that is repeated or not base64 of exactly 16 bytes (400, RFC 6455 §4.2.1 item 5).
    BadKey,
    /// `Sec-WebSocket-Version` is not 13 (426 with `Sec-WebSocket-Version: 13`, RFC 6455 §4.4).
    UnsupportedVersion,
    /// The `Origin` is not in the allow-list (403, RFC 6455 §4.2.2 item 4).
    OriginNotAllowed,
}

impl HandshakeError {
    /// The HTTP status of the refusal.
    pub fn status(&self) -> u16 {
        match self {
            HandshakeError::MethodNotAllowed => 405,
            HandshakeError::UnsupportedVersion => 426,
            HandshakeError::OriginNotAllowed => 403,
            HandshakeError::HttpVersionTooOld
            | HandshakeError::MissingUpgrade
            | HandshakeError::MissingConnectionUpgrade
            | HandshakeError::MissingKey
            | HandshakeError::BadKey => 400,
        }
    }

    /// The complete refusal response, with a short text body, closing the connection.
    pub fn response(&self) -> Vec<u8> {
        let extra: &[(&str, &str)] = match self {
            HandshakeError::MethodNotAllowed => &[("Allow", "GET")],
            // RFC 6455 §4.4: list the versions we support.
            HandshakeError::UnsupportedVersion => &[("Sec-WebSocket-Version", "13")],
            _ => &[],
        };
        let body = format!("{self}\n");
        response(
            self.status(),
            extra,
            "text/plain; charset=utf-8",
            body.as_bytes(),
            false,
        )
    }
}

impl fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HandshakeError::MethodNotAllowed => "WebSocket upgrade requires GET",
            HandshakeError::HttpVersionTooOld => "WebSocket upgrade requires HTTP/1.1",
            HandshakeError::MissingUpgrade => "missing Upgrade: websocket",
            HandshakeError::MissingConnectionUpgrade => "missing Connection: upgrade",
            HandshakeError::MissingKey => "missing Sec-WebSocket-Key",
            HandshakeError::BadKey => "Sec-WebSocket-Key must be base64 of 16 bytes",
            HandshakeError::UnsupportedVersion => "Sec-WebSocket-Version must be 13",
            HandshakeError::OriginNotAllowed => "origin not allowed",
        })
    }
}

impl std::error::Error for HandshakeError {}

/// Checks an upgrade request (RFC 6455 §4.2.1) in the order the RFC lists the rules and
/// chooses a subprotocol: the first one the client offers that the policy supports.
pub fn check_upgrade(
    head: &RequestHead,
    policy: &UpgradePolicy,
) -> Result<Accepted, HandshakeError> {
    if head.method() != "GET" {
        return Err(HandshakeError::MethodNotAllowed);
    }
    if head.minor_version() < 1 {
        return Err(HandshakeError::HttpVersionTooOld);
    }
    // The Host field was checked by the head parser (RFC 9112 §3.2).
    if !head.has_token("upgrade", "websocket") {
        return Err(HandshakeError::MissingUpgrade);
    }
    if !head.has_token("connection", "upgrade") {
        return Err(HandshakeError::MissingConnectionUpgrade);
    }
    let mut keys = head.headers("sec-websocket-key");
    let key = match (keys.next(), keys.next()) {
        (None, _) => return Err(HandshakeError::MissingKey),
        (Some(key), None) => trim_ows(key),
        (Some(_), Some(_)) => return Err(HandshakeError::BadKey),
    };
    match BASE64.decode(key) {
        Ok(nonce) if nonce.len() == 16 => {}
        _ => return Err(HandshakeError::BadKey),
    }
    let mut versions = head.headers("sec-websocket-version");
    match (versions.next().map(trim_ows), versions.next()) {
        (Some(b"13"), None) => {}
        _ => return Err(HandshakeError::UnsupportedVersion),
    }
    if let (Some(allowed), Some(origin)) = (&policy.allowed_origins, head.header("origin")) {
        let origin = trim_ows(origin);
        if !allowed
            .iter()
            .any(|a| a.as_bytes().eq_ignore_ascii_case(origin))
        {
            return Err(HandshakeError::OriginNotAllowed);
        }
    }
    let subprotocol = head
        .headers("sec-websocket-protocol")
        .flat_map(list_elements)
        .find_map(|offered| {
            policy
                .subprotocols
                .iter()
                .find(|ours| ours.as_bytes() == offered)
                .cloned()
        });
    // A bad or unsupported offer only means no compression (RFC 7692 §5), never a refusal.
    let deflate = policy
        .deflate
        .as_ref()
        .and_then(|deflate| negotiate(head.headers("sec-websocket-extensions"), deflate));
    Ok(Accepted {
        accept_key: accept_key(key),
        subprotocol,
        deflate,
    })
}

/// The 101 response completing the handshake (RFC 6455 §4.2.2 item 5).
pub fn switching_protocols(accepted: &Accepted) -> Vec<u8> {
    let mut out = Vec::with_capacity(160);
    out.extend_from_slice(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ",
    );
    out.extend_from_slice(accepted.accept_key.as_bytes());
    if let Some(protocol) = &accepted.subprotocol {
        out.extend_from_slice(b"\r\nSec-WebSocket-Protocol: ");
        out.extend_from_slice(protocol.as_bytes());
    }
    if let Some(deflate) = &accepted.deflate {
        out.extend_from_slice(b"\r\nSec-WebSocket-Extensions: ");
        out.extend_from_slice(deflate.response.as_bytes());
    }
    out.extend_from_slice(b"\r\n\r\n");
    out
}

/// The client's upgrade request (RFC 6455 §4.1), for the load generator and tests.
/// `key_base64` is base64 of 16 random bytes chosen by the caller (no randomness in here).
pub fn client_request(
    host: &str,
    path_and_query: &str,
    key_base64: &str,
    subprotocol: Option<&str>,
) -> Vec<u8> {
    let mut out = format!(
        "GET {path_and_query} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
Sec-WebSocket-Key: {key_base64}\r\nSec-WebSocket-Version: 13\r\n"
    );
    if let Some(protocol) = subprotocol {
        out.push_str("Sec-WebSocket-Protocol: ");
        out.push_str(protocol);
        out.push_str("\r\n");
    }
    out.push_str("\r\n");
    out.into_bytes()
}

/// A rule of RFC 6455 §4.1 (client side) the server's response broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientHandshakeError {
    /// The response head is not valid HTTP/1.1 syntax.
    Malformed(&'static str),
    /// No complete response head within `MAX_RESPONSE_HEAD_BYTES`.
    HeadTooLarge,
    /// The status is not 101 (RFC 6455 §4.1, server response item 1).
    UnexpectedStatus(u16),
    /// No `Upgrade: websocket` (item 2).
    MissingUpgrade,
    /// No `upgrade` token in `Connection` (item 3).
    MissingConnectionUpgrade,
    /// `Sec-WebSocket-Accept` missing or not the expected value (item 4).
    AcceptMismatch,
    /// The server chose an extension although we offered none (item 5).
    UnexpectedExtension,
}

impl fmt::Display for ClientHandshakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientHandshakeError::Malformed(what) => write!(f, "malformed response: {what}"),
            ClientHandshakeError::HeadTooLarge => f.write_str("response head too large"),
            ClientHandshakeError::UnexpectedStatus(status) => write!(f, "status {status}, not 101"),
            ClientHandshakeError::MissingUpgrade => f.write_str("missing Upgrade: websocket"),
            ClientHandshakeError::MissingConnectionUpgrade => {
                f.write_str("missing Connection: upgrade")
            }
            ClientHandshakeError::AcceptMismatch => f.write_str("wrong Sec-WebSocket-Accept"),
            ClientHandshakeError::UnexpectedExtension => f.write_str("unrequested extension"),
        }
    }
}

impl std::error::Error for ClientHandshakeError {}

/// Checks the server's response to `client_request` (RFC 6455 §4.1). Returns the head length
/// (frames start there), or `Ok(None)` while the head is incomplete.
pub fn check_server_response(
    buf: &[u8],
    expected_accept: &str,
) -> Result<Option<usize>, ClientHandshakeError> {
    Ok(check_server_response_deflate(buf, expected_accept, false)?.map(|(len, _)| len))
}

/// Like [`check_server_response`] for a request that offered `permessage-deflate;
/// client_max_window_bits` (when `offered_deflate`): also returns what the server accepted,
/// `None` if it declined (RFC 7692 §7.1). A response we cannot accept is `UnexpectedExtension`.
pub fn check_server_response_deflate(
    buf: &[u8],
    expected_accept: &str,
    offered_deflate: bool,
) -> Result<Option<(usize, Option<ServerAccepted>)>, ClientHandshakeError> {
    let window = &buf[..buf.len().min(MAX_RESPONSE_HEAD_BYTES)];
    let mut fields = [httparse::EMPTY_HEADER; 32];
    let mut parsed = httparse::Response::new(&mut fields);
    let head_len = match parsed.parse(window) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() >= MAX_RESPONSE_HEAD_BYTES => {
            return Err(ClientHandshakeError::HeadTooLarge)
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(ClientHandshakeError::HeadTooLarge),
        Err(_) => return Err(ClientHandshakeError::Malformed("invalid response head")),
    };
    match parsed.code {
        Some(101) => {}
        Some(status) => return Err(ClientHandshakeError::UnexpectedStatus(status)),
        None => return Err(ClientHandshakeError::Malformed("no status")),
    }
    let values = |name: &'static str| {
        parsed
            .headers
            .iter()
            .filter(move |h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
    };
    let has_token = |name: &'static str, token: &[u8]| {
        values(name)
            .flat_map(list_elements)
            .any(|element| element.eq_ignore_ascii_case(token))
    };
    if !has_token("upgrade", b"websocket") {
        return Err(ClientHandshakeError::MissingUpgrade);
    }
    if !has_token("connection", b"upgrade") {
        return Err(ClientHandshakeError::MissingConnectionUpgrade);
    }
    let mut accepts = values("sec-websocket-accept");
    match (accepts.next().map(trim_ows), accepts.next()) {
        (Some(accept), None) if accept == expected_accept.as_bytes() => {}
        _ => return Err(ClientHandshakeError::AcceptMismatch),
    }
    let mut extensions = values("sec-websocket-extensions");
    let deflate = match (extensions.next(), extensions.next()) {
        (None, _) => None,
        (Some(value), None) if offered_deflate => {
            Some(parse_server_response(value).ok_or(ClientHandshakeError::UnexpectedExtension)?)
        }
        _ => return Err(ClientHandshakeError::UnexpectedExtension),
    };
    Ok(Some((head_len, deflate)))
}

#[cfg(test)]
mod tests {
    use super::super::http::{parse_request_head, HeadLimits};
    use super::*;

    const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

    fn head_with(fields: &str) -> RequestHead {
        request("GET", "1.1", fields)
    }

    fn request(method: &str, version: &str, fields: &str) -> RequestHead {
        let text =
            format!("{method} /chat HTTP/{version}\r\nHost: server.example.com\r\n{fields}\r\n");
        parse_request_head(text.as_bytes(), &HeadLimits::default())
            .unwrap()
            .unwrap()
            .0
    }

    fn valid_fields() -> String {
        format!(
            "Upgrade: WebSocket\r\nConnection: keep-alive, Upgrade\r\nSec-WebSocket-Key: {KEY}\r\n\
Sec-WebSocket-Version: 13\r\nOrigin: http://example.com\r\n"
        )
    }

    #[test]
    fn rfc6455_section_1_3_accept_key() {
        assert_eq!(accept_key(KEY.as_bytes()), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }

    #[test]
    fn accepts_the_rfc_example_and_answers_101() {
        let accepted =
            check_upgrade(&head_with(&valid_fields()), &UpgradePolicy::default()).unwrap();
        assert_eq!(accepted.accept_key, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        assert_eq!(accepted.subprotocol, None);
        assert_eq!(
            switching_protocols(&accepted),
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
        );
    }

    #[test]
    fn subprotocol_is_the_first_offered_that_we_support() {
        let policy = UpgradePolicy {
            allowed_origins: None,
            subprotocols: vec!["chat".into(), "superchat".into()],
            deflate: None,
        };
        let fields = valid_fields()
            + "Sec-WebSocket-Protocol: v9, superchat\r\nSec-WebSocket-Protocol: chat\r\n";
        let accepted = check_upgrade(&head_with(&fields), &policy).unwrap();
        assert_eq!(accepted.subprotocol.as_deref(), Some("superchat"));
        let response = switching_protocols(&accepted);
        assert!(response.ends_with(b"\r\nSec-WebSocket-Protocol: superchat\r\n\r\n"));
        // Never one the client did not offer, and names compare exactly.
        let fields = valid_fields() + "Sec-WebSocket-Protocol: CHAT, other\r\n";
        assert_eq!(
            check_upgrade(&head_with(&fields), &policy)
                .unwrap()
                .subprotocol,
            None
        );
    }

    #[test]
    fn every_refusal_has_its_status() {
        let policy = UpgradePolicy {
            allowed_origins: Some(vec!["https://crier.example".into()]),
            subprotocols: vec![],
            deflate: None,
        };
        let valid = valid_fields().replace("http://example.com", "HTTPS://crier.example");
        assert!(check_upgrade(&head_with(&valid), &policy).is_ok());
        let without = |name: &str| {
            valid
                .split("\r\n")
                .filter(|line| !line.is_empty() && !line.starts_with(name))
                .map(|line| format!("{line}\r\n"))
                .collect::<String>()
        };
        let cases = [
            (
                request("POST", "1.1", &valid),
                HandshakeError::MethodNotAllowed,
                405,
            ),
            (
                request("GET", "1.0", &valid),
                HandshakeError::HttpVersionTooOld,
                400,
            ),
            (
                head_with(&without("Upgrade")),
                HandshakeError::MissingUpgrade,
                400,
            ),
            (
                head_with(&valid.replace("Upgrade: WebSocket", "Upgrade: h2c")),
                HandshakeError::MissingUpgrade,
                400,
            ),
            (
                head_with(&without("Connection")),
                HandshakeError::MissingConnectionUpgrade,
                400,
            ),
            (
                head_with(&without("Sec-WebSocket-Key")),
                HandshakeError::MissingKey,
                400,
            ),
            (
                head_with(&valid.replace(KEY, "c2hvcnQ=")),
                HandshakeError::BadKey,
                400,
            ),
            (
                head_with(&valid.replace(KEY, "not base64!")),
                HandshakeError::BadKey,
                400,
            ),
            (
                head_with(&(valid.clone() + "Sec-WebSocket-Key: " + KEY + "\r\n")),
                HandshakeError::BadKey,
                400,
            ),
            (
                head_with(&without("Sec-WebSocket-Version")),
                HandshakeError::UnsupportedVersion,
                426,
            ),
            (
                head_with(&valid.replace("Version: 13", "Version: 8")),
                HandshakeError::UnsupportedVersion,
                426,
            ),
            (
                head_with(&valid.replace("crier.example", "evil.example")),
                HandshakeError::OriginNotAllowed,
                403,
            ),
        ];
        for (head, expected, status) in cases {
            let error = check_upgrade(&head, &policy).unwrap_err();
            assert_eq!(error, expected);
            assert_eq!(error.status(), status);
            let response = error.response();
            let text = String::from_utf8(response).unwrap();
            assert!(text.starts_with(&format!("HTTP/1.1 {status} ")), "{text}");
            assert!(text.contains("\r\nConnection: close\r\n"));
            assert!(text.ends_with(&format!("\r\n\r\n{error}\n")));
        }
        assert!(
            String::from_utf8(HandshakeError::MethodNotAllowed.response())
                .unwrap()
                .contains("\r\nAllow: GET\r\n")
        );
        assert!(
            String::from_utf8(HandshakeError::UnsupportedVersion.response())
                .unwrap()
                .contains("\r\nSec-WebSocket-Version: 13\r\n")
        );
        // No Origin at all: a non-browser client, allowed.
        assert!(check_upgrade(&head_with(&without("Origin")), &policy).is_ok());
    }

    #[test]
    fn client_request_round_trips_through_the_server_checks() {
        let request = client_request("localhost:9000", "/ws?x=1", KEY, Some("chat"));
        let (head, len) = parse_request_head(&request, &HeadLimits::default())
            .unwrap()
            .unwrap();
        assert_eq!(len, request.len());
        let policy = UpgradePolicy {
            allowed_origins: None,
            subprotocols: vec!["chat".into()],
            deflate: None,
        };
        let accepted = check_upgrade(&head, &policy).unwrap();
        let mut response = switching_protocols(&accepted);
        let head_len = response.len();
        response.extend_from_slice(b"\x81\x00");
        let expected = accept_key(KEY.as_bytes());
        assert_eq!(
            check_server_response(&response, &expected),
            Ok(Some(head_len))
        );
        assert_eq!(
            check_server_response(&response[..head_len - 1], &expected),
            Ok(None)
        );
        assert_eq!(
            check_server_response(&response, "wrong"),
            Err(ClientHandshakeError::AcceptMismatch)
        );
    }

    #[test]
    fn client_refuses_bad_server_responses() {
        let expected = accept_key(KEY.as_bytes());
        assert_eq!(
            check_server_response(&HandshakeError::BadKey.response(), &expected),
            Err(ClientHandshakeError::UnexpectedStatus(400))
        );
        let ok = format!("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {expected}\r\n");
        let check = |text: String| check_server_response(text.as_bytes(), &expected);
        assert_eq!(check(ok.clone() + "\r\n"), Ok(Some(ok.len() + 2)));
        assert_eq!(
            check(ok.replace("Upgrade: websocket\r\n", "") + "\r\n"),
            Err(ClientHandshakeError::MissingUpgrade)
        );
        assert_eq!(
            check(ok.replace("Connection: Upgrade", "Connection: close") + "\r\n"),
            Err(ClientHandshakeError::MissingConnectionUpgrade)
        );
        assert_eq!(
            check(ok.clone() + "Sec-WebSocket-Extensions: permessage-deflate\r\n\r\n"),
            Err(ClientHandshakeError::UnexpectedExtension)
        );
        assert!(matches!(
            check("HTTP/1.1 1x1 x\r\n\r\n".into()),
            Err(ClientHandshakeError::Malformed(_))
        ));
        assert_eq!(
            check_server_response(&vec![b'a'; MAX_RESPONSE_HEAD_BYTES][..], &expected),
            Err(ClientHandshakeError::Malformed("invalid response head"))
        );
        let mut long = b"HTTP/1.1 101 OK\r\nX: ".to_vec();
        long.resize(MAX_RESPONSE_HEAD_BYTES, b'a');
        assert_eq!(
            check_server_response(&long, &expected),
            Err(ClientHandshakeError::HeadTooLarge)
        );
    }
}
