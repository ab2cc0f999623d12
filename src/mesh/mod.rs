//! The only cross-thread code in crier: the messages shards send each other, one inbox per
//! shard bounded in bytes, and wake-ups that happen only when the receiving shard sleeps.
//!
//! A shard never blocks on another. Messages are gathered in a per-peer outbox during a loop
//! turn and handed over as one batch at its end (one channel operation and at most one
//! wake-up per peer per turn). Each inbox counts the bytes it holds in an atomic (every
//! message weighs its payload or frame plus [`MESSAGE_OVERHEAD_BYTES`]): the sender adds a
//! batch's weight when it hands the batch over, the receiver takes it away once it has
//! handled it. Over the budget (`--inbox-budget-bytes`):
//! - data (publishes, deliveries) is handed back to the caller, who answers the publisher
//!   `overloaded` or, for a delivery, sends the subscribers' shard a `Dropped` count, so a
//!   skipped seq is always announced;
//! - control messages (interest, confirmations, drop counts, publish answers) may use up to
//!   twice the budget, because losing one would corrupt state; past that they stay in the
//!   outbox, coalesced per topic (so what waits is bounded by the topics, not by the
//!   traffic), and are retried after a short back-off, never in a spin.
//!
//! A message kept for a retry holds back everything after it for that peer (data behind it is
//! refused), so the order per peer is the order of sending.

use std::collections::HashMap;
use std::sync::atomic::{fence, AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use crossbeam_channel::{Receiver, Sender};
use mio::Waker;
use serde_json::value::RawValue;

use crate::broker::history::{Epoch, Resumed, Since};
/// What a message weighs in an inbox besides its payload: the message itself, its batch slot
/// and the allocator's rounding, rounded up.
pub const MESSAGE_OVERHEAD_BYTES: usize = 64;
use crate::broker::history::StoredFrame;
use crate::proto::deflate::DeliveryFrames;

/// A connection on some shard. `generation` tells a reused slab slot from the connection a
/// reply was meant for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnRef {
    pub shard: u16,
    pub key: u32,
    pub generation: u32,
}

/// Who is waiting to hear that a publish was sequenced.
#[derive(Debug)]
pub enum ReplyTo {
    /// Nobody asked (a command without `id`).
    Nobody,
    /// A WebSocket command with an `id`: answer `{"op":"ack","id":...,"seq":N}`.
    WebSocket { conn: ConnRef, id: Box<RawValue> },
    /// `POST /publish/<topic>`: answer `200 {"seq":N}`.
    Http { conn: ConnRef },
}

impl ReplyTo {
    fn weight(&self) -> usize {
        match self {
            ReplyTo::WebSocket { id, .. } => id.get().len(),
            ReplyTo::Nobody | ReplyTo::Http { .. } => 0,
        }
    }
}

/// What a publish carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload {
    /// The raw JSON text of the command's `data`, delivered verbatim in a text frame.
    Json(Bytes),
    /// Raw bytes, delivered in a binary frame.
    Binary(Bytes),
}

impl Payload {
    fn len(&self) -> usize {
        match self {
            Payload::Json(bytes) | Payload::Binary(bytes) => bytes.len(),
        }
    }
}

