//! One shard's subscriber index (topic -> local connections) and one connection's own list of
//! topics. Pure bookkeeping: the outcomes tell the event loop when to tell a topic's owner that
//! this shard's interest started or ended; nothing here sends anything.

use std::collections::HashMap;

/// A connection's key in its shard's slab.
pub type ConnId = usize;

/// Hash tables at least this big are shrunk when they become a quarter full, so a burst of
/// topics or subscribers does not pin its memory forever.
const SHRINK_MIN_CAPACITY: usize = 64;

/// What [`LocalIndex::subscribe`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum SubscribeOutcome {
    /// The connection was already subscribed; nothing changed.
    AlreadySubscribed,
    /// The connection was added. `first_on_shard`: it is the topic's only local subscriber, so
    /// the topic's owner must learn that this shard is now interested.
    Added { first_on_shard: bool },
}

/// What [`LocalIndex::unsubscribe`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum UnsubscribeOutcome {
    /// The connection was not subscribed; nothing changed.
    NotSubscribed,
    /// The connection was removed. `last_on_shard`: no local subscriber is left, the topic's
    /// entry is freed and the owner must learn that this shard lost interest.
    Removed { last_on_shard: bool },
}

/// A set of connections stored densely, so fan-out reads one `&[ConnId]`.
///
/// `indexmap::IndexSet` cannot hand out `&[T]` (its entries carry their hashes), so this is
/// the same idea by hand: a `Vec` for the members, and, only once the set is big, a
/// position map that makes removal O(1) (swap-remove, then fix the moved member's position).
/// Small sets, by far the most common per shard, are scanned linearly and carry no map.
#[derive(Debug, Default)]
struct ConnSet {
    conns: Vec<ConnId>,
    /// `conns[positions[c]] == c`; present only while `conns.len() > INDEX_DROP_LEN`.
    positions: Option<HashMap<ConnId, usize>>,
}

/// A set grows a position map when it gets longer than this.
const INDEX_BUILD_LEN: usize = 16;
/// A set drops its position map when it gets this short (hysteresis against rebuilding).
const INDEX_DROP_LEN: usize = 8;

impl ConnSet {
    fn position(&self, conn: ConnId) -> Option<usize> {
        match &self.positions {
            Some(positions) => positions.get(&conn).copied(),
            None => self.conns.iter().position(|&c| c == conn),
        }
    }

    fn contains(&self, conn: ConnId) -> bool {
        self.position(conn).is_some()
    }

    /// `false` if already present.
    fn insert(&mut self, conn: ConnId) -> bool {
        if self.contains(conn) {
            return false;
        }
        self.conns.push(conn);
        match &mut self.positions {
            Some(positions) => {
                positions.insert(conn, self.conns.len() - 1);
            }
            None if self.conns.len() > INDEX_BUILD_LEN => {
                let positions = self.conns.iter().enumerate().map(|(i, &c)| (c, i));
                self.positions = Some(positions.collect());
            }
            None => {}
        }
        true
    }

    /// `false` if absent. Order is not kept (the last member takes the removed one's place).
    fn remove(&mut self, conn: ConnId) -> bool {
        let Some(at) = self.position(conn) else {
            return false;
        };
        self.conns.swap_remove(at);
        if let Some(positions) = &mut self.positions {
            positions.remove(&conn);
            if let Some(&moved) = self.conns.get(at) {
                positions.insert(moved, at);
            }
            if self.conns.len() <= INDEX_DROP_LEN {
                self.positions = None;
            } else {
                shrink_if_sparse(positions);
            }
        }
        if self.conns.capacity() >= SHRINK_MIN_CAPACITY
            && self.conns.len() * 4 < self.conns.capacity()
        {
            self.conns.shrink_to(self.conns.len() * 2);
        }
        true
    }

    fn as_slice(&self) -> &[ConnId] {
        &self.conns
    }

    fn len(&self) -> usize {
        self.conns.len()
    }

    fn is_empty(&self) -> bool {
        self.conns.is_empty()
    }
}

/// One topic's local subscribers.
#[derive(Debug, Default)]
struct LocalTopic {
    subscribers: ConnSet,
}

/// Per-shard index from topic name to the local connections subscribed to it. A topic is
/// present only while it has at least one local subscriber.
#[derive(Debug, Default)]
pub struct LocalIndex {
    topics: HashMap<Box<str>, LocalTopic>,
    subscriptions: usize,
}

