//! The publish half of the broker core: handing a publish to the engine, delivering a
//! sequenced frame to this shard's subscribers under the slow-consumer policy, and answering
//! publishers (ack, `overloaded`, or the HTTP response).

use super::history::Epoch;
use crate::config::SlowConsumerPolicy;
use crate::engine::{Engine, PayloadRef, Refused, Routed, Sequenced};
use crate::mesh::{MeshMsg, ReplyTo};
use crate::metrics::Metric;
use crate::proto::command::ErrorCode;
use crate::proto::deflate::DeliveryFrames;
use crate::proto::envelope;
use crate::proto::http_refusal::ENGINE_UNAVAILABLE_MESSAGE;

use super::connections::Connections;
use super::{
    Broker, CloseReason, ConnId, HttpHistory, HttpPublished, Outputs, ResumeHint, SendKind,
    SendStatus, MAX_CLOSE_REASON_BYTES, OVERLOADED_MESSAGE,
};

impl<E: Engine> Broker<E> {
    /// Publishes `payload` to `topic` from a connection on this shard.
    pub fn publish<O: Outputs>(
        &mut self,
        topic: &str,
        payload: PayloadRef<'_>,
        reply: ReplyTo,
        out: &mut O,
    ) {
        match self.engine.publish(topic, payload, reply, out) {
            Routed::Sequenced(sequenced) => self.finish(topic, sequenced, out),
            Routed::Forwarded => {}
            Routed::Refused(reply) => self.refuse(reply, Refused::Overloaded, out),
            Routed::Unavailable(reply) => self.refuse(reply, Refused::Unavailable, out),
        }
    }

    /// The end of the shard's turn: the engine hands over what it gathered; publishes it could
    /// not hand over are answered at once.
    pub fn flush_engine<O: Outputs>(&mut self, out: &mut O) {
        if !self.engine.has_pending() {
            return;
        }
        let mut refused = std::mem::take(&mut self.refused);
        self.engine.flush(&mut refused, out);
        for (reply, why) in refused.drain(..) {
            self.refuse(reply, why, out);
        }
        self.refused = refused;
    }

    /// Whether the engine holds work for the end of the turn.
    pub fn engine_has_pending(&self) -> bool {
        self.engine.has_pending()
    }

    /// A message this shard sent was refused by the peer's full inbox: a refused publish (or
    /// history read) is answered `overloaded`. A refused delivery needs nothing here: the mesh
    /// put a `Dropped` count in its place (`MeshMsg::refusal_notice`), so the subscribers it
    /// skipped hear of the gap.
    pub fn on_refused<O: Outputs>(&mut self, msg: MeshMsg, out: &mut O) {
        match msg {
            MeshMsg::HistoryRead { conn, .. } => out.http_history(conn, HttpHistory::Refused),
            MeshMsg::Publish { reply, .. } => self.refuse(reply, Refused::Overloaded, out),
            _ => {}
        }
    }

    /// `count` deliveries of `topic` never reached this shard: every local subscriber hears
    /// of the gap before its next message, like a slow consumer's skipped messages. Ignored
    /// while this shard's interest waits for confirmation: those deliveries belonged to
    /// subscribers who have all left.
    pub(super) fn deliveries_dropped(&mut self, topic: &str, count: u64) {
        if self.pending_interest.contains_key(topic) {
            return;
        }
        let subscribers = self.local.subscribers(topic);
        for &conn in subscribers {
            self.conns.add_dropped(conn, topic, count);
        }
    }

    /// The engine sequenced a publish here: deliver it locally, then answer the publisher
    /// (after the deliveries, so a subscribed publisher sees its message before the ack).
    pub(super) fn finish<O: Outputs>(&mut self, topic: &str, sequenced: Sequenced, out: &mut O) {
        if let Some(frames) = &sequenced.local_frame {
            self.deliver_local(topic, frames, sequenced.epoch, sequenced.sequenced_us, out);
        }
        self.answer(sequenced.reply, sequenced.seq, sequenced.epoch, out);
    }

