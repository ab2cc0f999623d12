//! The Redis engine's decisions for one node, with no I/O: which topics the node listens to and
//! which of its shards want each, the last seq delivered per topic and its epoch, and the merge
//! that keeps every topic gap-free and in order across nodes (Redis pub/sub is at-most-once):
//! a message that arrives ahead of its predecessors is held while the missing range is read
//! from the topic's stream, a range the stream no longer has becomes a `dropped` notice, and a
//! new epoch (Redis lost the topic) becomes an `epoch` notice with `recovered:false`. Publish
//! acks are held until the node has delivered their message, so a subscribed publisher sees
//! its message before its ack. Effects leave through [`NodeOut`]; the engine thread performs
//! them.

use std::collections::{BTreeMap, HashMap, VecDeque};

use bytes::Bytes;

use serde_json::value::RawValue;

use crate::broker::history::{
    decide, Epoch, Resumed, Since, TailView, DEFAULT_MAX_REPLAY_MESSAGES,
};
use crate::mesh::{ConnRef, Payload, ReplyTo};
use crate::proto::envelope;

use super::script::ChannelMessage;

/// How long an ack may wait for its message before the node reads the stream for it (the
/// pub/sub copy may have been lost).
pub(super) const HOLD_BEFORE_FETCH_MS: u64 = 200;
/// How long an ack may wait at all (Redis unreachable, say) before it is answered anyway.
pub(super) const HOLD_AT_MOST_MS: u64 = 5_000;
/// Entries one stream read asks for; a longer gap is read in several.
pub(super) const FETCH_BATCH: u64 = 1_000;

/// Counted events of the merge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum NodeEvent {
    /// Messages delivered from a stream read (a gap filled).
    Recovered,
    /// Messages announced as lost (`dropped`): gone from the stream.
    Lost,
    /// Topics that came back with a new epoch.
    EpochReset,
    /// Messages ignored as already delivered.
    Duplicate,
}

/// The effects the node's decisions produce.
pub(super) trait NodeOut {
    /// Hand `frame` to `shard`'s subscribers of `topic` (a `Deliver`); `epoch` is the topic's
    /// current one (a subscriber closed as slow is told where to resume in it).
    fn deliver(&mut self, shard: u16, topic: &str, frame: Bytes, epoch: Option<Epoch>);
    /// Tell `shard` its interest in `topic` is in effect.
    fn confirm(&mut self, shard: u16, topic: &str);
    /// Answer a publisher.
    fn answer(&mut self, reply: ReplyTo, seq: u64, epoch: Epoch);
    /// SUBSCRIBE to the topic's channel, then read its top (answered by [`Node::subscribed`]).
    fn subscribe(&mut self, topic: &str);
    /// UNSUBSCRIBE from the topic's channel.
    fn unsubscribe(&mut self, topic: &str);
    /// Read seqs `from..=to` from the topic's stream (answered by [`Node::fetched`]).
    fn fetch(&mut self, topic: &str, from: u64, to: u64);
    /// Read the topic's top, its oldest kept seq and its kept entries from `from` on, creating
    /// its incarnation if it has none (answered by [`Node::resume_read`]).
    fn read_for_resume(&mut self, topic: &str, from: u64);
    /// Answer a resume: a `Replay` to the shard of `waiter.conn`, after every delivery of the
    /// topic up to `resumed.top` and before any later one.
    fn replay(&mut self, topic: &str, waiter: Waiter, resumed: Resumed<Bytes>);
    fn count(&mut self, event: NodeEvent, n: u64);
}

#[derive(Debug)]
struct HeldAck {
    seq: u64,
    epoch: Epoch,
    reply: ReplyTo,
    since_ms: u64,
}

/// A connection resuming a topic from `since`, waiting for the topic's stream read.
#[derive(Debug)]
pub struct Waiter {
    pub conn: ConnRef,
    pub id: Option<Box<RawValue>>,
    pub since: Since,
    /// The resume carries its shard's first interest: the `Replay` confirms it.
    pub confirms_interest: bool,
}

#[derive(Debug, Default)]
struct Topic {
    /// Shards of this node with subscribers.
    shards: Vec<u16>,
    /// Shards waiting for their interest to be confirmed.
    unconfirmed: Vec<u16>,
    /// Subscribed and top read: messages flow. False while (re)subscribing.
    live: bool,
    /// Never live yet: the top read sets the starting point without any notice.
    fresh: bool,
    epoch: Option<Epoch>,
    /// The last seq handed to the shards, in `epoch`.
    delivered: u64,
    /// Messages that arrived ahead of their turn.
    buffer: BTreeMap<u64, ChannelMessage>,
    /// A stream read in flight, up to this seq.
    fetching: Option<u64>,
    held: VecDeque<HeldAck>,
    /// Resumes waiting for the next stream read.
    waiters: Vec<Waiter>,
    /// Resumes answered by the stream read in flight (live messages wait meanwhile).
    reading_for: Vec<Waiter>,
}

