//! The subscribe half of the broker core: a connection's subscribe and unsubscribe commands,
//! the shard's subscriber index, telling the engine when this shard's interest in a topic
//! starts or ends, and holding subscribe acks until the engine confirms that interest (so an
//! ack means "every message sequenced from now on reaches you").

use std::sync::atomic::Ordering;

use serde_json::value::RawValue;

use crate::engine::{Engine, Interest};
use crate::metrics::Metric;
use crate::proto::command::ErrorCode;
use crate::proto::envelope;
use crate::topic::{SubscribeOutcome, UnsubscribeOutcome};

use super::{Broker, ConnId, Outputs, SendKind};
use crate::mesh::ConnRef;

impl<E: Engine> Broker<E> {
    /// `{"op":"subscribe"}` from connection `conn`.
    pub(super) fn subscribe<O: Outputs>(
        &mut self,
        conn: ConnId,
        topic: &str,
        id: Option<&RawValue>,
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
        self.add_local(conn, topic, id.map(ToOwned::to_owned), out);
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