    /// Queues a prepared frame on every local subscriber of `topic`: a reference-count
    /// increment and a queue push each, never a copy or an allocation. A subscriber over its
    /// byte budget is skipped (and told how many it missed before its next message) or
    /// disconnected, by `--slow-consumer`. `sequenced_us` (when the engine sequenced it) goes
    /// to [`Outputs::fanned_out`] with the count queued, once per fan-out, for the metrics.
    pub(super) fn deliver_local<O: Outputs>(
        &mut self,
        topic: &str,
        frames: &DeliveryFrames,
        epoch: Option<Epoch>,
        sequenced_us: u64,
        out: &mut O,
    ) {
        let policy = self.limits.slow_consumer;
        let lost = Lost {
            topic,
            frames,
            epoch,
        };
        let (conns, slow) = (&mut self.conns, &mut self.slow);
        let subscribers = self.local.subscribers(topic);
        let mut skipped = 0u64;
        if !self.resuming.is_empty() {
            if let Some(waiting) = self.resuming.get(topic) {
                // Connections waiting for their replay get this message in it (or after it).
                let waiting = waiting.clone();
                skipped +=
                    deliver_with_notices(subscribers, &waiting, &lost, policy, conns, slow, out);
                let queued = subscribers.len() as u64 - skipped;
                out.count(Metric::Deliveries, queued);
                out.fanned_out(topic, queued, sequenced_us);
                self.disconnect_slow(out);
                return;
            }
        }
        if !conns.any_dropped() {
            // The usual case, kept tight: no skipped counts to announce on this shard.
            for &conn in subscribers {
                match out.send_delivery(conn, frames, SendKind::Delivery) {
                    SendStatus::Queued | SendStatus::QueuedOverBudget => {}
                    SendStatus::Closed => skipped += 1,
                    SendStatus::OverBudget => {
                        skipped += 1;
                        over_budget(policy, conns, slow, conn, &lost, out);
                    }
                }
            }
        } else {
            // Some subscriber here has skipped messages to announce first.
            skipped += deliver_with_notices(subscribers, &[], &lost, policy, conns, slow, out);
        }
        let queued = subscribers.len() as u64 - skipped;
        out.count(Metric::Deliveries, queued);
        out.fanned_out(topic, queued, sequenced_us);
        self.disconnect_slow(out);
    }

    /// Closes the subscribers a delivery found over budget under `--slow-consumer=disconnect`.
    pub(super) fn disconnect_slow<O: Outputs>(&mut self, out: &mut O) {
        while let Some((conn, resume)) = self.slow.pop() {
            out.count(Metric::SlowConsumerDisconnects, 1);
            self.on_closed(conn, out);
            out.close(conn, CloseReason::SlowConsumer(resume));
        }
    }

    /// Tells the publisher its message was sequenced, with its topic's epoch (`seq` 0: nobody
    /// was subscribed and the topic keeps no history).
    pub(super) fn answer<O: Outputs>(
        &mut self,
        reply: ReplyTo,
        seq: u64,
        epoch: Option<Epoch>,
        out: &mut O,
    ) {
        let conn = match &reply {
            ReplyTo::Nobody => return,
            ReplyTo::WebSocket { conn, .. } | ReplyTo::Http { conn } => *conn,
        };
        if usize::from(conn.shard) != self.shard {
            out.to_peer(
                usize::from(conn.shard),
                MeshMsg::Published { reply, seq, epoch },
            );
            return;
        }
        match reply {
            ReplyTo::Nobody => {}
            ReplyTo::WebSocket { conn, id } => {
                if let Some(key) = self.resolve(conn) {
                    let _ = out.send(
                        key,
                        envelope::ack_frame(&id, Some((seq, epoch))),
                        SendKind::Reply,
                    );
                }
            }
            ReplyTo::Http { conn } => {
                out.http_published(conn, HttpPublished::Sequenced(seq, epoch))
            }
        }
    }