/// One node's topics. See the module documentation.
#[derive(Debug)]
pub(super) struct Node {
    topics: HashMap<Box<str>, Topic>,
    /// The most messages one resume replays (`--max-replay-messages`).
    max_replay_messages: usize,
}

impl Default for Node {
    fn default() -> Node {
        Node::new(DEFAULT_MAX_REPLAY_MESSAGES)
    }
}

impl Node {
    pub(super) fn new(max_replay_messages: usize) -> Node {
        Node {
            topics: HashMap::new(),
            max_replay_messages,
        }
    }

    /// Topics the node listens to.
    pub(super) fn topic_count(&self) -> usize {
        self.topics.len()
    }

    /// Every topic, for a resubscribe after a reconnect.
    pub(super) fn topics(&self) -> impl Iterator<Item = &str> {
        self.topics.keys().map(|t| &**t)
    }

    /// Shard `shard`'s interest in `topic` started or ended.
    pub(super) fn interest<O: NodeOut>(
        &mut self,
        topic: &str,
        shard: u16,
        interested: bool,
        out: &mut O,
    ) {
        if interested {
            let t = self.join(topic, shard, out);
            if t.live {
                out.confirm(shard, topic);
            } else if !t.unconfirmed.contains(&shard) {
                t.unconfirmed.push(shard);
            }
            return;
        }
        let Some(t) = self.topics.get_mut(topic) else {
            return;
        };
        t.shards.retain(|&s| s != shard);
        t.unconfirmed.retain(|&s| s != shard);
        // While subscribing, the answer to the subscribe decides (see `subscribed`); a
        // resume being answered keeps the topic until its answer is out.
        if t.shards.is_empty() && t.live && !t.resuming() {
            self.forget(topic, out);
        }
    }

    fn forget<O: NodeOut>(&mut self, topic: &str, out: &mut O) {
        if let Some(t) = self.topics.remove(topic) {
            out.unsubscribe(topic);
            for held in t.held {
                out.answer(held.reply, held.seq, held.epoch);
            }
        }
    }

    /// The node is subscribed to `topic`'s channel and read its top: `seq` in `epoch`.
    pub(super) fn subscribed<O: NodeOut>(
        &mut self,
        topic: &str,
        seq: u64,
        epoch: Epoch,
        out: &mut O,
    ) {
        let Some(t) = self.topics.get_mut(topic) else {
            return;
        };
        if t.shards.is_empty() && !t.resuming() {
            self.forget(topic, out);
            return;
        }
        if t.fresh {
            t.fresh = false;
            t.epoch = Some(epoch);
            t.delivered = seq;
        } else if t.epoch != Some(epoch) {
            // Everything of the new incarnation is new here: it is delivered from its first
            // seq, like on every other node, whenever each noticed the change.
            reset(topic, t, epoch, 0, out);
            if seq > 0 {
                start_fetch(topic, t, seq, out);
            }
        } else if seq > t.delivered {
            // Catch up from the stream before anything live.
            start_fetch(topic, t, seq, out);
        }
        t.live = true;
        for shard in std::mem::take(&mut t.unconfirmed) {
            out.confirm(shard, topic);
        }
        settle(topic, t, out);
    }

    /// A message on `topic`'s channel.
    pub(super) fn message<O: NodeOut>(&mut self, topic: &str, msg: ChannelMessage, out: &mut O) {
        let Some(t) = self.topics.get_mut(topic) else {
            return;
        };
        if !t.live || t.fetching.is_some() || !t.reading_for.is_empty() {
            hold(t, msg);
            return;
        }
        process(topic, t, msg, out);
        settle(topic, t, out);
    }

