//! The local engine: the in-process mesh. A topic's owner shard (`owner_shard`, the same on
//! every shard) keeps the topic's seq and the set of interested shards (`OwnedTopics`),
//! builds the delivery frame once, and sends a clone of it to every other interested shard.
//! Sans-IO: messages leave through `Outputs::to_peer`.

use crate::broker::Outputs;
use crate::mesh::{MeshMsg, ReplyTo};
use crate::metrics::Metric;
use crate::proto::envelope;
use crate::topic::{owner_shard, OwnedTopics};

use super::{Engine, Interest, PayloadRef, Routed, Sequenced};

/// One shard's part of the in-process engine.
#[derive(Debug)]
pub struct LocalEngine {
    shard: usize,
    shards: usize,
    /// The topics this shard owns that some shard is interested in.
    owned: OwnedTopics,
}

impl LocalEngine {
    /// The engine part of shard `shard` of `shards`.
    pub fn new(shard: usize, shards: usize) -> LocalEngine {
        LocalEngine {
            shard,
            shards: shards.max(1),
            owned: OwnedTopics::new(),
        }
    }

    fn owner(&self, topic: &str) -> usize {
        owner_shard(topic, self.shards)
    }

    /// Owner side: the next seq, the frame built once, a clone to each other interested shard.
    fn sequence<O: Outputs>(
        &mut self,
        topic: &str,
        payload: PayloadRef<'_>,
        reply: ReplyTo,
        out: &mut O,
    ) -> Sequenced {
        let sequenced_us = out.now_us();
        let Some((seq, shards)) = self.owned.sequence(topic) else {
            out.count(Metric::MessagesUnheard, 1);
            return Sequenced {
                seq: 0,
                local_frame: None,
                reply,
                sequenced_us,
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
                        sequenced_us,
                    },
                );
            }
        }
        Sequenced {
            seq,
            local_frame,
            reply,
            sequenced_us,
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
        let owner = self.owner(topic);
        if owner == self.shard {
            return Routed::Sequenced(self.sequence(topic, payload, reply, out));
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
        let owner = self.owner(topic);
        if owner == self.shard {
            let _changed = self.owned.set_interest(topic, self.shard, interested);
            return Interest::Live;
        }
        out.to_peer(
            owner,
            MeshMsg::Interest {
                topic: topic.into(),
                shard: self.shard as u16,
                interested,
                confirm: interested,
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
                confirm,
            } => {
                let _changed = self
                    .owned
                    .set_interest(&topic, usize::from(shard), interested);
                if confirm {
                    out.to_peer(usize::from(shard), MeshMsg::InterestConfirmed { topic });
                }
                None
            }
            // Not the engine's: the core handles deliveries, confirmations and answers.
            MeshMsg::Deliver { .. }
            | MeshMsg::InterestConfirmed { .. }
            | MeshMsg::Published { .. }
            | MeshMsg::Shutdown => None,
        }
    }

    fn topic_count(&self) -> usize {
        self.owned.topic_count()
    }
}
