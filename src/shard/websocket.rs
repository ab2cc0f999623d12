//! An open WebSocket on its shard: feeding input to the connection's `Session`, answering
//! control frames, echoing on `/echo`, and carrying out pub/sub commands on `/ws`.

use crate::mesh::ReplyTo;
use crate::metrics::Metric;
use crate::proto::command::{self, Command, ErrorCode};
use crate::proto::envelope;
use crate::proto::frame::OpCode;
use crate::proto::prepared;
use crate::proto::session::Event;

use super::connection::{Phase, Route};
use super::fanout::PayloadRef;
use super::{Flow, Shard};

/// Close reasons must fit a control frame: 125 bytes minus the 2-byte code (RFC 6455 §5.5).
const MAX_CLOSE_REASON_BYTES: usize = 123;

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
        match event {
            Event::Ping(payload) => {
                // RFC 6455 §5.5.3: answering the latest ping is enough; a flood keeps one pong.
                if self.conns[key].queue_pong(prepared::pong_frame(payload)) {
                    self.dirty.push_back(key);
                }
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
                    Route::Echo => self.queue(key, prepared::prepared_frame(OpCode::Text, payload)),
                    Route::PubSub => self.on_command(key, payload),
                }
            }
            Event::Binary(payload) => {
                self.counters.incr(Metric::MessagesReceived);
                match route {
                    Route::Echo => {
                        self.queue(key, prepared::prepared_frame(OpCode::Binary, payload))
                    }
                    Route::PubSub => match envelope::parse_binary_publish(payload) {
                        Ok((topic, body)) => {
                            self.route_publish(topic, PayloadRef::Binary(body), ReplyTo::Nobody)
                        }
                        Err(error) => {
                            self.counters.incr(Metric::CommandErrors);
                            let frame = envelope::error_frame(None, error.code, &error.message);
                            self.queue(key, frame);
                        }
                    },
                }
            }
        }
        Flow::Continue
    }

    /// Carries out one JSON command from a `/ws` client.
    fn on_command(&mut self, key: usize, text: &[u8]) {
        let command = match command::parse_command(text) {
            Ok(command) => command,
            Err(error) => {
                self.counters.incr(Metric::CommandErrors);
                let frame = envelope::error_frame(error.id.as_deref(), error.code, &error.message);
                self.queue(key, frame);
                return;
            }
        };
        let max_subscriptions = self.shared.config.max_subscriptions_per_connection;
        match command {
            Command::Subscribe { topic, id } => {
                let Phase::WebSocket(ws) = &mut self.conns[key].phase else {
                    return;
                };
                if ws.subscriptions.contains(&topic) {
                    if let Some(id) = id {
                        self.queue(key, envelope::ack_frame(id, None));
                    }
                } else if ws.subscriptions.len() >= max_subscriptions {
                    self.counters.incr(Metric::CommandErrors);
                    let message = format!(
                        "this connection already has {max_subscriptions} subscriptions, the most allowed"
                    );
                    let frame =
                        envelope::error_frame(id, ErrorCode::TooManySubscriptions, &message);
                    self.queue(key, frame);
                } else {
                    ws.subscriptions.insert(&topic);
                    self.subscribe_local(&topic, key, id.map(ToOwned::to_owned));
                }
            }
            Command::Unsubscribe { topic, id } => {
                let Phase::WebSocket(ws) = &mut self.conns[key].phase else {
                    return;
                };
                if ws.subscriptions.remove(&topic) {
                    self.unsubscribe_local(&topic, key);
                    if let Some(id) = id {
                        self.queue(key, envelope::ack_frame(id, None));
                    }
                } else {
                    self.counters.incr(Metric::CommandErrors);
                    let message = format!("not subscribed to {topic:?}");
                    let frame = envelope::error_frame(id, ErrorCode::NotSubscribed, &message);
                    self.queue(key, frame);
                }
            }
            Command::Publish { topic, data, id } => {
                let reply = match id {
                    Some(id) => ReplyTo::WebSocket {
                        conn: self.connection_ref(key),
                        id: id.to_owned(),
                    },
                    None => ReplyTo::Nobody,
                };
                self.route_publish(&topic, PayloadRef::Json(data.get().as_bytes()), reply);
            }
        }
    }

    /// Closes a WebSocket with a close frame carrying `code` and (a prefix of) `reason`.
    pub(super) fn close_websocket(&mut self, key: usize, code: u16, reason: &str) {
        let mut end = reason.len().min(MAX_CLOSE_REASON_BYTES);
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        self.close_with(key, Some(prepared::close_frame(code, &reason[..end])));
    }
}
