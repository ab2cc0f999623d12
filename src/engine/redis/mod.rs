//! The Redis engine (issue 13): crier nodes share topics through Redis. Each publish runs one
//! Lua script in Redis, atomically per topic (seq, epoch, history stream, PUBLISH); each node
//! subscribes to the channels of the topics its connections want and fans a message out to its
//! interested shards as one prepared frame, exactly like a local delivery.
//!
//! - [`RedisEngine`] is a shard's side: sans-IO like every engine. It gathers publishes and
//!   interest changes during a loop turn and hands them over as one batch through a bounded
//!   channel at the end of the turn ([`Engine::flush`]); it never blocks. While Redis is
//!   unreachable it refuses publishes at once (`engine_unavailable`).
//! - `thread` is the node's one engine thread: a current-thread tokio runtime that talks to
//!   Redis and sends `Deliver`, `Published`, `PublishFailed` and `InterestConfirmed` to the
//!   shards' inboxes, waking them like any peer.
//! - `node` holds the thread's decisions (order, gaps, epochs, held acks) without I/O;
//!   `script` the keys, channel encoding and Lua; `status` what the thread reports.

mod node;
mod script;
mod status;
mod thread;

use std::io;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use serde_json::value::RawValue;
use tokio::sync::mpsc;

use crate::broker::history::{HistoryPolicy, Resumed, Since};
use crate::broker::Outputs;
use crate::mesh::{ConnRef, MeshMsg, Payload, PeerLink, ReplyTo};
use crate::proto::deflate::DeliveryFrames;
use crate::topic::topic_hash;

use super::{
    Engine, HistoryRead, Interest, InterestFilter, PayloadRef, Refused, Routed, Sequenced,
};

pub use status::{EngineMetric, EngineStatus};

/// How the node reaches Redis and what it keeps there.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `redis://host:port[/db]`: one for a single instance, the seed list for Cluster.
    pub urls: Vec<String>,
    /// Talk Redis Cluster (SSUBSCRIBE/SPUBLISH, slots).
    pub cluster: bool,
    /// Prefix of every key and channel.
    pub prefix: String,
    /// What each topic keeps in its stream (`--history-size`, `--history-ttl`, `[[topics]]`)
    /// and the most one resume replays.
    pub history: HistoryPolicy,
    /// How long one Redis command may take before the connection is counted as lost.
    pub timeout: Duration,
    /// Pause between connection attempts while Redis is unreachable.
    pub reconnect_interval: Duration,
    /// Batches the channel from the shards holds.
    pub queue_batches: usize,
    /// Each shard's inbox budget (`--inbox-budget-bytes`), kept by the engine's thread too.
    pub inbox_budget_bytes: usize,
}

impl Settings {
    /// How long a topic's meta (seq, epoch) lives without a publish; the node refreshes it for
    /// topics it listens to, so a quiet topic keeps its seq while it has subscribers.
    pub fn meta_ttl(&self) -> Duration {
        let longest_ms = self.history.ttl_classes_ms().iter().copied().max();
        Duration::from_millis(longest_ms.unwrap_or(0)).max(Duration::from_secs(300))
    }
}

/// Work a shard hands to the engine thread.
#[derive(Debug)]
pub enum Request {
    Publish {
        topic: Box<str>,
        payload: Payload,
        reply: ReplyTo,
    },
    Interest {
        topic: Box<str>,
        shard: u16,
        interested: bool,
    },
    /// A connection subscribes resuming from `since` (see [`Engine::resume`]).
    Resume {
        topic: Box<str>,
        waiter: node::Waiter,
    },
}

/// What every shard holds to reach the engine thread.
#[derive(Debug, Clone)]
pub struct EngineLink {
    sender: mpsc::Sender<Vec<Request>>,
    status: Arc<EngineStatus>,
}

/// The running engine thread of a node.
#[derive(Debug)]
pub struct RedisHandle {
    pub link: EngineLink,
    pub status: Arc<EngineStatus>,
    pub thread: JoinHandle<()>,
}

/// Starts the node's engine thread. It connects in the background; until it does, publishes
/// are refused with `engine_unavailable`.
pub fn start(
    settings: Settings,
    peers: Arc<[PeerLink]>,
    unready_after: Duration,
) -> io::Result<RedisHandle> {
    let status = Arc::new(EngineStatus::new(unready_after));
    let (sender, receiver) = mpsc::channel(settings.queue_batches.max(1));
    let thread = thread::spawn(settings, peers, status.clone(), receiver)?;
    Ok(RedisHandle {
        link: EngineLink {
            sender,
            status: status.clone(),
        },
        status,
        thread,
    })
}

