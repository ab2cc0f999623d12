//! Model-based test of one shard's topic logs: random publish, connect (resume with `since`),
//! disconnect, clock and sweep interleavings, against a reference model that keeps plain lists
//! (every message of each incarnation, what is kept, the budget's oldest-first queue). Checked
//! after every step:
//! - seqs count from 1 per incarnation, and a new incarnation never reuses the old epoch;
//! - a resume says `recovered: true` exactly when the model's window covers the client's gap
//!   (same epoch, every missed message kept, at most the cap), and then replays exactly the
//!   missed frames (the stored buffers themselves);
//! - so every connected client has seen exactly the topic's sequence from where it (re)joined,
//!   once and in order;
//! - bytes charged equal the model's, never over the budget; idle topics are forgotten.

use std::collections::VecDeque;
use std::time::Duration;

use bytes::Bytes;
use proptest::prelude::*;

use super::log::{entry_overhead_bytes, topic_overhead_bytes};
use super::*;

const TOPICS: [&str; 3] = ["t0", "t1", "t2"];
const CLIENTS: usize = 5;
const TTL_MS: u64 = 1_000;
/// Every frame is `tN#000042`: 9 bytes, so the budget is a whole number of messages.
const FRAME_BYTES: usize = 9;

#[derive(Debug, Clone)]
enum Op {
    Publish(usize),
    /// Client connects to its topic and resumes from what it last saw (first time: `{"seq":0}`).
    Connect(usize),
    Disconnect(usize),
    Advance(u64),
    Sweep,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (0..TOPICS.len()).prop_map(Op::Publish),
        3 => (0..CLIENTS).prop_map(Op::Connect),
        3 => (0..CLIENTS).prop_map(Op::Disconnect),
        2 => (1..600u64).prop_map(Op::Advance),
        1 => Just(Op::Sweep),
    ]
}

/// One topic incarnation in the model.
#[derive(Debug)]
struct Inc {
    epoch: Epoch,
    /// Every frame published, index = seq - 1.
    frames: Vec<Bytes>,
    /// Kept: (seq, at_ms), oldest first.
    kept: VecDeque<(u64, u64)>,
}

#[derive(Debug, Clone, Default)]
struct Client {
    topic: usize,
    connected: bool,
    /// Last (seq, epoch) seen.
    last: Option<(u64, Epoch)>,
    /// Seqs received in the current epoch since (re)joining at `joined_at`.
    joined_at: u64,
    received: Vec<u64>,
}

struct Model {
    size: usize,
    cap: usize,
    budget: usize,
    now: u64,
    topics: Vec<Option<Inc>>,
    listeners: Vec<usize>,
    /// Kept messages in publish order across topics: (topic, seq).
    fifo: VecDeque<(usize, u64)>,
    previous_epochs: Vec<Vec<Epoch>>,
    clients: Vec<Client>,
}

impl Model {
    fn entry_cost() -> usize {
        FRAME_BYTES + entry_overhead_bytes::<Bytes>()
    }

    fn meta_cost() -> usize {
        topic_overhead_bytes::<Bytes>("t0")
    }

    fn used(&self) -> usize {
        self.topics
            .iter()
            .flatten()
            .filter(|inc| !inc.kept.is_empty())
            .map(|inc| Self::meta_cost() + inc.kept.len() * Self::entry_cost())
            .sum()
    }

    fn forget_if_idle(&mut self, t: usize) {
        let idle = self.topics[t]
            .as_ref()
            .is_some_and(|inc| inc.kept.is_empty() && self.listeners[t] == 0);
        if idle {
            let inc = self.topics[t].take().unwrap();
            self.previous_epochs[t].push(inc.epoch);
        }
    }

    fn drop_front(&mut self, t: usize) {
        let inc = self.topics[t].as_mut().unwrap();
        let (seq, _) = inc.kept.pop_front().unwrap();
        let at = self.fifo.iter().position(|&e| e == (t, seq)).unwrap();
        self.fifo.remove(at);
        self.forget_if_idle(t);
    }

    fn expire_topic(&mut self, t: usize) {
        while let Some(inc) = &self.topics[t] {
            match inc.kept.front() {
                Some(&(_, at)) if at + TTL_MS <= self.now => self.drop_front(t),
                _ => break,
            }
        }
    }

    fn top(&self, t: usize) -> u64 {
        self.topics[t]
            .as_ref()
            .map_or(0, |inc| inc.frames.len() as u64)
    }
}

