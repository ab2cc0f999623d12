//! The only cross-thread code in crier: the messages shards send each other, one bounded
//! inbox per shard, and wake-ups that happen only when the receiving shard sleeps.
//!
//! A shard never blocks on another. Messages are gathered in a per-peer outbox during a loop
//! turn and handed over as one batch at its end (one channel operation and at most one
//! wake-up per peer per turn). When a peer's inbox is full, control messages (interest
//! changes, acknowledgements) stay in the outbox and are retried next turn, because losing one
//! would corrupt state; data messages (publishes, deliveries) are handed back to the caller,
//! who counts them and tells the publisher, because retrying them would grow memory without
//! bound. A full inbox is therefore a counted condition, never a deadlock.

use std::sync::atomic::{fence, AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use crossbeam_channel::{Receiver, Sender, TrySendError};
use mio::Waker;
use serde_json::value::RawValue;

use crate::broker::history::{Epoch, Page, Resumed, Since};

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

/// What a publish carries.
#[derive(Debug, Clone)]
pub enum Payload {
    /// The raw JSON text of the command's `data`, delivered verbatim in a text frame.
    Json(Bytes),
    /// Raw bytes, delivered in a binary frame.
    Binary(Bytes),
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
    /// From a topic's owner: write this prepared frame to your subscribers of `topic`. `epoch`
    /// is the topic incarnation's (a subscriber disconnected as slow is told where to resume).
    Deliver {
        topic: Box<str>,
        frame: Bytes,
        epoch: Epoch,
    },
    /// To a topic's owner: shard `shard` now has (or no longer has) subscribers of `topic`.
    /// With `confirm`, the owner answers `InterestConfirmed` once it is recorded.
    Interest {
        topic: Box<str>,
        shard: u16,
        interested: bool,
        confirm: bool,
    },
    /// From a topic's owner: the interest you sent is recorded; pending subscribe acks may go.
    InterestConfirmed { topic: Box<str> },
    /// From a topic's owner: the publish was sequenced (`seq` 0: the topic had no subscribers
    /// and keeps no history; then there is no epoch).
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
        resumed: Resumed<Bytes>,
        confirms_interest: bool,
    },
    /// To a topic's owner: `GET /history` on connection `conn` asks for up to `limit` kept
    /// messages of `topic` after seq `after`. A data message: on a full inbox it is handed back
    /// and the request is answered 503 `overloaded`.
    HistoryRead {
        topic: Box<str>,
        after: u64,
        limit: usize,
        conn: ConnRef,
    },
    /// From a topic's owner: the answer to `HistoryRead` (clones of the kept `Bytes`; `None`:
    /// the topic has no state). A control message: retried, never dropped.
    HistoryPage {
        conn: ConnRef,
        page: Option<Page<Bytes>>,
    },
    /// From the server handle: stop accepting and drain.
    Shutdown,
}

impl MeshMsg {
    /// Data messages may be dropped (and counted) when a peer is full; control messages are
    /// retried instead.
    fn is_data(&self) -> bool {
        matches!(
            self,
            MeshMsg::Publish { .. } | MeshMsg::Deliver { .. } | MeshMsg::HistoryRead { .. }
        )
    }
}

/// The sending side of one shard's inbox, shared by every other shard.
#[derive(Debug)]
pub struct PeerLink {
    sender: Sender<Vec<MeshMsg>>,
    waker: Arc<Waker>,
    sleeping: Arc<AtomicBool>,
}

impl PeerLink {
    /// Hands a batch over and wakes the peer if it sleeps. On a full inbox the batch comes back.
    fn send_batch(&self, batch: Vec<MeshMsg>) -> Result<(), Vec<MeshMsg>> {
        match self.sender.try_send(batch) {
            Ok(()) => {
                // Pairs with the fence in `Mesh::prepare_to_sleep`: either the peer sees our
                // batch when it checks its inbox, or we see it asleep here and wake it.
                fence(Ordering::SeqCst);
                if self.sleeping.swap(false, Ordering::SeqCst) {
                    // A failed wake-up means the peer's poll is gone: it is shutting down.
                    let _ = self.waker.wake();
                }
                Ok(())
            }
            Err(TrySendError::Full(batch)) | Err(TrySendError::Disconnected(batch)) => Err(batch),
        }
    }

    /// Sends one message right away, outside any loop turn (used by the server handle).
    pub fn send_now(&self, msg: MeshMsg) -> bool {
        self.send_batch(vec![msg]).is_ok()
    }
}

/// Builds the inbox of one shard: the link others send through and the shard's receiving end.
pub fn inbox(capacity: usize, waker: Arc<Waker>) -> (PeerLink, Inbox) {
    let (sender, receiver) = crossbeam_channel::bounded(capacity.max(1));
    let sleeping = Arc::new(AtomicBool::new(false));
    (
        PeerLink {
            sender,
            waker,
            sleeping: sleeping.clone(),
        },
        Inbox { receiver, sleeping },
    )
}

/// The receiving side of one shard's inbox.
#[derive(Debug)]
pub struct Inbox {
    receiver: Receiver<Vec<MeshMsg>>,
    sleeping: Arc<AtomicBool>,
}

/// What one `Mesh::flush` did.
#[derive(Debug, Default)]
pub struct FlushOutcome {
    /// Batches handed over.
    pub batches_sent: u64,
    /// Messages handed over.
    pub messages_sent: u64,
    /// Times a peer's inbox was full.
    pub inbox_full: u64,
    /// Data messages not delivered because a peer was full; the caller counts them and tells
    /// publishers. Control messages are kept for the next flush instead.
    pub refused: Vec<MeshMsg>,
}

