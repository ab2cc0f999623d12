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

use tokio::sync::mpsc;

use crate::broker::Outputs;
use crate::mesh::{MeshMsg, Payload, PeerLink, ReplyTo};

use super::{Engine, Interest, PayloadRef, Refused, Routed, Sequenced};

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
    /// Messages kept per topic in its stream (0: no history).
    pub history_size: usize,
    /// How long a topic's stream is kept after its last publish.
    pub history_ttl: Duration,
    /// How long one Redis command may take before the connection is counted as lost.
    pub timeout: Duration,
    /// Pause between connection attempts while Redis is unreachable.
    pub reconnect_interval: Duration,
    /// Batches the channel from the shards holds.
    pub queue_batches: usize,
}

impl Settings {
    /// How long a topic's meta (seq, epoch) lives without a publish; the node refreshes it for
    /// topics it listens to, so a quiet topic keeps its seq while it has subscribers.
    pub fn meta_ttl(&self) -> Duration {
        self.history_ttl.max(Duration::from_secs(300))
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
}

impl RedisEngine {
    pub fn new(shard: usize, link: EngineLink) -> RedisEngine {
        RedisEngine {
            shard: shard as u16,
            link,
            batch: Vec::new(),
            topics: 0,
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
        if interested {
            self.topics += 1;
        } else {
            self.topics = self.topics.saturating_sub(1);
        }
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
                // Interest changes must not be lost: retried at the end of the next turn.
                interest @ Request::Interest { .. } => self.batch.push(interest),
            }
        }
    }
}
