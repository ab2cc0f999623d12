//! The topic logs one shard sequences: for each live topic incarnation its epoch, its next seq,
//! whether any shard listens, its [`Ring`] of kept frames, and the shard's share of the
//! `--max-history-bytes` budget with the order in which messages leave (oldest first). Pure:
//! `now_ms` comes from the caller, nothing is sent; the owner shard drives it.
//!
//! Lifetime of a topic incarnation: it starts (with a fresh epoch, seq from 1) at the first
//! publish to a topic that keeps history, or when a shard starts listening; it lives while a
//! shard listens or a message is kept; when neither holds any more (the last listener left and
//! the last message expired or was evicted) it is forgotten, and the next one has a new epoch.
//!
//! Invariant: a ring's kept messages run contiguously up to the topic's top seq (a message
//! that cannot be kept empties the ring), so "the oldest kept seq" describes all that is kept.

use std::collections::{HashMap, VecDeque};
use std::mem::size_of;

use slab::Slab;

use super::policy::{HistoryPolicy, TopicPolicy, REPLAY_FRAME_OVERHEAD_BYTES};
use super::resume::{decide, TailView};
use super::ring::{Entry, Ring, StoredFrame};
use crate::proto::epoch::{Epoch, EpochGen};
use crate::proto::since::Since;
use crate::topic::topic_hash;

/// One live topic incarnation.
#[derive(Debug)]
struct TopicLog<F> {
    name: Box<str>,
    /// Tells this incarnation from a later one in the same slab slot (see [`Record`]).
    generation: u32,
    epoch: Epoch,
    next_seq: u64,
    /// Some shard has a subscriber.
    interested: bool,
    policy: TopicPolicy,
    ring: Ring<F>,
}

/// Where a kept message sits, in the expiry queue of its TTL class. A record whose message has
/// already gone (by size, TTL or budget) is stale and skipped when it reaches the front, or
/// dropped by compaction; it never points at another topic's message: the generation differs.
#[derive(Debug, Clone, Copy)]
struct Record {
    slot: u32,
    generation: u32,
    seq: u64,
}

/// Counters for `/metrics`: plain numbers the shard reads when scraped.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct HistoryStats {
    /// Messages kept.
    pub stored: u64,
    /// Messages that left because their topic kept more than its `history_size`.
    pub evicted_size: u64,
    /// Messages that left past their TTL.
    pub expired: u64,
    /// Messages that left, oldest first, to keep within `--max-history-bytes`.
    pub evicted_budget: u64,
    /// Messages too large to keep within the budget at all (their topic's ring was emptied).
    pub too_large: u64,
    /// Topic incarnations started (each with a new epoch).
    pub incarnations: u64,
}

/// What a publish got: its seq, its topic's epoch, and the frame built for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published<F> {
    pub seq: u64,
    pub epoch: Epoch,
    pub frame: F,
}

/// The answer to a resume: the ack's fields, and the frames to send before anything live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resumed<F> {
    pub epoch: Epoch,
    /// The topic's top seq now: after the replay, the next live message is `top + 1`.
    pub top: u64,
    pub recovered: bool,
    /// The kept frames after `since.seq`, in seq order (empty when not recovered with an epoch).
    pub replay: Vec<F>,
}

/// A page of kept messages, for `GET /history`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<F> {
    pub epoch: Epoch,
    pub top: u64,
    /// `(seq, frame)`, oldest first.
    pub messages: Vec<(u64, F)>,
}

