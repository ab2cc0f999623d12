//! Plain HTTP on a shard: reading request heads (and publish bodies), routing by path,
//! upgrading `/ws` and `/echo` to WebSocket, `POST /publish/<topic>`, `GET /history/<topic>`,
//! health, readiness and metrics. Responses are queued like frames and go out in the end-of-turn flush.

use crate::broker::history::{parse_url_since, Epoch, Since};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use serde_json::value::RawValue;

use crate::auth::{Access, Grants, HttpPublishAccess, RateDecision, TokenBucket, TokenError};
use crate::broker::{HttpHistory, SendKind, OVERLOADED_MESSAGE};
use crate::engine::PayloadRef;
use crate::mesh::ReplyTo;
use crate::metrics::{render_prometheus, Metric};
use crate::proto::envelope;
use crate::proto::handshake;
use crate::proto::http::{parse_request_head, RequestHead};
use crate::proto::http_body::{request_body, BodyFraming, BodyReader};
use crate::proto::http_refusal::{Refusal, RefusalReason};
use crate::proto::query::{percent_decode, query_values};
use crate::proto::response::{not_modified, response, response_head, status};
use crate::proto::session::{PeerDeflate, Role, Session, SessionLimits};
use crate::topic::validate_topic;

use super::connection::{flags, HttpPhase, PendingBody, Phase, Route, WebSocketPhase};
use super::{Flow, Shard};

