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
                for (to, msg) in refused {
                    self.brokers[s].on_refused(to, msg, &mut self.outs[s]);
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