/// The topic logs of one shard.
#[derive(Debug)]
pub struct History<F> {
    /// Topics started (`true`) and forgotten (`false`) since the last `drain_lifecycle`, as
    /// name hashes: the local engine keeps the process-wide interest filter in step with them.
    lifecycle: Vec<(u64, bool)>,
    policy: HistoryPolicy,
    /// This shard's share of `--max-history-bytes`.
    budget_bytes: usize,
    /// Bytes charged: kept messages (frame + bookkeeping) and the metadata of topics that keep
    /// at least one message.
    used_bytes: usize,
    names: HashMap<Box<str>, u32>,
    topics: Slab<TopicLog<F>>,
    next_generation: u32,
    /// One queue per TTL class, in publish order.
    queues: Vec<VecDeque<Record>>,
    records: usize,
    kept: usize,
    epochs: EpochGen,
    stats: HistoryStats,
}

/// Bookkeeping bytes charged per kept message besides its frame: its ring entry and its record.
pub fn entry_overhead_bytes<F>() -> usize {
    size_of::<Entry<F>>() + size_of::<Record>()
}

/// Bytes charged for a topic that keeps messages, besides them: its log, its name twice (the
/// log and the name index) and the index's slot.
pub fn topic_overhead_bytes<F>(name: &str) -> usize {
    size_of::<TopicLog<F>>() + 2 * name.len() + size_of::<(Box<str>, u32)>() + 8
}

impl<F: StoredFrame> History<F> {
    /// Empty logs with `policy`, `budget_bytes` of the history budget, and epochs drawn from
    /// `seed` (the shard passes [`EpochGen::os_seed`]; tests a constant).
    pub fn new(policy: HistoryPolicy, budget_bytes: usize, seed: u64) -> History<F> {
        let classes = policy.ttl_classes_ms().len();
        History {
            policy,
            budget_bytes,
            used_bytes: 0,
            names: HashMap::new(),
            topics: Slab::new(),
            next_generation: 0,
            queues: (0..classes).map(|_| VecDeque::new()).collect(),
            records: 0,
            kept: 0,
            epochs: EpochGen::new(seed),
            stats: HistoryStats::default(),
            lifecycle: Vec::new(),
        }
    }

    /// The policy in force.
    pub fn policy(&self) -> &HistoryPolicy {
        &self.policy
    }

    fn start(&mut self, topic: &str, policy: TopicPolicy) -> u32 {
        let generation = self.next_generation;
        self.next_generation = self.next_generation.wrapping_add(1);
        self.stats.incarnations += 1;
        let slot = self.topics.insert(TopicLog {
            name: topic.into(),
            generation,
            epoch: self.epochs.next_epoch(),
            next_seq: 1,
            interested: false,
            policy,
            ring: Ring::default(),
        }) as u32;
        self.names.insert(topic.into(), slot);
        self.lifecycle.push((topic_hash(topic), true));
        slot
    }

    /// Forgets the topic in `slot` if nothing keeps it alive any more.
    fn forget_if_idle(&mut self, slot: u32) {
        let log = &self.topics[slot as usize];
        if log.interested || !log.ring.is_empty() {
            return;
        }
        let log = self.topics.remove(slot as usize);
        self.names.remove(&log.name);
        self.lifecycle.push((topic_hash(&log.name), false));
        if self.names.capacity() >= 64 && self.names.len() * 4 < self.names.capacity() {
            self.names.shrink_to(self.names.len() * 2);
        }
    }

    /// Removes the oldest message of `slot`'s ring and releases its bytes; forgets the topic
    /// if that was all that kept it.
    fn drop_oldest(&mut self, slot: u32) {
        let log = &mut self.topics[slot as usize];
        let Some(entry) = log.ring.pop_front() else {
            return;
        };
        self.kept -= 1;
        self.used_bytes -= entry.frame.stored_bytes() + entry_overhead_bytes::<F>();
        if log.ring.is_empty() {
            self.used_bytes -= topic_overhead_bytes::<F>(&log.name);
            self.forget_if_idle(slot);
        }
    }