    /// A stream read asked for by [`NodeOut::fetch`] came back: the topic's current `epoch`
    /// and the entries (seq, payload) of the range that are still kept, in order.
    pub(super) fn fetched<O: NodeOut>(
        &mut self,
        topic: &str,
        epoch: Option<Epoch>,
        entries: Vec<(u64, Payload)>,
        to: u64,
        out: &mut O,
    ) {
        let Some(t) = self.topics.get_mut(topic) else {
            return;
        };
        if t.fetching != Some(to) || !t.live {
            // Superseded (a reconnect started over).
            return;
        }
        t.fetching = None;
        let Some(epoch) = epoch.filter(|&e| t.epoch == Some(e)) else {
            match epoch {
                Some(epoch) => reset(topic, t, epoch, 0, out),
                // The topic vanished from Redis between the gap and the read: what is
                // missing is gone.
                None => {
                    if t.delivered < to {
                        lost(topic, t, to, out);
                    }
                }
            }
            settle(topic, t, out);
            return;
        };
        let full = entries.len() as u64 >= FETCH_BATCH;
        let last_read = entries.last().map_or(t.delivered, |(seq, _)| *seq);
        // The stream's entries and the messages heard meanwhile fill the range together; only
        // what neither has is lost. (A read started for a late ack may find the stream
        // already trimmed past messages that pub/sub did bring.)
        for (seq, payload) in entries {
            if seq > t.delivered && seq <= to && !t.buffer.contains_key(&seq) {
                out.count(NodeEvent::Recovered, 1);
                let msg = ChannelMessage {
                    seq,
                    epoch,
                    payload,
                };
                t.buffer.insert(seq, msg);
            }
        }
        if full && last_read < to {
            // More to read; deliver what is in order so far, then read on.
            deliver_run(topic, t, last_read, out);
            start_fetch(topic, t, to, out);
            return;
        }
        deliver_run(topic, t, to, out);
        if t.delivered < to {
            lost(topic, t, to, out);
        }
        settle(topic, t, out);
    }

    /// `shard` is interested in `topic`: the topic's state, created (fresh, and the channel
    /// subscribed) if the node had none.
    fn join<O: NodeOut>(&mut self, topic: &str, shard: u16, out: &mut O) -> &mut Topic {
        if !self.topics.contains_key(topic) {
            out.subscribe(topic);
            let fresh = Topic {
                fresh: true,
                ..Topic::default()
            };
            self.topics.insert(topic.into(), fresh);
        }
        let t = self
            .topics
            .get_mut(topic)
            .expect("present or inserted above");
        if !t.shards.contains(&shard) {
            t.shards.push(shard);
        }
        t
    }

    /// Connection `waiter.conn` subscribes to `topic` resuming from `waiter.since`. Its shard
    /// is registered at once (its deliveries skip the connection until the `Replay`); the
    /// answer follows a stream read made once the topic is live and settled (subscribe, then
    /// read, then merge: the read's top is where the replay ends and live delivery resumes).
    pub(super) fn resume<O: NodeOut>(&mut self, topic: &str, waiter: Waiter, out: &mut O) {
        let t = self.join(topic, waiter.conn.shard, out);
        t.waiters.push(waiter);
        settle(topic, t, out);
    }

    /// The read asked for by [`NodeOut::read_for_resume`] came back: the topic's `epoch`, its
    /// `top`, its `oldest` kept seq and the kept entries from the asked seq on. The node first
    /// catches up to `top` (the entries, the messages heard meanwhile, the rest announced
    /// lost), then answers each resume by the pure decision of `history::resume`.
    pub(super) fn resume_read<O: NodeOut>(
        &mut self,
        topic: &str,
        epoch: Epoch,
        top: u64,
        oldest: Option<u64>,
        entries: Vec<(u64, Payload)>,
        out: &mut O,
    ) {
        let cap = self.max_replay_messages;
        let Some(t) = self.topics.get_mut(topic) else {
            return;
        };
        if t.reading_for.is_empty() || !t.live {
            // Superseded (a reconnect started over).
            return;
        }
        if t.epoch != Some(epoch) {
            // A new incarnation: announced, then read again from its start.
            let waiting = std::mem::take(&mut t.reading_for);
            t.waiters.splice(0..0, waiting);
            reset(topic, t, epoch, 0, out);
            settle(topic, t, out);
            return;
        }
        for (seq, payload) in &entries {
            let seq = *seq;
            if seq > t.delivered && seq <= top && !t.buffer.contains_key(&seq) {
                out.count(NodeEvent::Recovered, 1);
                let msg = ChannelMessage {
                    seq,
                    epoch,
                    payload: payload.clone(),
                };
                t.buffer.insert(seq, msg);
            }
        }
        deliver_run(topic, t, top, out);
        if t.delivered < top {
            lost(topic, t, top, out);
        }
        let top = t.delivered;
        let view = TailView {
            epoch,
            top,
            oldest_kept: oldest.filter(|&o| o <= top),
        };
        for waiter in std::mem::take(&mut t.reading_for) {
            let decision = decide(waiter.since, view, cap);
            let replay = decision
                .replay
                .clone()
                .map(|range| replay_frames(topic, &entries, range));
            let (recovered, replay) = match replay {
                None => (decision.recovered, Vec::new()),
                Some(Some(frames)) => (decision.recovered, frames),
                // An entry the decision counted on is not in the read: nothing partial.
                Some(None) => (false, Vec::new()),
            };
            let resumed = Resumed {
                epoch,
                top,
                recovered,
                replay,
            };
            out.replay(topic, waiter, resumed);
        }
        if t.shards.is_empty() && !t.resuming() {
            self.forget(topic, out);
            return;
        }
        settle(topic, t, out);
    }

