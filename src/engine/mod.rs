//! The engine seam: where a publish gets its `seq` and how its one prepared frame reaches the
//! shards with subscribers. The broker core talks to an engine only through [`Engine`]; the
//! shard loop does not know which engine runs.
//!
//! - [`local::LocalEngine`] (today's only engine): the in-process mesh. Each topic has an
//!   owner shard (`topic::owner_shard`); the owner assigns seq and sends `Deliver` to the
//!   interested shards through their inboxes.
//! - A Redis engine (issue 13) assigns seq in Redis on its own thread and sends `Deliver`,
//!   `Published` and `InterestConfirmed` to the shards' inboxes; on the shard side it is an
//!   [`Engine`] whose `publish` and `set_interest` hand work to that thread.
//!
//! The contract (also in docs/architecture.md):
//! - **Who assigns seq**: the engine, exactly once per publish it accepts, counting up by 1
//!   per topic while the topic is live (today: while some shard is interested).
//! - **Order**: for each topic, every shard receives its `Deliver`s in seq order, and a
//!   publisher's `Published` answer leaves after the `Deliver` to the publisher's own shard.
//! - **Interest**: `set_interest(topic, true)` may answer [`Interest::Pending`]; the engine
//!   then later sends `InterestConfirmed { topic }` to this shard, after which every message it
//!   sequences for the topic reaches this shard. Subscribe acks wait for that.
//! - **Refusal**: an engine may refuse a publish, at once ([`Routed::Refused`]) or later (the
//!   driver hands the refused message to the core's `on_refused`). The publisher hears
//!   `overloaded` (WebSocket, if it sent an `id`) or HTTP 503; nothing is delivered and no seq
//!   is used. A `Deliver` that cannot reach a shard is counted and announced: the shard's
//!   subscribers of the topic get a `dropped` notice before their next message.
#![forbid(unsafe_code)]

pub mod interest;
pub mod local;
pub mod redis;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;

use crate::broker::history::{Epoch, History, Page, Resumed, Since};
use crate::broker::Outputs;
use crate::mesh::{ConnRef, MeshMsg, Payload, ReplyTo};
use crate::proto::deflate::{Deflater, DeliveryFrames};
use serde_json::value::RawValue;

pub use interest::InterestFilter;
pub use local::LocalEngine;

/// A publish's payload, borrowed from wherever it arrived (a read buffer, a request body, an
/// inbox message).
#[derive(Debug, Clone, Copy)]
pub enum PayloadRef<'a> {
    /// The raw JSON text of `data`, delivered verbatim in a text frame.
    Json(&'a [u8]),
    /// Raw bytes, delivered in a binary frame.
    Binary(&'a [u8]),
}

impl<'a> PayloadRef<'a> {
    /// Borrows an owned payload (one that crossed the mesh).
    pub fn from_owned(payload: &'a Payload) -> PayloadRef<'a> {
        match payload {
            Payload::Json(bytes) => PayloadRef::Json(bytes),
            Payload::Binary(bytes) => PayloadRef::Binary(bytes),
        }
    }

    /// Copies the payload once, to send it to another thread.
    pub fn to_owned(self) -> Payload {
        match self {
            PayloadRef::Json(data) => Payload::Json(Bytes::copy_from_slice(data)),
            PayloadRef::Binary(data) => Payload::Binary(Bytes::copy_from_slice(data)),
        }
    }
}

/// How the shard that sequences a publish builds its deflated twin (permessage-deflate): once
/// per publish, never per subscriber, and only while some connection on any shard negotiated
/// compression (`compressing`, a process-wide gauge the shards keep) and the frame's payload
/// is at least `min_bytes`.
#[derive(Debug)]
pub struct DeflateOnce {
    deflater: Deflater,
    min_bytes: usize,
    compressing: Arc<AtomicUsize>,
}

impl DeflateOnce {
    /// Deflates at `level` payloads of at least `min_bytes` while `compressing` is above 0.
    pub fn new(level: u32, min_bytes: usize, compressing: Arc<AtomicUsize>) -> DeflateOnce {
        DeflateOnce {
            deflater: Deflater::new(level),
            min_bytes,
            compressing,
        }
    }

    /// The plain frame and, when worth it, its deflated twin.
    pub fn frames(&mut self, plain: Bytes) -> DeliveryFrames {
        // Relaxed: a publish racing a first compressing subscriber may go out plain, which is
        // always valid.
        let anyone = self.compressing.load(Ordering::Relaxed) > 0;
        DeliveryFrames::build(plain, anyone.then_some(&mut self.deflater), self.min_bytes)
    }
}

/// A publish the engine sequenced on this shard, for the core to finish: deliver `frame` to
/// this shard's subscribers (when this shard is interested) and answer `reply` with `seq`.
#[derive(Debug)]
pub struct Sequenced {
    /// The seq given (0: no shard was interested and the topic keeps no history).
    pub seq: u64,
    /// The topic incarnation's epoch (none with seq 0).
    pub epoch: Option<Epoch>,
    /// The prepared frames, when this shard has subscribers of the topic.
    pub local_frame: Option<DeliveryFrames>,
    /// Who waits for the answer.
    pub reply: ReplyTo,
    /// When it was sequenced (the driver's clock, `Outputs::now_us`).
    pub sequenced_us: u64,
}

/// What the engine did with a publish.
#[derive(Debug)]
#[must_use]
pub enum Routed {
    /// Sequenced here, now.
    Sequenced(Sequenced),
    /// Handed on; the answer comes back as a `Published` message (or a refusal).
    Forwarded,
    /// Refused at once; the publisher must hear `overloaded`.
    Refused(ReplyTo),
    /// Refused at once: the engine's backend is unavailable (`engine_unavailable`).
    Unavailable(ReplyTo),
}

/// Why a publish was not carried out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Full queues (`overloaded`, HTTP 503).
    Overloaded,
    /// The engine's backend is unreachable (`engine_unavailable`, HTTP 503).
    Unavailable,
}

/// Whether a shard's new interest in a topic is in effect yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum Interest {
    /// Every message sequenced from now on reaches this shard.
    Live,
    /// Not yet: an `InterestConfirmed { topic }` message will say so.
    Pending,
}

