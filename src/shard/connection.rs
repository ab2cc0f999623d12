//! One client connection as its shard sees it: the socket, where it is in its life (reading an
//! HTTP request, speaking WebSocket, closing), and its output queue. Kept small: a broker
//! holds one of these per idle subscriber.

use mio::net::TcpStream;

use crate::proto::http_body::BodyReader;
use crate::proto::session::Session;

use super::write_queue::WriteQueue;

/// What a WebSocket connection is for, chosen by its path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// `/echo`: every data message comes back.
    Echo,
    /// `/ws`: the pub/sub command channel.
    PubSub,
}

/// A request being read: head, then (for `POST /publish/...`) body, then possibly waiting for
/// the topic's owner to sequence the publish. Boxed: only connections mid-request pay for it.
#[derive(Debug)]
pub(super) struct HttpPhase {
    /// Bytes read and not yet consumed (a partial head, a body, or pipelined requests).
    pub buf: Vec<u8>,
    /// When the current request started (coarse milliseconds); the handshake deadline runs
    /// from here.
    pub started_ms: u32,
    /// A publish body being read.
    pub body: Option<PendingBody>,
    /// A publish (or a history read) was sent to its topic's owner; the response waits for
    /// its answer.
    pub awaiting_publish: bool,
    /// Keep the connection open after the current response.
    pub keep_alive: bool,
    /// At least one request was answered: an empty buffer at the deadline is an idle
    /// keep-alive connection, not a client that never finished its handshake.
    pub served: bool,
    /// `--max-publish-rate` for `POST /publish` on this connection: started at its first
    /// publish, only while the limit is on.
    pub publish_bucket: Option<crate::auth::TokenBucket>,
}

/// `POST /publish/<topic>` whose body is still arriving.
#[derive(Debug)]
pub(super) struct PendingBody {
    pub topic: Box<str>,
    pub binary: bool,
    pub reader: BodyReader,
}

/// An open WebSocket.
#[derive(Debug)]
pub(super) struct WebSocketPhase {
    /// `None` only while the shard is decoding this connection's input.
    pub session: Option<Session>,
    pub route: Route,
    /// The server window negotiated for permessage-deflate (9..=15), 0 without it: which of a
    /// delivery's frames this connection takes (`DeliveryFrames::for_window`).
    pub deflate_bits: u8,
}

impl WebSocketPhase {
    /// Counted in `Shared::compressing_subscribers` while open: a `/ws` connection that
    /// negotiated permessage-deflate.
    pub(super) fn is_compressing_subscriber(&self) -> bool {
        self.route == Route::PubSub && self.deflate_bits != 0
    }
}

/// Where a connection is in its life.
#[derive(Debug)]
pub(super) enum Phase {
    Http(Box<HttpPhase>),
    WebSocket(WebSocketPhase),
    /// A final frame or response is queued; once it is written the write side is shut and
    /// input is discarded until the peer closes or `deadline_ms` passes.
    Closing {
        deadline_ms: u32,
    },
}

/// Flags kept in one byte.
pub(super) mod flags {
    /// Listed in the shard's dirty list for a flush at the end of this turn.
    pub(crate) const DIRTY: u8 = 1 << 0;
    /// A ping went out and no traffic came back since.
    pub(crate) const PING_SENT: u8 = 1 << 1;
    /// The write side is shut down (Closing only).
    pub(crate) const WRITE_SHUT: u8 = 1 << 2;
    /// Reading stopped because the output queue is over the backlog cap.
    pub(crate) const READ_PAUSED: u8 = 1 << 3;
    /// Listed for removal at the end of this turn.
    pub(crate) const DOOMED: u8 = 1 << 4;
    /// Registered for writable readiness too (only while a write is blocked).
    pub(crate) const WANT_WRITABLE: u8 = 1 << 5;
}

#[derive(Debug)]
pub(super) struct Connection {
    pub stream: TcpStream,
    pub phase: Phase,
    pub out: WriteQueue,
    /// Tells this connection from a later one in the same slab slot.
    pub generation: u32,
    /// Last time any bytes arrived (coarse milliseconds, wrapping).
    pub last_heard_ms: u32,
    pub flags: u8,
}

impl Connection {
    pub(super) fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }

    pub(super) fn set(&mut self, flag: u8) {
        self.flags |= flag;
    }

    pub(super) fn clear(&mut self, flag: u8) {
        self.flags &= !flag;
    }
}

/// Milliseconds between two coarse timestamps that may have wrapped.
pub(super) fn elapsed_ms(now_ms: u32, since_ms: u32) -> u32 {
    now_ms.wrapping_sub(since_ms)
}

/// How long connection `key` may be silent before it is pinged: between 3/4 of `ping_ms` and
/// `ping_ms`, fixed per slab key. Connections that connected together (a reconnect storm after a
/// deploy, a benchmark's subscribers) would otherwise all be pinged in one sweep every interval,
/// and all their pongs read in one turn, in the middle of whatever fan-out is being flushed;
/// spread over a quarter of the interval, a 1 s sweep sees a slice of them at a time. A
/// connection is still closed only after `2 * ping_ms` of silence.
pub(super) fn ping_after_ms(ping_ms: u32, key: usize) -> u32 {
    let spread = u64::from(ping_ms / 4);
    if spread == 0 {
        return ping_ms;
    }
    // Fibonacci hashing: neighbouring keys land far apart in the spread.
    let hash = (key as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32;
    ping_ms - (hash % spread) as u32
}

/// A broker holds one `Connection` per client, so its size is part of the per-connection
/// memory budget (docs/architecture.md): 144 bytes on x86_64 today (the session's decoder
/// state 56, the write queue 48). A pub/sub WebSocket's topics live in the broker core
/// (`src/broker/connections.rs`, 40 bytes per slab key). Growing it must be a decision.
const _: () = assert!(std::mem::size_of::<Connection>() <= 144);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pings_of_connections_opened_together_spread_over_a_quarter_interval() {
        let ping_ms = 30_000;
        let after: Vec<u32> = (0..10_000).map(|key| ping_after_ms(ping_ms, key)).collect();
        assert!(after.iter().all(|&a| a > ping_ms * 3 / 4 && a <= ping_ms));
        // A 1 s sweep finds about 1/7.5 of them due at a time, never most of them.
        let mut per_second = [0usize; 31];
        for &a in &after {
            per_second[(a / 1_000) as usize] += 1;
        }
        let busiest = per_second.iter().max().copied().unwrap_or(0);
        assert!(
            busiest < 10_000 / 5,
            "{busiest} pinged in the busiest second"
        );
        assert_eq!(ping_after_ms(3, 7), 3, "too short to spread");
    }
}
