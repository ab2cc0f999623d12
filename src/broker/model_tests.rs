//! Model-based test of the broker core: several shards (each a `Broker` with the local engine
//! and a recording fake), peer messages routed between them by the test (in order, with
//! inbox-full refusals on demand), clients that connect, subscribe, publish, unsubscribe,
//! close and read slowly (a small byte budget), checked after every step against what a
//! client may see:
//! - per topic, seq strictly increasing for every subscriber;
//! - no delivery after an unsubscribe (or before a subscribe);
//! - every gap announced: a `dropped` notice whose count covers it exactly, or a close; this
//!   includes deliveries a full inbox refused (the mesh replaces each by a `Dropped` count);
//! - the interest filter never says "unheard" for a topic a shard holds confirmed
//!   subscribers of;
//! - all state freed when everyone leaves.
//!
//! The `resume` module below models clients that disconnect and resume with `since` across
//! shards, with history on (issue 12).

use std::collections::{BTreeMap, VecDeque};

use proptest::prelude::*;

use super::fake::{frame_text, Recorder};
use super::*;
use crate::engine::InterestFilter;

const CONNS: usize = 6;
const TOPICS: [&str; 3] = ["news", "sport", "x.y"];
/// Small, so slow readers hit it: a message frame here is about 60 bytes.
const BUDGET: usize = 200;

#[derive(Debug, Clone)]
enum Op {
    Connect(usize),
    Subscribe(usize, usize),
    Unsubscribe(usize, usize),
    Publish(usize, usize, bool),
    Close(usize),
    /// The client reads everything queued for it.
    Read(usize),
    /// Shard `s` hands its outbox to its peers.
    Flush(usize),
    /// Shard `s`'s flush finds every peer inbox full after `n` messages: the first `n` per
    /// peer go, then data is refused (a delivery leaves a drop count in its place) and control
    /// waits, with everything behind it.
    FlushSome(usize, usize),
    /// Shard `s` handles its inbox.
    Recv(usize),
}

fn op() -> impl Strategy<Value = Op> {
    let c = 0..CONNS;
    let t = 0..TOPICS.len();
    let s = 0..3usize;
    prop_oneof![
        2 => c.clone().prop_map(Op::Connect),
        4 => (c.clone(), t.clone()).prop_map(|(c, t)| Op::Subscribe(c, t)),
        2 => (c.clone(), t.clone()).prop_map(|(c, t)| Op::Unsubscribe(c, t)),
        6 => (c.clone(), t, any::<bool>()).prop_map(|(c, t, id)| Op::Publish(c, t, id)),
        1 => c.clone().prop_map(Op::Close),
        3 => c.prop_map(Op::Read),
        4 => s.clone().prop_map(Op::Flush),
        2 => (s.clone(), 0..3usize).prop_map(|(s, n)| Op::FlushSome(s, n)),
        4 => s.prop_map(Op::Recv),
    ]
}

/// What one client knows and has seen.
#[derive(Debug, Default)]
struct Client {
    open: bool,
    generation: u32,
    /// Frames of this connection already checked.
    seen: usize,
    /// Per subscribed topic: the last seq seen, and the gap announced since.
    subscribed: BTreeMap<&'static str, (Option<u64>, u64)>,
}

struct System {
    shards: usize,
    brokers: Vec<Broker>,
    outs: Vec<Recorder>,
    inboxes: Vec<VecDeque<MeshMsg>>,
    clients: Vec<Client>,
    filter: Arc<InterestFilter>,
}

fn place(c: usize, shards: usize) -> (usize, ConnId) {
    (c % shards, c / shards)
}

impl System {
    fn new(shards: usize, policy: SlowConsumerPolicy) -> System {
        let limits = Limits::per_connection(2, policy);
        let filter = Arc::new(InterestFilter::new(0));
        System {
            shards,
            brokers: (0..shards)
                .map(|s| Broker::new(s, limits, LocalEngine::new(s, shards, filter.clone())))
                .collect(),
            filter,
            outs: (0..shards).map(|_| Recorder::new(BUDGET)).collect(),
            inboxes: (0..shards).map(|_| VecDeque::new()).collect(),
            clients: (0..CONNS).map(|_| Client::default()).collect(),
        }
    }