/// Where a publish gets its seq and how it reaches the interested shards. One instance per
/// shard; sans-IO like the core (messages go out through [`Outputs::to_peer`]).
pub trait Engine {
    /// A publish from a connection on this shard.
    fn publish<O: Outputs>(
        &mut self,
        topic: &str,
        payload: PayloadRef<'_>,
        reply: ReplyTo,
        out: &mut O,
    ) -> Routed;

    /// This shard's first local subscriber of `topic` arrived (`interested`) or its last left.
    /// The answer matters only when `interested`.
    fn set_interest<O: Outputs>(&mut self, topic: &str, interested: bool, out: &mut O) -> Interest;

    /// A message for the engine's part on this shard (the local engine: `Publish` and
    /// `Interest`, sent to this shard as a topic's owner). Returns a publish it sequenced, with
    /// its topic.
    fn on_message<O: Outputs>(
        &mut self,
        msg: MeshMsg,
        out: &mut O,
    ) -> Option<(Box<str>, Sequenced)>;

    /// Connection `conn` of this shard subscribes to `topic` resuming from `since` (it is in
    /// the shard's index already, but skipped by deliveries until its replay). The engine
    /// registers this shard's interest and decides the resume; `Some` when decided here and
    /// now (the caller sends the ack and the replay before anything else of the topic),
    /// `None` when a `Replay` message will bring the answer, ordered after every delivery up
    /// to its top and before any later one.
    fn resume<O: Outputs>(
        &mut self,
        topic: &str,
        since: Since,
        conn: ConnRef,
        id: Option<Box<RawValue>>,
        confirms_interest: bool,
        out: &mut O,
    ) -> Option<Resumed<DeliveryFrames>>;

    /// `GET /history` from connection `conn` of this shard: up to `limit` kept messages of
    /// `topic` after seq `after`, oldest first. Reading registers no interest and starts
    /// nothing.
    fn read_history<O: Outputs>(
        &mut self,
        topic: &str,
        after: u64,
        limit: usize,
        conn: ConnRef,
        out: &mut O,
    ) -> HistoryRead;

    /// The clock moved to `now_ms` (milliseconds, monotonic): expire history.
    fn tick(&mut self, now_ms: u64);

    /// Whether subscribing to `topic` would make more than `max_topics` distinct topics
    /// (a topic some shard holds already does not count). May lag by the subscriptions in
    /// flight between shards.
    fn topic_limit_reached(&self, topic: &str, max_topics: usize) -> bool;

    /// Topics this engine instance keeps state for (a gauge).
    fn topic_count(&self) -> usize;

    /// Whether work gathered during the turn waits for [`Engine::flush`].
    fn has_pending(&self) -> bool {
        false
    }

