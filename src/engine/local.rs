//! The local engine: the in-process mesh. A topic's owner shard (`owner_shard`, the same on
//! every shard) keeps the topic's seq, epoch and kept history (`History`) and the set of
//! interested shards (`OwnedTopics`), builds the delivery frame once, and sends a clone of it
//! to every other interested shard. The owners keep the process-wide [`InterestFilter`] in
//! step with the topics they hold state for (a subscriber somewhere, or kept history), so a
//! publish to a topic no owner holds is answered on the publisher's shard without crossing
//! the mesh. Sans-IO: messages leave through `Outputs::to_peer`.

use std::sync::Arc;

use bytes::Bytes;
use serde_json::value::RawValue;

use crate::broker::history::{History, HistoryPolicy, Page, Resumed, Since};
use crate::broker::Outputs;
use crate::mesh::{ConnRef, MeshMsg, ReplyTo};
use crate::metrics::Metric;
use crate::proto::deflate::DeliveryFrames;
use crate::proto::envelope;
use crate::topic::{owner_of_hash, topic_hash, OwnedTopics};

use super::interest::InterestFilter;
use super::{DeflateOnce, Engine, HistoryRead, Interest, PayloadRef, Routed, Sequenced};

/// Expired messages dropped per loop turn at most, so a burst of expiries cannot stall a turn.
const EXPIRE_PER_TICK: usize = 4096;

/// One shard's part of the in-process engine.
#[derive(Debug)]
pub struct LocalEngine {
    shard: usize,
    shards: usize,
    /// The topics this shard owns that some shard is interested in.
    owned: OwnedTopics,
    /// Seq, epoch and kept frames of the topics this shard owns (each plain frame with its
    /// deflated twin, so a replay never deflates again).
    history: History<DeliveryFrames>,
    /// The clock of the last `tick`.
    now_ms: u64,
    /// Shared by every shard of the process.
    filter: Arc<InterestFilter>,
    /// Builds the deflated twin of the frames this shard sequences (`None`: compression off).
    deflate: Option<DeflateOnce>,
}

impl LocalEngine {
    /// The engine part of shard `shard` of `shards`, without history (seq counts only while a
    /// shard listens), sharing `filter` with the other shards.
    pub fn new(shard: usize, shards: usize, filter: Arc<InterestFilter>) -> LocalEngine {
        let off = HistoryPolicy::new(0, std::time::Duration::from_secs(1), &[], 0);
        LocalEngine::with_history(shard, shards, filter, off, 0, 0)
    }

    /// The engine part of shard `shard` of `shards`, sharing `filter` with the other shards,
    /// keeping history by `policy` within `budget_bytes` (this shard's share), epochs drawn
    /// from `seed`.
    pub fn with_history(
        shard: usize,
        shards: usize,
        filter: Arc<InterestFilter>,
        policy: HistoryPolicy,
        budget_bytes: usize,
        seed: u64,
    ) -> LocalEngine {
        LocalEngine {
            shard,
            shards: shards.max(1),
            owned: OwnedTopics::new(),
            history: History::new(policy, budget_bytes, seed),
            now_ms: 0,
            filter,
            deflate: None,
        }
    }

    /// Also builds a deflated twin of each frame it sequences, for subscribers that negotiated
    /// permessage-deflate (`--compression on`).
    pub fn with_deflate(mut self, deflate: DeflateOnce) -> LocalEngine {
        self.deflate = Some(deflate);
        self
    }

    /// The kept history of the topics this shard owns.
    pub fn history(&self) -> &History<DeliveryFrames> {
        &self.history
    }

    fn owner(&self, topic: &str) -> usize {
        owner_of_hash(topic_hash(topic), self.shards)
    }

    /// Owner side: the filter follows the topics the history started and forgot (a topic is
    /// held from its first interest until it has neither interest nor kept messages). Called
    /// after every history call that may start or forget one, before any confirmation leaves.
    fn sync_filter(&mut self) {
        for (hash, held) in self.history.drain_lifecycle() {
            if held {
                self.filter.gained(hash);
            } else {
                self.filter.forgotten(hash);
            }
        }
    }