/// One shard's view of the mesh: its inbox and an outbox per peer.
#[derive(Debug)]
pub struct Mesh {
    me: usize,
    peers: Arc<[PeerLink]>,
    inbox: Inbox,
    outboxes: Vec<Vec<MeshMsg>>,
}

impl Mesh {
    pub fn new(me: usize, peers: Arc<[PeerLink]>, inbox: Inbox) -> Mesh {
        let outboxes = (0..peers.len()).map(|_| Vec::new()).collect();
        Mesh {
            me,
            peers,
            inbox,
            outboxes,
        }
    }

    pub fn shard_count(&self) -> usize {
        self.peers.len()
    }

    /// Queues a message for `to` (never this shard); it leaves at the next `flush`.
    pub fn send(&mut self, to: usize, msg: MeshMsg) {
        debug_assert_ne!(to, self.me, "a shard handles its own work directly");
        self.outboxes[to].push(msg);
    }

    /// Whether anything waits in an outbox (then the loop must come back soon).
    pub fn has_pending(&self) -> bool {
        self.outboxes.iter().any(|o| !o.is_empty())
    }

    /// Hands every outbox to its peer as one batch.
    pub fn flush(&mut self) -> FlushOutcome {
        let mut outcome = FlushOutcome::default();
        for (to, outbox) in self.outboxes.iter_mut().enumerate() {
            if outbox.is_empty() {
                continue;
            }
            let batch = std::mem::take(outbox);
            let count = batch.len() as u64;
            match self.peers[to].send_batch(batch) {
                Ok(()) => {
                    outcome.batches_sent += 1;
                    outcome.messages_sent += count;
                }
                Err(batch) => {
                    outcome.inbox_full += 1;
                    for msg in batch {
                        if msg.is_data() {
                            outcome.refused.push(msg);
                        } else {
                            outbox.push(msg);
                        }
                    }
                }
            }
        }
        outcome
    }

    /// The next batch in this shard's inbox, if any.
    pub fn try_recv(&self) -> Option<Vec<MeshMsg>> {
        self.inbox.receiver.try_recv().ok()
    }

    /// Announces that this shard is about to sleep in `poll`. Returns false (and stays awake)
    /// when a batch is already waiting, so no wake-up can be missed.
    pub fn prepare_to_sleep(&self) -> bool {
        self.inbox.sleeping.store(true, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        if self.inbox.receiver.is_empty() {
            true
        } else {
            self.inbox.sleeping.store(false, Ordering::SeqCst);
            false
        }
    }

    /// Called after `poll` returns.
    pub fn awake(&self) {
        self.inbox.sleeping.store(false, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mio::{Events, Poll, Token};
    use std::time::Duration;

    fn two_shards(capacity: usize) -> (Vec<Mesh>, Vec<Poll>) {
        let polls: Vec<Poll> = (0..2).map(|_| Poll::new().unwrap()).collect();
        let mut links = Vec::new();
        let mut inboxes = Vec::new();
        for poll in &polls {
            let waker = Arc::new(Waker::new(poll.registry(), Token(0)).unwrap());
            let (link, inbox) = inbox(capacity, waker);
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

    fn deliver(n: u8) -> MeshMsg {
        MeshMsg::Deliver {
            topic: "t".into(),
            frame: Bytes::from(vec![n]),
            epoch: Epoch::parse("E").unwrap(),
        }
    }

    #[test]
    fn a_turns_messages_travel_as_one_batch_and_wake_a_sleeper() {
        let (mut meshes, mut polls) = two_shards(4);
        assert!(meshes[1].prepare_to_sleep());
        meshes[0].send(1, deliver(1));
        meshes[0].send(1, deliver(2));
        let outcome = meshes[0].flush();
        assert_eq!((outcome.batches_sent, outcome.messages_sent), (1, 2));
        let mut events = Events::with_capacity(4);
        polls[1]
            .poll(&mut events, Some(Duration::from_secs(5)))
            .unwrap();
        assert!(!events.is_empty(), "the sleeping shard was woken");
        meshes[1].awake();
        assert_eq!(meshes[1].try_recv().unwrap().len(), 2);
    }

    #[test]
    fn a_shard_with_mail_waiting_does_not_go_to_sleep() {
        let (mut meshes, _polls) = two_shards(4);
        meshes[0].send(1, deliver(1));
        let _ = meshes[0].flush();
        assert!(!meshes[1].prepare_to_sleep());
    }

    #[test]
    fn a_full_inbox_refuses_data_and_keeps_control_messages() {
        let (mut meshes, _polls) = two_shards(1);
        meshes[0].send(1, deliver(1));
        assert_eq!(meshes[0].flush().batches_sent, 1);
        meshes[0].send(1, deliver(2));
        meshes[0].send(
            1,
            MeshMsg::Interest {
                topic: "t".into(),
                shard: 0,
                interested: true,
                confirm: false,
            },
        );
        let outcome = meshes[0].flush();
        assert_eq!(outcome.inbox_full, 1);
        assert_eq!(outcome.refused.len(), 1);
        assert!(
            meshes[0].has_pending(),
            "the interest change waits for a retry"
        );
        assert_eq!(meshes[1].try_recv().unwrap().len(), 1);
        let retry = meshes[0].flush();
        assert_eq!(retry.messages_sent, 1);
        assert!(matches!(
            meshes[1].try_recv().unwrap()[0],
            MeshMsg::Interest { .. }
        ));
    }
}