    /// The end of the shard's turn: hand what was gathered to the engine's thread. Publishes
    /// that could not be handed over go to `refused`, for the core to answer.
    fn flush<O: Outputs>(&mut self, refused: &mut Vec<(ReplyTo, Refused)>, out: &mut O) {
        let _ = (refused, out);
    }
}

/// What [`Engine::read_history`] decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HistoryRead {
    /// Answered here and now (`None`: the topic has no state: no epoch, top 0).
    Page(Option<Page<Bytes>>),
    /// Asked of the topic's owner: a `HistoryPage` message brings the answer.
    Forwarded,
    /// This engine cannot read history over HTTP (`--engine redis`, today).
    Unsupported,
}

/// The engine a shard runs, chosen by `--engine`: a plain enum, so the shard loop and the
/// broker core stay generic over one type and the call is a predictable branch.
#[derive(Debug)]
// One per shard, made once: the size difference costs nothing, a box would cost a pointer
// chase on every publish of the default engine.
#[allow(clippy::large_enum_variant)]
pub enum AnyEngine {
    Local(LocalEngine),
    Redis(redis::RedisEngine),
}

impl AnyEngine {
    /// The kept history of this shard, for its metrics (`None`: Redis keeps it).
    pub fn history(&self) -> Option<&History<DeliveryFrames>> {
        match self {
            AnyEngine::Local(e) => Some(e.history()),
            AnyEngine::Redis(_) => None,
        }
    }
}

impl Engine for AnyEngine {
    fn publish<O: Outputs>(
        &mut self,
        topic: &str,
        payload: PayloadRef<'_>,
        reply: ReplyTo,
        out: &mut O,
    ) -> Routed {
        match self {
            AnyEngine::Local(e) => e.publish(topic, payload, reply, out),
            AnyEngine::Redis(e) => e.publish(topic, payload, reply, out),
        }
    }

    fn set_interest<O: Outputs>(&mut self, topic: &str, interested: bool, out: &mut O) -> Interest {
        match self {
            AnyEngine::Local(e) => e.set_interest(topic, interested, out),
            AnyEngine::Redis(e) => e.set_interest(topic, interested, out),
        }
    }

    fn on_message<O: Outputs>(
        &mut self,
        msg: MeshMsg,
        out: &mut O,
    ) -> Option<(Box<str>, Sequenced)> {
        match self {
            AnyEngine::Local(e) => e.on_message(msg, out),
            AnyEngine::Redis(e) => e.on_message(msg, out),
        }
    }

    fn topic_count(&self) -> usize {
        match self {
            AnyEngine::Local(e) => e.topic_count(),
            AnyEngine::Redis(e) => e.topic_count(),
        }
    }

    fn resume<O: Outputs>(
        &mut self,
        topic: &str,
        since: Since,
        conn: ConnRef,
        id: Option<Box<RawValue>>,
        confirms_interest: bool,
        out: &mut O,
    ) -> Option<Resumed<DeliveryFrames>> {
        match self {
            AnyEngine::Local(e) => e.resume(topic, since, conn, id, confirms_interest, out),
            AnyEngine::Redis(e) => e.resume(topic, since, conn, id, confirms_interest, out),
        }
    }

    fn read_history<O: Outputs>(
        &mut self,
        topic: &str,
        after: u64,
        limit: usize,
        conn: ConnRef,
        out: &mut O,
    ) -> HistoryRead {
        match self {
            AnyEngine::Local(e) => e.read_history(topic, after, limit, conn, out),
            AnyEngine::Redis(e) => e.read_history(topic, after, limit, conn, out),
        }
    }

    fn tick(&mut self, now_ms: u64) {
        match self {
            AnyEngine::Local(e) => e.tick(now_ms),
            AnyEngine::Redis(e) => e.tick(now_ms),
        }
    }

    fn topic_limit_reached(&self, topic: &str, max_topics: usize) -> bool {
        match self {
            AnyEngine::Local(e) => e.topic_limit_reached(topic, max_topics),
            AnyEngine::Redis(e) => e.topic_limit_reached(topic, max_topics),
        }
    }

    fn has_pending(&self) -> bool {
        match self {
            AnyEngine::Local(e) => e.has_pending(),
            AnyEngine::Redis(e) => e.has_pending(),
        }
    }

    fn flush<O: Outputs>(&mut self, refused: &mut Vec<(ReplyTo, Refused)>, out: &mut O) {
        match self {
            AnyEngine::Local(e) => e.flush(refused, out),
            AnyEngine::Redis(e) => e.flush(refused, out),
        }
    }
}