    /// Owner side: records `shard`'s interest in the interest set and in the topic's log.
    fn record_interest(&mut self, topic: &str, shard: usize, interested: bool) {
        let _changed = self.owned.set_interest(topic, shard, interested);
        let any = !self.owned.interested_shards(topic).is_empty();
        let _incarnation = self.history.set_interest(topic, any, self.now_ms);
        self.sync_filter();
    }
    /// Owner side: the next seq, the frame built once (and kept if the topic keeps history),
    /// a clone to each other interested shard.
    fn sequence<O: Outputs>(
        &mut self,
        topic: &str,
        payload: PayloadRef<'_>,
        reply: ReplyTo,
        out: &mut O,
    ) -> Sequenced {
        let sequenced_us = out.now_us();
        let deflate = &mut self.deflate;
        let published = self.history.publish(topic, self.now_ms, |seq| {
            let plain = match payload {
                PayloadRef::Json(data) => envelope::message_frame(topic, seq, data),
                PayloadRef::Binary(data) => envelope::binary_message_frame(topic, seq, data),
            };
            // Deflated here, once, on the owner: every shard (and every replay) gets the same
            // bytes.
            match deflate {
                Some(deflate) => deflate.frames(plain),
                None => DeliveryFrames::plain(plain),
            }
        });
        self.sync_filter();
        let Some(published) = published else {
            out.count(Metric::MessagesUnheard, 1);
            return Sequenced {
                seq: 0,
                epoch: None,
                local_frame: None,
                reply,
                sequenced_us,
            };
        };
        out.count(Metric::MessagesPublished, 1);
        // A publish kept in history is heard (a resume or a history read may fetch it); only
        // a publish to a topic with no state is unheard (above).
        if published.frame.deflated.is_some() {
            out.count(Metric::MessagesDeflated, 1);
        }
        let shards = self.owned.interested_shards(topic);
        let mut local_frame = None;
        for &shard in shards {
            let shard = usize::from(shard);
            if shard == self.shard {
                local_frame = Some(published.frame.clone());
            } else {
                out.to_peer(
                    shard,
                    MeshMsg::Deliver {
                        topic: topic.into(),
                        frames: published.frame.clone(),
                        sequenced_us,
                        epoch: Some(published.epoch),
                    },
                );
            }
        }
        Sequenced {
            seq: published.seq,
            epoch: Some(published.epoch),
            local_frame,
            reply,
            sequenced_us,
        }
    }

    /// Owner side: registers the resuming shard's interest, then decides the resume; every
    /// `Deliver` of the topic sent so far carries a seq up to the top reported.
    fn decide_resume(
        &mut self,
        topic: &str,
        shard: usize,
        since: Since,
    ) -> Resumed<DeliveryFrames> {
        let _changed = self.owned.set_interest(topic, shard, true);
        let resumed = self.history.listen_and_resume(topic, since, self.now_ms);
        self.sync_filter();
        resumed
    }

    /// Owner side of `GET /history`: the page of plain frames (HTTP sends no deflated
    /// bytes). A read may forget an expired topic: the filter follows.
    fn read_page(&mut self, topic: &str, after: u64, limit: usize) -> Option<Page<Bytes>> {
        let page = self.history.read(topic, after, limit, self.now_ms);
        self.sync_filter();
        page.map(|page| Page {
            epoch: page.epoch,
            top: page.top,
            messages: page
                .messages
                .into_iter()
                .map(|(seq, frames)| (seq, frames.plain))
                .collect(),
        })
    }
}

impl Engine for LocalEngine {
    fn publish<O: Outputs>(
        &mut self,
        topic: &str,
        payload: PayloadRef<'_>,
        reply: ReplyTo,
        out: &mut O,
    ) -> Routed {
        let hash = topic_hash(topic);
        let owner = owner_of_hash(hash, self.shards);
        if owner == self.shard {
            return Routed::Sequenced(self.sequence(topic, payload, reply, out));
        }
        if !self.filter.may_be_heard(hash) {
            // No owner holds the topic: nobody is subscribed and nothing is kept, so there is
            // nothing to sequence or carry.
            out.count(Metric::MessagesUnheard, 1);
            return Routed::Sequenced(Sequenced {
                seq: 0,
                epoch: None,
                local_frame: None,
                reply,
                sequenced_us: out.now_us(),
            });
        }
        out.to_peer(
            owner,
            MeshMsg::Publish {
                topic: topic.into(),
                payload: payload.to_owned(),
                reply,
            },
        );
        Routed::Forwarded
    }

