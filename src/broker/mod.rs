//! The broker core: every pub/sub decision one shard makes, with no I/O. It holds the shard's
//! subscriber index (topic -> local connections), each connection's topics, subscribe acks
//! waiting for the engine, and the slow-consumer policy; the [`Engine`] it is given decides
//! where a publish gets its seq. Inputs are method calls (a connection's command, a message
//! from another shard, a connection closing); effects go out through [`Outputs`] as they are
//! decided. It never touches sockets, `mio`, threads or clocks, so all of it is tested without
//! sockets (`tests.rs`, `model_tests.rs`).
//!
//! How the shard drives it:
//! - a `/ws` WebSocket opens: [`Broker::open`] (with the `?topic=` subscriptions); it closes:
//!   [`Broker::on_closed`];
//! - a text message: [`Broker::on_text`]; a binary one: [`Broker::on_binary`];
//!   `POST /publish`: [`Broker::publish`]; `GET /history`: [`Broker::read_history`];
//! - an inbox message: [`Broker::on_peer`]; a message a full peer inbox refused:
//!   [`Broker::on_refused`].
#![forbid(unsafe_code)]

mod auth;
mod connections;
pub mod history;
mod outputs;
mod publish;
mod subscribe;

#[cfg(test)]
mod fake;
#[cfg(test)]
mod model_tests;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crate::auth::Policy;

use crate::config::SlowConsumerPolicy;
use crate::engine::{Engine, HistoryRead, LocalEngine, PayloadRef, Refused};
use crate::mesh::{ConnRef, MeshMsg, ReplyTo};
use crate::metrics::Metric;
use crate::proto::command::{self, Command};
use crate::proto::envelope;
use crate::topic::LocalIndex;

use connections::{Connections, PendingInterest};
use history::Since;

pub use outputs::{
    CloseReason, ConnId, HttpHistory, HttpPublished, Outputs, ResumeHint, SendKind, SendStatus,
    MAX_CLOSE_REASON_BYTES, OVERLOADED_MESSAGE,
};

/// The limits the core enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Topics one connection may subscribe to.
    pub max_subscriptions_per_connection: usize,
    /// What happens to a subscriber whose queue is over its byte budget.
    pub slow_consumer: SlowConsumerPolicy,
    /// Subscriptions across the process (every shard's core shares one count).
    pub max_subscriptions: usize,
    /// Distinct topics across the process (counted by the engine).
    pub max_topics: usize,
}

impl Limits {
    /// The per-connection limit and policy, with the process-wide caps off.
    pub fn per_connection(
        max_subscriptions_per_connection: usize,
        slow_consumer: SlowConsumerPolicy,
    ) -> Limits {
        Limits {
            max_subscriptions_per_connection,
            slow_consumer,
            max_subscriptions: usize::MAX,
            max_topics: usize::MAX,
        }
    }
}

/// A process-wide cap a subscribe would break: answered `limit_reached`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GlobalLimit {
    /// `--max-subscriptions`.
    Subscriptions { max: usize },
    /// `--max-topics`.
    Topics { max: usize },
}

impl fmt::Display for GlobalLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GlobalLimit::Subscriptions { max } => {
                write!(f, "the server holds its maximum of {max} subscriptions")
            }
            GlobalLimit::Topics { max } => {
                write!(f, "the server holds its maximum of {max} topics")
            }
        }
    }
}

/// A subscription over `max_subscriptions_per_connection`: the one check, for commands and
/// for the `?topic=` list of an upgrade alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubscriptionLimit {
    /// Topics the connection holds already.
    pub held: usize,
    /// Topics it asked for on top.
    pub asked: usize,
    /// The limit.
    pub max: usize,
}

impl fmt::Display for SubscriptionLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let max = self.max;
        if self.held == 0 {
            write!(
                f,
                "{} topics asked for; at most {max} per connection",
                self.asked
            )
        } else {
            write!(
                f,
                "this connection already has {} subscriptions, the most allowed",
                self.held
            )
        }
    }
}

/// One shard's pub/sub decisions. See the module documentation.
#[derive(Debug)]
pub struct Broker<E: Engine = LocalEngine> {
    shard: usize,
    limits: Limits,
    engine: E,
    local: LocalIndex,
    conns: Connections,
    pending_interest: HashMap<Box<str>, PendingInterest>,
    /// Subscribers (in the index already) waiting for their resume's replay, per topic:
    /// deliveries skip them until the replay, which holds those messages, arrives.
    resuming: HashMap<Box<str>, Vec<ConnId>>,
    /// Scratch list of subscribers to disconnect after a delivery, each with where it can
    /// resume the topic it fell behind on (kept to reuse its heap).
    slow: Vec<(ConnId, Option<ResumeHint>)>,
    /// Scratch list of publishes the engine could not hand over at the end of a turn.
    refused: Vec<(ReplyTo, crate::engine::Refused)>,
    /// Subscriptions across the process, shared by every shard's core: changed once per
    /// subscribe and unsubscribe, never per delivery.
    subscriptions: Arc<AtomicUsize>,
    /// Who may subscribe and publish (shared, read-only).
    policy: Arc<Policy>,
    /// Wall-clock time of the current loop turn, for token expiry (Unix seconds).
    now_unix_secs: u64,
    /// The shard's coarse millisecond clock (wrapping), for `--max-publish-rate`.
    now_ms: u32,
}