/// A message from one shard to another.
#[derive(Debug)]
pub enum MeshMsg {
    /// To a topic's owner: sequence this and fan it out.
    Publish {
        topic: Box<str>,
        payload: Payload,
        reply: ReplyTo,
    },
    /// From a topic's owner: write this prepared frame (or its deflated twin, to subscribers
    /// that negotiated permessage-deflate) to your subscribers of `topic`.
    Deliver {
        topic: Box<str>,
        frames: DeliveryFrames,
    },
    /// To a topic's owner: shard `shard` now has (or no longer has) subscribers of `topic`.
    /// The owner answers `InterestConfirmed` with `confirms` once it is recorded (0: no
    /// answer). Retried messages for one topic coalesce: the last state wins, confirms add up.
    Interest {
        topic: Box<str>,
        shard: u16,
        interested: bool,
        confirms: u32,
    },
    /// From a topic's owner: `count` interests you sent are recorded; pending subscribe acks
    /// may go once all are.
    InterestConfirmed { topic: Box<str>, count: u32 },
    /// From a topic's owner: `count` deliveries of `topic` could not be handed to you (your
    /// inbox was over its budget); your subscribers must hear of the gap.
    Dropped { topic: Box<str>, count: u64 },
    /// From a topic's owner: the publish was sequenced (`seq` 0: the topic had no state, no
    /// subscriber and no kept history; then there is no epoch).
    Published {
        reply: ReplyTo,
        seq: u64,
        epoch: Option<Epoch>,
    },
    /// To a topic's owner: connection `conn` subscribes to `topic` resuming from `since`.
    /// Registers `conn.shard`'s interest like `Interest`; the owner answers `Replay`, after
    /// every `Deliver` of the topic up to the top it reports and before any later one.
    Resume {
        topic: Box<str>,
        conn: ConnRef,
        id: Option<Box<RawValue>>,
        since: Since,
        /// This resume carries the shard's first interest in the topic: its `Replay` counts as
        /// the `InterestConfirmed`.
        confirms_interest: bool,
    },
    /// From a topic's owner: the answer to `Resume`, with the frames to replay (clones of the
    /// kept `Bytes`). A control message: it is retried, never dropped, on a full inbox.
    Replay {
        topic: Box<str>,
        conn: ConnRef,
        id: Option<Box<RawValue>>,
        resumed: Resumed<DeliveryFrames>,
        confirms_interest: bool,
    },
    /// From the Redis engine's thread: the publish could not be carried out (the engine's
    /// backend is unavailable); the publisher hears `engine_unavailable`.
    PublishFailed { reply: ReplyTo },
}

impl MeshMsg {
    /// Data messages may be refused (and counted) when a peer is full; control messages are
    /// retried instead.
    fn is_data(&self) -> bool {
        matches!(self, MeshMsg::Publish { .. } | MeshMsg::Deliver { .. })
    }

    /// What replaces a refused data message in the stream to its peer: a refused `Deliver`
    /// becomes a `Dropped` count at the very same place, so the peer's subscribers hear of
    /// the gap before any later message of the topic, and never for a later incarnation of
    /// it (a confirmation queued after the `Deliver` stays after the count).
    pub fn refusal_notice(&self) -> Option<MeshMsg> {
        match self {
            MeshMsg::Deliver { topic, .. } => Some(MeshMsg::Dropped {
                topic: topic.clone(),
                count: 1,
            }),
            _ => None,
        }
    }

    /// The bytes this message holds while it waits in an inbox.
    pub fn weight(&self) -> usize {
        MESSAGE_OVERHEAD_BYTES
            + match self {
                MeshMsg::Publish {
                    topic,
                    payload,
                    reply,
                } => topic.len() + payload.len() + reply.weight(),
                MeshMsg::Deliver { topic, frames } => topic.len() + frames.stored_bytes(),
                MeshMsg::Interest { topic, .. }
                | MeshMsg::InterestConfirmed { topic, .. }
                | MeshMsg::Dropped { topic, .. } => topic.len(),
                MeshMsg::Published { reply, .. } | MeshMsg::PublishFailed { reply } => {
                    reply.weight()
                }
                MeshMsg::Resume { topic, .. } => topic.len(),
                MeshMsg::Replay { topic, resumed, .. } => {
                    topic.len()
                        + resumed
                            .replay
                            .iter()
                            .map(StoredFrame::stored_bytes)
                            .sum::<usize>()
                }
            }
    }
}

/// One hand-over: the messages and their total weight (released by the receiver).
#[derive(Debug)]
pub struct Batch {
    pub msgs: Vec<MeshMsg>,
    pub weight: usize,
}

/// The sending side of one shard's inbox, shared by every other shard.
#[derive(Debug)]
pub struct PeerLink {
    sender: Sender<Batch>,
    waker: Arc<Waker>,
    shared: Arc<InboxShared>,
}

/// What both ends of an inbox see.
#[derive(Debug)]
struct InboxShared {
    /// Bytes handed over and not yet handled.
    weight: AtomicUsize,
    sleeping: AtomicBool,
    shutdown: AtomicBool,
}

impl PeerLink {
    /// Hands a batch over and wakes the peer if it sleeps. Fails only when the peer is gone.
    fn send_batch(&self, batch: Batch) -> Result<(), Batch> {
        let weight = batch.weight;
        self.shared.weight.fetch_add(weight, Ordering::AcqRel);
        match self.sender.send(batch) {
            Ok(()) => {
                // Pairs with the fence in `Mesh::prepare_to_sleep`: either the peer sees our
                // batch when it checks its inbox, or we see it asleep here and wake it.
                fence(Ordering::SeqCst);
                if self.shared.sleeping.swap(false, Ordering::SeqCst) {
                    // A failed wake-up means the peer's poll is gone: it is shutting down.
                    let _ = self.waker.wake();
                }
                Ok(())
            }
            Err(crossbeam_channel::SendError(batch)) => {
                self.shared.weight.fetch_sub(weight, Ordering::AcqRel);
                Err(batch)
            }
        }
    }

