//! Plain HTTP on a shard: reading request heads (and publish bodies), routing by path,
//! upgrading `/ws` and `/echo` to WebSocket, `POST /publish/<topic>`, health, readiness and
//! metrics. Responses are queued like frames and go out in the end-of-turn flush.

use std::sync::atomic::Ordering;

use bytes::Bytes;
use serde_json::value::RawValue;

use crate::broker::SendKind;
use crate::engine::PayloadRef;
use crate::mesh::ReplyTo;
use crate::metrics::{render_prometheus, Metric};
use crate::proto::command::ErrorCode;
use crate::proto::envelope;
use crate::proto::handshake;
use crate::proto::http::{parse_request_head, RequestHead};
use crate::proto::http_body::{body_framing, BodyReader};
use crate::proto::query::{percent_decode, query_values};
use crate::proto::response::{not_modified, plain_error, response};
use crate::proto::session::{Role, Session, SessionLimits};
use crate::topic::validate_topic;

use super::connection::{flags, HttpPhase, PendingBody, Phase, Route, WebSocketPhase};
use super::{Flow, Shard};

const PUBLISH_PREFIX: &str = "/publish/";

impl Shard {
    /// Appends `n` freshly read bytes to the request buffer and handles what is complete.
    pub(super) fn on_http_bytes(&mut self, key: usize, n: usize) -> Flow {
        let Phase::Http(http) = &mut self.conns[key].phase else {
            return Flow::Stop;
        };
        http.buf.extend_from_slice(&self.read_buf[..n]);
        self.process_http(key)
    }

    fn http_mut(&mut self, key: usize) -> Option<&mut HttpPhase> {
        match &mut self.conns[key].phase {
            Phase::Http(http) => Some(http),
            _ => None,
        }
    }

    /// Handles every complete request (or body) in the buffer, in order.
    pub(super) fn process_http(&mut self, key: usize) -> Flow {
        loop {
            let limits = self.shared.head_limits;
            let Some(http) = self.http_mut(key) else {
                return Flow::Stop;
            };
            if http.awaiting_publish {
                // One request at a time: pipelined bytes wait until this one is answered.
                self.conns[key].set(flags::READ_PAUSED);
                return Flow::Stop;
            }
            if let Some(pending) = http.body.as_mut() {
                let (consumed, complete) = match pending.reader.feed(&http.buf) {
                    Ok(progress) => progress,
                    Err(error) => {
                        let status = error.status();
                        let code = if status == 413 {
                            ErrorCode::MessageTooLarge
                        } else {
                            ErrorCode::InvalidCommand
                        };
                        self.count_http_failure(status);
                        let body = envelope::http_error_body(code, &error.to_string());
                        self.respond_and_close(
                            key,
                            response(status, &[], "application/json", &body, false),
                        );
                        return Flow::Stop;
                    }
                };
                http.buf.drain(..consumed);
                if !complete {
                    return Flow::Continue;
                }
                let Some(pending) = http.body.take() else {
                    return Flow::Stop;
                };
                self.publish_http_body(key, pending);
                continue;
            }
            let head = match parse_request_head(&http.buf, &limits) {
                Ok(None) => return Flow::Continue,
                Ok(Some((head, head_len))) => {
                    http.buf.drain(..head_len);
                    head
                }
                Err(error) => {
                    let status = error.status();
                    self.count_http_failure(status);
                    self.respond_and_close(key, plain_error(status, &error.to_string()));
                    return Flow::Stop;
                }
            };
            if self.on_request(key, head) == Flow::Stop {
                return Flow::Stop;
            }
            if !matches!(self.conns[key].phase, Phase::Http(_)) {
                return Flow::Stop;
            }
        }
    }

    fn count_http_failure(&mut self, status: u16) {
        let metric = match status {
            403 => Metric::HandshakeOrigin,
            404 => Metric::HandshakeNotFound,
            405 => Metric::HandshakeMethod,
            413 | 431 => Metric::HandshakeTooLarge,
            426 => Metric::HandshakeVersion,
            _ => Metric::HandshakeBadRequest,
        };
        self.counters.incr(metric);
    }

