//! The broker core's view of the connections on its shard: which are open pub/sub WebSockets
//! (with the generation that tells a reused slab slot apart), each one's own topic list, and
//! the messages skipped for a slow subscriber under `--slow-consumer=drop`.
//!
//! Indexed by slab key like the shard's slab, so a lookup is an index, not a hash.

use serde_json::value::RawValue;

use crate::auth::{Grants, RateLimit, TokenBucket};
use crate::mesh::ConnRef;
use crate::topic::Subscriptions;

use super::ConnId;

/// Messages skipped per topic for one slow subscriber.
type DroppedCounts = Vec<(Box<str>, u64)>;

/// One connection's pub/sub state. An idle subscriber of one topic costs this plus its topic
/// name (see docs/architecture.md).
#[derive(Debug, Default)]
struct ConnState {
    /// Tells this connection from a later one in the same slab slot.
    generation: u32,
    open: bool,
    subscriptions: Subscriptions,
    /// Messages skipped per topic while over the byte budget; the `dropped` notice goes out
    /// before the topic's next message. Rare, so boxed and usually `None`.
    dropped: Option<Box<DroppedCounts>>,
    /// The grants of the connection's token, if it presented one: boxed so a connection
    /// without a token pays one pointer.
    grants: Option<Box<Grants>>,
}

/// Every connection's pub/sub state on one shard.
#[derive(Debug, Default)]
pub(super) struct Connections {
    slots: Vec<ConnState>,
    /// Connections with a `dropped` entry: when 0 (the usual case) a delivery skips the
    /// per-subscriber lookup.
    with_drops: usize,
    /// `--max-publish-rate`: one 8-byte bucket per slab key, indexed like `slots`. Empty
    /// (and never allocated) while the limit is off, so it costs nothing then.
    publish_buckets: Vec<TokenBucket>,
}

/// Subscribe acks waiting for the engine to confirm this shard's interest in a topic.
#[derive(Debug, Default)]
pub(super) struct PendingInterest {
    /// Interest messages sent and not yet confirmed.
    pub(super) outstanding: u32,
    pub(super) waiters: Vec<(ConnRef, Box<RawValue>)>,
}

impl Connections {
    /// Starts tracking connection `conn`.
    pub(super) fn open(&mut self, conn: ConnId, generation: u32) {
        if conn >= self.slots.len() {
            self.slots.resize_with(conn + 1, ConnState::default);
        }
        let slot = &mut self.slots[conn];
        debug_assert!(!slot.open, "connection {conn} opened twice");
        slot.generation = generation;
        slot.open = true;
    }

    /// Gives `conn` (just opened) a full publish bucket: called only while the limit is on.
    pub(super) fn start_publish_bucket(&mut self, conn: ConnId, limit: RateLimit, now_ms: u32) {
        let bucket = TokenBucket::full(limit, now_ms);
        if conn >= self.publish_buckets.len() {
            self.publish_buckets.resize(conn + 1, bucket);
        }
        self.publish_buckets[conn] = bucket;
    }

    /// Takes one publish token from `conn`'s bucket; `false`: over the rate. A connection
    /// without a bucket (the limit is off) is never limited.
    pub(super) fn take_publish_token(
        &mut self,
        conn: ConnId,
        limit: RateLimit,
        now_ms: u32,
    ) -> bool {
        self.publish_buckets
            .get_mut(conn)
            .is_none_or(|bucket| bucket.try_take(limit, now_ms))
    }

    /// Stops tracking `conn` and hands back its topics (empty if it was not open).
    pub(super) fn close(&mut self, conn: ConnId) -> Subscriptions {
        let Some(slot) = self.slots.get_mut(conn).filter(|s| s.open) else {
            return Subscriptions::new();
        };
        slot.open = false;
        slot.grants = None;
        if slot.dropped.take().is_some() {
            self.with_drops -= 1;
        }
        let topics = std::mem::take(&mut slot.subscriptions);
        // Give back trailing slots of a shrunk slab, so a burst does not pin this table.
        while self.slots.last().is_some_and(|s| !s.open) {
            self.slots.pop();
        }
        self.publish_buckets.truncate(self.slots.len());
        if self.slots.capacity() >= 64 && self.slots.len() * 4 < self.slots.capacity() {
            self.slots.shrink_to(self.slots.len() * 2);
        }
        topics
    }