    /// A publish from this node was sequenced by Redis as `seq` in `epoch`.
    pub(super) fn published<O: NodeOut>(
        &mut self,
        topic: &str,
        seq: u64,
        epoch: Epoch,
        reply: ReplyTo,
        now_ms: u64,
        out: &mut O,
    ) {
        if matches!(reply, ReplyTo::Nobody) {
            return;
        }
        if let Some(t) = self.topics.get_mut(topic) {
            if t.live && t.epoch == Some(epoch) && t.delivered < seq {
                t.held.push_back(HeldAck {
                    seq,
                    epoch,
                    reply,
                    since_ms: now_ms,
                });
                return;
            }
        }
        out.answer(reply, seq, epoch);
    }

    /// The connection to Redis is gone: every topic must be resubscribed and caught up.
    pub(super) fn disconnected(&mut self) {
        for t in self.topics.values_mut() {
            t.live = false;
            t.fetching = None;
            // Read again once resubscribed.
            let waiting = std::mem::take(&mut t.reading_for);
            t.waiters.splice(0..0, waiting);
        }
    }

    /// The periodic check: acks whose message is late make the node read the stream; acks
    /// that waited too long are answered anyway.
    pub(super) fn tick<O: NodeOut>(&mut self, now_ms: u64, out: &mut O) {
        for (topic, t) in self.topics.iter_mut() {
            while t
                .held
                .front()
                .is_some_and(|h| now_ms.saturating_sub(h.since_ms) >= HOLD_AT_MOST_MS)
            {
                if let Some(h) = t.held.pop_front() {
                    out.answer(h.reply, h.seq, h.epoch);
                }
            }
            let late = t
                .held
                .front()
                .is_some_and(|h| now_ms.saturating_sub(h.since_ms) >= HOLD_BEFORE_FETCH_MS);
            if late && t.live && t.fetching.is_none() && t.reading_for.is_empty() {
                let to = t.held.iter().map(|h| h.seq).max().unwrap_or(0);
                if to > t.delivered {
                    start_fetch(topic, t, to, out);
                }
            }
        }
    }
}

impl Topic {
    /// Resumes wait for their answer.
    fn resuming(&self) -> bool {
        !self.waiters.is_empty() || !self.reading_for.is_empty()
    }
}

/// Delivers what is in turn, then starts the stream read for waiting resumes once the topic
/// is live and no other read is in flight.
fn settle<O: NodeOut>(topic: &str, t: &mut Topic, out: &mut O) {
    drain(topic, t, out);
    if t.live && t.fetching.is_none() && t.reading_for.is_empty() && !t.waiters.is_empty() {
        let from = t
            .waiters
            .iter()
            .map(|w| w.since.seq.saturating_add(1))
            .min()
            .unwrap_or(u64::MAX)
            .min(t.delivered + 1);
        t.reading_for = std::mem::take(&mut t.waiters);
        out.read_for_resume(topic, from);
    }
}

/// The frames of seqs `range` from a stream read (sorted by seq); `None` if one is missing.
fn replay_frames(
    topic: &str,
    entries: &[(u64, Payload)],
    range: std::ops::RangeInclusive<u64>,
) -> Option<Vec<Bytes>> {
    let start = entries.partition_point(|(seq, _)| seq < range.start());
    let mut frames = Vec::new();
    let mut next = *range.start();
    for (seq, payload) in &entries[start..] {
        if *seq > *range.end() {
            break;
        }
        if *seq != next {
            return None;
        }
        frames.push(frame_of(topic, *seq, payload)?);
        next += 1;
    }
    (next == range.end() + 1).then_some(frames)
}

/// The delivery frame of a message; `None` for a binary payload whose topic cannot head a
/// binary frame (not publishable through crier: someone else wrote it).
fn frame_of(topic: &str, seq: u64, payload: &Payload) -> Option<Bytes> {
    match payload {
        Payload::Json(data) => Some(envelope::message_frame(topic, seq, data)),
        Payload::Binary(data) if (1..=envelope::MAX_BINARY_TOPIC_BYTES).contains(&topic.len()) => {
            Some(envelope::binary_message_frame(topic, seq, data))
        }
        Payload::Binary(_) => None,
    }
}