const PUBLISH_PREFIX: &str = "/publish/";
const HISTORY_PREFIX: &str = "/history/";

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

    /// Handles every complete request (or body) in the buffer, in order, while the answers
    /// queued on the connection stay within `--max-backlog-bytes`. Over it, parsing stops and
    /// reading pauses (the rest stays buffered); the flush that brings the queue back under half
    /// the budget resumes both (`Shard::flush_dirty`), so pipelined requests cannot make the
    /// broker hold more than one budget of answers per connection.
    pub(super) fn process_http(&mut self, key: usize) -> Flow {
        loop {
            let limits = self.shared.head_limits;
            let budget = self.shared.config.max_backlog_bytes;
            let conn = &mut self.conns[key];
            if conn.out.queued_bytes() > budget {
                conn.set(flags::READ_PAUSED);
                return Flow::Stop;
            }
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
                    Err(error) => return self.refuse(key, Refusal::PublishBody(error)),
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
                Err(error) => return self.refuse(key, Refusal::Http(error)),
            };
            // Every request's framing is decided here, the same way whatever its route, so a
            // body is never left in the buffer to be parsed as the next request.
            let target = Target::of(&head);
            let max_body = self.shared.config.max_message_bytes;
            let framing = match request_body(&head, target.accepts_body(), max_body) {
                Ok(framing) => framing,
                Err(error) if target.accepts_body() => {
                    return self.refuse(key, Refusal::PublishBody(error))
                }
                Err(error) => return self.refuse(key, Refusal::Http(error)),
            };
            if self.on_request(key, head, target, framing) == Flow::Stop {
                return Flow::Stop;
            }
            if !matches!(self.conns[key].phase, Phase::Http(_)) {
                return Flow::Stop;
            }
        }
    }

    /// Refuses a connection just accepted, before it has a slot: the response is written
    /// best-effort in one non-blocking write (a fresh socket has room for it), whatever the
    /// client already sent is read and dropped (closing with unread input would reset the
    /// connection and could destroy the response), and the socket is closed on return.
    pub(super) fn refuse_at_accept(&mut self, mut stream: mio::net::TcpStream, refusal: Refusal) {
        use std::io::{Read, Write};
        self.counters.refuse(refusal.reason());
        let _ = stream.write(&refusal.response());
        let _ = stream.shutdown(std::net::Shutdown::Write);
        let _ = stream.read(&mut self.read_buf);
    }

    /// Answers `refusal`, counts it, and closes the connection.
    fn refuse(&mut self, key: usize, refusal: Refusal) -> Flow {
        let reason = refusal.reason();
        self.counters.refuse(reason);
        // The older per-kind counters stay for dashboards built on them; they count refused
        // requests other than HTTP publishes, which are not handshakes.
        if !refusal.is_publish() && !refusal.is_history() {
            if let Some(metric) = handshake_failure_metric(reason) {
                self.counters.incr(metric);
            }
        }
        self.close_with(key, Some(Bytes::from(refusal.response())));
        Flow::Stop
    }

    /// Sends a response and either waits for the next request or closes.
    fn respond(&mut self, key: usize, bytes: Vec<u8>, keep_alive: bool) {
        self.respond_bytes(key, Bytes::from(bytes), keep_alive);
    }

    /// Like [`Shard::respond`], for the last (or only) part of a response already in `Bytes`.
    fn respond_bytes(&mut self, key: usize, bytes: Bytes, keep_alive: bool) {
        if keep_alive {
            let now = self.now_ms;
            if let Some(http) = self.http_mut(key) {
                http.started_ms = now;
                http.served = true;
            }
            let _ = self.send(key, bytes, SendKind::Reply);
        } else {
            self.close_with(key, Some(bytes));
        }
    }

    fn on_request(
        &mut self,
        key: usize,
        head: RequestHead,
        target: Target,
        framing: BodyFraming,
    ) -> Flow {
        let keep_alive = wants_keep_alive(&head);
        let get_only = matches!(
            target,
            Target::Healthz | Target::Readyz | Target::Metrics | Target::History | Target::Asset(_)
        );
        if get_only && head.method() != "GET" {
            return self.refuse(key, Refusal::GetOnly);
        }
        match target {
            Target::Upgrade(route) => self.upgrade(key, &head, route),
            Target::Healthz => {
                let bytes = response(
                    status::OK,
                    &[],
                    "text/plain; charset=utf-8",
                    b"ok\n",
                    keep_alive,
                );
                self.respond(key, bytes, keep_alive);
                Flow::Continue
            }
            Target::Readyz => {
                let engine_unready = self
                    .shared
                    .engine_status
                    .as_ref()
                    .is_some_and(|status| !status.is_ready());
                let bytes = if engine_unready {
                    response(
                        status::SERVICE_UNAVAILABLE,
                        &[],
                        "text/plain; charset=utf-8",
                        b"engine unavailable\n",
                        keep_alive,
                    )
                } else if self.shared.draining.load(Ordering::Relaxed) {
                    response(
                        status::SERVICE_UNAVAILABLE,
                        &[],
                        "text/plain; charset=utf-8",
                        b"draining\n",
                        keep_alive,
                    )
                } else {
                    response(
                        status::OK,
                        &[],
                        "text/plain; charset=utf-8",
                        b"ready\n",
                        keep_alive,
                    )
                };
                self.respond(key, bytes, keep_alive);
                Flow::Continue
            }
            // With `--metrics-listen`, metrics are served there only: not where clients are.
            Target::Metrics if self.shared.config.metrics_listen.is_some() => {
                self.refuse(key, Refusal::NotFound)
            }
            Target::Metrics => {
                // This turn's expiries are in the history log already: count them now.
                self.copy_history_stats();
                self.shared.counters[self.id].publish(&self.counters);
                let snapshots: Vec<_> = self.shared.counters.iter().map(|c| c.snapshot()).collect();
                let mut text = render_prometheus(&snapshots);
                if let Some(status) = &self.shared.engine_status {
                    status.render(&mut text);
                }
                let bytes = response(
                    status::OK,
                    &[],
                    "text/plain; version=0.0.4; charset=utf-8",
                    text.as_bytes(),
                    keep_alive,
                );
                self.respond(key, bytes, keep_alive);
                Flow::Continue
            }
            Target::Publish => self.start_http_publish(key, &head, framing, keep_alive),
            Target::History => self.start_history_read(key, &head, keep_alive),
            Target::Asset(asset) => {
                let headers = [
                    ("Cache-Control", asset.cache_control),
                    ("ETag", asset.etag()),
                ];
                let current = head
                    .header("if-none-match")
                    .is_some_and(|tags| asset.is_not_modified(tags));
                if current {
                    self.respond(key, not_modified(&headers, keep_alive), keep_alive);
                } else {
                    // The body goes out from the embedded bytes themselves, never copied.
                    let head = response_head(
                        status::OK,
                        &headers,
                        asset.content_type,
                        asset.body.len(),
                        keep_alive,
                    );
                    let _ = self.send(key, Bytes::from(head), SendKind::Reply);
                    self.respond_bytes(key, Bytes::from_static(asset.body), keep_alive);
                }
                Flow::Continue
            }
            Target::NotFound => self.refuse(key, Refusal::NotFound),
        }
    }

    /// Validates a WebSocket upgrade and switches the connection to WebSocket.
    fn upgrade(&mut self, key: usize, head: &RequestHead, route: Route) -> Flow {
        // First, before any token is verified: the limit protects that work too.
        if let Some(rate) = &self.shared.handshake_rate {
            if let Ok(peer) = self.conns[key].stream.peer_addr() {
                match rate.check(peer.ip(), self.now_ms) {
                    RateDecision::Allowed => {}
                    RateDecision::Untracked => self.counters.incr(Metric::HandshakeRateUntracked),
                    RateDecision::Limited => {
                        self.counters.incr(Metric::HandshakeRateLimited);
                        return self.refuse(key, Refusal::HandshakeRateLimited);
                    }
                }
            }
        }
        let policy = match route {
            Route::PubSub => &self.shared.pubsub_policy,
            Route::Echo => &self.shared.echo_policy,
        };
        let accepted = match handshake::check_upgrade(head, policy) {
            Ok(accepted) => accepted,
            Err(error) => return self.refuse(key, Refusal::Handshake(error)),
        };
        let mut topics: Vec<String> = Vec::new();
        let mut resumes: Vec<(String, Since)> = Vec::new();
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
                            return self.refuse(key, Refusal::InvalidTopicQuery(message))
                        }
                    }
                }
            }
            if let Some(query) = head.query() {
                // `since=topic:seq[:epoch]` resumes that topic (and subscribes to it).
                for raw in query_values(query, "since") {
                    let parsed = percent_decode(raw, true)
                        .map_err(|_| format!("since {raw:?} has a broken %-escape"))
                        .and_then(|bytes| {
                            String::from_utf8(bytes)
                                .map_err(|_| format!("since {raw:?} is not UTF-8"))
                        })
                        .and_then(|text| {
                            let (topic, since) = parse_url_since(&text)
                                .map_err(|e| format!("since {raw:?}: {e}"))?;
                            validate_topic(topic.as_bytes())
                                .map_err(|e| format!("since {raw:?}: topic is not valid: {e}"))?;
                            Ok((topic.to_string(), since))
                        });
                    match parsed {
                        Ok((topic, since)) => {
                            if !topics.contains(&topic) {
                                topics.push(topic.clone());
                            }
                            resumes.retain(|(t, _)| *t != topic);
                            resumes.push((topic, since));
                        }
                        Err(message) => {
                            return self.refuse(key, Refusal::InvalidTopicQuery(message))
                        }
                    }
                }
            }
            if let Err(limit) = self.broker.check_subscription_limit(0, topics.len()) {
                let (asked, max) = (limit.asked, limit.max);
                return self.refuse(key, Refusal::TooManyTopics { asked, max });
            }
            let names: Vec<&str> = topics.iter().map(String::as_str).collect();
            if let Err(limit) = self.broker.check_global_limits(&names) {
                self.counters.incr(Metric::SubscribeLimitReached);
                return self.refuse(key, Refusal::LimitReached(limit.to_string()));
            }
        }
        let grants = if route == Route::PubSub && self.shared.policy.tokens_required() {
            match self.check_upgrade_token(head, &topics) {
                Ok(grants) => grants,
                Err(refusal) => return self.refuse(key, refusal),
            }
        } else {
            None
        };
        let limits = SessionLimits {
            max_message_bytes: self.shared.config.max_message_bytes,
        };
        let leftover = match self.http_mut(key) {
            Some(http) => std::mem::take(&mut http.buf),
            None => return Flow::Stop,
        };
        let mut session = Session::new(Role::Server, limits);
        let deflate = accepted.deflate.as_ref().map(|n| n.params);
        session.set_peer_deflate(deflate.map(|p| PeerDeflate {
            window_bits: p.client_max_window_bits,
            no_context_takeover: p.client_no_context_takeover,
        }));
        let ws = WebSocketPhase {
            session: Some(session),
            route,
            deflate_bits: deflate.map_or(0, |p| p.server_max_window_bits),
        };
        if ws.is_compressing_subscriber() {
            self.shared
                .compressing_subscribers
                .fetch_add(1, Ordering::Relaxed);
        }
        self.conns[key].phase = Phase::WebSocket(ws);
        self.counters.add(Metric::WebSocketsOpen, 1);
        let accept = Bytes::from(handshake::switching_protocols(&accepted));
        let _ = self.send(key, accept, SendKind::Reply);
        if route == Route::PubSub {
            let generation = self.conns[key].generation;
            self.with_broker(|broker, out| {
                broker.open(key, generation, &topics, &resumes, out);
                if let Some(grants) = grants {
                    broker.authenticated(key, grants);
                }
            });
        }
        if leftover.is_empty() {
            Flow::Continue
        } else {
            let mut leftover = leftover;
            self.on_websocket_bytes(key, &mut leftover)
        }
    }

    /// The token of a `/ws` upgrade (`?token=` or `Authorization: Bearer`), verified, and
    /// the URL's topics checked against it before the 101: a presented token that fails, or
    /// a topic without the right, refuses the upgrade (401 / 403).
    fn check_upgrade_token(
        &mut self,
        head: &RequestHead,
        topics: &[String],
    ) -> Result<Option<Box<Grants>>, Refusal> {
        let policy = Arc::clone(&self.shared.policy);
        let now = super::unix_now_secs();
        let from_query = head
            .query()
            .and_then(|query| query_values(query, "token").next())
            .map(|raw| percent_decode(raw, true).unwrap_or_default());
        let token = from_query.or_else(|| bearer(head).map(<[u8]>::to_vec));
        let grants = match token {
            Some(token) => match policy.authenticate(&token, now) {
                Ok(grants) => {
                    self.counters.incr(Metric::AuthTokensAccepted);
                    Some(Box::new(grants))
                }
                Err(error) => {
                    self.counters.incr(Metric::AuthTokensRefused);
                    return Err(Refusal::Unauthorized(error.reason()));
                }
            },
            None => None,
        };
        for topic in topics {
            match policy.may_subscribe(grants.as_deref(), topic, now) {
                Access::Allowed => {}
                Access::Unauthorized => {
                    return Err(Refusal::Unauthorized(TokenError::Missing.reason()))
                }
                Access::Forbidden => return Err(Refusal::Forbidden(topic.clone())),
            }
        }
        Ok(grants)
    }

    /// `POST /publish/<topic>`: checks the request and starts reading its body.
    fn start_http_publish(
        &mut self,
        key: usize,
        head: &RequestHead,
        framing: BodyFraming,
        keep_alive: bool,
    ) -> Flow {
        if head.method() != "POST" {
            return self.refuse(key, Refusal::PublishMethod);
        }
        let raw_topic = &head.path()[PUBLISH_PREFIX.len()..];
        let topic = match percent_decode(raw_topic, false) {
            Ok(bytes) => match validate_topic(&bytes) {
                Ok(topic) => topic.to_string(),
                Err(e) => return self.refuse(key, Refusal::PublishTopic(e.to_string())),
            },
            Err(_) => {
                let why = "broken %-escape".to_string();
                return self.refuse(key, Refusal::PublishTopic(why));
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
        match self
            .shared
            .policy
            .may_publish_http(bearer(head), &topic, super::unix_now_secs())
        {
            HttpPublishAccess::Allowed => {}
            HttpPublishAccess::Unauthorized(why) => {
                return self.refuse(key, Refusal::PublishUnauthorized(why))
            }
            HttpPublishAccess::Forbidden => return self.refuse(key, Refusal::PublishForbidden),
        }
        let binary = match media_type.as_deref() {
            Some("application/json") => false,
            Some("application/octet-stream") => true,
            _ => return self.refuse(key, Refusal::PublishMediaType),
        };
        if binary && topic.len() > envelope::MAX_BINARY_TOPIC_BYTES {
            let why = format!(
                "binary deliveries carry topics of at most {} bytes",
                envelope::MAX_BINARY_TOPIC_BYTES
            );
            return self.refuse(key, Refusal::PublishTopic(why));
        }
        let max_body = self.shared.config.max_message_bytes;
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
        if !self.http_publish_within_rate(key) {
            // The whole request was read: the 429 keeps a keep-alive connection open.
            let refusal = Refusal::PublishRateLimited;
            self.counters.refuse(refusal.reason());
            self.counters.incr(Metric::PublishRateLimited);
            let keep_alive = self.http_mut(key).is_some_and(|http| http.keep_alive);
            self.respond(key, refusal.response_keeping(keep_alive), keep_alive);
            return;
        }
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
                self.refuse(key, Refusal::PublishJson(e.to_string()));
            }
        }
    }

    /// `--max-publish-rate` for `POST /publish`: one bucket per HTTP connection, like a
    /// WebSocket's (a backend that opens a connection per publish starts each one full).
    fn http_publish_within_rate(&mut self, key: usize) -> bool {
        let Some(limit) = self.shared.policy.publish_rate() else {
            return true;
        };
        let now = self.now_ms;
        let Some(http) = self.http_mut(key) else {
            return true;
        };
        http.publish_bucket
            .get_or_insert_with(|| TokenBucket::full(limit, now))
            .try_take(limit, now)
    }

    fn mark_awaiting_publish(&mut self, key: usize) {
        self.counters.incr(Metric::MessagesReceived);
        if let Some(http) = self.http_mut(key) {
            http.awaiting_publish = true;
        }
    }

    /// The owner answered (or refused) an HTTP publish: respond and carry on with the
    /// connection's next request.
    pub(super) fn finish_http_publish(
        &mut self,
        key: usize,
        result: Result<(u64, Option<Epoch>), Refusal>,
    ) {
        let answer = match result {
            Ok((seq, epoch)) => Ok(envelope::publish_reply_body(seq, epoch)),
            Err(refusal) => Err(refusal),
        };
        self.finish_awaited(key, answer);
    }

    /// The owner answered (or refused) a `GET /history`: respond and carry on with the
    /// connection's next request. The body is built here, from clones of the owner's kept
    /// frames, so the owner's turn pays only for the clones.
    pub(super) fn finish_history_read(&mut self, key: usize, answer: HttpHistory) {
        let answer = match answer {
            HttpHistory::Page(Some(page)) => Ok(envelope::history_body(
                Some(page.epoch),
                page.top,
                page.messages.iter().map(|(seq, frame)| (*seq, &frame[..])),
            )),
            HttpHistory::Page(None) => Ok(envelope::history_body(None, 0, [])),
            HttpHistory::Refused => Err(Refusal::HistoryOverloaded(OVERLOADED_MESSAGE.into())),
            HttpHistory::Unsupported => Err(Refusal::HistoryUnsupported),
        };
        self.finish_awaited(key, answer);
    }

    /// Sends the JSON answer the connection waited for from a topic's owner (or refuses), then
    /// reads on.
    fn finish_awaited(&mut self, key: usize, answer: Result<Vec<u8>, Refusal>) {
        let Some(http) = self.http_mut(key) else {
            return;
        };
        if !http.awaiting_publish {
            return;
        }
        http.awaiting_publish = false;
        let keep_alive = http.keep_alive;
        let has_more = !http.buf.is_empty();
        match answer {
            Ok(body) => {
                let bytes = response(status::OK, &[], "application/json", &body, keep_alive);
                self.respond(key, bytes, keep_alive);
                let conn = &mut self.conns[key];
                if keep_alive && conn.has(flags::READ_PAUSED) {
                    conn.clear(flags::READ_PAUSED);
                    self.again.push(key);
                } else if keep_alive && has_more {
                    self.again.push(key);
                }
            }
            Err(refusal) => {
                self.refuse(key, refusal);
            }
        }
    }

    /// `GET /history/<topic>?since=N&limit=L`: checks the request and asks the topic's owner
    /// for up to `L` kept messages after seq `N` (`since` defaults to 0, `limit` to and at
    /// most `--max-replay-messages`).
    fn start_history_read(&mut self, key: usize, head: &RequestHead, keep_alive: bool) -> Flow {
        let raw_topic = &head.path()[HISTORY_PREFIX.len()..];
        let topic = match percent_decode(raw_topic, false) {
            Ok(bytes) => match validate_topic(&bytes) {
                Ok(topic) => topic.to_string(),
                Err(e) => return self.refuse(key, Refusal::HistoryTopic(e.to_string())),
            },
            Err(_) => {
                let why = "broken %-escape".to_string();
                return self.refuse(key, Refusal::HistoryTopic(why));
            }
        };
        let max = self.shared.config.max_replay_messages;
        let query = head.query().unwrap_or("");
        let since = match whole_number_param(query, "since") {
            Ok(since) => since.unwrap_or(0),
            Err(why) => return self.refuse(key, Refusal::HistoryQuery(why)),
        };
        let limit = match whole_number_param(query, "limit") {
            Ok(limit) => limit.map_or(max, |l| usize::try_from(l).unwrap_or(usize::MAX).min(max)),
            Err(why) => return self.refuse(key, Refusal::HistoryQuery(why)),
        };
        // The subscribe permission for `topic`, here and only here: every history read passes
        // this point before the owner is asked.
        match self
            .shared
            .policy
            .may_read_history_http(bearer(head), &topic, super::unix_now_secs())
        {
            HttpPublishAccess::Allowed => {}
            HttpPublishAccess::Unauthorized(why) => {
                return self.refuse(key, Refusal::HistoryUnauthorized(why))
            }
            HttpPublishAccess::Forbidden => return self.refuse(key, Refusal::HistoryForbidden),
        }
        let conn = self.connection_ref(key);
        let Some(http) = self.http_mut(key) else {
            return Flow::Stop;
        };
        http.keep_alive = keep_alive;
        http.awaiting_publish = true;
        self.with_broker(|broker, out| broker.read_history(&topic, since, limit, conn, out));
        Flow::Continue
    }
}