impl<E: Engine> Broker<E> {
    /// The core of shard `shard`, with its part of the engine.
    pub fn new(shard: usize, limits: Limits, engine: E) -> Self {
        Broker {
            shard,
            limits,
            engine,
            local: LocalIndex::new(),
            conns: Connections::default(),
            pending_interest: HashMap::new(),
            resuming: HashMap::new(),
            slow: Vec::new(),
            refused: Vec::new(),
            subscriptions: Arc::default(),
            policy: Arc::new(Policy::open()),
            now_unix_secs: 0,
            now_ms: 0,
        }
    }

    /// Shares the process-wide subscription count (`--max-subscriptions`) with other cores.
    pub fn share_subscription_count(mut self, count: Arc<AtomicUsize>) -> Self {
        self.subscriptions = count;
        self
    }

    /// Checks the process-wide caps for subscribing one connection to `topics` (which it does
    /// not hold yet). The topic count may lag by the subscriptions in flight between shards,
    /// and concurrent subscribes on other shards may pass the caps by one each.
    pub fn check_global_limits(&self, topics: &[&str]) -> Result<(), GlobalLimit> {
        let held = self.subscriptions.load(Ordering::Relaxed);
        let max = self.limits.max_subscriptions;
        if held.saturating_add(topics.len()) > max {
            return Err(GlobalLimit::Subscriptions { max });
        }
        let max = self.limits.max_topics;
        if max != usize::MAX {
            for topic in topics {
                let new_here = self.local.subscribers(topic).is_empty();
                if new_here && self.engine.topic_limit_reached(topic, max) {
                    return Err(GlobalLimit::Topics { max });
                }
            }
        }
        Ok(())
    }

    /// The same core enforcing `policy` (the default is [`Policy::open`]).
    pub fn with_policy(mut self, policy: Arc<Policy>) -> Self {
        self.policy = policy;
        self
    }

    /// The wall-clock time of this loop turn, for token expiry: the core has no clock.
    pub fn set_clock(&mut self, now_unix_secs: u64) {
        self.now_unix_secs = now_unix_secs;
    }

    /// Checks that a connection holding `held` topics may take `asked` more.
    pub fn check_subscription_limit(
        &self,
        held: usize,
        asked: usize,
    ) -> Result<(), SubscriptionLimit> {
        let max = self.limits.max_subscriptions_per_connection;
        if held + asked > max {
            Err(SubscriptionLimit { held, asked, max })
        } else {
            Ok(())
        }
    }

    /// A `/ws` WebSocket opened as connection `conn` (slab key) with `generation`, asking for
    /// `topics` in its URL (already validated, distinct, and within the limit). Those are
    /// subscribed without acks.
    /// `resumes` are the URL's `since=topic:seq[:epoch]` resume points: a topic named there is
    /// subscribed resuming from it, and answered with an ack without `id` (with `topic`,
    /// `seq`, `epoch` and `recovered`) before its replay.
    pub fn open<O: Outputs>(
        &mut self,
        conn: ConnId,
        generation: u32,
        topics: &[String],
        resumes: &[(String, Since)],
        out: &mut O,
    ) {
        self.conns.open(conn, generation);
        if let Some(limit) = self.policy.publish_rate() {
            self.conns.start_publish_bucket(conn, limit, self.now_ms);
        }
        for topic in topics {
            if let Some(subs) = self.conns.subscriptions_mut(conn) {
                if subs.insert(topic) {
                    match resumes.iter().find(|(t, _)| t == topic) {
                        Some(&(_, since)) => self.add_resuming(conn, topic, None, since, out),
                        None => self.add_local(conn, topic, None, out),
                    }
                }
            }
        }
    }

    /// Connection `conn` is gone or closing: every subscription it held is released (and the
    /// engine told when this shard's last subscriber of a topic left). Idempotent.
    pub fn on_closed<O: Outputs>(&mut self, conn: ConnId, out: &mut O) {
        let mut topics = self.conns.close(conn);
        for topic in topics.drain() {
            self.remove_local(conn, &topic, out);
        }
    }

    /// A text message from a `/ws` client: one JSON command.
    pub fn on_text<O: Outputs>(&mut self, conn: ConnId, text: &[u8], out: &mut O) {
        let command = match command::parse_command(text) {
            Ok(command) => command,
            Err(error) => {
                out.count(Metric::CommandErrors, 1);
                let _ = out.send(conn, envelope::command_error_frame(&error), SendKind::Reply);
                return;
            }
        };
        if !self.permitted(conn, &command, out) {
            return;
        }
        match command {
            Command::Auth { token, id } => self.auth(conn, token.as_bytes(), id, out),
            Command::Subscribe { topic, id, since } => self.subscribe(conn, &topic, id, since, out),
            Command::Unsubscribe { topic, id } => self.unsubscribe(conn, &topic, id, out),
            Command::Publish { topic, data, id } => {
                let reply = match (id, self.conns.generation(conn)) {
                    (Some(id), Some(generation)) => ReplyTo::WebSocket {
                        conn: ConnRef {
                            shard: self.shard as u16,
                            key: conn as u32,
                            generation,
                        },
                        id: id.to_owned(),
                    },
                    _ => ReplyTo::Nobody,
                };
                self.publish(&topic, PayloadRef::Json(data.get().as_bytes()), reply, out);
            }
        }
    }

