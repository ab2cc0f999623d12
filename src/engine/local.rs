//! The local engine: the in-process mesh. A topic's owner shard (`owner_shard`, the same on
//! every shard) keeps the topic's seq and the set of interested shards (`OwnedTopics`),
//! builds the delivery frame once, and sends a clone of it to every other interested shard.
//! The owners keep the process-wide [`InterestFilter`] up to date, so a publish to a topic no
//! owner holds is answered on the publisher's shard without crossing the mesh.
//! Sans-IO: messages leave through `Outputs::to_peer`.

use std::sync::Arc;

use crate::broker::Outputs;
use crate::mesh::{MeshMsg, ReplyTo};
use crate::metrics::Metric;
use crate::proto::envelope;
use crate::topic::{owner_of_hash, topic_hash, InterestChange, OwnedTopics};

use super::interest::InterestFilter;
use super::{Engine, Interest, PayloadRef, Routed, Sequenced};

/// One shard's part of the in-process engine.
#[derive(Debug)]
pub struct LocalEngine {
    shard: usize,
    shards: usize,
    /// The topics this shard owns that some shard is interested in.
    owned: OwnedTopics,
    /// Shared by every shard of the process.
    filter: Arc<InterestFilter>,
}

impl LocalEngine {
    /// The engine part of shard `shard` of `shards`, sharing `filter` with the others.
    pub fn new(shard: usize, shards: usize, filter: Arc<InterestFilter>) -> LocalEngine {
        LocalEngine {
            shard,
            shards: shards.max(1),
            owned: OwnedTopics::new(),
            filter,
        }
    }

    /// Owner side: records `shard`'s interest and keeps the filter in step: a topic is counted
    /// when this owner starts holding state for it, before any confirmation leaves.
    fn record_interest(&mut self, topic: &str, shard: usize, interested: bool) {
        match self.owned.set_interest(topic, shard, interested) {
            InterestChange::Created => self.topic_gained(topic),
            InterestChange::Forgotten => self.topic_forgotten(topic),
            InterestChange::Changed | InterestChange::Unchanged => {}
        }
    }

    /// This owner now holds state for `topic` (today: its first interested shard; with
    /// history, issue 12, also its first retained message).
    fn topic_gained(&self, topic: &str) {
        self.filter.gained(topic_hash(topic));
    }

    /// This owner holds nothing for `topic` any more.
    fn topic_forgotten(&self, topic: &str) {
        self.filter.forgotten(topic_hash(topic));
    }

    /// Owner side: the next seq, the frame built once, a clone to each other interested shard.
    fn sequence<O: Outputs>(
        &mut self,
        topic: &str,
        payload: PayloadRef<'_>,
        reply: ReplyTo,
        out: &mut O,
    ) -> Sequenced {
        let Some((seq, shards)) = self.owned.sequence(topic) else {
            out.count(Metric::MessagesUnheard, 1);
            return Sequenced {
                seq: 0,
                local_frame: None,
                reply,
            };
        };
        let frame = match payload {
            PayloadRef::Json(data) => envelope::message_frame(topic, seq, data),
            PayloadRef::Binary(data) => envelope::binary_message_frame(topic, seq, data),
        };
        out.count(Metric::MessagesPublished, 1);
        let mut local_frame = None;
        for &shard in shards {
            let shard = usize::from(shard);
            if shard == self.shard {
                local_frame = Some(frame.clone());
            } else {
                out.to_peer(
                    shard,
                    MeshMsg::Deliver {
                        topic: topic.into(),
                        frame: frame.clone(),
                    },
                );
            }
        }
        Sequenced {
            seq,
            local_frame,
            reply,
        }
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
            // No owner holds the topic: nobody is subscribed, nothing to carry.
            out.count(Metric::MessagesUnheard, 1);
            return Routed::Sequenced(Sequenced {
                seq: 0,
                local_frame: None,
                reply,
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
            // Not the engine's: the core handles deliveries, confirmations and answers.
            MeshMsg::Deliver { .. }
            | MeshMsg::InterestConfirmed { .. }
            | MeshMsg::Dropped { .. }
            | MeshMsg::Published { .. } => None,
        }
    }

    fn on_refused<O: Outputs>(
        &mut self,
        _to: usize,
        msg: MeshMsg,
        _out: &mut O,
    ) -> Option<ReplyTo> {
        match msg {
            MeshMsg::Publish { reply, .. } => Some(reply),
            // The mesh put a `Dropped` count in its place (`MeshMsg::refusal_notice`), so
            // the subscribers on `to` hear of the gap.
            _ => None,
        }
    }

    fn topic_limit_reached(&self, topic: &str, max_topics: usize) -> bool {
        self.filter.topic_count() >= max_topics && !self.filter.may_be_heard(topic_hash(topic))
    }

    fn topic_count(&self) -> usize {
        self.owned.topic_count()
    }
}
