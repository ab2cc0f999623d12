//! What the broker core asks of whoever drives it: the effects trait [`Outputs`] and the
//! typed result of every send. The core calls these methods while it decides; it never holds
//! a socket, a queue or a clock. The shard implements them over its slab and write queues,
//! the unit tests over a recording fake, `bench/fanout` over bare write queues.
//!
//! There is no `Vec<Effect>`: a delivery to 10,000 subscribers is 10,000 calls to
//! [`Outputs::send`], each a reference-count increment and a queue push, and nothing is
//! allocated or copied per subscriber.

use bytes::Bytes;

use crate::mesh::{ConnRef, MeshMsg};
use crate::metrics::Metric;
use crate::proto::close;
use crate::proto::deflate::DeliveryFrames;

/// A connection's key in its shard's slab.
pub type ConnId = usize;

/// What kind of frame a send carries, which decides how the byte budget applies to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendKind {
    /// An answer to the connection's own input (ack, error, pong, echo, HTTP response). Always
    /// queued while the connection is open: the client asked for it, and a lost answer would
    /// break the protocol. Past the budget the driver stops reading the connection until its
    /// queue halves, so a client that sends but does not read cannot grow it further.
    Reply,
    /// A pong, under [`SendKind::Reply`]'s rule; past a small number of unwritten pongs it
    /// replaces the newest (RFC 6455 §5.5.3 allows answering only the most recent ping), so a
    /// ping flood keeps only a few pongs queued.
    Pong,
    /// A message for a subscriber. Not queued when it would take a non-empty queue past the
    /// budget: the broker core applies the slow-consumer policy instead.
    Delivery,
    /// A notice that must go out right before a delivery (the `dropped` count): queued only
    /// if it and the `reserve_bytes` of the delivery after it both fit, like a delivery; so
    /// the notice never goes out alone while its subscriber is still behind.
    Notice { reserve_bytes: usize },
    /// The last frame or response before a close: queued even on a closing connection.
    Final,
}

/// What became of one frame handed to [`Outputs::send`]. Every send path returns it, so a new
/// kind of frame cannot skip the per-connection byte budget (`--max-backlog-bytes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "a frame may be refused; the caller must apply the backlog policy"]
pub enum SendStatus {
    /// Queued; the connection is within its budget.
    Queued,
    /// Queued (a [`SendKind::Reply`]), and the connection is now over its budget: it is no
    /// longer read until its queue halves.
    QueuedOverBudget,
    /// Not queued: the frame (a [`SendKind::Delivery`]) would take the connection over its
    /// budget. The caller drops it with a later notice, or disconnects the connection.
    OverBudget,
    /// Not queued: the connection is closing or gone.
    Closed,
}

/// Why the broker core closes a connection. Each has its close code and reason in one place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// Over `--max-backlog-bytes` under `--slow-consumer=disconnect`. Its unsent frames are
    /// discarded: it is behind and would stay behind.
    SlowConsumer,
    /// The connection's token expired without an in-band refresh (4001, after a
    /// `token_expired` error).
    TokenExpired,
}

impl CloseReason {
    /// The WebSocket close code (RFC 6455 §7.4.1).
    pub fn code(self) -> u16 {
        match self {
            CloseReason::SlowConsumer => close::POLICY_VIOLATION,
            // RFC 6455 §7.4.2: 4000-4999 are for applications.
            CloseReason::TokenExpired => 4001,
        }
    }

    /// The close frame's reason text.
    pub fn reason(self) -> &'static str {
        match self {
            CloseReason::SlowConsumer => "slow consumer",
            CloseReason::TokenExpired => "token expired",
        }
    }

    /// Whether frames queued and not yet started are thrown away before the close frame.
    pub fn discards_queue(self) -> bool {
        match self {
            CloseReason::SlowConsumer => true,
            // The `token_expired` error queued just before must still reach the client.
            CloseReason::TokenExpired => false,
        }
    }
}

/// What an `overloaded` answer says, on WebSocket and HTTP alike.
pub const OVERLOADED_MESSAGE: &str = "the topic's shard is overloaded; retry later";

/// The answer to `POST /publish/<topic>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpPublished {
    /// Sequenced with this `seq` and its topic's epoch (0 and none: nobody was subscribed and
    /// the topic keeps no history).
    Sequenced(u64, Option<super::history::Epoch>),
    /// The engine refused it (today: the owner shard's inbox was full): 503 `overloaded`.
    Refused,
    /// The engine's backend (Redis) is unavailable: 503 `engine_unavailable`.
    Unavailable,
}

/// The effects the broker core produces, applied by its driver as they are produced.
///
/// The core has already updated its own state when it calls any of these, and an
/// implementation must not call back into the core (it cannot: the core is borrowed).
pub trait Outputs {
    /// Queues `frame` on connection `conn` under the budget rules of `kind`. The one way a
    /// frame reaches a connection.
    fn send(&mut self, conn: ConnId, frame: Bytes, kind: SendKind) -> SendStatus;

    /// Queues a delivery on `conn`: the deflated frame when the connection negotiated
    /// permessage-deflate and the twin fits its window, else the plain one. Same budget rule
    /// as [`Outputs::send`]; the choice is a field read, never a compression.
    fn send_delivery(
        &mut self,
        conn: ConnId,
        frames: &DeliveryFrames,
        kind: SendKind,
    ) -> SendStatus {
        self.send(conn, frames.plain.clone(), kind)
    }

    /// Queues a message for another shard (never this one); it leaves at the end of the turn.
    fn to_peer(&mut self, shard: usize, msg: MeshMsg);

    /// Closes a WebSocket the core has already forgotten (its subscriptions are released).
    fn close(&mut self, conn: ConnId, why: CloseReason);

    /// Answers an HTTP publisher on this shard (`conn.shard` is this shard). The driver checks
    /// that the connection is still the one that asked.
    fn http_published(&mut self, conn: ConnRef, answer: HttpPublished);

    /// Adds `n` to one of this shard's counters.
    fn count(&mut self, metric: Metric, n: u64);
}