/// The one value of query parameter `name`, a whole number; `Ok(None)` when it is absent.
fn whole_number_param(query: &str, name: &str) -> Result<Option<u64>, String> {
    let mut values = query_values(query, name);
    let Some(raw) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(format!("{name} is given more than once"));
    }
    let number = (!raw.is_empty() && raw.bytes().all(|b| b.is_ascii_digit()))
        .then(|| raw.parse::<u64>().ok())
        .flatten();
    number
        .map(Some)
        .ok_or_else(|| format!("{name} must be a whole number, not {raw:?}"))
}

/// What a request asks for, by its path: decides whether it may carry a body.
#[derive(Debug, Clone, Copy)]
enum Target {
    Upgrade(Route),
    Healthz,
    Readyz,
    Metrics,
    Publish,
    History,
    Asset(&'static crate::assets::Asset),
    NotFound,
}

impl Target {
    fn of(head: &RequestHead) -> Target {
        match head.path() {
            "/ws" => Target::Upgrade(Route::PubSub),
            "/echo" => Target::Upgrade(Route::Echo),
            "/healthz" => Target::Healthz,
            "/readyz" => Target::Readyz,
            "/metrics" => Target::Metrics,
            p if p.starts_with(PUBLISH_PREFIX) => Target::Publish,
            p if p.starts_with(HISTORY_PREFIX) => Target::History,
            p => crate::assets::find(p).map_or(Target::NotFound, Target::Asset),
        }
    }

