//! `--max-connections-per-ip`: how many connections each client address holds across all
//! shards, counted exactly. Shards touch it only when they accept or remove a connection, and
//! only while the limit is on; the counts sit behind 64 striped locks so two shards accepting
//! at once rarely wait for each other. Nothing on the delivery path comes here.
//!
//! Exact and shared rather than per shard: SO_REUSEPORT spreads one address's connections over
//! the shards by a hash of the port, so a per-shard share of the limit would refuse a client
//! that is under it, or let through one over it, depending on luck.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Mutex, MutexGuard};

/// Lock stripes: a power of two, enough that shards rarely share one at the same instant.
const STRIPES: usize = 64;

/// What a client is counted as: an IPv4 address (IPv4-mapped IPv6 included), or the /64
/// prefix of an IPv6 address — one host or LAN gets a whole /64, and counting single v6
/// addresses would let it open a connection from each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AddressKey {
    V4(u32),
    V6Prefix(u64),
}

impl AddressKey {
    /// The key `ip` is counted under.
    pub fn of(ip: IpAddr) -> AddressKey {
        match ip {
            IpAddr::V4(v4) => AddressKey::V4(u32::from(v4)),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => AddressKey::V4(u32::from(v4)),
                None => AddressKey::V6Prefix((u128::from(v6) >> 64) as u64),
            },
        }
    }

    fn stripe(self) -> usize {
        let bits = match self {
            AddressKey::V4(v4) => u64::from(v4),
            AddressKey::V6Prefix(prefix) => prefix ^ (1 << 63),
        };
        // Fibonacci hashing: the top bits of the product mix every input bit.
        (bits.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 58) as usize % STRIPES
    }
}

/// Open connections per client address, shared by every shard.
#[derive(Debug)]
pub struct AddressLimit {
    max_per_address: u32,
    stripes: Box<[Mutex<HashMap<AddressKey, u32>>]>,
}

impl AddressLimit {
    /// A limit of `max_per_address` connections per address (at least 1).
    pub fn new(max_per_address: usize) -> AddressLimit {
        AddressLimit {
            max_per_address: u32::try_from(max_per_address.max(1)).unwrap_or(u32::MAX),
            stripes: (0..STRIPES).map(|_| Mutex::new(HashMap::new())).collect(),
        }
    }

    fn stripe(&self, key: AddressKey) -> MutexGuard<'_, HashMap<AddressKey, u32>> {
        // Nothing panics while holding a stripe; a poisoned one is still consistent.
        self.stripes[key.stripe()]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Counts one more connection from `key`, unless it already holds the maximum: then
    /// nothing is counted and the answer is `false`.
    #[must_use]
    pub fn try_acquire(&self, key: AddressKey) -> bool {
        let mut counts = self.stripe(key);
        let count = counts.entry(key).or_insert(0);
        if *count >= self.max_per_address {
            return false;
        }
        *count += 1;
        true
    }

    /// A connection counted by [`AddressLimit::try_acquire`] is gone.
    pub fn release(&self, key: AddressKey) {
        let mut counts = self.stripe(key);
        if let Some(count) = counts.get_mut(&key) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&key);
            }
        }
    }

    /// Addresses holding at least one connection (tests and diagnostics).
    pub fn addresses(&self) -> usize {
        self.stripes
            .iter()
            .map(|stripe| stripe.lock().map_or(0, |counts| counts.len()))
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(text: &str) -> AddressKey {
        AddressKey::of(text.parse().unwrap())
    }

    #[test]
    fn counts_up_to_the_limit_and_frees_on_release() {
        let limit = AddressLimit::new(2);
        let a = key("10.0.0.1");
        let b = key("10.0.0.2");
        assert!(limit.try_acquire(a));
        assert!(limit.try_acquire(a));
        assert!(!limit.try_acquire(a), "a third from the same address");
        assert!(limit.try_acquire(b), "another address is not affected");
        limit.release(a);
        assert!(limit.try_acquire(a));
        for _ in 0..2 {
            limit.release(a);
        }
        limit.release(b);
        assert_eq!(limit.addresses(), 0, "nothing kept for departed addresses");
        // A release without an acquire (never happens) does not underflow.
        limit.release(a);
        assert_eq!(limit.addresses(), 0);
    }

    #[test]
    fn ipv6_counts_by_64_prefix_and_mapped_ipv4_as_ipv4() {
        assert_eq!(key("2001:db8:1:2::1"), key("2001:db8:1:2:ffff::9"));
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
        assert_eq!(key("::ffff:192.0.2.7"), key("192.0.2.7"));
        let limit = AddressLimit::new(1);
        assert!(limit.try_acquire(key("2001:db8::1")));
        assert!(!limit.try_acquire(key("2001:db8::2")));
    }

    #[test]
    fn stripes_are_in_range_and_spread() {
        let mut used = [false; STRIPES];
        for i in 0..1024u32 {
            used[AddressKey::V4(0x0a00_0000 + i).stripe()] = true;
        }
        assert!(used.iter().filter(|u| **u).count() > STRIPES / 2);
        assert!(AddressKey::V6Prefix(u64::MAX).stripe() < STRIPES);
    }
}
