//! The node's engine thread: the only code that talks to Redis. A current-thread tokio runtime
//! (the `redis` crate's async client needs one; one thread per node is all the engine needs,
//! and the shards never see it) runs one loop that owns every piece of state, and small tasks
//! for the round trips, which report back through a channel. Batches from the shards become
//! one pipeline of publish scripts; messages from Redis go through `node::Node` and leave as
//! `Deliver`s with one prepared frame per message, shared by the interested shards.
//!
//! Connection loss (an I/O error, a timeout, a closed connection) turns the engine down: the
//! shards refuse publishes with `engine_unavailable`, the loop reconnects every
//! `reconnect_interval`, and on success resubscribes every topic and catches each up from its
//! stream before delivering live messages again. Each change is logged once and counted.

use std::collections::HashMap;
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, ErrorKind, Pipeline, PushInfo, PushKind, RedisError, RedisFuture, Value};
use tokio::sync::mpsc;

use crate::broker::history::{Epoch, EpochGen, Resumed};
use crate::mesh::{MeshMsg, Payload, PeerLink, ReplyTo, UNSTAMPED_US};
use crate::proto::deflate::DeliveryFrames;

use super::node::{Node, NodeEvent, NodeOut, Waiter};
use super::script::{self, TopicKeys};
use super::status::{EngineMetric, EngineStatus};
use super::{Request, Settings};

/// Publishes in flight at once (each batch is one pipeline); past it the loop stops taking
/// batches from the shards, whose channel then fills and refuses with `overloaded`.
const MAX_BATCHES_IN_FLIGHT: usize = 16;
/// How often held acks, readiness and reconnects are looked at.
const TICK: Duration = Duration::from_millis(50);
/// How often the meta of every topic the node listens to is refreshed.
const META_REFRESH: Duration = Duration::from_secs(60);

pub(super) fn spawn(
    settings: Settings,
    peers: Arc<[PeerLink]>,
    status: Arc<EngineStatus>,
    requests: mpsc::Receiver<Vec<Request>>,
) -> io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("crier-engine".into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_io()
                .enable_time()
                .build()
            {
                Ok(runtime) => runtime,
                Err(e) => {
                    eprintln!("crier: engine redis: cannot start its runtime: {e}");
                    return;
                }
            };
            let driver = Driver::new(settings, peers, status, requests);
            runtime.block_on(driver.run());
        })
}