    fn respond_and_close(&mut self, key: usize, bytes: Vec<u8>) {
        self.close_with(key, Some(Bytes::from(bytes)));
    }

    /// Sends a response and either waits for the next request or closes.
    fn respond(&mut self, key: usize, bytes: Vec<u8>, keep_alive: bool) {
        if keep_alive {
            let now = self.now_ms;
            if let Some(http) = self.http_mut(key) {
                http.started_ms = now;
                http.served = true;
            }
            let _ = self.send(key, Bytes::from(bytes), SendKind::Reply);
        } else {
            self.respond_and_close(key, bytes);
        }
    }

    fn on_request(&mut self, key: usize, head: RequestHead) -> Flow {
        let keep_alive = wants_keep_alive(&head);
        let over_limit = self.http_mut(key).is_some_and(|http| http.over_limit);
        if over_limit {
            self.counters.incr(Metric::ConnectionsRefused);
            self.respond_and_close(
                key,
                plain_error(503, "too many connections; try again later"),
            );
            return Flow::Stop;
        }
        let path = head.path().to_string();
        let method = head.method().to_string();
        let get_only = |shard: &mut Shard, key: usize| -> bool {
            if method == "GET" {
                true
            } else {
                shard.count_http_failure(405);
                shard.respond_and_close(
                    key,
                    response(
                        405,
                        &[("Allow", "GET")],
                        "text/plain; charset=utf-8",
                        b"method not allowed\n",
                        false,
                    ),
                );
                false
            }
        };
        match path.as_str() {
            "/ws" => self.upgrade(key, &head, Route::PubSub),
            "/echo" => self.upgrade(key, &head, Route::Echo),
            "/healthz" => {
                if !get_only(self, key) {
                    return Flow::Stop;
                }
                self.respond(
                    key,
                    response(200, &[], "text/plain; charset=utf-8", b"ok\n", keep_alive),
                    keep_alive,
                );
                Flow::Continue
            }
            "/readyz" => {
                if !get_only(self, key) {
                    return Flow::Stop;
                }
                let bytes = if self.shared.draining.load(Ordering::Relaxed) {
                    response(
                        503,
                        &[],
                        "text/plain; charset=utf-8",
                        b"draining\n",
                        keep_alive,
                    )
                } else {
                    response(
                        200,
                        &[],
                        "text/plain; charset=utf-8",
                        b"ready\n",
                        keep_alive,
                    )
                };
                self.respond(key, bytes, keep_alive);
                Flow::Continue
            }
            "/metrics" => {
                if !get_only(self, key) {
                    return Flow::Stop;
                }
                self.shared.counters[self.id].publish(&self.counters);
                let snapshots: Vec<_> = self.shared.counters.iter().map(|c| c.snapshot()).collect();
                let text = render_prometheus(&snapshots);
                let bytes = response(
                    200,
                    &[],
                    "text/plain; version=0.0.4; charset=utf-8",
                    text.as_bytes(),
                    keep_alive,
                );
                self.respond(key, bytes, keep_alive);
                Flow::Continue
            }
            p if p.starts_with(PUBLISH_PREFIX) => self.start_http_publish(key, &head, keep_alive),
            _ => match crate::assets::find(&path) {
                Some(asset) => {
                    if !get_only(self, key) {
                        return Flow::Stop;
                    }
                    let headers = [
                        ("Cache-Control", asset.cache_control),
                        ("ETag", asset.etag()),
                    ];
                    let current = head
                        .header("if-none-match")
                        .is_some_and(|tags| asset.is_not_modified(tags));
                    let bytes = if current {
                        not_modified(&headers, keep_alive)
                    } else {
                        response(200, &headers, asset.content_type, asset.body, keep_alive)
                    };
                    self.respond(key, bytes, keep_alive);
                    Flow::Continue
                }
                None => {
                    self.count_http_failure(404);
                    self.respond_and_close(key, plain_error(404, "no such path"));
                    Flow::Stop
                }
            },
        }
    }