    /// Drops `slot`'s messages that are past their TTL at `now_ms`. Returns whether the topic
    /// was forgotten.
    fn expire_topic(&mut self, slot: u32, now_ms: u64) -> bool {
        loop {
            let Some(log) = self.topics.get(slot as usize) else {
                return true;
            };
            match log.ring.front() {
                Some(front) if front.at_ms.saturating_add(log.policy.ttl_ms) <= now_ms => {
                    self.stats.expired += 1;
                    self.drop_oldest(slot);
                }
                _ => return false,
            }
        }
    }

    /// The slot of `topic` after dropping its expired messages; `None` if it is (now) gone.
    fn live_slot(&mut self, topic: &str, now_ms: u64) -> Option<u32> {
        let slot = *self.names.get(topic)?;
        (!self.expire_topic(slot, now_ms)).then_some(slot)
    }

    fn record_is_live(&self, record: Record) -> bool {
        self.topics
            .get(record.slot as usize)
            .is_some_and(|log| log.generation == record.generation && log.ring.holds(record.seq))
    }

    /// The first live record of TTL class `class`, dropping stale ones before it.
    fn live_front(&mut self, class: usize) -> Option<Record> {
        while let Some(&record) = self.queues[class].front() {
            if self.record_is_live(record) {
                return Some(record);
            }
            self.queues[class].pop_front();
            self.records -= 1;
        }
        None
    }

    /// Evicts the oldest kept message of the shard (across TTL classes). Returns false when
    /// nothing is kept.
    fn evict_oldest(&mut self) -> bool {
        let mut oldest: Option<(u64, usize, Record)> = None;
        for class in 0..self.queues.len() {
            if let Some(record) = self.live_front(class) {
                // The live front record of a class is its topic's oldest kept message.
                let at_ms = self.topics[record.slot as usize]
                    .ring
                    .front()
                    .map_or(0, |e| e.at_ms);
                if oldest.is_none_or(|(best, _, _)| at_ms < best) {
                    oldest = Some((at_ms, class, record));
                }
            }
        }
        let Some((_, class, record)) = oldest else {
            return false;
        };
        self.queues[class].pop_front();
        self.records -= 1;
        self.stats.evicted_budget += 1;
        self.drop_oldest(record.slot);
        true
    }

    /// Drops stale records once they outnumber live ones: a topic that sheds messages by size
    /// leaves a record behind per message, and an old long-lived message at a queue's front
    /// would otherwise hold them all.
    fn compact_if_needed(&mut self) {
        if self.records <= 2 * self.kept + 1024 {
            return;
        }
        let mut queues = std::mem::take(&mut self.queues);
        for queue in &mut queues {
            queue.retain(|&record| self.record_is_live(record));
            queue.shrink_to(queue.len() * 2);
        }
        self.records = queues.iter().map(VecDeque::len).sum();
        self.queues = queues;
    }

    /// A shard started (`interested`) or stopped having subscribers of `topic`, as the topic's
    /// owner sees it. Starting interest starts an incarnation if there is none and returns its
    /// epoch and top; stopping may forget the topic (if nothing is kept).
    pub fn set_interest(
        &mut self,
        topic: &str,
        interested: bool,
        now_ms: u64,
    ) -> Option<(Epoch, u64)> {
        if interested {
            let slot = self.listen(topic, now_ms);
            let log = &self.topics[slot as usize];
            return Some((log.epoch, log.next_seq - 1));
        }
        let slot = self.live_slot(topic, now_ms)?;
        self.topics[slot as usize].interested = false;
        self.forget_if_idle(slot);
        None
    }

    /// Marks `topic` listened to, starting an incarnation if there is none, and returns its
    /// slot. Expired first: a topic whose messages all passed their TTL while nobody listened
    /// is gone, and a new listener starts its next incarnation.
    fn listen(&mut self, topic: &str, now_ms: u64) -> u32 {
        let slot = match self.live_slot(topic, now_ms) {
            Some(slot) => slot,
            None => {
                let policy = self.policy.for_topic(topic);
                self.start(topic, policy)
            }
        };
        self.topics[slot as usize].interested = true;
        slot
    }