    fn apply(&mut self, op: &Op) {
        match *op {
            Op::Connect(c) => {
                if self.clients[c].open {
                    return;
                }
                let (s, key) = place(c, self.shards);
                let client = &mut self.clients[c];
                client.generation += 1;
                client.open = true;
                client.seen = 0;
                client.subscribed.clear();
                self.outs[s].conns.remove(&key);
                self.brokers[s].open(key, client.generation, &[], &[], &mut self.outs[s]);
            }
            Op::Subscribe(c, t) => {
                let topic = TOPICS[t];
                let client = &self.clients[c];
                if !client.open {
                    return;
                }
                let (s, key) = place(c, self.shards);
                let accepted = client.subscribed.contains_key(topic) || client.subscribed.len() < 2;
                let text = format!(r#"{{"op":"subscribe","topic":"{topic}"}}"#);
                self.brokers[s].on_text(key, text.as_bytes(), &mut self.outs[s]);
                if accepted {
                    let _ = self.clients[c].subscribed.entry(topic).or_insert((None, 0));
                }
            }
            Op::Unsubscribe(c, t) => {
                let topic = TOPICS[t];
                if !self.clients[c].open {
                    return;
                }
                let (s, key) = place(c, self.shards);
                let text = format!(r#"{{"op":"unsubscribe","topic":"{topic}"}}"#);
                self.brokers[s].on_text(key, text.as_bytes(), &mut self.outs[s]);
                self.clients[c].subscribed.remove(topic);
            }
            Op::Publish(c, t, with_id) => {
                if !self.clients[c].open {
                    return;
                }
                let (s, key) = place(c, self.shards);
                let id = if with_id { r#","id":1"# } else { "" };
                let text = format!(r#"{{"op":"publish","topic":"{}","data":0{id}}}"#, TOPICS[t]);
                self.brokers[s].on_text(key, text.as_bytes(), &mut self.outs[s]);
            }
            Op::Close(c) => {
                if !self.clients[c].open {
                    return;
                }
                let (s, key) = place(c, self.shards);
                self.clients[c].open = false;
                self.brokers[s].on_closed(key, &mut self.outs[s]);
            }
            Op::Read(c) => {
                let (s, key) = place(c, self.shards);
                self.outs[s].drain(key);
            }
            Op::Flush(s) => {
                for (to, msg) in std::mem::take(&mut self.outs[s].peers) {
                    self.inboxes[to].push_back(msg);
                }
            }
            Op::FlushSome(s, n) => {
                let mut kept = Vec::new();
                let mut refused = Vec::new();
                let mut sent = vec![0usize; self.shards];
                for (to, msg) in std::mem::take(&mut self.outs[s].peers) {
                    if sent[to] < n {
                        sent[to] += 1;
                        self.inboxes[to].push_back(msg);
                        continue;
                    }
                    // Full from here on: what the real mesh does past the budget.
                    sent[to] = usize::MAX;
                    if let Some(notice) = msg.refusal_notice() {
                        kept.push((to, notice));
                    }
                    if matches!(msg, MeshMsg::Publish { .. } | MeshMsg::Deliver { .. }) {
                        refused.push((to, msg));
                    } else {
                        kept.push((to, msg));
                    }
                }
                for (_to, msg) in refused {
                    self.brokers[s].on_refused(msg, &mut self.outs[s]);
                }
                // Control messages wait for the next flush, ahead of anything newer.
                kept.append(&mut self.outs[s].peers);
                self.outs[s].peers = kept;
            }
            Op::Recv(s) => {
                while let Some(msg) = self.inboxes[s].pop_front() {
                    self.brokers[s].on_peer(msg, &mut self.outs[s]);
                }
            }
        }
    }

    /// A shard with subscribers of a topic and no confirmation pending for it: the owner has
    /// recorded its interest, so the filter must let publishes through.
    fn check_filter(&self) {
        for (s, broker) in self.brokers.iter().enumerate() {
            for topic in TOPICS {
                let held = !broker.local.subscribers(topic).is_empty();
                if held && !broker.pending_interest.contains_key(topic) {
                    assert!(
                        self.filter.may_be_heard(crate::topic::topic_hash(topic)),
                        "shard {s} has confirmed subscribers of {topic}, the filter says unheard"
                    );
                }
            }
        }
    }

    /// Checks every frame the clients got since the last check.
    fn check_clients(&mut self) {
        for c in 0..CONNS {
            let (s, key) = place(c, self.shards);
            let client = &mut self.clients[c];
            if !client.open {
                continue;
            }
            let Some(conn) = self.outs[s].conns.get(&key) else {
                continue;
            };
            let frames: Vec<String> = conn.all[client.seen..]
                .iter()
                .map(|f| frame_text(f))
                .collect();
            client.seen = conn.all.len();
            for text in frames {
                let v: serde_json::Value = serde_json::from_str(&text).expect("JSON frame");
                let op = v["op"].as_str().unwrap_or("");
                if op != "message" && op != "dropped" {
                    continue;
                }
                let topic = v["topic"].as_str().expect("topic");
                let Some(&name) = TOPICS.iter().find(|t| **t == topic) else {
                    panic!("unknown topic {topic}");
                };
                let Some((last, announced)) = client.subscribed.get_mut(name) else {
                    panic!("client {c} got {text} while not subscribed to {topic}");
                };
                if op == "dropped" {
                    *announced += v["count"].as_u64().expect("count");
                    continue;
                }
                let seq = v["seq"].as_u64().expect("seq");
                if let Some(last) = *last {
                    assert!(seq > last, "client {c}: {topic} seq {seq} after {last}");
                    let gap = seq - last - 1;
                    assert_eq!(
                        gap, *announced,
                        "client {c}: {topic} jumped {last} -> {seq} with {announced} announced"
                    );
                }
                *last = Some(seq);
                *announced = 0;
            }
            if conn.closed.is_some() {
                // Closed by the core (slow consumer): the close announces the gap; the
                // driver would now forget the connection.
                client.open = false;
                self.brokers[s].on_closed(key, &mut self.outs[s]);
            }
        }
    }

    /// Everyone leaves and every message is handled: nothing may be left anywhere.
    fn check_all_freed(&mut self) {
        for c in 0..CONNS {
            self.apply(&Op::Close(c));
        }
        for _ in 0..4 {
            for s in 0..self.shards {
                self.apply(&Op::Flush(s));
            }
            for s in 0..self.shards {
                self.apply(&Op::Recv(s));
            }
        }
        for (s, b) in self.brokers.iter().enumerate() {
            assert_eq!(b.topic_count(), 0, "shard {s} topics");
            assert_eq!(b.subscription_count(), 0, "shard {s} subscriptions");
            assert_eq!(b.engine_topic_count(), 0, "shard {s} owned topics");
            assert!(b.pending_interest.is_empty(), "shard {s} pending acks");
            assert_eq!(b.conns.slot_count(), 0, "shard {s} connection slots");
            assert!(!b.conns.any_dropped(), "shard {s} dropped counts");
            assert!(self.outs[s].peers.is_empty() && self.inboxes[s].is_empty());
        }
        assert_eq!(
            self.filter.topic_count(),
            0,
            "the filter forgot every topic"
        );
    }
}

fn run(shards: usize, policy: SlowConsumerPolicy, ops: &[Op]) {
    let mut sys = System::new(shards, policy);
    for op in ops {
        let op = match *op {
            Op::Flush(s) => Op::Flush(s % shards),
            Op::FlushSome(s, n) => Op::FlushSome(s % shards, n),
            Op::Recv(s) => Op::Recv(s % shards),
            ref other => other.clone(),
        };
        sys.apply(&op);
        sys.check_clients();
        sys.check_filter();
    }
    sys.check_all_freed();
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn broker_cores_keep_order_and_announce_gaps(
        shards in 1usize..=3,
        drop in any::<bool>(),
        ops in prop::collection::vec(op(), 0..150),
    ) {
        let policy = if drop { SlowConsumerPolicy::Drop } else { SlowConsumerPolicy::Disconnect };
        run(shards, policy, &ops);
    }
}

/// A resubscribe while the old interest's deliveries are still in flight: the stale deliveries
/// (sequenced before the owner forgot and restarted the topic) must not reach the new
/// subscriber, or it would see seq go backwards.
#[test]
fn stale_deliveries_do_not_reach_a_resubscriber() {
    use Op::*;
    // Two shards; client c lives on shard c. The owner's keys are random per process, so
    // the subscriber is put on the shard that does not own the topic.
    let t = 0;
    let owner = crate::topic::owner_shard(TOPICS[t], 2);
    let (sub, publ) = (1 - owner, owner);
    run(
        2,
        SlowConsumerPolicy::Disconnect,
        &[
            Connect(sub),
            Connect(publ),
            Subscribe(sub, t),
            Flush(sub),
            Recv(publ), // the owner records the subscriber shard's interest
            Publish(publ, t, false),
            Publish(publ, t, false),
            Flush(publ),
            Recv(sub), // seq 1 and 2 delivered
            Unsubscribe(sub, t),
            Publish(publ, t, false), // seq 3, sequenced for the subscriber's shard before the owner hears
            Subscribe(sub, t),       // resubscribe: interest false then true are on their way
            Flush(sub),
            Recv(publ), // the owner forgets the topic, then starts it again at seq 1
            Publish(publ, t, false),
            Flush(publ),
            Recv(sub), // the stale seq 3, then seq 1 of the new incarnation
        ],
    );
}

/// A delivery refused by a full inbox: the subscriber on the refusing shard hears `dropped`
/// before the next message, so the gap is announced.
#[test]
fn a_refused_delivery_is_announced() {
    use Op::*;
    let t = 0;
    let owner = crate::topic::owner_shard(TOPICS[t], 2);
    let (sub, publ) = (1 - owner, owner);
    let mut sys = System::new(2, SlowConsumerPolicy::Disconnect);
    let ops = [
        Connect(sub),
        Connect(publ),
        Subscribe(sub, t),
        Flush(sub),
        Recv(publ),
        Flush(publ),
        Recv(sub), // confirmed
        Publish(publ, t, false),
        Flush(publ),
        Recv(sub), // seq 1
        Read(sub),
        Publish(publ, t, false),
        FlushSome(publ, 0), // seq 2 refused
        Flush(publ),
        Publish(publ, t, false),
        Flush(publ),
        Recv(sub), // the drop count, then seq 3
    ];
    for op in &ops {
        sys.apply(op);
        sys.check_clients();
    }
    let (s, key) = place(sub, 2);
    let texts = sys.outs[s].texts(key);
    assert!(
        texts.iter().any(|t| t.contains(r#""op":"dropped""#)),
        "{texts:?}"
    );
    sys.check_all_freed();
}

/// Model-based test of resume across shards: clients subscribe with `since`, read, disconnect
/// (losing what they had not read) and come back with `since` = the last seq and epoch they
/// saw, while publishers on every shard keep publishing and the test interleaves the mesh
/// messages at random. History keeps the last `window` messages (no TTL, no byte budget), and
/// a resume replays at most `cap`. Checked on every frame a client reads:
/// - the resume ack's `recovered` is true exactly when the kept window (and the cap) covers
///   the gap: `top - last <= min(window, cap)` in the same epoch;
/// - after the ack, the topic's messages on that connection are exactly `last + 1, last + 2,
///   ...` when recovered, else the newest kept ones (no epoch) or `top + 1, ...`: no gap, no
///   duplicate, nothing before the ack;
/// - every message's data is the one its publisher was told got that seq.
///
/// At the end every client comes back once more and reads everything: each has seen the
/// topic's top, and a client whose every ack was `recovered: true` (from seq 0 on) has seen
/// exactly 1..=top, the whole published sequence.
mod resume {
    use std::collections::{BTreeMap, VecDeque};

    use proptest::prelude::*;

    use super::super::fake::{frame_text, Recorder};
    use super::super::*;
    use crate::broker::history::HistoryPolicy;
    use crate::engine::InterestFilter;

    const CLIENTS: usize = 5;
    /// Two topics owned away from the shard where two clients follow them, for 2 and 3
    /// shards (the first: shard 1 of 2, 2 of 3; the second: shard 0 of both), so deliveries
    /// race replays there. Chosen at run time: ownership hashes with a per-process seed.
    fn topics() -> &'static [&'static str; 2] {
        static TOPICS: std::sync::OnceLock<[&'static str; 2]> = std::sync::OnceLock::new();
        TOPICS.get_or_init(|| {
            let find = |prefix: &str, of2: usize, of3: usize| -> &'static str {
                let name = (0..)
                    .map(|i| format!("{prefix}{i}"))
                    .find(|t| {
                        crate::topic::owner_shard(t, 2) == of2
                            && crate::topic::owner_shard(t, 3) == of3
                    })
                    .expect("some name lands on every pair of shards");
                Box::leak(name.into_boxed_str())
            };
            [find("chat", 1, 2), find("news", 0, 0)]
        })
    }
    const PUBLISHER_KEY: ConnId = 100;

    #[derive(Debug, Clone)]
    enum Op {
        Publish(usize, usize),
        Connect(usize),
        Disconnect(usize),
        Read(usize),
        Flush(usize),
        Recv(usize),
    }

    fn op() -> impl Strategy<Value = Op> {
        let c = 0..CLIENTS;
        let s = 0..3usize;
        prop_oneof![
            6 => (s.clone(), 0..topics().len()).prop_map(|(s, t)| Op::Publish(s, t)),
            2 => c.clone().prop_map(Op::Connect),
            2 => c.clone().prop_map(Op::Disconnect),
            3 => c.prop_map(Op::Read),
            4 => s.clone().prop_map(Op::Flush),
            4 => s.prop_map(Op::Recv),
        ]
    }

    /// What a client knows of one topic.
    #[derive(Debug, Default)]
    struct TopicView {
        /// Epoch and last seq seen (None: never acked).
        at: Option<(String, u64)>,
        /// The seq the next message must have on the current connection (None: not acked yet).
        next: Option<u64>,
        /// Every seq seen, across connections.
        log: Vec<u64>,
        /// Every ack so far was `recovered: true`.
        always_recovered: bool,
    }

    #[derive(Debug)]
    struct Client {
        open: bool,
        generation: u32,
        read: usize,
        topics: BTreeMap<&'static str, TopicView>,
    }

    struct System {
        shards: usize,
        window: u64,
        cap: u64,
        brokers: Vec<Broker>,
        outs: Vec<Recorder>,
        inboxes: Vec<VecDeque<MeshMsg>>,
        clients: Vec<Client>,
        next_data: u64,
        /// data -> topic of every publish.
        published: BTreeMap<u64, usize>,
        /// Publisher acks read so far per shard, and (topic, seq) -> data from them.
        acks_read: Vec<usize>,
        truth: BTreeMap<(usize, u64), u64>,
        epochs: [Option<String>; 2],
    }

    /// Client `c` lives on shard `c % shards`, under slab key `c`.
    fn shard_of(c: usize, shards: usize) -> usize {
        c % shards
    }

    /// The topics client `c` follows: one, or both.
    fn topics_of(c: usize) -> &'static [&'static str] {
        match c % 3 {
            0 => &topics()[..1],
            1 => &topics()[1..],
            _ => &topics()[..],
        }
    }

    impl System {
        fn new(shards: usize, window: usize, cap: usize) -> System {
            let limits = Limits::per_connection(2, SlowConsumerPolicy::Disconnect);
            let filter = Arc::new(InterestFilter::new(0));
            let policy = HistoryPolicy::new(window, std::time::Duration::from_secs(3600), &[], cap);
            let mut sys = System {
                shards,
                window: window as u64,
                cap: cap as u64,
                brokers: (0..shards)
                    .map(|s| {
                        let engine = LocalEngine::with_history(
                            s,
                            shards,
                            filter.clone(),
                            policy.clone(),
                            usize::MAX,
                            s as u64 + 1,
                        );
                        Broker::new(s, limits, engine)
                    })
                    .collect(),
                // Room for everything: no slow consumers here.
                outs: (0..shards).map(|_| Recorder::new(usize::MAX / 4)).collect(),
                inboxes: (0..shards).map(|_| VecDeque::new()).collect(),
                clients: (0..CLIENTS)
                    .map(|c| Client {
                        open: false,
                        generation: 0,
                        read: 0,
                        topics: topics_of(c)
                            .iter()
                            .map(|t| {
                                let view = TopicView {
                                    always_recovered: true,
                                    ..TopicView::default()
                                };
                                (*t, view)
                            })
                            .collect(),
                    })
                    .collect(),
                next_data: 0,
                published: BTreeMap::new(),
                acks_read: vec![0; shards],
                truth: BTreeMap::new(),
                epochs: [None, None],
            };
            for s in 0..shards {
                sys.brokers[s].open(PUBLISHER_KEY, 1, &[], &[], &mut sys.outs[s]);
            }
            sys
        }

        fn apply(&mut self, op: &Op) {
            match *op {
                Op::Publish(s, t) => {
                    let s = s % self.shards;
                    let data = self.next_data;
                    self.next_data += 1;
                    self.published.insert(data, t);
                    let text = format!(
                        r#"{{"op":"publish","topic":"{}","data":{data},"id":{data}}}"#,
                        topics()[t]
                    );
                    self.brokers[s].on_text(PUBLISHER_KEY, text.as_bytes(), &mut self.outs[s]);
                }
                Op::Connect(c) => {
                    if self.clients[c].open {
                        return;
                    }
                    let s = shard_of(c, self.shards);
                    let client = &mut self.clients[c];
                    client.open = true;
                    client.generation += 1;
                    client.read = 0;
                    self.outs[s].conns.remove(&c);
                    self.brokers[s].open(c, client.generation, &[], &[], &mut self.outs[s]);
                    for (topic, view) in &mut self.clients[c].topics {
                        view.next = None;
                        let since = match &view.at {
                            Some((epoch, last)) => format!(r#"{{"seq":{last},"epoch":"{epoch}"}}"#),
                            None => r#"{"seq":0}"#.to_string(),
                        };
                        let text = format!(
                            r#"{{"op":"subscribe","topic":"{topic}","since":{since},"id":1}}"#
                        );
                        self.brokers[s].on_text(c, text.as_bytes(), &mut self.outs[s]);
                    }
                }
                Op::Disconnect(c) => {
                    if !self.clients[c].open {
                        return;
                    }
                    // What it had not read is lost with the connection.
                    self.clients[c].open = false;
                    let s = shard_of(c, self.shards);
                    self.brokers[s].on_closed(c, &mut self.outs[s]);
                }
                Op::Read(c) => self.read(c),
                Op::Flush(s) => {
                    let s = s % self.shards;
                    for (to, msg) in std::mem::take(&mut self.outs[s].peers) {
                        self.inboxes[to].push_back(msg);
                    }
                }
                Op::Recv(s) => {
                    let s = s % self.shards;
                    while let Some(msg) = self.inboxes[s].pop_front() {
                        self.brokers[s].on_peer(msg, &mut self.outs[s]);
                    }
                }
            }
        }

        /// Client `c` reads what reached it, checking each frame.
        fn read(&mut self, c: usize) {
            if !self.clients[c].open {
                return;
            }
            let s = shard_of(c, self.shards);
            let Some(conn) = self.outs[s].conns.get(&c) else {
                return;
            };
            let frames: Vec<String> = conn.all[self.clients[c].read..]
                .iter()
                .map(|f| frame_text(f))
                .collect();
            self.clients[c].read = conn.all.len();
            let (window, cap) = (self.window, self.cap);
            for text in frames {
                let v: serde_json::Value = serde_json::from_str(&text).expect("JSON");
                let topic = v["topic"].as_str().expect("a topic");
                let view = self.clients[c]
                    .topics
                    .get_mut(topic)
                    .unwrap_or_else(|| panic!("client {c} got {text}"));
                match v["op"].as_str() {
                    Some("ack") => {
                        assert!(view.next.is_none(), "client {c}: a second ack {text}");
                        let top = v["seq"].as_u64().expect("top");
                        let epoch = v["epoch"].as_str().expect("epoch").to_string();
                        let recovered = v["recovered"].as_bool().expect("recovered");
                        let (expected, first) = match &view.at {
                            Some((had, last)) => {
                                let covered =
                                    *had == epoch && *last <= top && top - last <= window.min(cap);
                                let first = if covered { last + 1 } else { top + 1 };
                                (covered, first)
                            }
                            None => {
                                let kept = top.min(window).min(cap);
                                (top == kept, top - kept + 1)
                            }
                        };
                        assert_eq!(
                            recovered, expected,
                            "client {c}: {text} from {:?} (window {window}, cap {cap})",
                            view.at
                        );
                        view.always_recovered &= recovered;
                        view.next = Some(first);
                        view.at = Some((epoch, first - 1));
                    }
                    Some("message") => {
                        let seq = v["seq"].as_u64().expect("seq");
                        let next = view
                            .next
                            .unwrap_or_else(|| panic!("client {c}: {text} before the ack"));
                        assert_eq!(seq, next, "client {c}: {text}");
                        view.next = Some(seq + 1);
                        if let Some((_, last)) = &mut view.at {
                            *last = seq;
                        }
                        view.log.push(seq);
                        let t = topics().iter().position(|n| *n == topic).unwrap();
                        let data = v["data"].as_u64().expect("data");
                        assert_eq!(self.published.get(&data), Some(&t), "{text}");
                        if let Some(&known) = self.truth.get(&(t, seq)) {
                            assert_eq!(known, data, "client {c}: {text}");
                        }
                        self.truth.insert((t, seq), data);
                    }
                    other => panic!("client {c}: unexpected {other:?} in {text}"),
                }
            }
        }

        /// The publishers' acks: each publish got a distinct seq, in one epoch per topic.
        fn read_publisher_acks(&mut self) {
            for s in 0..self.shards {
                let Some(conn) = self.outs[s].conns.get(&PUBLISHER_KEY) else {
                    continue;
                };
                let frames: Vec<String> = conn.all[self.acks_read[s]..]
                    .iter()
                    .map(|f| frame_text(f))
                    .collect();
                self.acks_read[s] = conn.all.len();
                for text in frames {
                    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
                    assert_eq!(v["op"], "ack", "{text}");
                    let data = v["id"].as_u64().unwrap();
                    let seq = v["seq"].as_u64().unwrap();
                    if seq == 0 {
                        // Unheard: the topic had no state (no subscriber yet); not sequenced,
                        // not kept, no epoch.
                        assert!(v.get("epoch").is_none(), "{text}");
                        self.published.remove(&data);
                        continue;
                    }
                    let t = self.published[&data];
                    let epoch = v["epoch"].as_str().unwrap().to_string();
                    // A topic that keeps a message is never forgotten here: one epoch.
                    let known = self.epochs[t].get_or_insert_with(|| epoch.clone());
                    assert_eq!(*known, epoch, "{text}");
                    if let Some(&seen) = self.truth.get(&(t, seq)) {
                        assert_eq!(seen, data, "{text}");
                    }
                    self.truth.insert((t, seq), data);
                }
            }
        }

        fn settle(&mut self) {
            for _ in 0..4 {
                for s in 0..self.shards {
                    self.apply(&Op::Flush(s));
                    self.apply(&Op::Recv(s));
                }
            }
        }

        /// Everyone comes back and reads everything.
        fn finish(&mut self) {
            self.settle();
            for c in 0..CLIENTS {
                self.read(c);
                self.apply(&Op::Disconnect(c));
                self.apply(&Op::Connect(c));
            }
            self.settle();
            for c in 0..CLIENTS {
                self.read(c);
            }
            self.read_publisher_acks();
            let mut count = [0u64; 2];
            for t in self.published.values() {
                count[*t] += 1;
            }
            for (t, n) in count.iter().enumerate() {
                let seqs: Vec<u64> = self
                    .truth
                    .keys()
                    .filter(|(topic, _)| *topic == t)
                    .map(|(_, seq)| *seq)
                    .collect();
                assert_eq!(seqs, (1..=*n).collect::<Vec<_>>(), "{} seqs", topics()[t]);
            }
            for (c, client) in self.clients.iter().enumerate() {
                for (topic, view) in &client.topics {
                    let t = topics().iter().position(|n| n == topic).unwrap();
                    let top = count[t];
                    let last = view.at.as_ref().map(|(_, last)| *last);
                    assert_eq!(last, Some(top), "client {c} caught up on {topic}");
                    if view.always_recovered {
                        assert_eq!(
                            view.log,
                            (1..=top).collect::<Vec<_>>(),
                            "client {c}: every {topic} message once, in order"
                        );
                    }
                }
            }
        }
    }

    fn run(shards: usize, window: usize, cap: usize, ops: &[Op]) {
        let mut sys = System::new(shards, window, cap);
        for op in ops {
            sys.apply(op);
            sys.read_publisher_acks();
        }
        sys.finish();
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn resumes_recover_exactly_when_the_window_covers_the_gap(
            shards in 1usize..=3,
            window in 1usize..=8,
            cap in 1usize..=8,
            ops in prop::collection::vec(op(), 0..150),
        ) {
            run(shards, window, cap, &ops);
        }
    }

    /// A delivery that reaches a shard while one of its clients waits there for its replay
    /// (another client of the shard already listens) must not reach the resuming one: the
    /// replay brings it, after the ack.
    #[test]
    fn a_delivery_racing_a_replay_is_not_delivered_twice() {
        use Op::*;
        // Three shards: clients 0 and 3 (chat) live on shard 0, clients 1 and 4 (news) on 1.
        let (a, b, t) = [(0, 3, 0), (1, 4, 1)]
            .into_iter()
            .find(|&(a, _, t)| crate::topic::owner_shard(topics()[t], 3) != shard_of(a, 3))
            .expect("a topic owned away from its readers' shard");
        let owner = crate::topic::owner_shard(topics()[t], 3);
        let here = shard_of(a, 3);
        let mut ops = vec![Connect(a)];
        for _ in 0..2 {
            ops.extend([Flush(here), Recv(owner), Flush(owner), Recv(here)]);
        }
        ops.extend([
            Read(a),
            Publish(owner, t),
            Flush(owner),
            Recv(here),
            Read(a),
        ]);
        ops.extend([Connect(b), Publish(owner, t), Flush(owner), Recv(here)]);
        ops.extend([
            Flush(here),
            Recv(owner),
            Flush(owner),
            Recv(here),
            Read(a),
            Read(b),
        ]);
        run(3, 8, 8, &ops);
    }

    /// A client away for fewer messages than the window gets all of them; one away for more
    /// is told `recovered: false` and goes on from the top.
    #[test]
    fn a_short_absence_is_recovered_and_a_long_one_is_not() {
        use Op::*;
        let mut ops = vec![Connect(0), Flush(0), Recv(0), Flush(1), Recv(1), Read(0)];
        for _ in 0..3 {
            ops.extend([Publish(1, 0), Flush(1), Recv(0), Flush(0), Recv(1)]);
        }
        ops.extend([Read(0), Disconnect(0)]);
        for _ in 0..6 {
            ops.extend([Publish(1, 0), Flush(1), Recv(0), Flush(0), Recv(1)]);
        }
        ops.extend([Connect(0), Flush(0), Recv(0), Flush(0), Recv(1), Read(0)]);
        run(2, 4, 8, &ops);
        run(2, 8, 8, &ops);
    }
}
