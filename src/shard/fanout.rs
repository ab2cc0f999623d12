//! Publish and fan-out on one shard: routing a publish to its topic's owner, sequencing it
//! there into ONE prepared frame, handing that same `Bytes` to each interested shard, and
//! queueing it on each local subscriber with the slow-consumer policy applied. Also keeps this
//! shard's interest in remote topics up to date, and answers publishers.

use bytes::Bytes;
use serde_json::value::RawValue;

use crate::config::SlowConsumerPolicy;
use crate::mesh::{ConnRef, MeshMsg, Payload, ReplyTo};
use crate::metrics::Metric;
use crate::proto::close;
use crate::proto::command::ErrorCode;
use crate::proto::envelope;
use crate::topic::{owner_shard, SubscribeOutcome, UnsubscribeOutcome};

use super::connection::Phase;
use super::Shard;

/// A publish's payload, borrowed from wherever it arrived.
#[derive(Debug, Clone, Copy)]
pub(super) enum PayloadRef<'a> {
    Json(&'a [u8]),
    Binary(&'a [u8]),
}

impl<'a> PayloadRef<'a> {
    fn from_owned(payload: &'a Payload) -> PayloadRef<'a> {
        match payload {
            Payload::Json(bytes) => PayloadRef::Json(bytes),
            Payload::Binary(bytes) => PayloadRef::Binary(bytes),
        }
    }

    fn to_owned(self) -> Payload {
        match self {
            PayloadRef::Json(data) => Payload::Json(Bytes::copy_from_slice(data)),
            PayloadRef::Binary(data) => Payload::Binary(Bytes::copy_from_slice(data)),
        }
    }
}

/// Subscribe acks waiting for the owner to confirm this shard's interest in a topic.
#[derive(Debug, Default)]
pub(super) struct PendingInterest {
    /// Interest messages sent and not yet confirmed.
    outstanding: u32,
    waiters: Vec<(ConnRef, Box<RawValue>)>,
}

impl Shard {
    /// Sends a publish to its topic's owner, or sequences it here if this shard owns it.
    pub(super) fn route_publish(&mut self, topic: &str, payload: PayloadRef<'_>, reply: ReplyTo) {
        let owner = owner_shard(topic, self.mesh.shard_count());
        if owner == self.id {
            self.sequence_and_fan_out(topic, payload, reply);
        } else {
            self.mesh.send(
                owner,
                MeshMsg::Publish {
                    topic: topic.into(),
                    payload: payload.to_owned(),
                    reply,
                },
            );
        }
    }

    /// Owner side: assign the next `seq`, build the frame once, and hand it to every shard
    /// with subscribers (this one directly, others through the mesh).
    fn sequence_and_fan_out(&mut self, topic: &str, payload: PayloadRef<'_>, reply: ReplyTo) {
        let seq = match self.owned.sequence(topic) {
            None => {
                self.counters.incr(Metric::MessagesUnheard);
                0
            }
            Some((seq, shards)) => {
                let mut interested = std::mem::take(&mut self.scratch_shards);
                interested.clear();
                interested.extend_from_slice(shards);
                let frame = match payload {
                    PayloadRef::Json(data) => envelope::message_frame(topic, seq, data),
                    PayloadRef::Binary(data) => envelope::binary_message_frame(topic, seq, data),
                };
                self.counters.incr(Metric::MessagesPublished);
                for &shard in &interested {
                    let shard = shard as usize;
                    if shard == self.id {
                        self.deliver_local(topic, &frame);
                    } else {
                        self.mesh.send(
                            shard,
                            MeshMsg::Deliver {
                                topic: topic.into(),
                                frame: frame.clone(),
                            },
                        );
                    }
                }
                self.scratch_shards = interested;
                seq
            }
        };
        self.answer_publish(reply, seq);
    }

    /// Queues a prepared frame on every local subscriber of `topic`: a reference-count
    /// increment and a queue push each, never a copy.
    pub(super) fn deliver_local(&mut self, topic: &str, frame: &Bytes) {
        let max_backlog = self.shared.config.max_backlog_bytes;
        let policy = self.shared.config.slow_consumer;
        let mut slow = Vec::new();
        let mut delivered = 0u64;
        let mut dropped = 0u64;
        for &key in self.local.subscribers(topic) {
            let conn = &mut self.conns[key];
            let Phase::WebSocket(ws) = &mut conn.phase else {
                continue;
            };
            let queued = conn.out.queued_bytes();
            if queued > 0 && queued + frame.len() > max_backlog {
                match policy {
                    SlowConsumerPolicy::Drop => {
                        let list = ws.dropped.get_or_insert_with(Default::default);
                        match list.iter_mut().find(|(t, _)| &**t == topic) {
                            Some((_, count)) => *count += 1,
                            None => list.push((topic.into(), 1)),
                        }
                        dropped += 1;
                    }
                    SlowConsumerPolicy::Disconnect => slow.push(key),
                }
                continue;
            }
            if let Some(list) = ws.dropped.as_mut() {
                if let Some(index) = list.iter().position(|(t, _)| &**t == topic) {
                    let (_, count) = list.swap_remove(index);
                    if list.is_empty() {
                        ws.dropped = None;
                    }
                    if conn.queue(envelope::dropped_frame(topic, count)) {
                        self.dirty.push_back(key);
                    }
                }
            }
            if conn.queue(frame.clone()) {
                self.dirty.push_back(key);
            }
            delivered += 1;
        }
        self.counters.add(Metric::Deliveries, delivered);
        self.counters.add(Metric::SlowConsumerDrops, dropped);
        for key in slow {
            self.counters.incr(Metric::SlowConsumerDisconnects);
            self.conns[key].out.discard_unstarted();
            self.close_websocket(key, close::POLICY_VIOLATION, "slow consumer");
        }
    }

    /// Tells the publisher its message was sequenced (`seq` 0: nobody was subscribed).
    fn answer_publish(&mut self, reply: ReplyTo, seq: u64) {
        let conn = match &reply {
            ReplyTo::Nobody => return,
            ReplyTo::WebSocket { conn, .. } | ReplyTo::Http { conn } => *conn,
        };
        if conn.shard as usize != self.id {
            self.mesh
                .send(conn.shard as usize, MeshMsg::Published { reply, seq });
            return;
        }
        let Some(key) = self.resolve(conn) else {
            return;
        };
        match reply {
            ReplyTo::Nobody => {}
            ReplyTo::WebSocket { id, .. } => {
                if self.conns[key].is_websocket() {
                    self.queue(key, envelope::ack_frame(&id, Some(seq)));
                }
            }
            ReplyTo::Http { .. } => self.finish_http_publish(key, Ok(seq)),
        }
    }

    /// A peer's inbox was full: tell the publisher its message was not taken.
    pub(super) fn on_refused_by_peer(&mut self, msg: MeshMsg) {
        let MeshMsg::Publish { reply, .. } = msg else {
            return; // A refused delivery: counted; its subscribers will see a seq gap.
        };
        let message = "the topic's shard is overloaded; retry later";
        match reply {
            ReplyTo::Nobody => {}
            ReplyTo::WebSocket { conn, id } => {
                if let Some(key) = self.resolve(conn) {
                    if self.conns[key].is_websocket() {
                        let frame =
                            envelope::error_frame(Some(&id), ErrorCode::Overloaded, message);
                        self.queue(key, frame);
                    }
                }
            }
            ReplyTo::Http { conn } => {
                if let Some(key) = self.resolve(conn) {
                    self.finish_http_publish(key, Err(message));
                }
            }
        }
    }

    /// Adds a local subscription (the connection's own list is already updated) and acks it
    /// once the topic's owner knows this shard is interested.
    pub(super) fn subscribe_local(&mut self, topic: &str, key: usize, id: Option<Box<RawValue>>) {
        let conn_ref = self.connection_ref(key);
        let first_on_shard = match self.local.subscribe(topic, key) {
            SubscribeOutcome::AlreadySubscribed => false,
            SubscribeOutcome::Added { first_on_shard } => first_on_shard,
        };
        let owner = owner_shard(topic, self.mesh.shard_count());
        if first_on_shard {
            if owner == self.id {
                self.owned.set_interest(topic, self.id, true);
            } else {
                self.mesh.send(
                    owner,
                    MeshMsg::Interest {
                        topic: topic.into(),
                        shard: self.id as u16,
                        interested: true,
                        confirm: true,
                    },
                );
                let pending = self.pending_interest.entry(topic.into()).or_default();
                pending.outstanding += 1;
                if let Some(id) = id {
                    pending.waiters.push((conn_ref, id));
                }
                return;
            }
        }
        if let Some(id) = id {
            match self.pending_interest.get_mut(topic) {
                Some(pending) => pending.waiters.push((conn_ref, id)),
                None => self.queue(key, envelope::ack_frame(&id, None)),
            }
        }
    }

    /// Removes a local subscription and, when it was the shard's last, tells the owner.
    pub(super) fn unsubscribe_local(&mut self, topic: &str, key: usize) {
        if let UnsubscribeOutcome::Removed {
            last_on_shard: true,
        } = self.local.unsubscribe(topic, key)
        {
            let owner = owner_shard(topic, self.mesh.shard_count());
            if owner == self.id {
                self.owned.set_interest(topic, self.id, false);
            } else {
                self.mesh.send(
                    owner,
                    MeshMsg::Interest {
                        topic: topic.into(),
                        shard: self.id as u16,
                        interested: false,
                        confirm: false,
                    },
                );
            }
        }
    }

    /// Handles one message from another shard (all but `Shutdown`).
    pub(super) fn on_mesh_message(&mut self, msg: MeshMsg) {
        match msg {
            MeshMsg::Publish {
                topic,
                payload,
                reply,
            } => self.sequence_and_fan_out(&topic, PayloadRef::from_owned(&payload), reply),
            MeshMsg::Deliver { topic, frame } => self.deliver_local(&topic, &frame),
            MeshMsg::Interest {
                topic,
                shard,
                interested,
                confirm,
            } => {
                self.owned.set_interest(&topic, shard as usize, interested);
                if confirm {
                    self.mesh
                        .send(shard as usize, MeshMsg::InterestConfirmed { topic });
                }
            }
            MeshMsg::InterestConfirmed { topic } => {
                let Some(pending) = self.pending_interest.get_mut(&topic) else {
                    return;
                };
                pending.outstanding = pending.outstanding.saturating_sub(1);
                if pending.outstanding > 0 {
                    return;
                }
                if let Some(pending) = self.pending_interest.remove(&topic) {
                    for (conn, id) in pending.waiters {
                        if let Some(key) = self.resolve(conn) {
                            if self.conns[key].is_websocket() {
                                self.queue(key, envelope::ack_frame(&id, None));
                            }
                        }
                    }
                }
            }
            MeshMsg::Published { reply, seq } => self.answer_publish(reply, seq),
            MeshMsg::Shutdown => self.begin_drain(),
        }
    }
}