    /// A listener subscribes to `topic` resuming from `since`: [`History::set_interest`]
    /// (listening) and [`History::resume`] in one, so the answer always exists.
    pub fn listen_and_resume(&mut self, topic: &str, since: Since, now_ms: u64) -> Resumed<F> {
        let slot = self.listen(topic, now_ms);
        self.resume_slot(slot, since)
    }

    /// Sequences a publish to `topic` at `now_ms`: the next seq, the frame `build(seq)` makes,
    /// kept when the topic keeps history. `None` when the topic has no state (no listener and
    /// no kept message): nothing is sequenced or kept (the message goes to no one).
    pub fn publish(
        &mut self,
        topic: &str,
        now_ms: u64,
        build: impl FnOnce(u64) -> F,
    ) -> Option<Published<F>> {
        // A topic whose kept messages all passed their TTL while nobody listened is gone: the
        // publish starts its next incarnation (checking the ring's front costs one compare).
        // A topic with no state (no listener, nothing kept) is not started by a publish:
        // nobody hears it, and publishes to names nobody uses must cost nothing (a client
        // could otherwise fill the history with them).
        let slot = self.live_slot(topic, now_ms)?;
        let log = &mut self.topics[slot as usize];
        let seq = log.next_seq;
        log.next_seq += 1;
        let epoch = log.epoch;
        let frame = build(seq);
        if log.policy.size > 0 {
            self.keep(slot, seq, now_ms, frame.clone());
        }
        Some(Published { seq, epoch, frame })
    }

    fn keep(&mut self, slot: u32, seq: u64, now_ms: u64, frame: F) {
        let log = &self.topics[slot as usize];
        let cost = frame.stored_bytes() + entry_overhead_bytes::<F>();
        let meta = topic_overhead_bytes::<F>(&log.name);
        if cost + meta > self.budget_bytes {
            // Never kept: so that what is kept stays contiguous up to the top, the older
            // messages cannot be replayed past this one either.
            // (`drop_oldest` forgets the topic with its last message if nobody listens; nothing
            // else takes the slot meanwhile, so `contains` still means this topic.)
            self.stats.too_large += 1;
            while self
                .topics
                .get(slot as usize)
                .is_some_and(|log| !log.ring.is_empty())
            {
                self.stats.evicted_budget += 1;
                self.drop_oldest(slot);
            }
            if self.topics.contains(slot as usize) {
                self.forget_if_idle(slot);
            }
            return;
        }
        let log = &mut self.topics[slot as usize];
        if log.ring.is_empty() {
            self.used_bytes += meta;
        }
        log.ring.push(seq, now_ms, frame);
        let (class, size, generation) = (log.policy.class, log.policy.size, log.generation);
        self.queues[class].push_back(Record {
            slot,
            generation,
            seq,
        });
        self.records += 1;
        self.kept += 1;
        self.used_bytes += cost;
        self.stats.stored += 1;
        while self.topics[slot as usize].ring.len() > size {
            self.stats.evicted_size += 1;
            self.drop_oldest(slot);
        }
        while self.used_bytes > self.budget_bytes && self.evict_oldest() {}
        self.compact_if_needed();
    }

    /// The epoch and top seq of `topic`, if it is live.
    pub fn incarnation(&self, topic: &str) -> Option<(Epoch, u64)> {
        let log = &self.topics[*self.names.get(topic)? as usize];
        Some((log.epoch, log.next_seq - 1))
    }

    /// Decides a resume of `topic` from `since` (see `resume.rs`) and collects the frames to
    /// replay. `None` when the topic is not live: the caller starts it (by interest) first.
    pub fn resume(&mut self, topic: &str, since: Since, now_ms: u64) -> Option<Resumed<F>> {
        let slot = self.live_slot(topic, now_ms)?;
        Some(self.resume_slot(slot, since))
    }

