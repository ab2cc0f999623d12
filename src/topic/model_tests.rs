//! Property test: `LocalIndex` per shard + `OwnedTopics` per owner + `Subscriptions` per
//! connection, driven the way the event loop drives them, must agree with a naive model after
//! every step. Test-only; it does no I/O.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;

use super::*;

const MAX_SUBS_PER_CONN: usize = 3;
const CONNS: usize = 40;
const TOPICS: [&str; 6] = ["news", "sport", "a", "日本語", "q\"uo\\te", "x.y.z"];

#[derive(Debug, Clone)]
enum Op {
    Subscribe(usize, usize),
    Unsubscribe(usize, usize),
    Publish(usize),
    Disconnect(usize),
}

fn op() -> impl Strategy<Value = Op> {
    let conn = 0..CONNS;
    // Half the operations hit topic 0, so it gets crowded enough to cross the subscriber
    // set's small/indexed thresholds.
    let topic = prop_oneof![Just(0), 0..TOPICS.len()];
    prop_oneof![
        4 => (conn.clone(), topic.clone()).prop_map(|(c, t)| Op::Subscribe(c, t)),
        2 => (conn.clone(), topic.clone()).prop_map(|(c, t)| Op::Unsubscribe(c, t)),
        4 => topic.prop_map(Op::Publish),
        1 => conn.prop_map(Op::Disconnect),
    ]
}

/// The system under test, wired like the event loop wires it.
struct System {
    shards: usize,
    local: Vec<LocalIndex>,
    owned: Vec<OwnedTopics>,
    subs: Vec<Subscriptions>,
}

/// Connection `c` lives on shard `c % shards` under slab key `c / shards`, so slab keys
/// repeat across shards as they do in the server.
fn place(c: usize, shards: usize) -> (usize, ConnId) {
    (c % shards, c / shards)
}

/// The naive model: the set of (connection, topic) pairs, and each live topic's last seq.
#[derive(Default)]
struct Model {
    pairs: BTreeSet<(usize, &'static str)>,
    last_seq: BTreeMap<&'static str, u64>,
}

impl Model {
    fn subscribers(&self, topic: &str) -> BTreeSet<usize> {
        self.pairs
            .iter()
            .filter(|(_, t)| *t == topic)
            .map(|(c, _)| *c)
            .collect()
    }

    fn drop_if_unsubscribed(&mut self, topic: &'static str) {
        if self.subscribers(topic).is_empty() {
            self.last_seq.remove(topic);
        }
    }
}

impl System {
    fn new(shards: usize) -> Self {
        System {
            shards,
            local: (0..shards).map(|_| LocalIndex::new()).collect(),
            owned: (0..shards).map(|_| OwnedTopics::new()).collect(),
            subs: (0..CONNS).map(|_| Subscriptions::new()).collect(),
        }
    }

    fn tell_owner(&mut self, topic: &str, shard: usize, interested: bool) {
        let owner = owner_shard(topic, self.shards);
        let changed = self.owned[owner]
            .set_interest(topic, shard, interested)
            .changed();
        assert!(
            changed,
            "owner already knew: {topic} shard {shard} {interested}"
        );
    }

    /// Returns whether the subscribe was accepted.
    fn subscribe(&mut self, c: usize, topic: &str) -> bool {
        let (shard, conn) = place(c, self.shards);
        if self.subs[c].contains(topic) {
            assert!(self.local[shard].is_subscribed(topic, conn));
            assert_eq!(
                self.local[shard].subscribe(topic, conn),
                SubscribeOutcome::AlreadySubscribed
            );
            return false;
        }
        if self.subs[c].len() >= MAX_SUBS_PER_CONN {
            return false; // too_many_subscriptions
        }
        assert!(self.subs[c].insert(topic));
        match self.local[shard].subscribe(topic, conn) {
            SubscribeOutcome::AlreadySubscribed => panic!("index and Subscriptions disagree"),
            SubscribeOutcome::Added { first_on_shard } => {
                if first_on_shard {
                    self.tell_owner(topic, shard, true);
                }
            }
        }
        true
    }

    /// Returns whether the connection was subscribed.
    fn unsubscribe(&mut self, c: usize, topic: &str) -> bool {
        let (shard, conn) = place(c, self.shards);
        if !self.subs[c].remove(topic) {
            assert_eq!(
                self.local[shard].unsubscribe(topic, conn),
                UnsubscribeOutcome::NotSubscribed
            );
            return false; // not_subscribed
        }
        match self.local[shard].unsubscribe(topic, conn) {
            UnsubscribeOutcome::NotSubscribed => panic!("index and Subscriptions disagree"),
            UnsubscribeOutcome::Removed { last_on_shard } => {
                if last_on_shard {
                    self.tell_owner(topic, shard, false);
                }
            }
        }
        true
    }

    fn disconnect(&mut self, c: usize) {
        let (shard, conn) = place(c, self.shards);
        let mut subs = std::mem::take(&mut self.subs[c]);
        for topic in subs.drain() {
            if let UnsubscribeOutcome::Removed {
                last_on_shard: true,
            } = self.local[shard].unsubscribe(&topic, conn)
            {
                self.tell_owner(&topic, shard, false);
            }
        }
        assert!(subs.is_empty());
    }

    /// Publishes and returns the seq and the connections reached.
    fn publish(&mut self, topic: &str) -> Option<(u64, BTreeSet<usize>)> {
        let owner = owner_shard(topic, self.shards);
        let (seq, shards) = self.owned[owner].sequence(topic)?;
        assert!(shards.windows(2).all(|w| w[0] < w[1]), "sorted, distinct");
        let mut reached = BTreeSet::new();
        for &shard in shards {
            let shard = usize::from(shard);
            let conns = self.local[shard].subscribers(topic);
            assert!(
                !conns.is_empty(),
                "shard {shard} marked interested but has nobody"
            );
            for &conn in conns {
                let c = conn * self.shards + shard;
                assert!(reached.insert(c), "delivered twice to {c}");
            }
        }
        Some((seq, reached))
    }