    /// Validates a WebSocket upgrade and switches the connection to WebSocket.
    fn upgrade(&mut self, key: usize, head: &RequestHead, route: Route) -> Flow {
        let policy = match route {
            Route::PubSub => &self.shared.pubsub_policy,
            Route::Echo => &self.shared.echo_policy,
        };
        let accepted = match handshake::check_upgrade(head, policy) {
            Ok(accepted) => accepted,
            Err(error) => {
                self.count_http_failure(error.status());
                self.respond_and_close(key, error.response());
                return Flow::Stop;
            }
        };
        let mut topics: Vec<String> = Vec::new();
        if route == Route::PubSub {
            if let Some(query) = head.query() {
                for raw in query_values(query, "topic") {
                    let topic = percent_decode(raw, true)
                        .map_err(|_| format!("topic {raw:?} has a broken %-escape"))
                        .and_then(|bytes| {
                            validate_topic(&bytes)
                                .map(str::to_string)
                                .map_err(|e| format!("topic {raw:?} is not valid: {e}"))
                        });
                    match topic {
                        Ok(topic) if !topics.contains(&topic) => topics.push(topic),
                        Ok(_) => {}
                        Err(message) => {
                            self.count_http_failure(400);
                            self.respond_and_close(key, plain_error(400, &message));
                            return Flow::Stop;
                        }
                    }
                }
            }
            if let Err(limit) = self.broker.check_subscription_limit(0, topics.len()) {
                self.count_http_failure(400);
                self.respond_and_close(key, plain_error(400, &limit.to_string()));
                return Flow::Stop;
            }
        }
        let limits = SessionLimits {
            max_message_bytes: self.shared.config.max_message_bytes,
        };
        let leftover = match self.http_mut(key) {
            Some(http) => std::mem::take(&mut http.buf),
            None => return Flow::Stop,
        };
        self.conns[key].phase = Phase::WebSocket(WebSocketPhase {
            session: Some(Session::new(Role::Server, limits)),
            route,
        });
        self.counters.add(Metric::WebSocketsOpen, 1);
        let accept = Bytes::from(handshake::switching_protocols(&accepted));
        let _ = self.send(key, accept, SendKind::Reply);
        if route == Route::PubSub {
            let generation = self.conns[key].generation;
            self.with_broker(|broker, out| broker.open(key, generation, &topics, out));
        }
        if leftover.is_empty() {
            Flow::Continue
        } else {
            let mut leftover = leftover;
            self.on_websocket_bytes(key, &mut leftover)
        }
    }

    /// `POST /publish/<topic>`: checks the request and starts reading its body.
    fn start_http_publish(&mut self, key: usize, head: &RequestHead, keep_alive: bool) -> Flow {
        let fail = |shard: &mut Shard, status: u16, code: ErrorCode, message: &str| {
            shard.count_http_failure(status);
            let body = envelope::http_error_body(code, message);
            shard.respond_and_close(key, response(status, &[], "application/json", &body, false));
            Flow::Stop
        };
        if head.method() != "POST" {
            self.count_http_failure(405);
            let bytes = response(
                405,
                &[("Allow", "POST")],
                "text/plain; charset=utf-8",
                b"method not allowed\n",
                false,
            );
            self.respond_and_close(key, bytes);
            return Flow::Stop;
        }
        let raw_topic = &head.path()[PUBLISH_PREFIX.len()..];
        let topic = match percent_decode(raw_topic, false) {
            Ok(bytes) => match validate_topic(&bytes) {
                Ok(topic) => topic.to_string(),
                Err(e) => {
                    return fail(
                        self,
                        400,
                        ErrorCode::InvalidTopic,
                        &format!("invalid topic: {e}"),
                    )
                }
            },
            Err(_) => {
                return fail(
                    self,
                    400,
                    ErrorCode::InvalidTopic,
                    "invalid topic: broken %-escape",
                )
            }
        };
        let media_type = head
            .header("content-type")
            .and_then(|value| std::str::from_utf8(value).ok())
            .map(|value| {
                value
                    .split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase()
            });
        let binary = match media_type.as_deref() {
            Some("application/json") => false,
            Some("application/octet-stream") => true,
            _ => {
                return fail(
                    self,
                    415,
                    ErrorCode::InvalidCommand,
                    "Content-Type must be application/json or application/octet-stream",
                )
            }
        };
        if binary && topic.len() > envelope::MAX_BINARY_TOPIC_BYTES {
            let message = format!(
                "binary deliveries carry topics of at most {} bytes",
                envelope::MAX_BINARY_TOPIC_BYTES
            );
            return fail(self, 400, ErrorCode::InvalidTopic, &message);
        }
        let max_body = self.shared.config.max_message_bytes;
        let framing = match body_framing(head, max_body) {
            Ok(framing) => framing,
            Err(error) => {
                let status = error.status();
                let code = if status == 413 {
                    ErrorCode::MessageTooLarge
                } else {
                    ErrorCode::InvalidCommand
                };
                return fail(self, status, code, &error.to_string());
            }
        };
        let Some(http) = self.http_mut(key) else {
            return Flow::Stop;
        };
        http.keep_alive = keep_alive;
        http.body = Some(PendingBody {
            topic: topic.into(),
            binary,
            reader: BodyReader::new(framing, max_body),
        });
        Flow::Continue
    }