    /// Hands `msgs` from a sender outside the shards (the Redis engine's thread) to this
    /// shard within `budget_bytes`, with the rules of [`Mesh::flush`]: data past the budget is
    /// refused (returned in `refused`; a refused `Deliver` leaves its `Dropped` notice in its
    /// place), control messages past twice the budget come back, coalesced, in `kept` for the
    /// caller to offer again later, ahead of anything newer.
    pub fn offer(&self, msgs: Vec<MeshMsg>, budget_bytes: usize) -> Offered {
        let mut offered = Offered::default();
        if msgs.is_empty() {
            return offered;
        }
        let budget = budget_bytes.max(1);
        let load = self.shared.weight.load(Ordering::Acquire);
        let total: usize = msgs.iter().map(MeshMsg::weight).sum();
        let mut refused = Vec::new();
        let batch = if load + total <= budget {
            Batch {
                msgs,
                weight: total,
            }
        } else {
            let (batch, kept) = split(msgs, 0, load, budget, &mut refused);
            offered.kept = kept;
            batch
        };
        offered.refused = refused.into_iter().map(|(_, msg)| msg).collect();
        if !batch.msgs.is_empty() {
            if let Err(batch) = self.send_batch(batch) {
                // The shard is gone (the process is going down): nothing will read it.
                offered
                    .refused
                    .extend(batch.msgs.into_iter().filter(MeshMsg::is_data));
                offered.kept.clear();
            }
        }
        offered
    }

    /// Asks the shard to stop accepting and drain (the server handle's shutdown).
    pub fn request_shutdown(&self) {
        self.shared.shutdown.store(true, Ordering::SeqCst);
        // A failed wake-up means the shard is gone already.
        let _ = self.waker.wake();
    }
}

/// Builds the inbox of one shard: the link others send through and the shard's receiving end.
/// `budget_bytes` bounds the data it holds (control messages may use twice that).
pub fn inbox(budget_bytes: usize, waker: Arc<Waker>) -> (PeerLink, Inbox) {
    // Unbounded as a channel: the byte budget, checked by the senders, is the bound.
    let (sender, receiver) = crossbeam_channel::unbounded();
    let shared = Arc::new(InboxShared {
        weight: AtomicUsize::new(0),
        sleeping: AtomicBool::new(false),
        shutdown: AtomicBool::new(false),
    });
    (
        PeerLink {
            sender,
            waker,
            shared: shared.clone(),
        },
        Inbox {
            receiver,
            shared,
            budget_bytes: budget_bytes.max(1),
        },
    )
}

/// The receiving side of one shard's inbox.
#[derive(Debug)]
pub struct Inbox {
    receiver: Receiver<Batch>,
    shared: Arc<InboxShared>,
    budget_bytes: usize,
}

/// What [`PeerLink::offer`] could not hand over.
#[derive(Debug, Default)]
pub struct Offered {
    /// Data refused by the full inbox (deliveries already announced by a `Dropped`).
    pub refused: Vec<MeshMsg>,
    /// Control messages to offer again, first, next time.
    pub kept: Vec<MeshMsg>,
}

/// What one `Mesh::flush` did.
#[derive(Debug, Default)]
pub struct FlushOutcome {
    /// Batches handed over.
    pub batches_sent: u64,
    /// Messages handed over.
    pub messages_sent: u64,
    /// Times a peer's inbox was over its budget.
    pub inbox_full: u64,
    /// Data messages not handed over, with the peer they were for: the caller counts them and
    /// tells publishers (a refused delivery is already announced: see
    /// [`MeshMsg::refusal_notice`]). Control messages are kept for the next flush instead.
    pub refused: Vec<(usize, MeshMsg)>,
}

/// One shard's view of the mesh: its inbox and an outbox per peer.
#[derive(Debug)]
pub struct Mesh {
    me: usize,
    peers: Arc<[PeerLink]>,
    inbox: Inbox,
    outboxes: Vec<Vec<MeshMsg>>,
    /// The weight of each outbox, kept as messages are added.
    outbox_weights: Vec<usize>,
    /// Something was queued since the last flush (not only retries wait).
    fresh: bool,
}

