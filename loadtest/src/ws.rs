//! The thin seam between crier-load and crier's sans-IO protocol code: the client handshake,
//! masked client frames, and a frame reader that hands out one event at a time. If crier's
//! `proto` API changes, only this file changes.

use crier::proto::frame::OpCode;
use crier::proto::handshake;
use crier::proto::prepared::encode_client_frame;
use crier::proto::session::{Decoded, Event, PeerDeflate, Role, Session, SessionLimits};

/// A rule of RFC 6455 §4.1 the broker's handshake response broke.
pub(crate) use crier::proto::handshake::ClientHandshakeError as HandshakeError;
/// A rule of RFC 6455 the broker's frames broke.
pub(crate) use crier::proto::ProtocolError;

/// Largest delivery we accept (the broker's messages are our own payloads plus an envelope).
pub(crate) const MAX_MESSAGE_BYTES: usize = 16 << 20;

/// What the broker sent, one frame or message at a time.
#[derive(Debug)]
pub(crate) enum WsEvent<'a> {
    Text(&'a [u8]),
    Binary(&'a [u8]),
    Ping(&'a [u8]),
    Close { code: Option<u16>, reason: String },
}

/// The permessage-deflate offer `--compression` sends (RFC 7692 §7.1.3's simplest one).
pub(crate) const DEFLATE_OFFER: &str = "permessage-deflate; client_max_window_bits";

/// The upgrade request for `path_and_query` and the `Sec-WebSocket-Accept` value to expect;
/// with `compression`, it offers permessage-deflate.
pub(crate) fn upgrade_request(
    host: &str,
    path_and_query: &str,
    key: [u8; 16],
    compression: bool,
) -> (Vec<u8>, String) {
    use base64::Engine;
    let key_base64 = base64::engine::general_purpose::STANDARD.encode(key);
    let mut request = handshake::client_request(host, path_and_query, &key_base64, None);
    if compression {
        // Before the blank line that ends the head.
        let end = request.len() - 2;
        let field = format!("Sec-WebSocket-Extensions: {DEFLATE_OFFER}\r\n");
        request.splice(end..end, field.into_bytes());
    }
    (request, handshake::accept_key(key_base64.as_bytes()))
}

/// Checks the response head in `buf`: the head length once complete, `None` while partial;
/// with it, whether the broker accepted compression (then `reader` inflates).
pub(crate) fn check_response(
    buf: &[u8],
    expected_accept: &str,
    offered_compression: bool,
    reader: &mut Reader,
) -> Result<Option<usize>, HandshakeError> {
    let checked =
        handshake::check_server_response_deflate(buf, expected_accept, offered_compression)?;
    Ok(checked.map(|(len, deflate)| {
        reader
            .session
            .set_peer_deflate(deflate.map(|d| PeerDeflate {
                window_bits: d.server_max_window_bits,
                no_context_takeover: d.server_no_context_takeover,
            }));
        len
    }))
}

/// Appends one masked client frame (RFC 6455 §5.3: every client frame is masked).
pub(crate) fn client_frame(opcode: OpCode, payload: &[u8], mask_key: [u8; 4], out: &mut Vec<u8>) {
    encode_client_frame(true, opcode, payload, mask_key, out);
}

/// Decodes server frames for one connection.
pub(crate) struct Reader {
    session: Session,
}

impl std::fmt::Debug for Reader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Reader")
    }
}

impl Reader {
    pub(crate) fn new() -> Reader {
        Reader {
            session: Session::new(
                Role::Client,
                SessionLimits {
                    max_message_bytes: MAX_MESSAGE_BYTES,
                },
            ),
        }
    }

    /// Feeds `buf` (just read from the socket) and calls `on_event` for every complete
    /// message; partial frames stay inside the session until the next call.
    pub(crate) fn feed(
        &mut self,
        buf: &mut [u8],
        mut on_event: impl FnMut(WsEvent<'_>),
    ) -> Result<(), ProtocolError> {
        let mut pos = 0;
        while pos < buf.len() {
            let Decoded { consumed, event } = self.session.decode(&mut buf[pos..], 0)?;
            pos += consumed;
            match event {
                None => break,
                Some(Event::Text(p)) => on_event(WsEvent::Text(p)),
                Some(Event::Binary(p)) => on_event(WsEvent::Binary(p)),
                Some(Event::Ping(p)) => on_event(WsEvent::Ping(p)),
                Some(Event::Pong(_)) => {}
                Some(Event::Close { code, reason }) => on_event(WsEvent::Close {
                    code,
                    reason: String::from_utf8_lossy(reason).into_owned(),
                }),
            }
        }
        Ok(())
    }
}
