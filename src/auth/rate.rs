//! Token buckets for `--max-publish-rate` (one per connection) and
//! `--max-handshake-rate-per-ip` (a bounded table per shard, keyed by client address). Pure:
//! the time is passed in as the shard's `u32` millisecond clock (wrapping), nothing sleeps.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;

/// A rate with its burst: `per_sec` tokens are added each second, up to `burst`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    per_sec: u32,
    burst: u32,
}

/// The largest rate accepted (per second); it keeps the arithmetic in range.
pub const MAX_RATE_PER_SEC: u32 = 1_000_000;

impl RateLimit {
    /// `per_sec` (at least 1, at most [`MAX_RATE_PER_SEC`]) with a burst of one second's worth:
    /// a client that sends a handful of messages at once after a quiet spell is not refused,
    /// and a steady sender cannot exceed `per_sec`.
    pub fn per_second(per_sec: u32) -> RateLimit {
        let per_sec = per_sec.clamp(1, MAX_RATE_PER_SEC);
        RateLimit {
            per_sec,
            burst: per_sec,
        }
    }

    /// The same rate with another burst (at least 1).
    pub fn with_burst(self, burst: u32) -> RateLimit {
        RateLimit {
            burst: burst.clamp(1, MAX_RATE_PER_SEC),
            ..self
        }
    }

    pub fn per_sec(self) -> u32 {
        self.per_sec
    }

    pub fn burst(self) -> u32 {
        self.burst
    }

    /// One part of this rate when `parts` shards enforce it independently (rounded up, at
    /// least 1): the kernel spreads one client's connections over the shards.
    pub fn split(self, parts: usize) -> RateLimit {
        let parts = u32::try_from(parts.max(1)).unwrap_or(u32::MAX);
        RateLimit {
            per_sec: self.per_sec.div_ceil(parts).max(1),
            burst: self.burst.div_ceil(parts).max(1),
        }
    }
}

/// Thousandths of a token, so slow rates refill smoothly with a millisecond clock.
const MILLI: u64 = 1000;

/// A token bucket: 8 bytes, cheap enough to sit in every connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenBucket {
    millitokens: u32,
    last_ms: u32,
}

impl TokenBucket {
    /// A full bucket at `now_ms`.
    pub fn full(limit: RateLimit, now_ms: u32) -> TokenBucket {
        TokenBucket {
            millitokens: capacity(limit),
            last_ms: now_ms,
        }
    }

    /// Takes one token if there is one. `false` means over the rate: refuse the action.
    pub fn try_take(&mut self, limit: RateLimit, now_ms: u32) -> bool {
        self.refill(limit, now_ms);
        if u64::from(self.millitokens) >= MILLI {
            self.millitokens -= MILLI as u32;
            true
        } else {
            false
        }
    }

    /// Whether the bucket would be full at `now_ms` (it then remembers nothing worth keeping).
    pub fn is_full_at(&self, limit: RateLimit, now_ms: u32) -> bool {
        let mut probe = *self;
        probe.refill(limit, now_ms);
        probe.millitokens >= capacity(limit)
    }

    fn refill(&mut self, limit: RateLimit, now_ms: u32) {
        // Wrapping: the shard clock is a u32 of milliseconds. A gap of more than 24 days reads
        // as short, which at worst refuses a little too much once.
        let elapsed_ms = u64::from(now_ms.wrapping_sub(self.last_ms));
        let added = elapsed_ms * u64::from(limit.per_sec); // per_sec millitokens per ms
        let cap = u64::from(capacity(limit));
        self.millitokens = (u64::from(self.millitokens) + added).min(cap) as u32;
        self.last_ms = now_ms;
    }
}

fn capacity(limit: RateLimit) -> u32 {
    // burst <= 1e6, so at most 1e9 millitokens: fits u32.
    (u64::from(limit.burst) * MILLI) as u32
}

/// The key of a client address: an IPv4 address, or the /64 prefix of an IPv6 address (one
/// host usually holds a whole /64, so per-address limits would be free to dodge).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IpKey {
    V4(u32),
    V6Prefix(u64),
}

impl From<IpAddr> for IpKey {
    fn from(ip: IpAddr) -> IpKey {
        match ip {
            IpAddr::V4(v4) => IpKey::V4(u32::from(v4)),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => IpKey::V4(u32::from(v4)),
                None => IpKey::V6Prefix((u128::from(v6) >> 64) as u64),
            },
        }
    }
}

/// What a keyed limiter decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateDecision {
    Allowed,
    /// Over the rate: refuse (HTTP 429).
    Limited,
    /// The table is full of clients that are all mid-burst: allowed without tracking, and
    /// counted. Refusing instead would let an attacker with many addresses lock everyone out.
    Untracked,
}

/// Token buckets per key, at most `max_entries` of them.
#[derive(Debug)]
pub struct KeyedLimiter<K> {
    limit: RateLimit,
    max_entries: usize,
    buckets: HashMap<K, TokenBucket>,
}