fn run(
    ops: Vec<Op>,
    size: usize,
    cap: usize,
    budget_messages: Option<usize>,
) -> Result<(), TestCaseError> {
    let budget = budget_messages.map_or(usize::MAX, |n| {
        TOPICS.len() * Model::meta_cost() + n * Model::entry_cost()
    });
    let policy = HistoryPolicy::new(size, Duration::from_millis(TTL_MS), &[], cap);
    let mut h: History<Bytes> = History::new(policy, budget, 42);
    let mut m = Model {
        size,
        cap,
        budget,
        now: 0,
        topics: (0..TOPICS.len()).map(|_| None).collect(),
        listeners: vec![0; TOPICS.len()],
        fifo: VecDeque::new(),
        previous_epochs: vec![Vec::new(); TOPICS.len()],
        clients: (0..CLIENTS)
            .map(|c| Client {
                topic: c % TOPICS.len(),
                ..Client::default()
            })
            .collect(),
    };
    for op in ops {
        match op {
            Op::Publish(t) => {
                let topic = TOPICS[t];
                m.expire_topic(t);
                let published =
                    h.publish(topic, m.now, |seq| Bytes::from(format!("{topic}#{seq:06}")));
                if m.topics[t].is_none() {
                    prop_assert!(
                        published.is_none(),
                        "no state: nobody listening, nothing kept"
                    );
                    continue;
                }
                let published = published.expect("sequenced");
                let inc = m.topics[t].get_or_insert_with(|| Inc {
                    epoch: published.epoch,
                    frames: Vec::new(),
                    kept: VecDeque::new(),
                });
                prop_assert_eq!(published.epoch, inc.epoch);
                prop_assert!(
                    !m.previous_epochs[t].contains(&published.epoch),
                    "epoch reused"
                );
                inc.frames.push(published.frame.clone());
                let seq = inc.frames.len() as u64;
                prop_assert_eq!(published.seq, seq);
                if m.size > 0 {
                    inc.kept.push_back((seq, m.now));
                    m.fifo.push_back((t, seq));
                    if m.topics[t].as_ref().unwrap().kept.len() > m.size {
                        m.drop_front(t);
                    }
                    while m.used() > m.budget {
                        let (victim, _) = *m.fifo.front().unwrap();
                        m.drop_front(victim);
                    }
                }
                for client in m.clients.iter_mut().filter(|c| c.connected && c.topic == t) {
                    client.received.push(seq);
                    client.last = Some((seq, published.epoch));
                }
            }
            Op::Connect(c) => {
                if m.clients[c].connected {
                    continue;
                }
                let t = m.clients[c].topic;
                let topic = TOPICS[t];
                m.expire_topic(t);
                m.listeners[t] += 1;
                let (epoch, top) = h
                    .set_interest(topic, true, m.now)
                    .expect("live while listened");
                let inc = m.topics[t].get_or_insert_with(|| Inc {
                    epoch,
                    frames: Vec::new(),
                    kept: VecDeque::new(),
                });
                prop_assert_eq!(epoch, inc.epoch);
                prop_assert!(!m.previous_epochs[t].contains(&epoch), "epoch reused");
                prop_assert_eq!(top, inc.frames.len() as u64);
                let since = match m.clients[c].last {
                    Some((seq, epoch)) => Since {
                        seq,
                        epoch: Some(epoch),
                    },
                    None => Since {
                        seq: 0,
                        epoch: None,
                    },
                };
                let r = h.resume(topic, since, m.now).expect("live while listened");
                let inc = m.topics[t].as_ref().unwrap();
                prop_assert_eq!((r.epoch, r.top), (inc.epoch, inc.frames.len() as u64));
                let top = r.top;
                let first_kept = inc.kept.front().map(|&(seq, _)| seq);
                let covers = |from: u64| from > top || first_kept.is_some_and(|k| k <= from);
                let expected = match since.epoch {
                    Some(e) => {
                        e == inc.epoch
                            && since.seq <= top
                            && covers(since.seq + 1)
                            && top - since.seq <= m.cap as u64
                    }
                    None => {
                        since.seq <= top
                            && covers(since.seq + 1)
                            && (top - since.seq <= m.cap as u64)
                    }
                };
                prop_assert_eq!(
                    r.recovered,
                    expected,
                    "since {:?} top {} kept from {:?}",
                    since,
                    top,
                    first_kept
                );
                // Whatever is replayed is a run of stored frames ending at the top.
                let n = r.replay.len() as u64;
                for (i, frame) in r.replay.iter().enumerate() {
                    let seq = top - n + 1 + i as u64;
                    prop_assert_eq!(frame.as_ptr(), inc.frames[(seq - 1) as usize].as_ptr());
                }
                let client = &mut m.clients[c];
                client.connected = true;
                if r.recovered {
                    prop_assert_eq!(n, top - since.seq);
                    if since.epoch.is_none() {
                        client.joined_at = since.seq;
                        client.received.clear();
                    }
                    client.received.extend(since.seq + 1..=top);
                } else {
                    if since.epoch.is_some() {
                        prop_assert_eq!(n, 0, "no partial replay");
                    }
                    client.joined_at = top - n;
                    client.received = (top - n + 1..=top).collect();
                }
                client.last = Some((top, r.epoch));
            }
            Op::Disconnect(c) => {
                if !m.clients[c].connected {
                    continue;
                }
                m.clients[c].connected = false;
                let t = m.clients[c].topic;
                m.listeners[t] -= 1;
                if m.listeners[t] == 0 {
                    m.expire_topic(t);
                    prop_assert_eq!(h.set_interest(TOPICS[t], false, m.now), None);
                    m.forget_if_idle(t);
                }
            }
            Op::Advance(ms) => m.now += ms,
            Op::Sweep => {
                h.expire(m.now, usize::MAX);
                for t in 0..TOPICS.len() {
                    m.expire_topic(t);
                }
            }
        }
        // After every step.
        prop_assert_eq!(h.used_bytes(), m.used());
        prop_assert!(h.used_bytes() <= budget);
        prop_assert_eq!(h.topic_count(), m.topics.iter().flatten().count());
        for client in m.clients.iter().filter(|c| c.connected) {
            let top = m.top(client.topic);
            let expected: Vec<u64> = (client.joined_at + 1..=top).collect();
            prop_assert_eq!(
                &client.received,
                &expected,
                "exactly once, in order, no gap"
            );
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn resumes_recover_exactly_when_the_window_covers_the_gap(
        ops in proptest::collection::vec(op(), 1..120),
        size in prop_oneof![Just(0usize), 1..8usize, Just(100)],
        cap in prop_oneof![1..6usize, Just(1000)],
        budget in prop_oneof![Just(None), (1..12usize).prop_map(Some)],
    ) {
        run(ops, size, cap, budget)?;
    }
}