    /// A complete publish body: validate it and send it to the topic's owner.
    fn publish_http_body(&mut self, key: usize, pending: PendingBody) {
        let body = pending.reader.into_body();
        let reply = ReplyTo::Http {
            conn: self.connection_ref(key),
        };
        if pending.binary {
            self.mark_awaiting_publish(key);
            self.route_publish(&pending.topic, PayloadRef::Binary(&body), reply);
            return;
        }
        match serde_json::from_slice::<&RawValue>(&body) {
            Ok(data) => {
                self.mark_awaiting_publish(key);
                self.route_publish(
                    &pending.topic,
                    PayloadRef::Json(data.get().as_bytes()),
                    reply,
                );
            }
            Err(e) => {
                self.count_http_failure(400);
                let body = envelope::http_error_body(
                    ErrorCode::InvalidJson,
                    &format!("body is not valid JSON: {e}"),
                );
                self.respond_and_close(key, response(400, &[], "application/json", &body, false));
            }
        }
    }

    fn mark_awaiting_publish(&mut self, key: usize) {
        self.counters.incr(Metric::MessagesReceived);
        if let Some(http) = self.http_mut(key) {
            http.awaiting_publish = true;
        }
    }

    /// The owner answered (or refused) an HTTP publish: respond and carry on with the
    /// connection's next request.
    pub(super) fn finish_http_publish(&mut self, key: usize, result: Result<u64, &str>) {
        let Some(http) = self.http_mut(key) else {
            return;
        };
        if !http.awaiting_publish {
            return;
        }
        http.awaiting_publish = false;
        let keep_alive = http.keep_alive;
        let has_more = !http.buf.is_empty();
        match result {
            Ok(seq) => {
                let body = envelope::publish_reply_body(seq);
                self.respond(
                    key,
                    response(200, &[], "application/json", &body, keep_alive),
                    keep_alive,
                );
                let conn = &mut self.conns[key];
                if keep_alive && conn.has(flags::READ_PAUSED) {
                    conn.clear(flags::READ_PAUSED);
                    self.again.push(key);
                } else if keep_alive && has_more {
                    self.again.push(key);
                }
            }
            Err(message) => {
                let body = envelope::http_error_body(ErrorCode::Overloaded, message);
                self.respond_and_close(key, response(503, &[], "application/json", &body, false));
            }
        }
    }
}

/// HTTP/1.1 keeps connections open unless told otherwise; HTTP/1.0 only when asked.
fn wants_keep_alive(head: &RequestHead) -> bool {
    if head.minor_version() >= 1 {
        !head.has_token("connection", "close")
    } else {
        head.has_token("connection", "keep-alive")
    }
}