impl LocalIndex {
    /// An empty index (no heap allocation until the first subscribe).
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `conn` to `topic`'s subscribers. The name must already be validated.
    pub fn subscribe(&mut self, topic: &str, conn: ConnId) -> SubscribeOutcome {
        let entry = match self.topics.get_mut(topic) {
            Some(entry) => entry,
            None => self.topics.entry(topic.into()).or_default(),
        };
        if !entry.subscribers.insert(conn) {
            return SubscribeOutcome::AlreadySubscribed;
        }
        self.subscriptions += 1;
        SubscribeOutcome::Added {
            first_on_shard: entry.subscribers.len() == 1,
        }
    }

    /// Removes `conn` from `topic`'s subscribers, freeing the topic's entry when it was the last.
    pub fn unsubscribe(&mut self, topic: &str, conn: ConnId) -> UnsubscribeOutcome {
        let Some(entry) = self.topics.get_mut(topic) else {
            return UnsubscribeOutcome::NotSubscribed;
        };
        if !entry.subscribers.remove(conn) {
            return UnsubscribeOutcome::NotSubscribed;
        }
        self.subscriptions -= 1;
        let last_on_shard = entry.subscribers.is_empty();
        if last_on_shard {
            self.topics.remove(topic);
            shrink_if_sparse(&mut self.topics);
        }
        UnsubscribeOutcome::Removed { last_on_shard }
    }

    /// The local connections subscribed to `topic` (empty if none).
    pub fn subscribers(&self, topic: &str) -> &[ConnId] {
        match self.topics.get(topic) {
            Some(entry) => entry.subscribers.as_slice(),
            None => &[],
        }
    }

    /// Whether `conn` is subscribed to `topic`.
    pub fn is_subscribed(&self, topic: &str, conn: ConnId) -> bool {
        self.topics
            .get(topic)
            .is_some_and(|entry| entry.subscribers.contains(conn))
    }

    /// How many topics have at least one local subscriber.
    pub fn topic_count(&self) -> usize {
        self.topics.len()
    }

    /// How many (connection, topic) subscriptions this shard holds.
    pub fn subscription_count(&self) -> usize {
        self.subscriptions
    }
}

fn shrink_if_sparse<K: Eq + std::hash::Hash, V>(map: &mut HashMap<K, V>) {
    if map.capacity() >= SHRINK_MIN_CAPACITY && map.len() * 4 < map.capacity() {
        map.shrink_to(map.len() * 2);
    }
}

/// One connection's own topics, kept by the connection so the event loop can enforce
/// `max_subscriptions_per_connection` and unsubscribe everything on close.
///
/// A sorted `Vec<Box<str>>`: empty costs no heap; lookups are binary searches; inserts and
/// removes shift at most `max_subscriptions_per_connection` pointers, which is small.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Subscriptions {
    topics: Vec<Box<str>>,
}

impl Subscriptions {
    /// No topics, no heap.
    pub const fn new() -> Self {
        Subscriptions { topics: Vec::new() }
    }

    /// Whether the connection is subscribed to `topic`.
    pub fn contains(&self, topic: &str) -> bool {
        self.search(topic).is_ok()
    }

    /// Adds `topic`; `false` if it was already there.
    pub fn insert(&mut self, topic: &str) -> bool {
        match self.search(topic) {
            Ok(_) => false,
            Err(at) => {
                self.topics.insert(at, topic.into());
                true
            }
        }
    }

    /// Removes `topic`; `false` if it was not there. Frees the heap when the last one goes.
    pub fn remove(&mut self, topic: &str) -> bool {
        match self.search(topic) {
            Ok(at) => {
                self.topics.remove(at);
                if self.topics.is_empty() {
                    self.topics = Vec::new();
                }
                true
            }
            Err(_) => false,
        }
    }

    /// How many topics.
    pub fn len(&self) -> usize {
        self.topics.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.topics.is_empty()
    }