impl Mesh {
    pub fn new(me: usize, peers: Arc<[PeerLink]>, inbox: Inbox) -> Mesh {
        let outboxes = (0..peers.len()).map(|_| Vec::new()).collect();
        Mesh {
            me,
            outbox_weights: vec![0; peers.len()],
            peers,
            inbox,
            outboxes,
            fresh: false,
        }
    }

    pub fn shard_count(&self) -> usize {
        self.peers.len()
    }

    /// Queues a message for `to` (never this shard); it leaves at the next `flush`.
    pub fn send(&mut self, to: usize, msg: MeshMsg) {
        debug_assert_ne!(to, self.me, "a shard handles its own work directly");
        self.outbox_weights[to] += msg.weight();
        self.outboxes[to].push(msg);
        self.fresh = true;
    }

    /// Whether something was queued since the last flush (then the loop must not sleep).
    pub fn has_fresh(&self) -> bool {
        self.fresh
    }

    /// Whether anything waits in an outbox. Right after a flush that is only control
    /// messages a full peer did not take: the loop retries them after a short back-off.
    pub fn has_pending(&self) -> bool {
        self.outboxes.iter().any(|o| !o.is_empty())
    }

    /// Hands every outbox to its peer as one batch, within the peer's byte budget.
    pub fn flush(&mut self) -> FlushOutcome {
        let mut outcome = FlushOutcome::default();
        self.fresh = false;
        for to in 0..self.outboxes.len() {
            if self.outboxes[to].is_empty() {
                continue;
            }
            let budget = self.inbox.budget_bytes;
            let load = self.peers[to].shared.weight.load(Ordering::Acquire);
            let total = self.outbox_weights[to];
            let batch = if load + total <= budget {
                // The usual case: everything fits.
                self.outbox_weights[to] = 0;
                Batch {
                    msgs: std::mem::take(&mut self.outboxes[to]),
                    weight: total,
                }
            } else {
                outcome.inbox_full += 1;
                self.split(to, load, budget, &mut outcome.refused)
            };
            if batch.msgs.is_empty() {
                continue;
            }
            let count = batch.msgs.len() as u64;
            match self.peers[to].send_batch(batch) {
                Ok(()) => {
                    outcome.batches_sent += 1;
                    outcome.messages_sent += count;
                }
                Err(batch) => {
                    // The peer is gone (its thread ended): nothing will ever read this. The
                    // process is going down (see `server`); data is refused, the rest dropped.
                    self.outboxes[to].clear();
                    self.outbox_weights[to] = 0;
                    for msg in batch.msgs {
                        if msg.is_data() {
                            outcome.refused.push((to, msg));
                        }
                    }
                }
            }
        }
        outcome
    }

    /// Splits the outbox for `to`, whose inbox holds `load` bytes, into what may go now, data
    /// refused (into `refused`) and control messages kept (coalesced) for a retry.
    #[cold]
    fn split(
        &mut self,
        to: usize,
        load: usize,
        budget: usize,
        refused: &mut Vec<(usize, MeshMsg)>,
    ) -> Batch {
        let msgs = std::mem::take(&mut self.outboxes[to]);
        let (batch, kept) = split(msgs, to, load, budget, refused);
        self.outbox_weights[to] = kept.iter().map(MeshMsg::weight).sum();
        self.outboxes[to] = kept;
        batch
    }

    /// The next batch in this shard's inbox, if any. Call [`Mesh::release`] with its weight
    /// once it is handled.
    pub fn try_recv(&self) -> Option<Batch> {
        self.inbox.receiver.try_recv().ok()
    }

    /// A received batch of `weight` bytes has been handled: its room is free again.
    pub fn release(&self, weight: usize) {
        self.inbox.shared.weight.fetch_sub(weight, Ordering::AcqRel);
    }

    /// Bytes waiting in this shard's inbox (a gauge).
    pub fn inbox_bytes(&self) -> usize {
        self.inbox.shared.weight.load(Ordering::Relaxed)
    }

    /// Whether the server handle asked this shard to drain.
    pub fn shutdown_requested(&self) -> bool {
        self.inbox.shared.shutdown.load(Ordering::Relaxed)
    }