    fn check_against(&self, model: &Model) {
        for shard in 0..self.shards {
            let on_shard: Vec<_> = model
                .pairs
                .iter()
                .filter(|(c, _)| place(*c, self.shards).0 == shard)
                .collect();
            let topics: BTreeSet<_> = on_shard.iter().map(|(_, t)| *t).collect();
            assert_eq!(self.local[shard].subscription_count(), on_shard.len());
            assert_eq!(self.local[shard].topic_count(), topics.len());
        }
        let live: BTreeSet<_> = model.pairs.iter().map(|(_, t)| *t).collect();
        let owned_total: usize = self.owned.iter().map(OwnedTopics::topic_count).sum();
        assert_eq!(owned_total, live.len());
        for topic in TOPICS {
            let expected: BTreeSet<u16> = model
                .subscribers(topic)
                .iter()
                .map(|&c| place(c, self.shards).0 as u16)
                .collect();
            let owner = owner_shard(topic, self.shards);
            let got = self.owned[owner].interested_shards(topic);
            assert_eq!(got, expected.into_iter().collect::<Vec<_>>(), "{topic}");
        }
        for (c, subs) in self.subs.iter().enumerate() {
            let expected: Vec<&str> = model
                .pairs
                .iter()
                .filter(|(mc, _)| *mc == c)
                .map(|(_, t)| *t)
                .collect();
            assert_eq!(subs.iter().collect::<Vec<_>>(), expected);
        }
    }
}

fn run(shards: usize, ops: &[Op]) {
    let mut sys = System::new(shards);
    let mut model = Model::default();
    for op in ops {
        match *op {
            Op::Subscribe(c, t) => {
                let topic = TOPICS[t];
                let model_accepts = !model.pairs.contains(&(c, topic))
                    && model.pairs.iter().filter(|(mc, _)| *mc == c).count() < MAX_SUBS_PER_CONN;
                assert_eq!(sys.subscribe(c, topic), model_accepts);
                if model_accepts {
                    model.pairs.insert((c, topic));
                }
            }
            Op::Unsubscribe(c, t) => {
                let topic = TOPICS[t];
                assert_eq!(sys.unsubscribe(c, topic), model.pairs.remove(&(c, topic)));
                model.drop_if_unsubscribed(topic);
            }
            Op::Disconnect(c) => {
                sys.disconnect(c);
                let topics: Vec<_> = model
                    .pairs
                    .iter()
                    .filter(|(mc, _)| *mc == c)
                    .map(|(_, t)| *t)
                    .collect();
                for topic in topics {
                    model.pairs.remove(&(c, topic));
                    model.drop_if_unsubscribed(topic);
                }
            }
            Op::Publish(t) => {
                let topic = TOPICS[t];
                let expected = model.subscribers(topic);
                match sys.publish(topic) {
                    None => assert!(expected.is_empty(), "{topic} lost its subscribers"),
                    Some((seq, reached)) => {
                        assert_eq!(reached, expected, "{topic}");
                        let last = model.last_seq.entry(topic).or_insert(0);
                        assert_eq!(seq, *last + 1, "{topic}: seq must grow by exactly 1");
                        *last = seq;
                    }
                }
            }
        }
        sys.check_against(&model);
    }
    // Everyone leaves: every count and every table returns to empty.
    for c in 0..CONNS {
        sys.disconnect(c);
    }
    model.pairs.clear();
    sys.check_against(&model);
    for shard in 0..shards {
        assert_eq!(sys.local[shard].topic_count(), 0);
        assert_eq!(sys.local[shard].subscription_count(), 0);
        assert_eq!(sys.owned[shard].topic_count(), 0);
    }
    for topic in TOPICS {
        assert_eq!(sys.publish(topic), None);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn index_matches_naive_model(shards in 1usize..=4, ops in prop::collection::vec(op(), 0..200)) {
        run(shards, &ops);
    }
}

/// A fixed scenario, so a regression is reported with a readable sequence, and so the model
/// is known to exercise seq restarts and the subscription limit.
#[test]
fn scripted_scenario() {
    use Op::*;
    run(
        2,
        &[
            Subscribe(0, 0),
            Subscribe(1, 0),
            Publish(0),
            Publish(0),
            Unsubscribe(0, 0),
            Publish(0),
            Disconnect(1),
            Publish(0),
            Subscribe(3, 0),
            Publish(0), // seq restarts at 1
            Subscribe(3, 1),
            Subscribe(3, 2),
            Subscribe(3, 3), // over the limit
            Publish(3),
            Unsubscribe(3, 3),
            Disconnect(3),
        ],
    );
}

/// Many subscribers to one topic on one shard, so the subscriber set crosses its small/indexed
/// thresholds in both directions while publishes check who is reached.
#[test]
fn scripted_crowded_topic() {
    use Op::*;
    let mut ops = Vec::new();
    for c in 0..CONNS {
        ops.extend([Subscribe(c, 0), Publish(0)]);
    }
    for c in (0..CONNS).step_by(3).chain((1..CONNS).step_by(3)) {
        ops.extend([Unsubscribe(c, 0), Publish(0)]);
    }
    for c in (2..CONNS).step_by(3) {
        ops.extend([Disconnect(c), Publish(0)]);
    }
    run(1, &ops);
    run(3, &ops);
}
