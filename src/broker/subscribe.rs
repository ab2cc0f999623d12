//! The subscribe half of the broker core: a connection's subscribe and unsubscribe commands,
//! the shard's subscriber index, telling the engine when this shard's interest in a topic
//! starts or ends, and holding subscribe acks until the engine confirms that interest (so an
//! ack means "every message sequenced from now on reaches you").

use std::sync::atomic::Ordering;

use crate::proto::deflate::DeliveryFrames;
use serde_json::value::RawValue;

use crate::config::SlowConsumerPolicy;

use crate::engine::{Engine, Interest};
use crate::metrics::Metric;
use crate::proto::command::ErrorCode;
use crate::proto::envelope;
use crate::topic::{SubscribeOutcome, UnsubscribeOutcome};

use super::history::{Resumed, Since};
use super::{Broker, ConnId, Outputs, ResumeHint, SendKind, SendStatus, MAX_CLOSE_REASON_BYTES};
use crate::mesh::ConnRef;

impl<E: Engine> Broker<E> {
    /// `{"op":"subscribe"}` from connection `conn`.
    pub(super) fn subscribe<O: Outputs>(
        &mut self,
        conn: ConnId,
        topic: &str,
        id: Option<&RawValue>,
        since: Option<Since>,
        out: &mut O,
    ) {
        let Some(subs) = self.conns.subscriptions_mut(conn) else {
            return;
        };
        if subs.contains(topic) {
            if let Some(id) = id {
                let _ = out.send(conn, envelope::ack_frame(id, None), SendKind::Reply);
            }
            return;
        }
        let held = subs.len();
        if let Err(limit) = self.check_subscription_limit(held, 1) {
            out.count(Metric::CommandErrors, 1);
            let frame =
                envelope::error_frame(id, ErrorCode::TooManySubscriptions, &limit.to_string());
            let _ = out.send(conn, frame, SendKind::Reply);
            return;
        }
        if let Err(limit) = self.check_global_limits(&[topic]) {
            out.count(Metric::CommandErrors, 1);
            out.count(Metric::SubscribeLimitReached, 1);
            let frame = envelope::error_frame(id, ErrorCode::LimitReached, &limit.to_string());
            let _ = out.send(conn, frame, SendKind::Reply);
            return;
        }
        if let Some(subs) = self.conns.subscriptions_mut(conn) {
            let _inserted = subs.insert(topic);
        }
        match since {
            Some(since) => self.add_resuming(conn, topic, id.map(ToOwned::to_owned), since, out),
            None => self.add_local(conn, topic, id.map(ToOwned::to_owned), out),
        }
    }

    /// Adds `conn` to the index resuming from `since`: deliveries skip it until the topic's
    /// owner answers with the replay (at once when this shard owns the topic). The owner
    /// registers this shard's interest with the same message, so the replay holds every
    /// message up to its top and every delivery after it is newer: no gap, no duplicate.
    pub(super) fn add_resuming<O: Outputs>(
        &mut self,
        conn: ConnId,
        topic: &str,
        id: Option<Box<RawValue>>,
        since: Since,
        out: &mut O,
    ) {
        let Some(generation) = self.conns.generation(conn) else {
            return;
        };
        let first_on_shard = match self.local.subscribe(topic, conn) {
            SubscribeOutcome::AlreadySubscribed => false,
            SubscribeOutcome::Added { first_on_shard } => {
                self.subscriptions.fetch_add(1, Ordering::Relaxed);
                first_on_shard
            }
        };
        let conn_ref = ConnRef {
            shard: self.shard as u16,
            key: conn as u32,
            generation,
        };
        let id_for_now = id.clone();
        match self
            .engine
            .resume(topic, since, conn_ref, id, first_on_shard, out)
        {
            Some(resumed) => {
                self.resuming.entry(topic.into()).or_default().push(conn);
                self.finish_resume(conn, topic, id_for_now.as_deref(), resumed, out);
            }
            None => {
                self.resuming.entry(topic.into()).or_default().push(conn);
                if first_on_shard {
                    // Deliveries sent before the owner saw this shard's interest are not
                    // ours (see `on_peer`): the replay confirms the interest.
                    self.pending_interest
                        .entry(topic.into())
                        .or_default()
                        .outstanding += 1;
                }
            }
        }
    }