    /// Announces that this shard is about to sleep in `poll`. Returns false (and stays awake)
    /// when a batch is already waiting, so no wake-up can be missed.
    pub fn prepare_to_sleep(&self) -> bool {
        self.inbox.shared.sleeping.store(true, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        if self.inbox.receiver.is_empty() {
            true
        } else {
            self.inbox.shared.sleeping.store(false, Ordering::SeqCst);
            false
        }
    }

    /// Called after `poll` returns.
    pub fn awake(&self) {
        self.inbox.shared.sleeping.store(false, Ordering::Relaxed);
    }
}

/// Splits `msgs` for peer `to`, whose inbox holds `load` bytes, into what may go now within
/// `budget`, data refused (into `refused`, a refused `Deliver` replaced by its notice) and
/// control messages kept (coalesced) for a retry.
fn split(
    msgs: Vec<MeshMsg>,
    to: usize,
    load: usize,
    budget: usize,
    refused: &mut Vec<(usize, MeshMsg)>,
) -> (Batch, Vec<MeshMsg>) {
    let control_budget = budget.saturating_mul(2);
    let mut admitted = Vec::new();
    let mut weight = 0;
    let mut kept = Vec::new();
    let mut holding = false;
    for msg in msgs {
        let empty = load + weight == 0;
        let control = if msg.is_data() {
            let w = msg.weight();
            if !holding && (empty || load + weight + w <= budget) {
                weight += w;
                admitted.push(msg);
                continue;
            }
            let notice = msg.refusal_notice();
            refused.push((to, msg));
            match notice {
                Some(notice) => notice,
                None => continue,
            }
        } else {
            msg
        };
        let w = control.weight();
        if !holding && (empty || load + weight + w <= control_budget) {
            weight += w;
            admitted.push(control);
        } else {
            holding = true;
            kept.push(control);
        }
    }
    (
        Batch {
            msgs: admitted,
            weight,
        },
        coalesce(kept),
    )
}

/// A topic's control messages waiting for one peer, merged.
#[derive(Debug)]
enum Waiting {
    /// A message without a topic (a publish answer), kept as it is.
    Other(MeshMsg),
    /// Interest in a topic the peer owns: the last state, the confirmations asked for.
    Interest {
        topic: Box<str>,
        shard: u16,
        interested: bool,
        confirms: u32,
    },
    /// About a topic this shard owns: confirmations, then the deliveries skipped since the
    /// last of them (skips before a confirmation are dropped: the peer ignores them anyway,
    /// its new subscribers are not owed the old incarnation's messages).
    Owned {
        topic: Box<str>,
        confirms: u32,
        dropped: u64,
    },
}

/// Merges control messages per topic, so retries are bounded by the topics, not the traffic.
/// Each topic keeps the position of its first message; a topic's messages to one peer all
/// flow one way (the peer owns it, or this shard does), so merging never reorders a topic.
fn coalesce(kept: Vec<MeshMsg>) -> Vec<MeshMsg> {
    if kept.len() < 2 {
        return kept;
    }
    let mut merged: Vec<Waiting> = Vec::with_capacity(kept.len());
    let mut at: HashMap<Box<str>, usize> = HashMap::new();
    for msg in kept {
        let (topic, entry) = match msg {
            MeshMsg::Interest {
                topic,
                shard,
                interested,
                confirms,
            } => (
                topic.clone(),
                Waiting::Interest {
                    topic,
                    shard,
                    interested,
                    confirms,
                },
            ),
            MeshMsg::InterestConfirmed { topic, count } => (
                topic.clone(),
                Waiting::Owned {
                    topic,
                    confirms: count,
                    dropped: 0,
                },
            ),
            MeshMsg::Dropped { topic, count } => (
                topic.clone(),
                Waiting::Owned {
                    topic,
                    confirms: 0,
                    dropped: count,
                },
            ),
            other => {
                // A later message of the same topic must not merge in front of this one.
                if let MeshMsg::Resume { topic, .. } | MeshMsg::Replay { topic, .. } = &other {
                    at.remove(topic);
                }
                merged.push(Waiting::Other(other));
                continue;
            }
        };
        match at.get(&topic).map(|&i| &mut merged[i]) {
            Some(Waiting::Interest {
                interested,
                confirms,
                ..
            }) => {
                if let Waiting::Interest {
                    interested: now,
                    confirms: more,
                    ..
                } = entry
                {
                    *interested = now;
                    *confirms = confirms.saturating_add(more);
                }
            }
            Some(Waiting::Owned {
                confirms, dropped, ..
            }) => {
                if let Waiting::Owned {
                    confirms: more,
                    dropped: skipped,
                    ..
                } = entry
                {
                    if more > 0 {
                        *confirms = confirms.saturating_add(more);
                        *dropped = 0;
                    }
                    *dropped += skipped;
                }
            }
            Some(Waiting::Other(_)) | None => {
                at.insert(topic, merged.len());
                merged.push(entry);
            }
        }
    }
    let mut out = Vec::with_capacity(merged.len());
    for entry in merged {
        match entry {
            Waiting::Other(msg) => out.push(msg),
            Waiting::Interest {
                topic,
                shard,
                interested,
                confirms,
            } => out.push(MeshMsg::Interest {
                topic,
                shard,
                interested,
                confirms,
            }),
            Waiting::Owned {
                topic,
                confirms,
                dropped,
            } => {
                if confirms > 0 && dropped > 0 {
                    out.push(MeshMsg::InterestConfirmed {
                        topic: topic.clone(),
                        count: confirms,
                    });
                    out.push(MeshMsg::Dropped {
                        topic,
                        count: dropped,
                    });
                } else if confirms > 0 {
                    out.push(MeshMsg::InterestConfirmed {
                        topic,
                        count: confirms,
                    });
                } else {
                    out.push(MeshMsg::Dropped {
                        topic,
                        count: dropped,
                    });
                }
            }
        }
    }
    out
}
#[cfg(test)]
mod tests {
    use super::*;
    use mio::{Events, Poll, Token};
    use std::time::Duration;