fn hold(t: &mut Topic, msg: ChannelMessage) {
    let stale = t.epoch == Some(msg.epoch) && msg.seq <= t.delivered;
    if !stale {
        t.buffer.insert(msg.seq, msg);
    }
}

/// Handles one message in turn: delivers it, drops a duplicate, or holds it and reads the gap.
fn process<O: NodeOut>(topic: &str, t: &mut Topic, msg: ChannelMessage, out: &mut O) {
    match t.epoch {
        None => t.epoch = Some(msg.epoch),
        Some(epoch) if epoch != msg.epoch => reset(topic, t, msg.epoch, 0, out),
        Some(_) => {}
    }
    if msg.seq <= t.delivered {
        out.count(NodeEvent::Duplicate, 1);
        return;
    }
    if msg.seq == t.delivered + 1 {
        deliver(topic, t, msg.seq, &msg.payload, out);
        return;
    }
    let to = msg.seq - 1;
    t.buffer.insert(msg.seq, msg);
    start_fetch(topic, t, to, out);
}

/// Delivers held messages that are next in turn, until a gap needs a stream read.
fn drain<O: NodeOut>(topic: &str, t: &mut Topic, out: &mut O) {
    while t.live && t.fetching.is_none() && t.reading_for.is_empty() {
        let Some((_, msg)) = t.buffer.pop_first() else {
            return;
        };
        process(topic, t, msg, out);
    }
}

/// Delivers buffered messages of the current epoch up to `to`, announcing holes as lost.
fn deliver_run<O: NodeOut>(topic: &str, t: &mut Topic, to: u64, out: &mut O) {
    while t.delivered < to {
        let Some(entry) = t.buffer.first_entry() else {
            return;
        };
        if *entry.key() > to || t.epoch != Some(entry.get().epoch) {
            return;
        }
        let msg = entry.remove();
        if msg.seq <= t.delivered {
            continue;
        }
        if msg.seq > t.delivered + 1 {
            lost(topic, t, msg.seq - 1, out);
        }
        deliver(topic, t, msg.seq, &msg.payload, out);
    }
}

fn start_fetch<O: NodeOut>(topic: &str, t: &mut Topic, to: u64, out: &mut O) {
    let from = t.delivered + 1;
    let to = to.min(t.delivered + FETCH_BATCH);
    t.fetching = Some(to);
    out.fetch(topic, from, to);
}

/// The topic's messages up to `to` are gone: its subscribers are told how many they missed.
fn lost<O: NodeOut>(topic: &str, t: &mut Topic, to: u64, out: &mut O) {
    let count = to - t.delivered;
    out.count(NodeEvent::Lost, count);
    let frame = envelope::dropped_frame(topic, count);
    for &shard in &t.shards {
        out.deliver(shard, topic, frame.clone(), t.epoch);
    }
    t.delivered = to;
}

/// The topic came back as a new incarnation (`epoch`), delivery going on after `seq`.
fn reset<O: NodeOut>(topic: &str, t: &mut Topic, epoch: Epoch, seq: u64, out: &mut O) {
    out.count(NodeEvent::EpochReset, 1);
    let frame = envelope::epoch_frame(topic, epoch, seq);
    for &shard in &t.shards {
        out.deliver(shard, topic, frame.clone(), Some(epoch));
    }
    t.epoch = Some(epoch);
    t.delivered = seq;
    t.buffer.retain(|_, m| m.epoch == epoch);
    for h in std::mem::take(&mut t.held) {
        out.answer(h.reply, h.seq, h.epoch);
    }
}

/// One frame for the message, built once and shared by every interested shard.
fn deliver<O: NodeOut>(topic: &str, t: &mut Topic, seq: u64, payload: &Payload, out: &mut O) {
    let Some(frame) = frame_of(topic, seq, payload) else {
        // Not publishable through crier; someone else wrote it. Skipped, not a gap.
        t.delivered = seq;
        return;
    };
    for &shard in &t.shards {
        out.deliver(shard, topic, frame.clone(), t.epoch);
    }
    t.delivered = seq;
    while t.held.front().is_some_and(|h| h.seq <= seq) {
        if let Some(h) = t.held.pop_front() {
            out.answer(h.reply, h.seq, h.epoch);
        }
    }
}

#[cfg(test)]
mod tests;
