//! Which shard owns a topic, and the topic hash the in-process engine keys on: SipHash with
//! keys drawn once per process (std's `RandomState`), so every shard of a process computes
//! the same owner with no coordination, while a client, who cannot know the keys, cannot
//! pick names that all land on one shard (or one slot of the interest filter).
//!
//! Ownership is a property of one process only: nothing outside it may depend on it.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::OnceLock;

/// The process's hash keys, drawn on first use and the same for every shard afterwards.
fn process_keys() -> &'static RandomState {
    static KEYS: OnceLock<RandomState> = OnceLock::new();
    KEYS.get_or_init(RandomState::new)
}

/// The keyed hash of a topic name, the same on every shard of this process and unpredictable
/// from outside it.
pub fn topic_hash(topic: &str) -> u64 {
    process_keys().hash_one(topic.as_bytes())
}

/// The shard (in `0..shards`) that owns `topic`: `(topic_hash(topic) * shards) >> 64`
/// (Lemire's multiply-shift range reduction: no division, unbiased for any shard count up to
/// far beyond what a machine has). `shards` must be at least 1; 0 is treated as 1.
pub fn owner_shard(topic: &str, shards: usize) -> usize {
    debug_assert!(shards >= 1, "a server has at least one shard");
    owner_of_hash(topic_hash(topic), shards)
}

/// [`owner_shard`] for a hash already computed.
pub fn owner_of_hash(hash: u64, shards: usize) -> usize {
    let shards = shards.max(1) as u128;
    ((u128::from(hash) * shards) >> 64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shard_of_a_process_agrees() {
        let names: Vec<String> = (0..1000).map(|i| format!("t{i}")).collect();
        let here: Vec<usize> = names.iter().map(|t| owner_shard(t, 7)).collect();
        let there =
            std::thread::spawn(move || names.iter().map(|t| owner_shard(t, 7)).collect::<Vec<_>>())
                .join()
                .expect("thread");
        assert_eq!(here, there);
    }

    #[test]
    fn the_keys_differ_between_processes() {
        // Two independently drawn key pairs (what two processes get) disagree on some names.
        let (a, b) = (RandomState::new(), RandomState::new());
        let differ = (0..64).any(|i| {
            let name = format!("t{i}");
            a.hash_one(name.as_bytes()) != b.hash_one(name.as_bytes())
        });
        assert!(differ, "RandomState draws fresh keys per instance");
    }

    #[test]
    fn one_shard_owns_everything_and_results_are_in_range() {
        for i in 0..1000 {
            let name = format!("t{i}");
            assert_eq!(owner_shard(&name, 1), 0);
            for shards in [2, 3, 7, 64, 1024] {
                assert!(owner_shard(&name, shards) < shards);
            }
        }
    }

    #[test]
    fn distribution_is_roughly_even() {
        // 10k similar names (the realistic bad case for a weak hash) over 2, 4 and 7 shards:
        // every shard gets within 10% of its fair share.
        for shards in [2usize, 4, 7] {
            for pattern in ["topic-{}", "user.{}.events", "{}"] {
                let mut counts = vec![0usize; shards];
                for i in 0..10_000 {
                    let name = pattern.replace("{}", &i.to_string());
                    counts[owner_shard(&name, shards)] += 1;
                }
                let fair = 10_000 / shards;
                for &c in &counts {
                    assert!(
                        c.abs_diff(fair) * 10 <= fair,
                        "{shards} shards, {pattern}: {counts:?}"
                    );
                }
            }
        }
    }
}
