//! `--max-handshake-rate-per-ip`: one token bucket per client address, shared by every shard
//! and checked once per WebSocket upgrade (never on the delivery path). The buckets are
//! `auth::KeyedLimiter`s behind striped locks, so the limit is exact across shards (the kernel
//! spreads one address's connections over them) and two shards rarely wait for each other.
//!
//! Memory is bounded: at most [`MAX_TRACKED_ADDRESSES`] addresses are tracked; an address
//! whose bucket has refilled is forgotten by the coarse sweep, and a table full of addresses
//! that are all mid-burst lets new ones through untracked (counted) rather than locking
//! everyone out.

use std::net::IpAddr;
use std::sync::{Mutex, MutexGuard};

use crate::auth::{IpKey, KeyedLimiter, RateDecision, RateLimit};

/// Lock stripes: a power of two.
const STRIPES: usize = 16;

/// Addresses tracked at most, across all stripes: about 40 bytes each, well under 1 MiB.
pub const MAX_TRACKED_ADDRESSES: usize = 16 * 1024;

/// The per-address handshake buckets of the whole process.
#[derive(Debug)]
pub struct HandshakeRate {
    stripes: Box<[Mutex<KeyedLimiter<IpKey>>]>,
}

fn stripe_of(key: IpKey) -> usize {
    let bits = match key {
        IpKey::V4(v4) => u64::from(v4),
        IpKey::V6Prefix(prefix) => prefix ^ (1 << 63),
    };
    // Fibonacci hashing: the top bits of the product mix every input bit.
    (bits.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 60) as usize % STRIPES
}

impl HandshakeRate {
    /// `limit` per address, tracking at most `max_addresses` (at least one per stripe).
    pub fn new(limit: RateLimit, max_addresses: usize) -> HandshakeRate {
        let per_stripe = max_addresses.div_ceil(STRIPES).max(1);
        HandshakeRate {
            stripes: (0..STRIPES)
                .map(|_| Mutex::new(KeyedLimiter::new(limit, per_stripe)))
                .collect(),
        }
    }

    fn lock(&self, stripe: usize) -> MutexGuard<'_, KeyedLimiter<IpKey>> {
        // A panic while holding the lock cannot leave a bucket table half-updated in a way
        // that matters (the worst is one token too many): keep using it.
        self.stripes[stripe]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// One handshake from `ip` at `now_ms` (the shards' common millisecond clock).
    pub fn check(&self, ip: IpAddr, now_ms: u32) -> RateDecision {
        let key = IpKey::from(ip);
        self.lock(stripe_of(key)).check(key, now_ms)
    }

    /// Forgets refilled buckets in this shard's share of the stripes (`shard` of `shards`), so
    /// every stripe is swept by exactly one shard.
    pub fn sweep(&self, shard: usize, shards: usize, now_ms: u32) {
        for stripe in (shard..STRIPES).step_by(shards.max(1)) {
            self.lock(stripe).sweep(now_ms);
        }
    }

    /// Addresses tracked now.
    pub fn tracked(&self) -> usize {
        (0..STRIPES).map(|s| self.lock(s).len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_address_has_its_own_bucket_and_sweeps_forget_them() {
        let rate = HandshakeRate::new(RateLimit::per_second(2), 1024);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        assert_eq!(rate.check(a, 0), RateDecision::Allowed);
        assert_eq!(rate.check(a, 0), RateDecision::Allowed);
        assert_eq!(rate.check(a, 0), RateDecision::Limited);
        assert_eq!(rate.check(b, 0), RateDecision::Allowed);
        assert_eq!(rate.check(a, 500), RateDecision::Allowed, "refilled one");
        assert_eq!(rate.tracked(), 2);
        // Two shards sweep half the stripes each: together they forget everything refilled.
        rate.sweep(0, 2, 5_000);
        rate.sweep(1, 2, 5_000);
        assert_eq!(rate.tracked(), 0);
    }

    #[test]
    fn the_table_is_bounded() {
        let rate = HandshakeRate::new(RateLimit::per_second(1), 16);
        let mut untracked = 0;
        for i in 0..1000u32 {
            let ip = IpAddr::V4(std::net::Ipv4Addr::from(i));
            if rate.check(ip, 0) == RateDecision::Untracked {
                untracked += 1;
            }
        }
        assert!(rate.tracked() <= 16, "{}", rate.tracked());
        assert!(untracked >= 1000 - 16);
    }
}
