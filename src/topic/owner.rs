//! Which shard owns a topic: a fixed, seedless hash of the name, so every shard (and every
//! process and version that keeps this function) computes the same owner with no coordination.
//! Never replace it with std's randomly seeded `SipHash`: shards would disagree.

/// FNV-1a 64-bit offset basis (Fowler–Noll–Vo, draft-eastlake-fnv §2).
const FNV_OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
/// FNV-1a 64-bit prime.
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// FNV-1a 64 of `bytes`: for each byte, `h ^= byte; h *= FNV_PRIME` (wrapping).
pub fn fnv1a_64(bytes: &[u8]) -> u64 {
    let mut h = FNV_OFFSET_BASIS;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(FNV_PRIME);
    }
    h
}

/// MurmurHash3's 64-bit finalizer (`fmix64`): spreads every input bit over the whole word.
/// FNV-1a alone leaves its low bits weak (the lowest bit is the parity of the bytes' lowest
/// bits), and the range reduction below reads the high bits, so we mix once at the end.
fn fmix64(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^= h >> 33;
    h
}

/// The hash that decides topic ownership: `fmix64(fnv1a_64(topic))`. Part of the cluster's
/// wire-level contract: changing it moves every topic to another shard.
pub fn topic_hash(topic: &str) -> u64 {
    fmix64(fnv1a_64(topic.as_bytes()))
}

/// The shard (in `0..shards`) that owns `topic`: `(topic_hash(topic) * shards) >> 64`
/// (Lemire's multiply-shift range reduction: no division, unbiased for any shard count up to
/// far beyond what a machine has). `shards` must be at least 1; 0 is treated as 1.
pub fn owner_shard(topic: &str, shards: usize) -> usize {
    debug_assert!(shards >= 1, "a server has at least one shard");
    let shards = shards.max(1) as u128;
    ((u128::from(topic_hash(topic)) * shards) >> 64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_64_reference_vectors() {
        // From the FNV reference test suite (draft-eastlake-fnv, test vectors).
        assert_eq!(fnv1a_64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a_64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a_64(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn ownership_is_pinned() {
        // Pinned outputs (cross-checked with an independent Python implementation): if this
        // test changes, every deployed topic moves to another shard.
        let owners: Vec<usize> = ["news", "sport", "a", "日本語"]
            .iter()
            .map(|t| owner_shard(t, 7))
            .collect();
        assert_eq!(owners, PINNED_OWNERS_7);
        assert_eq!(topic_hash("news"), PINNED_HASH_NEWS);
    }

    const PINNED_OWNERS_7: [usize; 4] = [2, 2, 3, 6];
    const PINNED_HASH_NEWS: u64 = 0x5125_38bf_a8bf_202f;

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
