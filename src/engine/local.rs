//! The local engine: the in-process mesh. A topic's owner shard (`owner_shard`, the same on
//! every shard) keeps the topic's seq and the set of interested shards (`OwnedTopics`),
//! builds the delivery frame once, and sends a clone of it to every other interested shard.
//! Sans-IO: messages leave through `Outputs::to_peer`.

use bytes::Bytes;
use serde_json::value::RawValue;

use crate::broker::history::{History, HistoryPolicy, Page, Resumed, Since};
use crate::broker::Outputs;
use crate::mesh::{ConnRef, MeshMsg, ReplyTo};
use crate::metrics::Metric;
use crate::proto::envelope;
use crate::topic::{owner_shard, OwnedTopics};

use super::{Engine, Interest, PayloadRef, Routed, Sequenced};

/// Expired messages dropped per loop turn at most, so a burst of expiries cannot stall a turn.
const EXPIRE_PER_TICK: usize = 4096;

/// One shard's part of the in-process engine.
#[derive(Debug)]
pub struct LocalEngine {
    shard: usize,
    shards: usize,
    /// The topics this shard owns that some shard is interested in.
    owned: OwnedTopics,
    /// Seq, epoch and kept frames of the topics this shard owns.
    history: History<Bytes>,
    /// The clock of the last `tick`.
    now_ms: u64,
}

impl LocalEngine {
    /// The engine part of shard `shard` of `shards`, without history (seq counts only while a
    /// shard listens).
    pub fn new(shard: usize, shards: usize) -> LocalEngine {
        let off = HistoryPolicy::new(0, std::time::Duration::from_secs(1), &[], 0);
        LocalEngine::with_history(shard, shards, off, 0, 0)
    }

    /// The engine part of shard `shard` of `shards`, keeping history by `policy` within
    /// `budget_bytes` (this shard's share), epochs drawn from `seed`.
    pub fn with_history(
        shard: usize,
        shards: usize,
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
        }
    }

    /// The kept history of the topics this shard owns.
    pub fn history(&self) -> &History<Bytes> {
        &self.history
    }

    fn owner(&self, topic: &str) -> usize {
        owner_shard(topic, self.shards)
    }

    /// Owner side: records `shard`'s interest in the interest set and in the topic's log.
    fn record_interest(&mut self, topic: &str, shard: usize, interested: bool) {
        let _changed = self.owned.set_interest(topic, shard, interested);
        let any = !self.owned.interested_shards(topic).is_empty();
        let _incarnation = self.history.set_interest(topic, any, self.now_ms);
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
        let published = self
            .history
            .publish(topic, self.now_ms, |seq| match payload {
                PayloadRef::Json(data) => envelope::message_frame(topic, seq, data),
                PayloadRef::Binary(data) => envelope::binary_message_frame(topic, seq, data),
            });
        let Some(published) = published else {
            out.count(Metric::MessagesUnheard, 1);
            return Sequenced {
                seq: 0,
                epoch: None,
                local_frame: None,
                reply,
            };
        };
        out.count(Metric::MessagesPublished, 1);
        // A publish kept in history is heard (a resume or a history read may fetch it); only
        // a publish to a topic with no state is unheard (above).
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
                        frame: published.frame.clone(),
                        epoch: published.epoch,
                    },
                );
            }
        }
        Sequenced {
            seq: published.seq,
            epoch: Some(published.epoch),
            local_frame,
            reply,
        }
    }

    /// Owner side: registers the resuming shard's interest, then decides the resume; every
    /// `Deliver` of the topic sent so far carries a seq up to the top reported.
    fn decide_resume(&mut self, topic: &str, shard: usize, since: Since) -> Resumed<Bytes> {
        let _changed = self.owned.set_interest(topic, shard, true);
        self.history.listen_and_resume(topic, since, self.now_ms)
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
            self.record_interest(topic, self.shard, interested);
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
                self.record_interest(&topic, usize::from(shard), interested);
                if confirm {
                    out.to_peer(usize::from(shard), MeshMsg::InterestConfirmed { topic });
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
                let page = self.history.read(&topic, after, limit, self.now_ms);
                out.to_peer(usize::from(conn.shard), MeshMsg::HistoryPage { conn, page });
                None
            }
            // Not the engine's: the core handles deliveries, confirmations and answers.
            MeshMsg::Replay { .. }
            | MeshMsg::HistoryPage { .. }
            | MeshMsg::Deliver { .. }
            | MeshMsg::InterestConfirmed { .. }
            | MeshMsg::Published { .. }
            | MeshMsg::Shutdown => None,
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
    ) -> Option<Resumed<Bytes>> {
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
    ) -> Option<Option<Page<Bytes>>> {
        let owner = self.owner(topic);
        if owner == self.shard {
            return Some(self.history.read(topic, after, limit, self.now_ms));
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
        None
    }

    fn tick(&mut self, now_ms: u64) {
        self.now_ms = now_ms;
        let _expired = self.history.expire(now_ms, EXPIRE_PER_TICK);
    }

    fn topic_count(&self) -> usize {
        self.owned.topic_count()
    }
}