/// One connection, to a single instance or a Cluster; both pipeline concurrent requests.
#[derive(Clone)]
enum Conn {
    Single(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(cmd, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

/// A publish on its way to Redis.
struct Pending {
    topic: Box<str>,
    payload: Payload,
    reply: ReplyTo,
    /// The topic's history policy: messages kept, and for how long (ms).
    history_size: usize,
    history_ttl_ms: u64,
}

/// A resume's stream read: (top, epoch, oldest kept seq, entries from the asked seq on).
type ResumeRead = (u64, String, Option<u64>, Vec<(u64, Payload)>);

/// A topic's top as read after subscribing: (seq, epoch).
type Top = Result<(u64, String), RedisError>;

/// What a task reports back to the loop. `generation` tells answers from an older connection.
enum Event {
    Connected {
        generation: u64,
        conn: Conn,
        pushes: mpsc::UnboundedReceiver<PushInfo>,
    },
    ConnectFailed(RedisError),
    Published {
        generation: u64,
        batch: Vec<Pending>,
        results: Vec<Result<(u64, String), RedisError>>,
    },
    Subscribed {
        generation: u64,
        tops: Vec<(Box<str>, Top)>,
    },
    Fetched {
        generation: u64,
        topic: Box<str>,
        to: u64,
        result: Result<(String, Vec<(u64, Payload)>), RedisError>,
    },
    ResumeRead {
        generation: u64,
        topic: Box<str>,
        result: Result<ResumeRead, RedisError>,
    },
    /// A command failed in a way that means the connection is gone.
    Lost {
        generation: u64,
        error: RedisError,
    },
}

struct Driver {
    settings: Settings,
    peers: Arc<[PeerLink]>,
    status: Arc<EngineStatus>,
    requests: mpsc::Receiver<Vec<Request>>,
    events_tx: mpsc::UnboundedSender<Event>,
    events: mpsc::UnboundedReceiver<Event>,
    conn: Option<Conn>,
    pushes: Option<mpsc::UnboundedReceiver<PushInfo>>,
    /// Bumped at every new connection.
    generation: u64,
    connecting: bool,
    last_attempt: Option<Instant>,
    last_error: Option<String>,
    node: Node,
    effects: Effects,
    /// Channel name -> topic, for the topics the node listens to.
    channels: HashMap<Box<[u8]>, Box<str>>,
    batches_in_flight: usize,
    queued_publishes: u64,
    shas: Shas,
    started: Instant,
    last_refresh: Instant,
    epochs: EpochGen,
}

/// The scripts' SHA1s (EVALSHA; a NOSCRIPT answer falls back to EVAL, which loads it).
struct Shas {
    publish: String,
    ensure: String,
    fetch: String,
    resume: String,
}

/// What `node::Node` asked for, gathered and then carried out by the loop.
#[derive(Default)]
struct Effects {
    outboxes: Vec<Vec<MeshMsg>>,
    subscribe: Vec<Box<str>>,
    unsubscribe: Vec<Box<str>>,
    fetch: Vec<(Box<str>, u64, u64)>,
    resume_reads: Vec<(Box<str>, u64)>,
    counts: Vec<(NodeEvent, u64)>,
}

impl NodeOut for Effects {
    fn deliver(&mut self, shard: u16, topic: &str, frame: Bytes, epoch: Option<Epoch>) {
        if let Some(outbox) = self.outboxes.get_mut(usize::from(shard)) {
            // Redis-mode deliveries go out plain: the engine thread deflates nothing (yet), so
            // compressing subscribers get the plain frame, which is always valid for them.
            outbox.push(MeshMsg::Deliver {
                topic: topic.into(),
                frames: DeliveryFrames::plain(frame),
                // Sequenced in Redis, on no clock of ours: not part of the fan-out metric.
                sequenced_us: UNSTAMPED_US,
                epoch,
            });
        }
    }

    fn confirm(&mut self, shard: u16, topic: &str) {
        if let Some(outbox) = self.outboxes.get_mut(usize::from(shard)) {
            outbox.push(MeshMsg::InterestConfirmed {
                topic: topic.into(),
                count: 1,
            });
        }
    }

    fn answer(&mut self, reply: ReplyTo, seq: u64, epoch: Epoch) {
        if let Some(shard) = reply_shard(&reply) {
            if let Some(outbox) = self.outboxes.get_mut(shard) {
                outbox.push(MeshMsg::Published {
                    reply,
                    seq,
                    epoch: Some(epoch),
                });
            }
        }
    }

    fn subscribe(&mut self, topic: &str) {
        self.subscribe.push(topic.into());
    }

    fn unsubscribe(&mut self, topic: &str) {
        self.unsubscribe.push(topic.into());
    }

    fn fetch(&mut self, topic: &str, from: u64, to: u64) {
        self.fetch.push((topic.into(), from, to));
    }

    fn read_for_resume(&mut self, topic: &str, from: u64) {
        self.resume_reads.push((topic.into(), from));
    }

    fn replay(&mut self, topic: &str, waiter: Waiter, resumed: Resumed<Bytes>) {
        if let Some(outbox) = self.outboxes.get_mut(usize::from(waiter.conn.shard)) {
            outbox.push(MeshMsg::Replay {
                topic: topic.into(),
                conn: waiter.conn,
                id: waiter.id,
                resumed: Resumed {
                    epoch: resumed.epoch,
                    top: resumed.top,
                    recovered: resumed.recovered,
                    replay: resumed
                        .replay
                        .into_iter()
                        .map(DeliveryFrames::plain)
                        .collect(),
                },
                confirms_interest: waiter.confirms_interest,
            });
        }
    }

    fn count(&mut self, event: NodeEvent, n: u64) {
        self.counts.push((event, n));
    }
}

impl Effects {
    /// Answers a publish nobody heard: seq 0, no epoch.
    fn answer_unheard(&mut self, reply: ReplyTo) {
        if let Some(shard) = reply_shard(&reply) {
            if let Some(outbox) = self.outboxes.get_mut(shard) {
                outbox.push(MeshMsg::Published {
                    reply,
                    seq: 0,
                    epoch: None,
                });
            }
        }
    }
}

/// A topic whose meta holds an epoch crier would not make: someone else writes crier's keys.
fn foreign_epoch(topic: &str) -> RedisError {
    RedisError::from((
        ErrorKind::TypeError,
        "a topic's epoch in Redis is not one crier makes",
        topic.to_string(),
    ))
}

fn reply_shard(reply: &ReplyTo) -> Option<usize> {
    match reply {
        ReplyTo::Nobody => None,
        ReplyTo::WebSocket { conn, .. } | ReplyTo::Http { conn } => Some(usize::from(conn.shard)),
    }
}

/// Whether an error means the connection (not one command) failed.
fn is_connection_error(error: &RedisError) -> bool {
    error.is_io_error()
        || error.is_timeout()
        || error.is_connection_dropped()
        || error.is_unrecoverable_error()
        || matches!(
            error.kind(),
            ErrorKind::ClusterDown | ErrorKind::MasterDown | ErrorKind::TryAgain
        )
}

impl Driver {
    fn new(
        settings: Settings,
        peers: Arc<[PeerLink]>,
        status: Arc<EngineStatus>,
        requests: mpsc::Receiver<Vec<Request>>,
    ) -> Driver {
        let (events_tx, events) = mpsc::unbounded_channel();
        let effects = Effects {
            outboxes: (0..peers.len()).map(|_| Vec::new()).collect(),
            ..Effects::default()
        };
        let sha = |text: &str| redis::Script::new(text).get_hash().to_string();
        let max_replay_messages = settings.history.max_replay_messages;
        Driver {
            shas: Shas {
                publish: sha(script::PUBLISH),
                ensure: sha(script::ENSURE),
                fetch: sha(script::FETCH),
                resume: sha(script::RESUME),
            },
            settings,
            peers,
            status,
            requests,
            events_tx,
            events,
            conn: None,
            pushes: None,
            generation: 0,
            connecting: false,
            last_attempt: None,
            last_error: None,
            node: Node::new(max_replay_messages),
            effects,
            channels: HashMap::new(),
            batches_in_flight: 0,
            queued_publishes: 0,
            started: Instant::now(),
            last_refresh: Instant::now(),
            epochs: EpochGen::new(EpochGen::os_seed()),
        }
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    async fn run(mut self) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        self.connect();
        loop {
            let take_requests = self.batches_in_flight < MAX_BATCHES_IN_FLIGHT;
            let outbox_waiting = self.effects.outboxes.iter().any(|o| !o.is_empty());
            tokio::select! {
                batch = self.requests.recv(), if take_requests => match batch {
                    Some(batch) => self.on_requests(batch),
                    // Every shard is gone: the server is shutting down.
                    None => return,
                },
                Some(push) = recv_push(&mut self.pushes) => self.on_push(push),
                Some(event) = self.events.recv() => self.on_event(event),
                _ = tick.tick() => self.on_tick(),
                _ = tokio::time::sleep(Duration::from_millis(1)), if outbox_waiting => {}
            }
            self.carry_out();
        }
    }

    /// Starts a connection attempt in the background.
    fn connect(&mut self) {
        if self.connecting {
            return;
        }
        self.connecting = true;
        self.last_attempt = Some(Instant::now());
        let settings = self.settings.clone();
        let events = self.events_tx.clone();
        let generation = self.generation + 1;
        tokio::spawn(async move {
            let event = match open(&settings).await {
                Ok((conn, pushes)) => Event::Connected {
                    generation,
                    conn,
                    pushes,
                },
                Err(error) => Event::ConnectFailed(error),
            };
            let _ = events.send(event);
        });
    }

    fn on_requests(&mut self, batch: Vec<Request>) {
        let mut publishes = Vec::new();
        for request in batch {
            match request {
                Request::Publish {
                    topic,
                    payload,
                    reply,
                } => {
                    let policy = self.settings.history.for_topic(&topic);
                    publishes.push(Pending {
                        topic,
                        payload,
                        reply,
                        history_size: policy.size,
                        history_ttl_ms: policy.ttl_ms,
                    })
                }
                Request::Interest {
                    topic,
                    shard,
                    interested,
                } => self
                    .node
                    .interest(&topic, shard, interested, &mut self.effects),
                Request::Resume { topic, waiter } => {
                    self.node.resume(&topic, waiter, &mut self.effects)
                }
            }
        }
        if publishes.is_empty() {
            return;
        }
        let Some(conn) = self.conn.clone() else {
            self.refuse(publishes);
            return;
        };
        self.batches_in_flight += 1;
        self.queued_publishes += publishes.len() as u64;
        self.status
            .set(EngineMetric::QueueDepth, self.queued_publishes);
        let events = self.events_tx.clone();
        let generation = self.generation;
        let args = PublishArgs {
            sha: self.shas.publish.clone(),
            prefix: self.settings.prefix.clone(),
            meta_ttl_ms: self.settings.meta_ttl().as_millis() as u64,
            epoch: self.epochs.next_epoch().as_str().to_string(),
            cluster: self.settings.cluster,
        };
        let status = self.status.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let results = publish(conn, &args, &publishes).await;
            status.record_rtt(started.elapsed());
            let _ = events.send(Event::Published {
                generation,
                batch: publishes,
                results,
            });
        });
    }

    /// Publishes that never reached Redis: `engine_unavailable`.
    fn refuse(&mut self, publishes: Vec<Pending>) {
        self.status
            .add(EngineMetric::PublishFailed, publishes.len() as u64);
        for p in publishes {
            if let Some(shard) = reply_shard(&p.reply) {
                self.effects.outboxes[shard].push(MeshMsg::PublishFailed { reply: p.reply });
            }
        }
    }

    fn on_push(&mut self, push: PushInfo) {
        match push.kind {
            PushKind::Message | PushKind::SMessage => {
                let mut data = push.data.into_iter();
                let (Some(Value::BulkString(channel)), Some(Value::BulkString(body))) =
                    (data.next(), data.next())
                else {
                    return;
                };
                let Some(topic) = self.channels.get(channel.as_slice()) else {
                    return;
                };
                let Ok(msg) = script::decode(Bytes::from(body)) else {
                    return;
                };
                self.status.add(EngineMetric::MessagesIn, 1);
                let topic = topic.clone();
                self.node.message(&topic, msg, &mut self.effects);
            }
            PushKind::Disconnection => {
                let error = RedisError::from(io::Error::new(
                    io::ErrorKind::ConnectionReset,
                    "connection closed",
                ));
                self.go_down(error);
            }
            _ => {}
        }
    }

    fn on_event(&mut self, event: Event) {
        match event {
            Event::Connected {
                generation,
                conn,
                pushes,
            } => {
                self.connecting = false;
                self.generation = generation;
                self.conn = Some(conn);
                self.pushes = Some(pushes);
                self.status.set_up(true);
                self.status.add(EngineMetric::Connected, 1);
                eprintln!(
                    "crier: engine redis: connected to {}",
                    self.settings.urls.join(",")
                );
                self.last_error = None;
                // Everything the node listens to is subscribed again and caught up.
                self.node.disconnected();
                self.effects.subscribe = self.node.topics().map(Into::into).collect();
                self.effects.unsubscribe.clear();
                self.effects.fetch.clear();
            }
            Event::ConnectFailed(error) => {
                self.connecting = false;
                self.status.add(EngineMetric::ConnectFailures, 1);
                let text = error.to_string();
                if self.last_error.as_deref() != Some(&text) {
                    eprintln!("crier: engine redis: cannot connect: {text}");
                    self.last_error = Some(text);
                }
            }
            Event::Published {
                generation,
                batch,
                results,
            } => {
                self.batches_in_flight -= 1;
                self.queued_publishes -= batch.len() as u64;
                self.status
                    .set(EngineMetric::QueueDepth, self.queued_publishes);
                let now_ms = self.now_ms();
                let mut lost = None;
                for (p, result) in batch.into_iter().zip(results) {
                    match result {
                        Ok((seq, epoch)) => match Epoch::parse(&epoch) {
                            Ok(epoch) if seq > 0 => {
                                self.status.add(EngineMetric::Published, 1);
                                self.node.published(
                                    &p.topic,
                                    seq,
                                    epoch,
                                    p.reply,
                                    now_ms,
                                    &mut self.effects,
                                );
                            }
                            // Unheard: no node listens and nothing is kept (seq 0, no
                            // epoch), like the local engine's answer.
                            _ => {
                                self.status.add(EngineMetric::Unheard, 1);
                                self.effects.answer_unheard(p.reply);
                            }
                        },
                        Err(error) => {
                            if is_connection_error(&error) {
                                lost = Some(error);
                            }
                            self.refuse(vec![p]);
                        }
                    }
                }
                if let Some(error) = lost {
                    if generation == self.generation {
                        self.go_down(error);
                    }
                }
            }
            Event::Subscribed { generation, tops } => {
                if generation != self.generation {
                    return;
                }
                for (topic, top) in tops {
                    match top {
                        Ok((seq, epoch)) => match Epoch::parse(&epoch) {
                            Ok(epoch) => {
                                self.node.subscribed(&topic, seq, epoch, &mut self.effects)
                            }
                            Err(_) => {
                                self.go_down(foreign_epoch(&topic));
                                return;
                            }
                        },
                        Err(error) => {
                            self.go_down(error);
                            return;
                        }
                    }
                }
            }
            Event::Fetched {
                generation,
                topic,
                to,
                result,
            } => {
                if generation != self.generation {
                    return;
                }
                match result {
                    Ok((epoch, entries)) => {
                        let epoch = Epoch::parse(&epoch).ok();
                        self.node
                            .fetched(&topic, epoch, entries, to, &mut self.effects)
                    }
                    Err(error) => self.go_down(error),
                }
            }
            Event::ResumeRead {
                generation,
                topic,
                result,
            } => {
                if generation != self.generation {
                    return;
                }
                match result {
                    Ok((top, epoch, oldest, entries)) => match Epoch::parse(&epoch) {
                        Ok(epoch) => self.node.resume_read(
                            &topic,
                            epoch,
                            top,
                            oldest,
                            entries,
                            &mut self.effects,
                        ),
                        Err(_) => self.go_down(foreign_epoch(&topic)),
                    },
                    Err(error) => self.go_down(error),
                }
            }
            Event::Lost { generation, error } => {
                if generation == self.generation {
                    self.go_down(error);
                }
            }
        }
    }

    /// Redis is unreachable: publishes are refused until a reconnect has resubscribed.
    fn go_down(&mut self, error: RedisError) {
        if self.conn.is_none() {
            return;
        }
        eprintln!("crier: engine redis: lost the connection: {error}");
        self.conn = None;
        self.pushes = None;
        self.generation += 1;
        self.status.set_up(false);
        self.status.add(EngineMetric::Disconnected, 1);
        self.node.disconnected();
        self.effects.subscribe.clear();
        self.effects.unsubscribe.clear();
        self.effects.fetch.clear();
        self.effects.resume_reads.clear();
    }

    fn on_tick(&mut self) {
        let now_ms = self.now_ms();
        self.node.tick(now_ms, &mut self.effects);
        if self.conn.is_none()
            && !self.connecting
            && self
                .last_attempt
                .is_none_or(|at| at.elapsed() >= self.settings.reconnect_interval)
        {
            self.connect();
        }
        if self.conn.is_some() && self.last_refresh.elapsed() >= META_REFRESH {
            self.last_refresh = Instant::now();
            // Keeps the seq of quiet topics that still have listeners: ENSURE refreshes
            // the meta TTL; the answers are the tops the node already has.
            let topics: Vec<Box<str>> = self.node.topics().map(Into::into).collect();
            if let Some(conn) = self.conn.clone() {
                let args = self.ensure_args();
                tokio::spawn(async move {
                    let _ = ensure(conn, &args, &topics).await;
                });
            }
        }
        self.status
            .set(EngineMetric::Topics, self.node.topic_count() as u64);
    }

    fn ensure_args(&mut self) -> EnsureArgs {
        EnsureArgs {
            sha: self.shas.ensure.clone(),
            prefix: self.settings.prefix.clone(),
            epoch: self.epochs.next_epoch().as_str().to_string(),
            meta_ttl_ms: self.settings.meta_ttl().as_millis() as u64,
        }
    }

    /// Carries out what the node decided: messages to shards, (un)subscribes, stream reads.
    fn carry_out(&mut self) {
        for (event, n) in self.effects.counts.drain(..) {
            let metric = match event {
                NodeEvent::Recovered => EngineMetric::Recovered,
                NodeEvent::Lost => EngineMetric::Lost,
                NodeEvent::EpochReset => EngineMetric::EpochResets,
                NodeEvent::Duplicate => EngineMetric::Duplicates,
            };
            self.status.add(metric, n);
        }
        for (shard, outbox) in self.effects.outboxes.iter_mut().enumerate() {
            if outbox.is_empty() {
                continue;
            }
            let batch = std::mem::take(outbox);
            let offered = self.peers[shard].offer(batch, self.settings.inbox_budget_bytes);
            // A full inbox: deliveries are dropped, counted and announced (a `dropped` notice
            // in their place); answers, confirmations and replays wait for the next try,
            // ahead of anything newer.
            let dropped = offered
                .refused
                .iter()
                .filter(|m| matches!(m, MeshMsg::Deliver { .. }))
                .count();
            self.status
                .add(EngineMetric::DeliverDropped, dropped as u64);
            *outbox = offered.kept;
        }
        let Some(conn) = self.conn.clone() else {
            return;
        };
        let generation = self.generation;
        if !self.effects.subscribe.is_empty() || !self.effects.unsubscribe.is_empty() {
            let subscribe = std::mem::take(&mut self.effects.subscribe);
            let unsubscribe = std::mem::take(&mut self.effects.unsubscribe);
            let prefix = &self.settings.prefix;
            let mut leave = Vec::new();
            for topic in &unsubscribe {
                let channel = TopicKeys::new(prefix, topic).channel;
                self.channels.remove(channel.as_bytes());
                leave.push(channel);
            }
            let mut join = Vec::new();
            for topic in &subscribe {
                let channel = TopicKeys::new(prefix, topic).channel;
                self.channels
                    .insert(channel.as_bytes().into(), topic.clone());
                join.push(channel);
            }
            let args = self.ensure_args();
            let events = self.events_tx.clone();
            let status = self.status.clone();
            tokio::spawn(async move {
                let started = Instant::now();
                let outcome = resubscribe(conn, &args, &leave, &join, &subscribe).await;
                status.record_rtt(started.elapsed());
                let event = match outcome {
                    Ok(tops) => Event::Subscribed { generation, tops },
                    Err(error) => Event::Lost { generation, error },
                };
                let _ = events.send(event);
            });
        }
        let Some(conn) = self.conn.clone() else {
            return;
        };
        for (topic, from) in self.effects.resume_reads.drain(..) {
            let conn = conn.clone();
            let events = self.events_tx.clone();
            let keys = TopicKeys::new(&self.settings.prefix, &topic);
            let args = ResumeArgs {
                sha: self.shas.resume.clone(),
                epoch: self.epochs.next_epoch().as_str().to_string(),
                meta_ttl_ms: self.settings.meta_ttl().as_millis() as u64,
            };
            let status = self.status.clone();
            tokio::spawn(async move {
                let started = Instant::now();
                let result = read_for_resume(conn, &args, &keys, from).await;
                status.record_rtt(started.elapsed());
                let _ = events.send(Event::ResumeRead {
                    generation,
                    topic,
                    result,
                });
            });
        }
        for (topic, from, to) in self.effects.fetch.drain(..) {
            let conn = conn.clone();
            let events = self.events_tx.clone();
            let keys = TopicKeys::new(&self.settings.prefix, &topic);
            let sha = self.shas.fetch.clone();
            let status = self.status.clone();
            tokio::spawn(async move {
                let started = Instant::now();
                let result = fetch(conn, &sha, &keys, from, to).await;
                status.record_rtt(started.elapsed());
                let _ = events.send(Event::Fetched {
                    generation,
                    topic,
                    to,
                    result,
                });
            });
        }
    }
}

async fn recv_push(pushes: &mut Option<mpsc::UnboundedReceiver<PushInfo>>) -> Option<PushInfo> {
    match pushes {
        Some(pushes) => pushes.recv().await,
        None => std::future::pending().await,
    }
}

/// Connects with RESP3, so pub/sub messages arrive as pushes on the same multiplexed
/// connection as the commands.
async fn open(
    settings: &Settings,
) -> Result<(Conn, mpsc::UnboundedReceiver<PushInfo>), RedisError> {
    let (tx, rx) = mpsc::unbounded_channel();
    if settings.cluster {
        let client = redis::cluster::ClusterClientBuilder::new(settings.urls.clone())
            .use_protocol(redis::ProtocolVersion::RESP3)
            .push_sender(tx)
            .connection_timeout(settings.timeout)
            .response_timeout(settings.timeout)
            .build()?;
        let mut conn = Conn::Cluster(client.get_async_connection().await?);
        load_scripts(&mut conn).await?;
        return Ok((conn, rx));
    }
    let url = settings
        .urls
        .first()
        .map_or("redis://127.0.0.1:6379", String::as_str);
    let mut info: redis::ConnectionInfo = url.parse()?;
    info.redis.protocol = redis::ProtocolVersion::RESP3;
    let client = redis::Client::open(info)?;
    let config = redis::AsyncConnectionConfig::new()
        .set_push_sender(tx)
        .set_connection_timeout(settings.timeout)
        .set_response_timeout(settings.timeout);
    let conn = client
        .get_multiplexed_async_connection_with_config(&config)
        .await?;
    let mut conn = Conn::Single(conn);
    load_scripts(&mut conn).await?;
    Ok((conn, rx))
}

/// Loads the scripts before any publish: a batch that met NOSCRIPT would run again after
/// later batches had run, out of order.
async fn load_scripts(conn: &mut Conn) -> Result<(), RedisError> {
    for text in [
        script::PUBLISH,
        script::ENSURE,
        script::FETCH,
        script::RESUME,
    ] {
        redis::cmd("SCRIPT")
            .arg("LOAD")
            .arg(text)
            .query_async::<Value>(conn)
            .await?;
    }
    Ok(())
}

struct PublishArgs {
    sha: String,
    prefix: String,
    meta_ttl_ms: u64,
    /// Used only by a topic that has no epoch yet.
    epoch: String,
    cluster: bool,
}

/// `EVALSHA sha` (the script as loaded) or, after a NOSCRIPT answer, `EVAL source` (which
/// also loads it); the caller adds keys and arguments.
fn script_cmd(sha: &str, source: &str, eval: bool) -> Cmd {
    let mut cmd = redis::cmd(if eval { "EVAL" } else { "EVALSHA" });
    cmd.arg(if eval { source } else { sha });
    cmd
}

/// Runs `build(false)` (EVALSHA), and `build(true)` (EVAL) if Redis does not have the script
/// (it restarted, or a new master took over): a NOSCRIPT answer means nothing ran.
async fn run_script<T: redis::FromRedisValue>(
    conn: &mut Conn,
    build: impl Fn(bool) -> Cmd,
) -> Result<T, RedisError> {
    match build(false).query_async(conn).await {
        Err(e) if e.kind() == ErrorKind::NoScriptError => build(true).query_async(conn).await,
        other => other,
    }
}

fn publish_cmd(args: &PublishArgs, p: &Pending, eval: bool) -> Cmd {
    let keys = TopicKeys::new(&args.prefix, &p.topic);
    let mut cmd = script_cmd(&args.sha, script::PUBLISH, eval);
    let data: &[u8] = match &p.payload {
        Payload::Json(b) | Payload::Binary(b) => b,
    };
    cmd.arg(3)
        .arg(keys.meta)
        .arg(keys.stream)
        .arg(keys.channel)
        .arg(script::kind_of(&p.payload))
        .arg(data)
        .arg(p.history_size)
        .arg(p.history_ttl_ms.max(1))
        .arg(args.meta_ttl_ms.max(1))
        .arg(&args.epoch)
        .arg(if args.cluster { "1" } else { "0" });
    cmd
}

/// One pipeline of publish scripts (on Cluster, concurrent commands that the connection to
/// each master pipelines: one pipeline may not span slots). A NOSCRIPT answer (Redis
/// restarted, or a new master) runs the batch again with EVAL, which also loads the script:
/// no script ran, so nothing is published twice.
async fn publish(
    mut conn: Conn,
    args: &PublishArgs,
    batch: &[Pending],
) -> Vec<Result<(u64, String), RedisError>> {
    if !args.cluster {
        for eval in [false, true] {
            let mut pipe = redis::pipe();
            for p in batch {
                pipe.add_command(publish_cmd(args, p, eval));
            }
            match pipe.query_async::<Vec<(u64, String)>>(&mut conn).await {
                Ok(results) => return results.into_iter().map(Ok).collect(),
                Err(e) if e.kind() == ErrorKind::NoScriptError && !eval => continue,
                Err(e) => return batch.iter().map(|_| Err(clone_error(&e))).collect(),
            }
        }
        return Vec::new();
    }
    let futures = batch.iter().map(|p| {
        let mut conn = conn.clone();
        async move { run_script(&mut conn, |eval| publish_cmd(args, p, eval)).await }
    });
    futures_util::future::join_all(futures).await
}

fn clone_error(error: &RedisError) -> RedisError {
    if error.is_io_error() || error.is_connection_dropped() {
        RedisError::from(io::Error::new(
            io::ErrorKind::ConnectionReset,
            error.to_string(),
        ))
    } else if error.is_timeout() {
        RedisError::from(io::Error::new(io::ErrorKind::TimedOut, error.to_string()))
    } else {
        RedisError::from((
            ErrorKind::ResponseError,
            "publish failed",
            error.to_string(),
        ))
    }
}

struct EnsureArgs {
    sha: String,
    prefix: String,
    epoch: String,
    meta_ttl_ms: u64,
}

fn ensure_cmd(args: &EnsureArgs, topic: &str, eval: bool) -> Cmd {
    let keys = TopicKeys::new(&args.prefix, topic);
    let mut cmd = script_cmd(&args.sha, script::ENSURE, eval);
    cmd.arg(2)
        .arg(keys.meta)
        .arg(keys.stream)
        .arg(&args.epoch)
        .arg(args.meta_ttl_ms.max(1));
    cmd
}

/// Every topic's top (seq, epoch), creating its incarnation if missing.
async fn ensure(
    conn: Conn,
    args: &EnsureArgs,
    topics: &[Box<str>],
) -> Vec<Result<(u64, String), RedisError>> {
    let futures = topics.iter().map(|topic| {
        let mut conn = conn.clone();
        async move { run_script(&mut conn, |eval| ensure_cmd(args, topic, eval)).await }
    });
    futures_util::future::join_all(futures).await
}

/// UNSUBSCRIBE what the node left, SUBSCRIBE what it joined (one command each on a single
/// instance; per channel on Cluster, where SSUBSCRIBE may not span slots), and only once Redis
/// confirmed the subscriptions, read the tops: nothing published in between is lost.
async fn resubscribe(
    mut conn: Conn,
    args: &EnsureArgs,
    leave: &[String],
    join: &[String],
    topics: &[Box<str>],
) -> Result<Vec<(Box<str>, Top)>, RedisError> {
    match &mut conn {
        Conn::Single(c) => {
            if !leave.is_empty() {
                c.unsubscribe(leave).await?;
            }
            if !join.is_empty() {
                c.subscribe(join).await?;
            }
        }
        Conn::Cluster(c) => {
            for channel in leave {
                c.sunsubscribe(channel).await?;
            }
            let joins = join.iter().map(|channel| {
                let mut c = c.clone();
                async move { c.ssubscribe(channel).await }
            });
            for result in futures_util::future::join_all(joins).await {
                result?;
            }
        }
    }
    let tops = ensure(conn, args, topics).await;
    Ok(topics.iter().cloned().zip(tops).collect())
}

/// Reads seqs `from..=to` of a topic's stream with its epoch (see `script::FETCH`).
async fn fetch(
    mut conn: Conn,
    sha: &str,
    keys: &TopicKeys,
    from: u64,
    to: u64,
) -> Result<(String, Vec<(u64, Payload)>), RedisError> {
    let build = |eval: bool| {
        let mut cmd = script_cmd(sha, script::FETCH, eval);
        cmd.arg(2)
            .arg(&keys.meta)
            .arg(&keys.stream)
            .arg(from)
            .arg(to)
            .arg(super::node::FETCH_BATCH);
        cmd
    };
    let value: Value = run_script(&mut conn, build).await?;
    parse_fetch(value).ok_or_else(|| {
        RedisError::from((
            ErrorKind::TypeError,
            "unexpected answer to the fetch script",
        ))
    })
}

fn bulk(value: Value) -> Option<Vec<u8>> {
    match value {
        Value::BulkString(bytes) => Some(bytes),
        Value::SimpleString(s) => Some(s.into_bytes()),
        _ => None,
    }
}

fn array(value: Value) -> Option<Vec<Value>> {
    match value {
        Value::Array(items) | Value::Set(items) => Some(items),
        _ => None,
    }
}

/// `{epoch or nil, {{id, {k, kind, d, data}}, ...}}`. A missing epoch (the topic vanished
/// between the gap and the read) reads as the empty epoch, which differs from every real one.
fn parse_fetch(value: Value) -> Option<(String, Vec<(u64, Payload)>)> {
    let mut parts = array(value)?.into_iter();
    let epoch = match parts.next()? {
        Value::Nil => String::new(),
        other => String::from_utf8(bulk(other)?).ok()?,
    };
    let entries = parse_entries(parts.next()?)?;
    Some((epoch, entries))
}

struct ResumeArgs {
    sha: String,
    /// Used only by a topic that has no epoch yet.
    epoch: String,
    meta_ttl_ms: u64,
}

/// A resume's read (see `script::RESUME`).
async fn read_for_resume(
    mut conn: Conn,
    args: &ResumeArgs,
    keys: &TopicKeys,
    from: u64,
) -> Result<ResumeRead, RedisError> {
    let build = |eval: bool| {
        let mut cmd = script_cmd(&args.sha, script::RESUME, eval);
        cmd.arg(2)
            .arg(&keys.meta)
            .arg(&keys.stream)
            .arg(&args.epoch)
            .arg(args.meta_ttl_ms.max(1))
            .arg(from.max(1));
        cmd
    };
    let value: Value = run_script(&mut conn, build).await?;
    parse_resume_read(value).ok_or_else(|| {
        RedisError::from((
            ErrorKind::TypeError,
            "unexpected answer to the resume script",
        ))
    })
}

/// `{top, epoch, oldest id or "", {{id, {k, kind, d, data}}, ...}}`.
fn parse_resume_read(value: Value) -> Option<ResumeRead> {
    let mut parts = array(value)?.into_iter();
    let top = match parts.next()? {
        Value::Int(n) => u64::try_from(n).ok()?,
        other => std::str::from_utf8(&bulk(other)?).ok()?.parse().ok()?,
    };
    let epoch = String::from_utf8(bulk(parts.next()?)?).ok()?;
    let oldest = bulk(parts.next()?)?;
    let oldest = if oldest.is_empty() {
        None
    } else {
        Some(script::seq_of_id(&oldest)?)
    };
    let entries = parse_entries(parts.next()?)?;
    Some((top, epoch, oldest, entries))
}

/// Stream entries `{{id, {k, kind, d, data}}, ...}` as (seq, payload).
fn parse_entries(value: Value) -> Option<Vec<(u64, Payload)>> {
    let mut entries = Vec::new();
    for entry in array(value)? {
        let mut entry = array(entry)?.into_iter();
        let seq = script::seq_of_id(&bulk(entry.next()?)?)?;
        let fields = array(entry.next()?)?;
        let mut kind = None;
        let mut data = None;
        let mut fields = fields.into_iter();
        while let (Some(name), Some(value)) = (fields.next(), fields.next()) {
            match bulk(name)?.as_slice() {
                b"k" => kind = bulk(value),
                b"d" => data = bulk(value),
                _ => {}
            }
        }
        let payload = script::payload_of(&kind?, Bytes::from(data?))?;
        entries.push((seq, payload));
    }
    Some(entries)
}
