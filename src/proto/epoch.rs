//! Epochs: the short random name of one incarnation of a topic, and the generator that makes
//! them. A client holds `(seq, epoch)`; the same seq under another epoch is another message, so
//! a resume is only trusted when the epochs are equal. Pure: the generator is seeded by the
//! caller (the shard seeds it from the OS once at start, tests with a constant).

use std::fmt;

/// The longest epoch accepted from a client or an engine.
pub const MAX_EPOCH_BYTES: usize = 16;

/// Characters in an epoch crier makes. 8 characters of base62 are 47.6 bits: the chance that
/// a topic's next incarnation draws the epoch a stale client holds (and so wrongly passes as
/// the same incarnation) is 1 in 2.2e14 per incarnation. Centrifugo uses 4 (1 in 1.5e7); the
/// extra 4 bytes per ack are worth it.
pub const GENERATED_EPOCH_BYTES: usize = 8;

const LETTERS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
const BASE62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// One topic incarnation's epoch: 1 to [`MAX_EPOCH_BYTES`] characters of `[A-Za-z0-9_-]`,
/// stored inline (no heap, `Copy`). Safe to write into JSON and URLs unescaped. Epochs crier
/// generates start with a letter, so the URL form `topic:seq:epoch` never confuses an epoch
/// with a seq; an engine that makes its own (Redis) must keep that rule.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Epoch {
    len: u8,
    bytes: [u8; MAX_EPOCH_BYTES],
}

/// Why a client's epoch was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EpochError {
    /// No characters.
    Empty,
    /// More than [`MAX_EPOCH_BYTES`].
    TooLong,
    /// A character outside `[A-Za-z0-9_-]`.
    BadCharacter,
}

impl fmt::Display for EpochError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            EpochError::Empty => "epoch is empty",
            EpochError::TooLong => "epoch is longer than 16 characters",
            EpochError::BadCharacter => "epoch holds a character other than A-Z a-z 0-9 _ -",
        })
    }
}

impl std::error::Error for EpochError {}

impl Epoch {
    /// Checks and copies an epoch given by a client or an engine.
    pub fn parse(text: &str) -> Result<Epoch, EpochError> {
        let raw = text.as_bytes();
        if raw.is_empty() {
            return Err(EpochError::Empty);
        }
        if raw.len() > MAX_EPOCH_BYTES {
            return Err(EpochError::TooLong);
        }
        if !raw
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'_' || *b == b'-')
        {
            return Err(EpochError::BadCharacter);
        }
        let mut bytes = [0u8; MAX_EPOCH_BYTES];
        bytes[..raw.len()].copy_from_slice(raw);
        Ok(Epoch {
            len: raw.len() as u8,
            bytes,
        })
    }

    /// The epoch as text.
    pub fn as_str(&self) -> &str {
        // Only ASCII ever enters (checked in `parse`, generated from ASCII tables).
        std::str::from_utf8(&self.bytes[..usize::from(self.len)]).unwrap_or("")
    }
}

impl fmt::Debug for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Epoch({})", self.as_str())
    }
}

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Makes epochs from a 64-bit seed with SplitMix64 (Steele, Lea, Flood 2014): not for secrets,
/// only to make two incarnations' names differ. Seeded from the OS per shard, so a restarted
/// broker draws epochs no client has seen.
#[derive(Debug, Clone)]
pub struct EpochGen {
    state: u64,
}

impl EpochGen {
    /// A generator starting at `seed`.
    pub fn new(seed: u64) -> EpochGen {
        EpochGen { state: seed }
    }

    /// A seed from the OS: std's `RandomState` keys come from the OS random source once per
    /// process and differ per instance, which is all an epoch needs.
    pub fn os_seed() -> u64 {
        use std::hash::{BuildHasher, Hasher};
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u64(0x6372_6965_7265_706f);
        hasher.finish()
    }

    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// The next epoch: a letter, then base62 characters.
    pub fn next_epoch(&mut self) -> Epoch {
        let mut bits = self.next_u64();
        let mut bytes = [0u8; MAX_EPOCH_BYTES];
        bytes[0] = LETTERS[(bits % LETTERS.len() as u64) as usize];
        bits /= LETTERS.len() as u64;
        for byte in &mut bytes[1..GENERATED_EPOCH_BYTES] {
            *byte = BASE62[(bits % BASE62.len() as u64) as usize];
            bits /= BASE62.len() as u64;
        }
        Epoch {
            len: GENERATED_EPOCH_BYTES as u8,
            bytes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_accepts_the_documented_alphabet_only() {
        assert_eq!(Epoch::parse("e4Xq").unwrap().as_str(), "e4Xq");
        assert_eq!(Epoch::parse("a_b-C9").unwrap().as_str(), "a_b-C9");
        assert_eq!(Epoch::parse(""), Err(EpochError::Empty));
        assert_eq!(Epoch::parse(&"a".repeat(17)), Err(EpochError::TooLong));
        assert!(Epoch::parse(&"a".repeat(16)).is_ok());
        for bad in ["a:b", "a b", "é", "a\"", "a\\", "a/b"] {
            assert_eq!(Epoch::parse(bad), Err(EpochError::BadCharacter), "{bad}");
        }
    }

    #[test]
    fn generated_epochs_start_with_a_letter_differ_and_parse_back() {
        let mut gen = EpochGen::new(7);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..10_000 {
            let epoch = gen.next_epoch();
            assert_eq!(epoch.as_str().len(), GENERATED_EPOCH_BYTES);
            assert!(epoch.as_str().as_bytes()[0].is_ascii_alphabetic());
            assert_eq!(Epoch::parse(epoch.as_str()), Ok(epoch));
            assert!(seen.insert(epoch), "repeated {epoch}");
        }
    }

    #[test]
    fn seeds_give_different_streams() {
        let a = EpochGen::new(1).next_epoch();
        let b = EpochGen::new(2).next_epoch();
        assert_ne!(a, b);
        assert_ne!(EpochGen::os_seed(), EpochGen::os_seed());
    }
}