/// A shard's side of the Redis engine. See the module documentation.
#[derive(Debug)]
pub struct RedisEngine {
    shard: u16,
    link: EngineLink,
    /// Gathered during the turn; handed over by `flush`.
    batch: Vec<Request>,
    /// Topics this shard told the engine it wants.
    topics: usize,
    /// Shared by the node's shards: which topics some shard of this node listens to.
    filter: Arc<InterestFilter>,
}

impl RedisEngine {
    pub fn new(shard: usize, link: EngineLink, filter: Arc<InterestFilter>) -> RedisEngine {
        RedisEngine {
            shard: shard as u16,
            link,
            batch: Vec::new(),
            topics: 0,
            filter,
        }
    }

    fn listen(&mut self, topic: &str, interested: bool) {
        let hash = topic_hash(topic);
        if interested {
            self.topics += 1;
            self.filter.hold(hash);
        } else {
            self.topics = self.topics.saturating_sub(1);
            self.filter.release(hash);
        }
    }
}

impl Engine for RedisEngine {
    fn publish<O: Outputs>(
        &mut self,
        topic: &str,
        payload: PayloadRef<'_>,
        reply: ReplyTo,
        _out: &mut O,
    ) -> Routed {
        if !self.link.status.is_up() {
            return Routed::Unavailable(reply);
        }
        self.batch.push(Request::Publish {
            topic: topic.into(),
            payload: payload.to_owned(),
            reply,
        });
        Routed::Forwarded
    }

    fn set_interest<O: Outputs>(
        &mut self,
        topic: &str,
        interested: bool,
        _out: &mut O,
    ) -> Interest {
        self.listen(topic, interested);
        self.batch.push(Request::Interest {
            topic: topic.into(),
            shard: self.shard,
            interested,
        });
        if interested {
            Interest::Pending
        } else {
            Interest::Live
        }
    }

    fn on_message<O: Outputs>(
        &mut self,
        _msg: MeshMsg,
        _out: &mut O,
    ) -> Option<(Box<str>, Sequenced)> {
        // Publishes and interest never travel between shards with this engine.
        None
    }

    fn resume<O: Outputs>(
        &mut self,
        topic: &str,
        since: Since,
        conn: ConnRef,
        id: Option<Box<RawValue>>,
        confirms_interest: bool,
        _out: &mut O,
    ) -> Option<Resumed<DeliveryFrames>> {
        if confirms_interest {
            // Released by the `set_interest(false)` of this shard's last unsubscribe.
            self.listen(topic, true);
        }
        self.batch.push(Request::Resume {
            topic: topic.into(),
            waiter: node::Waiter {
                conn,
                id,
                since,
                confirms_interest,
            },
        });
        None
    }

    fn read_history<O: Outputs>(
        &mut self,
        _topic: &str,
        _after: u64,
        _limit: usize,
        _conn: ConnRef,
        _out: &mut O,
    ) -> HistoryRead {
        // The topic's stream is in Redis; reading it over HTTP is not built yet (a read through
        // the engine thread, like a resume's, that starts nothing).
        HistoryRead::Unsupported
    }

    fn tick(&mut self, _now_ms: u64) {
        // History lives in Redis, which expires it.
    }

    fn topic_limit_reached(&self, topic: &str, max_topics: usize) -> bool {
        // The node's topics as the engine thread last counted them (lags by a tick).
        let topics = usize::try_from(self.link.status.get(EngineMetric::Topics)).unwrap_or(0);
        topics.max(self.topics) >= max_topics && !self.filter.may_be_heard(topic_hash(topic))
    }

    fn topic_count(&self) -> usize {
        self.topics
    }

    fn has_pending(&self) -> bool {
        !self.batch.is_empty()
    }

    fn flush<O: Outputs>(&mut self, refused: &mut Vec<(ReplyTo, Refused)>, _out: &mut O) {
        let batch = std::mem::take(&mut self.batch);
        let (batch, why) = match self.link.sender.try_send(batch) {
            Ok(()) => return,
            Err(mpsc::error::TrySendError::Full(batch)) => (batch, Refused::Overloaded),
            Err(mpsc::error::TrySendError::Closed(batch)) => (batch, Refused::Unavailable),
        };
        for request in batch {
            match request {
                Request::Publish { reply, .. } => refused.push((reply, why)),
                // Interest changes and resumes must not be lost: retried at the end of the
                // next turn.
                other @ (Request::Interest { .. } | Request::Resume { .. }) => {
                    self.batch.push(other)
                }
            }
        }
    }
}