    /// Tells a publisher on this shard that its message was not taken, and why.
    pub(super) fn refuse<O: Outputs>(&mut self, reply: ReplyTo, why: Refused, out: &mut O) {
        match reply {
            ReplyTo::Nobody => {}
            ReplyTo::WebSocket { conn, id } => {
                if let Some(key) = self.resolve(conn) {
                    let frame = match why {
                        Refused::Overloaded => envelope::error_frame(
                            Some(&id),
                            ErrorCode::Overloaded,
                            OVERLOADED_MESSAGE,
                        ),
                        Refused::Unavailable => envelope::error_frame(
                            Some(&id),
                            ErrorCode::EngineUnavailable,
                            ENGINE_UNAVAILABLE_MESSAGE,
                        ),
                    };
                    let _ = out.send(key, frame, SendKind::Reply);
                }
            }
            ReplyTo::Http { conn } => out.http_published(
                conn,
                match why {
                    Refused::Overloaded => HttpPublished::Refused,
                    Refused::Unavailable => HttpPublished::Unavailable,
                },
            ),
        }
    }
}

/// The delivery being made, as a subscriber that cannot take it loses it.
pub(super) struct Lost<'a> {
    pub(super) topic: &'a str,
    pub(super) frames: &'a DeliveryFrames,
    pub(super) epoch: Option<Epoch>,
}

impl Lost<'_> {
    /// Where a subscriber that loses this delivery can resume: before its seq, in its epoch.
    /// `None` when the topic has no epoch or the hint would not fit a close reason.
    pub(super) fn resume_hint(&self) -> Option<ResumeHint> {
        let epoch = self.epoch?;
        let seq = envelope::delivery_seq(&self.frames.plain, self.topic)?;
        let hint = ResumeHint {
            topic: self.topic.into(),
            first_lost_seq: seq,
            epoch,
        };
        (hint.longest_text_bytes() <= MAX_CLOSE_REASON_BYTES).then_some(hint)
    }
}

/// A delivery did not fit `conn`'s budget: count it for a later `dropped` notice, or list the
/// connection for a disconnect (with where it can resume) once the delivery loop is done.
#[cold]
pub(super) fn over_budget<O: Outputs>(
    policy: SlowConsumerPolicy,
    conns: &mut Connections,
    slow: &mut Vec<(ConnId, Option<ResumeHint>)>,
    conn: ConnId,
    lost: &Lost<'_>,
    out: &mut O,
) {
    match policy {
        SlowConsumerPolicy::Drop => {
            out.count(Metric::SlowConsumerDrops, 1);
            conns.add_dropped(conn, lost.topic, 1);
        }
        SlowConsumerPolicy::Disconnect => slow.push((conn, lost.resume_hint())),
    }
}

/// The rare paths of a delivery: some subscriber has skipped messages to announce first (a
/// `dropped` notice goes out only together with the message after it), or some wait for their
/// replay (`waiting`, skipped: the replay brings them this message). Every subscriber one by one;
/// returns how many were skipped.
#[cold]
#[allow(clippy::too_many_arguments)]
fn deliver_with_notices<O: Outputs>(
    subscribers: &[ConnId],
    waiting: &[ConnId],
    lost: &Lost<'_>,
    policy: SlowConsumerPolicy,
    conns: &mut Connections,
    slow: &mut Vec<(ConnId, Option<ResumeHint>)>,
    out: &mut O,
) -> u64 {
    let (topic, frames) = (lost.topic, lost.frames);
    let mut skipped = 0;
    for &conn in subscribers {
        if waiting.contains(&conn) {
            skipped += 1;
            continue;
        }
        if let Some(count) = conns.dropped(conn, topic) {
            let notice = envelope::dropped_frame(topic, count);
            let kind = SendKind::Notice {
                reserve_bytes: frames.plain.len(),
            };
            match out.send(conn, notice, kind) {
                SendStatus::Queued | SendStatus::QueuedOverBudget => {
                    conns.clear_dropped(conn, topic)
                }
                SendStatus::OverBudget => {
                    skipped += 1;
                    over_budget(policy, conns, slow, conn, lost, out);
                    continue;
                }
                SendStatus::Closed => {
                    skipped += 1;
                    continue;
                }
            }
        }
        match out.send_delivery(conn, frames, SendKind::Delivery) {
            SendStatus::Queued | SendStatus::QueuedOverBudget => {}
            SendStatus::Closed => skipped += 1,
            SendStatus::OverBudget => {
                skipped += 1;
                over_budget(policy, conns, slow, conn, lost, out);
            }
        }
    }
    skipped
}
