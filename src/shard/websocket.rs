//! An open WebSocket on its shard: feeding input to the connection's `Session`, answering
//! control frames, echoing on `/echo`, and handing `/ws` messages to the broker core.

use crate::broker::SendKind;
use crate::metrics::Metric;
use crate::proto::frame::OpCode;
use crate::proto::prepared;
use crate::proto::session::Event;

use super::connection::{Phase, Route};
use super::{Flow, Shard};

impl Shard {
    /// Decodes and handles every complete event in `input` (read just now).
    pub(super) fn on_websocket_bytes(&mut self, key: usize, input: &mut [u8]) -> Flow {
        let Phase::WebSocket(ws) = &mut self.conns[key].phase else {
            return Flow::Stop;
        };
        let route = ws.route;
        let Some(mut session) = ws.session.take() else {
            return Flow::Stop;
        };
        let mut flow = Flow::Continue;
        let mut pos = 0;
        loop {
            match session.decode(&mut input[pos..], self.now_ms) {
                Ok(decoded) => {
                    pos += decoded.consumed;
                    let Some(event) = decoded.event else {
                        break;
                    };
                    flow = self.on_websocket_event(key, route, event);
                    if flow == Flow::Stop {
                        break;
                    }
                }
                Err(error) => {
                    self.counters.incr(Metric::ProtocolErrors);
                    let reason = error.to_string();
                    self.close_websocket(key, error.close_code(), &reason);
                    flow = Flow::Stop;
                    break;
                }
            }
        }
        if let Phase::WebSocket(ws) = &mut self.conns[key].phase {
            ws.session = Some(session);
        }
        flow
    }

    fn on_websocket_event(&mut self, key: usize, route: Route, event: Event<'_>) -> Flow {
        // Replies are always queued; past the budget `send` pauses reading this connection.
        match event {
            Event::Ping(payload) => {
                // RFC 6455 §5.5.3: answering the latest ping is enough; a flood keeps a few pongs.
                let _ = self.send(key, prepared::pong_frame(payload), SendKind::Pong);
            }
            Event::Pong(_) => {}
            Event::Close { code, reason: _ } => {
                // RFC 6455 §5.5.1: answer with a close frame, echoing the status code.
                let reply = match code {
                    Some(code) => prepared::close_frame(code, ""),
                    None => prepared::prepared_frame(OpCode::Close, b""),
                };
                self.close_with(key, Some(reply));
                return Flow::Stop;
            }
            Event::Text(payload) => {
                self.counters.incr(Metric::MessagesReceived);
                match route {
                    Route::Echo => self.echo(key, OpCode::Text, payload),
                    Route::PubSub => {
                        self.with_broker(|broker, out| broker.on_text(key, payload, out))
                    }
                }
            }
            Event::Binary(payload) => {
                self.counters.incr(Metric::MessagesReceived);
                match route {
                    Route::Echo => self.echo(key, OpCode::Binary, payload),
                    Route::PubSub => {
                        self.with_broker(|broker, out| broker.on_binary(key, payload, out))
                    }
                }
            }
        }
        Flow::Continue
    }

    /// `/echo`: the message comes back, deflated (with the connection's negotiated window)
    /// whenever the connection negotiated permessage-deflate, even when that is not smaller,
    /// so conformance tests exercise the compressed path both ways. Per message, per
    /// connection: this is an echo, not a publish.
    fn echo(&mut self, key: usize, opcode: OpCode, payload: &[u8]) {
        let window_bits = match &self.conns[key].phase {
            Phase::WebSocket(ws) => ws.deflate_bits,
            _ => 0,
        };
        let deflated = (window_bits != 0)
            .then(|| {
                self.echo_deflater
                    .frame_always(opcode, payload, window_bits)
            })
            .flatten();
        let echo = deflated.unwrap_or_else(|| prepared::prepared_frame(opcode, payload));
        let _ = self.send(key, echo, SendKind::Reply);
    }

    /// Closes a WebSocket with a close frame carrying `code` and `reason` (cut to fit a
    /// control frame by `prepared::close_frame`).
    pub(super) fn close_websocket(&mut self, key: usize, code: u16, reason: &str) {
        self.close_with(key, Some(prepared::close_frame(code, reason)));
    }
}