    fn resume_slot(&self, slot: u32, since: Since) -> Resumed<F> {
        let log = &self.topics[slot as usize];
        let top = log.next_seq - 1;
        let view = TailView {
            epoch: log.epoch,
            top,
            oldest_kept: log.ring.oldest_seq(),
        };
        let decision = decide(since, view, self.policy.max_replay_messages);
        let mut recovered = decision.recovered;
        let mut replay: Vec<F> = match &decision.replay {
            Some(range) => log
                .ring
                .after(range.start() - 1)
                .map(|e| e.frame.clone())
                .collect(),
            None => Vec::new(),
        };
        debug_assert_eq!(replay.len() as u64, decision.replay_len());
        // The byte cap, like the message cap: all or nothing with an epoch; without one, the
        // newest messages that fit (so live ones follow without a hole).
        let cost = |f: &F| f.stored_bytes() + REPLAY_FRAME_OVERHEAD_BYTES;
        let total: usize = replay.iter().map(cost).sum();
        if total > self.policy.max_replay_bytes {
            recovered = false;
            if since.epoch.is_some() {
                replay.clear();
            } else {
                let mut kept_bytes = 0;
                let fit = replay
                    .iter()
                    .rev()
                    .take_while(|f| {
                        kept_bytes += cost(f);
                        kept_bytes <= self.policy.max_replay_bytes
                    })
                    .count();
                replay.drain(..replay.len() - fit);
            }
        }
        Resumed {
            epoch: log.epoch,
            top,
            recovered,
            replay,
        }
    }

    /// Up to `limit` kept messages of `topic` after seq `after`, oldest first. `None` when the
    /// topic is not live.
    pub fn read(&mut self, topic: &str, after: u64, limit: usize, now_ms: u64) -> Option<Page<F>> {
        let slot = self.live_slot(topic, now_ms)?;
        let log = &self.topics[slot as usize];
        Some(Page {
            epoch: log.epoch,
            top: log.next_seq - 1,
            messages: log
                .ring
                .after(after)
                .take(limit)
                .map(|e| (e.seq, e.frame.clone()))
                .collect(),
        })
    }

    /// Drops messages past their TTL, at most `max_messages` of them (the sweep's budget per
    /// call). Returns how many went; when that is `max_messages`, call again soon.
    pub fn expire(&mut self, now_ms: u64, max_messages: usize) -> usize {
        let mut dropped = 0;
        for class in 0..self.queues.len() {
            let ttl_ms = self.policy.ttl_classes_ms()[class];
            while dropped < max_messages {
                let Some(record) = self.live_front(class) else {
                    break;
                };
                let at_ms = self.topics[record.slot as usize]
                    .ring
                    .front()
                    .map_or(u64::MAX, |e| e.at_ms);
                if at_ms.saturating_add(ttl_ms) > now_ms {
                    break;
                }
                self.queues[class].pop_front();
                self.records -= 1;
                self.stats.expired += 1;
                self.drop_oldest(record.slot);
                dropped += 1;
            }
        }
        self.compact_if_needed();
        dropped
    }

    /// Topics started and forgotten since the last call, as `(name hash, started)`.
    pub fn drain_lifecycle(&mut self) -> std::vec::Drain<'_, (u64, bool)> {
        self.lifecycle.drain(..)
    }

    /// Live topic incarnations.
    pub fn topic_count(&self) -> usize {
        self.topics.len()
    }

    /// Messages kept.
    pub fn kept_count(&self) -> usize {
        self.kept
    }

    /// Bytes charged against this shard's budget.
    pub fn used_bytes(&self) -> usize {
        self.used_bytes
    }

    /// Expiry records held (live and stale), to check that compaction bounds them.
    #[cfg(test)]
    pub(super) fn record_count(&self) -> usize {
        self.records
    }

    /// The counters.
    pub fn stats(&self) -> HistoryStats {
        self.stats
    }
}