    /// A binary message from a `/ws` client: a publish with a topic header, no answer.
    pub fn on_binary<O: Outputs>(&mut self, conn: ConnId, payload: &[u8], out: &mut O) {
        match envelope::parse_binary_publish(payload) {
            Ok((topic, body)) => {
                if self.within_publish_rate(conn, None, out)
                    && self.may(conn, topic, auth::Action::Publish, None, out)
                {
                    self.publish(topic, PayloadRef::Binary(body), ReplyTo::Nobody, out)
                }
            }
            Err(error) => {
                out.count(Metric::CommandErrors, 1);
                let _ = out.send(conn, envelope::command_error_frame(&error), SendKind::Reply);
            }
        }
    }

    /// A message from another shard (or the engine's thread).
    pub fn on_peer<O: Outputs>(&mut self, msg: MeshMsg, out: &mut O) {
        match msg {
            MeshMsg::Deliver {
                topic,
                frames,
                sequenced_us,
                epoch,
            } => {
                // While this shard's interest in the topic waits for its confirmation, a
                // delivery was sequenced before the engine saw that interest: it belongs to
                // subscribers who have all left (the engine may since have restarted the
                // topic's seq), so it must not reach the new ones.
                if self.pending_interest.is_empty() || !self.pending_interest.contains_key(&topic) {
                    self.deliver_local(&topic, &frames, epoch, sequenced_us, out);
                }
            }
            MeshMsg::InterestConfirmed { topic, count } => {
                self.interest_confirmed(&topic, count, out)
            }
            MeshMsg::Dropped { topic, count } => self.deliveries_dropped(&topic, count),
            MeshMsg::Published { reply, seq, epoch } => self.answer(reply, seq, epoch, out),
            MeshMsg::PublishFailed { reply } => self.refuse(reply, Refused::Unavailable, out),
            MeshMsg::Replay {
                topic,
                conn,
                id,
                resumed,
                confirms_interest,
            } => {
                if let Some(key) = self.resolve(conn) {
                    self.finish_resume(key, &topic, id.as_deref(), resumed, out);
                }
                if confirms_interest {
                    self.interest_confirmed(&topic, 1, out);
                }
            }
            MeshMsg::HistoryPage { conn, page } => {
                out.http_history(conn, HttpHistory::Page(page));
            }
            msg @ (MeshMsg::Publish { .. }
            | MeshMsg::Interest { .. }
            | MeshMsg::Resume { .. }
            | MeshMsg::HistoryRead { .. }) => {
                if let Some((topic, sequenced)) = self.engine.on_message(msg, out) {
                    self.finish(&topic, sequenced, out);
                }
            }
        }
    }

    /// `GET /history/<topic>?since=after&limit=limit` from HTTP connection `conn` of this
    /// shard (already checked and permitted by the driver): the topic's owner reads its ring,
    /// and the answer comes back through [`Outputs::http_history`].
    pub fn read_history<O: Outputs>(
        &mut self,
        topic: &str,
        after: u64,
        limit: usize,
        conn: ConnRef,
        out: &mut O,
    ) {
        match self.engine.read_history(topic, after, limit, conn, out) {
            HistoryRead::Page(page) => out.http_history(conn, HttpHistory::Page(page)),
            HistoryRead::Forwarded => {}
            HistoryRead::Unsupported => out.http_history(conn, HttpHistory::Unsupported),
        }
    }

    /// Whether `conn` names an open connection of this shard.
    fn resolve(&self, conn: ConnRef) -> Option<ConnId> {
        let key = conn.key as usize;
        (usize::from(conn.shard) == self.shard && self.conns.is(key, conn.generation))
            .then_some(key)
    }

    /// Topics with at least one subscriber on this shard.
    pub fn topic_count(&self) -> usize {
        self.local.topic_count()
    }

    /// (connection, topic) subscriptions on this shard.
    pub fn subscription_count(&self) -> usize {
        self.local.subscription_count()
    }

    /// The clock moved to `now_ms` (monotonic milliseconds): the engine expires history.
    pub fn tick(&mut self, now_ms: u64) {
        // The rate buckets keep a wrapping u32 clock (see `auth::rate`).
        self.now_ms = now_ms as u32;
        self.engine.tick(now_ms);
    }

    /// The engine of this shard.
    pub fn engine(&self) -> &E {
        &self.engine
    }

    /// Topics the engine keeps state for on this shard (owned topics, for the local engine).
    pub fn engine_topic_count(&self) -> usize {
        self.engine.topic_count()
    }
}