    fn two_shards(budget_bytes: usize) -> (Vec<Mesh>, Vec<Poll>) {
        let polls: Vec<Poll> = (0..2).map(|_| Poll::new().unwrap()).collect();
        let mut links = Vec::new();
        let mut inboxes = Vec::new();
        for poll in &polls {
            let waker = Arc::new(Waker::new(poll.registry(), Token(0)).unwrap());
            let (link, inbox) = inbox(budget_bytes, waker);
            links.push(link);
            inboxes.push(inbox);
        }
        let links: Arc<[PeerLink]> = links.into();
        let meshes = inboxes
            .into_iter()
            .enumerate()
            .map(|(i, inbox)| Mesh::new(i, links.clone(), inbox))
            .collect();
        (meshes, polls)
    }

    fn deliver(n: u8, bytes: usize) -> MeshMsg {
        MeshMsg::Deliver {
            topic: "t".into(),
            frames: DeliveryFrames::plain(Bytes::from(vec![n; bytes])),
        }
    }

    fn interest(topic: &str, interested: bool) -> MeshMsg {
        MeshMsg::Interest {
            topic: topic.into(),
            shard: 0,
            interested,
            confirms: u32::from(interested),
        }
    }

    #[test]
    fn a_turns_messages_travel_as_one_batch_and_wake_a_sleeper() {
        let (mut meshes, mut polls) = two_shards(1 << 20);
        assert!(meshes[1].prepare_to_sleep());
        meshes[0].send(1, deliver(1, 1));
        meshes[0].send(1, deliver(2, 1));
        let outcome = meshes[0].flush();
        assert_eq!((outcome.batches_sent, outcome.messages_sent), (1, 2));
        let mut events = Events::with_capacity(4);
        polls[1]
            .poll(&mut events, Some(Duration::from_secs(5)))
            .unwrap();
        assert!(!events.is_empty(), "the sleeping shard was woken");
        meshes[1].awake();
        let batch = meshes[1].try_recv().unwrap();
        assert_eq!(batch.msgs.len(), 2);
        assert_eq!(meshes[1].inbox_bytes(), batch.weight);
        meshes[1].release(batch.weight);
        assert_eq!(meshes[1].inbox_bytes(), 0);
    }

    #[test]
    fn a_shard_with_mail_waiting_does_not_go_to_sleep() {
        let (mut meshes, _polls) = two_shards(1 << 20);
        meshes[0].send(1, deliver(1, 1));
        let _ = meshes[0].flush();
        assert!(!meshes[1].prepare_to_sleep());
    }