impl<K: Hash + Eq + Copy> KeyedLimiter<K> {
    pub fn new(limit: RateLimit, max_entries: usize) -> KeyedLimiter<K> {
        KeyedLimiter {
            limit,
            max_entries: max_entries.max(1),
            buckets: HashMap::new(),
        }
    }

    /// Takes one token from `key`'s bucket.
    pub fn check(&mut self, key: K, now_ms: u32) -> RateDecision {
        if let Some(bucket) = self.buckets.get_mut(&key) {
            return if bucket.try_take(self.limit, now_ms) {
                RateDecision::Allowed
            } else {
                RateDecision::Limited
            };
        }
        if self.buckets.len() >= self.max_entries {
            self.sweep(now_ms);
            if self.buckets.len() >= self.max_entries {
                return RateDecision::Untracked;
            }
        }
        let mut bucket = TokenBucket::full(self.limit, now_ms);
        let allowed = bucket.try_take(self.limit, now_ms);
        self.buckets.insert(key, bucket);
        if allowed {
            RateDecision::Allowed
        } else {
            RateDecision::Limited
        }
    }

    /// Forgets every key whose bucket has refilled: it would start full anyway. Called from
    /// the shard's coarse sweep, and when the table is full.
    pub fn sweep(&mut self, now_ms: u32) {
        let limit = self.limit;
        self.buckets.retain(|_, b| !b.is_full_at(limit, now_ms));
    }

    /// Keys currently tracked.
    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    #[test]
    fn a_bucket_allows_its_burst_then_its_rate() {
        let limit = RateLimit::per_second(10);
        let mut b = TokenBucket::full(limit, 0);
        let burst = (0..100).filter(|_| b.try_take(limit, 0)).count();
        assert_eq!(burst, 10, "one second's worth at once");
        assert!(!b.try_take(limit, 99), "0.99 of a token after 99 ms");
        assert!(b.try_take(limit, 100), "one token after 100 ms");
        // A steady sender over 10 s gets the rate, not more.
        let mut allowed = 0;
        for ms in (200..10_200).step_by(10) {
            allowed += usize::from(b.try_take(limit, ms));
        }
        assert!((99..=101).contains(&allowed), "{allowed}");
    }

    #[test]
    fn slow_rates_refill_smoothly_and_the_clock_may_wrap() {
        let limit = RateLimit::per_second(1).with_burst(1);
        let mut b = TokenBucket::full(limit, u32::MAX - 500);
        assert!(b.try_take(limit, u32::MAX - 500));
        assert!(!b.try_take(limit, u32::MAX));
        assert!(b.try_take(limit, 499), "1000 ms later, across the wrap");
        assert!(!b.try_take(limit, 500));
    }

    #[test]
    fn a_long_idle_spell_refills_only_to_the_burst() {
        let limit = RateLimit::per_second(5);
        let mut b = TokenBucket::full(limit, 0);
        while b.try_take(limit, 0) {}
        assert!(b.is_full_at(limit, 1000));
        assert!(!b.is_full_at(limit, 999));
        let after = (0..100).filter(|_| b.try_take(limit, 3_600_000)).count();
        assert_eq!(after, 5);
    }

    #[test]
    fn splitting_a_rate_rounds_up() {
        let limit = RateLimit::per_second(10).split(4);
        assert_eq!((limit.per_sec(), limit.burst()), (3, 3));
        assert_eq!(RateLimit::per_second(1).split(8).per_sec(), 1);
        assert_eq!(RateLimit::per_second(0).per_sec(), 1);
    }

    #[test]
    fn keyed_limits_are_per_key_and_the_table_is_bounded() {
        let mut l = KeyedLimiter::new(RateLimit::per_second(2), 2);
        assert_eq!(l.check(1, 0), RateDecision::Allowed);
        assert_eq!(l.check(1, 0), RateDecision::Allowed);
        assert_eq!(l.check(1, 0), RateDecision::Limited);
        assert_eq!(l.check(2, 0), RateDecision::Allowed);
        assert_eq!(l.check(3, 0), RateDecision::Untracked, "full of busy keys");
        // Key 2 refills after 500 ms (it used one token of two): the sweep forgets it.
        assert_eq!(l.check(3, 600), RateDecision::Allowed);
        assert_eq!(l.len(), 2);
        l.sweep(10_000);
        assert!(l.is_empty());
    }

    #[test]
    fn ipv6_clients_are_keyed_by_their_64_prefix() {
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(IpKey::from(a), IpKey::from(b));
        assert_ne!(IpKey::from(a), IpKey::from(c));
        let mapped = IpAddr::V6(Ipv4Addr::new(10, 0, 0, 1).to_ipv6_mapped());
        assert_eq!(
            IpKey::from(mapped),
            IpKey::from(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)))
        );
        assert_ne!(IpKey::from(IpAddr::V6(Ipv6Addr::LOCALHOST)), IpKey::from(a));
    }
}