    /// The grants of `conn`'s token, if it is open and has one.
    pub(super) fn grants(&self, conn: ConnId) -> Option<&Grants> {
        self.slots
            .get(conn)
            .filter(|s| s.open)
            .and_then(|s| s.grants.as_deref())
    }

    /// Replaces `conn`'s grants (a new or refreshed token).
    pub(super) fn set_grants(&mut self, conn: ConnId, grants: Option<Box<Grants>>) {
        if let Some(slot) = self.slots.get_mut(conn).filter(|s| s.open) {
            slot.grants = grants;
        }
    }

    /// Open connections whose token has expired at `now_unix_secs`; their grants are taken
    /// (so each is reported once).
    pub(super) fn take_expired(&mut self, now_unix_secs: u64, expired: &mut Vec<ConnId>) {
        for (conn, slot) in self.slots.iter_mut().enumerate() {
            if slot.open
                && slot
                    .grants
                    .as_ref()
                    .is_some_and(|g| g.expired(now_unix_secs))
            {
                slot.grants = None;
                expired.push(conn);
            }
        }
    }

    /// Whether `conn` is open with this generation.
    pub(super) fn is(&self, conn: ConnId, generation: u32) -> bool {
        self.slots
            .get(conn)
            .is_some_and(|s| s.open && s.generation == generation)
    }

    /// The generation of open connection `conn`.
    pub(super) fn generation(&self, conn: ConnId) -> Option<u32> {
        self.slots
            .get(conn)
            .filter(|s| s.open)
            .map(|s| s.generation)
    }

    /// The topics of open connection `conn`.
    pub(super) fn subscriptions_mut(&mut self, conn: ConnId) -> Option<&mut Subscriptions> {
        self.slots
            .get_mut(conn)
            .filter(|s| s.open)
            .map(|s| &mut s.subscriptions)
    }

    /// Whether any connection has skipped messages to announce.
    pub(super) fn any_dropped(&self) -> bool {
        self.with_drops > 0
    }

    /// Messages skipped for `conn` on `topic` and not yet announced.
    pub(super) fn dropped(&self, conn: ConnId, topic: &str) -> Option<u64> {
        let list = self.slots.get(conn)?.dropped.as_ref()?;
        list.iter().find(|(t, _)| &**t == topic).map(|(_, n)| *n)
    }

    /// Counts `count` more skipped messages for `conn` on `topic`.
    pub(super) fn add_dropped(&mut self, conn: ConnId, topic: &str, count: u64) {
        let Some(slot) = self.slots.get_mut(conn) else {
            return;
        };
        let list = match &mut slot.dropped {
            Some(list) => list,
            None => {
                self.with_drops += 1;
                slot.dropped.insert(Box::default())
            }
        };
        match list.iter_mut().find(|(t, _)| &**t == topic) {
            Some((_, skipped)) => *skipped += count,
            None => list.push((topic.into(), count)),
        }
    }

    /// Forgets the skipped count of `conn` on `topic` (announced, or unsubscribed).
    pub(super) fn clear_dropped(&mut self, conn: ConnId, topic: &str) {
        let Some(slot) = self.slots.get_mut(conn) else {
            return;
        };
        let Some(list) = slot.dropped.as_mut() else {
            return;
        };
        if let Some(at) = list.iter().position(|(t, _)| &**t == topic) {
            list.swap_remove(at);
        }
        if list.is_empty() {
            slot.dropped = None;
            self.with_drops -= 1;
        }
    }

    /// Slots held, open or not (tests: the table gives memory back).
    #[cfg(test)]
    pub(super) fn slot_count(&self) -> usize {
        self.slots.len()
    }
}

/// One slot per slab key of the shard: part of the per-connection memory budget
/// (docs/architecture.md), 48 bytes on x86_64 (40 before the token's grants pointer).
const _: () = assert!(std::mem::size_of::<ConnState>() <= 48);