    /// Only `POST /publish/<topic>` takes a body; every other route refuses one.
    fn accepts_body(self) -> bool {
        matches!(self, Target::Publish)
    }
}

/// The older `crier_handshake_failures_*_total` counter a refusal also counts under, if any.
fn handshake_failure_metric(reason: RefusalReason) -> Option<Metric> {
    Some(match reason {
        RefusalReason::Origin => Metric::HandshakeOrigin,
        RefusalReason::NotFound => Metric::HandshakeNotFound,
        RefusalReason::MethodNotAllowed => Metric::HandshakeMethod,
        RefusalReason::HeadTooLarge | RefusalReason::BodyTooLarge => Metric::HandshakeTooLarge,
        RefusalReason::WebSocketVersion => Metric::HandshakeVersion,
        RefusalReason::Malformed
        | RefusalReason::Framing
        | RefusalReason::BodyNotAllowed
        | RefusalReason::BadHandshake
        | RefusalReason::InvalidTopic
        | RefusalReason::TooManyTopics => Metric::HandshakeBadRequest,
        RefusalReason::UnsupportedMediaType
        | RefusalReason::InvalidJson
        | RefusalReason::Overloaded
        | RefusalReason::EngineUnavailable
        | RefusalReason::MaxConnections
        | RefusalReason::MaxConnectionsPerIp
        | RefusalReason::LimitReached
        | RefusalReason::Unauthorized
        | RefusalReason::Forbidden
        | RefusalReason::RateLimited => return None,
    })
}

/// The credentials of `Authorization: Bearer <credentials>` (RFC 6750 §2.1; the scheme is
/// case-insensitive).
fn bearer(head: &RequestHead) -> Option<&[u8]> {
    let value = head.header("authorization")?;
    let (scheme, rest) = value.split_at_checked(7)?;
    if !scheme.eq_ignore_ascii_case(b"bearer ") {
        return None;
    }
    let start = rest.iter().position(|b| *b != b' ')?;
    let end = rest.iter().rposition(|b| *b != b' ')? + 1;
    Some(&rest[start..end])
}

/// HTTP/1.1 keeps connections open unless told otherwise; HTTP/1.0 only when asked.
fn wants_keep_alive(head: &RequestHead) -> bool {
    if head.minor_version() >= 1 {
        !head.has_token("connection", "close")
    } else {
        head.has_token("connection", "keep-alive")
    }
}