    /// The resume of `conn` to `topic` is decided: the ack, then the replay, through the one
    /// send path; then live deliveries reach it. A replay over the connection's byte budget
    /// applies the slow-consumer policy like any delivery (a dropped notice counts the skipped
    /// frames). Ignored if `conn` stopped waiting (unsubscribed or closed meanwhile).
    pub(super) fn finish_resume<O: Outputs>(
        &mut self,
        conn: ConnId,
        topic: &str,
        id: Option<&RawValue>,
        resumed: Resumed<DeliveryFrames>,
        out: &mut O,
    ) {
        let Some(waiting) = self.resuming.get_mut(topic) else {
            return;
        };
        let Some(at) = waiting.iter().position(|&c| c == conn) else {
            return;
        };
        waiting.swap_remove(at);
        if waiting.is_empty() {
            self.resuming.remove(topic);
        }
        out.count(
            if resumed.recovered {
                Metric::ResumesRecovered
            } else {
                Metric::ResumesLost
            },
            1,
        );
        let ack =
            envelope::resume_ack_frame(id, topic, resumed.top, resumed.epoch, resumed.recovered);
        let _ = out.send(conn, ack, SendKind::Reply);
        let mut sent = 0u64;
        // The replay runs contiguously up to the top: the i-th frame's seq is `first + i`.
        let first = (resumed.top + 1).saturating_sub(resumed.replay.len() as u64);
        for (i, frames) in resumed.replay.iter().enumerate() {
            // The kept twin: a compressing subscriber gets the frame deflated at publish time.
            match out.send_delivery(conn, frames, SendKind::Delivery) {
                SendStatus::Queued | SendStatus::QueuedOverBudget => sent += 1,
                SendStatus::Closed => break,
                SendStatus::OverBudget => match self.limits.slow_consumer {
                    SlowConsumerPolicy::Drop => {
                        out.count(Metric::SlowConsumerDrops, 1);
                        self.conns.add_dropped(conn, topic, 1);
                    }
                    SlowConsumerPolicy::Disconnect => {
                        let hint = ResumeHint {
                            topic: topic.into(),
                            first_lost_seq: first + i as u64,
                            epoch: resumed.epoch,
                        };
                        let fits = hint.longest_text_bytes() <= MAX_CLOSE_REASON_BYTES;
                        self.slow.push((conn, fits.then_some(hint)));
                        break;
                    }
                },
            }
        }
        out.count(Metric::Replayed, sent);
        self.disconnect_slow(out);
    }

    /// `{"op":"unsubscribe"}` from connection `conn`.
    pub(super) fn unsubscribe<O: Outputs>(
        &mut self,
        conn: ConnId,
        topic: &str,
        id: Option<&RawValue>,
        out: &mut O,
    ) {
        let Some(subs) = self.conns.subscriptions_mut(conn) else {
            return;
        };
        if subs.remove(topic) {
            self.remove_local(conn, topic, out);
            if let Some(id) = id {
                let _ = out.send(conn, envelope::ack_frame(id, None), SendKind::Reply);
            }
        } else {
            out.count(Metric::CommandErrors, 1);
            let message = format!("not subscribed to {topic:?}");
            let frame = envelope::error_frame(id, ErrorCode::NotSubscribed, &message);
            let _ = out.send(conn, frame, SendKind::Reply);
        }
    }

    /// Adds `conn` to the index (its own list is already updated) and acks with `id` once
    /// this shard's interest in `topic` is in effect.
    pub(super) fn add_local<O: Outputs>(
        &mut self,
        conn: ConnId,
        topic: &str,
        id: Option<Box<RawValue>>,
        out: &mut O,
    ) {
        let first_on_shard = match self.local.subscribe(topic, conn) {
            SubscribeOutcome::AlreadySubscribed => false,
            SubscribeOutcome::Added { first_on_shard } => {
                self.subscriptions.fetch_add(1, Ordering::Relaxed);
                first_on_shard
            }
        };
        if first_on_shard {
            if let Interest::Pending = self.engine.set_interest(topic, true, out) {
                let pending = self.pending_interest.entry(topic.into()).or_default();
                pending.outstanding += 1;
                if let (Some(id), Some(generation)) = (id, self.conns.generation(conn)) {
                    let conn = ConnRef {
                        shard: self.shard as u16,
                        key: conn as u32,
                        generation,
                    };
                    pending.waiters.push((conn, id));
                }
                return;
            }
        }
        let Some(id) = id else {
            return;
        };
        match self.pending_interest.get_mut(topic) {
            Some(pending) => {
                if let Some(generation) = self.conns.generation(conn) {
                    let conn = ConnRef {
                        shard: self.shard as u16,
                        key: conn as u32,
                        generation,
                    };
                    pending.waiters.push((conn, id));
                }
            }
            None => {
                let _ = out.send(conn, envelope::ack_frame(&id, None), SendKind::Reply);
            }
        }
    }

    /// Removes `conn` from `topic`'s local subscribers; when it was the shard's last, the
    /// engine hears that this shard's interest ended.
    pub(super) fn remove_local<O: Outputs>(&mut self, conn: ConnId, topic: &str, out: &mut O) {
        self.conns.clear_dropped(conn, topic);
        if !self.resuming.is_empty() {
            if let Some(waiting) = self.resuming.get_mut(topic) {
                waiting.retain(|&c| c != conn);
                if waiting.is_empty() {
                    self.resuming.remove(topic);
                }
            }
        }
        if let UnsubscribeOutcome::Removed { last_on_shard } = self.local.unsubscribe(topic, conn) {
            self.subscriptions.fetch_sub(1, Ordering::Relaxed);
            if last_on_shard {
                let _interest = self.engine.set_interest(topic, false, out);
            }
        }
    }

    /// The engine confirmed `count` of this shard's interests in `topic`: once every
    /// outstanding confirmation is in, the waiting subscribe acks go out.
    pub(super) fn interest_confirmed<O: Outputs>(&mut self, topic: &str, count: u32, out: &mut O) {
        let Some(pending) = self.pending_interest.get_mut(topic) else {
            return;
        };
        pending.outstanding = pending.outstanding.saturating_sub(count);
        if pending.outstanding > 0 {
            return;
        }
        let Some(pending) = self.pending_interest.remove(topic) else {
            return;
        };
        for (conn, id) in pending.waiters {
            if let Some(key) = self.resolve(conn) {
                let _ = out.send(key, envelope::ack_frame(&id, None), SendKind::Reply);
            }
        }
    }
}