    fn set_interest<O: Outputs>(&mut self, topic: &str, interested: bool, out: &mut O) -> Interest {
        let hash = topic_hash(topic);
        if interested {
            self.filter.hold(hash);
        } else {
            self.filter.release(hash);
        }
        let owner = owner_of_hash(hash, self.shards);
        if owner == self.shard {
            self.record_interest(topic, self.shard, interested);
            return Interest::Live;
        }
        out.to_peer(
            owner,
            MeshMsg::Interest {
                topic: topic.into(),
                shard: self.shard as u16,
                interested,
                confirms: u32::from(interested),
            },
        );
        if interested {
            Interest::Pending
        } else {
            Interest::Live
        }
    }

    fn on_message<O: Outputs>(
        &mut self,
        msg: MeshMsg,
        out: &mut O,
    ) -> Option<(Box<str>, Sequenced)> {
        match msg {
            MeshMsg::Publish {
                topic,
                payload,
                reply,
            } => {
                let sequenced = self.sequence(&topic, PayloadRef::from_owned(&payload), reply, out);
                Some((topic, sequenced))
            }
            MeshMsg::Interest {
                topic,
                shard,
                interested,
                confirms,
            } => {
                self.record_interest(&topic, usize::from(shard), interested);
                if confirms > 0 {
                    let count = confirms;
                    out.to_peer(
                        usize::from(shard),
                        MeshMsg::InterestConfirmed { topic, count },
                    );
                }
                None
            }
            MeshMsg::Resume {
                topic,
                conn,
                id,
                since,
                confirms_interest,
            } => {
                let resumed = self.decide_resume(&topic, usize::from(conn.shard), since);
                out.to_peer(
                    usize::from(conn.shard),
                    MeshMsg::Replay {
                        topic,
                        conn,
                        id,
                        resumed,
                        confirms_interest,
                    },
                );
                None
            }
            MeshMsg::HistoryRead {
                topic,
                after,
                limit,
                conn,
            } => {
                let page = self.read_page(&topic, after, limit);
                out.to_peer(usize::from(conn.shard), MeshMsg::HistoryPage { conn, page });
                None
            }
            // Not the engine's: the core handles deliveries, confirmations and answers.
            MeshMsg::Replay { .. }
            | MeshMsg::HistoryPage { .. }
            | MeshMsg::Deliver { .. }
            | MeshMsg::InterestConfirmed { .. }
            | MeshMsg::Dropped { .. }
            | MeshMsg::Published { .. }
            | MeshMsg::PublishFailed { .. } => None,
        }
    }

    fn resume<O: Outputs>(
        &mut self,
        topic: &str,
        since: Since,
        conn: ConnRef,
        id: Option<Box<RawValue>>,
        confirms_interest: bool,
        out: &mut O,
    ) -> Option<Resumed<DeliveryFrames>> {
        if confirms_interest {
            // This shard's first subscriber of the topic: held like `set_interest(true)`, and
            // released by the `set_interest(false)` of its last unsubscribe.
            self.filter.hold(topic_hash(topic));
        }
        let owner = self.owner(topic);
        if owner == self.shard {
            return Some(self.decide_resume(topic, self.shard, since));
        }
        out.to_peer(
            owner,
            MeshMsg::Resume {
                topic: topic.into(),
                conn,
                id,
                since,
                confirms_interest,
            },
        );
        None
    }

    fn read_history<O: Outputs>(
        &mut self,
        topic: &str,
        after: u64,
        limit: usize,
        conn: ConnRef,
        out: &mut O,
    ) -> HistoryRead {
        let owner = self.owner(topic);
        if owner == self.shard {
            return HistoryRead::Page(self.read_page(topic, after, limit));
        }
        out.to_peer(
            owner,
            MeshMsg::HistoryRead {
                topic: topic.into(),
                after,
                limit,
                conn,
            },
        );
        HistoryRead::Forwarded
    }

    fn tick(&mut self, now_ms: u64) {
        self.now_ms = now_ms;
        let _expired = self.history.expire(now_ms, EXPIRE_PER_TICK);
        self.sync_filter();
    }

    fn topic_limit_reached(&self, topic: &str, max_topics: usize) -> bool {
        self.filter.topic_count() >= max_topics && !self.filter.may_be_heard(topic_hash(topic))
    }

    fn topic_count(&self) -> usize {
        self.owned.topic_count()
    }
}