    /// The topics, sorted by bytes.
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.topics.iter().map(|t| &**t)
    }

    /// Takes every topic out (for cleanup on close), leaving `self` empty with no heap.
    pub fn drain(&mut self) -> std::vec::IntoIter<Box<str>> {
        std::mem::take(&mut self.topics).into_iter()
    }

    fn search(&self, topic: &str) -> Result<usize, usize> {
        self.topics.binary_search_by(|t| (**t).cmp(topic))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_and_last_subscriber_are_reported() {
        let mut index = LocalIndex::new();
        assert_eq!(
            index.subscribe("news", 1),
            SubscribeOutcome::Added {
                first_on_shard: true
            }
        );
        assert_eq!(
            index.subscribe("news", 2),
            SubscribeOutcome::Added {
                first_on_shard: false
            }
        );
        assert_eq!(
            index.subscribe("news", 1),
            SubscribeOutcome::AlreadySubscribed
        );
        assert_eq!(index.subscription_count(), 2);
        assert_eq!(index.topic_count(), 1);
        let mut subs = index.subscribers("news").to_vec();
        subs.sort_unstable();
        assert_eq!(subs, [1, 2]);
        assert!(index.is_subscribed("news", 2));

        assert_eq!(
            index.unsubscribe("news", 1),
            UnsubscribeOutcome::Removed {
                last_on_shard: false
            }
        );
        assert_eq!(
            index.unsubscribe("news", 1),
            UnsubscribeOutcome::NotSubscribed
        );
        assert_eq!(
            index.unsubscribe("other", 2),
            UnsubscribeOutcome::NotSubscribed
        );
        assert_eq!(
            index.unsubscribe("news", 2),
            UnsubscribeOutcome::Removed {
                last_on_shard: true
            }
        );
        assert_eq!(index.topic_count(), 0);
        assert_eq!(index.subscription_count(), 0);
        assert!(index.subscribers("news").is_empty());
        assert!(!index.is_subscribed("news", 2));
    }

    #[test]
    fn memory_is_released_after_a_burst() {
        let mut index = LocalIndex::new();
        for i in 0..10_000 {
            let _ = index.subscribe(&format!("t{i}"), i);
            let _ = index.subscribe("hot", i);
        }
        let big = index.topics.capacity();
        for i in 0..10_000 {
            let _ = index.unsubscribe(&format!("t{i}"), i);
            if i > 0 {
                let _ = index.unsubscribe("hot", i);
            }
        }
        assert_eq!(index.topic_count(), 1);
        assert!(
            index.topics.capacity() < big / 8,
            "map kept its burst capacity"
        );
        let hot = &index.topics["hot"].subscribers;
        assert!(hot.conns.capacity() < SHRINK_MIN_CAPACITY * 2);
        assert!(hot.positions.is_none());
        assert_eq!(index.subscribers("hot"), [0]);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(1000))]

        /// The dense set agrees with a `BTreeSet` across the linear/indexed thresholds.
        #[test]
        fn conn_set_matches_btreeset(
            ops in proptest::collection::vec((proptest::bool::ANY, 0usize..40), 0..300)
        ) {
            let mut set = ConnSet::default();
            let mut model = std::collections::BTreeSet::new();
            for (insert, conn) in ops {
                if insert {
                    proptest::prop_assert_eq!(set.insert(conn), model.insert(conn));
                } else {
                    proptest::prop_assert_eq!(set.remove(conn), model.remove(&conn));
                }
                let mut members = set.as_slice().to_vec();
                members.sort_unstable();
                proptest::prop_assert_eq!(&members, &model.iter().copied().collect::<Vec<_>>());
                proptest::prop_assert_eq!(set.len(), model.len());
                proptest::prop_assert_eq!(set.is_empty(), model.is_empty());
                if let Some(positions) = &set.positions {
                    proptest::prop_assert!(set.len() > INDEX_DROP_LEN);
                    proptest::prop_assert_eq!(positions.len(), set.len());
                    for (&c, &at) in positions {
                        proptest::prop_assert_eq!(set.conns[at], c);
                    }
                } else {
                    proptest::prop_assert!(set.len() <= INDEX_BUILD_LEN);
                }
                for conn in 0..40 {
                    proptest::prop_assert_eq!(set.contains(conn), model.contains(&conn));
                }
            }
        }
    }

    #[test]
    fn subscriptions_behave_like_a_set() {
        let mut subs = Subscriptions::new();
        assert!(subs.is_empty());
        assert!(subs.insert("b"));
        assert!(subs.insert("a"));
        assert!(!subs.insert("b"));
        assert!(subs.contains("a") && subs.contains("b") && !subs.contains("c"));
        assert_eq!(subs.len(), 2);
        assert_eq!(subs.iter().collect::<Vec<_>>(), ["a", "b"]);
        assert!(!subs.remove("c"));
        assert!(subs.remove("a"));
        assert!(subs.remove("b"));
        assert_eq!(subs.topics.capacity(), 0, "empty must hold no heap");
        assert!(subs.insert("x"));
        let drained: Vec<Box<str>> = subs.drain().collect();
        assert_eq!(drained, [Box::from("x")]);
        assert_eq!(subs.len(), 0);
        assert_eq!(subs.topics.capacity(), 0);
    }
}