    #[test]
    fn the_budget_counts_bytes_and_refuses_data_past_it() {
        let (mut meshes, _polls) = two_shards(10_000);
        // An empty inbox takes a message of any size, so a big one is never starved.
        meshes[0].send(1, deliver(1, 50_000));
        let first = meshes[0].flush();
        assert_eq!((first.messages_sent, first.refused.len()), (1, 0));
        assert!(meshes[1].inbox_bytes() >= 50_000);
        // Now it is over its budget: data is refused with the peer it was for.
        meshes[0].send(1, deliver(2, 10));
        let second = meshes[0].flush();
        assert_eq!((second.inbox_full, second.refused.len()), (1, 1));
        assert_eq!(second.refused[0].0, 1);
        // In its place waits a drop count for the peer's subscribers.
        assert!(matches!(
            &meshes[0].outboxes[1][..],
            [MeshMsg::Dropped { count: 1, .. }]
        ));
        // Handled and released: room again.
        let batch = meshes[1].try_recv().unwrap();
        meshes[1].release(batch.weight);
        meshes[0].send(1, deliver(3, 9_000));
        meshes[0].send(1, deliver(4, 9_000));
        let third = meshes[0].flush();
        assert_eq!((third.messages_sent, third.refused.len()), (3, 1));
        let batch = meshes[1].try_recv().unwrap();
        assert!(matches!(
            &batch.msgs[..],
            [
                MeshMsg::Dropped { .. },
                MeshMsg::Deliver { .. },
                MeshMsg::Dropped { .. }
            ]
        ));
    }

    #[test]
    fn control_messages_wait_coalesced_and_hold_back_what_follows() {
        let (mut meshes, _polls) = two_shards(100);
        meshes[0].send(1, deliver(1, 1_000));
        assert_eq!(meshes[0].flush().messages_sent, 1);
        // Over twice the budget: control waits, data behind it is refused.
        for _ in 0..1000 {
            meshes[0].send(1, interest("a", true));
            meshes[0].send(1, interest("a", false));
            meshes[0].send(1, interest("b", true));
            meshes[0].send(
                1,
                MeshMsg::Dropped {
                    topic: "mine".into(),
                    count: 1,
                },
            );
        }
        meshes[0].send(1, deliver(2, 1));
        let outcome = meshes[0].flush();
        assert_eq!(outcome.messages_sent, 0);
        assert_eq!(outcome.refused.len(), 1);
        assert!(meshes[0].has_pending() && !meshes[0].has_fresh());
        // One per topic: "a", "b", "mine", and the refused delivery's drop count for "t".
        assert_eq!(meshes[0].outboxes[1].len(), 4, "one per topic waits");
        match &meshes[0].outboxes[1][0] {
            MeshMsg::Interest {
                topic,
                interested,
                confirms,
                ..
            } => assert_eq!((&**topic, *interested, *confirms), ("a", false, 1000)),
            other => panic!("unexpected {other:?}"),
        }
        match &meshes[0].outboxes[1][2] {
            MeshMsg::Dropped { count, .. } => assert_eq!(*count, 1000),
            other => panic!("unexpected {other:?}"),
        }
        // The peer catches up: the retries go, in their order.
        let batch = meshes[1].try_recv().unwrap();
        meshes[1].release(batch.weight);
        // (Twice the budget of 100 holds three of them; the fourth goes next time.)
        assert_eq!(meshes[0].flush().messages_sent, 3);
        let batch = meshes[1].try_recv().unwrap();
        meshes[1].release(batch.weight);
        assert_eq!(meshes[0].flush().messages_sent, 1);
        assert!(!meshes[0].has_pending());
    }

    #[test]
    fn a_confirmation_supersedes_the_skips_before_it() {
        let kept = vec![
            MeshMsg::Dropped {
                topic: "t".into(),
                count: 2,
            },
            MeshMsg::InterestConfirmed {
                topic: "t".into(),
                count: 1,
            },
            MeshMsg::Dropped {
                topic: "t".into(),
                count: 3,
            },
        ];
        let out = coalesce(kept);
        assert_eq!(out.len(), 2);
        assert!(matches!(
            out[0],
            MeshMsg::InterestConfirmed { count: 1, .. }
        ));
        assert!(matches!(out[1], MeshMsg::Dropped { count: 3, .. }));
    }

    #[test]
    fn shutdown_is_a_flag_not_a_message() {
        let (meshes, _polls) = two_shards(100);
        assert!(!meshes[1].shutdown_requested());
        meshes[0].peers[1].request_shutdown();
        assert!(meshes[1].shutdown_requested());
        assert!(meshes[1].try_recv().is_none());
    }
}
